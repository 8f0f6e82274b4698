"""SimCLR, MoCo v2, BYOL and SimSiam as one module each, built from :mod:`gazerad.ssl` parts.

Every framework is an ``nn.Module`` whose ``forward(view1, view2, index, positives)``
returns the scalar loss of one step, so a user can drop it into their own loop, and
``after_step(step, total)`` does what happens between steps (momentum updates). The
McGIP/GzPT gaze positives come in through ``positives`` (a
:class:`gazerad.ssl.GazePositives`), the dataset row indices through ``index``.

Under ``torch.distributed`` SimCLR, BYOL and SimSiam gather their embeddings across ranks
(predictions with gradients, targets without) so the loss is the global-batch loss; MoCo
gathers its keys into the queue.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gazerad.ssl import (
    GazePositives,
    MaskedCosineLoss,
    MemoryBankWithIndices,
    MoCoInfoNCELoss,
    MultiPositiveNTXentLoss,
    PredictionHead,
    ProjectionHead,
    build_backbone,
    concat_all_gather,
    copy_frozen,
    cosine_schedule,
    momentum_update,
)

__all__ = ["FRAMEWORKS", "build_framework", "SimCLR", "MoCo", "BYOL", "SimSiam"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` over ranks keeping gradients (identity when not distributed).

    ``torch.distributed.nn.all_gather`` sums the gradients of every rank's copy back to the
    owner in its backward, so with DDP's gradient averaging the parameter gradient equals
    the single-process gradient of the global-batch loss.
    """
    if not _distributed():
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t.contiguous()), 0)


class _Base(nn.Module):
    name = "base"

    def __init__(self, backbone: str = "resnet18", proj_dim: int = 128, hidden_dim: int = 512, in_channels: int = 1) -> None:
        super().__init__()
        self.backbone, self.feature_dim = build_backbone(backbone, in_channels=in_channels)
        self.projector = ProjectionHead(self.feature_dim, hidden_dim, proj_dim)
        self.proj_dim = int(proj_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> ``(B, F)`` backbone features (what evaluation uses)."""
        return self.backbone(x)

    def after_step(self, step: int, total: int) -> None:
        """Called after each optimiser step (momentum updates)."""


class SimCLR(_Base):
    """SimCLR with the multi-positive (SupCon-style) NT-Xent; gaze positives from ``positives``."""

    name = "simclr"

    def __init__(self, temperature: float = 0.2, **kw: Any) -> None:
        super().__init__(**kw)
        self.criterion = MultiPositiveNTXentLoss(temperature)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, idx: torch.Tensor, positives: GazePositives | None = None) -> torch.Tensor:
        z1 = gather_with_grad(self.projector(self.backbone(v1)))
        z2 = gather_with_grad(self.projector(self.backbone(v2)))
        idx = concat_all_gather(idx)
        mask = None if positives is None else positives.batch_mask(idx)
        return self.criterion(z1, z2, mask)


class MoCo(_Base):
    """MoCo v2: momentum key encoder and a queue of keys with their dataset indices.

    Positives of a query: its key, plus queued keys whose dataset index is gaze-related
    (McGIP's ``P = [1 | M]``). No shuffle-BN (our choice; MoCo v2 on one device works without).
    """

    name = "moco"

    def __init__(self, temperature: float = 0.2, queue_size: int = 4096, momentum: float = 0.999, **kw: Any) -> None:
        super().__init__(**kw)
        self.key_backbone = copy_frozen(self.backbone)
        self.key_projector = copy_frozen(self.projector)
        self.queue = MemoryBankWithIndices(queue_size, self.proj_dim)
        self.criterion = MoCoInfoNCELoss(temperature)
        self.momentum = float(momentum)

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, idx: torch.Tensor, positives: GazePositives | None = None) -> torch.Tensor:
        q = self.projector(self.backbone(v1))
        with torch.no_grad():
            k = nn.functional.normalize(self.key_projector(self.key_backbone(v2)), dim=1)
        keys, qidx = self.queue.keys.clone().detach(), self.queue.indices.clone()
        valid = qidx >= 0
        mask = None if positives is None else positives.queue_mask(idx, qidx)
        loss = self.criterion(q, k, keys, mask, valid)
        self.queue.enqueue(k.detach(), idx)
        return loss

    def after_step(self, step: int, total: int) -> None:
        momentum_update(self.backbone, self.key_backbone, self.momentum)
        momentum_update(self.projector, self.key_projector, self.momentum)


class BYOL(_Base):
    """BYOL: online encoder + projector + predictor, momentum target (0.99 -> 1 cosine).

    Loss: masked negative cosine in both directions (view 1 predicts view 2's target and
    back); gaze positives pull predictions towards related images' targets as well.
    """

    name = "byol"

    def __init__(self, momentum: float = 0.99, pred_hidden: int | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        out = self.proj_dim
        self.predictor = PredictionHead(out, pred_hidden or max(2 * out, 64), out)
        self.target_backbone = copy_frozen(self.backbone)
        self.target_projector = copy_frozen(self.projector)
        self.base_momentum = float(momentum)
        self.criterion = MaskedCosineLoss()

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, idx: torch.Tensor, positives: GazePositives | None = None) -> torch.Tensor:
        p1 = self.predictor(self.projector(self.backbone(v1)))
        p2 = self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(v1))
            t2 = self.target_projector(self.target_backbone(v2))
        return self._loss(p1, p2, t1, t2, idx, positives)

    def _loss(self, p1, p2, t1, t2, idx, positives) -> torch.Tensor:  # noqa: ANN001
        # the whole global batch on every rank (predictions keep their gradients), so gaze
        # positives reach across ranks and the gradient equals the single-process one
        p1, p2 = gather_with_grad(p1), gather_with_grad(p2)
        t1, t2, idx = concat_all_gather(t1), concat_all_gather(t2), concat_all_gather(idx)
        mask = None if positives is None else positives.batch_mask(idx)
        return self.criterion(p1, t2, mask) + self.criterion(p2, t1, mask)

    def after_step(self, step: int, total: int) -> None:
        m = cosine_schedule(step, total, self.base_momentum, 1.0)
        momentum_update(self.backbone, self.target_backbone, m)
        momentum_update(self.projector, self.target_projector, m)


class SimSiam(BYOL):
    """SimSiam: BYOL without the momentum target (the target is the online projection with
    stop-gradient)."""

    name = "simsiam"

    def __init__(self, **kw: Any) -> None:
        kw.pop("momentum", None)
        _Base.__init__(self, **{k: v for k, v in kw.items() if k != "pred_hidden"})
        out = self.proj_dim
        self.predictor = PredictionHead(out, kw.get("pred_hidden") or max(out // 2, 32), out)
        self.criterion = MaskedCosineLoss()

    def forward(self, v1: torch.Tensor, v2: torch.Tensor, idx: torch.Tensor, positives: GazePositives | None = None) -> torch.Tensor:
        z1 = self.projector(self.backbone(v1))
        z2 = self.projector(self.backbone(v2))
        return self._loss(self.predictor(z1), self.predictor(z2), z1.detach(), z2.detach(), idx, positives)

    def after_step(self, step: int, total: int) -> None:
        pass


FRAMEWORKS: dict[str, type[_Base]] = {c.name: c for c in (SimCLR, MoCo, BYOL, SimSiam)}


def build_framework(name: str, **kw: Any) -> _Base:
    """``simclr | moco | byol | simsiam`` with keyword options (unknown ones raise ``TypeError``)."""
    try:
        cls = FRAMEWORKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown framework {name!r}; choose one of {sorted(FRAMEWORKS)}") from None
    return cls(**kw)
