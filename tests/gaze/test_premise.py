"""McGIP's premise on the synthetic studies, and `gazerad relation` end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gazerad.data import read_labels
from gazerad.gaze import load_gaze
from gazerad.gaze.relation import compute_relation, load_relation
from gazerad.synth import generate_studies


@pytest.fixture(scope="module")
def premise_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("premise") / "s"
    generate_studies(out, n=90, seed=3, workers=2, progress=False)
    return out


def _share_means(rel_dense: np.ndarray, labels: dict[str, list[str]], ids: list[str]) -> tuple[float, float]:
    share = np.array([[bool(set(labels[a]) & set(labels[b])) for b in ids] for a in ids])
    off = ~np.eye(len(ids), dtype=bool)
    return float(rel_dense[share & off].mean()), float(rel_dense[~share & off].mean())


@pytest.mark.parametrize(
    ("scheme", "params", "margin", "max_p"),
    [
        ("moment", {}, 0.02, 0.05),
        # GzPT's own eps (0.2, tuned on knee radiographs): higher on average, but DBSCAN
        # chains a chest search into 2-3 long moments, so the margin is small (p ~ 0.1)
        ("tima", {}, 0.005, None),
        # a density scale for chest sweeps: dwell episodes become their own moments
        ("tima", {"eps": 0.1}, 0.05, 0.05),
    ],
    ids=["moment", "tima-eps0.2", "tima-eps0.1"],
)
def test_similarity_is_higher_for_images_sharing_a_finding(premise_set, scheme, params, margin, max_p):
    """McGIP's premise: images sharing a finding class are looked at more alike.

    Besides the raw means, the difference must beat a label-permutation null (``p < max_p``)
    where one is given, so a bare comparison cannot pass by chance.
    """
    labels = read_labels(premise_set / "labels.csv")
    ids = list(labels)
    m = compute_relation(load_gaze(premise_set), scheme, image_ids=ids, workers=2, progress=False, **params).dense()
    same, other = _share_means(m, labels, ids)
    assert same > other + margin, (scheme, same, other)
    if max_p is None:
        return
    rng = np.random.default_rng(0)
    observed = same - other
    null = []
    for _ in range(200):
        order = rng.permutation(len(ids))
        perm = {ids[k]: labels[ids[order[k]]] for k in range(len(ids))}
        a, b = _share_means(m, perm, ids)
        null.append(a - b)
    p_value = (1 + sum(x >= observed for x in null)) / (1 + len(null))
    assert p_value < max_p, (scheme, observed, p_value)


def test_cli_relation_end_to_end(studies, tmp_path):
    out = tmp_path / "tima.npz"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gazerad",
            "relation",
            "--gaze",
            str(studies),
            "--scheme",
            "tima",
            "--out",
            str(out),
            "--images",
            str(studies / "labels.csv"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rel = load_relation(out)
    m = rel.dense()
    assert rel.image_ids == list(read_labels(studies / "labels.csv"))
    assert np.allclose(m, m.T) and np.allclose(np.diag(m), 1) and m.min() >= 0 and m.max() <= 1
    assert (m[~np.eye(len(m), dtype=bool)] > 0).mean() > 0.5  # images with gaze relate to each other
    sparse = tmp_path / "mom.npz"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gazerad",
            "relation",
            "--gaze",
            str(studies / "reflacx" / "main_data"),
            "--scheme",
            "moment",
            "--top-k",
            "3",
            "--out",
            str(sparse),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    s = load_relation(sparse)
    assert s.is_sparse and (np.diff(s.matrix.indptr) >= 4).all()  # diagonal + at least top-3 per row
    bad = subprocess.run(
        [sys.executable, "-m", "gazerad", "relation", "--gaze", str(tmp_path), "--out", str(tmp_path / "x.npz")], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and str(tmp_path) in bad.stderr and "Traceback" not in bad.stderr
