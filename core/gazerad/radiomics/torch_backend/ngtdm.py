"""Neighbouring Gray Tone Difference Matrix (NGTDM) features, batched in torch, matching pyradiomics 3.0.1.

For each ROI pixel of level ``i`` pyradiomics averages the levels of its neighbours that lie
in the ROI (the centre excluded; which neighbours: see the neighbourhood note in
:mod:`.gldm`), and adds ``|i - mean|`` to ``s_i``; a pixel with no ROI neighbour adds 0 but
still counts in ``n_i``. ``Nvp = sum n_i`` (all ROI pixels), ``p_i = n_i / Nvp``, ``Ngp`` =
number of levels present. Gray levels absent from the ROI are deleted, so every pairwise
sum below runs over present levels only (masked here), with the bin number ``i`` as the
weight.

pyradiomics' degenerate-case conventions, reproduced:

- Coarseness ``1 / sum p_i s_i``, or ``1e6`` when that sum is 0 (e.g. a flat ROI);
- Contrast 0 when ``Ngp (Ngp - 1) = 0`` (a single level);
- Busyness 0 when ``sum |i p_i - j p_j| = 0`` (a single level);
- Strength 0 when ``sum s_i = 0``.

Parity: every feature within ``rtol = 1e-4`` (observed ~1e-15) and ``atol = 1e-8``; the
near-zero values are the exact zeros of the conventions above.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..names import CLASS_FEATURES
from .gldm import neighbour_views, prepare_levels, resolve_neighbourhood

__all__ = ["features", "ngtdm_matrix"]


def ngtdm_matrix(levels: torch.Tensor, ng: int, offsets: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level pixel counts and summed neighbourhood differences.

    ``|i - mean|`` is evaluated as ``|i * count - sum| / count`` (exact integers, one
    rounding; pyradiomics rounds ``sum / count`` first: the two differ by ~1 ulp and agree
    on which differences are exactly 0).

    Args:
        levels: ``(B, H, W)`` integer, 1..Ng in the ROI, 0 outside.
        ng: number of gray levels (``>= levels.max()``).
        offsets: the neighbourhood.

    Returns:
        ``n``: ``(B, ng)`` float64 ROI pixels of each level; ``s``: ``(B, ng)`` float64 sum of
        ``|i - mean of the ROI neighbours|`` over those pixels (0 for a pixel with none).
    """
    b = levels.shape[0]
    # small integers: neighbour counts <= 8 (uint8), neighbour sums <= 8 Ng (int16 below 4096 levels)
    small = ng < 4096
    lev = levels.to(torch.int16 if small else torch.int32)
    count = torch.zeros(lev.shape, dtype=torch.uint8, device=lev.device)
    total = torch.zeros_like(lev)
    for nb in neighbour_views(lev, offsets):
        count += nb > 0
        total += nb  # outside the ROI/image the level is 0
    num = (lev * count).sub_(total).abs_()  # 0 where a pixel has no ROI neighbour
    diff = num.to(torch.float64).div_(count.clamp_(min=1))
    # flat bin (sample, level); pixels outside the ROI land in level 0, dropped below
    key = lev.to(torch.int32) + (torch.arange(b, device=lev.device, dtype=torch.int32) * (ng + 1)).view(b, 1, 1)
    key = key.reshape(-1)
    n = torch.bincount(key, minlength=b * (ng + 1)).view(b, ng + 1)[:, 1:].to(torch.float64)
    s = torch.bincount(key, weights=diff.reshape(-1), minlength=b * (ng + 1)).view(b, ng + 1)[:, 1:]
    return n, s


def _features_from_matrix(n: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """NGTDM features from per-level counts ``n`` and difference sums ``s``, both ``(B, Ng)``."""
    ng = n.shape[1]
    zero, one = torch.zeros((), dtype=torch.float64, device=n.device), torch.ones((), dtype=torch.float64, device=n.device)
    i = torch.arange(1, ng + 1, dtype=torch.float64, device=n.device).view(1, ng)
    present = n > 0
    pair = present[:, :, None] & present[:, None, :]  # pyradiomics deletes absent levels
    nvp = n.sum(dim=1)
    p = n / nvp[:, None]
    ngp = present.sum(dim=1).to(torch.float64)
    dij = i.view(1, ng, 1) - i.view(1, 1, ng)  # (1, Ng, Ng)
    ps = p * s
    sum_ps = ps.sum(dim=1)
    sum_s = s.sum(dim=1)

    coarseness = torch.where(sum_ps != 0, one / torch.where(sum_ps != 0, sum_ps, one), torch.full_like(sum_ps, 1e6))

    div = ngp * (ngp - 1)
    contrast = (p[:, :, None] * p[:, None, :] * dij**2).sum(dim=(1, 2)) * sum_s / nvp
    contrast = torch.where(div != 0, contrast / torch.where(div != 0, div, one), zero)

    ip = i * p
    absdiff = torch.where(pair, (ip[:, :, None] - ip[:, None, :]).abs(), zero).sum(dim=(1, 2))
    busyness = torch.where(absdiff != 0, sum_ps / torch.where(absdiff != 0, absdiff, one), zero)

    psum = p[:, :, None] + p[:, None, :]
    num = torch.where(pair, ps[:, :, None] + ps[:, None, :], zero)
    complexity = (dij.abs() * num / torch.where(psum == 0, one, psum)).sum(dim=(1, 2)) / nvp

    strength = torch.where(pair, psum * dij**2, zero).sum(dim=(1, 2))
    strength = torch.where(sum_s != 0, strength / torch.where(sum_s != 0, sum_s, one), zero)

    feats = {
        "Busyness": busyness,
        "Coarseness": coarseness,
        "Complexity": complexity,
        "Contrast": contrast,
        "Strength": strength,
    }
    return torch.stack([feats[k] for k in CLASS_FEATURES["ngtdm"]], dim=1)


def features(
    image: torch.Tensor,
    mask: torch.Tensor,
    levels: torch.Tensor,
    spacing: tuple[float, float] = (1.0, 1.0),
    neighbourhood: Sequence[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """NGTDM features of a batch.

    Args:
        image: ``(B, H, W)`` float64 (unused: the NGTDM works on the discretised levels).
        mask: ``(B, H, W)`` bool ROI.
        levels: ``(B, H, W)`` int64 from :func:`gazerad.radiomics.discretize.discretize`.
        spacing: pixel spacing (unused).
        neighbourhood: ``(dy, dx)`` offsets; ``None``: :data:`.gldm.DEFAULT_NEIGHBOURHOOD`.

    Returns:
        ``(B, 5)`` float64 on the input's device, columns in ``CLASS_FEATURES["ngtdm"]`` order.
    """
    offsets = resolve_neighbourhood(neighbourhood)
    levels = prepare_levels(mask, levels)
    ng = max(int(levels.max()), 1)
    return _features_from_matrix(*ngtdm_matrix(levels, ng, offsets))
