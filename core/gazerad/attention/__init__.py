"""FocusContrast: predicted visual attention keeps lesions inside augmented views.

- the attention predictor, one module per job: :mod:`~gazerad.attention.network` (MONAI
  ``BasicUNet``), :mod:`~gazerad.attention.loss`, :mod:`~gazerad.attention.data` (study
  folder -> images and gaze-heatmap targets), :mod:`~gazerad.attention.evaluation`
  (held-out saliency metrics, centre prior), :mod:`~gazerad.attention.training`,
  :mod:`~gazerad.attention.plots`, :mod:`~gazerad.attention.checkpoint` (``attention.pt``),
  :mod:`~gazerad.attention.predict` (maps at any image size), :mod:`~gazerad.attention.cache`
  and :mod:`~gazerad.attention.transforms` (``PredictAttentiond``);
  :mod:`~gazerad.attention.model` re-exports them.
- :mod:`~gazerad.attention.crop`: the attention-aware random resized crop (array and
  dictionary transforms); without attention it is the plain random resized crop.
"""

from __future__ import annotations

from gazerad.attention.cache import AttentionCache
from gazerad.attention.checkpoint import load_attention_model, model_fingerprint, save_attention_model
from gazerad.attention.config import AttentionConfig
from gazerad.attention.crop import (
    AttentionRandResizedCrop,
    AttentionRandResizedCropd,
    BoxMass,
    sample_resized_crop_box,
)
from gazerad.attention.data import AttentionDataset, prepare_images
from gazerad.attention.evaluation import centre_prior, evaluate_attention, fit_centre_prior
from gazerad.attention.loss import attention_loss
from gazerad.attention.network import DEFAULT_FEATURES, AttentionPredictor
from gazerad.attention.predict import predict_attention
from gazerad.attention.training import train_attention
from gazerad.attention.transforms import PredictAttentiond

__all__ = [
    "AttentionConfig",
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
]
