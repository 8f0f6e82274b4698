"""The attention predictor's loss: ``KL(target || softmax(logits)) + w_cc (1 - CC)``."""

from __future__ import annotations

import torch

__all__ = ["attention_loss"]


def attention_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    w_kl: float = 1.0,
    w_cc: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``w_kl KL(T || P) + w_cc (1 - CC(P, T))`` per image, ``P = softmax(logits)`` over pixels.

    Our choice (METHODS leaves the loss open): KL drives the predicted density towards the
    gaze density where readers looked; the CC term (Pearson correlation of the two maps)
    rewards getting the *shape* right everywhere and is scale-free.

    Args:
        logits: ``(B, 1, H, W)`` or ``(B, H, W)`` network output.
        target: same shape, non-negative; each map is normalised to sum 1 here.
        w_kl, w_cc: weights of the two terms.
        reduction: ``"mean"`` over the batch (a scalar) or ``"none"`` (``(B,)``).

    ``KL = sum_i T_i (log T_i - log P_i)`` (``0 log 0 = 0``) is 0 and ``CC`` is 1 exactly
    when ``P = T``, so a perfect prediction has loss 0.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits and target differ in shape: {tuple(logits.shape)} vs {tuple(target.shape)}")
    b = logits.shape[0]
    lg = logits.float().reshape(b, -1)
    t = target.float().reshape(b, -1).clamp_min(0)
    t = t / t.sum(1, keepdim=True).clamp_min(1e-12)
    logp = torch.log_softmax(lg, dim=1)
    kl = (torch.xlogy(t, t) - t * logp).sum(1)
    p = logp.exp()
    pc = p - p.mean(1, keepdim=True)
    tc = t - t.mean(1, keepdim=True)
    corr = (pc * tc).sum(1) / (pc.square().sum(1).sqrt() * tc.square().sum(1).sqrt()).clamp_min(1e-12)
    loss = w_kl * kl + w_cc * (1.0 - corr)
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
