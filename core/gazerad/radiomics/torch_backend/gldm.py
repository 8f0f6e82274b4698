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

CPU path (numpy, :func:`_gldm_matrix_np`): the levels are zero-padded and flattened, so each
neighbour offset is a contiguous flat shift; each unordered neighbour pair is compared once
(equality is symmetric) and added to both pixels' key ``level * Nd + dependence - 1``; one
small-integer histogram per sample (:func:`histogram_rows`) is the matrix. The 14 formulas
run in numpy, the eight emphases as one matrix product. CUDA keeps the batched torch path.

Shared helpers for the neighbourhood classes (GLSZM, NGTDM) live here too:
:func:`crop_to_rois`, :func:`neighbour_views`, :func:`resolve_neighbourhood`,
:func:`prepare_levels`, and the numpy ones :func:`prepare_levels_np`, :func:`pad_flat`,
:func:`flat_shift`, :func:`histogram_rows`.

Parity: every feature within ``rtol = 1e-4`` (observed <= 4e-16) and ``atol = 1e-8``
(values near 0 are exact zeros or sums of positive terms; no cancellation).
"""

from __future__ import annotations

import functools
import sys
from typing import Iterator, Sequence

import numpy as np
import torch

from ..discretize import smallest_level_dtype
from ..names import CLASS_FEATURES
from . import EPS, cpu_fast_path, roi_box

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
    (-1, -1),
    (-1, 0),
    (-1, 1),
    (0, -1),
    (0, 1),
    (1, -1),
    (1, 0),
    (1, 1),
)
# the neighbourhood of gazerad.radiomics.reference ((1, H, W) slices, force2Ddimension=0)
DEFAULT_NEIGHBOURHOOD: tuple[tuple[int, int], ...] = EIGHT_NEIGHBOURS


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


def pad_flat(levels: np.ndarray, dtype: type) -> np.ndarray:
    """``(B, h, w)`` levels zero-padded by one pixel to ``(B, h + 2, w + 2)`` in ``dtype`` (CPU helper).

    On the flattened (C-order) result a neighbour offset ``(dy, dx)`` is the flat shift
    ``dy * (w + 2) + dx``: the per-pixel passes of GLDM and NGTDM run on contiguous 1-D slices,
    which numpy processes ~4x faster than the strided 3-D ones. Shifts from a padding pixel
    may wrap into the next row (or sample); only padding pixels see those.
    """
    b, h, w = levels.shape
    padded = np.zeros((b, h + 2, w + 2), dtype)
    padded[:, 1:-1, 1:-1] = levels
    return padded


def flat_shift(offset: tuple[int, int], row: int) -> int:
    """Flat index shift of the neighbour offset ``(dy, dx)`` in a padded array of row length ``row``."""
    return offset[0] * row + offset[1]


def histogram_rows(key: np.ndarray, nbins: int) -> np.ndarray:
    """Per-sample histograms of a ``(B, ...)`` non-negative integer numpy array with values ``< nbins`` (CPU helper).

    Counts with ``torch.bincount`` one sample at a time: it takes ``uint8`` / ``int16`` keys as
    they are (``numpy.bincount`` first copies them to ``int64``; ``uint16`` keys are read as
    ``int16``). A histogram loop stalls on runs of the same key (each increment waits for the
    previous one), which images are full of, so where the dtype allows the odd elements count
    in a second copy of the bins (``key + nbins``, written into ``key`` in place) and the two
    halves are added.

    Returns:
        ``(B, nbins)`` int64.
    """
    b = key.shape[0]
    if key.dtype == np.uint16 and nbins > 2**15:
        raise ValueError(f"histogram_rows: uint16 keys are read as int16 and need nbins <= 2**15, got {nbins}")
    flat = key.reshape(b, -1)
    if not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat)
    limit = {np.dtype(np.uint8): 256, np.dtype(np.uint16): 2**15, np.dtype(np.int16): 2**15}.get(flat.dtype, 2**31)
    if flat.dtype not in (np.uint8, np.uint16, np.int16, np.int32, np.int64):
        flat = flat.astype(np.int64)
    lanes = 2 if 2 * nbins <= limit else 1
    if lanes == 2:
        wide = {1: np.uint16, 2: np.uint32, 4: np.uint64}.get(flat.itemsize)
        if wide is not None and flat.size % 2 == 0 and flat.ctypes.data % (2 * flat.itemsize) == 0:
            # the odd elements are the high halves of (little-endian) word pairs: one contiguous add
            shift = nbins << (8 * flat.itemsize) if sys.byteorder == "little" else nbins
            flat.reshape(-1).view(wide)[...] += wide(shift)
        else:
            flat[:, 1::2] += nbins
    if flat.dtype == np.uint16:
        flat = flat.view(np.int16)
    out = np.empty((b, lanes * nbins), np.int64)
    for k in range(b):
        out[k] = torch.bincount(torch.from_numpy(flat[k]), minlength=lanes * nbins).numpy()
    return out[:, :nbins] + out[:, nbins:] if lanes == 2 else out


def prepare_levels(mask: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Levels zeroed outside the ROI and cropped to the batch's ROI bounding box: ``(B, h, w)``, contiguous.

    The result has the narrowest integer dtype that holds the levels (``uint8`` below 256), so
    the per-pixel passes of GLDM, GLSZM and NGTDM move 1 byte per pixel.
    """
    levels, mask = crop_to_rois(levels, mask, mask=mask)
    top = int(levels.max()) if levels.numel() else 0
    return levels.to(smallest_level_dtype(top)) * mask.to(torch.bool)  # a 0/255 mask selects, it does not scale


def prepare_levels_np(mask: torch.Tensor, levels: torch.Tensor) -> np.ndarray:
    """CPU :func:`prepare_levels` as a numpy array (same values and dtype).

    A batch whose ROI box already spans the whole image (the extractor's cropped chunks: its
    border rows and columns each hold an ROI pixel) skips the bounding-box search; the rest
    go through :func:`prepare_levels`.
    """
    m = mask.numpy()
    lev = levels.numpy()
    tight = m.ndim == 3 and m.size and all(edge.any() for edge in (m[:, 0, :], m[:, -1, :], m[:, :, 0], m[:, :, -1]))
    if not tight or lev.dtype != np.uint8:
        return prepare_levels(mask, levels).numpy()
    return np.multiply(lev, m.view(np.uint8) if m.dtype == np.bool_ else (m != 0).view(np.uint8))


def _gldm_matrix_np(levels: np.ndarray, ng: int, offsets: Offsets) -> np.ndarray:
    """CPU :func:`gldm_matrix` in numpy: ``(B, ng, 1 + len(offsets))`` float64.

    Works on the flattened zero-padded levels (:func:`pad_flat`), building the key
    ``level * nd + dependence - 1`` in place. The equality test is symmetric, so each
    unordered neighbour pair is compared once (offset ``+d`` only, a flat shift) and the result
    added to both pixels. Padding and non-ROI pixels (level 0, at most 8 pair hits) stay in
    key row 0, which is dropped.
    """
    b = levels.shape[0]
    nd = 1 + len(offsets)
    nbins = (ng + 1) * nd
    kdtype = np.uint8 if nbins <= 256 else np.int16 if nbins <= 2**15 else np.int64
    padded = pad_flat(levels, kdtype)
    flat = padded.reshape(-1)
    key = flat * kdtype(nd)
    for off in offsets:
        k = flat_shift(off, padded.shape[2])
        if k < 0:
            continue  # its mirror image -k counts the pair
        eq = (flat[:-k] == flat[k:]).view(np.uint8)
        key[:-k] += eq
        key[k:] += eq
    counts = histogram_rows(key.reshape(b, -1), nbins).reshape(b, ng + 1, nd)
    return counts[:, 1:].astype(np.float64)


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
    if cpu_fast_path(levels):
        return torch.from_numpy(_gldm_matrix_np(levels.numpy(), ng, offsets))
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
        "DependenceEntropy": -(pn * torch.log2(pn + EPS)).sum(dim=(1, 2)),
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


_EMPHASES = (
    "HighGrayLevelEmphasis",
    "LargeDependenceEmphasis",
    "LargeDependenceHighGrayLevelEmphasis",
    "LargeDependenceLowGrayLevelEmphasis",
    "LowGrayLevelEmphasis",
    "SmallDependenceEmphasis",
    "SmallDependenceHighGrayLevelEmphasis",
    "SmallDependenceLowGrayLevelEmphasis",
)


@functools.lru_cache(maxsize=16)
def _emphasis_weights(ng: int, nd: int) -> np.ndarray:
    """``(Ng * Nd, 8)`` weights of the :data:`_EMPHASES` (``sum P w / Nz`` each), read-only."""
    i2 = (np.arange(1, ng + 1, dtype=np.float64) ** 2)[:, None] * np.ones((1, nd))
    j2 = np.ones((ng, 1)) * (np.arange(1, nd + 1, dtype=np.float64) ** 2)[None, :]
    w = np.stack([i2, j2, i2 * j2, j2 / i2, 1 / i2, 1 / j2, i2 / j2, 1 / (i2 * j2)], axis=-1).reshape(ng * nd, 8)
    w.flags.writeable = False
    return w


def _features_np(p: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`_features_from_matrix` (CPU: the matrices are tiny, so op count is the cost).

    The eight emphases are one matrix product with cached weights (:func:`_emphasis_weights`).
    """
    b, ng, nd = p.shape
    i = np.arange(1, ng + 1, dtype=np.float64)
    j = np.arange(1, nd + 1, dtype=np.float64)
    pg, pd = p.sum(axis=2), p.sum(axis=1)  # (B, Ng), (B, Nd)
    nz = pd.sum(axis=1)
    nz = np.where(nz == 0, 1.0, nz)
    pn = p / nz[:, None, None]
    pgn, pdn = pg / nz[:, None], pd / nz[:, None]
    u_i = pgn @ i
    u_j = pdn @ j
    pd2 = (pd * pd).sum(axis=1)
    feats = {
        "DependenceEntropy": -(pn * np.log2(pn + EPS)).sum(axis=(1, 2)),
        "DependenceNonUniformity": pd2 / nz,
        "DependenceNonUniformityNormalized": pd2 / (nz * nz),
        "DependenceVariance": (pdn * (j - u_j[:, None]) ** 2).sum(axis=1),
        "GrayLevelNonUniformity": (pg * pg).sum(axis=1) / nz,
        "GrayLevelVariance": (pgn * (i - u_i[:, None]) ** 2).sum(axis=1),
    }
    emph = (p.reshape(b, ng * nd) @ _emphasis_weights(ng, nd)) / nz[:, None]
    feats.update(zip(_EMPHASES, emph.T))
    return np.stack([feats[n] for n in CLASS_FEATURES["gldm"]], axis=1)


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
    if cpu_fast_path(levels):
        lev = prepare_levels_np(mask, levels)
        ng = max(int(lev.max()) if lev.size else 0, 1)
        return torch.from_numpy(_features_np(_gldm_matrix_np(lev, ng, offsets)))
    levels = prepare_levels(mask, levels)
    ng = max(int(levels.max()), 1)
    return _features_from_matrix(gldm_matrix(levels, ng, offsets))
