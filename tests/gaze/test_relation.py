"""Relation matrix mechanics: reader aggregation, dense == sparse, shards merge, cache, torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gazerad.gaze import GazeRecord, SimilarityScheme
from gazerad.gaze.relation import compute_relation, load_relation, merge_relations


class CentroidScheme(SimilarityScheme):
    """exp(-|centroid_a - centroid_b| / 100): simple, exact, symmetric, 1 on identical."""

    name = "centroid-test"

    def __init__(self, scale: float = 100.0) -> None:
        self.scale = scale

    def features(self, records):
        return np.array([r.xy.mean(0) for r in records])

    def block(self, fa, fb):
        d = np.linalg.norm(fa[:, None, :] - fb[None, :, :], axis=-1)
        return np.exp(-d / self.scale)


def _records(n_images: int, seed: int = 0) -> list[GazeRecord]:
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n_images):
        for r in range(1 + i % 3):  # 1 to 3 readers
            xy = rng.uniform(0, 512, (5, 2))
            t = np.cumsum(rng.uniform(0.1, 0.4, 5))
            recs.append(GazeRecord(f"img{i:03d}", f"R{r}", np.column_stack([xy, t, t + 0.2]), (512, 512)))
    return recs


def test_reader_aggregation_rule_is_mean_over_reader_pairs():
    recs = _records(5)
    rel = compute_relation(recs, CentroidScheme(), block_size=2, workers=1, progress=False)
    m = rel.dense()
    sch = CentroidScheme()
    by = {}
    for r in recs:
        by.setdefault(r.image_id, []).append(r)
    i, j = rel.index_of("img001"), rel.index_of("img002")  # 2 readers x 3 readers
    expect = np.mean([sch.similarity(a, b) for a in by["img001"] for b in by["img002"]])
    assert m[i, j] == pytest.approx(expect, rel=1e-5) and m[j, i] == pytest.approx(expect, rel=1e-5)
    assert np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T) and m.min() >= 0 and m.max() <= 1
    mx = compute_relation(recs, CentroidScheme(), aggregate="max", workers=1, progress=False).dense()
    assert mx[i, j] == pytest.approx(max(sch.similarity(a, b) for a in by["img001"] for b in by["img002"]), rel=1e-5)


def test_blockwise_parallel_equals_single_block_and_images_without_gaze():
    recs = _records(23)
    ids = [f"img{i:03d}" for i in range(23)] + ["no-gaze"]
    one = compute_relation(recs, CentroidScheme(), image_ids=ids, block_size=1000, workers=1, progress=False).dense()
    many = compute_relation(recs, CentroidScheme(), image_ids=ids, block_size=4, workers=2, progress=False).dense()
    np.testing.assert_allclose(one, many, atol=1e-6)
    assert one[-1, -1] == 1 and not one[-1, :-1].any()


def test_sparse_topk_and_threshold_match_dense():
    recs = _records(30, seed=1)
    dense = compute_relation(recs, CentroidScheme(), workers=1, progress=False).dense()
    k = 4
    sp_rel = compute_relation(recs, CentroidScheme(), top_k=k, block_size=7, workers=2, progress=False)
    assert sp_rel.is_sparse
    s = sp_rel.dense()
    off = dense - np.eye(len(dense))
    for i in range(len(dense)):
        top = np.argsort(-off[i])[:k]
        np.testing.assert_allclose(s[i, top], dense[i, top], rtol=1e-5)  # every row keeps its top-k
    nz = s != 0
    np.testing.assert_allclose(s[nz], dense[nz], rtol=1e-5)  # kept values are exact
    assert np.allclose(s, s.T)
    thr = compute_relation(recs, CentroidScheme(), threshold=0.5, block_size=7, workers=1, progress=False).dense()
    np.testing.assert_allclose(thr, np.where(dense >= 0.5, dense, 0.0), rtol=1e-5)


def test_pruning_candidates_on_the_way_is_lossless(monkeypatch):
    import gazerad.gaze.relation as rel_mod

    recs = _records(60, seed=4)
    for kw in ({"top_k": 3}, {"top_k": 2, "threshold": 0.8}, {"threshold": 0.6}):
        plain = compute_relation(recs, CentroidScheme(), block_size=5, workers=1, progress=False, **kw).dense()
        calls = []
        real = rel_mod._prune_candidates
        monkeypatch.setattr(rel_mod, "_PRUNE_MIN_ENTRIES", 1)
        monkeypatch.setattr(rel_mod, "_prune_candidates", lambda *a, **k: calls.append(1) or real(*a, **k))
        pruned = compute_relation(recs, CentroidScheme(), block_size=5, workers=1, progress=False, **kw).dense()
        monkeypatch.undo()
        assert calls, "pruning never ran"
        np.testing.assert_allclose(pruned, plain, atol=1e-6)


@pytest.mark.parametrize("sparse", [False, True])
def test_shards_merge_to_the_full_relation(tmp_path, sparse):
    recs = _records(20, seed=2)
    kw = dict(block_size=3, workers=1, progress=False, top_k=5 if sparse else None)
    full = compute_relation(recs, CentroidScheme(), **kw).dense()
    paths = []
    for i in range(3):
        part = compute_relation(recs, CentroidScheme(), shard=(i, 3), **kw)
        paths.append(part.save(tmp_path / f"p{i}.npz"))
    merged = merge_relations(paths)
    np.testing.assert_allclose(merged.dense(), full, atol=1e-6)
    merged.save(tmp_path / "m.npz")
    np.testing.assert_allclose(load_relation(tmp_path / "m.npz").dense(), full, atol=1e-6)
    with pytest.raises(ValueError, match="shards"):
        merge_relations(paths[:2])


def test_cache_by_content(tmp_path):
    recs = _records(6)
    a = compute_relation(recs, CentroidScheme(), cache_dir=tmp_path, workers=1, progress=False)
    assert "cached" not in a.params and len(list(tmp_path.glob("*.npz"))) == 1
    b = compute_relation(recs, CentroidScheme(), cache_dir=tmp_path, workers=1, progress=False)
    assert b.params.get("cached") and np.array_equal(a.dense(), b.dense())
    recs[0].fixations[0, 0] += 1.0  # content changed -> recomputed
    compute_relation(recs, CentroidScheme(), cache_dir=tmp_path, workers=1, progress=False)
    assert len(list(tmp_path.glob("*.npz"))) == 2
    c = compute_relation(recs, CentroidScheme(scale=50.0), cache_dir=tmp_path, workers=1, progress=False)
    assert "cached" not in c.params


def test_torchrun_two_ranks_equal_single_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(f"""
        from tests.gaze.test_relation import CentroidScheme, _records
        from gazerad.gaze.relation import compute_relation_distributed
        compute_relation_distributed({str(tmp_path / "rel.npz")!r}, gaze=_records(15), scheme=CentroidScheme(),
                                     block_size=4, workers=1, progress=False)
    """)
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))  # the repo: tests.gaze
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-port=29517", str(script)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    full = compute_relation(_records(15), CentroidScheme(), workers=1, progress=False).dense()
    np.testing.assert_allclose(load_relation(tmp_path / "rel.npz").dense(), full, atol=1e-6)
    assert not list(tmp_path.glob("*.part*"))
