"""FocusContrast's visual-attention predictor: a small U-Net trained on gaze heatmaps.

METHODS (section 2) leaves the predictor's architecture and loss open; our choices:

- **Network**: MONAI's ``BasicUNet`` (2-D, 1 input channel, 1 output channel, small
  ``features``) giving logits ``(B, 1, S, S)`` at a square input side ``S``
  (``input_size``, a multiple of 16); the attention map is the softmax of the logits over
  all pixels, so each map sums to 1.
- **Input**: the radiograph min-max scaled to ``[0, 1]`` per image and resized to
  ``S x S`` (bilinear, antialiased; the aspect ratio is not kept, as the heatmap grid is
  stretched the same way).
- **Target**: the mean over readers of each reader's duration-weighted gaze heatmap
  (``sigma = 1`` degree, REFLACX's rule, :func:`~gazerad.gaze.heatmap.gaze_heatmap`)
  rendered directly on the ``S x S`` grid (``mode="area"``), normalised to sum 1.
- **Loss** (:func:`attention_loss`): ``KL(target || softmax(logits)) + w_cc (1 - CC)``.
- **Split**: ``labels.csv``'s ``split`` column: ``train`` trains; every other value
  (``validate``, ``test``) is held out. Without that column, a fixed hash of the image id
  holds out 20 % (our fallback). The model saved is the one after the last epoch (no
  selection on held-out data).
- **Evaluation** on held-out images: CC and KL against the target heatmap, NSS and AUC-Judd
  against the fixated pixels of all held-out readers (fixations scaled to ``S x S``), with
  :mod:`gazerad.gaze.metrics`. The reference is a **centre prior**: a Gaussian centred on
  the image whose per-axis sigma is fitted to the spread of the training heatmaps about
  the centre.

Files written by :func:`train_attention`: ``attention.pt`` (state dict, config, metrics),
``metrics.json``, ``curve.png``, ``overlay.png``.

The code lives in one module per job (``network``, ``loss``, ``data``, ``evaluation``,
``training``, ``plots``, ``checkpoint``, ``predict``, ``cache``, ``transforms``); this module
keeps the names importable from ``gazerad.attention.model``.
"""

from __future__ import annotations

from gazerad.attention.cache import AttentionCache
from gazerad.attention.checkpoint import load_attention_model, model_fingerprint, save_attention_model
from gazerad.attention.data import AttentionDataset, prepare_images, read_splits
from gazerad.attention.evaluation import centre_prior, evaluate_attention, fit_centre_prior, saliency_scores
from gazerad.attention.loss import attention_loss
from gazerad.attention.network import DEFAULT_FEATURES, AttentionPredictor
from gazerad.attention.predict import predict_attention
from gazerad.attention.training import train_attention
from gazerad.attention.transforms import PredictAttentiond

__all__ = [
    "DEFAULT_FEATURES",
    "AttentionPredictor",
    "attention_loss",
    "prepare_images",
    "read_splits",
    "AttentionDataset",
    "centre_prior",
    "fit_centre_prior",
    "saliency_scores",
    "evaluate_attention",
    "train_attention",
    "save_attention_model",
    "load_attention_model",
    "model_fingerprint",
    "predict_attention",
    "AttentionCache",
    "PredictAttentiond",
]
