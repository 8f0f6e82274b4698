"""Gray Level Dependence Matrix (GLDM) features, batched in torch, matching pyradiomics 3.0.1.

Neighbourhood (read this first). pyradiomics builds its neighbour offsets in 3-D and drops
every offset that moves along ``force2Ddimension``. :mod:`gazerad.radiomics.reference`
hands it a ``(1, H, W)`` slice with ``force2D=True, force2Ddimension=0``, so GLDM, GLSZM and
NGTDM use the 8-neighbourhood (:data:`EIGHT_NEIGHBOURS`, the default). The trap: a 2-D
SimpleITK image with the same settings is a ``(rows, cols)`` array and pyradiomics then
silently keeps only the left and right neighbours (:data:`ROW_NEIGHBOURS`): GLSZM zones
become horizontal runs. Every ``features`` call may pass ``neighbourhood=``.

GLDM. For each ROI pixel pyradiomics counts the neighbours that lie in the ROI with
``|i - j| <= alpha`` (``gldm_a = 0`` and integer bins: the same level); the dependence is
``1 + count``. ``P[i, j]`` counts ROI pixels of level ``i`` and dependence ``j``.
pyradiomics deletes gray levels absent from the ROI and empty dependence columns; that
only removes zero rows/columns, which add nothing to any feature sum, so the matrix is
kept at a fixed ``(Ng_max, 1 + len(neighbourhood))`` per sample with bin number ``i`` and
dependence ``j`` as the weights (pyradiomics' ``ivector`` / ``jvector``). ``Nz = sum P``
is the ROI pixel count.

Shared helpers for the neighbourhood classes (GLSZM, NGTDM) live here too:
:func:`crop_to_rois`, :func:`neighbour_views`, :func:`resolve_neighbourhood`.

Parity: every feature within ``rtol = 1e-4`` (observed <= 4e-16) and ``atol = 1e-8``
(values near 0 are exact zeros or sums of positive terms; no cancellation).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..names import CLASS_FEATURES
from . import roi_box

__all__ = [
    "features",
    "gldm_matrix",
    "crop_to_rois",
    "neighbour_views",
    "resolve_neighbourhood",
    "prepare_levels",
    "ROW_NEIGHBOURS",
    "EIGHT_NEIGHBOURS",
    "DEFAULT_NEIGHBOURHOOD",
]

Offsets = Sequence[tuple[int, int]]

# (row, col) offsets. pyradiomics with force2D=True, force2Ddimension=0 on a 2-D array:
ROW_NEIGHBOURS: tuple[tuple[int, int], ...] = ((0, -1), (0, 1))
# pyradiomics with force2D=False on a 2-D array (or a (1, H, W) volume with force2Ddimension=0):
EIGHT_NEIGHBOURS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1),
)
# the neighbourhood of gazerad.radiomics.reference ((1, H, W) slices, force2Ddimension=0)
DEFAULT_NEIGHBOURHOOD: tuple[tuple[int, int], ...] = EIGHT_NEIGHBOURS

_EPS = 2.220446049250313e-16  # numpy.spacing(1)


def resolve_neighbourhood(neighbourhood: Offsets | None) -> tuple[tuple[int, int], ...]:
    """Validate a neighbourhood (``None``: :data:`DEFAULT_NEIGHBOURHOOD`).

    Returns:
        Offsets ``(dy, dx)``, each in ``{-1, 0, 1}``, not ``(0, 0)``, closed under negation.
    """
    offs = tuple((int(dy), int(dx)) for dy, dx in (DEFAULT_NEIGHBOURHOOD if neighbourhood is None else neighbourhood))
    for dy, dx in offs:
        if (dy, dx) == (0, 0) or abs(dy) > 1 or abs(dx) > 1 or (-dy, -dx) not in offs:
            raise ValueError(f"neighbourhood offsets must be symmetric unit offsets, got {offs}")
    return offs


def crop_to_rois(*tensors: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Crop ``(B, H, W)`` tensors to the union bounding box of the batch's ROIs.

    Args:
        tensors: ``(B, H, W)`` tensors to crop alike.
        mask: ``(B, H, W)`` bool ROI mask.

    Returns:
        Views of the cropped tensors, in the order given (uncropped if the batch has no ROI pixel).
    """
    box = roi_box(mask)
    if box is None:
        return tensors
    r0, r1, c0, c1 = box
    return tuple(t[:, r0 : r1 + 1, c0 : c1 + 1] for t in tensors)


def neighbour_views(x: torch.Tensor, offsets: Offsets, fill: float | int = 0) -> Iterator[torch.Tensor]:
    """Yield ``x`` shifted so that element ``[b, y, x]`` holds ``x[b, y + dy, x + dx]``.

    Args:
        x: ``(B, H, W)`` tensor (any dtype).
        offsets: ``(dy, dx)`` offsets with ``|dy|, |dx| <= 1``.
        fill: value of neighbours outside the image.

    Yields:
        ``(B, H, W)`` views (slices of one padded copy, so no shift allocates).
    """
    b, h, w = x.shape
    padded = x.new_full((b, h + 2, w + 2), fill)  # any dtype (bool included), any device
    padded[:, 1:-1, 1:-1] = x
    for dy, dx in offsets:
        yield padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def prepare_levels(mask: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Levels zeroed outside the ROI and cropped to the batch's ROI bounding box: ``(B, h, w)``, contiguous.

    The result has the narrowest integer dtype that holds the levels (``uint8`` below 256), so
    the per-pixel passes of GLDM, GLSZM and NGTDM move 1 byte per pixel.
    """
    levels, mask = crop_to_rois(levels, mask, mask=mask)
    top = int(levels.max()) if levels.numel() else 0
    dtype = torch.uint8 if top < 256 else torch.int16 if top < 2**15 else torch.int32
    return levels.to(dtype) * mask


def gldm_matrix(levels: torch.Tensor, ng: int, offsets: Offsets) -> torch.Tensor:
    """The GLDM of each sample.

    Args:
        levels: ``(B, H, W)`` integer, 1..Ng in the ROI, 0 outside.
        ng: number of gray-level rows (``>= levels.max()``).
        offsets: the neighbourhood.

    Returns:
        ``(B, ng, 1 + len(offsets))`` float64; ``[b, i - 1, j - 1]`` = ROI pixels of level ``i``
        with dependence ``j``.
    """
    b, nd = levels.shape[0], 1 + len(offsets)
    lev = levels if levels.dtype in (torch.uint8, torch.int16) else levels.to(torch.int32)
    dep = torch.zeros(lev.shape, dtype=torch.uint8, device=lev.device)  # dependence - 1 (<= 8)
    for nb in neighbour_views(lev, offsets):
        dep += nb == lev  # a neighbour outside the ROI/image is 0, never equal to an ROI level
    # flat bin (sample, level, dependence); pixels outside the ROI land in level row 0, dropped below
    key = lev.to(torch.int32) * nd
    key += dep
    key += (torch.arange(b, device=lev.device, dtype=torch.int32) * ((ng + 1) * nd)).view(b, 1, 1)
    counts = torch.bincount(key.reshape(-1), minlength=b * (ng + 1) * nd).view(b, ng + 1, nd)
    return counts[:, 1:].to(torch.float64)


def _features_from_matrix(p: torch.Tensor) -> torch.Tensor:
    """GLDM features of ``(B, Ng, Nd)`` matrices (row ``i`` = bin ``i + 1``, column ``j`` = dependence ``j + 1``)."""
    ng, nd = p.shape[1:]
    i = torch.arange(1, ng + 1, dtype=torch.float64, device=p.device).view(1, ng)
    j = torch.arange(1, nd + 1, dtype=torch.float64, device=p.device).view(1, nd)
    pg, pd = p.sum(dim=2), p.sum(dim=1)  # (B, Ng), (B, Nd)
    nz = pd.sum(dim=1)
    nz = torch.where(nz == 0, torch.ones_like(nz), nz)
    pn = p / nz.view(-1, 1, 1)
    pgn, pdn = pg / nz[:, None], pd / nz[:, None]
    u_i = (pgn * i).sum(dim=1, keepdim=True)
    u_j = (pdn * j).sum(dim=1, keepdim=True)
    i2, j2 = i**2, j**2
    ii2, jj2 = i2.view(1, ng, 1), j2.view(1, 1, nd)
    feats = {
        "DependenceEntropy": -(pn * torch.log2(pn + _EPS)).sum(dim=(1, 2)),
        "DependenceNonUniformity": (pd**2).sum(dim=1) / nz,
        "DependenceNonUniformityNormalized": (pd**2).sum(dim=1) / nz**2,
        "DependenceVariance": (pdn * (j - u_j) ** 2).sum(dim=1),
        "GrayLevelNonUniformity": (pg**2).sum(dim=1) / nz,
        "GrayLevelVariance": (pgn * (i - u_i) ** 2).sum(dim=1),
        "HighGrayLevelEmphasis": (pg * i2).sum(dim=1) / nz,
        "LargeDependenceEmphasis": (pd * j2).sum(dim=1) / nz,
        "LargeDependenceHighGrayLevelEmphasis": (p * ii2 * jj2).sum(dim=(1, 2)) / nz,
        "LargeDependenceLowGrayLevelEmphasis": (p * jj2 / ii2).sum(dim=(1, 2)) / nz,
        "LowGrayLevelEmphasis": (pg / i2).sum(dim=1) / nz,
        "SmallDependenceEmphasis": (pd / j2).sum(dim=1) / nz,
        "SmallDependenceHighGrayLevelEmphasis": (p * ii2 / jj2).sum(dim=(1, 2)) / nz,
        "SmallDependenceLowGrayLevelEmphasis": (p / (ii2 * jj2)).sum(dim=(1, 2)) / nz,
    }
    return torch.stack([feats[n] for n in CLASS_FEATURES["gldm"]], dim=1)


def features(
    image: torch.Tensor,
    mask: torch.Tensor,
    levels: torch.Tensor,
    spacing: tuple[float, float] = (1.0, 1.0),
    neighbourhood: Offsets | None = None,
) -> torch.Tensor:
    """GLDM features of a batch.

    Args:
        image: ``(B, H, W)`` float64 (unused: the GLDM works on the discretised levels).
        mask: ``(B, H, W)`` bool ROI.
        levels: ``(B, H, W)`` int64 from :func:`gazerad.radiomics.discretize.discretize`.
        spacing: pixel spacing (unused: the GLDM does not depend on it).
        neighbourhood: ``(dy, dx)`` offsets; ``None``: :data:`DEFAULT_NEIGHBOURHOOD`.

    Returns:
        ``(B, 14)`` float64 on the input's device, columns in ``CLASS_FEATURES["gldm"]`` order.
    """
    offsets = resolve_neighbourhood(neighbourhood)
    levels = prepare_levels(mask, levels)
    ng = max(int(levels.max()), 1)
    return _features_from_matrix(gldm_matrix(levels, ng, offsets))
