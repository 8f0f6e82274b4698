"""Gaze-similarity schemes: ``moment``, ``dhash``, ``tima``, ``cc``, ``kl`` and ``dtw``.

Each scheme turns a record into compact features once (:meth:`features`), then compares
two chunks of features with vectorised array code (:meth:`block`); see
:mod:`gazerad.gaze.base` for the contract (values in ``[0, 1]``, identical non-empty
record gives 1, symmetric, ``block[i, j] == similarity(a_i, b_j)``).

Shared choices (ours, where METHODS leaves them open):

- **Image size**: ``record.image_size``; else the scheme's ``image_size`` argument; else
  the fixations' extent (:func:`gazerad.gaze.heatmap.record_shape`).
- **Kernel**: ``sigma`` (px) if given, else ``sigma_deg`` (1 degree, REFLACX) times the
  record's ``pixels_per_degree``, else ``sigma_frac`` (0.05) times the image's longer side.
- **Coarse heatmaps** (32 x 32 for moments, CC, KL; 8 x 9 for dHash) are rendered
  *directly* on the coarse grid in ``"area"`` mode (the Gaussian averaged over each coarse
  pixel, coordinates and sigma rescaled per axis), which equals rendering at full
  resolution and area-resizing, without the full-size render. Non-square images are
  stretched to the square grid, as a resize would.
- **8-bit quantisation**: ``round(255 * h / max(h))``.
- **Empty records** (no fixations; for the heatmap schemes also no heatmap mass inside
  the image) are similar to nothing: every pair involving one scores 0 in every scheme
  (``matrix`` still puts 1 on the diagonal).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from gazerad.gaze.base import SimilarityScheme, register_scheme
from gazerad.gaze.heatmap import gaze_heatmap, record_shape, resize_area, resolve_sigma
from gazerad.gaze.record import GazeRecord

__all__ = [
    "rd",
    "quantise_8bit",
    "moment_features",
    "dhash_bits",
    "dtw_path_cost",
    "tima_distance",
    "MomentScheme",
    "DHashScheme",
    "TIMAScheme",
    "CCScheme",
    "KLScheme",
    "DTWScheme",
]


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------


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


def _rd_pos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
    Reference implementation (pure Python) of what :class:`TIMAScheme` batches.
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


def _same_chunk(fa: Any, fb: Any) -> bool:
    """Whether two feature chunks hold the same records (a diagonal block)."""
    if fa is fb:
        return True
    if isinstance(fa, list) and isinstance(fb, list) and len(fa) == len(fb):
        return all(x is y or (np.shape(x) == np.shape(y) and np.array_equal(x, y)) for x, y in zip(fa, fb))
    return False


# --------------------------------------------------------------------------------------
# heatmap-based schemes
# --------------------------------------------------------------------------------------


class _Rendering:
    """Rendering parameters shared by the schemes (see the module docstring)."""

    sigma: float | None
    sigma_deg: float | None
    sigma_frac: float | None
    image_size: tuple[int, int] | None
    weight: str

    def _init_rendering(self, sigma, sigma_deg, sigma_frac, image_size, weight) -> None:  # noqa: ANN001
        self.sigma = None if sigma is None else float(sigma)
        self.sigma_deg = None if sigma_deg is None else float(sigma_deg)
        self.sigma_frac = None if sigma_frac is None else float(sigma_frac)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        if weight not in ("duration", "count"):
            raise ValueError(f"weight must be 'duration' or 'count', got {weight!r}")
        self.weight = weight

    def _render(self, record: GazeRecord, fixations: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        shape = record_shape(record, self.image_size)
        s = resolve_sigma(self.sigma, self.sigma_deg, record.pixels_per_degree, shape, self.sigma_frac)
        return gaze_heatmap(fixations, shape, sigma=s, weight=self.weight, out_shape=grid, mode="area")

    def _heatmaps(self, records: Sequence[GazeRecord], grid: tuple[int, int]) -> np.ndarray:
        out = np.zeros((len(records), grid[0], grid[1]), dtype=np.float32)
        for i, r in enumerate(records):
            out[i] = self._render(r, r.fixations, grid)
        return out


def _grid(grid: int | Sequence[int]) -> tuple[int, int]:
    g = (int(grid), int(grid)) if np.isscalar(grid) else (int(grid[0]), int(grid[1]))
    if min(g) < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    return g


@register_scheme("moment")
class MomentScheme(_Rendering, SimilarityScheme):
    """Moment similarity of heatmaps (McGIP): ``sim = 1 - (w1 rd(Hu1) + w2 rd(M00))``.

    Features per record: ``[M00, Hu1]`` of its heatmap rendered at 32 x 32 (``"area"``
    mode, see the module docstring) and quantised to 8 bits (:func:`quantise_8bit`,
    :func:`moment_features`).

    Args:
        weights: ``(w1, w2)`` on ``rd(Hu1)`` and ``rd(M00)``; non-negative, summing to 1.
            0.5/0.5 (mammography, default) or 0.8/0.2 (dental) in the authors' configs.
        grid: heatmap grid (32).
        sigma, sigma_deg, sigma_frac, image_size, weight: rendering (module docstring).
    """

    def __init__(
        self,
        weights: tuple[float, float] = (0.5, 0.5),
        grid: int | tuple[int, int] = 32,
        sigma: float | None = None,
        sigma_deg: float | None = 1.0,
        sigma_frac: float | None = 0.05,
        image_size: tuple[int, int] | None = None,
        weight: str = "duration",
    ) -> None:
        w = (float(weights[0]), float(weights[1]))
        if min(w) < 0 or abs(sum(w) - 1.0) > 1e-9:
            raise ValueError(f"moment weights must be non-negative and sum to 1, got {weights}")
        self.weights = w
        self.grid = _grid(grid)
        self._init_rendering(sigma, sigma_deg, sigma_frac, image_size, weight)

    def features(self, records: Sequence[GazeRecord]) -> np.ndarray:
        """``(N, 2)`` float64 ``[M00, Hu1]`` (``[0, NaN]`` for an empty record)."""
        if not len(records):
            return np.zeros((0, 2))
        m00, hu1 = moment_features(quantise_8bit(self._heatmaps(records, self.grid)))
        return np.column_stack([m00, hu1])

    def block(self, fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
        fa, fb = np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64)
        w1, w2 = self.weights
        s = 1.0 - (w1 * rd(fa[:, None, 1], fb[None, :, 1]) + w2 * rd(fa[:, None, 0], fb[None, :, 0]))
        valid = (fa[:, 0] > 0)[:, None] & (fb[:, 0] > 0)[None, :]
        return np.clip(np.where(valid, s, 0.0), 0.0, 1.0).reshape(len(fa), len(fb))


@register_scheme("dhash")
class DHashScheme(_Rendering, SimilarityScheme):
    """Difference-hash similarity of heatmaps (McGIP): cosine of the two 64-bit vectors.

    Features per record: ``(65,)`` uint8, the 64 bits of :func:`dhash_bits` of its heatmap
    rendered directly at 8 rows x 9 columns (``"area"`` mode), then a flag (1 = non-empty).
    ``sim = |a & b| / sqrt(|a| |b|)``; our rule for all-zero hashes (a flat map, or mass
    only at the right edge): two all-zero hashes give 1, one gives 0.
    """

    def __init__(
        self,
        sigma: float | None = None,
        sigma_deg: float | None = 1.0,
        sigma_frac: float | None = 0.05,
        image_size: tuple[int, int] | None = None,
        weight: str = "duration",
    ) -> None:
        self._init_rendering(sigma, sigma_deg, sigma_frac, image_size, weight)

    def features(self, records: Sequence[GazeRecord]) -> np.ndarray:
        heat = self._heatmaps(records, (8, 9))
        out = np.zeros((len(records), 65), dtype=np.uint8)
        if len(records):
            out[:, :64] = dhash_bits(heat)
            out[:, 64] = heat.reshape(len(records), -1).sum(1) > 0
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
        valid = (np.asarray(fa)[:, 64] > 0)[:, None] & (np.asarray(fb)[:, 64] > 0)[None, :]
        return np.clip(np.where(valid, s, 0.0), 0.0, 1.0)


@register_scheme("cc")
class CCScheme(_Rendering, SimilarityScheme):
    """Pearson correlation of heatmaps mapped to ``[0, 1]``: ``sim = (1 + CC) / 2`` (our mapping).

    Features: ``(N, g, g)`` float32 heatmaps at ``grid`` (32) in ``"area"`` mode. A flat
    (zero-variance) non-empty map has CC 0 with anything but another flat map (then 1).
    """

    def __init__(
        self,
        grid: int | tuple[int, int] = 32,
        sigma: float | None = None,
        sigma_deg: float | None = 1.0,
        sigma_frac: float | None = 0.05,
        image_size: tuple[int, int] | None = None,
        weight: str = "duration",
    ) -> None:
        self.grid = _grid(grid)
        self._init_rendering(sigma, sigma_deg, sigma_frac, image_size, weight)

    def features(self, records: Sequence[GazeRecord]) -> np.ndarray:
        return self._heatmaps(records, self.grid)

    @staticmethod
    def _unit(h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = np.asarray(h, dtype=np.float64)
        x = h.reshape(len(h), int(np.prod(h.shape[1:])))
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
        s = 0.5 * (1.0 + c)
        return np.clip(np.where(va[:, None] & vb[None, :], s, 0.0), 0.0, 1.0)


@register_scheme("kl")
class KLScheme(_Rendering, SimilarityScheme):
    """Symmetric KL divergence of heatmaps mapped to ``sim = exp(-KL_sym / scale)`` (our mapping).

    With ``p, q`` the sum-1 heatmaps at ``grid`` (32, ``"area"`` mode) smoothed as
    ``p' = (p + eps) / (1 + n eps)`` (``n`` pixels; our regulariser, keeps KL finite),
    ``KL_sym = KL(p'||q') + KL(q'||p') = sum (p' - q') (log p' - log q')``.

    Args:
        eps: smoothing per pixel (1e-6).
        scale: divergence scale of the mapping (1.0).
    """

    def __init__(
        self,
        grid: int | tuple[int, int] = 32,
        eps: float = 1e-6,
        scale: float = 1.0,
        sigma: float | None = None,
        sigma_deg: float | None = 1.0,
        sigma_frac: float | None = 0.05,
        image_size: tuple[int, int] | None = None,
        weight: str = "duration",
    ) -> None:
        if eps <= 0 or scale <= 0:
            raise ValueError("kl eps and scale must be positive")
        self.grid = _grid(grid)
        self.eps = float(eps)
        self.scale = float(scale)
        self._init_rendering(sigma, sigma_deg, sigma_frac, image_size, weight)

    def features(self, records: Sequence[GazeRecord]) -> np.ndarray:
        return self._heatmaps(records, self.grid)

    def _smooth(self, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h = np.asarray(h, dtype=np.float64)
        x = h.reshape(len(h), int(np.prod(h.shape[1:])))
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
        s = np.exp(-np.clip(k, 0.0, None) / self.scale)
        return np.clip(np.where(va[:, None] & vb[None, :], s, 0.0), 0.0, 1.0)


# --------------------------------------------------------------------------------------
# scanpath schemes
# --------------------------------------------------------------------------------------


_OMP_PID: int | None = None  # the process that started dtaidistance's OpenMP threads


@register_scheme("dtw")
class DTWScheme(SimilarityScheme):
    """Dynamic time warping between scanpaths, with dtaidistance's C implementation.

    A scanpath is the 2-D sequence of normalised fixation positions ``(x / W, y / H)``
    (image size as in the module docstring). ``d`` is dtaidistance's multi-dimensional DTW
    (``dtw_ndim``): ``sqrt`` of the minimal sum of squared Euclidean distances along a
    warping path, no window. ``sim = exp(-d / scale)`` (our mapping; ``scale`` 1.0).

    Features: a list of ``(L, 2)`` float64 arrays. Blocks are computed by
    ``dtw_ndim.distance_matrix_fast`` (OpenMP threads when ``parallel``, except inside a
    multiprocessing worker or a forked child, where the serial C code runs); a diagonal
    block (the same records on both sides) computes only its upper triangle.
    """

    def __init__(self, scale: float = 1.0, image_size: tuple[int, int] | None = None, parallel: bool = True) -> None:
        if scale <= 0:
            raise ValueError("dtw scale must be positive")
        self.scale = float(scale)
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.parallel = bool(parallel)

    def features(self, records: Sequence[GazeRecord]) -> list[np.ndarray]:
        out = []
        for r in records:
            h, w = record_shape(r, self.image_size)
            out.append(np.ascontiguousarray(r.fixations[:, :2] / np.array([w, h], dtype=np.float64)))
        return out

    def _parallel(self) -> bool:
        """OpenMP only outside worker processes: libgomp deadlocks in a child forked after the
        parent used it, and a process pool already occupies the cores."""
        global _OMP_PID
        if not self.parallel or multiprocessing.parent_process() is not None:
            return False
        if _OMP_PID is not None and _OMP_PID != os.getpid():
            return False
        _OMP_PID = os.getpid()
        return True

    def distances(self, fa: list[np.ndarray], fb: list[np.ndarray]) -> np.ndarray:
        """``(len(fa), len(fb))`` DTW distances (``inf`` for pairs with an empty scanpath)."""
        from dtaidistance import dtw_ndim

        par = self._parallel()
        out = np.full((len(fa), len(fb)), np.inf)
        ia = [i for i, s in enumerate(fa) if len(s)]
        ib = [j for j, s in enumerate(fb) if len(s)]
        if not ia or not ib:
            return out
        if _same_chunk(fa, fb):
            s = [np.ascontiguousarray(fa[i], dtype=np.float64) for i in ia]
            n = len(s)
            d = np.zeros((n, n))
            if n > 1:
                cond = dtw_ndim.distance_matrix_fast(s, ndim=2, compact=True, parallel=par)
                iu = np.triu_indices(n, 1)
                d[iu] = cond
                d[(iu[1], iu[0])] = cond
        else:
            s = [np.ascontiguousarray(fa[i], dtype=np.float64) for i in ia]
            s += [np.ascontiguousarray(fb[j], dtype=np.float64) for j in ib]
            na = len(ia)
            cond = dtw_ndim.distance_matrix_fast(
                s, ndim=2, block=((0, na), (na, len(s))), compact=True, parallel=par
            )
            d = np.asarray(cond, dtype=np.float64).reshape(na, len(ib))
        out[np.ix_(ia, ib)] = d
        return out

    def block(self, fa: list[np.ndarray], fb: list[np.ndarray]) -> np.ndarray:
        return np.clip(np.exp(-self.distances(fa, fb) / self.scale), 0.0, 1.0)


@register_scheme("tima")
class TIMAScheme(_Rendering, SimilarityScheme):
    """Temporal Image Moment Analysis (GzPT's scheme for knee X-rays).

    1. Fixation ``k`` of ``L`` (``k = 0 .. L-1``, time order) is embedded as
       ``(x_k / W, y_k / H, k / L)``.
    2. scikit-learn DBSCAN, ``eps`` 0.2, ``min_samples = floor(L / 10) + 1``; noise dropped.
       Each cluster is a temporal "moment"; moments are ordered by their mean fixation
       index (our choice). A record whose fixations are all noise is one moment made of
       all its fixations (our choice), so it still compares; a record without fixations has
       no moment and scores 0 against everything.
    3. Each moment's fixations are rendered (in memory, duration-weighted) at 32 x 32 in
       ``"area"`` mode, quantised to 8 bits, and give ``(M00, Hu1)``; a moment with no mass
       inside the image is dropped.
    4. Moment distance ``d = w_m00 rd(M00) + w_hu1 rd(Hu1)`` (0.7 / 0.3).
    5. DTW over the two moment sequences (:func:`dtw_path_cost`; among minimal paths the
       shortest); ``sim = 1 - D / len(path)``.

    Features: a list of ``(K, 2)`` float64 ``[M00, Hu1]`` arrays. :meth:`block` batches the
    DTW in numpy over all pairs with the same sequence lengths.

    ``eps`` is the density scale of a moment in the normalised ``(x, y, t)`` space. 0.2 is
    GzPT's value for knee radiographs and our default. On chest radiographs a search sweep
    is dense enough at 0.2 for DBSCAN to chain it into 2-3 long moments, and dwell episodes
    on findings merge into them; ``eps=0.1`` keeps dwell episodes as moments of their own.
    On the synthetic studies (90 images, 3 seeds) images sharing a finding class score
    higher than other pairs at both values, with label-permutation p of 0.05-0.19 at 0.2
    and 0.005 at 0.1 (``tests/test_gaze_premise.py``).
    """

    def __init__(
        self,
        eps: float = 0.2,
        min_samples: int | None = None,
        w_m00: float = 0.7,
        w_hu1: float = 0.3,
        grid: int | tuple[int, int] = 32,
        sigma: float | None = None,
        sigma_deg: float | None = 1.0,
        sigma_frac: float | None = 0.05,
        image_size: tuple[int, int] | None = None,
        weight: str = "duration",
        chunk_pairs: int = 1 << 18,
    ) -> None:
        if min(w_m00, w_hu1) < 0 or abs(w_m00 + w_hu1 - 1.0) > 1e-9:
            raise ValueError(f"TIMA weights must be non-negative and sum to 1, got {(w_m00, w_hu1)}")
        self.eps = float(eps)
        self.min_samples = None if min_samples is None else int(min_samples)
        self.w_m00 = float(w_m00)
        self.w_hu1 = float(w_hu1)
        self.grid = _grid(grid)
        self._init_rendering(sigma, sigma_deg, sigma_frac, image_size, weight)
        self._chunk_pairs = int(chunk_pairs)

    def moments(self, record: GazeRecord) -> list[np.ndarray]:
        """Fixation indices of each temporal moment, in time order."""
        from sklearn.cluster import DBSCAN

        f = record.fixations
        n = len(f)
        if n == 0:
            return []
        h, w = record_shape(record, self.image_size)
        x = np.column_stack([f[:, 0] / w, f[:, 1] / h, np.arange(n) / n])
        ms = self.min_samples if self.min_samples is not None else n // 10 + 1
        # precomputed Euclidean distances: same clusters as the default metric, and no
        # thread-pool start-up per record (sklearn's brute/tree paths cost ms each)
        dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        labels = DBSCAN(eps=self.eps, min_samples=ms, metric="precomputed").fit(dist).labels_
        groups = [np.flatnonzero(labels == c) for c in np.unique(labels[labels >= 0])]
        if not groups:
            return [np.arange(n)]
        groups.sort(key=lambda g: float(g.mean()))
        return groups

    def sequence(self, record: GazeRecord) -> np.ndarray:
        """``(K, 2)`` ``[M00, Hu1]`` of the record's moments, in time order."""
        groups = self.moments(record)
        if not groups:
            return np.zeros((0, 2))
        heat = np.stack([self._render(record, record.fixations[g], self.grid) for g in groups])
        m00, hu1 = moment_features(quantise_8bit(heat))
        keep = m00 > 0
        return np.ascontiguousarray(np.column_stack([m00[keep], hu1[keep]]))

    def features(self, records: Sequence[GazeRecord]) -> list[np.ndarray]:
        return [self.sequence(r) for r in records]

    def _dtw(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Similarity of every pair of ``a`` ``(n, ka, 2)`` and ``b`` ``(m, kb, 2)`` -> ``(n, m)``."""
        ka, kb = a.shape[1], b.shape[1]
        prev_d: list[np.ndarray] = []
        prev_l: list[np.ndarray] = []
        for i in range(ka):
            am, ah = a[:, i, 0][:, None], a[:, i, 1][:, None]
            cur_d: list[np.ndarray] = []
            cur_l: list[np.ndarray] = []
            for j in range(kb):
                c = self.w_m00 * _rd_pos(am, b[None, :, j, 0]) + self.w_hu1 * _rd_pos(ah, b[None, :, j, 1])
                if i == 0 and j == 0:
                    d, n = c, np.ones_like(c)
                elif i == 0:
                    d, n = cur_d[j - 1] + c, cur_l[j - 1] + 1
                elif j == 0:
                    d, n = prev_d[0] + c, prev_l[0] + 1
                else:
                    bd, bn = prev_d[j - 1], prev_l[j - 1]
                    for cd, cn in ((prev_d[j], prev_l[j]), (cur_d[j - 1], cur_l[j - 1])):
                        m = (cd < bd) | ((cd == bd) & (cn < bn))
                        bd, bn = np.where(m, cd, bd), np.where(m, cn, bn)
                    d, n = c + bd, bn + 1
                cur_d.append(d)
                cur_l.append(n)
            prev_d, prev_l = cur_d, cur_l
        return 1.0 - prev_d[-1] / prev_l[-1]

    def block(self, fa: list[np.ndarray], fb: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(fa), len(fb)))
        same = _same_chunk(fa, fb)
        la = np.array([len(s) for s in fa], dtype=np.int64)
        lb = la if same else np.array([len(s) for s in fb], dtype=np.int64)
        ga = {int(k): np.flatnonzero(la == k) for k in np.unique(la) if k > 0}
        gb = ga if same else {int(k): np.flatnonzero(lb == k) for k in np.unique(lb) if k > 0}
        for ka, ia in ga.items():
            a = np.stack([fa[i] for i in ia]).astype(np.float64)
            for kb, ib in gb.items():
                if same and kb < ka:
                    continue
                b = np.stack([fb[j] for j in ib]).astype(np.float64)
                step = max(1, self._chunk_pairs // max(1, len(ib)))
                for s0 in range(0, len(ia), step):
                    sim = self._dtw(a[s0 : s0 + step], b)
                    out[np.ix_(ia[s0 : s0 + step], ib)] = sim
                    if same and kb > ka:
                        out[np.ix_(ib, ia[s0 : s0 + step])] = sim.T
        return np.clip(out, 0.0, 1.0)
