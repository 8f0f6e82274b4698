"""MultiMatch scanpath similarity (Jarodzka et al. 2010; Dewhurst et al. 2012), vectorised.

This is an independent implementation that reproduces the reference Python package
``multimatch-gaze`` (0.1.3, ``multimatch_gaze.docomparison``) numerically, but aligns many
scanpath pairs at once: the saccade alignment is computed as a dynamic programme over
anti-diagonals of the alignment grid, batched over pairs with numpy.

Method, as in the reference
---------------------------
* A scanpath is a list of fixations ``[x, y, duration]`` (pixels, seconds). Each pair of
  consecutive fixations gives a saccade: start point ``(x_i, y_i)``, vector
  ``(dx, dy) = (x_{i+1} - x_i, y_{i+1} - y_i)``, amplitude ``rho`` and direction
  ``theta = atan2(dy, dx)``; saccade ``i`` carries the duration of fixation ``i`` (the one it
  leaves). The duration of the last fixation is never compared.
* Optional simplification (grouping) repeats, until the number of fixation durations stops
  changing, a *direction* pass (merge saccades ``i, i+1`` when the angle between them is
  ``< direction_threshold`` degrees and fixation ``i+1`` lasts ``< duration_threshold`` s) and
  an *amplitude* pass (merge when saccade ``i`` is shorter than ``amplitude_threshold`` px and
  fixation ``i`` or ``i+1`` is shorter than ``duration_threshold``; the last saccade is folded
  into its predecessor with the reference's exact, somewhat irregular, bookkeeping).
  A merged saccade starts where the first one starts; its vector is the sum of both; the
  duration of the skipped middle fixation is dropped. All thresholds ``0`` mean "no
  simplification" (the reference's ``grouping=False``).
* ``M[i, j] = |v_a[i] - v_b[j]|`` (Euclidean norm of the saccade-vector difference). The
  alignment is the cheapest monotone path from cell ``(0, 0)`` to ``(n_a - 1, n_b - 1)``
  moving right, down or diagonally, the cost being the sum of ``M`` over the cells entered.
  The reference finds it with scipy's Dijkstra on that grid graph; here it is a dynamic
  programme, batched over pairs along anti-diagonals, with the same floating-point sums, so
  the same path wherever the best predecessor of each path cell is unique. Where two
  predecessors of a cell on the path have bit-identical cumulative costs (repeated identical
  saccades, coordinates clipped to a border, coarse integer grids) the reference's choice
  depends on the order its Fibonacci heap settles equal keys; those pairs (rare with
  real-valued gaze) are re-aligned with scipy's Dijkstra on the identical graph, so the path,
  and every dimension, still matches.
* Along the path, five per-pair differences are taken and their **medians** normalised:

  ====  =========  ===========================================  =====================
  dim   name       per aligned saccade pair                      similarity
  ====  =========  ===========================================  =====================
  0     vector     ``|v_a - v_b|`` (px)                          ``1 - med / (2 diag)``
  1     direction  angle between ``theta_a``, ``theta_b`` (rad)  ``1 - med / pi``
  2     length     ``|rho_a - rho_b|`` (px)                      ``1 - med / diag``
  3     position   distance between saccade start points (px)   ``1 - med / diag``
  4     duration   ``|d_a - d_b| / max(d_a, d_b)``               ``1 - med``
  ====  =========  ===========================================  =====================

  with ``diag = sqrt(W**2 + H**2)`` of the screen.

Deviations from ``multimatch-gaze`` (all in degenerate cases)
-------------------------------------------------------------
* Two aligned fixations that both last 0 s have duration difference 0 here (the reference
  divides 0 by 0 and returns NaN for the whole duration dimension).
* In the direction pass the cosine is clipped to ``[-1, 1]`` (the reference raises
  ``ValueError: math domain error`` when rounding pushes it past 1 for parallel saccades).
* The amplitude pass never folds a scanpath's only saccade into a non-existent predecessor
  (the reference raises ``IndexError`` there: with large thresholds, whenever simplification
  leaves one short saccade between short fixations).
* :func:`multimatch_all_pairs` aligns each unordered pair once and mirrors it. The reference
  is symmetric too, except that with exact ties ``(a, b)`` and ``(b, a)`` may settle on
  different equal-cost paths; ``symmetric=False`` aligns both orders.

Modules: the scanpath handling and simplification are in
:mod:`~gazerad.gaze.multimatch_scanpath` (:func:`simplify_scanpath`, :func:`saccade_features`,
re-exported here), the batched alignment in :mod:`~gazerad.gaze.multimatch_align`; this module
holds the measure (normalisation, the array-level functions and the similarity scheme).

Array-level functions (:func:`multimatch`, :func:`multimatch_block`,
:func:`multimatch_all_pairs`) follow the reference in returning NaN for a scanpath with fewer
than 3 fixations. The similarity scheme (:class:`MultiMatchScheme`) also compares scanpaths of
2 fixations (one saccade: the alignment is trivial); see its docstring for records with fewer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from gazerad.gaze.base import SimilarityScheme, register_scheme
from gazerad.gaze.multimatch_align import pairs_medians
from gazerad.gaze.multimatch_scanpath import Packed, as_fixations, pack, saccade_features, simplify_scanpath
from gazerad.gaze.record import GazeRecord

__all__ = [
    "DIMENSIONS",
    "MultiMatchScheme",
    "multimatch",
    "multimatch_all_pairs",
    "multimatch_block",
    "saccade_features",
    "simplify_scanpath",
]

#: Names of the five MultiMatch dimensions, in output order.
DIMENSIONS: tuple[str, ...] = ("vector", "direction", "length", "position", "duration")

#: Minimum number of fixations the reference (``multimatch_gaze.docomparison``) accepts.
MIN_FIXATIONS_REFERENCE = 3


def _normalise(med: np.ndarray, diag: np.ndarray | float) -> np.ndarray:
    """``(P, 5)`` medians -> similarities, ``diag`` the screen diagonal (scalar or ``(P,)``)."""
    out = np.empty_like(med)
    out[:, 0] = 1 - med[:, 0] / (2 * diag)
    out[:, 1] = 1 - med[:, 1] / math.pi
    out[:, 2] = 1 - med[:, 2] / diag
    out[:, 3] = 1 - med[:, 3] / diag
    out[:, 4] = 1 - med[:, 4]
    return out


def _dimensions(
    A: Packed,
    ia: np.ndarray,
    B: Packed,
    ib: np.ndarray,
    shape: tuple[int, int],
    diag: Callable[[], np.ndarray | float],
    chunk: int,
    mirror: bool,
) -> np.ndarray:
    """``shape + (5,)`` array, NaN but for the normalised dimensions of the pairs
    ``(A[ia[p]], B[ib[p]])`` at ``[ia, ib]`` (and ``[ib, ia]`` when ``mirror``). ``diag()``
    gives the screen diagonal (scalar or per pair); it is called only when there are pairs."""
    out = np.full((shape[0], shape[1], 5), np.nan)
    if len(ia):
        res = _normalise(pairs_medians(A, ia, B, ib, chunk), diag())
        out[ia, ib] = res
        if mirror:
            out[ib, ia] = res
    return out


def _screen_diag(screen_size: ArrayLike) -> float:
    s = np.asarray(screen_size, dtype=np.float64).ravel()
    if s.shape != (2,) or not np.all(s > 0):
        raise ValueError(f"screen_size must be two positive numbers (width, height) in px, got {screen_size!r}")
    return math.sqrt(s[0] ** 2 + s[1] ** 2)


def _prepare(scanpaths: Sequence[ArrayLike], thresholds: tuple[float, float, float]) -> tuple[Packed, np.ndarray]:
    fix = [as_fixations(s, f"scanpath {k}") for k, s in enumerate(scanpaths)]
    ok = np.array([len(f) >= MIN_FIXATIONS_REFERENCE for f in fix], dtype=bool)
    sacc = [simplify_scanpath(f, *thresholds) if o else np.zeros((0, 5)) for f, o in zip(fix, ok)]
    return pack(sacc), ok


def multimatch_block(
    scanpaths_a: Sequence[ArrayLike],
    scanpaths_b: Sequence[ArrayLike],
    screen_size: ArrayLike,
    amplitude_threshold: float = 0.0,
    direction_threshold: float = 0.0,
    duration_threshold: float = 0.0,
    chunk: int = 4096,
) -> np.ndarray:
    """MultiMatch of every scanpath in ``scanpaths_a`` against every one in ``scanpaths_b``.

    Args:
        scanpaths_a, scanpaths_b: sequences of ``(N_k, 3)`` fixation arrays ``[x, y, duration]``
            (x = column, y = row, pixels; duration in seconds).
        screen_size: ``(width, height)`` in pixels (only its diagonal is used).
        amplitude_threshold, direction_threshold, duration_threshold: simplification
            thresholds (px, degrees, seconds), as in :func:`multimatch`.
        chunk: maximum number of pairs aligned together in one batch.

    Returns:
        ``(len(a), len(b), 5)`` similarities, :data:`DIMENSIONS` order; NaN rows/columns for
        scanpaths with fewer than 3 fixations.
    """
    th = (amplitude_threshold, direction_threshold, duration_threshold)
    A, oka = _prepare(scanpaths_a, th)
    B, okb = _prepare(scanpaths_b, th)
    ia, ib = np.nonzero(oka[:, None] & okb[None, :])
    return _dimensions(A, ia, B, ib, (len(oka), len(okb)), lambda: _screen_diag(screen_size), chunk, mirror=False)


def multimatch_all_pairs(
    scanpaths: Sequence[ArrayLike],
    screen_size: ArrayLike,
    amplitude_threshold: float = 0.0,
    direction_threshold: float = 0.0,
    duration_threshold: float = 0.0,
    chunk: int = 4096,
    symmetric: bool = True,
) -> np.ndarray:
    """MultiMatch of all pairs of ``scanpaths``: ``(N, N, 5)``.

    With ``symmetric=True`` only pairs ``i <= j`` are aligned (``out[i, j] ==
    multimatch(s_i, s_j)``) and mirrored to ``out[j, i]``. MultiMatch is symmetric except when
    the alignment has exact ties (see the module notes); pass ``symmetric=False`` to align both
    orders. Other arguments as in :func:`multimatch_block`.
    """
    if not symmetric:
        return multimatch_block(scanpaths, scanpaths, screen_size, amplitude_threshold, direction_threshold, duration_threshold, chunk)
    A, ok = _prepare(scanpaths, (amplitude_threshold, direction_threshold, duration_threshold))
    good = np.flatnonzero(ok)
    iu, ju = np.triu_indices(len(good))
    return _dimensions(A, good[iu], A, good[ju], (len(ok), len(ok)), lambda: _screen_diag(screen_size), chunk, mirror=True)


def multimatch(
    a: ArrayLike,
    b: ArrayLike,
    screen_size: ArrayLike,
    amplitude_threshold: float = 0.0,
    direction_threshold: float = 0.0,
    duration_threshold: float = 0.0,
) -> np.ndarray:
    """MultiMatch similarity of two scanpaths on five dimensions.

    Equivalent to ``multimatch_gaze.docomparison(a, b, screensize=screen_size,
    grouping=any_threshold_nonzero, TDir=direction_threshold, TDur=duration_threshold,
    TAmp=amplitude_threshold)`` (which takes record arrays with fields ``start_x``,
    ``start_y``, ``duration`` and ``screensize=[width, height]``).

    Args:
        a, b: ``(N, 3)`` fixations ``[x, y, duration]``: x = column, y = row in pixels (origin
            top-left), duration in seconds; or record arrays as the reference takes.
        screen_size: ``(width, height)`` in pixels; normalises vector, length and position.
        amplitude_threshold: px (authors: 160 px on 1920 x 1080); 0 = no amplitude grouping.
        direction_threshold: degrees (authors: 45); 0 = no direction grouping.
        duration_threshold: seconds (authors: 0.1); grouping only merges across fixations
            shorter than this, so 0 disables simplification altogether.

    Returns:
        ``(5,)`` float64 similarities ``[vector, direction, length, position, duration]``,
        1 = identical; all NaN if either scanpath has fewer than 3 fixations (as the reference).
    """
    return multimatch_block([a], [b], screen_size, amplitude_threshold, direction_threshold, duration_threshold)[0, 0]


# --------------------------------------------------------------------------------------------
# The similarity scheme
# --------------------------------------------------------------------------------------------


@dataclass
class MultiMatchFeatures:
    """Per-record features: simplified saccades ``(S, 5)``, raw fixations ``(N, 3)`` (used when
    ``S == 0``) and the screen extent ``(width, height)`` in pixels."""

    saccades: np.ndarray
    fixations: np.ndarray
    extent: tuple[float, float]


@register_scheme("multimatch")
class MultiMatchScheme(SimilarityScheme):
    """MultiMatch scanpath similarity, reduced to one number by a weighted mean of its five
    dimensions (vector, direction, length, position, duration).

    Args:
        weights: weights of ``(vector, direction, length, position, duration)``; divided by
            their sum. The choice is open: the default ``0.1 x 4 + 0.6`` (most weight on
            duration) is the weighting that appears in the authors' code, as METHODS.md
            notes; MultiMatch itself defines no single score.
        screen_size: ``(width, height)`` in pixels used to normalise distances. ``None``
            (default): each record's ``image_size`` (``(H, W)`` -> ``(W, H)``), else the
            extent of its fixations (from the origin, or from the most negative coordinate);
            a pair uses the element-wise larger extent of its two records.
        amplitude_threshold, direction_threshold, duration_threshold: scanpath simplification
            (px, degrees, seconds); 0 = none. The MultiMatch authors used 160 px, 45 degrees and
            100 ms on a 1920 x 1080 screen: scale the amplitude to the image size.

    Records: fixations ``[x, y, t_start, t_end]`` give ``[x, y, t_end - t_start]``. MultiMatch
    needs a saccade; unlike the reference (3 fixations or more) a record with 2 fixations is
    compared normally. A record with fewer than 2 fixations has no saccade: its similarity is
    1 with a record whose ``[x, y, duration]`` fixations are identical (e.g. itself) and 0 with
    any other. Two records with identical (simplified) saccades score exactly 1. Values are
    clipped to ``[0, 1]`` (fixations outside the screen can push a dimension below 0).
    :meth:`dimensions` gives the five dimensions themselves.
    """

    def __init__(
        self,
        weights: Sequence[float] = (0.1, 0.1, 0.1, 0.1, 0.6),
        screen_size: tuple[float, float] | None = None,
        amplitude_threshold: float = 0.0,
        direction_threshold: float = 0.0,
        duration_threshold: float = 0.0,
    ) -> None:
        w = tuple(float(v) for v in weights)
        if len(w) != 5 or min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"weights must be 5 non-negative numbers with a positive sum, got {weights!r}")
        self.weights = w
        self.screen_size = None if screen_size is None else (float(screen_size[0]), float(screen_size[1]))
        if self.screen_size is not None:
            _screen_diag(self.screen_size)
        self.amplitude_threshold = float(amplitude_threshold)
        self.direction_threshold = float(direction_threshold)
        self.duration_threshold = float(duration_threshold)

    def _extent(self, rec: GazeRecord, fix: np.ndarray) -> tuple[float, float]:
        if self.screen_size is not None:
            return self.screen_size
        if rec.image_size is not None:
            return (float(rec.image_size[1]), float(rec.image_size[0]))
        if len(fix) == 0:
            return (1.0, 1.0)
        lo = np.minimum(fix[:, :2].min(axis=0), 0.0)
        span = np.maximum(fix[:, :2].max(axis=0) - lo, 1.0)
        return (float(span[0]), float(span[1]))

    def features(self, records: Sequence[GazeRecord]) -> list[MultiMatchFeatures]:
        """One :class:`MultiMatchFeatures` per record (its simplified saccades)."""
        out = []
        for r in records:
            fix = np.column_stack([r.xy, r.durations]) if len(r) else np.zeros((0, 3))
            sac = simplify_scanpath(fix, self.amplitude_threshold, self.direction_threshold, self.duration_threshold)
            out.append(MultiMatchFeatures(sac, fix, self._extent(r, fix)))
        return out

    def dimensions(self, fa: Sequence[MultiMatchFeatures], fb: Sequence[MultiMatchFeatures]) -> np.ndarray:
        """``(len(fa), len(fb), 5)`` MultiMatch dimensions (NaN where a record has no saccade)."""
        same = fa is fb
        A = pack([f.saccades for f in fa])
        B = A if same else pack([f.saccades for f in fb])
        ga, gb = np.flatnonzero(A.n > 0), np.flatnonzero(B.n > 0)
        if same:
            iu, ju = np.triu_indices(len(ga))
            ia, ib = ga[iu], ga[ju]
        else:
            ia, ib = (g.ravel() for g in np.meshgrid(ga, gb, indexing="ij"))

        def diag() -> np.ndarray:  # per pair: the diagonal of the larger extent of its two records
            ext_a = np.array([f.extent for f in fa]).reshape(-1, 2)
            ext_b = ext_a if same else np.array([f.extent for f in fb]).reshape(-1, 2)
            ext = np.maximum(ext_a[ia], ext_b[ib])
            return np.sqrt(ext[:, 0] ** 2 + ext[:, 1] ** 2)

        return _dimensions(A, ia, B, ib, (len(fa), len(fb)), diag, 4096, mirror=same)

    def block(self, fa: Sequence[MultiMatchFeatures], fb: Sequence[MultiMatchFeatures]) -> np.ndarray:
        """``(len(fa), len(fb))`` weighted MultiMatch similarity in ``[0, 1]``."""
        dims = self.dimensions(fa, fb)
        w = np.asarray(self.weights) / sum(self.weights)
        sim = np.clip(dims @ w, 0.0, 1.0)
        sim[np.isnan(sim)] = 0.0  # a record without a saccade
        # identical scanpaths (same saccades; or, without a saccade, same fixations) score 1
        index: dict[bytes, list[int]] = {}
        for j, f in enumerate(fb):
            index.setdefault(_identity_key(f), []).append(j)
        for i, f in enumerate(fa):
            for j in index.get(_identity_key(f), ()):
                sim[i, j] = 1.0
        return sim


def _identity_key(f: MultiMatchFeatures) -> bytes:
    if len(f.saccades):
        return b"s" + np.ascontiguousarray(f.saccades).tobytes()
    return b"f" + np.ascontiguousarray(f.fixations).tobytes()
