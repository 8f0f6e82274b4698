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

from gazerad._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "AttentionCache": "cache",
        "load_attention_model": "checkpoint",
        "model_fingerprint": "checkpoint",
        "save_attention_model": "checkpoint",
        "AttentionConfig": "config",
        "AttentionRandResizedCrop": "crop",
        "AttentionRandResizedCropd": "crop",
        "BoxMass": "crop",
        "sample_resized_crop_box": "crop",
        "AttentionDataset": "data",
        "prepare_images": "data",
        "centre_prior": "evaluation",
        "evaluate_attention": "evaluation",
        "fit_centre_prior": "evaluation",
        "attention_loss": "loss",
        "DEFAULT_FEATURES": "network",
        "AttentionPredictor": "network",
        "predict_attention": "predict",
        "train_attention": "training",
        "PredictAttentiond": "transforms",
    },
)
