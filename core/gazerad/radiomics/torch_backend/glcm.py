"""Gray Level Co-occurrence Matrix (GLCM) features, batched in torch, matching pyradiomics 3.0.1.

Angles (read this first). pyradiomics builds its angles in 3-D and drops every angle that
moves along ``force2Ddimension``. :mod:`gazerad.radiomics.reference` hands pyradiomics a
``(1, H, W)`` slice with ``force2D=True, force2Ddimension=0``, so the 4 in-plane angles are
used (:data:`FOUR_ANGLES`, the default). A trap worth knowing: a 2-D SimpleITK image with the
same settings becomes a ``(rows, cols)`` array and pyradiomics silently keeps only the
horizontal angle ``(0, 1)`` (:data:`ROW_ANGLES`): 1-D texture. Every call may pass ``angles=``.

Matrix. For each angle ``(dy, dx)`` and distance 1, ``P[i, j]`` counts ROI pixel pairs
``(p, p + (dy, dx))`` with levels ``(i, j)``; pyradiomics then adds the transpose
(symmetric GLCM) and normalises each angle's matrix to ``p = P / sum P``. All samples of an
angle come from one ``bincount`` over flat ``(sample, i, j)`` indices.

CPU tensors take a numpy twin (:func:`_features_np`): the angles are counted in twos, one
bincount over int16 codes ``(sample, l(p), l(p + d1), l(p + d2))`` whose two marginals are
the two angles' matrices (:func:`_glcm_counts_np`), and the features of the small
matrices are computed in numpy with the linear parts as matrix products (fewer, cheaper
calls than torch). Same matrices; features differ from the torch path by summation order
only (relative ~1e-15; more where a sum cancels, e.g. ClusterShade of a near-symmetric
``p_{x+y}``, and MCC where its eigenvalue is at rounding level, ~1e-8 absolute, as in
pyradiomics itself).

Gray levels. pyradiomics deletes the rows/columns of levels absent from the ROI but keeps
the *bin numbers* of the present levels as the weights ``i, j``, and ``Ng`` (in IDMN/IDN
and the ``k`` ranges) is the largest bin number in the ROI. Deleting zero rows changes
no sum, so the matrices are kept at a common ``(Ng_max, Ng_max)`` with bin numbers
``1..Ng_max`` as weights and each sample's own ``Ng``. The one place the deletion shows is
MCC: it is 1 when the ROI holds a single gray level (a flat region, pyradiomics' 1 x 1 Q).

Angles without pairs. With several angles pyradiomics deletes the empty ones and averages
the features of the rest (``nanmean``, so a feature that is NaN for one angle, e.g. an
IMC2 square root of a rounding-negative number, is averaged over the others). With every
angle empty (a single angle without horizontal pairs, e.g. a diagonal-line ROI)
every feature is NaN, as in pyradiomics (MCC too, unless the ROI is flat).

Special cases copied from pyradiomics (per angle, before averaging): Correlation = 1 where
``sigma_x * sigma_y == 0``; IMC1 = 0 where ``max(HX, HY) == 0``; IMC2 = 0 where
``HXY2 == HXY``; logs use ``log2(x + eps)`` with ``eps = numpy.spacing(1)``; Correlation
divides by ``sigma_x * sigma_y + eps``.

MCC. pyradiomics takes the eigenvalues of ``Q = Dx^-1 P Dy^-1 P^T`` (with ``+ eps`` in the
denominators). ``Q`` is similar to ``A A^T`` with ``A = Dx^-1/2 P Dy^-1/2``, so the second
largest eigenvalue of ``Q`` is the square of the second largest singular value of ``A``:
computed here with a symmetric eigensolver on ``A A^T`` (batched, faster and better
conditioned than a general eigensolver). The ``eps`` in pyradiomics' denominators changes
its entries by ``eps / (p_x p_y)`` relative (< 1e-6 for any realistic pair count).

Parity with pyradiomics on ``tests/radiomics_cases.py`` (both angle settings):
``rtol = 1e-4`` (observed <= 3e-11, MCC; the other features <= 2e-13), ``atol = 1e-9``
for values at 0 (exact zeros of the constant ROI; Correlation / ClusterShade / IMC1 near
0 agree to ~1e-16 absolute).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..names import CLASS_FEATURES
from . import EPS, cpu_fast_path, roi_box

__all__ = [
    "features",
    "glcm_matrices",
    "crop_to_roi",
    "resolve_angles",
    "angle_mean",
    "DEFAULT_ANGLES",
    "FOUR_ANGLES",
    "ROW_ANGLES",
    "EPS",
]

Angles = Sequence[tuple[int, int]]

# (dy, dx) = (row, col) steps. pyradiomics, force2D=True, force2Ddimension=0, 2-D array (1-D texture):
ROW_ANGLES: tuple[tuple[int, int], ...] = ((0, 1),)
# pyradiomics on a (1, H, W) slice with force2Ddimension=0, or force2D=False on a 2-D array
# (same order as its output: (1,1), (1,0), (1,-1), (0,1)):
FOUR_ANGLES: tuple[tuple[int, int], ...] = ((1, 1), (1, 0), (1, -1), (0, 1))
# the angles of gazerad.radiomics.reference
DEFAULT_ANGLES: tuple[tuple[int, int], ...] = FOUR_ANGLES


def resolve_angles(angles: Angles | None) -> tuple[tuple[int, int], ...]:
    """Validate angles (``None``: :data:`DEFAULT_ANGLES`).

    Returns:
        ``(dy, dx)`` unit steps, each in ``{-1, 0, 1}``, not ``(0, 0)``, no angle given twice
        (an angle and its opposite are the same angle).
    """
    out = tuple((int(dy), int(dx)) for dy, dx in (DEFAULT_ANGLES if angles is None else angles))
    seen: set[tuple[int, int]] = set()
    for dy, dx in out:
        if (dy, dx) == (0, 0) or abs(dy) > 1 or abs(dx) > 1:
            raise ValueError(f"angles must be unit steps (dy, dx) in {{-1, 0, 1}}^2 \\ (0, 0), got {out}")
        canon = max((dy, dx), (-dy, -dx))
        if canon in seen:
            raise ValueError(f"angle {(dy, dx)} given twice (opposite steps are one angle): {out}")
        seen.add(canon)
    if not out:
        raise ValueError("at least one angle is needed")
    return out


def crop_to_roi(mask: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Levels zeroed outside the ROI, cropped to the union bounding box of the batch's ROIs.

    Args:
        mask: ``(B, H, W)`` bool.
        levels: ``(B, H, W)`` int64.

    Returns:
        ``(B, h, w)`` in the dtype of ``levels``, contiguous (uncropped if no sample has an ROI pixel).
    """
    box = roi_box(mask)
    if box is not None:
        r0, r1, c0, c1 = box
        mask, levels = mask[:, r0 : r1 + 1, c0 : c1 + 1], levels[:, r0 : r1 + 1, c0 : c1 + 1]
    return levels * mask.to(torch.bool)  # integers: the same as where(mask, levels, 0), much faster on CPU


def roi_min_level(lev: torch.Tensor) -> torch.Tensor:
    """``(B,)`` int64: the smallest level in each ROI of ``(B, H, W)`` levels (0 outside; ``g + 1`` if empty)."""
    b = lev.shape[0]
    if lev.dtype == torch.uint8:  # lev - 1 wraps 0 (outside) to 255, above every level - 1
        low = (lev - 1).reshape(b, -1).amin(dim=1).to(torch.int64) + 1
        return torch.where(low == 256, int(lev.max()) + 1, low)
    g = int(lev.max())
    return torch.where(lev > 0, lev, torch.full_like(lev, g + 1)).reshape(b, -1).amin(dim=1).to(torch.int64)


def _pair_views(lev: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Views ``(a, b)`` with ``b[..., y, x] = lev[..., y + dy, x + dx]`` over all in-image pairs."""
    h, w = lev.shape[-2:]
    ys, yn = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h + min(0, dy))
    xs, xn = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w + min(0, dx))
    return lev[:, ys, xs], lev[:, yn, xn]


def glcm_matrices(levels: torch.Tensor, ng: int, angles: Angles) -> torch.Tensor:
    """Symmetric GLCM counts of every sample and angle (distance 1).

    Args:
        levels: ``(B, H, W)`` integer, 1..Ng in the ROI, 0 outside.
        ng: matrix size (``>= levels.max()``).
        angles: ``(dy, dx)`` steps.

    Returns:
        ``(B, Na, ng, ng)`` float64; ``[b, a, i - 1, j - 1]`` counts pairs of levels ``(i, j)``
        plus ``(j, i)`` (pyradiomics' ``P + P^T``).
    """
    b, ext = levels.shape[0], ng + 1  # level 0 (outside) gets a row/column, dropped below
    n_bins = b * ext * ext
    dtype = torch.int32 if n_bins < 2**31 else torch.int64
    lev = levels.to(dtype)
    sample = (torch.arange(b, device=lev.device, dtype=dtype) * (ext * ext)).view(b, 1, 1)
    first = lev * ext + sample  # (sample, i) part of the flat (sample, i, j) index
    # one bincount per angle over the pair views' sum (no concatenation of the index tensors)
    counts = torch.stack(
        [torch.bincount((_pair_views(first, dy, dx)[0] + _pair_views(lev, dy, dx)[1]).reshape(-1), minlength=n_bins).view(b, ext, ext) for dy, dx in angles],
        dim=1,
    )[:, :, 1:, 1:]
    p = counts.to(torch.float64)
    return p + p.transpose(-1, -2)


def angle_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """pyradiomics' average over angles: ``nanmean`` over the non-empty angles.

    Args:
        values: ``(B, Na, F)`` per-angle feature values.
        valid: ``(B, Na)`` bool, angle has pairs/runs.

    Returns:
        ``(B, F)``; NaN where no angle is valid or every valid value is NaN.
    """
    keep = valid[:, :, None] & ~torch.isnan(values)
    total = torch.where(keep, values, torch.zeros_like(values)).sum(dim=1)
    return total / keep.sum(dim=1).to(values.dtype)


def _sum_diff_marginals(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``p_{x+y}`` (k = 2..2G, ``(N, 2G - 1)``) and ``p_{x-y}`` (k = 0..G-1, ``(N, G)``) of ``(N, G, G)``."""
    n, g = p.shape[0], p.shape[-1]
    r = torch.arange(g, device=p.device)
    flat = p.reshape(n, g * g)
    k_sum = (r[:, None] + r[None, :]).flatten()
    k_diff = (r[:, None] - r[None, :]).abs().flatten()
    p_sum = torch.zeros(n, 2 * g - 1, dtype=p.dtype, device=p.device).index_add_(1, k_sum, flat)
    p_diff = torch.zeros(n, g, dtype=p.dtype, device=p.device).index_add_(1, k_diff, flat)
    return p_sum, p_diff


def _entropy(p: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``-sum p log2(p + eps)`` over ``dims``."""
    return -(p * torch.log2(p + EPS)).sum(dim=dims)


def _mcc(p: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Maximal correlation coefficient per matrix: 2nd largest singular value of ``Dx^-1/2 P Dy^-1/2``.

    Args:
        p: ``(N, G, G)`` normalised GLCMs; px, py: ``(N, G)`` marginals.

    Returns:
        ``(N,)`` float64.
    """
    if p.shape[-1] < 2:  # only a flat region fits: MCC = 1 (set by the caller)
        return torch.ones(p.shape[0], dtype=p.dtype, device=p.device)
    rx = torch.where(px > 0, px.rsqrt(), torch.zeros_like(px))
    ry = torch.where(py > 0, py.rsqrt(), torch.zeros_like(py))
    a = rx[:, :, None] * p * ry[:, None, :]
    ev = torch.linalg.eigvalsh(a @ a.transpose(-1, -2))  # ascending
    return ev[:, -2].clamp_min(0).sqrt()


def _per_angle_features(p: torch.Tensor, ng: torch.Tensor) -> dict[str, torch.Tensor]:
    """All GLCM features of each normalised matrix.

    Args:
        p: ``(N, G, G)`` normalised GLCMs (rows/cols = bins 1..G).
        ng: ``(N,)`` float64, the sample's largest bin in the ROI (pyradiomics' ``Ng``).

    Returns:
        feature name -> ``(N,)`` float64.
    """
    g = p.shape[-1]
    i = torch.arange(1, g + 1, dtype=p.dtype, device=p.device)
    px, py = p.sum(dim=2), p.sum(dim=1)  # (N, G) row / column marginals
    ux, uy = (px * i).sum(dim=1), (py * i).sum(dim=1)
    p_sum, p_diff = _sum_diff_marginals(p)
    k_sum = torch.arange(2, 2 * g + 1, dtype=p.dtype, device=p.device)
    k_diff = torch.arange(0, g, dtype=p.dtype, device=p.device)

    dx_i = i[None, :] - ux[:, None]  # (N, G)
    dy_j = i[None, :] - uy[:, None]
    sig_x = (px * dx_i**2).sum(dim=1).sqrt()
    sig_y = (py * dy_j**2).sum(dim=1).sqrt()
    corm = (dx_i * (p @ dy_j[:, :, None]).squeeze(2)).sum(dim=1)
    corr = corm / (sig_x * sig_y + EPS)
    corr = torch.where(sig_x * sig_y == 0, torch.ones_like(corr), corr)

    hxy = _entropy(p, (1, 2))
    hx, hy = _entropy(px, (1,)), _entropy(py, (1,))
    pxpy = px[:, :, None] * py[:, None, :]
    hxy1 = -(p * torch.log2(pxpy + EPS)).sum(dim=(1, 2))
    hxy2 = _entropy(pxpy, (1, 2))
    div = torch.maximum(hx, hy)
    imc1 = torch.where(div != 0, (hxy - hxy1) / torch.where(div != 0, div, torch.ones_like(div)), torch.zeros_like(div))
    imc2 = torch.sqrt(1 - torch.exp(-2 * (hxy2 - hxy)))  # NaN where rounding makes it negative, as numpy
    imc2 = torch.where(hxy2 == hxy, torch.zeros_like(imc2), imc2)

    s = k_sum[None, :] - (ux + uy)[:, None]  # (N, 2G - 1)
    diff_avg = (k_diff * p_diff).sum(dim=1)
    ngn = ng[:, None]
    return {
        "Autocorrelation": (i * (p @ i)).sum(dim=1),
        "ClusterProminence": (p_sum * s**4).sum(dim=1),
        "ClusterShade": (p_sum * s**3).sum(dim=1),
        "ClusterTendency": (p_sum * s**2).sum(dim=1),
        "Contrast": (p_diff * k_diff**2).sum(dim=1),
        "Correlation": corr,
        "DifferenceAverage": diff_avg,
        "DifferenceEntropy": _entropy(p_diff, (1,)),
        "DifferenceVariance": (p_diff * (k_diff[None, :] - diff_avg[:, None]) ** 2).sum(dim=1),
        "Id": (p_diff / (1 + k_diff)).sum(dim=1),
        "Idm": (p_diff / (1 + k_diff**2)).sum(dim=1),
        "Idmn": (p_diff / (1 + k_diff[None, :] ** 2 / ngn**2)).sum(dim=1),
        "Idn": (p_diff / (1 + k_diff[None, :] / ngn)).sum(dim=1),
        "Imc1": imc1,
        "Imc2": imc2,
        "InverseVariance": (p_diff[:, 1:] / k_diff[1:] ** 2).sum(dim=1),
        "JointAverage": ux,
        "JointEnergy": (p**2).sum(dim=(1, 2)),
        "JointEntropy": hxy,
        "MCC": _mcc(p, px, py),
        "MaximumProbability": p.amax(dim=(1, 2)),
        "SumAverage": (k_sum * p_sum).sum(dim=1),
        "SumEntropy": _entropy(p_sum, (1,)),
        "SumSquares": (px * dx_i**2).sum(dim=1),
    }


def features(
    image: torch.Tensor,
    mask: torch.Tensor,
    levels: torch.Tensor,
    spacing: tuple[float, float] = (1.0, 1.0),
    angles: Angles | None = None,
) -> torch.Tensor:
    """GLCM features of a batch (distance 1, symmetric, per-angle features averaged over angles).

    Args:
        image: ``(B, H, W)`` float64 (unused: the GLCM works on the discretised levels).
        mask: ``(B, H, W)`` bool ROI.
        levels: ``(B, H, W)`` int64 from :func:`gazerad.radiomics.discretize.discretize`.
        spacing: pixel spacing (unused: no distance weighting, as pyradiomics' default).
        angles: ``(dy, dx)`` steps; ``None``: :data:`DEFAULT_ANGLES` (the reference settings).

    Returns:
        ``(B, 24)`` float64 on the input's device, columns in ``CLASS_FEATURES["glcm"]`` order.
    """
    angs = resolve_angles(angles)
    if cpu_fast_path(levels) and mask.device.type == "cpu":
        return torch.from_numpy(_features_np(*crop_to_roi_np(mask, levels), angs))
    lev = crop_to_roi(mask, levels)
    b, na = lev.shape[0], len(angs)
    g = max(int(lev.max()), 1)
    counts = glcm_matrices(lev, g, angs)  # (B, Na, G, G)
    total = counts.sum(dim=(2, 3))
    valid = total > 0
    p = counts / torch.where(valid, total, torch.ones_like(total))[:, :, None, None]

    ng = lev.reshape(b, -1).amax(dim=1).to(torch.float64)  # pyradiomics' Ng: largest bin in the ROI
    per = _per_angle_features(p.reshape(b * na, g, g), ng.repeat_interleave(na))
    names = CLASS_FEATURES["glcm"]
    out = angle_mean(torch.stack([per[n].view(b, na) for n in names], dim=2), valid)

    # a flat region (one gray level in the ROI): pyradiomics' Q is 1 x 1 and MCC is set to 1
    flat = roi_min_level(lev).to(torch.float64) >= ng
    mcc = names.index("MCC")
    out[:, mcc] = torch.where(flat, torch.ones_like(out[:, mcc]), out[:, mcc])
    return out


# --- CPU path: numpy on the same algorithm (per-op overhead of torch dominates the small arrays) ---


def crop_to_roi_np(mask: torch.Tensor, levels: torch.Tensor) -> tuple[np.ndarray, int]:
    """CPU twin of :func:`crop_to_roi` in numpy.

    Args:
        mask: ``(B, H, W)`` CPU ROI (bool or 0/1).
        levels: ``(B, H, W)`` CPU non-negative integer levels.

    Returns:
        ``(lev, g)``: ``lev`` the levels zeroed outside the ROI, cropped to the union bounding
        box of the ROIs (uncropped if there is none), as a C-contiguous ndarray in the narrowest
        unsigned dtype holding them (``uint8`` for ``g < 256``); ``g`` the largest level.
    """
    m = mask.detach().numpy()
    m = m if m.dtype == np.bool_ else m.astype(bool)
    lv = levels.detach().numpy()
    if m.size:
        union = m.view(np.uint8).max(axis=0)  # (H, W); max on a uint8 view: faster than any() on bool
        rows = np.flatnonzero(union.max(axis=1))
        if rows.size:
            cols = np.flatnonzero(union.max(axis=0))
            box = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            m, lv = m[box], lv[box]
    lev = np.multiply(lv, m)  # integers x bool: keeps the levels' dtype; the same as where(m, lv, 0)
    g = int(lev.max()) if lev.size else 0
    dtype = np.uint8 if g < 2**8 else np.uint16 if g < 2**16 else np.uint32 if g < 2**32 else np.uint64
    return (lev if lev.dtype == dtype else lev.astype(dtype)), g


def roi_level_range_np(lev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)``, each ``(B,)`` int64: smallest and largest level of each ROI of unsigned ``(B, H, W)`` levels.

    An empty ROI gets ``lo = dtype max + 1`` (above any level) and ``hi = 0``.
    """
    flat = lev.reshape(lev.shape[0], -1)
    if flat.shape[1] == 0:
        return np.full(lev.shape[0], np.iinfo(lev.dtype).max + 1, np.int64), np.zeros(lev.shape[0], np.int64)
    lo = (flat - flat.dtype.type(1)).min(axis=1).astype(np.int64) + 1  # 0 (outside) wraps to the dtype max
    return lo, flat.max(axis=1).astype(np.int64)


def angle_mean_np(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`angle_mean`: ``(B, Na, F)``, ``(B, Na)`` -> ``(B, F)``."""
    keep = valid[:, :, None] & ~np.isnan(values)
    total = np.where(keep, values, 0.0).sum(axis=1)
    count = keep.sum(axis=1)
    return np.divide(total, count, out=np.full_like(total, np.nan), where=count > 0)


def _glcm_counts_np(lev: np.ndarray, g: int, angles: Angles) -> np.ndarray:
    """``(B, Na, g + 1, g + 1)`` int64 pair counts (row/column 0: pairs with an outside pixel; not symmetrised).

    The angles go in twos: every pixel ``p`` (the anchor) with its neighbours ``p + d1`` and
    ``p + d2`` (each angle turned to ``dy > 0`` or ``(0, 1)``: the same pairs, transposed) is
    coded ``(sample, l(p), l(p + d1), l(p + d2))`` in int16 and one bincount gives the joint
    counts, whose two marginals are the two angles' matrices: half the bincount passes of
    one per angle. The levels are padded with a 0 row below and a 0 column on each side, so
    every pixel is an anchor and neighbours off the image count as level 0 (dropped later).
    Samples go in groups whose codes fit int16; with ``(g + 1)^3 >= 2^15`` every angle gets
    its own bincount over ``(sample, i, j)`` codes.
    """
    b, h, w = lev.shape
    na, ext = len(angles), g + 1
    canon = [(-dy, -dx) if dy < 0 or (dy == 0 and dx < 0) else (dy, dx) for dy, dx in angles]
    paired = ext**3 < 2**15
    group = max(1, (2**15 - 1) // ext**3) if paired else b
    if b > group:
        return np.concatenate([_glcm_counts_np(lev[s : s + group], g, angles) for s in range(0, b, group)])
    width = ext**3 if paired else ext**2  # codes per sample
    dtype = np.int16 if b * width < 2**15 else np.int32 if b * width < 2**31 else np.int64
    buf = np.zeros((b, h + 1, w + 2), dtype)
    buf[:, :h, 1 : w + 1] = lev

    def neighbour(arr: np.ndarray, d: tuple[int, int]) -> np.ndarray:  # (B, h, w) view of arr at p + d
        return arr[:, d[0] : d[0] + h, 1 + d[1] : 1 + d[1] + w]

    offset = (np.arange(b, dtype=dtype) * dtype(width))[:, None, None]  # sample part of the code
    anchor = neighbour(buf, (0, 0))
    counts = np.empty((b, na, ext, ext), np.int64)
    lev_ext = buf * dtype(ext) if paired else buf
    for k in range(0, na, 2 if paired else 1):
        code = anchor * dtype(width // ext)
        code += offset
        code += neighbour(lev_ext, canon[k])
        two = paired and k + 1 < na  # an unpaired last angle: p + d2 counts as outside (level 0)
        if two:
            code += neighbour(buf, canon[k + 1])
        joint = torch.bincount(torch.from_numpy(code).view(-1), minlength=b * width).numpy()
        if paired:
            joint = joint.reshape(b, ext, ext, ext)
            counts[:, k] = joint.sum(axis=3)
            if two:
                counts[:, k + 1] = joint.sum(axis=2)
        else:
            counts[:, k] = joint.reshape(b, ext, ext)
    return counts


_NP_CONSTANTS: dict[int, tuple[np.ndarray | None, ...]] = {}
_DENSE_MAX = 48  # largest G with a dense ``W`` (G^2 x 5G float64: 4.4 MiB)


def _np_constants(g: int) -> tuple[np.ndarray, ...]:
    """Weights of the linear parts of the GLCM features of ``(G, G)`` matrices (cached per ``G``).

    Returns:
        ``W`` ``(G^2, 5G)`` (``None`` for ``G > 48``): a flat matrix times ``W`` gives
        ``[p_x | p_y | p_{x+y} | p_{x-y} | Autocorrelation]``; ``D`` ``(G, 5)``: ``p_{x-y}`` times ``D`` gives Contrast,
        DifferenceAverage, Id, Idm, InverseVariance; then ``i = 1..G``, ``k_sum = 2..2G``,
        ``k_diff = 0..G-1`` (float64).
    """
    c = _NP_CONSTANTS.get(g)
    if c is None:
        r = np.arange(g)
        ii, jj = (x.ravel() for x in np.meshgrid(r, r, indexing="ij"))
        w = np.zeros((g * g, 5 * g)) if g <= _DENSE_MAX else None  # O(G^3) memory: small G only
        if w is not None:
            flat = np.arange(g * g)
            w[flat, ii] = 1  # p_x
            w[flat, g + jj] = 1  # p_y
            w[flat, 2 * g + ii + jj] = 1  # p_{x+y}, k = 2..2G
            w[flat, 4 * g - 1 + np.abs(ii - jj)] = 1  # p_{x-y}, k = 0..G-1
            w[:, 5 * g - 1] = (ii + 1) * (jj + 1)  # Autocorrelation
        k = r.astype(np.float64)
        inv_k2 = np.divide(1.0, k * k, out=np.zeros(g), where=k > 0)  # InverseVariance skips k = 0
        d = np.stack([k * k, k, 1 / (1 + k), 1 / (1 + k * k), inv_k2], axis=1)
        c = _NP_CONSTANTS[g] = (w, d, np.arange(1.0, g + 1), np.arange(2.0, 2 * g + 1), k)
    return c


def _per_angle_features_np(p: np.ndarray, ng: np.ndarray) -> list[np.ndarray]:
    """numpy twin of :func:`_per_angle_features`: ``(N, G, G)``, ``(N,)`` -> values in ``CLASS_FEATURES`` order.

    The same formulas with fewer (numpy) calls: the linear parts are two matrix products
    (:func:`_np_constants`), the marginal entropies one ``log2`` and one ``reduceat``.
    """
    n, g = p.shape[0], p.shape[-1]
    w, d, i, k_sum, k_diff = _np_constants(g)
    pf = p.reshape(n, g * g)
    if w is not None:
        lin = pf @ w
    else:  # large G: the same sums without the O(G^3) weight matrix
        rows = np.arange(n)[:, None]
        r = np.arange(g)
        p_sum = np.bincount((rows * (2 * g - 1) + (r[:, None] + r).ravel()).ravel(), pf.ravel(), n * (2 * g - 1))
        p_diff = np.bincount((rows * g + np.abs(r[:, None] - r).ravel()).ravel(), pf.ravel(), n * g)
        lin = np.concatenate([p.sum(axis=2), p.sum(axis=1), p_sum.reshape(n, -1), p_diff.reshape(n, -1), ((p @ i) * i).sum(axis=1)[:, None]], axis=1)
    px, py, p_sum, p_diff = lin[:, :g], lin[:, g : 2 * g], lin[:, 2 * g : 4 * g - 1], lin[:, 4 * g - 1 : 5 * g - 1]
    ux, uy = px @ i, py @ i
    dx_i, dy_j = i - ux[:, None], i - uy[:, None]
    sum_sq = (px * dx_i * dx_i).sum(axis=1)
    sig_xy = np.sqrt(sum_sq) * np.sqrt((py * dy_j * dy_j).sum(axis=1))
    corm = ((p @ dy_j[:, :, None])[:, :, 0] * dx_i).sum(axis=1)
    corr = np.where(sig_xy == 0, 1.0, corm / (sig_xy + EPS))

    marg = lin[:, : 5 * g - 1]  # entropies of p_x, p_y, p_{x+y}, p_{x-y}
    hx, hy, h_sum, h_diff = -np.add.reduceat(marg * np.log2(marg + EPS), [0, g, 2 * g, 4 * g - 1], axis=1).T
    pxpy = (px[:, :, None] * py[:, None, :]).reshape(n, g * g)
    log_pxpy = np.log2(pxpy + EPS)
    hxy = -(pf * np.log2(pf + EPS)).sum(axis=1)
    hxy1 = -(pf * log_pxpy).sum(axis=1)
    hxy2 = -(pxpy * log_pxpy).sum(axis=1)
    div = np.maximum(hx, hy)
    imc1 = np.where(div != 0, (hxy - hxy1) / np.where(div != 0, div, 1.0), 0.0)
    x = 1 - np.exp(-2 * (hxy2 - hxy))
    imc2 = np.where(hxy2 == hxy, 0.0, np.sqrt(np.where(x < 0, np.nan, x)))  # NaN where rounding makes x < 0

    s = k_sum - (ux + uy)[:, None]
    s2 = s * s
    ps2 = p_sum * s2
    by_diff = p_diff @ d
    diff_avg = by_diff[:, 1]
    dev = k_diff - diff_avg[:, None]
    ngn = ng[:, None]
    return [
        lin[:, 5 * g - 1],  # Autocorrelation
        (ps2 * s2).sum(axis=1),  # ClusterProminence
        (ps2 * s).sum(axis=1),  # ClusterShade
        ps2.sum(axis=1),  # ClusterTendency
        by_diff[:, 0],  # Contrast
        corr,
        diff_avg,
        h_diff,  # DifferenceEntropy
        (p_diff * dev * dev).sum(axis=1),  # DifferenceVariance
        by_diff[:, 2],  # Id
        by_diff[:, 3],  # Idm
        (p_diff / (1 + k_diff * k_diff / (ngn * ngn))).sum(axis=1),  # Idmn
        (p_diff / (1 + k_diff / ngn)).sum(axis=1),  # Idn
        imc1,
        imc2,
        by_diff[:, 4],  # InverseVariance
        ux,  # JointAverage
        (pf * pf).sum(axis=1),  # JointEnergy
        hxy,  # JointEntropy
        _mcc_np(p, px, py),
        pf.max(axis=1),  # MaximumProbability
        p_sum @ k_sum,  # SumAverage
        h_sum,  # SumEntropy
        sum_sq,  # SumSquares
    ]


def _mcc_np(p: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`_mcc`."""
    if p.shape[-1] < 2:
        return np.ones(p.shape[0])
    rx = np.divide(1.0, np.sqrt(px), out=np.zeros_like(px), where=px > 0)
    ry = np.divide(1.0, np.sqrt(py), out=np.zeros_like(py), where=py > 0)
    a = rx[:, :, None] * p * ry[:, None, :]
    ev = np.linalg.eigvalsh(a @ a.transpose(0, 2, 1))  # ascending
    return np.sqrt(np.maximum(ev[:, -2], 0.0))


def _features_np(lev: np.ndarray, g: int, angles: Angles) -> np.ndarray:
    """:func:`features` on CPU: ``lev`` from :func:`crop_to_roi_np` -> ``(B, 24)`` float64."""
    b, na = lev.shape[0], len(angles)
    g = max(g, 1)
    counts = _glcm_counts_np(lev, g, angles)[:, :, 1:, 1:].astype(np.float64)
    p = counts + counts.transpose(0, 1, 3, 2)
    total = p.sum(axis=(2, 3))
    valid = total > 0
    p /= np.where(valid, total, 1.0)[:, :, None, None]
    lo, hi = roi_level_range_np(lev)
    ng = hi.astype(np.float64)  # pyradiomics' Ng: the largest bin in the ROI
    per = _per_angle_features_np(p.reshape(b * na, g, g), np.repeat(ng, na))
    out = angle_mean_np(np.stack(per, axis=1).reshape(b, na, -1), valid)
    # a flat region (one gray level in the ROI; also an empty ROI): MCC = 1, as pyradiomics
    mcc = CLASS_FEATURES["glcm"].index("MCC")
    out[:, mcc] = np.where(lo >= hi, 1.0, out[:, mcc])
    return out
