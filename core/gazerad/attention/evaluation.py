"""Held-out evaluation of the attention predictor: saliency metrics against gaze and the centre-prior baseline."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch

from gazerad.attention.data import AttentionDataset
from gazerad.attention.loss import attention_loss
from gazerad.attention.network import AttentionPredictor, _device
from gazerad.engine.runtime import Runtime

__all__ = ["centre_prior", "fit_centre_prior", "saliency_scores", "evaluate_attention"]


def centre_prior(shape: tuple[int, int], sigma_xy: tuple[float, float]) -> np.ndarray:
    """``(H, W)`` float32 Gaussian centred on the image, per-axis sigma in pixels, sum 1."""
    h, w = int(shape[0]), int(shape[1])
    sx, sy = max(float(sigma_xy[0]), 1e-6), max(float(sigma_xy[1]), 1e-6)
    gy = np.exp(-0.5 * ((np.arange(h) + 0.5 - h / 2) / sy) ** 2)
    gx = np.exp(-0.5 * ((np.arange(w) + 0.5 - w / 2) / sx) ** 2)
    m = np.outer(gy, gx)
    m /= m.sum()
    return m.astype(np.float32)


def fit_centre_prior(targets: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Per-axis sigma ``(sx, sy)`` (pixels) of a centred Gaussian matching the spread of the
    mean of ``targets`` ``(N, [1,] H, W)`` about the image centre (second moments)."""
    t = np.asarray(targets.numpy() if isinstance(targets, torch.Tensor) else targets, dtype=np.float64)
    m = t.reshape(-1, *t.shape[-2:]).mean(0)
    m = m / m.sum()
    h, w = m.shape
    dy = np.arange(h) + 0.5 - h / 2
    dx = np.arange(w) + 0.5 - w / 2
    sy = math.sqrt(float((m.sum(1) * dy**2).sum()))
    sx = math.sqrt(float((m.sum(0) * dx**2).sum()))
    return (sx, sy)


def saliency_scores(pred: np.ndarray, target: np.ndarray, fixmap: np.ndarray) -> dict[str, float]:
    """Mean CC, KL, NSS, AUC-Judd, SIM over images (NaN-aware).

    Args:
        pred: ``(N, H, W)`` predicted maps.
        target: ``(N, H, W)`` gaze heatmaps (CC, KL, SIM).
        fixmap: ``(N, H, W)`` fixated pixels (NSS, AUC-Judd).
    """
    from gazerad.gaze import metrics as M

    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    f = np.asarray(fixmap) > 0
    with np.errstate(all="ignore"), _nan_ok():
        out = {
            "cc": float(np.nanmean(M.cc(p, g))),
            "kl": float(np.nanmean(M.kl(p, g))),
            "nss": float(np.nanmean(M.nss(p, f))),
            "auc_judd": float(np.nanmean(M.auc_judd(p, f))),
            "sim": float(np.nanmean(M.sim(p, g))),
        }
    return out


@contextlib.contextmanager
def _nan_ok() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@torch.no_grad()
def _predict_dataset(
    model: AttentionPredictor, ds: AttentionDataset, batch_size: int, device: torch.device, rt: Runtime | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out maps ``(N, S, S)`` and per-image losses ``(N,)`` (float32 unless ``rt`` says otherwise)."""
    rt = rt or Runtime.fp32_reference(device)
    was = model.training
    model.eval()
    maps, losses = [], []
    try:
        for i in range(0, len(ds), batch_size):
            x = rt.batch(ds.images[i : i + batch_size])
            t = ds.targets[i : i + batch_size].to(device)
            with rt.autocast():
                logits = model(x)
            logits = logits.float()
            losses.append(attention_loss(logits, t, reduction="none").cpu())
            b = logits.shape[0]
            maps.append(torch.softmax(logits.reshape(b, -1), 1).reshape(logits.shape)[:, 0].cpu())
    finally:
        model.train(was)
    if not maps:
        s = ds.input_size
        return np.zeros((0, s, s), np.float32), np.zeros(0)
    return torch.cat(maps).numpy(), torch.cat(losses).numpy().astype(np.float64)


def evaluate_attention(
    model: AttentionPredictor,
    dataset: AttentionDataset,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Loss and saliency metrics (:func:`saliency_scores`) of ``model`` on ``dataset``."""
    dev = next(model.parameters()).device if device is None else _device(device)
    maps, losses = _predict_dataset(model.to(dev), dataset, batch_size, dev)
    out = {"loss": float(losses.mean()) if len(losses) else float("nan"), "n": len(dataset)}
    out.update(saliency_scores(maps, dataset.targets[:, 0].numpy(), dataset.fixmaps[:, 0].numpy()))
    return out
