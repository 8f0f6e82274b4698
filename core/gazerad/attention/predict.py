"""Attention maps for X-rays of any size from a trained predictor."""

from __future__ import annotations

import numpy as np
import torch

from gazerad.attention.data import _resize_maps
from gazerad.attention.network import AttentionPredictor
from gazerad.data.inputs import attention_input

__all__ = ["predict_attention"]


def _as_batch(images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, int]:
    t = images.as_tensor() if hasattr(images, "as_tensor") else torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    nd = t.ndim
    if nd == 2:
        t = t[None, None]
    elif nd == 3 and t.shape[0] == 1:
        t = t[None]
    elif not (nd == 4 and t.shape[1] == 1):
        raise ValueError(f"images must be (H, W), (1, H, W) or (B, 1, H, W), got shape {tuple(t.shape)}")
    return t, nd


@torch.no_grad()
def _model_maps(model: AttentionPredictor, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(B, 1, H, W)`` raw images -> ``(B, 1, S, S)`` maps on the CPU (eval mode, restored)."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        outs = [model.predict(attention_input(batch[i : i + batch_size].to(dev), model.input_size)).cpu() for i in range(0, len(batch), batch_size)]
    finally:
        model.train(was)
    return torch.cat(outs) if outs else torch.zeros((0, 1, model.input_size, model.input_size))


def predict_attention(model: AttentionPredictor, images: np.ndarray | torch.Tensor, batch_size: int = 32) -> np.ndarray | torch.Tensor:
    """Predicted attention at the images' own size.

    Images (any intensity range) are min-max scaled, resized to the model's side, run,
    and the ``S x S`` maps resized back (bilinear) and renormalised.

    Args:
        model: a trained :class:`AttentionPredictor`.
        images: ``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)`` array or tensor.
        batch_size: images per forward pass.

    Returns:
        Maps of the input's shape, float32, each summing to 1: a numpy array for a numpy
        input, else a tensor on the input's device.
    """
    t, nd = _as_batch(images)
    maps = _resize_maps(_model_maps(model, t, batch_size), tuple(t.shape[-2:]))
    out = maps.reshape(maps.shape[-2:]) if nd == 2 else (maps[0] if nd == 3 else maps)
    if isinstance(images, torch.Tensor):
        return out.to(images.device)
    return out.numpy().astype(np.float32)
