"""Gaze as a box source: the attention map (alone, or gating a CAM layer) competes with the
CAM layers per class on validation; settings tuned with it are served only beside the same
attention model, else the CAM-only choice of the same tuning."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gazerad.kacl import KACLConfig, evaluate_kacl, load_kacl, retune_boxes, train_kacl
from gazerad.kacl.evaluate import (
    ATTENTION_SOURCE,
    attention_fingerprint,
    best_box_settings,
    box_settings,
    box_sizes,
    class_cams,
    class_setting,
    extraction_used,
    map_pixels,
    needs_attention,
    overridden,
    source_maps,
    uses_attention,
    validation_hit_rate,
)
from gazerad.localize import localization_accuracy, map_to_boxes
from tests.support.studies import SIZE, mass_boxes
from tests.support.studies import mass_studies as _mass_studies


def test_source_maps_compose_cams_and_attention() -> None:
    from gazerad.kacl.model import KACLModel

    torch.manual_seed(0)
    model = KACLModel(2, 8, "resnet10", cam_layer="backbone.layer3").eval()
    images = torch.rand(3, 1, 64, 64)
    heat = np.random.default_rng(0).random((3, 64, 64)).astype(np.float32)
    requests = [[0], [1], [0, 1]]
    gated = "attention*backbone.layer3"
    maps = source_maps(model, images, requests, ["backbone.layer3", ATTENTION_SOURCE, gated], heat)
    cams = class_cams(model, images, requests, ["backbone.layer3"])["backbone.layer3"]
    for i, cs in enumerate(requests):
        assert set(maps[ATTENTION_SOURCE][i]) == set(cs)
        for c in cs:
            assert np.array_equal(maps[ATTENTION_SOURCE][i][c], heat[i])
            np.testing.assert_allclose(maps["backbone.layer3"][i][c], cams[i][c], atol=1e-5)
            np.testing.assert_allclose(maps[gated][i][c], cams[i][c] * heat[i] / heat[i].max(), atol=1e-5)
    with pytest.raises(ValueError, match="need the attention map"):
        source_maps(model, images, requests, [gated])
    with pytest.raises(ValueError, match="2 attention maps for 3 images"):
        source_maps(model, images, requests, [ATTENTION_SOURCE], heat[:2])
    assert uses_attention(gated) and uses_attention(ATTENTION_SOURCE) and not uses_attention("backbone.layer3") and not uses_attention(None)


def test_box_settings_serve_gaze_sources_only_beside_their_attention_model() -> None:
    gaze = {"cam_layer": "attention", "cam_threshold": 0.4, "blur": 3}
    cam = {"cam_layer": "backbone.layer3", "cam_threshold": 0.6, "blur": 5}
    state = {
        "config": {"cam_layer": "backbone.layer2"},
        "box_extraction": {
            "cam_layer": "backbone.layer2",
            "cam_threshold": 0.5,
            "blur": 5,
            "per_class": {"Mass": gaze, "Nodule": cam},
            "split": "validate",
            "cam_only": {"cam_layer": "backbone.layer2", "cam_threshold": 0.3, "blur": 1, "per_class": {"Mass": cam, "Nodule": cam}},
            "attention_fingerprint": "abc",
        },
    }
    served = box_settings(state, "abc")
    assert served["per_class"]["Mass"] == gaze and needs_attention(served) and served["cam_threshold"] == 0.5
    for other in (None, "abd"):
        fallback = box_settings(state, other)
        assert fallback["per_class"]["Mass"] == cam and not needs_attention(fallback)
        assert fallback["cam_threshold"] == 0.3 and fallback["split"] == "validate"


def test_box_settings_carry_validation_hit_rates_until_overridden() -> None:
    """Each class's tuned validation T(IoU=0.3) travels with the served settings (the overall
    one for a class without its own); any explicit override drops them all."""
    state = {
        "config": {"cam_layer": "backbone.layer2"},
        "box_extraction": {
            "cam_layer": "backbone.layer2",
            "cam_threshold": 0.5,
            "blur": 5,
            "t_iou_0.3": 0.42,
            "n_boxes": 40,
            "per_class": {"Mass": {"cam_layer": "backbone.layer3", "cam_threshold": 0.6, "blur": 3, "t_iou_0.3": 0.71, "mean_best_iou": 0.4, "n_boxes": 9}},
        },
    }
    tuned = box_settings(state)
    assert tuned["per_class"]["Mass"] == {"cam_layer": "backbone.layer3", "cam_threshold": 0.6, "blur": 3, "t_iou_0.3": 0.71, "n_boxes": 9}
    assert validation_hit_rate(tuned, "Mass") == (pytest.approx(0.71), 9)
    assert validation_hit_rate(tuned, "Nodule") is None  # no validation boxes of its own: not measured on it
    assert validation_hit_rate(tuned, "Nodule", overall=True) == (pytest.approx(0.42), 40)  # the all-class estimate ranking uses
    assert validation_hit_rate(overridden(tuned), "Mass") == (pytest.approx(0.71), 9)  # no override: figures kept
    for kw in ({"cam_threshold": 0.3}, {"cam_layer": "backbone.layer1"}, {"blur": 1}):
        changed = overridden(tuned, **kw)
        assert validation_hit_rate(changed, "Mass") is None and validation_hit_rate(changed, "Nodule", overall=True) is None, kw
    assert validation_hit_rate(tuned, "Mass") == (pytest.approx(0.71), 9)  # the original is untouched
    assert validation_hit_rate(box_settings({"config": {"cam_layer": "backbone.layer2"}}), "Mass") is None  # untuned


def _blob(cy: float, cx: float, sigma: float, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).astype(np.float32)


def test_small_findings_get_peak_centred_boxes_of_their_validation_size() -> None:
    """A nodule under a broad saliency blob (the map peaks on it): no threshold makes the
    blob's extent a nodule-sized box, the median-size box on its peak does; that choice is
    per class (the large finding keeps component extents), the overall setting never has a
    size, and the served settings carry it."""
    rng = np.random.default_rng(0)
    maps, truth = {}, {}
    for k in range(12):
        ny, nx, s = rng.uniform(20, 44), rng.uniform(20, 44), int(rng.integers(5, 8))
        nodule = _blob(ny, nx, 16) + 0.1 * _blob(ny, nx, 1.5)  # peaks on the nodule; map pixels x 2 = a 128 px image
        mass = np.zeros((64, 64), np.float32)
        mass[4:24, 40:60] = 1.0
        maps[f"{k}.png"] = {0: nodule, 1: mass}
        truth[f"{k}.png"] = [("Nodule", (2 * nx - s, 2 * ny - s, 2 * s, 2 * s)), ("Mass", (80.0, 8.0, 40.0, 40.0))]
    scales = {i: (2.0, 2.0) for i in truth}
    sizes = box_sizes(truth, scales, 64)
    nodules = [g[0][1] for g in truth.values()]
    assert sizes["Mass"] == pytest.approx((40 / 128, 40 / 128)) and sizes["Nodule"][0] == pytest.approx(np.median([b[2] for b in nodules]) / 128)
    extent_only = best_box_settings(maps, truth, ["Nodule", "Mass"], scales)
    both = best_box_settings(maps, truth, ["Nodule", "Mass"], scales, sizes=sizes)
    assert extent_only["per_class"]["Nodule"]["t_iou_0.3"] < 0.2 <= 0.9 <= both["per_class"]["Nodule"]["t_iou_0.3"]
    assert both["per_class"]["Nodule"]["box_size"] == pytest.approx(list(sizes["Nodule"]))
    assert "box_size" not in both["per_class"]["Mass"] and both["per_class"]["Mass"]["t_iou_0.3"] == 1.0  # extents box the mass exactly
    assert "box_size" not in both and len(both["grid"]) == 2 * len(extent_only["grid"])
    # the grid (one blur and one labelling per map shared by thresholds and shapes) against map_to_boxes per entry
    for g in both["grid"]:
        size = sizes if g.get("box") == "peak" else {}
        pred = {
            i: [
                b.scaled(2.0, 2.0)
                for c, m in by.items()
                for b in map_to_boxes(m, g["cam_threshold"], g["blur"], ["Nodule", "Mass"][c], size=map_pixels(size.get(["Nodule", "Mass"][c]), m.shape))
            ]
            for i, by in maps.items()
        }
        ref = localization_accuracy(pred, truth, (0.3,))
        assert g["t_iou_0.3"] == ref["overall"][0.3] and g["mean_best_iou"] == pytest.approx(ref["mean_best_iou"], abs=1e-12)
        assert all(g["per_class"][c]["t_iou_0.3"] == ref["per_class"][c][0.3] for c in ("Nodule", "Mass"))
    assert {k: both[k] for k in ("cam_threshold", "blur", "t_iou_0.3")} == {k: extent_only[k] for k in ("cam_threshold", "blur", "t_iou_0.3")}
    # served: the size travels with the class's settings, is reported, and survives overrides
    state = {"config": {"cam_layer": "backbone.layer2"}, "box_extraction": {**both, "cam_layer": "backbone.layer2"}}
    for c in both["per_class"]:
        state["box_extraction"]["per_class"][c]["cam_layer"] = "backbone.layer2"
    tuned = box_settings(state)
    assert class_setting(tuned, "Nodule")[3] == pytest.approx(sizes["Nodule"]) and class_setting(tuned, "Mass")[3] is None
    assert extraction_used(tuned)["per_class"]["Nodule"]["box_size"] == pytest.approx(list(sizes["Nodule"]))
    assert class_setting(overridden(tuned, cam_threshold=0.4), "Nodule")[1:] == (0.4, tuned["per_class"]["Nodule"]["blur"], pytest.approx(sizes["Nodule"]))


def _random_attention(path: Path, seed: int) -> Path:
    from gazerad.attention.checkpoint import save_attention_model
    from gazerad.attention.network import AttentionPredictor

    torch.manual_seed(seed)
    return save_attention_model(AttentionPredictor(input_size=32), path)


@pytest.fixture(scope="module")
def gaze_setup(tmp_path_factory: pytest.TempPathFactory):
    """A mass set with a validation split, a small classifier trained on it, two attention
    model files (different weights), and an oracle attention map: the mass box itself."""
    from gazerad.data.inputs import encoder_inputs

    root = tmp_path_factory.mktemp("gaze")
    data = _mass_studies(root / "studies", n=64)
    rows = list(csv.reader((data / "labels.csv").open()))
    for r in rows[1:]:
        if r[2] == "test" and int(r[0][:5]) < 55:
            r[2] = "validate"
    with (data / "labels.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    run = root / "run"
    kw = dict(backbone="resnet10", image_size=SIZE, epochs=3, batch_size=16, lr=1e-3, cam_layer="backbone.layer3", bin_width=16, progress=False)
    train_kacl(KACLConfig(data=str(data), out=str(run), method="supervised", **kw))
    names = sorted(p.name for p in (data / "images").glob("*.png"))
    stored = encoder_inputs([data / "images" / n for n in names], SIZE)
    boxes = mass_boxes(data)

    def oracle(model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
        out = np.full((len(images), SIZE, SIZE), 1.0, np.float32)
        for k, img in enumerate(images):
            name = names[int(((stored - img[None]) ** 2).flatten(1).sum(1).argmin())]
            if name in boxes:
                x, y, w, h = boxes[name]
                out[k] = 0.0
                out[k, y : y + h, x : x + w] = 1.0
        return out / out.sum(axis=(1, 2), keepdims=True)

    att = _random_attention(root / "attention.pt", 0)
    other = _random_attention(root / "other.pt", 1)
    return data, run, att, other, oracle


def test_retune_with_attention_chooses_gaze_where_it_localises_and_falls_back(gaze_setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gazerad.kacl.evaluate as ev
    from gazerad.attention.checkpoint import load_attention_model

    data, run, att, other, oracle = gaze_setup
    monkeypatch.setattr(ev, "predicted_attention", oracle)
    before = (run / "kacl.pt").read_bytes()
    cam_only = retune_boxes(run, data, out=tmp_path / "cam.pt")
    gaze = retune_boxes(run, data, att, out=tmp_path / "gaze.pt")
    assert not needs_attention(cam_only) and "cam_only" not in cam_only
    assert uses_attention(gaze["per_class"]["Mass"]["cam_layer"]) and gaze["per_class"]["Mass"]["t_iou_0.3"] == 1.0
    assert not needs_attention(gaze["cam_only"]) and gaze["attention_fingerprint"] == attention_fingerprint(load_attention_model(att))
    _, state = load_kacl(tmp_path / "gaze.pt")
    assert state["box_extraction"]["per_class"] == gaze["per_class"] and state["config"]["attention"] == str(att.resolve())
    assert (run / "kacl.pt").read_bytes() == before  # written to out, the source run untouched

    ref = evaluate_kacl(tmp_path / "cam.pt", data, splits=("test",), overlays=0, device="cpu")
    with_gaze = evaluate_kacl(tmp_path / "gaze.pt", data, splits=("test",), overlays=0, device="cpu")  # its own attention setting
    assert with_gaze["box_extraction"]["attention"] == str(att.resolve())
    assert with_gaze["localization"]["per_class"]["Mass"][0.5] == 1.0  # the oracle's boxes
    assert with_gaze["localization"]["mean_best_iou_per_class"]["Mass"] > ref["localization"]["mean_best_iou_per_class"]["Mass"] + 0.1
    assert with_gaze["auc"]["macro"] == pytest.approx(ref["auc"]["macro"], abs=1e-9)  # same weights: only the boxes differ
    wrong = evaluate_kacl(tmp_path / "gaze.pt", data, splits=("test",), overlays=0, device="cpu", attention=other)
    assert wrong["box_extraction"]["attention"] is None and not needs_attention(wrong["box_extraction"])
    with pytest.raises(Exception, match="no attention model here"):
        evaluate_kacl(tmp_path / "gaze.pt", data, splits=("test",), overlays=0, device="cpu", attention=tmp_path / "missing.pt")
    # a shipped model: its own attention path is gone; the served one beside it counts, as in the server
    served_dir = tmp_path / "model"
    served_dir.mkdir()
    blob = torch.load(tmp_path / "gaze.pt", map_location="cpu", weights_only=False)
    blob["config"]["attention"] = str(tmp_path / "gone" / "attention.pt")
    torch.save(blob, served_dir / "localization.pt")

    def served_source() -> str | None:
        return evaluate_kacl(served_dir / "localization.pt", data, splits=("test",), overlays=0, device="cpu")["box_extraction"]["attention"]

    assert served_source() is None  # nothing beside it: CAM-only
    shutil.copyfile(att, served_dir / "pretrained_attention.pt")
    assert served_source() == str(served_dir / "pretrained_attention.pt")
    shutil.copyfile(other, served_dir / "attention.pt")  # a retrained attention model is served first: not the tuned one
    assert served_source() is None

    from gazerad.serving.infer import LocalizationService

    image = data / "images" / "00060.png"  # a test mass
    x, y, w, h = mass_boxes(data)["00060.png"]
    served = LocalizationService(tmp_path / "gaze.pt", device="cpu", attention_path=att)(image, classes=["Mass"], max_boxes=1)
    assert served["box_extraction"]["attention"] == served_version(att)
    b = served["boxes"][0]
    assert b["label"] == "Mass" and iou((b["x"], b["y"], b["w"], b["h"]), (x, y, w, h)) >= 0.5
    fallback = LocalizationService(tmp_path / "gaze.pt", device="cpu", attention_path=other)(image, classes=["Mass"], max_boxes=1)
    assert fallback["box_extraction"]["attention"] is None
    layers = {c: v["cam_layer"] for c, v in fallback["box_extraction"]["per_class"].items()}
    assert layers == {c: v["cam_layer"] for c, v in gaze["cam_only"]["per_class"].items()}


def iou(a: tuple, b: tuple) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def served_version(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_mtime_ns}-{st.st_size}"


def test_retune_without_validation_boxes_changes_nothing(gaze_setup, tmp_path: Path) -> None:
    data, run, att, _, _ = gaze_setup

    plain = tmp_path / "studies"
    shutil.copytree(data, plain)
    (plain / "labels.csv").write_text((plain / "labels.csv").read_text().replace(",validate,", ",test,"))
    before = (run / "kacl.pt").read_bytes()
    out = retune_boxes(run, plain, att)
    assert out["skipped"] == "no images in the validate split" and (run / "kacl.pt").read_bytes() == before


def _make_weights():
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "make_weights.py"
    spec = importlib.util.spec_from_file_location("make_weights", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_weights_retune_replaces_the_shipped_file_only_once_measured(gaze_setup, tmp_path: Path) -> None:
    """``make_weights.py --retune-boxes``: the shipped localiser keeps its weights and its
    training record's attention path, gets the re-tuned boxes and re-measured held-out
    figures; with no test boxes to measure it on, nothing shipped changes."""
    import json

    from gazerad.io.atomic import json_safe

    data, run, att, _, _ = gaze_setup
    ship = tmp_path / "model"
    ship.mkdir()
    shutil.copy(run / "kacl.pt", ship / "pretrained_localization.pt")
    shutil.copy(att, ship / "pretrained_attention.pt")
    (ship / "pretrained_localization.stats.json").write_text(json.dumps({"params": {"method": "supervised"}}))
    old_model, old = load_kacl(ship / "pretrained_localization.pt")
    mw = _make_weights()

    unmeasurable = tmp_path / "no-test-boxes"
    shutil.copytree(data, unmeasurable)
    keep = [r for r in (unmeasurable / "BBox_List_2017.csv").read_text().splitlines(True) if r.split(",")[0] in {"Image Index"} | _validation_images(data)]
    (unmeasurable / "BBox_List_2017.csv").write_text("".join(keep))
    scored = evaluate_kacl(run, unmeasurable, splits=("test",), overlays=0, device="cpu")
    assert "localization" not in scored and scored["localization_skipped"] == "no boxes of the test images in BBox_List_2017.csv"
    before = (ship / "pretrained_localization.pt").read_bytes()
    with pytest.raises(SystemExit, match="no held-out localisation figures"):
        mw.retune_shipped(ship, unmeasurable, "cpu", tmp_path / "w1")
    assert (ship / "pretrained_localization.pt").read_bytes() == before
    assert json.loads((ship / "pretrained_localization.stats.json").read_text()) == {"params": {"method": "supervised"}}

    stats = mw.retune_shipped(ship, data, "cpu", tmp_path / "w2")
    new_model, new = load_kacl(ship / "pretrained_localization.pt")
    assert new["config"]["attention"] == old["config"]["attention"]  # the training record's, not this machine's path
    assert new["box_extraction"]["attention_fingerprint"] == attention_fingerprint(load_attention_model_file(att))
    weights = new_model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in old_model.state_dict().items())  # weights untouched
    on_disk = json.loads((ship / "pretrained_localization.stats.json").read_text())
    assert on_disk == json_safe(stats) and on_disk["params"] == {"method": "supervised"}  # strict JSON: a class without test positives has AUC null
    assert on_disk["boxes_retuned"]["heldout_before"]["t_iou_0.3"] is None and 0.0 <= on_disk["t_iou_0.3"] <= 1.0


def _validation_images(data: Path) -> set[str]:
    return {r[0] for r in csv.reader((data / "labels.csv").open()) if r[2] == "validate"}


def load_attention_model_file(path: Path) -> torch.nn.Module:
    from gazerad.attention.checkpoint import load_attention_model

    return load_attention_model(path)
