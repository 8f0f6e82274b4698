"""Fixation detection from raw gaze samples: I-VT and I-DT (Salvucci & Goldberg 2000).

Input samples are an ``(M, >=3)`` array ``[t, x, y, ...]``: time in seconds (strictly
increasing) and gaze position in image pixels (x = column, y = row, see
:mod:`gazerad.coords`); any further columns (pupil size, ...) are ignored. A sample whose
x or y is NaN (or infinite) is *invalid* (blink, tracker loss). The sample period ``dt``
is the median of the timestamp differences.

Conventions shared by both detectors (the output is what :class:`~gazerad.gaze.record.GazeRecord`
stores, ``(N, 4)`` float64 ``[x, y, t_start, t_end]`` in time order):

* **Units.** With ``pixels_per_degree`` given, velocity thresholds are in degrees per
  second and distance/dispersion thresholds in degrees of visual angle (pixels are
  divided by ``pixels_per_degree``, the flat-screen small-angle approximation). Without
  it they are in pixels per second and pixels. Scaling a degree threshold by
  ``pixels_per_degree`` and leaving ``pixels_per_degree`` out gives the same fixations.
* **Gaps.** Invalid samples are dropped, and the remaining valid samples are cut into
  *segments* wherever two consecutive valid samples are more than ``max_gap`` seconds
  apart (``t[next valid] - t[previous valid] > max_gap``). So a run of invalid samples
  (or missing timestamps) is *bridged* exactly when the valid samples on its two sides
  are at most ``max_gap`` apart: with the default 75 ms that is up to 3 missing samples at
  60 Hz and up to 8 at 120 Hz. A bridged gap does not interrupt a fixation (velocities
  and dispersions are computed over the valid samples only, so the displacement across
  the gap is spread over its duration: linear gap fill-in as in Olsen 2012); a longer gap
  (a blink) always ends the fixation before it. No fixation spans a segment boundary.
* **Timing.** ``t_start`` is the timestamp of the fixation's first valid sample and
  ``t_end`` the timestamp of its last valid sample *plus one sample period* ``dt``, so a
  fixation of ``n`` contiguous samples lasts ``n * dt`` and ``t_end`` is (about) the time
  the following saccade or blink starts. Onsets are therefore sample times and compare
  directly with the start times of true fixations (to within one sample period).
* **Position.** The mean of the fixation's valid samples (for merged fixations, of all
  samples of the merged parts).
* **Durations** are ``t_end - t_start``; fixations shorter than ``min_duration`` are
  dropped (for I-VT after merging).

References:
    D. D. Salvucci, J. H. Goldberg (2000), Identifying fixations and saccades in
    eye-tracking protocols, ETRA. A. Olsen (2012), The Tobii I-VT fixation filter (the
    gap fill-in, velocity window, merge and discard defaults used here).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from gazerad.gaze.record import GazeRecord

__all__ = [
    "FIXATION_METHODS",
    "detect_fixations",
    "detect_fixations_idt",
    "detect_fixations_ivt",
    "record_from_samples",
]

#: Detector names accepted by :func:`detect_fixations`.
FIXATION_METHODS: tuple[str, ...] = ("ivt", "idt")

_EPS = 1e-9  # seconds; tolerance for time comparisons against thresholds


# --------------------------------------------------------------------------------------
# shared preparation


class _Prepared:
    """Valid samples of one recording, cut into segments at gaps longer than ``max_gap``.

    Attributes:
        dt: sample period (median timestamp difference, s).
        t, xy: ``(n,)`` times and ``(n, 2)`` positions of the valid samples, in the
            threshold unit (degrees when ``pixels_per_degree`` is given, else pixels).
        px: ``(n, 2)`` positions in pixels (for the output).
        scale: threshold units per pixel (``1 / pixels_per_degree``, or 1).
        seg_start, seg_end: ``(n,)`` first and last index of each sample's segment.
    """

    def __init__(self, samples: Any, pixels_per_degree: float | None, max_gap: float) -> None:
        t_all, x_all, y_all = _validate_samples(samples)
        self.dt = float(np.median(np.diff(t_all)))
        ok = np.isfinite(x_all) & np.isfinite(y_all)
        self.t = t_all[ok]
        self.px = np.column_stack([x_all[ok], y_all[ok]])
        scale = 1.0 if pixels_per_degree is None else 1.0 / _check_positive("pixels_per_degree", pixels_per_degree)
        self.scale = scale  # threshold units per pixel
        self.xy = self.px * scale
        n = self.t.size
        brk = np.flatnonzero(np.diff(self.t) > max_gap + _EPS) + 1  # first index of each new segment
        starts = np.concatenate([[0], brk]).astype(np.intp)
        ends = np.concatenate([brk - 1, [n - 1]]).astype(np.intp)
        seg = np.zeros(n, dtype=np.intp)
        if brk.size:
            seg[brk] = 1
            seg = np.cumsum(seg)
        self.seg_start = starts[seg] if n else np.zeros(0, np.intp)
        self.seg_end = ends[seg] if n else np.zeros(0, np.intp)

    @property
    def n(self) -> int:
        return int(self.t.size)


def _validate_samples(samples: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``t, x, y`` columns of an ``(M, >=3)`` sample array, checked."""
    try:
        s = np.asarray(samples, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"gaze samples must be a numeric (M, >=3) array [t, x, y, ...]: {e}") from None
    if s.ndim != 2 or s.shape[1] < 3:
        raise ValueError(f"gaze samples must be an (M, >=3) array [t, x, y, ...], got shape {s.shape}")
    if s.shape[0] == 0:
        raise ValueError("gaze samples are empty (0 rows); need at least 2 samples")
    if s.shape[0] < 2:
        raise ValueError("need at least 2 gaze samples to infer the sample rate, got 1")
    t = s[:, 0]
    if not np.isfinite(t).all():
        bad = int(np.flatnonzero(~np.isfinite(t))[0])
        raise ValueError(f"gaze sample timestamps must be finite; row {bad} has t={t[bad]}")
    d = np.diff(t)
    if (d <= 0).any():
        bad = int(np.flatnonzero(d <= 0)[0])
        raise ValueError(
            f"gaze sample timestamps must be strictly increasing; row {bad + 1} has t={t[bad + 1]!r} after t={t[bad]!r} (sort the samples and drop duplicates)"
        )
    return t, s[:, 1], s[:, 2]


def _check_positive(name: str, value: float) -> float:
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def _check_nonneg(name: str, value: float) -> float:
    v = float(value)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return v


def _runs_to_fixations(p: _Prepared, first: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per run ``[first, last]`` (inclusive indices into ``p``): sums of px and sample counts."""
    csum = np.concatenate([np.zeros((1, 2)), np.cumsum(p.px, axis=0)])
    sums = csum[last + 1] - csum[first]
    counts = (last - first + 1).astype(np.float64)
    return sums, counts


def _finish(
    p: _Prepared,
    first: np.ndarray,
    last: np.ndarray,
    min_duration: float,
    merge_distance: float | None,
    merge_gap: float | None,
) -> np.ndarray:
    """Merge (optionally), drop short fixations and build the ``(N, 4)`` output."""
    if first.size == 0:
        return np.zeros((0, 4))
    sums, counts = _runs_to_fixations(p, first, last)
    t0 = p.t[first]
    t1 = p.t[last] + p.dt
    if merge_distance is not None:
        gap_max = float(merge_gap)  # type: ignore[arg-type]
        keep_sums = [sums[0].copy()]
        keep_counts = [counts[0]]
        keep_t0 = [t0[0]]
        keep_t1 = [t1[0]]
        for k in range(1, first.size):  # loop over runs, not samples
            prev = keep_sums[-1] / keep_counts[-1]
            cur = sums[k] / counts[k]
            dist = float(np.hypot(*(cur - prev))) * p.scale
            if t0[k] - keep_t1[-1] <= gap_max + _EPS and dist <= merge_distance:
                keep_sums[-1] = keep_sums[-1] + sums[k]
                keep_counts[-1] += counts[k]
                keep_t1[-1] = t1[k]
            else:
                keep_sums.append(sums[k].copy())
                keep_counts.append(counts[k])
                keep_t0.append(t0[k])
                keep_t1.append(t1[k])
        sums = np.asarray(keep_sums)
        counts = np.asarray(keep_counts)
        t0 = np.asarray(keep_t0)
        t1 = np.asarray(keep_t1)
    keep = (t1 - t0) >= min_duration - _EPS
    pos = sums[keep] / counts[keep, None]
    return np.column_stack([pos, t0[keep], t1[keep]]).astype(np.float64)


def _merge_args(merge_distance: float | None, merge_gap: float | None, max_gap: float) -> tuple[float | None, float | None]:
    if merge_distance is None:
        if merge_gap is not None:
            raise ValueError("merge_gap is only used with merge_distance; give merge_distance too")
        return None, None
    md = _check_nonneg("merge_distance", merge_distance)
    mg = max_gap if merge_gap is None else _check_nonneg("merge_gap", merge_gap)
    return md, mg


class _FinishArgs(NamedTuple):
    """The checked arguments of :func:`_finish` after its run indices."""

    min_duration: float
    merge_distance: float | None
    merge_gap: float | None


def _start(
    samples: Any,
    pixels_per_degree: float | None,
    min_duration: float,
    max_gap: float,
    merge_distance: float | None,
    merge_gap: float | None,
) -> tuple[_Prepared, _FinishArgs]:
    """What both detectors begin with: the shared arguments checked, the samples prepared."""
    min_duration = _check_nonneg("min_duration", min_duration)
    max_gap = _check_nonneg("max_gap", max_gap)
    md, mg = _merge_args(merge_distance, merge_gap, max_gap)
    return _Prepared(samples, pixels_per_degree, max_gap), _FinishArgs(min_duration, md, mg)


# --------------------------------------------------------------------------------------
# I-VT


def detect_fixations_ivt(
    samples: Any,
    velocity_threshold: float = 30.0,
    pixels_per_degree: float | None = None,
    min_duration: float = 0.06,
    max_gap: float = 0.075,
    merge_distance: float | None = None,
    merge_gap: float | None = None,
    velocity_window: float = 0.02,
) -> np.ndarray:
    """Velocity-threshold identification (I-VT) of fixations.

    Each valid sample gets a velocity; samples slower than ``velocity_threshold`` are
    fixation samples, and each maximal run of them inside one segment (see the module
    docstring: invalid runs up to ``max_gap`` are bridged, longer ones split) is a
    fixation candidate. Candidates are optionally merged, then those shorter than
    ``min_duration`` are dropped.

    Velocity: the displacement between two valid samples of the same segment spanning
    ``w = max(1, round(velocity_window / dt))`` sample intervals, divided by their time
    difference. The window is centred on the sample (``floor(w/2)`` intervals back,
    the rest forward; ``w = 1`` is the classic point-to-point forward difference) and
    shifted inwards at segment ends. With the default 20 ms window (Olsen 2012) this is
    point-to-point at 60 Hz and a 2-interval central difference at 120 Hz, which keeps
    the velocity noise of a fixation below the threshold at high sample rates.
    ``velocity_window=0`` forces point-to-point. A valid sample alone in its segment
    has no velocity and is never a fixation sample.

    Args:
        samples: ``(M, >=3)`` ``[t, x, y, ...]`` (s, px); NaN x/y = invalid.
        velocity_threshold: deg/s with ``pixels_per_degree``, else px/s. Default 30 deg/s
            (Salvucci & Goldberg 2000; the Tobii I-VT default, Olsen 2012).
        pixels_per_degree: image pixels per degree of visual angle, or ``None`` to work
            in pixels.
        min_duration: shortest fixation kept (s); default 60 ms (Olsen 2012).
        max_gap: longest invalid gap bridged (s); default 75 ms (Olsen 2012 gap fill-in).
        merge_distance: when given, consecutive fixations whose positions are at most this
            far apart (deg, or px without ``pixels_per_degree``) and ``merge_gap`` apart in
            time are merged (before the ``min_duration`` filter). Olsen 2012 uses 0.5 deg.
            ``None`` (default): no merging.
        merge_gap: the largest ``t_start[next] - t_end[prev]`` (s) merged; defaults to
            ``max_gap`` when ``merge_distance`` is given (Olsen 2012 uses 75 ms).
        velocity_window: time span of the velocity estimate (s), see above.

    With noisy data (tremor / tracker noise of ~0.1 deg per sample) a few fixation samples
    cross 30 deg/s and split a fixation in two at the same place; ``merge_distance=0.5``
    (with the default ``merge_gap``) repairs that, as the Tobii filter does by default.

    Returns:
        ``(N, 4)`` float64 ``[x, y, t_start, t_end]`` (px, s) in time order.

    Raises:
        ValueError: malformed samples (shape, fewer than 2 rows, non-finite or not
            strictly increasing timestamps) or invalid parameters.
    """
    vt = _check_positive("velocity_threshold", velocity_threshold)
    velocity_window = _check_nonneg("velocity_window", velocity_window)
    p, finish = _start(samples, pixels_per_degree, min_duration, max_gap, merge_distance, merge_gap)
    n = p.n
    if n == 0:
        return np.zeros((0, 4))
    w = max(1, int(round(velocity_window / p.dt)))
    idx = np.arange(n)
    lo = idx - w // 2
    hi = lo + w
    over = np.maximum(hi - p.seg_end, 0)
    lo, hi = lo - over, hi - over
    under = np.maximum(p.seg_start - lo, 0)
    lo, hi = lo + under, hi + under
    lo = np.maximum(lo, p.seg_start)
    hi = np.minimum(hi, p.seg_end)
    single = hi == lo
    dist = np.hypot(*(p.xy[hi] - p.xy[lo]).T)
    span = np.where(single, 1.0, p.t[hi] - p.t[lo])
    vel = np.where(single, np.inf, dist / span)
    is_fix = vel < vt
    # runs of fixation samples, never crossing a segment boundary
    new_seg = p.seg_start == idx
    prev_fix = np.concatenate([[False], is_fix[:-1]]) & ~new_seg
    new_seg_next = np.concatenate([new_seg[1:], [True]])
    next_fix = np.concatenate([is_fix[1:], [False]]) & ~new_seg_next
    first = np.flatnonzero(is_fix & ~prev_fix)
    last = np.flatnonzero(is_fix & ~next_fix)
    return _finish(p, first, last, *finish)


# --------------------------------------------------------------------------------------
# I-DT


def _window_dispersion(xy: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Dispersion ``(max x - min x) + (max y - min y)`` of ``xy[lo:hi+1]`` for each query.

    Range extrema by doubling (sparse-table levels built one at a time, each query answered
    at level ``floor(log2(length))`` from two overlapping blocks): ``O(n log L)`` time for
    the longest query length ``L`` and ``O(n)`` memory.
    """
    out = np.zeros(lo.size)
    if lo.size == 0:
        return out
    length = hi - lo + 1
    level = np.frexp(length.astype(np.float64))[1] - 1  # exact floor(log2) for integers
    cur_max = xy.copy()
    cur_min = xy.copy()
    for k in range(int(level.max()) + 1):
        if k > 0:
            step = 1 << (k - 1)
            cur_max = np.maximum(cur_max[:-step], cur_max[step:])
            cur_min = np.minimum(cur_min[:-step], cur_min[step:])
        sel = np.flatnonzero(level == k)
        if sel.size:
            a = lo[sel]
            b = hi[sel] - (1 << k) + 1
            mx = np.maximum(cur_max[a], cur_max[b])
            mn = np.minimum(cur_min[a], cur_min[b])
            out[sel] = (mx - mn).sum(axis=1)
    return out


def detect_fixations_idt(
    samples: Any,
    dispersion_threshold: float = 1.0,
    pixels_per_degree: float | None = None,
    min_duration: float = 0.1,
    max_gap: float = 0.075,
    merge_distance: float | None = None,
    merge_gap: float | None = None,
) -> np.ndarray:
    """Dispersion-threshold identification (I-DT) of fixations (Salvucci & Goldberg 2000).

    Over the valid samples of each segment (see the module docstring: invalid runs up to
    ``max_gap`` are bridged, longer ones split): a window starting at sample ``i`` is
    opened to the fewest samples lasting at least ``min_duration`` (duration
    ``t[last] - t[first] + dt``). If its dispersion ``(max x - min x) + (max y - min y)``
    exceeds ``dispersion_threshold`` the window start moves one sample on; otherwise the
    window grows sample by sample while the dispersion stays within the threshold, the
    window becomes a fixation and the search resumes after it. Windows never cross a
    segment boundary.

    Implementation: the initial-window dispersion of every start is computed at once
    with range extrema (``O(M log W)``); each fixation is then grown in doubling chunks
    with cumulative max/min (amortised ``O(length)``), looping over fixations only.

    Args:
        samples: ``(M, >=3)`` ``[t, x, y, ...]`` (s, px); NaN x/y = invalid.
        dispersion_threshold: deg with ``pixels_per_degree``, else px. Default 1 deg
            (Salvucci & Goldberg 2000 suggest 0.5-1 deg; 1 deg / 100 ms is the common
            choice, e.g. Blignaut 2009).
        pixels_per_degree: image pixels per degree of visual angle, or ``None`` for px.
        min_duration: initial window duration = shortest fixation (s); default 100 ms.
        max_gap: longest invalid gap bridged (s); default 75 ms.
        merge_distance, merge_gap: optional merging of consecutive fixations, as in
            :func:`detect_fixations_ivt` (``None``: no merging).

    Returns:
        ``(N, 4)`` float64 ``[x, y, t_start, t_end]`` (px, s) in time order.

    Raises:
        ValueError: malformed samples or invalid parameters.
    """
    thr = _check_positive("dispersion_threshold", dispersion_threshold)
    p, finish = _start(samples, pixels_per_degree, min_duration, max_gap, merge_distance, merge_gap)
    n = p.n
    if n == 0:
        return np.zeros((0, 4))
    idx = np.arange(n)
    # initial window: fewest samples with t[e] - t[i] + dt >= min_duration
    e0 = np.searchsorted(p.t, p.t + (finish.min_duration - p.dt) - _EPS, side="left")
    e0 = np.maximum(e0, idx)
    fits = e0 <= p.seg_end
    cand = np.flatnonzero(fits)
    ok = np.zeros(n, dtype=bool)
    ok[cand] = _window_dispersion(p.xy, cand, e0[cand]) <= thr
    # next_ok[i]: first start >= i whose initial window is a fixation (n when none)
    nxt = np.where(ok, idx, n)
    next_ok = np.concatenate([np.minimum.accumulate(nxt[::-1])[::-1], [n]])
    firsts: list[int] = []
    lasts: list[int] = []
    i = int(next_ok[0])
    while i < n:  # one iteration per fixation
        end = _grow(p.xy, i, int(e0[i]), int(p.seg_end[i]), thr)
        firsts.append(i)
        lasts.append(end)
        i = int(next_ok[end + 1])
    first = np.asarray(firsts, dtype=np.intp)
    last = np.asarray(lasts, dtype=np.intp)
    return _finish(p, first, last, *finish)


def _grow(xy: np.ndarray, i: int, e0: int, seg_end: int, thr: float) -> int:
    """Last index ``e`` in ``[e0, seg_end]`` with dispersion of ``xy[i:e+1]`` within ``thr``."""
    chunk = max(2 * (e0 - i + 1), 16)
    while True:
        stop = min(seg_end, i + chunk - 1)
        block = xy[i : stop + 1]
        disp = (np.maximum.accumulate(block, axis=0) - np.minimum.accumulate(block, axis=0)).sum(axis=1)
        over = np.flatnonzero(disp[e0 - i :] > thr)
        if over.size:
            return e0 + int(over[0]) - 1
        if stop == seg_end:
            return seg_end
        chunk *= 2


# --------------------------------------------------------------------------------------
# front ends


def detect_fixations(samples: Any, method: str = "ivt", **kw: Any) -> np.ndarray:
    """Fixations ``(N, 4)`` ``[x, y, t_start, t_end]`` by ``method`` (``"ivt"`` or ``"idt"``).

    Keyword arguments go to :func:`detect_fixations_ivt` or :func:`detect_fixations_idt`.
    """
    m = str(method).lower()
    if m == "ivt":
        return detect_fixations_ivt(samples, **kw)
    if m == "idt":
        return detect_fixations_idt(samples, **kw)
    raise ValueError(f"unknown fixation method {method!r}; choose one of {', '.join(FIXATION_METHODS)}")


def record_from_samples(
    samples: Any,
    image_id: str,
    reader_id: str = "",
    method: str = "ivt",
    pixels_per_degree: float | None = None,
    image_size: tuple[int, int] | None = None,
    **kw: Any,
) -> GazeRecord:
    """A :class:`GazeRecord` whose fixations are detected from raw samples.

    Args:
        samples: ``(M, >=3)`` ``[t, x, y, ...]``; the record keeps the ``(M, 3)``
            ``[t, x, y]`` columns as its ``samples``.
        image_id, reader_id, image_size: stored on the record.
        method: ``"ivt"`` or ``"idt"``.
        pixels_per_degree: used for the thresholds (degrees) and stored on the record.
        **kw: detector parameters (see :func:`detect_fixations_ivt` / :func:`detect_fixations_idt`).
    """
    fix = detect_fixations(samples, method=method, pixels_per_degree=pixels_per_degree, **kw)
    s = np.asarray(samples, dtype=np.float64)[:, :3].copy()
    return GazeRecord(
        image_id=image_id,
        reader_id=reader_id,
        fixations=fix,
        image_size=image_size,
        samples=s,
        pixels_per_degree=None if pixels_per_degree is None else float(pixels_per_degree),
    )
