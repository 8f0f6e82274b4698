"""Temperature scaling: recovers a known over-/under-confidence, lowers the calibration error,
keeps the ranking, refuses bad input; ``train_kacl`` fits it on the validation split."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from gazerad.kacl.calibration import binary_nll, calibrated_probabilities, expected_calibration_error, fit_temperature, reliability_bins


def _case(scale: float, n: int = 4000, c: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(true logits); the 'model' reports ``scale`` x the true logits."""
    rng = np.random.default_rng(seed)
    true = rng.normal(-0.5, 1.8, size=(n, c))
    y = (rng.random((n, c)) < calibrated_probabilities(true)).astype(np.float64)
    return scale * true, y


@pytest.mark.parametrize("scale", [3.0, 0.5])
def test_temperature_recovers_the_miscalibration_and_fixes_reliability(scale: float) -> None:
    z, y = _case(scale)
    t = fit_temperature(z, y)
    assert t == pytest.approx(scale, rel=0.08)
    before, after = expected_calibration_error(calibrated_probabilities(z), y), expected_calibration_error(calibrated_probabilities(z, t), y)
    assert before > 0.06 and after < 0.025
    assert binary_nll(z, y, t) < binary_nll(z, y)
    # a reliability diagram of the calibrated scores sits on the diagonal in every populated bin
    for b in reliability_bins(calibrated_probabilities(z, t), y):
        if b["n"] >= 400:
            assert abs(b["positive_rate"] - b["mean_probability"]) < 0.05, b


def test_calibrated_model_is_left_alone_and_ranking_is_kept() -> None:
    z, y = _case(1.0, seed=1)
    assert fit_temperature(z, y) == pytest.approx(1.0, abs=0.08)
    p0, p1 = calibrated_probabilities(z), calibrated_probabilities(z, 2.5)
    for k in range(z.shape[1]):
        assert roc_auc_score(y[:, k], p0[:, k]) == pytest.approx(roc_auc_score(y[:, k], p1[:, k]), abs=1e-12)
    assert np.isfinite(calibrated_probabilities(np.array([-1e4, 1e4]), 0.05)).all()


def test_bad_input_is_refused() -> None:
    z, y = _case(1.0, n=10)
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(np.where(z > 0, np.nan, z), y)
    with pytest.raises(ValueError, match="same"):
        fit_temperature(z[:, :2], y)
    with pytest.raises(ValueError, match="0 or 1"):
        fit_temperature(z, y * 2)
    with pytest.raises(ValueError, match="> 0"):
        calibrated_probabilities(z, 0.0)


def test_train_kacl_fits_temperature_and_box_extraction_on_validation(tmp_path: Path) -> None:
    from gazerad.kacl import KACLConfig, evaluate_kacl, load_kacl, train_kacl
    from gazerad.kacl.evaluate import BLUR_GRID, BOX_SHAPES, THRESHOLD_GRID
    from gazerad.serving.infer import LocalizationService
    from tests.support.studies import SIZE, mass_boxes, mass_studies

    src = mass_studies(tmp_path / "src", n=48, seed=11)
    data = tmp_path / "set"
    data.mkdir()
    os.symlink(src / "images", data / "images")
    rows = list(csv.reader((src / "labels.csv").open()))
    for r in rows[1:]:
        if 24 <= int(r[0][:5]) < 34:
            r[2] = "validate"
    with (data / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    os.symlink(src / "BBox_List_2017.csv", data / "BBox_List_2017.csv")
    cfg = KACLConfig(data=str(data), out=str(tmp_path / "run"), method="supervised", backbone="resnet10", image_size=64, epochs=2, batch_size=8, progress=False)
    res = train_kacl(cfg)
    cal = load_kacl(tmp_path / "run")[1]["calibration"]
    assert cal == res["calibration"] and cal["split"] == "validate" and cal["n_images"] == 10
    assert 0.05 <= cal["temperature"] <= 20 and cal["nll_after"] <= cal["nll_before"] + 1e-9
    box = load_kacl(tmp_path / "run")[1]["box_extraction"]
    assert box["split"] == "validate" and box["n_boxes"] == sum(24 <= int(k[:5]) < 34 for k in mass_boxes(src))
    layers = ["backbone.layer1", "backbone.layer2", "backbone.layer3", "backbone.layer4"]
    assert len(box["grid"]) == len(layers) * len(THRESHOLD_GRID) * len(BLUR_GRID) * len(BOX_SHAPES) and {g["cam_layer"] for g in box["grid"]} == set(layers)
    assert box["cam_threshold"] in THRESHOLD_GRID and box["blur"] in BLUR_GRID and box["cam_layer"] in layers
    extents = [g for g in box["grid"] if "box" not in g]
    peaks = [g for g in box["grid"] if g.get("box") == "peak"]
    assert len(extents) == len(peaks)
    # the overall setting (classes without boxes of their own) is a component extent: no size to centre
    assert "box_size" not in box and (box["t_iou_0.3"], box["mean_best_iou"]) == max((g["t_iou_0.3"], g["mean_best_iou"]) for g in extents)
    # peak entries box every Mass at the median validation Mass box, as fractions of the image
    truth = [b for k, b in mass_boxes(src).items() if 24 <= int(k[:5]) < 34]
    want = [float(np.median([b[2] for b in truth])) / SIZE, float(np.median([b[3] for b in truth])) / SIZE]
    assert all(g["per_class"]["Mass"]["box_size"] == pytest.approx(want, rel=1e-9) for g in peaks)
    # per class: the grid entry best on that class's boxes, never worse there than the overall one
    overall = next(g for g in extents if all(g[k] == box[k] for k in ("cam_layer", "cam_threshold", "blur")))
    assert set(box["per_class"]) == {"Mass"}
    for c, own in box["per_class"].items():
        shape = {"box": "peak"} if "box_size" in own else {}
        entry = next(g for g in box["grid"] if all(g[k] == own[k] for k in ("cam_layer", "cam_threshold", "blur")) and g.get("box") == shape.get("box"))
        assert (own["t_iou_0.3"], own["mean_best_iou"]) == (entry["per_class"][c]["t_iou_0.3"], entry["per_class"][c]["mean_best_iou"])
        assert (own["t_iou_0.3"], own["mean_best_iou"]) == max((g["per_class"][c]["t_iou_0.3"], g["per_class"][c]["mean_best_iou"]) for g in box["grid"])
        assert (own["t_iou_0.3"], own["mean_best_iou"]) >= (overall["per_class"][c]["t_iou_0.3"], overall["per_class"][c]["mean_best_iou"])
    keys = ("cam_layer", "cam_threshold", "blur")
    used = {k: box[k] for k in keys} | {"per_class": {c: {k: v[k] for k in (*keys, "box_size") if k in v} for c, v in box["per_class"].items()}}
    served = LocalizationService(tmp_path / "run" / "kacl.pt", device="cpu")(data / "images" / "00040.png", min_score=0.0)
    assert served["box_extraction"] == used | {"attention": None}  # no attention model beside it: CAM boxes
    m = evaluate_kacl(tmp_path / "run", data, splits=("test", "validate"), overlays=0)
    assert m["box_extraction"] == {**used, "tuned_on": "validate", "attention": None}
    # shipped in float16: half the size, the same answers
    from gazerad.engine.checkpoint import half_model_file

    half = half_model_file(tmp_path / "run" / "kacl.pt", tmp_path / "half.pt")
    assert half.stat().st_size < 0.6 * (tmp_path / "run" / "kacl.pt").stat().st_size
    halved = LocalizationService(half, device="cpu")(data / "images" / "00040.png", min_score=0.0)
    assert max(abs(a["score"] - b["score"]) for a, b in zip(halved["prediction"], served["prediction"])) < 5e-3
    assert halved["box_extraction"] == used | {"attention": None}
    # a caller's threshold applies to every class
    forced = LocalizationService(tmp_path / "run" / "kacl.pt", device="cpu")(data / "images" / "00040.png", min_score=0.0, cam_threshold=0.45)
    assert forced["box_extraction"]["cam_threshold"] == 0.45 and all("cam_threshold" not in v for v in forced["box_extraction"]["per_class"].values())
    # reported on the held-out images the temperature was not fitted on
    assert m["calibration"]["fitted_on"] == "validate" and m["calibration"]["n_images"] == 14
    assert m["calibration"]["temperature"] == pytest.approx(cal["temperature"])
    # trained on the validation split too: nothing is held out, no temperature is fitted
    res2 = train_kacl(KACLConfig(**{**cfg.to_dict(), "out": str(tmp_path / "run2"), "splits": ("train", "validate"), "epochs": 1}))
    assert res2["calibration"]["temperature"] == 1.0 and "trained on" in res2["calibration"]["skipped"]
    assert "trained on" in res2["box_extraction"]["skipped"] and res2["box_extraction"]["cam_threshold"] == 0.5
