"""Gaze-derived positive masks for a training batch (McGIP) with GzPT's random drop.

``P[i, j] = relation[idx_i, idx_j] > threshold`` for the images of a batch (and, for MoCo,
between the batch and the queue). The relation stays on the CPU as it was given (dense
array or CSR); each call looks up only the ``B x B`` (or ``B x K``) entries it needs, so
a sparse relation over 50,000 images is never densified.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

__all__ = ["GazePositives"]


class GazePositives:
    """Positive masks from a gaze relation matrix.

    Rules (``mask[i, j]`` for batch items ``i, j``):

    - gaze positive: ``relation[idx_i, idx_j] > threshold`` (strict), ``i != j``;
    - the diagonal is ``False``: the augmented pair is always positive inside the losses;
    - duplicates (``idx_i == idx_j``, ``i != j``: the same image twice in a batch, or in the
      queue) are always ``True`` and never dropped: they are the same image, not a
      gaze-derived guess;
    - **GzPT drop**: each gaze-derived positive entry is kept with probability
      ``1 - drop_p``, independently per entry (``mask[i, j]`` and ``mask[j, i]`` are drawn
      separately), resampled at every call. The draws come from a private CPU
      ``torch.Generator`` seeded with ``seed`` (``None``: a seed drawn from torch's global
      RNG at construction, so ``torch.manual_seed`` makes runs repeatable);
    - queue slots with index ``-1`` (empty) are never positive.

    Args:
        relation: a :class:`gazerad.gaze.relation.Relation`, a dense ``(N, N)`` numpy
            array or torch tensor, or a scipy sparse ``(N, N)`` matrix (missing entries are 0).
        threshold: in ``[0, 1]``; the authors use 0.95 (knee, mammography) or 0.7-0.9 (dental).
        drop_p: GzPT's drop probability in ``[0, 1]`` (authors' default 0.5; 0 = McGIP).
        seed: seed of the drop generator.
        image_ids: the data set's image ids in the order its indices ``idx`` count (e.g.
            the training split's); a :class:`~gazerad.gaze.relation.Relation` is then
            re-indexed to them (:meth:`~gazerad.gaze.relation.Relation.aligned`). Without
            it, ``idx`` are the relation's own rows, which is right only when the data set
            lists the relation's images in the relation's order.
    """

    def __init__(self, relation: Any, threshold: float = 0.5, drop_p: float = 0.0, seed: int | None = None, image_ids: Any = None) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if not 0.0 <= float(drop_p) <= 1.0:
            raise ValueError(f"drop_p must be in [0, 1], got {drop_p}")
        self.threshold = float(threshold)
        self.drop_p = float(drop_p)
        if image_ids is not None:
            if not hasattr(relation, "aligned"):
                raise ValueError("image_ids needs a gazerad.gaze.relation.Relation (it knows its images' ids)")
            relation = relation.aligned(list(image_ids))
        self._matrix = self._as_matrix(relation)
        self.n = int(self._matrix.shape[0])
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(self.seed)

    @staticmethod
    def _as_matrix(relation: Any) -> np.ndarray | sp.csr_matrix:
        if isinstance(relation, (np.ndarray, Tensor)) or sp.issparse(relation):
            m = relation
        else:
            m = getattr(relation, "matrix", relation)
        if m is None:
            raise ValueError("relation has no matrix (an unmerged shard?): merge the shards first")
        if isinstance(m, Tensor):
            m = m.detach().cpu().numpy()
        if sp.issparse(m):
            m = sp.csr_matrix(m)
        else:
            m = np.asarray(m)
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError(f"relation must be a square (N, N) matrix, got shape {m.shape}")
        return m

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self._matrix)

    def __len__(self) -> int:
        return self.n

    def _indices(self, idx: Any, name: str, allow_empty_slot: bool = False) -> np.ndarray:
        a = idx.detach().cpu().numpy() if isinstance(idx, Tensor) else np.asarray(idx)
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
        if a.size and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"{name} must hold integer dataset indices, got dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        low = -1 if allow_empty_slot else 0
        bad = (a < low) | (a >= self.n)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}[{j}] = {int(a[j])} is out of range for a relation over N = {self.n} images")
        return a

    def _lookup(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Dense ``(len(rows), len(cols))`` block of the relation, computed from only those entries."""
        if rows.size == 0 or cols.size == 0:
            return np.zeros((rows.size, cols.size), dtype=np.float32)
        if self.is_sparse:
            return self._matrix[rows][:, cols].toarray()
        return self._matrix[np.ix_(rows, cols)]

    def _drop(self, gaze: np.ndarray) -> np.ndarray:
        if self.drop_p <= 0.0 or not gaze.any():
            return gaze
        keep = torch.rand(gaze.shape, generator=self.generator).numpy() >= self.drop_p
        return gaze & keep

    def batch_mask(self, idx: Tensor) -> Tensor:
        """``(B,)`` dataset indices -> ``(B, B)`` bool mask of extra positives (see class doc).

        Returned on ``idx``'s device (CPU for a non-tensor ``idx``).
        """
        a = self._indices(idx, "idx")
        gaze = self._lookup(a, a) > self.threshold
        np.fill_diagonal(gaze, False)
        same = a[:, None] == a[None, :]
        np.fill_diagonal(same, False)
        mask = (self._drop(gaze & ~same) | same).astype(bool, copy=False)
        return torch.from_numpy(np.ascontiguousarray(mask)).to(_device(idx))

    def queue_mask(self, idx: Tensor, queue_idx: Tensor) -> Tensor:
        """``(B,)`` batch indices and ``(K,)`` queue indices -> ``(B, K)`` bool positives.

        ``queue_idx == -1`` (empty slot) is never positive. An image found in the queue
        (``queue_idx[k] == idx[i]``) is positive and never dropped. Returned on ``idx``'s
        device.
        """
        a = self._indices(idx, "idx")
        qi = self._indices(queue_idx, "queue_idx", allow_empty_slot=True)
        filled = np.flatnonzero(qi >= 0)
        gaze = np.zeros((a.size, qi.size), dtype=bool)
        gaze[:, filled] = self._lookup(a, qi[filled]) > self.threshold
        same = (a[:, None] == qi[None, :]) & (qi >= 0)[None, :]
        mask = self._drop(gaze & ~same) | same
        return torch.from_numpy(np.ascontiguousarray(mask)).to(_device(idx))

    def __repr__(self) -> str:
        kind = "sparse" if self.is_sparse else "dense"
        return f"GazePositives(N={self.n}, {kind}, threshold={self.threshold}, drop_p={self.drop_p}, seed={self.seed})"


def _device(idx: Any) -> torch.device:
    return idx.device if isinstance(idx, Tensor) else torch.device("cpu")
