"""Scanpath similarity schemes: ``dtw`` (dynamic time warping of fixation positions) and
``tima`` (GzPT's Temporal Image Moment Analysis: DTW over temporal moments' heatmap moments).

Image size and heatmap rendering as in the :mod:`~gazerad.gaze.similarity` docstring; a
record without fixations scores 0 against everything.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gazerad.gaze.base import SimilarityScheme, register_scheme
from gazerad.gaze.heatmap import record_shape
from gazerad.gaze.record import GazeRecord
from gazerad.gaze.similarity_core import Rendering, as_grid, moment_features, preset_options, rd_nonneg, same_chunk

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from gazerad.gaze.similarity_core import RenderingParams

__all__ = ["DTWScheme", "TIMAScheme"]


_OMP_PID: int | None = None  # the process that started dtaidistance's OpenMP threads


@register_scheme("dtw")
class DTWScheme(SimilarityScheme):
    """Dynamic time warping between scanpaths, with dtaidistance's C implementation.

    A scanpath is the 2-D sequence of normalised fixation positions ``(x / W, y / H)``
    (image size as in :mod:`gazerad.gaze.similarity`). ``d`` is dtaidistance's multi-dimensional DTW
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
        s = [np.ascontiguousarray(fa[i], dtype=np.float64) for i in ia]
        if same_chunk(fa, fb):
            n = len(s)
            d = np.zeros((n, n))
            if n > 1:
                cond = dtw_ndim.distance_matrix_fast(s, ndim=2, compact=True, parallel=par)
                iu = np.triu_indices(n, 1)
                d[iu] = cond
                d[(iu[1], iu[0])] = cond
        else:
            s += [np.ascontiguousarray(fb[j], dtype=np.float64) for j in ib]
            na = len(ia)
            cond = dtw_ndim.distance_matrix_fast(s, ndim=2, block=((0, na), (na, len(s))), compact=True, parallel=par)
            d = np.asarray(cond, dtype=np.float64).reshape(na, len(ib))
        out[np.ix_(ia, ib)] = d
        return out

    def block(self, fa: list[np.ndarray], fb: list[np.ndarray]) -> np.ndarray:
        return np.clip(np.exp(-self.distances(fa, fb) / self.scale), 0.0, 1.0)


@register_scheme("tima")
class TIMAScheme(Rendering, SimilarityScheme):
    """Temporal Image Moment Analysis (GzPT's scheme for knee X-rays).

    1. Fixation ``k`` of ``L`` (``k = 0 .. L-1``, time order) is embedded as
       ``(x_k / W, y_k / H, k / L)``.
    2. scikit-learn DBSCAN, ``eps`` 0.2, ``min_samples = floor(L / 10) + 1``; noise dropped.
       Each cluster is a temporal "moment"; moments are ordered by their mean fixation
       index (our choice; ``order="dbscan"``: DBSCAN's label order, by first core point, as
       the authors' code takes them). A record whose fixations are all noise is one moment made of
       all its fixations (our choice), so it still compares; a record without fixations has
       no moment and scores 0 against everything.
    3. Each moment's fixations are rendered (in memory, duration-weighted) at 32 x 32 in
       ``"area"`` mode, quantised to 8 bits, and give ``(M00, Hu1)``; a moment with no mass
       inside the image is dropped. ``preset="mcgip"`` draws them as the authors do: each
       fixation once, on the image's own grid, a window of ``floor(H / 10)`` px with sigma
       window / 6, floored to 8 bit before the area resize to 32 x 32, and sets
       ``order="dbscan"`` (:class:`~gazerad.gaze.similarity_core.Rendering`).
    4. Moment distance ``d = w_m00 rd(M00) + w_hu1 rd(Hu1)`` (0.7 / 0.3).
    5. DTW over the two moment sequences (:func:`~gazerad.gaze.similarity_core.dtw_path_cost`; among minimal paths the
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

    Args:
        eps, min_samples: DBSCAN (step 2; ``None``: ``floor(L / 10) + 1``).
        order: moment order, ``"time"`` (mean fixation index; ours) or ``"dbscan"`` (label
            order); ``None``: the preset's, else ``"time"``.
        w_m00, w_hu1: moment-distance weights (step 4); non-negative, summing to 1.
        grid: heatmap grid of a moment (32).
        chunk_pairs: pairs per numpy batch in :meth:`block` (bounds memory; the result does
            not depend on it).
        **rendering: ``preset`` (``"mcgip"``: the authors' maps and order), ``sigma``,
            ``sigma_deg``, ``sigma_frac``, ``image_size``, ``weight`` and the canvas options
            (:class:`~gazerad.gaze.similarity_core.Rendering`).
    """

    def __init__(
        self,
        eps: float = 0.2,
        min_samples: int | None = None,
        order: str | None = None,
        w_m00: float = 0.7,
        w_hu1: float = 0.3,
        grid: int | tuple[int, int] = 32,
        chunk_pairs: int = 1 << 18,
        **rendering: Unpack[RenderingParams],
    ) -> None:
        if min(w_m00, w_hu1) < 0 or abs(w_m00 + w_hu1 - 1.0) > 1e-9:
            raise ValueError(f"TIMA weights must be non-negative and sum to 1, got {(w_m00, w_hu1)}")
        self.eps = float(eps)
        self.min_samples = None if min_samples is None else int(min_samples)
        self.w_m00 = float(w_m00)
        self.w_hu1 = float(w_hu1)
        self.grid = as_grid(grid)
        super().__init__(**rendering)
        if order is None:
            order = str(preset_options(self.name, self.preset).get("order", "time"))
        if order not in ("time", "dbscan"):
            raise ValueError(f"TIMA order must be 'time' or 'dbscan', got {order!r}")
        self.order = order
        self._chunk_pairs = int(chunk_pairs)

    def params(self) -> dict[str, Any]:
        p = super().params()
        if p.get("order") == "time":  # ours; left out so cache keys made before the option still hold
            p.pop("order")
        return p

    def moments(self, record: GazeRecord) -> list[np.ndarray]:
        """Fixation indices of each temporal moment, in ``order``."""
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
        if self.order == "time":
            groups.sort(key=lambda g: float(g.mean()))
        return groups

    def sequence(self, record: GazeRecord) -> np.ndarray:
        """``(K, 2)`` ``[M00, Hu1]`` of the record's moments, in ``order``."""
        groups = self.moments(record)
        if not groups:
            return np.zeros((0, 2))
        m00, hu1 = moment_features(np.stack([self._levels(record, record.fixations[g], self.grid) for g in groups]))
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
                c = self.w_m00 * rd_nonneg(am, b[None, :, j, 0]) + self.w_hu1 * rd_nonneg(ah, b[None, :, j, 1])
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
        same = same_chunk(fa, fb)
        la = np.array([len(s) for s in fa], dtype=np.int64)
        lb = la if same else np.array([len(s) for s in fb], dtype=np.int64)
        ga = _by_length(la)
        gb = ga if same else _by_length(lb)
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


def _by_length(lengths: np.ndarray) -> dict[int, np.ndarray]:
    """Indices of the sequences of each non-zero length."""
    return {int(k): np.flatnonzero(lengths == k) for k in np.unique(lengths) if k > 0}
