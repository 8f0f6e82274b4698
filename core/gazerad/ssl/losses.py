"""Contrastive losses with extra (gaze-derived) positives: McGIP / GzPT.

Three losses, one per family of self-supervised frameworks. Each takes the usual
two-view inputs plus an optional boolean positive mask (from
:class:`gazerad.ssl.positives.GazePositives`); without a mask (or with an all-``False``
one) each reduces exactly to the framework's standard loss.

- :class:`MultiPositiveNTXentLoss`: SimCLR. **Our definition**: SimCLR is not in the
  McGIP/GzPT authors' code; we extend NT-Xent SupCon-style (Khosla et al. 2020, the
  "L_out" form: the mean over positives is taken *outside* the log).
- :class:`MoCoInfoNCELoss`: MoCo v2 with a queue; multi-positive InfoNCE normalised by the
  total count of positives in the batch, as the authors do.
- :class:`MaskedCosineLoss`: BYOL / SimSiam; negative mean cosine over positive pairs,
  stop-gradient on the target.

Memory is ``O(B^2)`` (NT-Xent, cosine) or ``O(B * K)`` (MoCo): similarities come from
matrix products of L2-normalised embeddings, never from ``(B, B, D)`` broadcasts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gazerad.engine.runtime import fp32

__all__ = ["MaskedCosineLoss", "MoCoInfoNCELoss", "MultiPositiveNTXentLoss"]


def _check_pair(a: Tensor, b: Tensor, names: tuple[str, str]) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must both be (B, D) with the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def _check_mask(mask: Tensor | None, shape: tuple[int, int], name: str, device: torch.device) -> Tensor | None:
    if mask is None:
        return None
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


class MultiPositiveNTXentLoss(nn.Module):
    """SimCLR's NT-Xent over ``2B`` embeddings with extra positives (SupCon-style).

    Our definition (SimCLR is not in the McGIP/GzPT code): the ``2B`` embeddings
    ``[z1; z2]`` are L2-normalised and compared by cosine / ``temperature``; each anchor's
    softmax runs over the other ``2B - 1`` embeddings (self-similarity excluded). The
    positives of anchor ``i`` (view 1; view 2 is symmetric) are

    - its other view ``i + B`` (always), and
    - for every ``j != i`` with ``pos_mask[i, j]``: both views ``j`` and ``j + B``.

    The loss of an anchor is ``-mean_{p in positives} log_softmax(sim)[p]``; the result
    is the mean over the ``2B`` anchors. With ``pos_mask`` ``None`` or all ``False`` this is
    exactly the standard NT-Xent. ``pos_mask`` need not be symmetric: row ``i`` is used for
    both views of anchor ``i``. Its diagonal is ignored.

    Args:
        temperature: softmax temperature ``tau > 0``.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    @fp32
    def forward(self, z1: Tensor, z2: Tensor, pos_mask: Tensor | None = None) -> Tensor:
        """Args:
            z1, z2: ``(B, D)`` embeddings of the two views (not necessarily normalised).
            pos_mask: optional ``(B, B)`` bool, extra positives between samples.

        Returns:
            Scalar loss.
        """
        _check_pair(z1, z2, ("z1", "z2"))
        b = z1.shape[0]
        device = z1.device
        extra = _check_mask(pos_mask, (b, b), "pos_mask", device)
        z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)  # (2B, D)
        logits = z @ z.T / self.temperature  # (2B, 2B)
        eye2 = torch.eye(2 * b, dtype=torch.bool, device=device)
        log_prob = torch.log_softmax(logits.masked_fill(eye2, float("-inf")), dim=1)

        eye = torch.eye(b, dtype=torch.bool, device=device)
        same = extra & ~eye if extra is not None else torch.zeros_like(eye)  # other samples, same view
        cross = same | eye  # the other view of j (j = i included: the augmented pair)
        pos = torch.cat([torch.cat([same, cross], dim=1), torch.cat([cross, same], dim=1)], dim=0)  # (2B, 2B)

        per_anchor = -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1) / pos.sum(1)
        return per_anchor.mean()


class MoCoInfoNCELoss(nn.Module):
    """MoCo v2 multi-positive InfoNCE (McGIP): ``-sum(log_softmax(z) * P) / sum(P)``.

    ``z = [q . k | q . queue^T] / tau`` has shape ``(B, 1 + K)`` and ``P = [1 | queue_mask]``.
    The normaliser is the total count of positives in the batch (the authors' choice),
    not a per-anchor mean: anchors with more gaze positives weigh more. With no
    ``queue_mask`` (or an all-``False`` one) this is the standard InfoNCE, i.e.
    ``cross_entropy(z, 0)``.

    ``q`` and ``k`` are L2-normalised here; ``queue`` is used as stored (keep it
    normalised: enqueue normalised keys). ``k`` and ``queue`` are detached (the key
    encoder gets no gradient in MoCo). Empty queue slots (``queue_valid`` ``False``) are
    masked to ``-inf`` so they leave the softmax denominator, and are never positives.

    Args:
        temperature: ``tau > 0``; 0.2 in all the authors' configs (0.07 is MoCo's).
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    @fp32
    def forward(
        self,
        q: Tensor,
        k: Tensor,
        queue: Tensor,
        queue_mask: Tensor | None = None,
        queue_valid: Tensor | None = None,
    ) -> Tensor:
        """Args:
            q: ``(B, D)`` queries (online encoder).
            k: ``(B, D)`` keys of the same images' other view (momentum encoder).
            queue: ``(K, D)`` stored keys (``K`` may be 0).
            queue_mask: optional ``(B, K)`` bool, gaze positives among the queue.
            queue_valid: optional ``(K,)`` bool, filled slots (e.g. ``bank.valid``).

        Returns:
            Scalar loss.
        """
        _check_pair(q, k, ("q", "k"))
        b, d = q.shape
        if queue.ndim != 2 or queue.shape[1] != d:
            raise ValueError(f"queue must be (K, {d}), got {tuple(queue.shape)}")
        n_q = queue.shape[0]
        device = q.device
        qmask = _check_mask(queue_mask, (b, n_q), "queue_mask", device)
        valid = None
        if queue_valid is not None:
            if tuple(queue_valid.shape) != (n_q,):
                raise ValueError(f"queue_valid must have shape ({n_q},), got {tuple(queue_valid.shape)}")
            valid = queue_valid.to(device=device, dtype=torch.bool)

        qn = F.normalize(q, dim=1)
        kn = F.normalize(k.detach(), dim=1)
        l_pos = (qn * kn).sum(dim=1, keepdim=True)  # (B, 1)
        l_neg = qn @ queue.detach().to(dtype=qn.dtype, device=device).T  # (B, K)
        if valid is not None:
            l_neg = l_neg.masked_fill(~valid[None, :], float("-inf"))
        logits = torch.cat([l_pos, l_neg], dim=1) / self.temperature
        log_prob = torch.log_softmax(logits, dim=1)

        pos = torch.zeros(b, 1 + n_q, dtype=torch.bool, device=device)
        pos[:, 0] = True
        if qmask is not None:
            pos[:, 1:] = qmask if valid is None else qmask & valid[None, :]
        return -torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum() / pos.sum()


class MaskedCosineLoss(nn.Module):
    """BYOL / SimSiam loss with extra positives: ``-sum_ij P_ij cos(p_i, z_j) / sum_ij P_ij``.

    ``P = I | pos_mask`` (the augmented pair is always positive). ``z`` is detached here
    (stop-gradient on the target branch). Returns the *negative mean cosine*, in
    ``[-1, 1]``; BYOL's usual ``2 - 2 cos`` form equals ``2 + 2 * loss`` (same gradients up
    to a factor 2). One call is one direction ``L(a -> b)``; the symmetrised BYOL / SimSiam
    loss is the caller's sum ``loss(p_a, z_b, M) + loss(p_b, z_a, M)`` (SimSiam halves it).

    The ``(B, B)`` cosine matrix comes from one product of normalised embeddings.
    """

    @fp32
    def forward(self, p: Tensor, z: Tensor, pos_mask: Tensor | None = None) -> Tensor:
        """Args:
            p: ``(B, D)`` online predictions.
            z: ``(B, D)`` target projections (detached inside).
            pos_mask: optional ``(B, B)`` bool, extra positives (diagonal implied).

        Returns:
            Scalar loss.
        """
        _check_pair(p, z, ("p", "z"))
        b = p.shape[0]
        extra = _check_mask(pos_mask, (b, b), "pos_mask", p.device)
        cos = F.normalize(p, dim=1) @ F.normalize(z.detach(), dim=1).T  # (B, B)
        pos = torch.eye(b, dtype=torch.bool, device=p.device)
        if extra is not None:
            pos = pos | extra
        return -torch.where(pos, cos, torch.zeros_like(cos)).sum() / pos.sum()
