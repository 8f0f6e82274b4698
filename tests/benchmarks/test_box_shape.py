"""``benchmarks/box_shape.py`` on a few generated studies with the shipped models: both
settings tuned on validation, the paired rows consistent with the per-box scores, the
extent-only setting without any box size; not its result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.benchmarks import load_benchmark


def test_box_shape_rows_pair_the_two_shapes(tmp_path: Path) -> None:
    from gazerad.synth.study import generate_studies

    data = tmp_path / "s"
    generate_studies(data, n=24, seed=0, size=512, workers=1, progress=False)
    bench = load_benchmark("box_shape")
    out = tmp_path / "res" / "box_shape"
    res = bench.main(["--tune", str(data), "--data", f"{data}:test", f"{data}:validate", "--out", str(out)])
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == json.loads(json.dumps(res["rows"]))
    assert out.with_suffix(".png").stat().st_size > 0 and "| class | boxes |" in out.with_suffix(".md").read_text()
    ext, peak = res["settings"]["extent"], res["settings"]["peak"]
    assert "box_size" not in ext and all("box_size" not in v for v in ext["per_class"].values())
    assert set(ext["per_class"]) == set(peak["per_class"]) and "box_size" not in peak
    for c, v in peak["per_class"].items():  # peak boxes may only win a class where they are at least as good on validation
        assert (v["t_iou_0.3"], v["mean_best_iou"]) >= (ext["per_class"][c]["t_iou_0.3"], ext["per_class"][c]["mean_best_iou"])
    for row in res["rows"]:
        al = row["per_class"]["all"]
        assert al["n_boxes"] == sum(v["n_boxes"] for g, v in row["per_class"].items() if g != "all")
        for v in row["per_class"].values():
            assert 0.0 <= v["t_iou_0.3_extent"] <= 1.0 and 0.0 <= v["t_iou_0.3_peak"] <= 1.0
            assert v["diff"] == pytest.approx(v["t_iou_0.3_peak"] - v["t_iou_0.3_extent"], abs=1e-12)
            if v["n_boxes"] > 1:
                assert v["ci_low"] <= v["diff"] <= v["ci_high"]
        assert np.isfinite(row["boxes_per_class"]["extent"]) and row["images"] > 0
