"""Batched, vectorised 2-D radiomics in torch (CPU and CUDA), matching pyradiomics.

One module per feature class. Each exposes::

    features(image, mask, levels, spacing) -> Tensor (B, F)

with ``image`` ``(B, H, W)`` float64, ``mask`` ``(B, H, W)`` bool, ``levels`` ``(B, H, W)``
int64 from :func:`gazerad.radiomics.discretize.discretize` (1..Ng in the ROI, 0 outside),
``spacing`` the pixel spacing ``(row, col)``; columns in
:data:`gazerad.radiomics.names.CLASS_FEATURES` order. Samples of different sizes share a
batch by zero-padding (``pad_batch``): padding lies outside every ROI, so it changes
nothing.

CPU fast paths. Where numpy (or scipy / scikit-image) kernels on the compacted ROI pixels of
one sample are much faster on CPU than batched masked torch passes, a class computes CPU
tensors that way (:func:`cpu_fast_path` decides); other devices always run the batched torch
code. ``CPU_FAST_PATHS = False`` sends CPU tensors through the batched code as well: the
tests run both paths against pyradiomics.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Sequence

import numpy as np
import torch

__all__ = [
    "pad_batch",
    "CLASS_MODULES",
    "roi_box",
    "flat_nonzero",
    "cpu_fast_path",
    "CPU_FAST_PATHS",
    "EPS",
    "single_torch_thread",
    "cpu_threads",
    "batched_paths",
]

EPS = 2.220446049250313e-16  # numpy.spacing(1): pyradiomics' epsilon in logs and denominators

# CPU tensors take the per-sample numpy fast paths (False: the batched torch code, as on CUDA)
CPU_FAST_PATHS = True


_STATE = threading.local()  # .outer: torch's thread count outside single_torch_thread, per thread


@contextlib.contextmanager
def single_torch_thread() -> Iterator[int]:
    """Run this thread's torch CPU ops on one intra-op thread inside the block; yields the count outside it.

    The fast paths' torch calls are small (a bincount, a sort of a few thousand values): on 2
    cores torch's second intra-op thread costs more than it gives (the first order and the
    texture counts ran ~25 % slower with 2 threads than with 1). Classes that parallelise on
    their own (GLSZM's labelling) ask :func:`cpu_threads` for the outer budget. The state is
    per Python thread and re-entrant, so concurrent callers do not see each other's setting.
    """
    outer = getattr(_STATE, "outer", None)
    if outer is not None:  # nested in this thread: already on one thread
        yield outer
        return
    n = torch.get_num_threads()
    _STATE.outer = n
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield n
    finally:
        _STATE.outer = None
        if n > 1:
            torch.set_num_threads(n)


def cpu_threads() -> int:
    """CPU threads a class may use: torch's thread count (outside :func:`single_torch_thread`'s block)."""
    outer = getattr(_STATE, "outer", None)
    return outer if outer is not None else torch.get_num_threads()


@contextlib.contextmanager
def batched_paths() -> Iterator[None]:
    """Inside the block (this thread only) CPU tensors take the batched torch code, not the fast paths.

    The extractor uses it for tiny ROIs: below ~32 x 32 pixels per sample the per-sample
    Python loops of the fast paths cost more than the batched passes save.
    """
    before = getattr(_STATE, "batched", False)
    _STATE.batched = True
    try:
        yield
    finally:
        _STATE.batched = before


def cpu_fast_path(t: torch.Tensor) -> bool:
    """Whether ``t`` (a CPU tensor without autograd) takes the CPU fast paths (:data:`CPU_FAST_PATHS`,
    not inside :func:`batched_paths`)."""
    return CPU_FAST_PATHS and t.device.type == "cpu" and not t.requires_grad and not getattr(_STATE, "batched", False)


# feature class -> module name in this package (imported lazily by the extractor)
CLASS_MODULES: dict[str, str] = {
    "firstorder": "firstorder",
    "shape2D": "shape2d",
    "glcm": "glcm",
    "glrlm": "glrlm",
    "glszm": "glszm",
    "gldm": "gldm",
    "ngtdm": "ngtdm",
}


def pad_batch(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 2-D pairs into ``(B, H, W)`` float64 / bool tensors, zero-padded to the largest size."""
    h = max(int(np.shape(im)[0]) for im in images)
    w = max(int(np.shape(im)[1]) for im in images)
    img = np.zeros((len(images), h, w), np.float64)
    msk = np.zeros((len(images), h, w), bool)
    for i, (im, m) in enumerate(zip(images, masks)):
        img[i, : im.shape[0], : im.shape[1]] = im
        msk[i, : m.shape[0], : m.shape[1]] = m
    return torch.from_numpy(img).to(device), torch.from_numpy(msk).to(device)


def roi_box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """Bounding box ``(r0, r1, c0, c1)`` (inclusive) of the union of a ``(B, H, W)`` batch's ROIs.

    ``None`` if no sample has an ROI pixel. Reduces a 1-byte view of the mask (``amax``): on
    CPU, ``any`` over a bool dimension is some 50x slower.
    """
    m = mask if mask.dtype == torch.uint8 else mask.to(torch.bool).view(torch.uint8)
    union = m.amax(dim=0)  # (H, W)
    rows = torch.nonzero(union.amax(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(union.amax(dim=0)).flatten()
    r0, r1, c0, c1 = torch.stack([rows[0], rows[-1], cols[0], cols[-1]]).tolist()
    return r0, r1, c0, c1


def flat_nonzero(x: torch.Tensor) -> torch.Tensor:
    """``torch.nonzero(x.reshape(-1)).flatten()``: ``(K,)`` int64 flat indices of the non-zero entries.

    CPU tensors go through ``numpy.flatnonzero`` (same result, ~4x faster than torch's CPU
    ``nonzero``); other devices use ``torch.nonzero``.
    """
    flat = x.reshape(-1)
    if flat.device.type == "cpu" and not flat.requires_grad:
        return torch.from_numpy(np.flatnonzero(flat.numpy()).astype(np.int64, copy=False))
    return torch.nonzero(flat).flatten()
