"""Simulated radiologists reading a phantom: scanpaths, fixations and raw gaze samples.

A reader sweeps the lung fields in a personal order, checks the usual places (heart
borders, costophrenic angles, hila), is drawn to findings with a probability that grows
with their conspicuity, dwells on the ones it notices (more and longer fixations) and
sometimes misses subtle ones. Fixation durations are log-normal around 250 ms. Raw samples
follow fixations with tremor and drift, saccades with a main-sequence duration, and blinks
as invalid (NaN) samples.

All coordinates follow :mod:`gazerad.coords` (image pixels, origin top-left corner).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gazerad.synth.phantom import PhantomSpec, Rendered

__all__ = ["ReaderProfile", "SimulatedReading", "reader_pool", "simulate_reading"]

_STRATEGIES = ("lung_by_lung", "compare_sides", "top_down_zigzag", "outside_in")


@dataclass(frozen=True)
class ReaderProfile:
    """A simulated radiologist's habits (all fixed for a reader across images).

    Attributes:
        reader_id: e.g. ``"R1"``.
        strategy: sweep order, one of ``lung_by_lung``, ``compare_sides``,
            ``top_down_zigzag``, ``outside_in``.
        duration_median: median fixation duration (s).
        duration_sigma: log-normal sigma of fixation durations.
        skill: conspicuity at which a finding is noticed half the time (lower is better).
        dwell: mean number of extra fixations on a noticed finding (at conspicuity 1).
        sweep_fixations: mean number of sweep fixations over the lungs.
        jitter_px: scatter of sweep fixations around their targets (px).
        rate_hz: raw sample rate.
        pixels_per_degree: image pixels per degree of visual angle at this reader's setup.
        blink_rate: blinks per second.
    """

    reader_id: str
    strategy: str
    duration_median: float
    duration_sigma: float
    skill: float
    dwell: float
    sweep_fixations: int
    jitter_px: float
    rate_hz: int
    pixels_per_degree: float
    blink_rate: float


@dataclass
class SimulatedReading:
    """One reader on one image.

    Attributes:
        reader_id: the reader.
        fixations: ``(N, 4)`` float ``[x, y, t_start, t_end]`` (px, s).
        samples: ``(M, 4)`` float ``[t, x, y, pupil]``; x, y NaN during blinks.
        noticed: indices of the findings the reader noticed (dwelt on).
        pixels_per_degree: as in the profile.
    """

    reader_id: str
    fixations: np.ndarray
    samples: np.ndarray
    noticed: list[int] = field(default_factory=list)
    pixels_per_degree: float = 25.0


def reader_pool(seed: int, n: int = 5) -> list[ReaderProfile]:
    """``n`` distinct reader profiles, deterministic for ``seed``."""
    rng = np.random.default_rng([seed, 0x5EAD])
    pool = []
    for i in range(n):
        pool.append(
            ReaderProfile(
                reader_id=f"R{i + 1}",
                strategy=_STRATEGIES[i % len(_STRATEGIES)] if i < len(_STRATEGIES) else str(rng.choice(_STRATEGIES)),
                duration_median=float(rng.uniform(0.21, 0.30)),
                duration_sigma=float(rng.uniform(0.35, 0.50)),
                skill=float(rng.uniform(0.18, 0.40)),
                dwell=float(rng.uniform(10.0, 18.0)),
                sweep_fixations=int(rng.integers(24, 44)),
                jitter_px=float(rng.uniform(6.0, 14.0)),
                rate_hz=int(rng.choice([60, 120])),
                pixels_per_degree=float(rng.uniform(20.0, 28.0)),
                blink_rate=float(rng.uniform(0.15, 0.4)),
            )
        )
    return pool


def _sweep_targets(rng: np.random.Generator, profile: ReaderProfile, lungs: np.ndarray, n: int) -> np.ndarray:
    """``(n, 2)`` sweep targets over the lung fields, ordered by the reader's strategy."""
    rows, cols = np.nonzero(lungs)
    if rows.size == 0:
        h, w = lungs.shape
        return np.column_stack([rng.uniform(0.2 * w, 0.8 * w, n), rng.uniform(0.2 * h, 0.8 * h, n)])
    # stratified: one target per cell of a coarse grid over the lungs, then subsample
    pick = rng.choice(rows.size, size=min(rows.size, 12 * n), replace=False)
    xy = np.column_stack([cols[pick] + rng.uniform(0, 1, pick.size), rows[pick] + rng.uniform(0, 1, pick.size)])
    cell = 28.0
    keys = np.floor(xy / cell).astype(int)
    _, first = np.unique(keys[:, 0] * 10000 + keys[:, 1], return_index=True)
    xy = xy[first]
    if len(xy) > n:
        xy = xy[rng.choice(len(xy), n, replace=False)]
    mid = (cols.min() + cols.max()) / 2.0
    left = xy[:, 0] < mid
    y_band = np.floor(xy[:, 1] / 60.0)
    s = profile.strategy
    if s == "lung_by_lung":
        order = np.lexsort((xy[:, 1], ~left))  # image-left lung top->bottom, then the other
    elif s == "compare_sides":
        order = np.lexsort((~left, y_band))  # band by band, left then right
    elif s == "top_down_zigzag":
        direction = np.where(y_band % 2 == 0, xy[:, 0], -xy[:, 0])
        order = np.lexsort((direction, y_band))
    else:  # outside_in: lateral edges first, then medial
        order = np.argsort(-np.abs(xy[:, 0] - mid) + 0.2 * xy[:, 1])
    return xy[order]


def simulate_reading(
    rng: np.random.Generator,
    profile: ReaderProfile,
    spec: PhantomSpec,
    rendered: Rendered,
) -> SimulatedReading:
    """Simulate one reading of a rendered phantom.

    Returns:
        A :class:`SimulatedReading`; every fixation lies inside the image.
    """
    h, w = rendered.image.shape
    n_sweep = max(8, int(rng.normal(profile.sweep_fixations, 4)))
    sweep = _sweep_targets(rng, profile, rendered.lungs, n_sweep)
    sweep = sweep + rng.normal(0.0, profile.jitter_px, sweep.shape)

    # (x, y, duration scale, kind) with kind 0 = sweep/checklist, 1 = finding
    events: list[tuple[float, float, float, int]] = []
    events.append((w / 2 + rng.normal(0, 20), h / 2 + rng.normal(0, 20), 1.0, 0))  # central start
    events.extend((float(x), float(y), 1.0, 0) for x, y in sweep)

    hx, hy, hw_, hh_ = rendered.heart_box
    rows, cols = np.nonzero(rendered.lungs)
    checklist = [(hx + 0.15 * hw_, hy + 0.5 * hh_), (hx + 0.85 * hw_, hy + 0.5 * hh_), (w / 2, hy - 0.4 * hh_)]
    if rows.size:
        bottom = rows.max()
        checklist += [(cols.min() + 15.0, bottom - 15.0), (cols.max() - 15.0, bottom - 15.0)]
    for cx, cy in checklist:
        if rng.random() < 0.8:
            pos = int(rng.integers(len(events) // 2, len(events) + 1))
            events.insert(pos, (cx + rng.normal(0, 8), cy + rng.normal(0, 8), 1.0, 0))

    noticed: list[int] = []
    for i, (f, mask) in enumerate(zip(spec.findings, rendered.masks)):
        if not mask.any():
            continue
        fr, fc = np.nonzero(mask)
        p_notice = 1.0 / (1.0 + np.exp(-(f.conspicuity - profile.skill) / 0.07))
        centre = np.array([fc.mean() + 0.5, fr.mean() + 0.5])
        if rng.random() < p_notice:
            noticed.append(i)
            n_fix = 2 + rng.poisson(0.6 * profile.dwell * (0.4 + 0.6 * f.conspicuity))
            dur_scale = 1.3
        elif rng.random() < f.conspicuity:  # a glance that does not register
            n_fix, dur_scale = 1, 1.0
        else:
            continue
        pts = _inspection_points(rng, f.label, mask, n_fix, 1.2 * profile.pixels_per_degree)
        block = [(float(x), float(y), dur_scale, 1) for x, y in pts]
        # drawn to it when the sweep passes closest
        sweep_xy = np.array([(e[0], e[1]) for e in events])
        at = int(np.argmin(np.hypot(*(sweep_xy - centre).T))) + 1
        events[at:at] = block
    # decision phase (Kundel's search -> decision): after the search, the reader returns to
    # what it noticed and inspects it again, in a temporally contiguous block
    for i in rng.permutation(noticed):
        f, mask = spec.findings[int(i)], rendered.masks[int(i)]
        k = 4 + rng.poisson(profile.dwell * (0.4 + 0.6 * f.conspicuity))
        events.extend((float(x), float(y), 1.1, 1) for x, y in _inspection_points(rng, f.label, mask, k, 1.2 * profile.pixels_per_degree))

    ev = np.array(events, dtype=float)
    xy = np.column_stack([np.clip(ev[:, 0], 0.5, w - 0.5), np.clip(ev[:, 1], 0.5, h - 0.5)])
    dur = np.exp(rng.normal(np.log(profile.duration_median), profile.duration_sigma, len(ev))) * ev[:, 2]
    dur = np.clip(dur, 0.08, 2.5)
    xy, dur = _merge_refixations(xy, dur, min_amplitude=profile.pixels_per_degree)
    n = len(xy)
    amp_deg = np.hypot(*np.diff(xy, axis=0).T) / profile.pixels_per_degree
    sacc = 0.021 + 0.0022 * amp_deg  # main sequence (s)
    blink = rng.random(n - 1) < profile.blink_rate * (dur[:-1] + sacc)
    blink_dur = np.where(blink, rng.uniform(0.10, 0.25, n - 1), 0.0)
    gaps = sacc + blink_dur
    t0 = np.empty(n)
    t0[0] = 0.0  # the eyes already rest on the first target when the recording starts
    t0[1:] = np.cumsum(dur[:-1] + gaps)
    t1 = t0 + dur
    fixations = np.column_stack([xy, t0, t1])
    samples = _raw_samples(rng, profile, fixations, sacc, blink_dur)
    return SimulatedReading(profile.reader_id, fixations, samples, noticed, profile.pixels_per_degree)


def _inspection_points(rng: np.random.Generator, label: str, mask: np.ndarray, n: int, step: float) -> np.ndarray:
    """``(n, 2)`` fixation targets ``(x, y)`` on a finding, following how it is inspected.

    ``step`` (px, about a degree) is the smallest gaze shift that is a new fixation. A nodule
    or a mass: alternately its centre and a point on a ring around it (margin and
    surroundings, at least ``step`` out); an effusion: along its upper surface (the
    meniscus), left to right; a pneumothorax: along the edge of its footprint (the pleural
    line), top to bottom; an enlarged heart: alternately its left and right border
    (gauging the cardiothoracic ratio).
    """
    fr, fc = np.nonzero(mask)
    h, w = mask.shape
    xy = np.column_stack([fc + 0.5, fr + 0.5])
    if label in ("Nodule", "Mass"):
        c = xy.mean(0)
        radius = max(step, np.sqrt(fr.size / np.pi) + 0.5 * step)
        ang = rng.uniform(0, 2 * np.pi, n)
        ring = c + (radius * rng.uniform(0.9, 1.2, n))[:, None] * np.column_stack([np.cos(ang), np.sin(ang)])
        centre = c + rng.normal(0.0, 0.15 * radius, (n, 2))
        pts = np.where((np.arange(n) % 2 == 0)[:, None], centre, ring)
    elif label == "Cardiomegaly":
        mid = xy[:, 0].mean()
        left, right = xy[xy[:, 0] < mid], xy[xy[:, 0] >= mid]
        sides = [s for s in (left, right) if len(s)] or [xy]
        pts = np.stack([sides[k % len(sides)][rng.integers(0, len(sides[k % len(sides)]))] for k in range(n)])
    else:
        if label == "Effusion":  # topmost pixel of each column, ordered left to right
            cols = np.unique(fc)
            line = np.column_stack([cols + 0.5, np.array([fr[fc == c].min() for c in cols]) + 0.5])
            key = line[:, 0]
        else:  # pneumothorax: footprint boundary, ordered top to bottom
            inner = mask.copy()
            inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
            br, bc = np.nonzero(mask & ~inner)
            line = np.column_stack([bc + 0.5, br + 0.5]) if br.size else xy
            key = line[:, 1]
        pick = np.sort(rng.integers(0, len(line), n))
        pts = line[np.argsort(key, kind="stable")][pick]
    pts = pts + rng.normal(0.0, 1.5, pts.shape)
    return np.column_stack([np.clip(pts[:, 0], 0.5, w - 0.5), np.clip(pts[:, 1], 0.5, h - 0.5)])


def _merge_refixations(xy: np.ndarray, dur: np.ndarray, min_amplitude: float) -> tuple[np.ndarray, np.ndarray]:
    """Fuse consecutive targets closer than ``min_amplitude`` px into one longer fixation.

    A gaze shift smaller than about a degree is not a saccade an eye tracker can resolve
    (it hides in fixational tremor), so such refixations are one fixation, at the
    duration-weighted mean position, lasting the sum (capped at 2.5 s).
    """
    out_xy, out_d = [xy[0].copy()], [float(dur[0])]
    for p, d in zip(xy[1:], dur[1:]):
        if np.hypot(*(p - out_xy[-1])) < min_amplitude and out_d[-1] + d <= 2.5:
            tot = out_d[-1] + d
            out_xy[-1] = (out_xy[-1] * out_d[-1] + p * d) / tot
            out_d[-1] = tot
        else:
            out_xy.append(p.copy())
            out_d.append(float(d))
    return np.asarray(out_xy), np.asarray(out_d)


def _raw_samples(rng: np.random.Generator, profile: ReaderProfile, fix: np.ndarray, sacc: np.ndarray, blink_dur: np.ndarray) -> np.ndarray:
    """Raw ``[t, x, y, pupil]`` samples at the reader's rate for a fixation sequence."""
    dt = 1.0 / profile.rate_hz
    t = np.arange(0.0, fix[-1, 3] + 0.2, dt)
    n = len(t)
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    ppd = profile.pixels_per_degree
    # fixations: tremor + slow drift around the centre
    idx = np.searchsorted(fix[:, 2], t, side="right") - 1
    valid = idx >= 0
    in_fix = np.zeros(n, bool)
    in_fix[valid] = t[valid] < fix[idx[valid], 3]
    k = idx[in_fix]
    drift_phase = t[in_fix] - fix[k, 2]
    drift = 0.05 * ppd * drift_phase[:, None] * rng.normal(0, 1, (len(fix), 2))[k]
    x[in_fix] = fix[k, 0] + rng.normal(0, 0.12 * ppd, k.size) + drift[:, 0]
    y[in_fix] = fix[k, 1] + rng.normal(0, 0.12 * ppd, k.size) + drift[:, 1]
    # saccades (after any blink in the gap): minimum-jerk-like move to the next fixation
    gap = valid & ~in_fix & (idx < len(fix) - 1)
    g = idx[gap]
    since = t[gap] - fix[g, 3]
    in_blink = since < blink_dur[g]
    s = np.clip((since - blink_dur[g]) / sacc[g], 0.0, 1.0)
    s = s**3 * (10 - 15 * s + 6 * s**2)
    sx = fix[g, 0] + (fix[g + 1, 0] - fix[g, 0]) * s
    sy = fix[g, 1] + (fix[g + 1, 1] - fix[g, 1]) * s
    x[gap] = np.where(in_blink, np.nan, sx)
    y[gap] = np.where(in_blink, np.nan, sy)
    before = ~valid
    x[before] = fix[0, 0] + rng.normal(0, 0.12 * ppd, before.sum())
    y[before] = fix[0, 1] + rng.normal(0, 0.12 * ppd, before.sum())
    after = valid & ~in_fix & (idx == len(fix) - 1)
    x[after] = fix[-1, 0] + rng.normal(0, 0.12 * ppd, after.sum())
    y[after] = fix[-1, 1] + rng.normal(0, 0.12 * ppd, after.sum())
    # tracker dropouts
    lost = rng.random(n) < 0.003
    x[lost] = np.nan
    y[lost] = np.nan
    pupil = np.where(np.isnan(x), 0.0, 1.0 + 0.05 * np.cumsum(rng.normal(0, 0.05, n)) / np.sqrt(np.arange(1, n + 1)))
    return np.column_stack([t, x, y, pupil])
