"""MONAI bundles of trained GazeRad models (:mod:`gazerad.bundle.export`) and the
transforms their ``inference.json`` runs (:mod:`gazerad.bundle.transforms`)."""

from gazerad._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "KINDS": "export",
        "export_bundle": "export",
        "bundle_model_file": "export",
        "is_bundle": "export",
        "ModelInputd": "transforms",
        "AttentionMapd": "transforms",
        "ClassProbabilitiesd": "transforms",
        "CAMBoxesd": "transforms",
        "SaveOutputd": "transforms",
    },
)
