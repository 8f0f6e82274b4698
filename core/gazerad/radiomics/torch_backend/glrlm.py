"""Gray Level Run Length Matrix (GLRLM) features, batched in torch, matching pyradiomics 3.0.1.

Angles: as for the GLCM (see :mod:`.glcm`), pyradiomics with the reference settings
(``force2D=True, force2Ddimension=0`` on a 2-D array) keeps only the horizontal angle
``(0, 1)``: runs along image rows (:data:`~.glcm.DEFAULT_ANGLES`). ``angles=FOUR_ANGLES``
gives pyradiomics' ``force2D=False`` result (rows, columns and both diagonals).

Matrix. ``P[i, j]`` counts the maximal runs of ``j`` consecutive ROI pixels of level ``i``
along an angle; a pixel outside the ROI ends a run. Runs are found without a loop over
pixels: the image is laid out so that every line of the angle is a row of a ``(B, L, T)``
tensor (a transpose for columns, a shear for the diagonals), the rows are flattened with
a 0 (outside) after each one, and the positions where the flat sequence changes value
(one comparison with its shifted self and one ``nonzero``) cut it into segments: the
non-zero segments are the runs, their lengths the gaps between change points. One
``bincount`` per angle over flat ``(sample, i, j)`` indices builds the matrices.

CPU tensors take a numpy twin of the same method (:func:`_glrlm_matrices_np`), without the
shear: the ROI is copied once into a zero buffer with rows of ``W + 1`` (a 0 column after
each image row); in its flat order the step ``s = dy * (W + 1) + dx`` moves one pixel along
the angle and hits a 0 when it leaves the image, so the lines of an angle are the residue
classes ``mod s``, and a transposed ``(m, s)`` view of the buffer (one copy; none for rows)
is a line layout of about ``H * W`` cells (the shear's is ``H * (H + W)``). Change points
come from ``numpy.flatnonzero``, gap lengths are clipped instead of masked, and the
features of the small matrices are computed in numpy (fewer, cheaper calls than torch).

pyradiomics quirks reproduced:

* gray levels and run lengths absent from the ROI are deleted, but the weights stay the
  *bin numbers* ``i`` and the *run lengths* ``j``: deleting zero rows/columns changes no
  sum, so a common ``(Ng_max, Nr_max)`` matrix gives the same values;
* an angle where no line of the image holds two ROI pixels (e.g. the horizontal angle of
  a diagonal-line ROI; pyradiomics refuses 1-pixel-wide straight ROIs outright) is
  treated by pyradiomics' C code as "2-D for this angle" and its runs are zeroed: the
  angle is empty;
* empty angles are dropped (several angles) and the per-angle features are averaged
  (``nanmean``); with every angle empty all features are NaN (``Nr = 0`` -> NaN), except
  that a *single* empty angle (the reference settings, e.g. a diagonal-line ROI with no
  two pixels in one row) is kept by pyradiomics, its run-length axis is deleted whole,
  and RunEntropy and RunVariance (sums over that empty axis, not divided by ``Nr``)
  come out as 0.

Parity with pyradiomics on ``tests/radiomics_cases.py`` (both angle settings):
``rtol = 1e-4`` (observed <= 4e-16), ``atol = 1e-9`` (only exact zeros sit near 0, e.g.
the variances of a constant ROI). The CPU (numpy) and torch paths build identical
matrices; their features differ by summation order only (relative ~1e-15).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import as_strided

from ..discretize import smallest_level_dtype
from ..names import CLASS_FEATURES
from . import cpu_fast_path, flat_nonzero
from .glcm import EPS, Angles, angle_mean, angle_mean_np, crop_to_roi, crop_to_roi_np, resolve_angles

__all__ = ["features", "glrlm_matrices", "line_layout", "line_runs", "compact_levels"]


def line_layout(lev: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Lay out ``(B, H, W)`` levels so that every line along ``(dy, dx)`` is a row.

    Args:
        lev: ``(B, H, W)`` integer levels, 0 outside the ROI.
        dy, dx: unit step of the angle (its sign does not matter: runs are the same both ways).

    Returns:
        ``(B, L, T)`` (possibly a non-contiguous view): ``L`` lines of ``T`` positions; cells
        that are not image pixels (the shear's corners) hold 0, i.e. "outside the ROI".
    """
    if dy < 0 or (dy == 0 and dx < 0):
        dy, dx = -dy, -dx
    if (dy, dx) == (0, 1):
        return lev
    if (dy, dx) == (1, 0):
        return lev.transpose(1, 2)
    if dx == 1:  # (1, 1): mirror the columns, then the lines run like (1, -1)
        lev = lev.flip(2)
    # (1, -1): pixels with equal y + x share a line; shift row y right by y -> column y + x
    b, h, w = lev.shape
    padded = F.pad(lev, (0, h))  # (B, H, W + H)
    sheared = padded.reshape(b, h * (w + h))[:, : h * (w + h - 1)].reshape(b, h, w + h - 1)
    return sheared.transpose(1, 2)


def line_runs(lines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every run of equal non-zero values along the rows of a ``(B, L, T)`` line layout.

    The lines are flattened with a 0 after each one; a run is a segment between two
    consecutive change points of the flat sequence that holds a non-zero value (the
    sequence ends with a 0, so every run is followed by a change point).

    Returns:
        ``(value, length)``, each ``(M,)`` int64, over the ``M`` segments of the flat
        sequence but its last (a gap); ``value == 0`` marks gaps, not runs.
    """
    value, length, _ = _segments(lines)
    return value, length


def _segments(lines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`line_runs` plus each segment's flat start position in the padded ``(B, L, T + 1)`` layout."""
    z = F.pad(lines, (0, 1)).reshape(-1)  # (B * L * (T + 1),), a 0 ends every line
    change = torch.ones_like(z, dtype=torch.bool)
    torch.ne(z[1:], z[:-1], out=change[1:])
    starts = flat_nonzero(change)
    first = starts[:-1]
    return z[first].long(), starts[1:] - first, first


def compact_levels(levels: torch.Tensor, ng: int) -> torch.Tensor:
    """Levels in the narrowest integer dtype that holds ``0..ng`` (``uint8`` for ``ng < 256``).

    Every per-pixel pass (layout copies, comparisons) then moves 1 byte per pixel instead of 4-8.
    """
    dtype = smallest_level_dtype(ng)
    return levels if levels.dtype == dtype else levels.to(dtype)


def _multi_exact(lines: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: some line of the ``(B, L, T)`` layout holds two ROI pixels."""
    return (lines > 0).sum(dim=2, dtype=torch.int32).amax(dim=1) >= 2


def glrlm_matrices(levels: torch.Tensor, ng: int, angles: Angles) -> tuple[torch.Tensor, torch.Tensor]:
    """Run-length matrices of every sample and angle.

    Args:
        levels: ``(B, H, W)`` integer, 1..Ng in the ROI, 0 outside.
        ng: number of gray-level rows (``>= levels.max()``).
        angles: ``(dy, dx)`` steps.

    Returns:
        ``P`` ``(B, Na, ng, Nr)`` float64 (``[b, a, i - 1, j - 1]`` = runs of level ``i`` and
        length ``j``; ``Nr`` the longest run in the batch) and ``multi`` ``(B, Na)`` bool: some
        line of the angle holds two ROI pixels (pyradiomics zeroes the angle's matrix otherwise).
    """
    if cpu_fast_path(levels):
        lev = levels.detach().numpy()
        if lev.dtype.kind not in "ui" or (lev.size and lev.min() < 0):
            raise ValueError("levels must be non-negative integers")
        counts, multi = _glrlm_matrices_np(lev, ng, angles)
        return torch.from_numpy(counts.astype(np.float64)), torch.from_numpy(multi)
    b, na = levels.shape[0], len(angles)
    # the layouts and run detection work on 1-byte levels; a run's sample comes from its
    # position in the flat layout. Gaps (value 0) get length 0 and matrix row 0, dropped
    # below, so no per-segment masking is needed.
    lev = compact_levels(levels, ng)
    keys, lines_of = [], []
    nr = 1
    for dy, dx in angles:
        lines = line_layout(lev, dy, dx)
        value, length, start = _segments(lines)
        per_sample = lines.shape[1] * (lines.shape[2] + 1)  # flat positions per sample (_segments pads 1)
        row = torch.div(start, per_sample, rounding_mode="floor").mul_(ng + 1).add_(value)  # (sample, level)
        run_len = length.mul_(value.bool())
        if run_len.numel():
            nr = max(nr, int(run_len.max()))
        keys.append((row, run_len))
        lines_of.append(lines)
    n_bins = b * (ng + 1) * (nr + 1)
    counts = torch.stack(
        [torch.bincount(row.mul_(nr + 1).add_(run_len), minlength=n_bins).view(b, ng + 1, nr + 1)[:, 1:, 1:] for row, run_len in keys], dim=1
    )  # (B, Na, ng, nr)
    # a run of >= 2 pixels proves the angle has a line with two ROI pixels; only samples
    # without one need the exact (full-layout) count
    multi = counts[..., 1:].sum(dim=(2, 3)) > 0
    if not bool(multi.all()):
        for a in range(na):
            todo = torch.nonzero(~multi[:, a]).flatten()
            if todo.numel():
                multi[todo, a] = _multi_exact(lines_of[a][todo])
    return counts.to(torch.float64), multi


def _per_angle_features(p: torch.Tensor) -> dict[str, torch.Tensor]:
    """All GLRLM features of each run-length matrix.

    Args:
        p: ``(N, G, R)`` run counts (rows = bins 1..G, columns = lengths 1..R), non-empty.

    Returns:
        feature name -> ``(N,)`` float64.
    """
    g, r = p.shape[1:]
    i = torch.arange(1, g + 1, dtype=p.dtype, device=p.device)
    j = torch.arange(1, r + 1, dtype=p.dtype, device=p.device)
    pg, pr = p.sum(dim=2), p.sum(dim=1)  # (N, G), (N, R)
    nr = pr.sum(dim=1)
    i2, j2 = i**2, j**2
    pgn, prn = pg / nr[:, None], pr / nr[:, None]
    u_i = (pgn * i).sum(dim=1, keepdim=True)
    u_j = (prn * j).sum(dim=1, keepdim=True)
    pn = p / nr[:, None, None]

    def joint(wi: torch.Tensor, wj: torch.Tensor) -> torch.Tensor:  # sum_ij P w_i w_j / Nr
        return ((p @ wj) * wi).sum(dim=1) / nr

    return {
        "GrayLevelNonUniformity": (pg**2).sum(dim=1) / nr,
        "GrayLevelNonUniformityNormalized": (pg**2).sum(dim=1) / nr**2,
        "GrayLevelVariance": (pgn * (i - u_i) ** 2).sum(dim=1),
        "HighGrayLevelRunEmphasis": (pg * i2).sum(dim=1) / nr,
        "LongRunEmphasis": (pr * j2).sum(dim=1) / nr,
        "LongRunHighGrayLevelEmphasis": joint(i2, j2),
        "LongRunLowGrayLevelEmphasis": joint(1 / i2, j2),
        "LowGrayLevelRunEmphasis": (pg / i2).sum(dim=1) / nr,
        "RunEntropy": -(pn * torch.log2(pn + EPS)).sum(dim=(1, 2)),
        "RunLengthNonUniformity": (pr**2).sum(dim=1) / nr,
        "RunLengthNonUniformityNormalized": (pr**2).sum(dim=1) / nr**2,
        "RunPercentage": nr / (pr * j).sum(dim=1),
        "RunVariance": (prn * (j - u_j) ** 2).sum(dim=1),
        "ShortRunEmphasis": (pr / j2).sum(dim=1) / nr,
        "ShortRunHighGrayLevelEmphasis": joint(i2, 1 / j2),
        "ShortRunLowGrayLevelEmphasis": joint(1 / i2, 1 / j2),
    }


def features(
    image: torch.Tensor,
    mask: torch.Tensor,
    levels: torch.Tensor,
    spacing: tuple[float, float] = (1.0, 1.0),
    angles: Angles | None = None,
) -> torch.Tensor:
    """GLRLM features of a batch (per-angle features averaged over the non-empty angles).

    Args:
        image: ``(B, H, W)`` float64 (unused: the GLRLM works on the discretised levels).
        mask: ``(B, H, W)`` bool ROI.
        levels: ``(B, H, W)`` int64 from :func:`gazerad.radiomics.discretize.discretize`.
        spacing: pixel spacing (unused: no distance weighting, as pyradiomics' default).
        angles: ``(dy, dx)`` steps; ``None``: :data:`~.glcm.DEFAULT_ANGLES` (the reference settings).

    Returns:
        ``(B, 16)`` float64 on the input's device, columns in ``CLASS_FEATURES["glrlm"]`` order.
    """
    angs = resolve_angles(angles)
    if cpu_fast_path(levels) and mask.device.type == "cpu":
        lev, g = crop_to_roi_np(mask, levels)
        counts, multi = _glrlm_matrices_np(lev, max(g, 1), angs)
        return torch.from_numpy(_features_np(counts, multi))
    lev = crop_to_roi(mask, levels)
    b, na = lev.shape[0], len(angs)
    g = max(int(lev.max()), 1)
    counts, multi = glrlm_matrices(lev, g, angs)
    valid = multi & (counts.sum(dim=(2, 3)) > 0)
    p = counts.reshape(b * na, g, counts.shape[-1])
    p = torch.where(valid.view(b * na, 1, 1), p, torch.ones_like(p))  # placeholder for empty angles
    per = _per_angle_features(p)
    names = CLASS_FEATURES["glrlm"]
    out = angle_mean(torch.stack([per[n].view(b, na) for n in names], dim=2), valid)
    if na == 1:  # pyradiomics keeps a lone empty angle; its empty matrix gives RE = RV = 0, the rest NaN
        for n in ("RunEntropy", "RunVariance"):
            k = names.index(n)
            out[:, k] = torch.where(valid[:, 0], out[:, k], torch.zeros_like(out[:, k]))
    return out


# --- CPU path: numpy, one layout buffer shared by all angles ---


def _glrlm_matrices_np(lev: np.ndarray, ng: int, angles: Angles) -> tuple[np.ndarray, np.ndarray]:
    """:func:`glrlm_matrices` on CPU in numpy: ``(B, H, W)`` integer levels (0 outside the ROI).

    Lines without a shear: the ROI is copied once into a zero buffer with rows of ``W + 1``
    (a 0 column after each image row, zeros after the last row). In that buffer the step
    ``s = dy * (W + 1) + dx`` moves one pixel along the angle and lands on a 0 when it leaves
    the image, so the lines of the angle are the residue classes ``mod s`` of the flat
    buffer, each line followed by a 0: viewed as ``(m, s)`` and transposed (one copy; none
    for the horizontal angle, ``s = 1``), every line is a stretch of one flat sequence,
    and runs are cut at its change points as in :func:`line_runs`.

    Returns:
        ``(B, Na, ng, Nr)`` int64 counts and ``(B, Na)`` bool ``multi``, as :func:`glrlm_matrices`.
    """
    b, h, w = lev.shape
    na, row = len(angles), w + 1
    data = h * row
    size = data + 2 * (w + 2)  # room for the transposed view of the largest step (w + 2) plus a 0 row
    dtype = np.uint8 if ng < 2**8 else np.uint16 if ng < 2**16 else np.int64
    buf = np.zeros((b, size), dtype)
    buf[:, :data].reshape(b, h, row)[:, :, :w] = lev
    item = buf.itemsize
    per_angle = []
    nr = 1
    for dy, dx in angles:
        if dy < 0 or (dy == 0 and dx < 0):
            dy, dx = -dy, -dx
        step = dy * row + dx
        longest = w if dy == 0 else h if dx == 0 else min(h, w)  # longest line of the angle
        if step == 1:
            z, span = buf.reshape(-1), size
        else:
            m = -(-data // step) + 1  # the last of the m rows lies past the data: all 0
            span = step * m
            z = np.ascontiguousarray(as_strided(buf, (b, step, m), (size * item, item, step * item))).reshape(-1)
        change = np.empty(z.size, bool)
        change[0] = True
        np.not_equal(z[1:], z[:-1], out=change[1:])
        starts = np.flatnonzero(change)  # segment starts; the last segment is 0s (z ends with a 0)
        first = starts[:-1]
        length = np.diff(starts)
        # key (sample, level, length); gaps (level 0) can be long: clip them, they are dropped
        np.minimum(length, longest + 1, out=length)
        key = z[first].astype(np.int64)
        key *= longest + 2
        key += length
        per_sample = (ng + 1) * (longest + 2)
        if b > 1:
            key += (first // span) * per_sample  # the sample of each segment
        counts = np.bincount(key, minlength=b * per_sample).reshape(b, ng + 1, longest + 2)[:, 1:, 1 : longest + 1]
        used = np.flatnonzero(counts.any(axis=(0, 1)))
        if used.size:
            nr = max(nr, int(used[-1]) + 1)
        per_angle.append(counts)
    out = np.zeros((b, na, ng, nr), np.int64)
    for a, counts in enumerate(per_angle):
        k = min(nr, counts.shape[-1])
        out[:, a, :, :k] = counts[:, :, :k]
    # a run of >= 2 pixels proves a line with two ROI pixels; other samples need the exact check
    multi = out[..., 1:].any(axis=(2, 3))
    if not multi.all():
        roi = torch.from_numpy((lev > 0).view(np.uint8))  # the check needs ROI membership only
        for a, (dy, dx) in enumerate(angles):
            todo = np.flatnonzero(~multi[:, a])
            if todo.size:
                multi[todo, a] = _multi_exact(line_layout(roi[torch.from_numpy(todo)], dy, dx)).numpy()
    return out, multi


def _per_angle_features_np(p: np.ndarray) -> list[np.ndarray]:
    """numpy twin of :func:`_per_angle_features`: ``(N, G, R)`` -> values in ``CLASS_FEATURES`` order."""
    g, r = p.shape[1:]
    i = np.arange(1, g + 1, dtype=np.float64)
    j = np.arange(1, r + 1, dtype=np.float64)
    pg, pr = p.sum(axis=2), p.sum(axis=1)
    nr = pr.sum(axis=1)
    i2, j2 = i**2, j**2
    pgn, prn = pg / nr[:, None], pr / nr[:, None]
    u_i = pgn @ i
    u_j = prn @ j
    pn = p / nr[:, None, None]
    pg2, pr2 = (pg * pg).sum(axis=1), (pr * pr).sum(axis=1)
    pj2, pj_2 = p @ j2, p @ (1 / j2)  # (N, G)
    return [
        pg2 / nr,  # GrayLevelNonUniformity
        pg2 / nr**2,  # GrayLevelNonUniformityNormalized
        (pgn * (i[None, :] - u_i[:, None]) ** 2).sum(axis=1),  # GrayLevelVariance
        (pg @ i2) / nr,  # HighGrayLevelRunEmphasis
        (pr @ j2) / nr,  # LongRunEmphasis
        (pj2 @ i2) / nr,  # LongRunHighGrayLevelEmphasis
        (pj2 @ (1 / i2)) / nr,  # LongRunLowGrayLevelEmphasis
        (pg @ (1 / i2)) / nr,  # LowGrayLevelRunEmphasis
        -(pn * np.log2(pn + EPS)).sum(axis=(1, 2)),  # RunEntropy
        pr2 / nr,  # RunLengthNonUniformity
        pr2 / nr**2,  # RunLengthNonUniformityNormalized
        nr / (pr @ j),  # RunPercentage
        (prn * (j[None, :] - u_j[:, None]) ** 2).sum(axis=1),  # RunVariance
        (pr @ (1 / j2)) / nr,  # ShortRunEmphasis
        (pj_2 @ i2) / nr,  # ShortRunHighGrayLevelEmphasis
        (pj_2 @ (1 / i2)) / nr,  # ShortRunLowGrayLevelEmphasis
    ]


def _features_np(counts: np.ndarray, multi: np.ndarray) -> np.ndarray:
    """:func:`features` on CPU from :func:`_glrlm_matrices_np`'s output -> ``(B, 16)`` float64."""
    b, na, g, r = counts.shape
    valid = multi & counts.any(axis=(2, 3))
    p = counts.reshape(b * na, g, r).astype(np.float64)
    p[~valid.reshape(-1)] = 1.0  # placeholder for empty angles
    out = angle_mean_np(np.stack(_per_angle_features_np(p), axis=1).reshape(b, na, -1), valid)
    if na == 1:  # pyradiomics keeps a lone empty angle; its empty matrix gives RE = RV = 0, the rest NaN
        names = CLASS_FEATURES["glrlm"]
        for n in ("RunEntropy", "RunVariance"):
            k = names.index(n)
            out[:, k] = np.where(valid[:, 0], out[:, k], 0.0)
    return out
