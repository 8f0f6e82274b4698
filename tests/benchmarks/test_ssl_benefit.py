"""``benchmarks/ssl_benefit.py --quick``: the protocol's structure (every row, paired CIs, diagnostics), not its result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.benchmarks import load_benchmark


def test_paired_summary_matches_a_hand_computed_t_interval() -> None:
    from gazerad.pretrain.diagnostics import paired_summary

    s = paired_summary({0: 0.8, 1: 0.7, 2: 0.9}, {0: 0.7, 1: 0.7, 2: 0.6})
    d = np.array([0.1, 0.0, 0.3])
    half = 4.302652729749462 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 dof)
    assert s["mean"] == pytest.approx(0.8) and s["std"] == pytest.approx(0.1)
    assert s["diff_vs_plain"] == pytest.approx(d.mean()) and s["ci_low"] == pytest.approx(d.mean() - half, rel=1e-9)
    assert s["ci_high"] == pytest.approx(d.mean() + half, rel=1e-9) and s["seeds"] == [0, 1, 2]


def test_relation_class_signal_counts_pairs() -> None:
    from gazerad.pretrain.diagnostics import relation_class_signal

    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    m = np.eye(4)
    m[0, 1] = m[1, 0] = 0.9  # a true pair
    m[2, 3] = m[3, 2] = 0.8  # a false pair
    s = relation_class_signal(m, labels, 0.5)
    assert s["positive_pairs"] == pytest.approx(2 / 6) and s["share_same_finding"] == pytest.approx(0.5)
    assert s["base_rate"] == pytest.approx(1 / 6) and s["lift"] == pytest.approx(3.0)


@pytest.mark.timeout(1800)  # ~3 min alone; the CI default of 600 s was hit only on a machine busy with the full table
def test_quick_run_has_every_row_and_interval(tmp_path: Path) -> None:
    bench = load_benchmark("ssl_benefit")
    out = tmp_path / "res" / "ssl_benefit"
    assert bench.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    a = bench.parse_args(["--quick"])
    rows = {(r["framework"], r["method"], r["fraction"], r["protocol"]): r for r in res["rows"]}
    for fw in bench.FRAMEWORKS:
        for m in bench.METHODS:
            for f in a.fractions:
                for p in bench.PROTOCOLS:
                    r = rows[(fw, m, f, p)]
                    assert r["seeds"] == a.seeds and np.isfinite(r["mean"]) and np.isfinite(r["std"])
                    if m != "plain":  # paired to the same framework's plain run
                        assert r["ci_low"] <= r["diff_vs_plain"] <= r["ci_high"]
                    else:
                        assert r["diff_vs_plain"] is None and "vs_random_init" in r
    for f in a.fractions:
        assert rows[("random_init", "-", f, "linear")]["seeds"] == a.seeds and ("supervised", "-", f, "finetune") in rows
    assert len(res["precondition"]) == len(bench.FRAMEWORKS)
    d = res["diagnostics"]
    assert {"moment", "multimatch", "cc"} <= set(d["relation"]["alternatives_on_validation"]) and "lesion_keep_rate" in d["attention"]
    assert len(res["runs"]) == len(a.seeds) * len(bench.FRAMEWORKS) * len(bench.METHODS) and all(r["history"] for r in res["runs"])
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG" and "Precondition" in out.with_suffix(".md").read_text()
