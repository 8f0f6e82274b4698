"""Gaze-guided contrastive pre-training (McGIP / GzPT / FocusContrast) and its evaluation.

- :mod:`~gazerad.pretrain.data`: study tables, in-memory images, the two-view dataset.
- :mod:`~gazerad.pretrain.frameworks`: SimCLR, MoCo v2, BYOL, SimSiam modules.
- :mod:`~gazerad.pretrain.config`: :class:`PretrainConfig`, config files.
- :mod:`~gazerad.pretrain.trainer`: :func:`pretrain`.
- :mod:`~gazerad.pretrain.evaluate`: linear probe, k-NN and fine-tune evaluation.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "PretrainConfig": "config",
    "pretrain": "trainer",
    "load_config": "config",
    "load_encoder": "trainer",
    "build_framework": "frameworks",
    "TwoViewDataset": "data",
    "read_study_table": "data",
    "evaluate_encoder": "evaluate",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"gazerad.pretrain.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gazerad.pretrain' has no attribute {name!r}")
