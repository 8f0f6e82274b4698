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

from gazerad._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
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
    },
)
