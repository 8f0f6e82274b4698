"""MultiMatch alignment (:mod:`gazerad.gaze.multimatch`), batched over scanpath pairs.

The cheapest monotone path through each pair's saccade-vector cost grid, found by a dynamic
programme over anti-diagonals for many pairs at once (with scipy's Dijkstra, as the
reference uses, only for pairs whose path meets an exact tie), and the medians of the five
per-pair differences along it; the method is in the :mod:`~gazerad.gaze.multimatch` docstring.
"""

from __future__ import annotations

import functools

import numpy as np

from gazerad.gaze.multimatch_scanpath import F_DUR, F_DX, F_DY, F_RHO, F_THETA, F_X, F_Y, Packed

__all__ = ["pairs_medians"]

# Cells (of the padded grid, times pairs) per batch: bounds memory to a few 10 MB per array.
_CELL_BUDGET = 1 << 21


@functools.lru_cache(maxsize=256)
def _grid_graph(na: int, nb: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR structure ``(indptr, indices, target_cell)`` of the alignment graph of an
    ``(na, nb)`` grid: node ``i * nb + j`` has edges right, down and diagonal (ascending column
    order, as the reference lists them) and the last node a self-loop (``target_cell = -1``:
    weight 0)."""
    node = np.arange(na * nb).reshape(na, nb)
    ii, jj = np.divmod(node, nb)
    cand = np.stack([node + 1, node + nb, node + nb + 1], axis=-1)  # right, down, diagonal
    ok = np.stack([jj + 1 < nb, (ii + 1 < na) & (jj >= 0), (ii + 1 < na) & (jj + 1 < nb)], axis=-1)
    counts = ok.sum(axis=-1).ravel()
    counts[-1] = 1
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    indices = cand.reshape(-1, 3)[ok.reshape(-1, 3)].astype(np.int32)
    indices = np.append(indices, np.int32(na * nb - 1))
    target = indices.astype(np.int64)
    target[-1] = -1
    return indptr, indices, target


def _dijkstra_path(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cells ``(i, j)`` of the alignment path as the reference finds it, for an ``(na, nb)``
    cost grid ``m``: scipy's Dijkstra from cell 0 on the identical graph (same node numbering,
    edge order and weights, see :func:`_grid_graph`), so that among equal-cost paths the same
    one is returned. Used only for pairs whose path meets an exact tie."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    na, nb = m.shape
    indptr, indices, target = _grid_graph(na, nb)
    weight = np.where(target >= 0, m.ravel()[target], 0.0)
    graph = csr_matrix((weight, indices, indptr), shape=(na * nb, na * nb))
    _, pred = dijkstra(graph, directed=True, indices=0, return_predecessors=True)
    path = [na * nb - 1]
    while path[-1] != 0:
        path.append(int(pred[path[-1]]))
    cells = np.array(path[::-1], dtype=np.int64)
    return cells // nb, cells % nb


def _cost(dxa: np.ndarray, dya: np.ndarray, dxb: np.ndarray, dyb: np.ndarray) -> np.ndarray:
    """``|v_a - v_b|`` element-wise, computed exactly as the reference's cost matrix is."""
    ex = dxa - dxb
    ey = dya - dyb
    np.multiply(ex, ex, out=ex)
    np.multiply(ey, ey, out=ey)
    np.add(ex, ey, out=ex)
    return np.sqrt(ex, out=ex)


def _batch_medians(A: Packed, ia: np.ndarray, B: Packed, ib: np.ndarray) -> np.ndarray:
    """Unnormalised medians ``(P, 5)`` for pairs ``(A[ia[p]], B[ib[p]])``, all with >= 1 saccade.

    The cumulative-cost grid is ``(Sa + 1, Sb + 1, P)`` (pairs last, contiguous) with a
    sentinel row 0 and column 0 at +inf; cell ``(i, j)`` sits at ``(i + 1, j + 1)``. In the
    flattened grid the cells of anti-diagonal ``i + j = k`` are equally spaced (step ``Sb``),
    so each wavefront step reads its three predecessor diagonals and writes its own through
    strided views; the costs of a diagonal are computed on the fly (B's saccades in reversed
    order line up with A's). The predecessor choice is re-derived from the stored grid while
    backtracking, only along the path.
    """
    la, lb = A.n[ia], B.n[ib]
    sa, sb, p = int(la.max()), int(lb.max()), len(ia)
    dxa = A.feats[F_DX, :sa][:, ia]  # (Sa, P)
    dya = A.feats[F_DY, :sa][:, ia]
    dxb = B.feats[F_DX, :sb][:, ib]  # (Sb, P)
    dyb = B.feats[F_DY, :sb][:, ib]
    w = sb + 1

    dist = np.full((sa + 1, w, p), np.inf)
    dist[1, 1] = 0.0
    df = dist.reshape(-1, p)
    for k in range(1, sa + sb - 1):
        lo, hi = max(0, k - sb + 1), min(k, sa - 1)
        f0 = (lo + 1) * w + (k - lo) + 1  # flat index of cell (lo, k - lo)
        f1 = (hi + 1) * w + (k - hi) + 1
        jlo, jhi = k - hi, k - lo
        rev = slice(jhi, jlo - 1 if jlo > 0 else None, -1)  # B's rows j = k - i for i = lo..hi
        m = np.minimum(df[f0 - w - 1 : f1 - w : sb], df[f0 - w : f1 - w + 1 : sb])  # diag, up
        np.minimum(m, df[f0 - 1 : f1 : sb], out=m)  # left
        c = _cost(dxa[lo : hi + 1], dya[lo : hi + 1], dxb[rev], dyb[rev])
        np.add(c, m, out=df[f0 : f1 + 1 : sb])

    # backtrack from each pair's own end cell (la-1, lb-1) to (0, 0); among predecessors with
    # exactly equal cumulative cost prefer diagonal, then up, then left, and flag the pair
    flat = dist.reshape(-1)
    start = w + 1
    cols = np.arange(p)
    t_max = sa + sb - 1
    nodes = np.full((t_max, p), start, dtype=np.int64)
    valid = np.zeros((t_max, p), dtype=bool)
    tie = np.zeros(p, dtype=bool)
    f = la * w + lb
    nodes[0], valid[0] = f, True
    off_dg, off_up = (w + 1) * p, w * p
    for t in range(1, t_max):
        active = f != start
        if not active.any():
            break
        g = f * p + cols
        d_dg, d_up, d_left = flat[g - off_dg], flat[g - off_up], flat[g - p]
        m = np.minimum(np.minimum(d_dg, d_up), d_left)
        e_dg, e_up, e_left = d_dg == m, d_up == m, d_left == m
        tie |= active & ((e_dg & (e_up | e_left)) | (e_up & e_left))
        back = np.where(e_dg, w + 1, np.where(e_up, w, 1))
        f = np.where(active, f - back, f)
        nodes[t], valid[t] = f, active
    # exact ties on the chosen path: the reference's choice is decided by the settling order
    # of scipy's Dijkstra; re-run that search on the same graph for those (rare) pairs
    for q in np.flatnonzero(tie):
        na, nb = int(la[q]), int(lb[q])
        xa, ya = dxa[:na, q, None], dya[:na, q, None]
        grid = _cost(xa, ya, dxb[None, :nb, q], dyb[None, :nb, q])
        pi, pj = _dijkstra_path(grid)
        nodes[:, q], valid[:, q] = start, False
        nodes[: len(pi), q] = (pi + 1) * w + pj + 1
        valid[: len(pi), q] = True
    used = int(valid.any(axis=1).sum())
    nodes, valid = nodes[:used].T, valid[:used].T  # (P, T)
    length = valid.sum(axis=1)

    ii, jj = np.divmod(nodes, w)
    ii -= 1
    jj -= 1
    sa_idx, sb_idx = ia[:, None], ib[:, None]
    fa, fb = A.feats, B.feats

    def gather(feat: int) -> tuple[np.ndarray, np.ndarray]:
        return fa[feat][ii, sa_idx], fb[feat][jj, sb_idx]

    vals = np.empty((5,) + nodes.shape)  # (5, P, T)
    (xa_, xb_), (ya_, yb_) = gather(F_DX), gather(F_DY)
    vals[0] = _cost(xa_, ya_, xb_, yb_)
    ta, tb = gather(F_THETA)
    ang = np.abs(ta - tb)
    vals[1] = np.where(ang > np.pi, 2 * np.pi - ang, ang)
    ra, rb = gather(F_RHO)
    vals[2] = np.abs(ra - rb)
    (xa_, xb_), (ya_, yb_) = gather(F_X), gather(F_Y)
    vals[3] = np.sqrt((xa_ - xb_) ** 2 + (ya_ - yb_) ** 2)
    da, db = gather(F_DUR)
    ddur = np.abs(da - db)
    with np.errstate(invalid="ignore", divide="ignore"):
        vals[4] = np.where(ddur == 0, 0.0, ddur / np.abs(np.maximum(da, db)))

    # medians over each path (varying lengths): pad with -inf / +inf so that the path's own
    # median sits at one of three fixed order statistics, and partition once
    n_t = nodes.shape[1]
    if n_t < 3:
        vals = np.concatenate([vals, np.full((5, p, 3 - n_t), np.inf)], axis=2)
        valid = np.concatenate([valid, np.zeros((p, 3 - n_t), dtype=bool)], axis=1)
        n_t = 3
    pad = n_t - length
    n_low = (pad + 1) // 2
    rank = np.cumsum(~valid, axis=1)  # 1-based rank of each pad slot
    low = ~valid & (rank <= n_low[:, None])
    vals[:, ~valid] = np.inf
    vals[:, low] = -np.inf
    vals.partition([(n_t - 1) // 2, n_t // 2, n_t // 2 + 1], axis=2)
    p1 = (n_low + (length - 1) // 2)[None, :, None]
    p2 = (n_low + length // 2)[None, :, None]
    p1 = np.broadcast_to(p1, (5, p, 1))
    p2 = np.broadcast_to(p2, (5, p, 1))
    med = 0.5 * (np.take_along_axis(vals, p1, axis=2) + np.take_along_axis(vals, p2, axis=2))
    return med[:, :, 0].T  # (P, 5)


def pairs_medians(A: Packed, ia: np.ndarray, B: Packed, ib: np.ndarray, chunk: int) -> np.ndarray:
    """Medians ``(P, 5)`` for arbitrary pairs with >= 1 saccade each, batched by grid size."""
    out = np.empty((len(ia), 5))
    if len(ia) == 0:
        return out
    order = np.lexsort((B.n[ib], A.n[ia]))  # similar sizes together: little padding
    pos = 0
    while pos < len(order):
        # at most `chunk` pairs, and fewer when their padded grids would exceed the budget
        end = min(len(order), pos + max(1, int(chunk)))
        sel = order[pos:end]
        cells = (A.n[ia[sel]].max() + 1) * (B.n[ib[sel]].max() + 1)
        cap = max(1, _CELL_BUDGET // int(cells))
        if len(sel) > cap:
            sel = sel[:cap]
        out[sel] = _batch_medians(A, ia[sel], B, ib[sel])
        pos += len(sel)
    return out
