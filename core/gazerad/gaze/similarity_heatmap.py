"""Heatmap-based similarity schemes: ``moment``, ``dhash``, ``cc`` and ``kl``.

Each renders a record's fixations once on a coarse grid (:class:`~gazerad.gaze.similarity_core.Rendering`,
choices in the :mod:`~gazerad.gaze.similarity` docstring) and compares the heatmaps, or
features of them, between two chunks of records with array code. A record without heatmap
mass inside the image scores 0 against everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gazerad.gaze.base import SimilarityScheme, register_scheme
from gazerad.gaze.record import GazeRecord
from gazerad.gaze.similarity_core import Rendering, as_grid, dhash_bits, moment_features, rd, valid_pairs

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from gazerad.gaze.similarity_core import RenderingParams

__all__ = ["MomentScheme", "DHashScheme", "CCScheme", "KLScheme"]


def _flatten(h: np.ndarray) -> np.ndarray:
    """``(N, ...)`` heatmaps -> ``(N, pixels)`` float64."""
    h = np.asarray(h, dtype=np.float64)
    return h.reshape(len(h), int(np.prod(h.shape[1:])))


@register_scheme("moment")
class MomentScheme(Rendering, SimilarityScheme):
    """Moment similarity of heatmaps (McGIP): ``sim = 1 - (w1 rd(Hu1) + w2 rd(M00))``.

    Features per record: ``[M00, Hu1]`` of its heatmap rendered at 32 x 32 (``"area"``
    mode, see :mod:`gazerad.gaze.similarity`) and quantised to 8 bits
    (:func:`~gazerad.gaze.similarity_core.quantise_8bit`,
    :func:`~gazerad.gaze.similarity_core.moment_features`).

    Args:
        weights: ``(w1, w2)`` on ``rd(Hu1)`` and ``rd(M00)``; non-negative, summing to 1.
            0.5/0.5 (mammography, default) or 0.8/0.2 (dental) in the authors' configs.
        grid: heatmap grid (32).
        **rendering: ``preset`` (``"mcgip"``: the authors' maps), ``sigma``, ``sigma_deg``,
            ``sigma_frac``, ``image_size``, ``weight`` and the canvas options
            (:class:`~gazerad.gaze.similarity_core.Rendering`).
    """

    def __init__(
        self,
        weights: tuple[float, float] = (0.5, 0.5),
        grid: int | tuple[int, int] = 32,
        **rendering: Unpack[RenderingParams],
    ) -> None:
        w = (float(weights[0]), float(weights[1]))
        if min(w) < 0 or abs(sum(w) - 1.0) > 1e-9:
            raise ValueError(f"moment weights must be non-negative and sum to 1, got {weights}")
        self.weights = w
        self.grid = as_grid(grid)
        super().__init__(**rendering)

    def features(self, records: Sequence[GazeRecord]) -> np.ndarray:
        """``(N, 2)`` float64 ``[M00, Hu1]`` (``[0, NaN]`` for an empty record)."""
        if not len(records):
            return np.zeros((0, 2))
        m00, hu1 = moment_features(np.stack([self._levels(r, r.fixations, self.grid) for r in records]))
        return np.column_stack([m00, hu1])

    def block(self, fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        fa, fb = np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64)
        w1, w2 = self.weights
        s = 1.0 - (w1 * rd(fa[:, None, 1], fb[None, :, 1]) + w2 * rd(fa[:, None, 0], fb[None, :, 0]))
        return valid_pairs(s, fa[:, 0] > 0, fb[:, 0] > 0).reshape(len(fa), len(fb))


@register_scheme("dhash")
class DHashScheme(Rendering, SimilarityScheme):
    """Difference-hash similarity of heatmaps (McGIP): cosine of the two 64-bit vectors.

    Features per record: ``(65,)`` uint8, the 64 bits of :func:`~gazerad.gaze.similarity_core.dhash_bits` of its heatmap
    rendered directly at 8 rows x 9 columns (``"area"`` mode), then a flag (1 = non-empty:
    heatmap mass inside the image). ``sim = |a & b| / sqrt(|a| |b|)``; our rule for all-zero
    hashes (a flat map, or mass only at the right edge): two all-zero hashes give 1, one
    gives 0. With ``preset="mcgip"`` the bits are taken on the authors' 8-bit map (the
    800 px canvas floored to 8 bit, bilinear to 9 x 8, rounded), where empty regions are 0
    and equal neighbours give bit 0.

    Args: the rendering ones only, ``preset``, ``sigma``, ``sigma_deg``, ``sigma_frac``,
    ``image_size``, ``weight`` and the canvas options
    (:class:`~gazerad.gaze.similarity_core.Rendering`).
    """

    def features(self, records: Sequence[GazeRecord]) -> np.ndarray:
        heat, mass = self._heatmaps_mass(records, (8, 9))
        out = np.zeros((len(records), 65), dtype=np.uint8)
        if len(records):
            out[:, :64] = dhash_bits(heat)
            out[:, 64] = mass
        return out

    def block(self, fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        a = np.asarray(fa)[:, :64].astype(np.float64)
        b = np.asarray(fb)[:, :64].astype(np.float64)
        dot = a @ b.T
        na, nb = a.sum(1), b.sum(1)
        den = np.sqrt(na[:, None] * nb[None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.where(den > 0, dot / np.where(den > 0, den, 1.0), 0.0)
        s = np.where((na[:, None] == 0) & (nb[None, :] == 0), 1.0, s)
        return valid_pairs(s, np.asarray(fa)[:, 64] > 0, np.asarray(fb)[:, 64] > 0)


class _GridHeatmaps(Rendering):
    """Schemes whose features are the ``(N, *grid)`` float32 heatmaps themselves."""

    grid: tuple[int, int]

    def features(self, records: Sequence[GazeRecord]) -> np.ndarray:
        return self._heatmaps(records, self.grid)


@register_scheme("cc")
class CCScheme(_GridHeatmaps, SimilarityScheme):
    """Pearson correlation of heatmaps mapped to ``[0, 1]``: ``sim = (1 + CC) / 2`` (our mapping).

    Features: ``(N, g, g)`` float32 heatmaps at ``grid`` (32) in ``"area"`` mode. A flat
    (zero-variance) non-empty map has CC 0 with anything but another flat map (then 1).

    Args:
        grid: heatmap grid (32).
        **rendering: as :class:`MomentScheme`.
    """

    def __init__(self, grid: int | tuple[int, int] = 32, **rendering: Unpack[RenderingParams]) -> None:
        self.grid = as_grid(grid)
        super().__init__(**rendering)

    @staticmethod
    def _unit(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = _flatten(h)
        valid = x.sum(1) > 0
        z = x - x.mean(1, keepdims=True)
        n = np.sqrt((z * z).sum(1))
        flat = n <= 1e-12 * np.maximum(np.abs(x).max(1, initial=0.0), 1e-300)
        z = np.where(flat[:, None], 0.0, z / np.where(flat, 1.0, n)[:, None])
        return z, valid, flat

    def block(self, fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        za, va, flat_a = self._unit(fa)
        zb, vb, flat_b = self._unit(fb)
        c = np.clip(za @ zb.T, -1.0, 1.0)
        c = np.where(flat_a[:, None] & flat_b[None, :], 1.0, c)
        return valid_pairs(0.5 * (1.0 + c), va, vb)


@register_scheme("kl")
class KLScheme(_GridHeatmaps, SimilarityScheme):
    """Symmetric KL divergence of heatmaps mapped to ``sim = exp(-KL_sym / scale)`` (our mapping).

    With ``p, q`` the sum-1 heatmaps at ``grid`` (32, ``"area"`` mode) smoothed as
    ``p' = (p + eps) / (1 + n eps)`` (``n`` pixels; our regulariser, keeps KL finite),
    ``KL_sym = KL(p'||q') + KL(q'||p') = sum (p' - q') (log p' - log q')``.

    Args:
        grid: heatmap grid (32).
        eps: smoothing per pixel (1e-6).
        scale: divergence scale of the mapping (1.0).
        **rendering: as :class:`MomentScheme`.
    """

    def __init__(
        self,
        grid: int | tuple[int, int] = 32,
        eps: float = 1e-6,
        scale: float = 1.0,
        **rendering: Unpack[RenderingParams],
    ) -> None:
        if eps <= 0 or scale <= 0:
            raise ValueError("kl eps and scale must be positive")
        self.grid = as_grid(grid)
        self.eps = float(eps)
        self.scale = float(scale)
        super().__init__(**rendering)

    def _smooth(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = _flatten(h)
        s = x.sum(1)
        valid = s > 0
        p = x / np.where(valid, s, 1.0)[:, None]
        p = (p + self.eps) / (1.0 + x.shape[1] * self.eps)
        return p, np.log(p), valid

    def block(self, fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        pa, la, va = self._smooth(fa)
        pb, lb, vb = self._smooth(fb)
        ea = (pa * la).sum(1)
        eb = (pb * lb).sum(1)
        k = ea[:, None] + eb[None, :] - pa @ lb.T - la @ pb.T
        return valid_pairs(np.exp(-np.clip(k, 0.0, None) / self.scale), va, vb)
