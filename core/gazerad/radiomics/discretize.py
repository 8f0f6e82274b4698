"""Fixed-bin-width grey-level discretisation, identical to pyradiomics' ``binImage``.

pyradiomics bins the ROI's values with edges ``low + k * W`` (``low = min - min % W``,
numpy ``arange`` semantics) and ``numpy.digitize``, so the minimum lands in bin 1 and a
value equal to an edge opens the next bin. Reproducing the edges exactly (not the
algebraically equal ``floor(x / W) - floor(min / W) + 1``, which differs at float ties)
keeps every texture matrix identical to the reference.
"""

from __future__ import annotations

import torch

__all__ = ["discretize"]


def discretize(image: torch.Tensor, mask: torch.Tensor, bin_width: float) -> torch.Tensor:
    """Discretise each image's ROI with a fixed bin width.

    Args:
        image: ``(B, H, W)`` float tensor (float64 recommended: pyradiomics works in float64).
        mask: ``(B, H, W)`` bool tensor; every sample needs at least one ROI pixel.
        bin_width: bin width ``W`` in image units (> 0).

    Returns:
        ``(B, H, W)`` int64 tensor: 1..Ng inside the ROI (1 = the ROI minimum's bin), 0 outside.
    """
    if bin_width <= 0:
        raise ValueError(f"bin_width must be > 0, got {bin_width}")
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
