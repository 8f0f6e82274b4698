"""KACL: radiomics of the Grad-CAM region as the positive view (feedback-loop training).

- :mod:`~gazerad.kacl.config`: :class:`KACLConfig`; :mod:`~gazerad.kacl.model`: the
  classifier and radiomics encoders; :mod:`~gazerad.kacl.trainer`: :func:`train_kacl`;
  :mod:`~gazerad.kacl.evaluate`: AUC and T(IoU) localisation.
"""

from gazerad._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "KACLConfig": "config",
        "KACLModel": "model",
        "KACLProjectionHead": "model",
        "RadiomicsEncoder": "model",
        "cam_classes": "trainer",
        "evaluate_kacl": "evaluate",
        "load_kacl": "trainer",
        "localize_images": "evaluate",
        "refresh_radiomics": "trainer",
        "retune_boxes": "trainer",
        "train_kacl": "trainer",
    },
)
