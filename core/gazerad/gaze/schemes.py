"""The similarity schemes by name: importing this module registers every scheme
(:mod:`gazerad.gaze.similarity_heatmap`, :mod:`gazerad.gaze.similarity_scanpath`,
:mod:`gazerad.gaze.multimatch`); :mod:`gazerad.gaze.base` holds the registry and imports no
scheme module, so there is no import circle."""

from __future__ import annotations

from typing import Any

from gazerad.gaze import multimatch, similarity_heatmap, similarity_scanpath  # noqa: F401  (their @register_scheme classes fill the registry)
from gazerad.gaze.base import _REGISTRY, SimilarityScheme

__all__ = ["get_scheme", "available_schemes"]


def get_scheme(name: str, **params: Any) -> SimilarityScheme:
    """Instantiate a registered scheme by name (``moment``, ``dhash``, ``multimatch``, ``tima``,
    ``cc``, ``kl``, ``dtw``)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown similarity scheme {name!r}; available: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**params)


def available_schemes() -> list[str]:
    """Names of the registered schemes."""
    return sorted(_REGISTRY)
