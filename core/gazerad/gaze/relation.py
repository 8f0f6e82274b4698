"""The McGIP/GzPT relation matrix: image-by-image gaze similarity, built blockwise.

Rows and columns are images (in a given order: the pre-training data set's index). A
scheme (:mod:`gazerad.gaze.base`) computes per-record features once; the matrix is then
filled block by block of images, in worker processes, with a progress bar.

**Several readers per image** (documented rule): the similarity of images ``I`` and ``J``
is the *mean* over all reader pairs ``(r in I, s in J)`` of ``sim(r, s)`` (``aggregate=
"max"`` takes the best-matching pair instead). The diagonal is 1 by definition; an image
without gaze is related to nothing (0) but itself.

**Outputs**: dense ``(N, N)`` float32, or sparse (CSR, float32) keeping per row the
``top_k`` largest off-diagonal values and/or the values ``>= threshold``; the sparse
matrix is symmetrised by taking the larger of ``(i, j)`` and ``(j, i)``. Memory is
``O(N * (k + block))`` for sparse output, so N = 50,000 fits in a few hundred MB.

**Sharding**: ``shard=(i, n)`` computes only the block pairs ``p`` with ``p % n == i``
and returns a partial result; :func:`merge_relations` combines the parts. Under
``torchrun`` (``WORLD_SIZE > 1``) :func:`compute_relation_distributed` shards by rank,
writes each part, and rank 0 merges.

**Cache**: results are keyed by the content (scheme, parameters, image order, every
fixation), so a rerun with identical inputs loads the stored result.

Files are ``.npz`` (written atomically) with ``image_ids``, ``scheme``, ``params``
(JSON), and ``dense`` or ``data/indices/indptr/shape``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from gazerad.errors import InputError
from gazerad.gaze.base import SimilarityScheme
from gazerad.gaze.record import GazeCollection, GazeRecord
from gazerad.gaze.schemes import get_scheme
from gazerad.io.atomic import atomic_path

__all__ = ["Relation", "compute_relation", "compute_relation_distributed", "load_relation", "merge_relations"]


@dataclass
class Relation:
    """A relation matrix over images.

    Attributes:
        image_ids: row/column order.
        matrix: dense ``(N, N)`` float32 ndarray or ``scipy.sparse.csr_matrix``.
        scheme: scheme name; ``params``: its parameters and the build options.
        partial: for a shard, the raw block results still to be merged.
    """

    image_ids: list[str]
    matrix: Any
    scheme: str
    params: dict[str, Any] = field(default_factory=dict)
    partial: dict[str, Any] | None = None

    def __repr__(self) -> str:  # short: N may be 50,000 ids and a matrix
        if self.matrix is None:
            kind = "unmerged shard"
        elif self.is_sparse:
            kind = f"sparse, {self.matrix.nnz} stored entries"
        else:
            kind = "dense"
        return f"Relation(N={len(self.image_ids)}, scheme={self.scheme!r}, {kind})"

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.matrix)

    def index_of(self, image_id: str) -> int:
        try:
            return self._index[image_id]
        except AttributeError:
            self._index = {k: i for i, k in enumerate(self.image_ids)}
            return self._index[image_id]

    def aligned(self, ids: Sequence[str]) -> sp.csr_matrix:
        """The relation re-indexed to ``ids`` (a data set's order, e.g. its training split)
        as an ``(len(ids), len(ids))`` CSR matrix: entry ``[i, j]`` relates ``ids[i]`` and
        ``ids[j]``. Images without a row here relate to nothing but themselves (diagonal 1).

        Raises:
            ValueError: no image of ``ids`` is in the relation (a relation of another data set).
        """
        if self.matrix is None:
            raise ValueError("relation has no matrix (an unmerged shard?): merge the shards first")
        pos = {k: i for i, k in enumerate(self.image_ids)}
        have = np.array([i for i, k in enumerate(ids) if k in pos], dtype=np.int64)
        if have.size == 0:
            raise ValueError(f"none of the {len(ids)} images is in this relation (ids like {list(ids[:2])}, the relation's like {self.image_ids[:2]})")
        src = np.array([pos[ids[i]] for i in have], dtype=np.int64)
        sub = sp.csr_matrix(self.matrix)[src][:, src].tocoo()
        out = sp.coo_matrix((sub.data, (have[sub.row], have[sub.col])), shape=(len(ids), len(ids))).tocsr()
        out.setdiag(1.0)
        return out

    def dense(self) -> np.ndarray:
        """The full matrix as a dense array (beware of N at scale)."""
        return self.matrix.toarray() if self.is_sparse else np.asarray(self.matrix)

    def rows(self, idx: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        """Dense sub-matrix ``relation[idx][:, cols]`` (what a training batch needs)."""
        cols = idx if cols is None else cols
        m = self.matrix[np.asarray(idx)][:, np.asarray(cols)]
        return m.toarray() if sp.issparse(m) else np.asarray(m)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the relation as ``.npz`` atomically."""
        path = Path(path)
        arrays: dict[str, Any] = {
            "image_ids": np.asarray(self.image_ids, dtype=str),
            "scheme": np.asarray(self.scheme),
            "params": np.asarray(json.dumps(self.params, default=str)),
        }
        if self.partial is not None:
            arrays.update({f"partial_{k}": v for k, v in self.partial.items()})
        elif self.is_sparse:
            m = self.matrix.tocsr()
            arrays.update(data=m.data, indices=m.indices, indptr=m.indptr, shape=np.asarray(m.shape))
        else:
            arrays["dense"] = np.asarray(self.matrix, dtype=np.float32)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return path


def load_relation(path: str | os.PathLike) -> Relation:
    """Read a relation (or a shard) written by :meth:`Relation.save`."""
    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(p, f"not a relation .npz file ({type(exc).__name__}: {exc})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError(p, "not a relation .npz file (a single .npy array)")
    with z:
        if "image_ids" not in z or "scheme" not in z:
            raise InputError(p, "not a relation file: missing image_ids/scheme arrays")
        ids = [str(s) for s in z["image_ids"]]
        params = json.loads(str(z["params"]))
        scheme = str(z["scheme"])
        partial = {k[len("partial_") :]: z[k] for k in z.files if k.startswith("partial_")}
        if partial:
            return Relation(ids, None, scheme, params, partial)
        if "dense" in z:
            m: Any = z["dense"]
        else:
            m = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
    return Relation(ids, m, scheme, params)


# ----------------------------------------------------------------------------- building


def _order_records(gaze: GazeCollection | Sequence[GazeRecord], image_ids: Sequence[str] | None) -> tuple[list[str], list[GazeRecord], np.ndarray]:
    """Image order, records sorted by image row, and the record -> row index."""
    coll = gaze if isinstance(gaze, GazeCollection) else GazeCollection.from_records(gaze)
    ids = list(image_ids) if image_ids is not None else coll.images
    if len(set(ids)) != len(ids):
        raise ValueError("image_ids contains duplicates")
    unknown = [i for i in coll.images if i not in set(ids)]
    if image_ids is not None and unknown and len(unknown) == len(coll.images):
        raise ValueError(f"none of the gaze image ids are in image_ids (e.g. {unknown[:3]})")
    records, rows = [], []
    for row, image in enumerate(ids):
        for r in coll.get(image, []):
            if len(r):
                records.append(r)
                rows.append(row)
    return ids, records, np.asarray(rows, dtype=np.int64)


def _content_key(scheme: SimilarityScheme, ids: list[str], records: list[GazeRecord], opts: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"scheme": scheme.name, "params": scheme.params(), "opts": opts}, sort_keys=True, default=str).encode())
    h.update("\0".join(ids).encode())
    for r in records:
        h.update(r.image_id.encode() + b"\0" + r.reader_id.encode() + b"\0" + str(r.image_size).encode())
        h.update(np.ascontiguousarray(r.fixations).tobytes())
    return h.hexdigest()[:32]


# candidates held by the parent before they are pruned to each row's top-k (sparse output)
_PRUNE_MIN_ENTRIES = 4_000_000

# worker state (inherited through fork; set by the parent before the pool starts)
_STATE: dict[str, Any] = {}


def _image_block(rows_a: tuple[int, int], rows_b: tuple[int, int]) -> np.ndarray:
    """Image-level similarity block for image rows [a0, a1) x [b0, b1)."""
    st = _STATE
    scheme: SimilarityScheme = st["scheme"]
    rec_rows: np.ndarray = st["rec_rows"]
    a0, a1 = rows_a
    b0, b1 = rows_b
    out = np.zeros((a1 - a0, b1 - b0), dtype=np.float32)
    ra = np.arange(np.searchsorted(rec_rows, a0), np.searchsorted(rec_rows, a1))
    rb = np.arange(np.searchsorted(rec_rows, b0), np.searchsorted(rec_rows, b1))
    if ra.size == 0 or rb.size == 0:
        return out
    feats = st["features"]
    s = np.clip(np.asarray(scheme.block(scheme.take(feats, ra), scheme.take(feats, rb)), dtype=np.float64), 0.0, 1.0)
    ia, ib = rec_rows[ra] - a0, rec_rows[rb] - b0
    if st["aggregate"] == "max":
        agg = np.full(out.shape, -1.0)
        np.maximum.at(agg, (ia[:, None], ib[None, :]), s)
        out[:] = np.where(agg < 0, 0.0, agg)
    else:
        tot = np.zeros(out.shape)
        np.add.at(tot, (ia[:, None], ib[None, :]), s)
        cnt = np.bincount(ia, minlength=out.shape[0])[:, None] * np.bincount(ib, minlength=out.shape[1])[None, :]
        out[:] = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)
    return out


def _run_pair(job: tuple[int, tuple[int, int], tuple[int, int]]) -> tuple[int, tuple[int, int], tuple[int, int], Any]:
    p, ra, rb = job
    blk = _image_block(ra, rb)
    if _STATE["mode"] == "dense":
        return p, ra, rb, blk
    return p, ra, rb, _sparse_candidates(blk, ra, rb)


def _sparse_candidates(blk: np.ndarray, ra: tuple[int, int], rb: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries of a block worth keeping: per row and per column its top-k, plus >= threshold."""
    k, thr = _STATE["top_k"], _STATE["threshold"]
    keep = np.zeros(blk.shape, dtype=bool)
    work = blk.copy()
    if ra == rb:
        np.fill_diagonal(work, -1.0)
    if thr is not None:
        keep |= work >= thr
    if k:
        if blk.shape[1] > k:
            top = np.argpartition(-work, k - 1, axis=1)[:, :k]
            keep[np.arange(blk.shape[0])[:, None], top] = True
        else:
            keep[:] = True
        if blk.shape[0] > k:
            topc = np.argpartition(-work, k - 1, axis=0)[:k, :]
            keep[topc, np.arange(blk.shape[1])[None, :]] = True
        else:
            keep[:] = True
    keep &= work > 0
    i, j = np.nonzero(keep)
    return (i + ra[0]).astype(np.int32), (j + rb[0]).astype(np.int32), blk[i, j].astype(np.float32)


def _symmetric_candidates(n: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> sp.csr_matrix:
    """Off-diagonal candidates as a symmetric CSR (an entry seen from both sides counted once)."""
    r = np.concatenate([rows, cols])
    c = np.concatenate([cols, rows])
    v = np.concatenate([vals, vals])
    off = r != c
    m = sp.coo_matrix((v[off], (r[off], c[off])), shape=(n, n)).tocsr()
    m.sum_duplicates()
    # duplicates from (i, j) and (j, i) hold the same value: divide the sums by the counts
    counts = sp.coo_matrix((np.ones(int(off.sum()), np.float32), (r[off], c[off])), shape=(n, n)).tocsr()
    counts.sum_duplicates()
    m.data = m.data / counts.data
    return m


def _prune_candidates(
    n: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, top_k: int | None, threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep per row its top-k (and values >= threshold) of the candidates seen so far.

    Lossless for the final selection: a row's final top-k are among its top-k of any subset
    that contains them. Keeps the parent's memory at O(N * k) whatever N.
    """
    m = _select_rows(_symmetric_candidates(n, rows, cols, vals), top_k, threshold).tocoo()
    return m.row.astype(np.int32), m.col.astype(np.int32), m.data.astype(np.float32)


def _finalise_sparse(n: int, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, top_k: int | None, threshold: float | None) -> sp.csr_matrix:
    """Symmetrise candidates, then per row keep top-k (and/or >= threshold), symmetrise, unit diagonal."""
    m = _symmetric_candidates(n, rows, cols, vals)
    if top_k or threshold is not None:
        m = _select_rows(m, top_k, threshold)
        m = m.maximum(m.T).tocsr()
    m = m + sp.identity(n, dtype=np.float32, format="csr")
    m.data = np.clip(m.data, 0.0, 1.0).astype(np.float32)
    return m.tocsr()


def _select_rows(m: sp.csr_matrix, top_k: int | None, threshold: float | None) -> sp.csr_matrix:
    keep = np.zeros(m.nnz, dtype=bool)
    for i in range(m.shape[0]):
        s, e = m.indptr[i], m.indptr[i + 1]
        if s == e:
            continue
        d = m.data[s:e]
        sel = np.zeros(e - s, bool)
        if threshold is not None:
            sel |= d >= threshold
        if top_k:
            sel[np.argsort(-d, kind="stable")[:top_k]] = True
        keep[s:e] = sel
    out = m.copy()
    out.data = np.where(keep, out.data, 0.0)
    out.eliminate_zeros()
    return out


def compute_relation(
    gaze: GazeCollection | Sequence[GazeRecord],
    scheme: str | SimilarityScheme = "tima",
    image_ids: Sequence[str] | None = None,
    aggregate: str = "mean",
    top_k: int | None = None,
    threshold: float | None = None,
    sparse: bool | None = None,
    block_size: int = 256,
    workers: int | None = None,
    shard: tuple[int, int] = (0, 1),
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **scheme_params: Any,
) -> Relation:
    """Build the image-by-image relation matrix.

    Args:
        gaze: records (several per image allowed).
        scheme: a registered scheme name (with ``scheme_params``) or an instance.
        image_ids: row order (default: images in the order the gaze came); images without
            gaze get an empty row with a unit diagonal.
        aggregate: ``"mean"`` (default) or ``"max"`` over reader pairs.
        top_k, threshold: sparse selection per row (see module docstring).
        sparse: force sparse/dense output; default: sparse when ``top_k`` or ``threshold``
            is given or N > 20,000.
        block_size: images per block (memory per worker ~ block_size^2 * readers^2).
        workers: processes (default: all cores).
        shard: ``(i, n)``: compute only this shard's block pairs; the result has
            ``partial`` set and must go through :func:`merge_relations`.
        cache_dir: where results are cached by content (``None``: no cache).
        progress: tqdm progress bar.

    Returns:
        A :class:`Relation` (symmetric, unit diagonal, values in ``[0, 1]``).
    """
    if aggregate not in ("mean", "max"):
        raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    si, sn = shard
    if not (sn >= 1 and 0 <= si < sn):
        raise ValueError(f"shard must be (i, n) with 0 <= i < n, got {shard}")
    sch = get_scheme(scheme, **scheme_params) if isinstance(scheme, str) else scheme
    ids, records, rec_rows = _order_records(gaze, image_ids)
    n = len(ids)
    if sparse is None:
        sparse = top_k is not None or threshold is not None or n > 20_000
    mode = "sparse" if sparse else "dense"
    opts = {"aggregate": aggregate, "top_k": top_k, "threshold": threshold, "mode": mode, "shard": [si, sn]}
    params = {"scheme_params": sch.params(), **opts}
    key = _content_key(sch, ids, records, opts)
    cache_file = Path(cache_dir) / f"relation-{sch.name}-{key}.npz" if cache_dir else None
    if cache_file is not None and cache_file.is_file():
        rel = load_relation(cache_file)
        rel.params["cached"] = True
        return rel

    t0 = time.perf_counter()
    feats = sch.features(records) if records else []
    blocks = [(s, min(s + block_size, n)) for s in range(0, n, block_size)]
    jobs = []
    p = 0
    for bi in range(len(blocks)):
        for bj in range(bi, len(blocks)):
            if p % sn == si:
                jobs.append((p, blocks[bi], blocks[bj]))
            p += 1
    _STATE.clear()
    _STATE.update(scheme=sch, features=feats, rec_rows=rec_rows, aggregate=aggregate, mode=mode, top_k=top_k, threshold=threshold)
    from tqdm.auto import tqdm

    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    dense = np.zeros((n, n), dtype=np.float32) if mode == "dense" else None
    cand: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending, prune_at = 0, _PRUNE_MIN_ENTRIES
    bar = tqdm(total=len(jobs), desc=f"relation[{sch.name}]", unit="block", disable=not progress)
    try:
        if workers == 1:
            results = map(_run_pair, jobs)
            pool = None
        else:
            import multiprocessing as mp

            pool = mp.get_context("fork").Pool(workers)
            results = pool.imap_unordered(_run_pair, jobs, chunksize=1)
        for _, ra, rb, res in results:
            if dense is not None:
                dense[ra[0] : ra[1], rb[0] : rb[1]] = res
                dense[rb[0] : rb[1], ra[0] : ra[1]] = res.T
            else:
                cand.append(res)
                pending += len(res[2])
                if pending > prune_at and sn == 1:
                    cand = [_prune_candidates(n, *_concat(cand), top_k, threshold)]
                    pending = len(cand[0][2])
                    prune_at = max(prune_at, 4 * pending)
            bar.update(1)
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        bar.close()
        _STATE.clear()
    params["seconds"] = round(time.perf_counter() - t0, 3)
    if sn > 1:
        if dense is not None:
            filled = np.zeros((len(blocks), len(blocks)), bool)
            for pp, ra, rb in jobs:
                filled[blocks.index(ra), blocks.index(rb)] = True
            partial = {"mode": np.asarray("dense"), "dense": dense, "blocks": np.asarray(blocks), "filled": filled}
        else:
            r, c, v = _concat(cand)
            partial = {"mode": np.asarray("sparse"), "rows": r, "cols": c, "vals": v}
        rel = Relation(ids, None, sch.name, params, partial)
    elif dense is not None:
        dense = 0.5 * (dense + dense.T)
        np.fill_diagonal(dense, 1.0)
        rel = Relation(ids, np.clip(dense, 0.0, 1.0).astype(np.float32), sch.name, params)
    else:
        r, c, v = _concat(cand)
        rel = Relation(ids, _finalise_sparse(n, r, c, v, top_k, threshold), sch.name, params)
    if cache_file is not None:
        rel.save(cache_file)
    return rel


def _concat(cand: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not cand:
        return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
    return tuple(np.concatenate(x) for x in zip(*cand))  # type: ignore[return-value]


def merge_relations(parts: Sequence[Relation | str | os.PathLike]) -> Relation:
    """Merge the shards of one relation (all ``n`` shards of the same inputs)."""
    rels = [load_relation(p) if not isinstance(p, Relation) else p for p in parts]
    if not rels:
        raise ValueError("no relation parts to merge")
    first = rels[0]
    shards = sorted(tuple(r.params.get("shard", [0, 1])) for r in rels)
    n_sh = shards[0][1]
    if shards != [(i, n_sh) for i in range(n_sh)]:
        raise ValueError(f"need shards 0..{n_sh - 1} of {n_sh} exactly once, got {shards}")
    for r in rels:
        if r.image_ids != first.image_ids or r.scheme != first.scheme or r.partial is None:
            raise ValueError("parts come from different inputs or are not shards")
    n = len(first.image_ids)
    params = dict(first.params, shard=[0, 1], seconds=sum(r.params.get("seconds", 0) for r in rels))
    if str(first.partial["mode"]) == "dense":
        dense = np.zeros((n, n), np.float32)
        for r in rels:
            blocks = r.partial["blocks"]
            for bi, bj in zip(*np.nonzero(r.partial["filled"])):
                (a0, a1), (b0, b1) = blocks[bi], blocks[bj]
                dense[a0:a1, b0:b1] = r.partial["dense"][a0:a1, b0:b1]
                dense[b0:b1, a0:a1] = r.partial["dense"][b0:b1, a0:a1]
        np.fill_diagonal(dense, 1.0)
        return Relation(first.image_ids, dense, first.scheme, params)
    r_, c_, v_ = (np.concatenate([r.partial[k] for r in rels]) for k in ("rows", "cols", "vals"))
    m = _finalise_sparse(n, r_, c_, v_, first.params.get("top_k"), first.params.get("threshold"))
    return Relation(first.image_ids, m, first.scheme, params)


def compute_relation_distributed(out: str | os.PathLike, **kwargs: Any) -> Relation | None:
    """Compute a relation under ``torchrun``: each rank one shard, rank 0 merges to ``out``.

    Without ``torch.distributed`` set up (``WORLD_SIZE`` unset or 1) it computes the whole
    relation and saves it. Returns the merged relation on rank 0, ``None`` elsewhere.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    out = Path(out)
    if world <= 1:
        rel = compute_relation(**kwargs)
        rel.save(out)
        return rel
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    part = out.with_name(f"{out.stem}.part{rank}of{world}.npz")
    compute_relation(shard=(rank, world), **kwargs).save(part)
    dist.barrier()
    result = None
    if rank == 0:
        parts = [out.with_name(f"{out.stem}.part{r}of{world}.npz") for r in range(world)]
        result = merge_relations(parts)
        result.save(out)
        for p in parts:
            p.unlink(missing_ok=True)
    dist.barrier()
    return result
