"""FocusContrast: predicted visual attention keeps lesions inside augmented views.

- :mod:`~gazerad.attention.model`: the attention predictor (MONAI ``BasicUNet``), its loss,
  training on gaze heatmaps with held-out saliency metrics, save/load, prediction at any
  image size and a per-image cache of predicted maps.
- :mod:`~gazerad.attention.crop`: the attention-aware random resized crop (array and
  dictionary transforms); without attention it is the plain random resized crop.
"""

from __future__ import annotations

from gazerad.attention.crop import (
    AttentionRandResizedCrop,
    AttentionRandResizedCropd,
    BoxMass,
    sample_resized_crop_box,
)
from gazerad.attention.model import (
    DEFAULT_FEATURES,
    AttentionCache,
    AttentionDataset,
    AttentionPredictor,
    PredictAttentiond,
    attention_loss,
    centre_prior,
    evaluate_attention,
    fit_centre_prior,
    load_attention_model,
    model_fingerprint,
    predict_attention,
    prepare_images,
    run_train_attention,
    save_attention_model,
    train_attention,
)

__all__ = [
    "AttentionRandResizedCrop",
    "AttentionRandResizedCropd",
    "BoxMass",
    "sample_resized_crop_box",
    "DEFAULT_FEATURES",
    "AttentionPredictor",
    "attention_loss",
    "prepare_images",
    "AttentionDataset",
    "centre_prior",
    "fit_centre_prior",
    "evaluate_attention",
    "train_attention",
    "save_attention_model",
    "load_attention_model",
    "model_fingerprint",
    "predict_attention",
    "AttentionCache",
    "PredictAttentiond",
    "run_train_attention",
]
