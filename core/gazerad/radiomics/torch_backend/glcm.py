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

import torch

from ..names import CLASS_FEATURES
from . import roi_box

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

EPS = 2.220446049250313e-16  # numpy.spacing(1)


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
    b, na, ext = levels.shape[0], len(angles), ng + 1  # level 0 (outside) gets a row/column, dropped below
    n_bins = b * ext * ext
    dtype = torch.int32 if n_bins < 2**31 else torch.int64
    lev = levels.to(dtype)
    sample = (torch.arange(b, device=lev.device, dtype=dtype) * (ext * ext)).view(b, 1, 1)
    first = lev * ext + sample  # (sample, i) part of the flat (sample, i, j) index
    # one bincount per angle over the pair views' sum (no concatenation of the index tensors)
    counts = torch.stack([
        torch.bincount((_pair_views(first, dy, dx)[0] + _pair_views(lev, dy, dx)[1]).reshape(-1), minlength=n_bins).view(b, ext, ext)
        for dy, dx in angles
    ], dim=1)[:, :, 1:, 1:]
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
