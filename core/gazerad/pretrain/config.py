"""Settings of a pre-training run (:func:`gazerad.pretrain.pretrain`, ``gazerad pretrain``, server jobs)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from gazerad.engine.config import RuntimeSettings, setting
from gazerad.engine.config import load_config as _load

__all__ = ["PretrainConfig", "load_config"]


@dataclass
class PretrainConfig(RuntimeSettings):
    """Everything a pre-training run needs (CLI flags and config-file keys have these names).

    Defaults follow the authors' configs where they exist (AdamW, cosine schedule with
    warm-up, MoCo tau 0.2, BYOL momentum 0.99 -> 1) scaled down to a CPU-sized run.
    """

    data: str = setting(help="study folder (labels.csv + images/), or an NIH ChestX-ray14 or MIMIC-CXR(-JPG) root (--images is the same)")
    out: str = setting(help="run folder (resumes from OUT/checkpoint.pt when present)")
    framework: str = setting("simclr", "contrastive framework", choices=("simclr", "moco", "byol", "simsiam"))
    backbone: str = setting("resnet18", "resnet18, resnet50, densenet121 or resnet10")
    image_size: int = setting(128, "view side in px")
    base_size: int | None = setting(None, "side of the in-memory image the views are cut from (default 2 x image_size, at most 512)")
    epochs: int = setting(20, "epochs")
    batch_size: int = setting(64, "global batch (all ranks)")
    lr: float = setting(1e-3, "AdamW learning rate (warm-up, then cosine decay)")
    weight_decay: float = setting(1e-6, "AdamW weight decay")
    betas: tuple[float, float] = setting((0.9, 0.95), "AdamW betas")
    warmup_epochs: int = setting(1, "linear learning-rate warm-up epochs")
    proj_dim: int = setting(128, "projection head output size")
    hidden_dim: int = setting(512, "projection head hidden size")
    temperature: float = setting(0.2, "SimCLR/MoCo softmax temperature")
    queue_size: int = setting(1024, "MoCo queue length")
    momentum: float | None = setting(None, "target-network momentum (default 0.999 MoCo, 0.99 BYOL)")
    crop_scale: tuple[float, float] = setting((0.2, 1.0), "random-resized-crop area range")
    relation: str | None = setting(None, "McGIP/GzPT: relation .npz from 'gazerad relation' (default with --gaze: its TIMA relation)")
    gaze: str | None = setting(None, "gaze data (REFLACX or EGD-CXR download, ...): pre-train on the images it covers; McGIP with its relation")
    threshold: float = setting(0.5, "relation value above which a pair is positive")
    drop_p: float = setting(0.0, "GzPT: drop each gaze positive with this probability")
    attention: str | None = setting(None, "FocusContrast: attention.pt from 'gazerad train-attention'")
    q: float = setting(0.5, "FocusContrast: attention mass a view keeps")
    splits: tuple[str, ...] = setting(("train",), "labels.csv splits to pre-train on")
    workers: int = setting(0, "data loader processes")

    def __post_init__(self) -> None:
        self.framework = self.framework.lower()
        if self.framework not in ("simclr", "moco", "byol", "simsiam"):
            raise ValueError(f"unknown framework {self.framework!r}; choose simclr, moco, byol or simsiam")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.drop_p <= 1.0:
            raise ValueError(f"drop_p must be in [0, 1], got {self.drop_p}")
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {self.q}")
        if self.epochs < 1 or self.batch_size < 2 or self.image_size < 16:
            raise ValueError("need epochs >= 1, batch_size >= 2 and image_size >= 16")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.crop_scale = tuple(self.crop_scale)  # type: ignore[assignment]
        self.splits = (self.splits,) if isinstance(self.splits, str) else tuple(self.splits)

    @property
    def method(self) -> str:
        """``plain``, ``focuscontrast``, ``mcgip``, ``gzpt`` or a ``+`` combination."""
        parts = []
        if self.attention:
            parts.append("focuscontrast")
        if self.relation or self.gaze:
            parts.append("gzpt" if self.drop_p > 0 else "mcgip")
        return "+".join(parts) or "plain"


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """A :class:`PretrainConfig` from a JSON/YAML file (keys at top level or under ``pretrain``)."""
    return _load(PretrainConfig, path, "pretrain", overrides)
