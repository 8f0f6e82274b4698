"""Fixed-bin-width grey-level discretisation, identical to pyradiomics' ``binImage``.

pyradiomics bins the ROI's values with edges ``low + k * W`` (``low = min - min % W``,
numpy ``arange`` semantics) and ``numpy.digitize``, so the minimum lands in bin 1 and a
value equal to an edge opens the next bin. Reproducing the edges exactly (not the
algebraically equal ``floor(x / W) - floor(min / W) + 1``, which differs at float ties)
keeps every texture matrix identical to the reference.

Two paths, same result: CPU tensors are binned on each sample's ROI values only (numpy:
one boolean gather, the bin from ``floor`` with the exact-edge correction, one scatter into
a zeroed grid); other
devices bin the whole ``(B, H, W)`` grid with masked reductions (no gather/scatter, which
are slow on GPUs only for tiny inputs).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["discretize", "smallest_level_dtype"]


def smallest_level_dtype(top: int) -> torch.dtype:
    """The narrowest integer dtype holding levels ``0..top`` (the texture classes read levels many times)."""
    return torch.uint8 if top < 256 else torch.int16 if top < 2**15 else torch.int32 if top < 2**31 else torch.int64


def discretize(image: torch.Tensor, mask: torch.Tensor, bin_width: float, dtype: torch.dtype | None = torch.int64) -> torch.Tensor:
    """Discretise each image's ROI with a fixed bin width.

    Args:
        image: ``(B, H, W)`` float tensor (float64 recommended: pyradiomics works in float64).
        mask: ``(B, H, W)`` bool tensor; every sample needs at least one ROI pixel.
        bin_width: bin width ``W`` in image units (> 0).
        dtype: integer dtype of the result; ``None``: the narrowest that holds the levels
            (:func:`smallest_level_dtype`, ``uint8`` for fewer than 256 bins).

    Returns:
        ``(B, H, W)`` integer tensor: 1..Ng inside the ROI (1 = the ROI minimum's bin), 0 outside.
    """
    if bin_width <= 0:
        raise ValueError(f"bin_width must be > 0, got {bin_width}")
    from . import torch_backend  # the CPU_FAST_PATHS switch

    if torch_backend.cpu_fast_path(image) and image.ndim == 3 and mask.shape == image.shape:
        out = _discretize_compact(image, mask, float(bin_width), dtype)
        if out is not None:
            return out
    idx = _discretize_dense(image, mask, bin_width)
    return idx.to(smallest_level_dtype(int(idx.max()) if idx.numel() else 0) if dtype is None else dtype)


def _discretize_compact(image: torch.Tensor, mask: torch.Tensor, bin_width: float, dtype: torch.dtype | None) -> torch.Tensor | None:
    """CPU path of :func:`discretize`, one sample's ROI values at a time; ``None`` where the dense
    path must decide (an empty ROI, non-finite values, pyradiomics' single-edge special case)."""
    m = mask.to(torch.bool).contiguous().numpy()
    x = image.detach().to(torch.float64).contiguous().numpy()
    levels = []
    top = 0.0
    for s in range(x.shape[0]):
        v = x[s][m[s]]
        if v.size == 0:
            return None
        mn, mx = v.min(), v.max()
        low = mn - np.remainder(mn, bin_width)  # numpy % semantics, as pyradiomics
        n_edges = np.ceil((mx + 2 * bin_width - low) / bin_width)
        if not (np.isfinite(n_edges) and n_edges > 1):
            return None
        # k = floor((x - low) / W), then the exact-edge correction of _edge_count: edges are
        # evaluated as k * W + low, exactly as the dense path (and numpy.arange) does
        k = v - low
        k /= bin_width
        np.floor(k, out=k)
        edge = k * bin_width
        edge += low
        below = v < edge
        k += 1
        np.multiply(k, bin_width, out=edge)
        edge += low
        above = v >= edge
        k -= below
        k += above  # the level: 1..Ng, as float64
        top = max(top, float(k.max()))
        levels.append(k)
    out_dtype = smallest_level_dtype(int(top)) if dtype is None else dtype
    grid = np.zeros(m.shape, dtype=torch.empty(0, dtype=out_dtype).numpy().dtype)
    for s, k in enumerate(levels):
        grid[s][m[s]] = k
    return torch.from_numpy(grid)


def _discretize_dense(image: torch.Tensor, mask: torch.Tensor, bin_width: float) -> torch.Tensor:
    """Whole-grid path of :func:`discretize` (any device): ``(B, H, W)`` int64."""
    b = image.shape[0]
    x = image.to(torch.float64)
    inf = torch.tensor(float("inf"), dtype=torch.float64, device=x.device)
    flat = x.reshape(b, -1)
    m = mask.reshape(b, -1)
    mn = torch.where(m, flat, inf).amin(dim=1)
    mx = torch.where(m, flat, -inf).amax(dim=1)
    low = mn - torch.remainder(mn, bin_width)  # python/numpy % semantics (sign of divisor)
    high = mx + 2 * bin_width
    n_edges = torch.ceil((high - low) / bin_width).to(torch.int64)  # len(numpy.arange(low, high, W))
    flat_region = n_edges == 1
    k = int(n_edges.max().item())
    steps = torch.arange(k, dtype=torch.float64, device=x.device)
    edges = low[:, None] + steps[None, :] * bin_width
    edges = torch.where(steps[None, :] < n_edges[:, None], edges, inf)
    if bool(flat_region.any()):  # pyradiomics: a single edge becomes [e - .5, e + .5]
        fix = torch.full_like(edges, float("inf"))
        fix[:, 0] = low - 0.5
        if k > 1:
            fix[:, 1] = low + 0.5
        else:
            fix = torch.cat([fix, (low + 0.5)[:, None]], dim=1)
            edges = torch.cat([edges, torch.full_like(low, float("inf"))[:, None]], dim=1)
        edges = torch.where(flat_region[:, None], fix, edges)
    if bool(flat_region.any()):
        idx = torch.searchsorted(edges.contiguous(), flat.contiguous(), right=True)
    else:
        idx = _edge_count(flat, low, bin_width)
    return (idx * m).reshape(image.shape)  # 0 outside the ROI (integers: no where, slow on CPU)


def _edge_count(flat: torch.Tensor, low: torch.Tensor, bin_width: float) -> torch.Tensor:
    """``searchsorted(edges, flat, right=True)`` for the edges ``low + k * W``, without a search.

    The count is ``floor((x - low) / W) + 1`` up to rounding near an edge, where it can be
    off by one: it is corrected by comparing ``x`` with the two edges beside it, computed
    exactly as the edges are (``low + k * W``, k as float64). Every ROI value lies in
    ``[e_0, e_{n-1})`` (``low <= min``, ``max + W < e_{n-1}``), so no edge past the last is
    read; values outside the ROI (possibly non-finite) give garbage, masked by the caller.
    """
    lo = low[:, None]
    k = torch.nan_to_num((flat - lo).div_(bin_width).floor_(), nan=0.0, posinf=0.0, neginf=0.0)
    below = flat < (k * bin_width).add_(lo)  # x < e_k: the count is k, not k + 1
    above = flat >= ((k + 1) * bin_width).add_(lo)  # x >= e_{k+1}: the count is k + 2
    return (k.add_(1).sub_(below.to(k.dtype)).add_(above.to(k.dtype))).to(torch.int64)
