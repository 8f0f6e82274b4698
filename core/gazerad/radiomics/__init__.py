"""Radiomics for 2-D X-rays: a pyradiomics reference backend and a batched torch backend.

See :class:`RadiomicsExtractor`. Feature names follow pyradiomics (``<class>_<Feature>``).
"""

from .discretize import discretize
from .extractor import FeatureStandardizer, FeatureTable, RadiomicsExtractor, torch_features
from .names import CLASS_FEATURES, FEATURE_CLASSES, feature_names
from .reference import extract_pyradiomics, pyradiomics_features

__all__ = [
    "CLASS_FEATURES",
    "FEATURE_CLASSES",
    "FeatureStandardizer",
    "FeatureTable",
    "RadiomicsExtractor",
    "discretize",
    "extract_pyradiomics",
    "feature_names",
    "pyradiomics_features",
    "torch_features",
]
