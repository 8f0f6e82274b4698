"""Gaze-similarity schemes (gazerad.gaze.similarity, and multimatch when present):
the scheme contract on random records, and hand-computed values of the building blocks."""

from __future__ import annotations

import numpy as np
import pytest

from gazerad.gaze import available_schemes, get_scheme
from gazerad.gaze.record import GazeRecord
from gazerad.gaze.similarity import (
    DHashScheme,
    TIMAScheme,
    dhash_bits,
    dtw_path_cost,
    moment_features,
    quantise_8bit,
    rd,
    tima_distance,
)

OURS = ["moment", "dhash", "tima", "cc", "kl", "dtw"]
SCHEMES = OURS + (["multimatch"] if "multimatch" in available_schemes() else [])


def _walk(rng: np.random.Generator, n: int, size: tuple[int, int], centres: int = 3) -> np.ndarray:
    """A clustered random walk: ``centres`` regions visited in turn, jittered fixations."""
    h, w = size
    cs = rng.uniform([0.1 * w, 0.1 * h], [0.9 * w, 0.9 * h], (centres, 2))
    which = np.sort(rng.integers(0, centres, n))
    xy = cs[which] + rng.normal(0, 0.05 * min(h, w), (n, 2))
    xy = np.clip(xy, 0.5, [w - 0.5, h - 0.5])
    d = rng.uniform(0.1, 0.6, n)
    t0 = np.cumsum(d + 0.03) - d
    return np.column_stack([xy, t0, t0 + d])


def _records(seed: int = 0, n: int = 10) -> list[GazeRecord]:
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n):
        size = [(300, 400), (512, 512), (200, 120)][i % 3]
        f = _walk(rng, int(rng.integers(4, 35)), size, int(rng.integers(1, 4)))
        ppd = None if i % 4 == 3 else float(rng.uniform(10, 30))
        recs.append(GazeRecord(f"im{i}", "r", f, image_size=None if i % 5 == 4 else size, pixels_per_degree=ppd))
    return recs


RECS = _records()
EMPTY = GazeRecord("empty", "r", np.zeros((0, 4)), image_size=(100, 100), pixels_per_degree=10.0)


@pytest.fixture(scope="module", params=SCHEMES)
def scheme_feats(request):
    sch = get_scheme(request.param)
    return sch, sch.features(RECS)


# ---------------------------------------------------------------- the contract, every scheme


def test_identical_symmetric_bounded(scheme_feats):
    sch, f = scheme_feats
    m = np.asarray(sch.block(f, f), dtype=np.float64)
    assert m.shape == (len(RECS), len(RECS))
    assert np.isfinite(m).all()
    assert m.min() >= 0.0 and m.max() <= 1.0
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-9)
    np.testing.assert_allclose(m, m.T, atol=1e-9)
    assert m.min() < 0.999  # not trivially all ones
    mm = sch.matrix(RECS)
    np.testing.assert_allclose(mm, m, atol=1e-9)


def test_block_equals_pairwise_and_chunks(scheme_feats):
    sch, f = scheme_feats
    m = np.asarray(sch.block(f, f), dtype=np.float64)
    ia, ib = [0, 2, 3, 7], [1, 2, 5, 6, 9]
    sub = np.asarray(sch.block(sch.take(f, ia), sch.take(f, ib)), dtype=np.float64)
    np.testing.assert_allclose(sub, m[np.ix_(ia, ib)], atol=1e-9)
    sl = np.asarray(sch.block(sch.take(f, slice(2, 6)), sch.take(f, slice(0, 10))), dtype=np.float64)
    np.testing.assert_allclose(sl, m[2:6], atol=1e-9)
    for i, j in [(0, 1), (4, 8), (3, 3), (9, 2)]:
        assert sch.similarity(RECS[i], RECS[j]) == pytest.approx(m[i, j], abs=1e-9)


@pytest.mark.parametrize("name", OURS)
def test_empty_record_scores_zero(name):
    sch = get_scheme(name)
    f = sch.features(RECS[:3] + [EMPTY])
    m = sch.block(f, f)
    assert np.all(m[3] == 0) and np.all(m[:, 3] == 0)
    assert sch.matrix(RECS[:3] + [EMPTY])[3, 3] == 1.0  # matrix() puts 1 on the diagonal


def test_parameters_recorded():
    assert get_scheme("moment", weights=(0.8, 0.2)).params()["weights"] == (0.8, 0.2)
    assert get_scheme("dtw", scale=2.0).params()["scale"] == 2.0
    assert "chunk_pairs" not in get_scheme("tima").params()
    with pytest.raises(ValueError):
        get_scheme("moment", weights=(0.8, 0.8))


# ---------------------------------------------------------------- rd and moments


def test_rd_hand_values():
    assert rd(3.0, 4.0) == pytest.approx(0.25)
    assert rd(4.0, 3.0) == pytest.approx(0.25)
    assert rd(2.0, 2.0) == 0.0
    assert rd(0.0, 0.0) == 0.0
    assert rd(np.nan, 1.0) == 1.0 and rd(1.0, np.nan) == 1.0
    assert rd(0.0, -1.0) == 1.0  # max is 0
    np.testing.assert_allclose(rd(np.array([1.0, 2.0])[:, None], np.array([2.0, 4.0])[None, :]), [[0.5, 0.75], [0.0, 0.5]])


def test_quantise_8bit():
    q = quantise_8bit(np.array([[0.5, 1.0], [0.25, 0.0]]))
    np.testing.assert_array_equal(q, [[128, 255], [64, 0]])
    assert not quantise_8bit(np.zeros((3, 3))).any()


def test_moment_features_hand_values():
    m00, hu1 = moment_features(np.array([[255.0, 0.0], [0.0, 255.0]]))
    # centroid (0.5, 0.5); mu20 = mu02 = 2 * 255 * 0.25
    assert m00 == 510.0
    assert hu1 == pytest.approx(255.0 / 510.0**2)
    m00, hu1 = moment_features(np.array([[255.0, 255.0, 255.0]]))
    assert m00 == 765.0 and hu1 == pytest.approx(510.0 / 765.0**2)  # mu20 = 255 (1 + 0 + 1), mu02 = 0
    m00, hu1 = moment_features(np.array([[0.0, 0.0], [0.0, 255.0]]))
    assert m00 == 255.0 and hu1 == 0.0
    m00, hu1 = moment_features(np.zeros((2, 2)))
    assert m00 == 0.0 and np.isnan(hu1)
    # transposition changes nothing for Hu1 (eta20 + eta02), and the batch axis is kept
    img = np.random.default_rng(0).integers(0, 256, (2, 5, 7)).astype(float)
    m, h = moment_features(img)
    assert m.shape == (2,) and h == pytest.approx(moment_features(np.swapaxes(img, -1, -2))[1])


def test_moment_similarity_hand_values():
    fa = np.array([[510.0, 0.001]])
    fb = np.array([[765.0, 0.002]])
    # rd(M00) = 255 / 765 = 1/3, rd(Hu1) = 0.5
    assert get_scheme("moment").block(fa, fb)[0, 0] == pytest.approx(1 - (0.5 * 0.5 + 0.5 / 3))
    assert get_scheme("moment", weights=(0.8, 0.2)).block(fa, fb)[0, 0] == pytest.approx(1 - (0.8 * 0.5 + 0.2 / 3))


# ---------------------------------------------------------------- dHash


def test_dhash_bits_hand_values():
    dec = np.tile(np.arange(9, 0, -1, dtype=float), (8, 1))
    assert dhash_bits(dec).all() and dhash_bits(dec).shape == (64,)
    assert not dhash_bits(dec[:, ::-1]).any()
    a = np.zeros((8, 9))
    a[2, 4] = 1.0  # brighter than its right neighbour: bit (2, 4) = index 20 only
    bits = dhash_bits(a)
    assert np.flatnonzero(bits).tolist() == [20]
    # an 16 x 18 map is area-resized to 8 x 9 first
    np.testing.assert_array_equal(dhash_bits(np.kron(a, np.ones((2, 2)))), bits)


def test_dhash_similarity_hand_values():
    def feat(idx: list[int], valid: int = 1) -> np.ndarray:
        f = np.zeros(65, dtype=np.uint8)
        f[idx] = 1
        f[64] = valid
        return f

    fa = np.stack([feat([20]), feat([]), feat([20, 21])])
    fb = np.stack([feat([20, 21]), feat([]), feat([21]), feat([20], valid=0)])
    m = DHashScheme().block(fa, fb)
    expect = [
        [1 / np.sqrt(2), 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],  # two all-zero hashes: 1; one: 0
        [1.0, 0.0, 1 / np.sqrt(2), 0.0],
    ]
    np.testing.assert_allclose(m, expect, atol=1e-12)


# ---------------------------------------------------------------- CC and KL


def test_cc_kl_hand_values():
    a = np.array([[[1.0, 0.0], [0.0, 0.0]]], dtype=np.float32)
    b = np.array([[[0.0, 1.0], [0.0, 0.0]]], dtype=np.float32)
    # CC = -0.25 / 0.75 = -1/3 -> (1 - 1/3) / 2
    assert get_scheme("cc").block(a, b)[0, 0] == pytest.approx(1 / 3)
    assert get_scheme("cc").block(a, a)[0, 0] == pytest.approx(1.0)
    eps = 1e-3
    k = get_scheme("kl", eps=eps)
    p1, p0 = (1 + eps) / (1 + 4 * eps), eps / (1 + 4 * eps)
    ksym = 2 * (p1 - p0) * np.log(p1 / p0)
    assert k.block(a, b)[0, 0] == pytest.approx(np.exp(-ksym))
    assert get_scheme("kl", eps=eps, scale=10.0).block(a, b)[0, 0] == pytest.approx(np.exp(-ksym / 10))


# ---------------------------------------------------------------- DTW


def test_dtw_scheme_matches_dtaidistance():
    from dtaidistance import dtw_ndim

    sch = get_scheme("dtw", scale=0.5)
    f = sch.features(RECS)
    ref = np.array([[dtw_ndim.distance(a, b) for b in f] for a in f])
    np.testing.assert_allclose(sch.distances(f, f), ref, atol=1e-12)
    np.testing.assert_allclose(sch.block(f[:3], f[2:]), np.exp(-ref[:3, 2:] / 0.5), atol=1e-12)
    # normalised coordinates: x / W, y / H
    r = RECS[0]
    np.testing.assert_allclose(f[0], r.fixations[:, :2] / [r.image_size[1], r.image_size[0]])


# ---------------------------------------------------------------- TIMA


def test_dtw_path_cost_hand_values():
    assert dtw_path_cost(np.array([[0.0, 1.0], [1.0, 0.0]])) == (0.0, 2)
    # D: [[1, 3, 6], [5, 2, 3]]; path (0,0) (1,1) (1,2)
    assert dtw_path_cost(np.array([[1.0, 2.0, 3.0], [4.0, 1.0, 1.0]])) == (3.0, 3)
    # ties in D: the shortest path (the diagonal)
    assert dtw_path_cost(np.zeros((3, 3))) == (0.0, 3)
    assert dtw_path_cost(np.array([[0.5]])) == (0.5, 1)


def test_tima_distance_hand_values():
    # costs: [0.7 * rd(100, 200) + 0, 0] = [0.35, 0]; path of 2 cells
    d, n = tima_distance([[100.0, 1.0]], [[200.0, 1.0], [100.0, 1.0]])
    assert (d, n) == (pytest.approx(0.35), 2)
    sch = TIMAScheme()
    fa = [np.array([[100.0, 1.0]])]
    fb = [np.array([[200.0, 1.0], [100.0, 1.0]])]
    assert sch.block(fa, fb)[0, 0] == pytest.approx(1 - 0.35 / 2)
    assert sch.block(fb, fa)[0, 0] == pytest.approx(1 - 0.35 / 2)


def test_tima_batched_dtw_equals_reference():
    rng = np.random.default_rng(5)
    seqs = [np.column_stack([rng.uniform(100, 2000, k), rng.uniform(1e-3, 5e-3, k)]) for k in rng.integers(1, 6, 25)]
    seqs[3] = seqs[7].copy()  # an exact repeat
    seqs[4][0, 1] = 0.0  # Hu1 = 0 (all mass in one pixel)
    sch = TIMAScheme(chunk_pairs=7)  # force sub-chunking
    m = sch.block(seqs, seqs)
    ref = np.array([[1 - np.divide(*tima_distance(a, b)) for b in seqs] for a in seqs])
    np.testing.assert_allclose(m, ref, atol=1e-12)
    np.testing.assert_allclose(sch.block(seqs[:9], seqs[5:]), ref[:9, 5:], atol=1e-12)
    assert m[3, 7] == pytest.approx(1.0)


def test_tima_two_temporal_clusters():
    rng = np.random.default_rng(2)
    a = rng.normal([100, 120], 5, (10, 2))
    b = rng.normal([400, 380], 5, (10, 2))
    xy = np.vstack([a, b])
    t0 = np.arange(20) * 0.3
    rec = GazeRecord("x", "r", np.column_stack([xy, t0, t0 + 0.25]), image_size=(512, 480), pixels_per_degree=20.0)
    sch = TIMAScheme()
    groups = sch.moments(rec)
    assert [g.tolist() for g in groups] == [list(range(10)), list(range(10, 20))]
    seq = sch.sequence(rec)
    assert seq.shape == (2, 2) and (seq[:, 0] > 0).all() and (seq[:, 1] > 0).all()
    assert sch.similarity(rec, rec) == 1.0
    # all-noise scanpath: one moment made of all fixations
    few = GazeRecord("y", "r", np.column_stack([xy[::4], t0[:5], t0[:5] + 0.2]), image_size=(512, 480), pixels_per_degree=20.0)
    assert [g.tolist() for g in TIMAScheme(min_samples=50).moments(few)] == [list(range(5))]


def _dtw_block_in_worker(_: int) -> float:
    sch = get_scheme("dtw")
    f = sch.features(RECS)
    return float(sch.block(f, f).sum())


def test_dtw_in_forked_workers_after_parent_used_openmp():
    # libgomp hangs in a child forked after the parent ran OpenMP; the scheme must go serial there
    import multiprocessing as mp

    sch = get_scheme("dtw")
    f = sch.features(RECS)
    expect = float(sch.block(f, f).sum())  # OpenMP in this process first
    pool = mp.get_context("fork").Pool(2)
    try:
        got = pool.map_async(_dtw_block_in_worker, range(2)).get(timeout=60)
    finally:
        pool.terminate()
    assert got == [pytest.approx(expect)] * 2


def test_the_registry_module_imports_no_scheme_module() -> None:
    """``gaze/base.py`` holds the registry; the schemes register themselves when
    ``gaze/schemes.py`` imports them (no import circle, no ``except ImportError``)."""
    import ast
    import inspect

    import gazerad.gaze.base as base

    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(base))):
        if isinstance(node, ast.ImportFrom):
            names.add(node.module or "")
            names |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    assert not [n for n in names if n.startswith(("gazerad.gaze.similarity", "gazerad.gaze.multimatch", "gazerad.gaze.schemes"))], names
    assert "except ImportError" not in inspect.getsource(__import__("gazerad.gaze.schemes", fromlist=["x"]))
