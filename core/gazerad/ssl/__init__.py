"""Self-supervised building blocks for McGIP / GzPT pre-training.

- :mod:`~gazerad.ssl.losses`: :class:`MultiPositiveNTXentLoss` (SimCLR, our SupCon-style
  extension), :class:`MoCoInfoNCELoss` (MoCo v2), :class:`MaskedCosineLoss` (BYOL / SimSiam).
- :mod:`~gazerad.ssl.heads`: :class:`ProjectionHead`, :class:`PredictionHead`,
  :func:`momentum_update`, :func:`cosine_schedule`, :func:`copy_frozen`.
- :mod:`~gazerad.ssl.memory`: :class:`MemoryBankWithIndices`, :func:`concat_all_gather`.
- :mod:`~gazerad.ssl.positives`: :class:`GazePositives` (relation -> batch / queue masks).
- :mod:`~gazerad.ssl.backbones`: :func:`build_backbone` (MONAI ResNet / DenseNet encoders).

Names are imported on first use, so ``import gazerad.ssl`` stays cheap (no torch/MONAI).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MultiPositiveNTXentLoss": "losses",
    "MoCoInfoNCELoss": "losses",
    "MaskedCosineLoss": "losses",
    "ProjectionHead": "heads",
    "PredictionHead": "heads",
    "momentum_update": "heads",
    "cosine_schedule": "heads",
    "copy_frozen": "heads",
    "MemoryBankWithIndices": "memory",
    "concat_all_gather": "memory",
    "GazePositives": "positives",
    "BACKBONES": "backbones",
    "DenseNetFeatures": "backbones",
    "build_backbone": "backbones",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"gazerad.ssl.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gazerad.ssl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
