"""Gaze toolkit: data model, importers, fixation detection, heatmaps, similarity schemes,
relation matrices and saliency metrics.

- :mod:`~gazerad.gaze.record`: :class:`GazeRecord`, :class:`GazeCollection`.
- :mod:`~gazerad.gaze.importers`: REFLACX, EGD-CXR, McGIP CSV/JSON, generic CSV, EyeLink EDF
  (one module per format: ``reflacx``, ``egd_cxr``, ``mcgip``, ``generic_csv``, ``edf``;
  :mod:`~gazerad.gaze.formats` tells a file's format by its content).
- :mod:`~gazerad.gaze.fixations`: I-VT and I-DT fixation detection from raw samples.
- :mod:`~gazerad.gaze.heatmap`: duration-weighted Gaussian heatmaps, overlays; the MONAI
  transforms in :mod:`~gazerad.gaze.heatmap_transforms`.
- :mod:`~gazerad.gaze.similarity` (``similarity_heatmap``, ``similarity_scanpath``,
  ``similarity_core``), :mod:`~gazerad.gaze.multimatch` (``multimatch_scanpath``,
  ``multimatch_align``): the similarity schemes, registered by :mod:`~gazerad.gaze.schemes`.
- :mod:`~gazerad.gaze.store`: the server's gaze store and uploads.
- :mod:`~gazerad.gaze.relation`: the image-by-image relation matrix (McGIP/GzPT).
- :mod:`~gazerad.gaze.metrics`: CC, KL, NSS, AUC-Judd, SIM.
"""

from __future__ import annotations

import importlib
from typing import Any

from gazerad.gaze.base import SimilarityScheme, register_scheme
from gazerad.gaze.record import GazeCollection, GazeRecord

_LAZY = {
    "load_gaze": "importers",
    "load_reflacx": "importers",
    "load_egd_cxr": "importers",
    "load_mcgip_csv": "importers",
    "load_mcgip_json": "importers",
    "load_generic_csv": "importers",
    "load_edf": "importers",
    "detect_fixations": "fixations",
    "detect_fixations_ivt": "fixations",
    "detect_fixations_idt": "fixations",
    "record_from_samples": "fixations",
    "gaze_heatmap": "heatmap",
    "gaze_heatmaps": "heatmap",
    "save_heatmap_overlay": "heatmap",
    "Relation": "relation",
    "compute_relation": "relation",
    "compute_relation_distributed": "relation",
    "load_relation": "relation",
    "merge_relations": "relation",
    "get_scheme": "schemes",
    "available_schemes": "schemes",
}

__all__ = ["GazeCollection", "GazeRecord", "SimilarityScheme", "register_scheme", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"gazerad.gaze.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gazerad.gaze' has no attribute {name!r}")
