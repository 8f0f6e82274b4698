"""Projection / prediction heads and momentum-encoder helpers.

- :class:`ProjectionHead`: MLP ``Linear-BN-ReLU ... Linear`` (MoCo v2 neck, BYOL projector).
- :class:`PredictionHead`: ``Linear-BN-ReLU-Linear`` (BYOL / SimSiam predictor).
- :func:`momentum_update`: EMA of parameters, buffers copied.
- :func:`cosine_schedule`: BYOL's momentum ramp (0.99 -> 1.0 cosine).
- :func:`copy_frozen`: the momentum / target copy of a module.

Head sizes in the authors' configs: MoCo neck 2048 -> 2048 -> 256; BYOL projector
2048 -> 4096 -> 256 and predictor 256 -> 4096 -> 256.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

__all__ = ["PredictionHead", "ProjectionHead", "copy_frozen", "cosine_schedule", "momentum_update"]


class ProjectionHead(nn.Module):
    """MLP projection head: ``num_layers - 1`` blocks ``Linear-BN-ReLU``, then ``Linear``.

    Maps ``(B, in_dim)`` to ``(B, out_dim)``. Linear layers followed by a batch norm have no
    bias (the BN's shift replaces it).

    Args:
        in_dim: input features (the backbone's ``F``).
        hidden_dim: width of the hidden layers.
        out_dim: embedding size.
        num_layers: number of ``Linear`` layers (>= 1; 1 is a single linear map).
        batch_norm: batch norm after each hidden ``Linear``.
        last_bn: batch norm (without affine parameters, as SimSiam and MoCo v3 use it)
            after the last ``Linear``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        batch_norm: bool = True,
        last_bn: bool = False,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if min(in_dim, hidden_dim, out_dim) < 1:
            raise ValueError(f"dimensions must be >= 1, got in={in_dim}, hidden={hidden_dim}, out={out_dim}")
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(d, hidden_dim, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            d = hidden_dim
        layers.append(nn.Linear(d, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim)`` -> ``(B, out_dim)``."""
        return self.layers(x)


class PredictionHead(nn.Module):
    """BYOL / SimSiam predictor ``Linear-BN-ReLU-Linear``: ``(B, in_dim)`` -> ``(B, out_dim)``."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, in_dim)`` -> ``(B, out_dim)``."""
        return self.layers(x)


@torch.no_grad()
def momentum_update(online: nn.Module, target: nn.Module, m: float) -> None:
    """EMA update ``target = m * target + (1 - m) * online`` of every parameter, in place.

    Buffers (batch-norm running statistics, counters) are copied from ``online``. The two
    modules must have the same structure (same parameter and buffer names and shapes).

    Args:
        online: the trained module.
        target: its momentum copy (e.g. from :func:`copy_frozen`).
        m: momentum in ``[0, 1]`` (1 keeps ``target``, 0 copies ``online``).
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m}")
    po, pt = dict(online.named_parameters()), dict(target.named_parameters())
    bo, bt = dict(online.named_buffers()), dict(target.named_buffers())
    if po.keys() != pt.keys() or bo.keys() != bt.keys():
        raise ValueError("online and target modules differ in structure (parameter or buffer names)")
    for name, p_t in pt.items():
        p_o = po[name]
        if p_o.shape != p_t.shape:
            raise ValueError(f"parameter {name!r}: online {tuple(p_o.shape)} vs target {tuple(p_t.shape)}")
        p_t.mul_(m).add_(p_o.detach().to(p_t.dtype), alpha=1.0 - m)
    for name, b_t in bt.items():
        b_t.copy_(bo[name])


def cosine_schedule(step: int, total: int, start: float, end: float) -> float:
    """Cosine ramp from ``start`` (``step = 0``) to ``end`` (``step >= total``).

    ``value = end - (end - start) * (1 + cos(pi * step / total)) / 2``; BYOL uses it for
    the target momentum, ``start = 0.99``, ``end = 1.0``. ``step`` is clamped to
    ``[0, total]``; ``total = 0`` gives ``end``.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if total == 0:
        return float(end)
    t = min(max(step, 0), total) / total
    return float(end - (end - start) * (1.0 + math.cos(math.pi * t)) / 2.0)


def copy_frozen(module: nn.Module) -> nn.Module:
    """Deep copy of ``module`` with ``requires_grad = False`` on every parameter.

    The copy keeps the original's train/eval mode (a BYOL target in train mode uses batch
    statistics like the online network).
    """
    out = copy.deepcopy(module)
    for p in out.parameters():
        p.requires_grad_(False)
    return out
