"""Settings of an attention-predictor run (:func:`gazerad.attention.train_attention`, ``gazerad train-attention``, server jobs)."""

from __future__ import annotations

from dataclasses import dataclass

from gazerad.engine.config import RuntimeSettings, setting

__all__ = ["AttentionConfig", "DEFAULT_FEATURES"]

DEFAULT_FEATURES: tuple[int, ...] = (16, 16, 32, 64, 128, 16)  # BasicUNet features of the attention predictor


@dataclass
class AttentionConfig(RuntimeSettings):
    """Training the FocusContrast attention predictor on gaze heatmaps."""

    data: str = setting(help="study folder (images/, labels.csv with a split column, gaze), or an NIH / MIMIC-CXR(-JPG) root (--images is the same)")
    out: str = setting(help="output folder: attention.pt, metrics.json, curve.png, overlay.png")
    gaze: str | None = setting(None, "gaze data (REFLACX or EGD-CXR download, a main_data folder, a gaze file; default: the study folder's own)")
    epochs: int = setting(30, "epochs")
    batch_size: int = setting(8, "batch size")
    lr: float = setting(1e-3, "AdamW learning rate (cosine decay)")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    image_size: int = setting(128, "model input side, a multiple of 16")
    features: tuple[int, ...] = setting(DEFAULT_FEATURES, "BasicUNet features")
    w_kl: float = setting(1.0, "weight of the KL term")
    w_cc: float = setting(1.0, "weight of the (1 - CC) term")
    sigma_deg: float = setting(1.0, "gaze heatmap kernel in degrees of visual angle")
    n_overlay: int = setting(4, "held-out images shown in overlay.png")

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {self.epochs}, {self.batch_size}, {self.lr}")
        if self.image_size < 16 or self.image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {self.image_size}")
        self.features = tuple(int(f) for f in self.features)
