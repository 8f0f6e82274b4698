"""Batched, vectorised 2-D radiomics in torch (CPU and CUDA), matching pyradiomics.

One module per feature class. Each exposes::

    features(image, mask, levels, spacing) -> Tensor (B, F)

with ``image`` ``(B, H, W)`` float64, ``mask`` ``(B, H, W)`` bool, ``levels`` ``(B, H, W)``
int64 from :func:`gazerad.radiomics.discretize.discretize` (1..Ng in the ROI, 0 outside),
``spacing`` the pixel spacing ``(row, col)``; columns in
:data:`gazerad.radiomics.names.CLASS_FEATURES` order. Samples of different sizes share a
batch by zero-padding (``pad_batch``): padding lies outside every ROI, so it changes
nothing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["pad_batch", "CLASS_MODULES"]

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


def pad_batch(
    images: Sequence[np.ndarray], masks: Sequence[np.ndarray], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack 2-D pairs into ``(B, H, W)`` float64 / bool tensors, zero-padded to the largest size."""
    h = max(int(np.shape(im)[0]) for im in images)
    w = max(int(np.shape(im)[1]) for im in images)
    img = np.zeros((len(images), h, w), np.float64)
    msk = np.zeros((len(images), h, w), bool)
    for i, (im, m) in enumerate(zip(images, masks)):
        img[i, : im.shape[0], : im.shape[1]] = im
        msk[i, : m.shape[0], : m.shape[1]] = m
    return torch.from_numpy(img).to(device), torch.from_numpy(msk).to(device)
