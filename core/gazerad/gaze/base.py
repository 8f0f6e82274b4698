"""The interface every gaze-similarity scheme implements, and the scheme registry.

A scheme turns each record into compact *features* once (a heatmap, moments, a hash, a
cluster sequence, a simplified scanpath), then compares two chunks of features at a time.
That split is what lets :mod:`gazerad.gaze.relation` build an N x N relation matrix
blockwise, in parallel and in bounded memory.

Contract (tested for every scheme): values in ``[0, 1]``; ``similarity(a, a) == 1`` for a
non-empty record; symmetric; ``block(fa, fb)[i, j] == similarity(a_i, b_j)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gazerad.gaze.record import GazeRecord

__all__ = ["SimilarityScheme", "register_scheme"]

_REGISTRY: dict[str, Callable[..., SimilarityScheme]] = {}


class SimilarityScheme(ABC):
    """Base class of gaze-similarity schemes.

    Subclasses set ``name``, implement :meth:`features` and :meth:`block`, and expose
    their parameters as constructor arguments (recorded by :meth:`params` for caching).
    """

    name: str = ""

    @abstractmethod
    def features(self, records: Sequence[GazeRecord]) -> Any:
        """Per-record features for a list of records (an array or a list, indexable by record)."""

    @abstractmethod
    def block(self, fa: Any, fb: Any) -> np.ndarray:
        """``(len(fa), len(fb))`` float similarity matrix between two feature chunks."""

    def take(self, feats: Any, index: Sequence[int] | slice) -> Any:
        """Select records from features (arrays and lists supported; override otherwise)."""
        if isinstance(feats, np.ndarray):
            return feats[index]
        if isinstance(index, slice):
            return feats[index]
        return [feats[i] for i in index]

    def similarity(self, a: GazeRecord, b: GazeRecord) -> float:
        """Similarity of two records in ``[0, 1]``."""
        return float(self.block(self.features([a]), self.features([b]))[0, 0])

    def matrix(self, records: Sequence[GazeRecord]) -> np.ndarray:
        """Dense ``(N, N)`` similarity of all pairs (symmetrised, unit diagonal)."""
        f = self.features(records)
        m = np.asarray(self.block(f, f), dtype=np.float64)
        m = 0.5 * (m + m.T)
        np.fill_diagonal(m, 1.0)
        return np.clip(m, 0.0, 1.0)

    def params(self) -> dict[str, Any]:
        """Parameters that change the result (used in cache keys)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def register_scheme(name: str) -> Callable[[type[SimilarityScheme]], type[SimilarityScheme]]:
    """Class decorator adding a scheme to the registry under ``name``."""

    def deco(cls: type[SimilarityScheme]) -> type[SimilarityScheme]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco
