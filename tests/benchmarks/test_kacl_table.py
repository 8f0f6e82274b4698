"""``benchmarks/kacl_table.py --quick``: the table's structure (every row, paired CIs, baselines, per class), not its result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.support.benchmarks import load_benchmark


def test_quick_table_has_every_row_interval_and_baseline(tmp_path: Path) -> None:
    bench = load_benchmark("kacl_table")
    out = tmp_path / "res" / "kacl_table"
    assert bench.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work")]) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    a = bench.parse_args(["--quick"])
    rows = {(r["labelled"], r["method"]): r for r in res["rows"]}
    assert set(rows) == {(f, m) for f in a.fractions for m in bench.METHODS}
    ts = {str(t) for t in bench.TS}
    for (f, m), r in rows.items():
        assert r["seeds"] == a.seeds and 0.0 <= r["auc"] <= 1.0 and set(r["t_iou"]) == ts and np.isfinite(r["mean_iou"])
        assert set(r["values"]) == {str(s) for s in a.seeds} and r["per_class"]
        if m == "kacl":  # paired to the supervised run of the same fraction and seeds
            sup = rows[(f, "supervised")]
            diffs = [r["values"][s]["auc"] - sup["values"][s]["auc"] for s in r["values"]]
            assert abs(r["diff_auc"] - np.mean(diffs)) < 1e-12
            assert r["ci_low"] <= r["diff_auc"] <= r["ci_high"] and r["ci_low_t_iou_0.3"] <= r["diff_t_iou_0.3"] <= r["ci_high_t_iou_0.3"]
        else:
            assert r["diff_auc"] is None and r["ci_low"] is None
    base = res["baselines"]
    assert set(base["centred_box"]["t_iou"]) == ts and set(base["attention_box"]["t_iou"]) == ts and base["attention_box"]["threshold"] > 0
    assert len(res["runs"]) == len(a.seeds) * len(a.fractions) * len(bench.METHODS)
    assert all(run["box_extraction"]["tuned_on"] == "validate" for run in res["runs"])
    # KACL's contrastive weight: chosen on validation (best AUC + T(0.3)), then used by every KACL test row
    sweep = res["w_con_sweep"]
    assert {r["split"] for r in sweep} == {"validate"} and sum(r["chosen"] for r in sweep) == 1
    best = max(sweep, key=lambda r: r["auc"] + r["t_iou_0.3"])
    assert res["w_con_chosen"] == best["w_con"] and best["chosen"]
    want = None if best["w_con"] == 0.3 else best["w_con"]
    assert all(run["w_con"] == want for run in res["runs"] if run["method"] == "kacl")
    assert res["settings"]["augment"] is True
    # the baseline's augmentation: both settings scored on validation per fraction, the chosen one trains its test rows
    for f in a.fractions:
        cand = [r for r in res["supervised_augment"] if r["labelled"] == f]
        assert {r["augment"] for r in cand} == {True, False} and {r["split"] for r in cand} == {"validate"}
        pick = max(cand, key=lambda r: r["auc"] + r["t_iou_0.3"])
        assert pick["chosen"] and sum(r["chosen"] for r in cand) == 1
        assert all(run["augment"] == pick["augment"] for run in res["runs"] if run["method"] == "supervised" and run["labelled"] == f)
    assert all(run["augment"] is True for run in res["runs"] if run["method"] == "kacl")
    # the "why" diagnostics of each fraction's first-seed KACL run
    assert set(res["diagnostics"]) == {f"{f:.0%}" for f in a.fractions}
    for d in res["diagnostics"].values():
        assert d["n_images"] > 0 and d["loss"]["w_con"] > 0 and np.isfinite(d["loss"]["contrastive"])
        for c, r in d["roi"].items():
            assert 0.0 <= r["mean_iou"] <= 1.0 and 0.0 <= r["share_iou_0.3"] <= 1.0 and r["n"] > 0
        for view in ("cam_roi", "whole_image"):
            assert all(0.0 <= v <= 1.0 for v in d["radiomics_auc"][view].values())
    md = out.with_suffix(".md").read_text()
    assert "attention box" in md and "Per class" in md and "## Why" in md and out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
