"""Model inputs, named by the model and defined once: what training, evaluation and serving feed each network.

- :func:`encoder_input` / :func:`encoder_inputs`: every encoder (the pre-training frameworks'
  backbones, KACL and the classifiers): 0.5/99.5-percentile scaling to ``[0, 1]``, area resize.
- :func:`attention_input`: the attention predictor: min-max scaling, antialiased bilinear resize.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["encoder_input", "encoder_inputs", "attention_input"]


def encoder_input(img: np.ndarray, size: int) -> torch.Tensor:
    """The input of every encoder (pre-training, KACL, classifiers, serving): one ``(H, W)``
    X-ray -> ``(1, 1, size, size)`` float32, scaled to ``[0, 1]``
    by its 0.5/99.5 percentiles, area-resized (what training and serving both feed a model)."""
    lo, hi = np.percentile(img, [0.5, 99.5])
    x = np.clip((img - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    t = torch.from_numpy(x)[None, None]
    return F.interpolate(t, size=(size, size), mode="area") if t.shape[-2:] != (size, size) else t


def encoder_inputs(paths: Sequence[str | os.PathLike], size: int, progress: bool = False) -> torch.Tensor:
    """Encoder inputs of image files (:func:`encoder_input`): read X-rays, scale each to ``[0, 1]`` by its 0.5/99.5 percentiles and area-resize to
    ``size x size`` -> ``(N, 1, size, size)`` float32."""
    from tqdm.auto import tqdm

    from gazerad.io.xray import read_xray

    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not 8 <= size <= 4096:
        raise ValueError(f"image size must be an integer from 8 to 4096 pixels, got {size!r}")
    out = torch.empty(len(paths), 1, size, size)
    for i, p in enumerate(tqdm(paths, desc="loading images", disable=not progress, leave=False)):
        img, _ = read_xray(p)
        out[i] = encoder_input(img, size)[0]
    return out


def attention_input(images: torch.Tensor, size: int) -> torch.Tensor:
    """The attention predictor's input: ``(B, 1, H, W)`` radiographs -> ``(B, 1, size, size)`` float32.

    Each image is min-max scaled to ``[0, 1]`` (a constant image becomes 0), then resized
    with bilinear, antialiased interpolation.
    """
    x = images.float()
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    rng = (flat.max(1).values.view(-1, 1, 1, 1) - lo).clamp_min(1e-12)
    x = (x - lo) / rng
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)
