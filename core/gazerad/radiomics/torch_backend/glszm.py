"""Gray Level Size Zone Matrix (GLSZM) features, batched in torch, matching pyradiomics 3.0.1.

A zone is a connected set of ROI pixels of one gray level, connected through the
neighbourhood (see the neighbourhood note in :mod:`.gldm`: with the reference settings, the
default, the 8-neighbourhood, so zones are 8-connected components as in pyradiomics'
``calculate_glszm`` region growing; with the row-only neighbourhood, horizontal runs).
``P[i, j]`` counts zones of level ``i`` and size ``j``; ``Nz = sum P`` (zones), ``Np =
sum j P`` (ROI pixels). pyradiomics deletes absent gray levels and empty zone sizes, which
only drops zero rows/columns, so the features are computed from the zone list directly:
per-level and per-size zone counts (bincounts with per-sample offsets) and the distinct
``(level, size)`` pairs with their counts (for Zone Entropy and the joint emphases).

Connected components (:func:`zone_labels`, :func:`zones`) are found vectorised on the
device: horizontal equal-level runs first (run starts/ends by comparing with the left/right
neighbour; with the row-only neighbourhood every run is a zone and nothing else is
needed), then, for neighbourhoods with vertical or diagonal offsets, a graph whose nodes are
the runs and whose edges join runs with equal-level neighbour pixels a row apart (one edge
per overlapping stretch and offset, not one per pixel). That graph is labelled by FastSV-style min-label hooking with
pointer jumping (:func:`_hook_until_stable`, CUDA and CPU) or, for CPU tensors, by
``scipy.sparse.csgraph.connected_components`` (same components, faster on CPU;
:data:`USE_SCIPY_ON_CPU`). Both paths are parity-tested on CPU.

CPU fast path (CPU tensors, :func:`.cpu_fast_path` and :data:`USE_SCIPY_ON_CPU`; the
4-, 8- and row-only neighbourhoods): :func:`features` works in numpy, one sample at a time
for the zones and once per batch for the features. Each sample is cropped to its own ROI
box and labelled by scikit-image's ``measure.label`` (equal-valued connected pixels, in C;
about 3x faster than building the run graph, and faster than per-level
``scipy.ndimage.label``; scikit-image comes with monailabel's ``monai[skimage]``) or, for
the row-only neighbourhood, split into runs. One ``bincount`` of the label image gives the
zone sizes and one scatter of the levels into a per-label array gives each zone's level
(all pixels of a zone share it). The zone list is reduced to its distinct ``(sample,
level, size)`` cells by sorting one packed int64 key per zone (a few thousand zones, far
fewer than the dense ``(level, size)`` grid), and the features are per-sample weighted
``bincount`` sums over the cells (the gray-level terms over the small ``(B, Ng)`` matrix,
as in the torch path; the size terms over the cells instead of a ``(B, max size)``
matrix: the same sums, summed in another order). Labelling is most of the time (about
1.6 ms per 340 x 300 crop); scikit-image labels without the GIL, so with
more than one CPU thread (``torch_backend.cpu_threads``) the samples of a batch are labelled concurrently on that many
threads (:data:`LABEL_THREADS` overrides the count).

Parity: every feature within ``rtol = 1e-4`` (observed ~1e-15) and ``atol = 1e-8``
(values near 0 are sums of positive terms or exact zeros; no cancellation).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
import torch

from ..names import CLASS_FEATURES
from . import EPS, cpu_fast_path, cpu_threads
from .gldm import neighbour_views, prepare_levels, resolve_neighbourhood

__all__ = ["features", "zone_labels", "zones"]

_DENSE_CELLS = 1 << 22  # up to this many (sample, level, size) cells: dense bincount, else sort-unique


def _runs(levels: torch.Tensor, horizontal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The horizontal equal-level runs of ROI pixels (single pixels if not ``horizontal``).

    Returns:
        ``start``: ``(B, H, W)`` bool, first pixel of a run; ``first``, ``last``: ``(R,)`` int64
        flat indices of each run's first and last pixel, runs in raster order.
    """
    inside = levels > 0
    if not horizontal:
        first = torch.nonzero(inside.reshape(-1)).flatten()
        return inside, first, first
    left, right = neighbour_views(levels, ((0, -1), (0, 1)))
    start = inside & (levels != left)
    end = inside & (levels != right)
    # runs neither nest nor interleave: the k-th start and the k-th end belong to the same run
    return start, torch.nonzero(start.reshape(-1)).flatten(), torch.nonzero(end.reshape(-1)).flatten()


def _run_edges(levels: torch.Tensor, start: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges ``(a, b)`` (run numbers) between runs holding equal-level neighbour pixels a row apart.

    Along a row, consecutive pixels joining the same pair of runs give one edge: a pixel
    repeats its left neighbour's pair unless a run starts at it or at its partner.
    """
    forward = [(dy, dx) for dy, dx in offsets if dy > 0]  # one of each +/- pair; (0, +/-1) are the runs
    e = torch.zeros(0, dtype=torch.int64, device=levels.device)
    if not forward:
        return e, e
    w = levels.shape[2]
    run_id = (torch.cumsum(start.reshape(-1), dim=0, dtype=torch.int32) - 1).to(torch.int64)
    src, dst = [e], [e]
    inside = levels > 0
    views = zip(forward, neighbour_views(levels, forward), neighbour_views(start, forward, fill=True))
    for (dy, dx), nb_lev, nb_start in views:
        valid = inside & (nb_lev == levels)
        (prev_valid,) = neighbour_views(valid, ((0, -1),), fill=False)
        keep = valid & ~(prev_valid & ~start & ~nb_start)
        idx = torch.nonzero(keep.reshape(-1)).flatten()
        src.append(run_id[idx])
        dst.append(run_id[idx + (dy * w + dx)])
    return torch.cat(src), torch.cat(dst)


def _hook_until_stable(n: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Connected components by min-label hooking with pointer jumping (any device).

    FastSV-style: each round hooks, for every edge, the node and its root onto the smaller
    grandparent label across the edge (``scatter_reduce(amin)``), then jumps pointers
    (``f = min(f, f[f])``). Labels only decrease and ``f[x] <= x``, so it stops; at the fixed
    point every tree is a star and both ends of every edge carry the same root.

    Returns:
        ``(n,)`` int64: the smallest node index of each node's component.
    """
    parent = torch.arange(n, device=u.device)
    src = torch.cat([u, v])
    dst = torch.cat([v, u])
    while True:
        grand = parent[parent]
        g_dst = grand[dst]
        nxt = parent.clone()
        nxt.scatter_reduce_(0, parent[src], g_dst, reduce="amin")  # hook the root side
        nxt.scatter_reduce_(0, src, g_dst, reduce="amin")  # aggressive hooking
        torch.minimum(nxt, grand, out=nxt)  # pointer jumping
        if torch.equal(nxt, parent):
            return parent
        parent = nxt


def _scipy_components(n: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Same result as :func:`_hook_until_stable` through ``scipy.sparse.csgraph`` (CPU tensors only)."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(u.numel(), dtype=np.int8), (u.numpy(), v.numpy())), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    label_t = torch.from_numpy(label.astype(np.int64))
    smallest = torch.full((int(label.max()) + 1,), n, dtype=torch.int64).scatter_reduce_(0, label_t, torch.arange(n), reduce="amin")
    return smallest[label_t]


# CPU tensors: label the zones with a C library (scikit-image's ``label`` for the 4- and
# 8-neighbourhoods, else scipy's ``connected_components`` on the run graph); the torch path
# is used on other devices, or if False
USE_SCIPY_ON_CPU = True


def _components(n: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """Smallest node index of each node's component (``(n,)`` int64), or ``None`` if there is no edge."""
    if u.numel() == 0:
        return None
    if USE_SCIPY_ON_CPU and u.device.type == "cpu":
        return _scipy_components(n, u, v)
    return _hook_until_stable(n, u, v)


def _run_components(levels: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Runs and the zone each belongs to: ``(first, last, comp)``, ``comp`` = the zone's first run
    (``None``: every run is a zone)."""
    start, first, last = _runs(levels, (0, 1) in set(offsets))
    return first, last, _components(first.numel(), *_run_edges(levels, start, offsets))


def zone_labels(levels: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Label the zones (connected equal-level ROI pixel sets) of each sample.

    Args:
        levels: ``(B, H, W)`` integer, 1..Ng in the ROI, 0 outside.
        offsets: the neighbourhood (symmetric unit offsets).

    Returns:
        ``(B, H, W)`` int64: on ROI pixels the flat index (into the batch) of the first pixel
        of their zone, ``-1`` elsewhere.
    """
    first, last, comp = _run_components(levels, offsets)
    n = levels.numel()
    # paint each run's zone id from its first pixel to its last (difference array + cumsum)
    zone_px = (first if comp is None else first[comp]) + 1
    delta = torch.zeros(n + 1, dtype=torch.int64, device=levels.device)
    delta.index_add_(0, first, zone_px)
    delta.index_add_(0, last + 1, -zone_px)
    return (torch.cumsum(delta, dim=0)[:n] - 1).view(levels.shape)


def _skimage_label():
    """scikit-image's ``measure.label`` (labels equal-valued connected pixels in C), or ``None``."""
    try:
        from skimage.measure import label
    except ImportError:  # pragma: no cover - scikit-image comes with monai[skimage] (monailabel)
        return None
    return label


# skimage connectivity of the neighbourhoods it can label (1: 4-neighbourhood, 2: 8-neighbourhood)
_SKIMAGE_CONNECTIVITY = {
    frozenset({(-1, 0), (1, 0), (0, -1), (0, 1)}): 1,
    frozenset({(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)}): 2,
}


# row-only neighbourhood: the zones are the horizontal runs (connectivity code 0 below)
_ROW_ONLY = frozenset({(0, -1), (0, 1)})


def _numpy_connectivity(offsets: Sequence[tuple[int, int]]) -> int | None:
    """How the CPU numpy path labels this neighbourhood: 1 / 2 (scikit-image's 4- / 8-connectivity),
    0 (row-only: horizontal runs), ``None`` (not handled: the torch path)."""
    key = frozenset(offsets)
    if key == _ROW_ONLY:
        return 0
    connectivity = _SKIMAGE_CONNECTIVITY.get(key)
    if connectivity is None or _skimage_label() is None:
        return None
    return connectivity


def _sample_zones_np(lev: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray]:
    """Zones of one 2-D sample (integer levels, 0 outside the ROI): ``(level, size)`` per zone."""
    if connectivity == 0:  # horizontal runs; a zero column after each row ends every run in its row
        h, w = lev.shape
        flat = np.zeros((h, w + 1), lev.dtype)
        flat[:, :w] = lev
        flat = flat.ravel()
        change = np.empty(flat.size + 1, bool)
        change[0] = change[-1] = True
        np.not_equal(flat[1:], flat[:-1], out=change[1:-1])
        inside = flat != 0
        first = np.flatnonzero(change[:-1] & inside)
        last = np.flatnonzero(change[1:] & inside)
        return flat[first], last - first + 1
    lab, n = _skimage_label()(lev, background=0, return_num=True, connectivity=connectivity)
    lab = lab.ravel()
    size = np.bincount(lab, minlength=n + 1)
    level = np.empty(n + 1, lev.dtype)
    level[lab] = lev.ravel()  # every pixel of a zone holds the zone's level
    return level[1:], size[1:]


def _box_zones_np(levels: np.ndarray, mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(level, size)`` of the zones of one 2-D sample, cropped to its ROI box first (``None``: empty ROI)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return _sample_zones_np(levels[box] * mask[box].view(np.uint8), connectivity)  # 0 outside the ROI


# threads labelling the samples of a CPU batch concurrently (None: torch's thread count, see
# torch_backend.cpu_threads; 1: none)
LABEL_THREADS: int | None = None


def _zones_np(levels: np.ndarray, mask: np.ndarray | None, connectivity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zone list ``(sample, level, size)`` (int64) of a ``(B, H, W)`` numpy batch.

    Each sample is cropped to the bounding box of its ROI (``mask``, or ``levels > 0`` if
    ``None``) and zeroed outside it before labelling. With more than one thread
    (:data:`LABEL_THREADS`, default torch's thread count) the samples are labelled
    concurrently (scikit-image's labelling and numpy's passes release the GIL), so the
    class uses the cores torch is given.
    """
    if not np.issubdtype(levels.dtype, np.integer):
        levels = levels.astype(np.int64)
    masks = [(levels[k] > 0) if mask is None else mask[k] for k in range(levels.shape[0])]
    workers = min(cpu_threads() if LABEL_THREADS is None else LABEL_THREADS, len(masks))
    if workers > 1:
        # a pool per call: starting threads costs microseconds next to ~1.5 ms of labelling per
        # sample, and none outlives the call (thread-safe, nothing left running before a fork)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="glszm") as pool:
            per_sample = list(pool.map(_box_zones_np, levels, masks, [connectivity] * len(masks)))
    else:
        per_sample = [_box_zones_np(lev, m, connectivity) for lev, m in zip(levels, masks)]
    zb, zl, zs = [], [], []
    for k, z in enumerate(per_sample):
        if z is not None:
            zb.append(np.full(z[1].size, k, np.int64))
            zl.append(z[0].astype(np.int64))
            zs.append(z[1].astype(np.int64, copy=False))
    if not zb:
        e = np.zeros(0, np.int64)
        return e, e, e
    return np.concatenate(zb), np.concatenate(zl), np.concatenate(zs)


def zones(levels: torch.Tensor, offsets: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The zones of a batch as flat lists.

    Args:
        levels: ``(B, H, W)`` integer, 1..Ng in the ROI, 0 outside.
        offsets: the neighbourhood (symmetric unit offsets).

    Returns:
        ``(sample, level, size)``: three ``(Z,)`` int64 tensors, one entry per zone (in no
        particular order).
    """
    b, h, w = levels.shape
    if USE_SCIPY_ON_CPU and levels.device.type == "cpu" and levels.numel():
        connectivity = _numpy_connectivity(offsets)
        if connectivity is not None:
            return tuple(torch.from_numpy(a) for a in _zones_np(levels.numpy(), None, connectivity))
    first, last, comp = _run_components(levels, offsets)
    run_len = last - first + 1
    lev = levels.reshape(-1)
    if comp is None:  # every run is a zone
        return first // (h * w), lev[first].to(torch.int64), run_len
    size = torch.zeros_like(run_len).index_add_(0, comp, run_len)
    roots = torch.nonzero(comp == torch.arange(comp.numel(), device=comp.device)).flatten()
    first = first[roots]
    return first // (h * w), lev[first].to(torch.int64), size[roots]


def _features_np(zb: np.ndarray, zl: np.ndarray, zs: np.ndarray, b: int) -> np.ndarray:
    """:func:`_features_from_zones` in numpy: ``(b, 16)`` float64 from int64 zone lists."""
    names = CLASS_FEATURES["glszm"]
    if zs.size == 0:  # no zone in the batch: as the torch path (Nz and Np taken as 1)
        out = np.zeros((b, len(names)))
        out[:, names.index("ZonePercentage")] = 1.0
        out[:, names.index("ZoneEntropy")] = -0.0
        return out
    ng, ns = int(zl.max()), int(zs.max())
    # distinct (sample, level, size) cells and their zone counts: sort one packed key per zone
    key = (zb * ng + (zl - 1)) * ns + (zs - 1)
    key.sort()
    new = np.empty(key.size, bool)
    new[0] = True
    np.not_equal(key[1:], key[:-1], out=new[1:])
    start = np.flatnonzero(new)
    cell = key[start]
    c = np.diff(start, append=key.size).astype(np.float64)
    cb, rest = np.divmod(cell, ng * ns)
    li, sj = np.divmod(rest, ns)  # level - 1, size - 1
    ci, cj = li + 1.0, sj + 1.0

    def per_sample(x: np.ndarray) -> np.ndarray:
        return np.bincount(cb, weights=x, minlength=b)

    pg = np.bincount(cb * ng + li, weights=c, minlength=b * ng).reshape(b, ng)
    ps2 = np.bincount(cb * ns + sj, weights=c, minlength=b * ns) ** 2  # squared zone counts per size
    nz = pg.sum(axis=1)
    nz[nz == 0] = 1.0
    c_nz = c / nz[cb]  # p(i, j) of each cell
    np_ = per_sample(c * cj)  # ROI pixels
    np_[np_ == 0] = 1.0
    iv = np.arange(1, ng + 1, dtype=np.float64)
    pgn = pg / nz[:, None]
    u_i = (pgn * iv).sum(axis=1, keepdims=True)
    u_j = per_sample(c_nz * cj)
    ci2, cj2 = ci * ci, cj * cj
    pg2 = (pg**2).sum(axis=1)
    szn = ps2.reshape(b, ns).sum(axis=1)
    feats = {
        "GrayLevelNonUniformity": pg2 / nz,
        "GrayLevelNonUniformityNormalized": pg2 / nz**2,
        "GrayLevelVariance": (pgn * (iv - u_i) ** 2).sum(axis=1),
        "HighGrayLevelZoneEmphasis": (pg * iv**2).sum(axis=1) / nz,
        "LargeAreaEmphasis": per_sample(c * cj2) / nz,
        "LargeAreaHighGrayLevelEmphasis": per_sample(c * ci2 * cj2) / nz,
        "LargeAreaLowGrayLevelEmphasis": per_sample(c * cj2 / ci2) / nz,
        "LowGrayLevelZoneEmphasis": (pg / iv**2).sum(axis=1) / nz,
        "SizeZoneNonUniformity": szn / nz,
        "SizeZoneNonUniformityNormalized": szn / nz**2,
        "SmallAreaEmphasis": per_sample(c / cj2) / nz,
        "SmallAreaHighGrayLevelEmphasis": per_sample(c * ci2 / cj2) / nz,
        "SmallAreaLowGrayLevelEmphasis": per_sample(c / (ci2 * cj2)) / nz,
        "ZoneEntropy": -per_sample(c_nz * np.log2(c_nz + EPS)),
        "ZonePercentage": nz / np_,
        "ZoneVariance": per_sample(c_nz * (cj - u_j[cb]) ** 2),
    }
    return np.stack([feats[k] for k in names], axis=1)


def _cells(zb: torch.Tensor, zl: torch.Tensor, zs: torch.Tensor, b: int, ng: int, ns: int) -> tuple[torch.Tensor, ...]:
    """Non-empty GLSZM cells ``(sample, level, size, count)`` from the zone list."""
    key = (zb * ng + zl - 1) * ns + zs - 1
    if b * ng * ns <= _DENSE_CELLS:
        counts = torch.bincount(key, minlength=b * ng * ns)
        cell = torch.nonzero(counts).flatten()
        count = counts[cell]
    else:
        cell, count = torch.unique(key, return_counts=True)
    return cell // (ng * ns), (cell // ns) % ng + 1, cell % ns + 1, count


def _per_sample_sum(values: torch.Tensor, sample: torch.Tensor, b: int) -> torch.Tensor:
    return torch.zeros(b, dtype=torch.float64, device=values.device).index_add_(0, sample, values)


def _features_from_zones(zb: torch.Tensor, zl: torch.Tensor, zs: torch.Tensor, b: int, ng: int) -> torch.Tensor:
    """GLSZM features from zone lists (sample ``zb``, level ``zl`` 1..ng, size ``zs``)."""
    dev = zb.device
    ns = max(int(zs.max()), 1) if zs.numel() else 1
    cb, ci, cj, cnt = _cells(zb, zl, zs, b, ng, ns)
    c = cnt.to(torch.float64)
    pg = torch.bincount(cb * ng + ci - 1, weights=c, minlength=b * ng).view(b, ng)
    ps = torch.bincount(cb * ns + cj - 1, weights=c, minlength=b * ns).view(b, ns)
    nz = pg.sum(dim=1)
    nz = torch.where(nz == 0, torch.ones_like(nz), nz)
    jv = torch.arange(1, ns + 1, dtype=torch.float64, device=dev).view(1, ns)
    iv = torch.arange(1, ng + 1, dtype=torch.float64, device=dev).view(1, ng)
    np_ = (ps * jv).sum(dim=1)
    np_ = torch.where(np_ == 0, torch.ones_like(np_), np_)
    ci2, cj2 = ci.to(torch.float64) ** 2, cj.to(torch.float64) ** 2
    pc = c / nz[cb]
    pgn, psn = pg / nz[:, None], ps / nz[:, None]
    u_i = (pgn * iv).sum(dim=1, keepdim=True)
    u_j = (psn * jv).sum(dim=1, keepdim=True)
    feats = {
        "GrayLevelNonUniformity": (pg**2).sum(dim=1) / nz,
        "GrayLevelNonUniformityNormalized": (pg**2).sum(dim=1) / nz**2,
        "GrayLevelVariance": (pgn * (iv - u_i) ** 2).sum(dim=1),
        "HighGrayLevelZoneEmphasis": (pg * iv**2).sum(dim=1) / nz,
        "LargeAreaEmphasis": (ps * jv**2).sum(dim=1) / nz,
        "LargeAreaHighGrayLevelEmphasis": _per_sample_sum(c * ci2 * cj2, cb, b) / nz,
        "LargeAreaLowGrayLevelEmphasis": _per_sample_sum(c * cj2 / ci2, cb, b) / nz,
        "LowGrayLevelZoneEmphasis": (pg / iv**2).sum(dim=1) / nz,
        "SizeZoneNonUniformity": (ps**2).sum(dim=1) / nz,
        "SizeZoneNonUniformityNormalized": (ps**2).sum(dim=1) / nz**2,
        "SmallAreaEmphasis": (ps / jv**2).sum(dim=1) / nz,
        "SmallAreaHighGrayLevelEmphasis": _per_sample_sum(c * ci2 / cj2, cb, b) / nz,
        "SmallAreaLowGrayLevelEmphasis": _per_sample_sum(c / (ci2 * cj2), cb, b) / nz,
        "ZoneEntropy": -_per_sample_sum(pc * torch.log2(pc + EPS), cb, b),
        "ZonePercentage": nz / np_,
        "ZoneVariance": (psn * (jv - u_j) ** 2).sum(dim=1),
    }
    return torch.stack([feats[k] for k in CLASS_FEATURES["glszm"]], dim=1)


def features(
    image: torch.Tensor,
    mask: torch.Tensor,
    levels: torch.Tensor,
    spacing: tuple[float, float] = (1.0, 1.0),
    neighbourhood: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """GLSZM features of a batch.

    Args:
        image: ``(B, H, W)`` float64 (unused: the GLSZM works on the discretised levels).
        mask: ``(B, H, W)`` bool ROI.
        levels: ``(B, H, W)`` int64 from :func:`gazerad.radiomics.discretize.discretize`.
        spacing: pixel spacing (unused).
        neighbourhood: ``(dy, dx)`` offsets; ``None``: :data:`.gldm.DEFAULT_NEIGHBOURHOOD`.

    Returns:
        ``(B, 16)`` float64 on the input's device, columns in ``CLASS_FEATURES["glszm"]`` order.
    """
    offsets = resolve_neighbourhood(neighbourhood)
    if USE_SCIPY_ON_CPU and cpu_fast_path(levels) and mask.device.type == "cpu" and levels.ndim == 3:
        connectivity = _numpy_connectivity(offsets)
        if connectivity is not None:
            zb, zl, zs = _zones_np(levels.numpy(), mask.to(torch.bool).numpy(), connectivity)
            return torch.from_numpy(_features_np(zb, zl, zs, levels.shape[0]))
    levels = prepare_levels(mask, levels)
    ng = max(int(levels.max()), 1)
    zb, zl, zs = zones(levels, offsets)
    return _features_from_zones(zb, zl, zs, levels.shape[0], ng)
