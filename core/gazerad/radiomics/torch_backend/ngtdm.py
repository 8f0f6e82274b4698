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

Two implementations of ``n`` and ``s``:

- CPU (numpy, :func:`_ngtdm_matrix_np`): each pixel's ROI-neighbour count ``c`` and
  neighbour-level sum ``m`` come from one neighbour sum of a packed value (a separable 3x3
  box sum for the 8-neighbourhood, on contiguous flat shifts of the zero-padded levels), then
  one small-integer histogram of ``(level, c, m)`` per sample gives ``n_i`` and
  ``s_i = sum_c (sum |i c - m|) / c`` from exact integer sums: no per-pixel float work. The
  five formulas then run in numpy (tiny arrays: torch's per-op overhead dominated). Used while
  the histogram stays small (``Ng`` up to ~56 with 8 neighbours); above that, the torch path.
- torch (CUDA, and the large-``Ng`` CPU fallback): shifted neighbour views, a per-pixel
  ``|i c - m| / c`` and a weighted ``bincount``.

Parity: every feature within ``rtol = 1e-4`` (observed ~1e-15) and ``atol = 1e-8``; the
near-zero values are the exact zeros of the conventions above. The two paths agree to ~1e-15.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from ..names import CLASS_FEATURES
from . import cpu_fast_path
from .gldm import (
    EIGHT_NEIGHBOURS,
    flat_shift,
    histogram_rows,
    neighbour_views,
    pad_flat,
    prepare_levels,
    prepare_levels_np,
    resolve_neighbourhood,
)

__all__ = ["features", "ngtdm_matrix"]


def ngtdm_matrix(levels: torch.Tensor, ng: int, offsets: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-level pixel counts and summed neighbourhood differences.

    ``|i - mean|`` is evaluated as ``|i * count - sum| / count`` (exact integers, one
    rounding; pyradiomics rounds ``sum / count`` first: the two differ by ~1 ulp and agree
    on which differences are exactly 0). On CPU (numpy path, see the module notes) the
    numerators are first summed exactly per ``(level, count)``, one division per count.

    Args:
        levels: ``(B, H, W)`` integer, 1..Ng in the ROI, 0 outside.
        ng: number of gray levels (``>= levels.max()``).
        offsets: the neighbourhood.

    Returns:
        ``n``: ``(B, ng)`` float64 ROI pixels of each level; ``s``: ``(B, ng)`` float64 sum of
        ``|i - mean of the ROI neighbours|`` over those pixels (0 for a pixel with none).
    """
    if _numpy_path(levels, ng, offsets):
        n, s = _ngtdm_matrix_np(levels.numpy(), ng, offsets)
        return torch.from_numpy(n), torch.from_numpy(s)
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


_NP_MAX_BINS = 2**18  # the numpy path's (level, count, sum) histogram: beyond this (Ng > ~56) use the torch path


def _numpy_path(levels: torch.Tensor, ng: int, offsets: Sequence[tuple[int, int]]) -> bool:
    """Whether :func:`_ngtdm_matrix_np` handles this call: CPU tensors whose histogram stays small."""
    nn = len(offsets)
    bins = (ng + 1) * (nn + 1) * (nn * ng + 1)
    # per sample and for the batch: the (B, bins) histogram must stay small next to the pixels
    return cpu_fast_path(levels) and bins <= _NP_MAX_BINS and levels.shape[0] * bins <= max(_NP_MAX_BINS, 4 * levels.numel())


def _neighbour_sum_flat(x: np.ndarray, offsets: Sequence[tuple[int, int]], row: int) -> np.ndarray:
    """Sum over ``offsets`` of the neighbours of each element of a flattened zero-padded array (row length ``row``).

    The full 8-neighbourhood is a separable 3x3 box sum (shifts ``±1``, then ``±row``) minus the
    centre: 4 adds and a subtraction instead of 8 shifted passes. Exact at interior pixels;
    padding pixels get partial sums.
    """
    if len(offsets) == 8 and frozenset(offsets) == frozenset(EIGHT_NEIGHBOURS):
        rows = x.copy()
        rows[1:] += x[:-1]
        rows[:-1] += x[1:]
        out = rows.copy()
        out[row:] += rows[:-row]
        out[:-row] += rows[row:]
        out -= x
        return out
    out = np.zeros_like(x)
    for off in offsets:
        k = flat_shift(off, row)
        if k > 0:
            out[:-k] += x[k:]
        else:
            out[-k:] += x[: x.size + k]
    return out


def _ngtdm_matrix_np(levels: np.ndarray, ng: int, offsets: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """CPU :func:`ngtdm_matrix` in numpy: ``n``, ``s`` as ``(B, ng)`` float64 arrays.

    Each pixel gets the packed value ``level + t * in_roi`` (``t`` above any neighbour-level
    sum); one neighbour sum of that (a separable box for the 8-neighbourhood, on the
    flattened zero-padded levels) holds both the ROI-neighbour count ``c`` and the
    neighbour-level sum ``m`` as ``c * t + m``. One histogram of ``(level, c, m)`` per sample
    then gives ``n_i`` and the exact integer sums ``S_ic = sum |i c - m|`` over the pixels of
    level ``i`` with ``c`` ROI neighbours, and ``s_i = sum_c S_ic / c`` (pyradiomics rounds
    each pixel's ``|i - m / c|``: the sums agree to ~1e-16 relative, and on exact zeros).
    """
    b = levels.shape[0]
    nn = len(offsets)
    t = nn * ng + 1  # neighbour-level sums are < t
    span = (nn + 1) * t  # packed (count, sum) values are < span
    nbins = (ng + 1) * span
    dtype = np.uint16 if nbins <= 2**15 else np.int32
    padded = pad_flat(levels, dtype)
    lev = padded.reshape(-1)
    packed = (lev != 0).astype(dtype)  # (np.minimum(lev, 1) is ~8x slower)
    packed *= t
    packed += lev
    key = _neighbour_sum_flat(packed, offsets, padded.shape[2])  # c * t + m at interior pixels
    key += lev * dtype(span)  # (level, c, m); pixels outside the ROI land in level 0, dropped below
    key = key.reshape(padded.shape)
    for edge in (key[:, 0], key[:, -1], key[:, :, 0], key[:, :, -1]):
        edge[...] = 0  # padding pixels hold partial sums: send them to level 0 too
    hist = histogram_rows(key.reshape(b, -1), nbins).reshape(b, ng + 1, nn + 1, t)[:, 1:]
    sums = (hist * _abs_diff_table(ng, nn)).sum(axis=3)  # (B, ng, nn + 1) int64; c = 0 implies m = 0
    s = (sums[:, :, 1:] / np.arange(1, nn + 1)).sum(axis=2)
    n = hist.sum(axis=(2, 3)).astype(np.float64)
    return n, s


@functools.lru_cache(maxsize=8)
def _abs_diff_table(ng: int, nn: int) -> np.ndarray:
    """``|i c - m|`` for ``i`` in 1..ng, ``c`` in 0..nn, ``m`` in 0..nn ng: ``(ng, nn + 1, nn ng + 1)`` int64 (read-only)."""
    i = np.arange(1, ng + 1).reshape(ng, 1, 1)
    c = np.arange(nn + 1).reshape(1, nn + 1, 1)
    m = np.arange(nn * ng + 1).reshape(1, 1, nn * ng + 1)
    table = np.abs(i * c - m)
    table.flags.writeable = False
    return table


def _pair_tables(ng: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_pair_tables_cached` for up to 256 levels (a few hundred kB each); built per call above."""
    return _pair_tables_cached(ng) if ng <= 256 else _pair_tables_cached.__wrapped__(ng)


@functools.lru_cache(maxsize=16)
def _pair_tables_cached(ng: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``i``, ``|i - j|`` and ``(i - j)^2`` for bins 1..ng, and the output column of each feature (read-only)."""
    i = np.arange(1, ng + 1, dtype=np.float64)
    dij = np.abs(i[:, None] - i[None, :])
    order = np.array([("Busyness", "Coarseness", "Complexity", "Contrast", "Strength").index(k) for k in CLASS_FEATURES["ngtdm"]])
    tables = (i, dij, dij**2, order)
    for t in tables:
        t.flags.writeable = False
    return tables


def _features_np(n: np.ndarray, s: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`_features_from_matrix` (CPU: these ``(B, Ng, Ng)`` arrays are tiny, so op count is the cost).

    Same formulas (and NaN pattern for an empty ROI); pairs with an absent level are masked, and the
    complexity denominator ``p_i + p_j`` gets ``+ 1`` where it is masked (it is 0 only there).
    """
    i, dij, dij2, order = _pair_tables(n.shape[1])
    present = (n > 0).astype(np.float64)
    pair = present[:, :, None] * present[:, None, :]  # pyradiomics deletes absent levels
    with np.errstate(divide="ignore", invalid="ignore"):
        nvp = n.sum(axis=1)
        p = n / nvp[:, None]
        ngp = present.sum(axis=1)
        ps = p * s
        sum_ps = ps.sum(axis=1)
        sum_s = s.sum(axis=1)
        psum = p[:, :, None] + p[:, None, :]
        ip = i * p
        absdiff = np.where(pair != 0, np.abs(ip[:, :, None] - ip[:, None, :]), 0.0).sum(axis=(1, 2))  # 0 for an empty ROI
        num = (ps[:, :, None] + ps[:, None, :]) * pair
        psum_safe = psum - pair
        psum_safe += 1.0  # psum where the pair is present (then psum > 0), 1 elsewhere
        complexity = (dij * num / psum_safe).sum(axis=(1, 2)) / nvp
        strength = (psum * pair * dij2).sum(axis=(1, 2))
        contrast = ((p @ dij2) * p).sum(axis=1) * sum_s / nvp
        div = ngp * (ngp - 1)
        out = np.empty((n.shape[0], 5))
        out[:, 0] = np.where(absdiff != 0, sum_ps / np.where(absdiff != 0, absdiff, 1.0), 0.0)  # Busyness
        out[:, 1] = np.where(sum_ps != 0, 1.0 / np.where(sum_ps != 0, sum_ps, 1.0), 1e6)  # Coarseness
        out[:, 2] = complexity
        out[:, 3] = np.where(div != 0, contrast / np.where(div != 0, div, 1.0), 0.0)  # Contrast
        out[:, 4] = np.where(sum_s != 0, strength / np.where(sum_s != 0, sum_s, 1.0), 0.0)  # Strength
    return out[:, order]


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
    if cpu_fast_path(levels):
        lev = prepare_levels_np(mask, levels)
        ng = max(int(lev.max()) if lev.size else 0, 1)
        if _numpy_path(levels, ng, offsets):
            return torch.from_numpy(_features_np(*_ngtdm_matrix_np(lev, ng, offsets)))
        return torch.from_numpy(_features_np(*(x.numpy() for x in ngtdm_matrix(torch.from_numpy(lev), ng, offsets))))
    levels = prepare_levels(mask, levels)
    ng = max(int(levels.max()), 1)
    return _features_from_matrix(*ngtdm_matrix(levels, ng, offsets))
