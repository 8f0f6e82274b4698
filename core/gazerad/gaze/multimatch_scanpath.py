"""MultiMatch scanpath handling (:mod:`gazerad.gaze.multimatch`): input checks, the
simplification (grouping) of saccades and the packed saccade features the alignment reads.

One scanpath at a time, ``O(n)`` each; the rules, which mirror ``multimatch-gaze``
bit for bit, are in the :mod:`~gazerad.gaze.multimatch` docstring.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from gazerad.gaze.record import float_table

__all__ = [
    "F_DUR",
    "F_DX",
    "F_DY",
    "F_RHO",
    "F_THETA",
    "F_X",
    "F_Y",
    "Packed",
    "as_fixations",
    "pack",
    "saccade_features",
    "simplify_scanpath",
]

# Feature rows of a packed saccade array (see pack).
F_X, F_Y, F_DX, F_DY, F_RHO, F_THETA, F_DUR = range(7)
_NFEAT = 7


def as_fixations(scanpath: ArrayLike, name: str = "scanpath") -> np.ndarray:
    """``(N, 3)`` float64 ``[x, y, duration]`` from an array or a record array with fields
    ``start_x``, ``start_y``, ``duration`` (the reference's input format)."""
    arr = np.asarray(scanpath)
    if arr.dtype.names is not None:
        missing = {"start_x", "start_y", "duration"} - set(arr.dtype.names)
        if missing:
            raise ValueError(f"{name}: record array lacks fields {sorted(missing)}")
        arr = np.stack([arr["start_x"], arr["start_y"], arr["duration"]], axis=-1)
    return float_table(arr, "x, y, duration_s", name)


def _angle_deg(ax: float, ay: float, bx: float, by: float) -> float:
    """Angle between two vectors in degrees; NaN when one has zero length (never merges)."""
    den = math.sqrt(ax * ax + ay * ay) * math.sqrt(bx * bx + by * by)
    if den == 0.0:
        return math.nan
    c = (ax * bx + ay * by) / den
    return math.degrees(math.acos(min(1.0, max(-1.0, c))))


def _grouping_pass(
    sac: list[list[float]],
    dur: list[float],
    merges: Callable[[int], bool],
    folds_last: Callable[[], bool] | None = None,
) -> tuple[list, list]:
    """One grouping pass over saccades ``[x, y, dx, dy]`` and fixation durations.

    Saccade ``i`` absorbs saccade ``i + 1`` when ``merges(i)`` (the merged saccade starts
    where ``i`` starts, its vector is the sum, the middle fixation's duration is dropped).
    ``folds_last`` (amplitude pass only), when true for the final saccade, replaces the vector
    of the last *output* saccade by the sum of the last two *input* saccade vectors and
    appends an extra duration: this mirrors the reference bit for bit (its duration list can
    then be one longer than ``saccades + 1``, which matters only for ``dur[-1]``, ``dur[-2]``
    and its stopping rule).
    """
    n = len(sac)
    if n < 1:
        return sac, dur
    out_s: list[list[float]] = []
    out_d: list[float] = []
    i = 0
    while i < n:
        if i < n - 1 and merges(i):
            a, b = sac[i], sac[i + 1]
            out_s.append([a[0], a[1], a[2] + b[2], a[3] + b[3]])
            out_d.append(dur[i])
            i += 2
            continue
        if i == n - 1 and folds_last is not None and out_s and folds_last():
            last = out_s[-1]
            out_s[-1] = [last[0], last[1], sac[n - 2][2] + sac[n - 1][2], sac[n - 2][3] + sac[n - 1][3]]
            out_d.append(dur[i - 1])
            i += 1
            continue
        out_s.append(sac[i])
        out_d.append(dur[i])
        i += 1
    out_d.append(dur[-1])
    return out_s, out_d


def _direction_pass(sac: list[list[float]], dur: list[float], tdir: float, tdur: float) -> tuple[list, list]:
    """Merge saccades ``i, i+1`` at an angle below ``tdir`` degrees across a fixation shorter than ``tdur``."""

    def merges(i: int) -> bool:
        a, b = sac[i], sac[i + 1]
        return _angle_deg(a[2], a[3], b[2], b[3]) < tdir and dur[i + 1] < tdur

    return _grouping_pass(sac, dur, merges)


def _amplitude_pass(sac: list[list[float]], dur: list[float], tamp: float, tdur: float) -> tuple[list, list]:
    """Merge a saccade shorter than ``tamp`` px into the next when fixation ``i`` or ``i+1`` is
    shorter than ``tdur``; a short final saccade is folded into its predecessor (see
    :func:`_grouping_pass`)."""

    def short(i: int) -> bool:
        dx, dy = sac[i][2], sac[i][3]
        return math.sqrt(dx * dx + dy * dy) < tamp

    def merges(i: int) -> bool:
        return short(i) and (dur[i + 1] < tdur or dur[i] < tdur)

    def folds_last() -> bool:
        return short(len(sac) - 1) and (dur[-1] < tdur or dur[-2] < tdur)

    return _grouping_pass(sac, dur, merges, folds_last)


def simplify_scanpath(
    scanpath: ArrayLike,
    amplitude_threshold: float = 0.0,
    direction_threshold: float = 0.0,
    duration_threshold: float = 0.0,
) -> np.ndarray:
    """Saccades of a scanpath, simplified as in MultiMatch.

    Args:
        scanpath: ``(N, 3)`` fixations ``[x, y, duration]`` (pixels, seconds), or a record
            array with fields ``start_x``, ``start_y``, ``duration``.
        amplitude_threshold: px; saccades shorter than this may be merged (0: never).
        direction_threshold: degrees; consecutive saccades at a smaller angle may be merged.
        duration_threshold: seconds; merges need fixations shorter than this (0: never).

    Returns:
        ``(S, 5)`` float64 ``[x_start, y_start, dx, dy, duration]`` per saccade, ``S = N - 1``
        without simplification (``(0, 5)`` for fewer than 2 fixations); ``duration`` is that of
        the fixation the saccade leaves.
    """
    f = as_fixations(scanpath)
    n = len(f)
    if n < 2:
        return np.zeros((0, 5))
    x, y, d = f[:, 0], f[:, 1], f[:, 2]
    dx, dy = np.diff(x), np.diff(y)
    if max(amplitude_threshold, direction_threshold, duration_threshold) <= 0.0:
        return np.stack([x[:-1], y[:-1], dx, dy, d[:-1]], axis=1)
    sac = np.stack([x[:-1], y[:-1], dx, dy], axis=1).tolist()
    dur = d.tolist()
    prev = len(dur)
    while True:
        sac, dur = _direction_pass(sac, dur, float(direction_threshold), float(duration_threshold))
        sac, dur = _amplitude_pass(sac, dur, float(amplitude_threshold), float(duration_threshold))
        if len(dur) == prev:
            break
        prev = len(dur)
    s = np.asarray(sac, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([s, np.asarray(dur[: len(s)], dtype=np.float64)[:, None]], axis=1)


def saccade_features(saccades: np.ndarray) -> np.ndarray:
    """``(S, 5)`` saccades -> ``(7, S)`` rows ``x, y, dx, dy, rho, theta, duration``.

    ``theta`` is ``atan2(dy, dx)`` mapped to ``[0, 2 pi)`` the way the reference does
    (``pi + (pi + theta)`` for negative angles).
    """
    s = np.asarray(saccades, dtype=np.float64)
    dx, dy = s[:, 2], s[:, 3]
    rho = np.sqrt(dx**2 + dy**2)
    theta = np.arctan2(dy, dx)
    theta = np.where(theta < 0, np.pi + (np.pi + theta), theta)
    return np.stack([s[:, 0], s[:, 1], dx, dy, rho, theta, s[:, 4]], axis=0)


@dataclass
class Packed:
    """Saccade features of many scanpaths, padded: ``feats (7, S_max, N)``, ``n (N,)``."""

    feats: np.ndarray
    n: np.ndarray


def pack(saccade_list: Sequence[np.ndarray]) -> Packed:
    n = np.array([len(s) for s in saccade_list], dtype=np.int64)
    smax = int(max(1, n.max(initial=1)))
    feats = np.zeros((_NFEAT, smax, len(saccade_list)))
    for k, s in enumerate(saccade_list):
        if len(s):
            feats[:, : len(s), k] = saccade_features(s)
    return Packed(feats, n)
