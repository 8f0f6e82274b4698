"""Building blocks of the gaze-similarity schemes (:mod:`gazerad.gaze.similarity`).

The measures themselves (:func:`rd`, :func:`quantise_8bit`, :func:`moment_features`,
:func:`dhash_bits`, the reference :func:`dtw_path_cost` and :func:`tima_distance`) and what
the scheme classes share: the heatmap rendering (:class:`Rendering`, the choices listed in
the :mod:`~gazerad.gaze.similarity` docstring), grid parsing and the diagonal-block test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

from gazerad.gaze.heatmap import gaze_heatmap, record_shape, resize_area, resolve_sigma
from gazerad.gaze.record import GazeRecord

__all__ = ["rd", "quantise_8bit", "moment_features", "dhash_bits", "dtw_path_cost", "tima_distance", "Rendering", "RenderingParams"]


def rd(a: Any, b: Any) -> Any:
    """Relative difference ``|a - b| / |max(a, b)|`` (METHODS), elementwise with broadcasting.

    ``rd = 0`` when ``a == b`` (this takes precedence, so ``rd(0, 0) = 0``); ``rd = 1`` when
    either is NaN or ``max(a, b) == 0``. Returns a float for scalar input.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mx = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.abs(a - b) / np.abs(mx)
    r = np.where(np.isnan(r) | (mx == 0), 1.0, r)
    r = np.where(a == b, 0.0, r)
    r = np.where(np.isnan(a) | np.isnan(b), 1.0, r)
    return float(r) if r.ndim == 0 else r


def rd_nonneg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fast :func:`rd` for finite, non-negative inputs (then ``max == 0`` only when ``a == b == 0``)."""
    mx = np.maximum(a, b)
    r = np.abs(a - b)
    np.divide(r, mx, out=r, where=mx > 0)
    return r


def quantise_8bit(heatmap: np.ndarray) -> np.ndarray:
    """``(..., h, w)`` -> 8-bit levels ``round(255 * h / max(h))`` (float64; an all-zero map stays 0)."""
    h = np.asarray(heatmap, dtype=np.float64)
    mx = h.max(axis=(-2, -1), keepdims=True) if h.size else np.zeros(h.shape[:-2] + (1, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(mx > 0, np.round(255.0 * h / np.where(mx > 0, mx, 1.0)), 0.0)
    return q


def moment_features(heatmap8bit: np.ndarray) -> tuple[Any, Any]:
    """``(M00, Hu1)`` of an (8-bit) intensity image ``I``, batched over leading axes.

    ``M00 = sum I``; centroid ``(xb, yb)`` with ``x`` the column and ``y`` the row index;
    ``mu20 = sum (x - xb)^2 I``, ``mu02 = sum (y - yb)^2 I``;
    ``eta_pq = mu_pq / M00 ** (1 + (p + q) / 2)``, so ``Hu1 = eta20 + eta02 = (mu20 + mu02) / M00^2``.
    ``Hu1`` is NaN when ``M00 == 0``. The input is used as given (quantise first with
    :func:`quantise_8bit`).
    """
    img = np.asarray(heatmap8bit, dtype=np.float64)
    h, w = img.shape[-2:]
    m00 = img.sum(axis=(-2, -1))
    x = np.arange(w, dtype=np.float64)
    y = np.arange(h, dtype=np.float64)
    col = img.sum(axis=-2)  # (..., w)
    row = img.sum(axis=-1)  # (..., h)
    with np.errstate(invalid="ignore", divide="ignore"):
        xb = (col * x).sum(-1) / m00
        yb = (row * y).sum(-1) / m00
        mu20 = (col * (x - xb[..., None]) ** 2).sum(-1)
        mu02 = (row * (y - yb[..., None]) ** 2).sum(-1)
        hu1 = np.where(m00 > 0, (mu20 + mu02) / m00**2, np.nan)
    if np.ndim(m00) == 0:
        return float(m00), float(hu1)
    return m00, hu1


def dhash_bits(heatmap: np.ndarray) -> np.ndarray:
    """64-bit difference hash of ``(..., h, w)`` heatmaps -> ``(..., 64)`` bool.

    The map is area-resized to 8 rows x 9 columns (unless already that size); bit
    ``(r, c) = p[r, c] > p[r, c + 1]`` (pixel brighter than its right neighbour), row-major.
    """
    a = np.asarray(heatmap, dtype=np.float64)
    if a.shape[-2:] != (8, 9):
        a = resize_area(a, (8, 9))
    bits = a[..., :, :-1] > a[..., :, 1:]
    return bits.reshape(*bits.shape[:-2], 64)


def dtw_path_cost(cost: np.ndarray) -> tuple[float, int]:
    """DTW over a ``(Ka, Kb)`` cost matrix: ``(D, len(path))`` of the optimal warping path.

    Steps ``(i-1, j)``, ``(i, j-1)``, ``(i-1, j-1)``; the path runs from ``(0, 0)`` to
    ``(Ka-1, Kb-1)``; ``D`` is the sum of the costs on it. Among paths of minimal ``D`` the
    shortest is taken (our tie rule; it keeps ``D / len`` symmetric in the two sequences).
    Reference implementation (pure Python) of what
    :class:`~gazerad.gaze.similarity_scanpath.TIMAScheme` batches.
    """
    c = np.asarray(cost, dtype=np.float64)
    ka, kb = c.shape
    if ka == 0 or kb == 0:
        raise ValueError("DTW needs two non-empty sequences")
    d = np.full((ka, kb), np.inf)
    n = np.zeros((ka, kb), dtype=np.int64)
    for i in range(ka):
        for j in range(kb):
            if i == 0 and j == 0:
                d[i, j], n[i, j] = c[0, 0], 1
                continue
            cands = [(d[i - 1, j - 1], n[i - 1, j - 1])] if i and j else []
            if i:
                cands.append((d[i - 1, j], n[i - 1, j]))
            if j:
                cands.append((d[i, j - 1], n[i, j - 1]))
            bd, bn = min(cands)
            d[i, j], n[i, j] = c[i, j] + bd, bn + 1
    return float(d[-1, -1]), int(n[-1, -1])


def tima_distance(seq_a: np.ndarray, seq_b: np.ndarray, w_m00: float = 0.7, w_hu1: float = 0.3) -> tuple[float, int]:
    """DTW ``(D, len(path))`` between two ``(K, 2)`` ``[M00, Hu1]`` cluster sequences with
    cluster distance ``d = w_m00 rd(M00) + w_hu1 rd(Hu1)`` (reference, one pair)."""
    a = np.asarray(seq_a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(seq_b, dtype=np.float64).reshape(-1, 2)
    cost = w_m00 * rd(a[:, None, 0], b[None, :, 0]) + w_hu1 * rd(a[:, None, 1], b[None, :, 1])
    return dtw_path_cost(np.atleast_2d(cost))


def same_chunk(fa: Any, fb: Any) -> bool:
    """Whether two feature chunks hold the same records (a diagonal block)."""
    if fa is fb:
        return True
    if isinstance(fa, list) and isinstance(fb, list) and len(fa) == len(fb):
        return all(x is y or (np.shape(x) == np.shape(y) and np.array_equal(x, y)) for x, y in zip(fa, fb))
    return False


def as_grid(grid: int | Sequence[int]) -> tuple[int, int]:
    """``(rows, cols)`` of a heatmap grid given as one side or a pair."""
    g = (int(grid), int(grid)) if np.isscalar(grid) else (int(grid[0]), int(grid[1]))
    if min(g) < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    return g


def valid_pairs(sim: np.ndarray, valid_a: np.ndarray, valid_b: np.ndarray) -> np.ndarray:
    """``sim`` where both records of a pair are non-empty, 0 elsewhere, clipped to ``[0, 1]``."""
    return np.clip(np.where(valid_a[:, None] & valid_b[None, :], sim, 0.0), 0.0, 1.0)


class RenderingParams(TypedDict, total=False):
    """The rendering arguments every heatmap-based scheme takes (see :class:`Rendering`)."""

    sigma: float | None
    sigma_deg: float | None
    sigma_frac: float | None
    image_size: tuple[int, int] | None
    weight: str


class Rendering:
    """Heatmap rendering shared by the schemes (choices in the :mod:`~gazerad.gaze.similarity`
    docstring); a scheme class lists it before :class:`~gazerad.gaze.base.SimilarityScheme`.

    Args:
        sigma: kernel sigma in pixels of the original image (overrides the others).
        sigma_deg: kernel sigma in degrees, times the record's ``pixels_per_degree`` (1).
        sigma_frac: fallback sigma as a fraction of the image's longer side (0.05).
        image_size: ``(H, W)`` for records without ``image_size``.
        weight: ``"duration"`` or ``"count"`` per fixation.
    """

    def __init__(
        self,
        sigma: float | None = None,
        sigma_deg: float | None = 1.0,
        sigma_frac: float | None = 0.05,
        image_size: tuple[int, int] | None = None,
        weight: str = "duration",
    ) -> None:
        self.sigma = None if sigma is None else float(sigma)
        self.sigma_deg = None if sigma_deg is None else float(sigma_deg)
        self.sigma_frac = None if sigma_frac is None else float(sigma_frac)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        if weight not in ("duration", "count"):
            raise ValueError(f"weight must be 'duration' or 'count', got {weight!r}")
        self.weight = weight

    def _render(self, record: GazeRecord, fixations: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """``grid`` heatmap (``"area"`` mode) of some of a record's fixations."""
        shape = record_shape(record, self.image_size)
        s = resolve_sigma(self.sigma, self.sigma_deg, record.pixels_per_degree, shape, self.sigma_frac)
        return gaze_heatmap(fixations, shape, sigma=s, weight=self.weight, out_shape=grid, mode="area")

    def _heatmaps(self, records: Sequence[GazeRecord], grid: tuple[int, int]) -> np.ndarray:
        """``(N, *grid)`` float32 heatmaps of the records."""
        out = np.zeros((len(records), grid[0], grid[1]), dtype=np.float32)
        for i, r in enumerate(records):
            out[i] = self._render(r, r.fixations, grid)
        return out
