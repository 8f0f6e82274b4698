"""gazerad.serving and gazerad.gaze.store in-process: gaze uploads in every format, the
datastore view, heatmap geometry, active-learning scores, Slicer markups."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from gazerad.errors import InputError
from gazerad.gaze.store import GazeStore, parse_gaze_upload, read_gaze_json, write_gaze_json
from gazerad.serving.active import embed_and_predict, entropy_scores, novelty_scores
from gazerad.serving.data import DatastoreView, image_id_of, is_safe_id
from gazerad.serving.infer import attention_summary, load_input, read_geometry, write_heatmap
from gazerad.serving.markups import roi_markups


def _generic(tmp: Path, rows: list[tuple], name: str = "g.csv") -> Path:
    p = tmp / name
    p.write_text("x,y,t_start,t_end\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows))
    return p


def test_generic_csv_upload(tmp_path: Path) -> None:
    recs = parse_gaze_upload(_generic(tmp_path, [(10, 20, 0, 0.2), (30.5, 40, 0.3, 0.6)]), "IM1", (64, 80))
    assert len(recs) == 1 and recs[0].image_id == "IM1" and recs[0].reader_id == "upload"
    np.testing.assert_allclose(recs[0].fixations, [[10, 20, 0, 0.2], [30.5, 40, 0.3, 0.6]])
    assert recs[0].image_size == (64, 80) and recs[0].pixels_per_degree == pytest.approx(64 / 25)


def test_reflacx_fixations_upload_keeps_pixels_per_degree(studies: Path) -> None:
    f = next((studies / "reflacx" / "main_data").glob("*/fixations.csv"))
    recs = parse_gaze_upload(f, "X", (512, 512), reader_id="R9")
    assert recs[0].reader_id == "R9" and len(recs[0]) > 5
    assert recs[0].pixels_per_degree == pytest.approx(float(f.read_text().splitlines()[1].split(",")[5]), rel=1e-3)


def test_mcgip_json_and_canonical_roundtrip(tmp_path: Path) -> None:
    j = tmp_path / "m.json"
    j.write_text(json.dumps({"gaze": [[100, 100], [200, 300], [210, 310]], "img": "a/b/IM7.png", "gt": 1}))
    recs = parse_gaze_upload(j, "IM7", (512, 512))
    assert len(recs) == 1 and len(recs[0]) >= 1
    out = write_gaze_json(tmp_path / "IM7.json", "IM7", recs)
    back = read_gaze_json(out)
    np.testing.assert_allclose(back[0].fixations, recs[0].fixations, atol=1e-6)
    again = parse_gaze_upload(out, "IM7", (512, 512))  # the canonical file is an upload format too
    np.testing.assert_allclose(again[0].fixations, recs[0].fixations, atol=1e-6)


@pytest.mark.parametrize(
    "text, words",
    [
        ("x,y,t_start,t_end\n10,10,0,0.2\n900,10,0.3,0.5\n", "outside"),
        ("x,y,t_start,t_end\n10,nan,0,0.2\n", "row 1"),
        ("x,y,t_start,t_end\n", "no fixation"),
        ("", "empty"),
        ("hello world\n", "unknown gaze format"),
        ('{"format": "gazerad-gaze", "version": 1, "records": [{"fixations": [[1, 1, 0, 0.1]], "image_size": [10, 10]}]}', "10 x 10"),
        ('{"format": "gazerad-gaze", "version": 1, "records": [{"reader_id": {"a": [1]}, "fixations": [[1, 1, 0, 0.1]]}]}', "'reader_id' must be text"),
        ('{"format": "gazerad-gaze", "version": 1, "records": [{"reader_id": "r\\u0000x", "fixations": [[1, 1, 0, 0.1]]}]}', "must be printable text"),
    ],
)
def test_bad_uploads_name_file_and_problem(tmp_path: Path, text: str, words: str) -> None:
    p = tmp_path / "up.csv"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        parse_gaze_upload(p, "IM1", (64, 64))
    assert words in str(e.value) and "up.csv" in str(e.value)


def test_gaze_store_appends_dedupes_replaces_atomically(tmp_path: Path) -> None:
    store = GazeStore(tmp_path / "gaze")
    a = parse_gaze_upload(_generic(tmp_path, [(1, 1, 0, 0.1)]), "IM1", (8, 8), reader_id="r")
    b = parse_gaze_upload(_generic(tmp_path, [(2, 2, 0, 0.1)]), "IM1", (8, 8), reader_id="r")
    store.put("IM1", a)
    store.put("IM1", b)
    assert [r.reader_id for r in store.get("IM1")] == ["r", "r-2"]
    assert [r["source_format"] for r in json.loads(store.path("IM1").read_text())["records"]] == ["generic", "generic"]  # kept on append
    assert store.summary("IM1")["fixations"] == 2
    store.put("IM1", parse_gaze_upload(_generic(tmp_path, [(3, 3, 0, 0.1)]), "IM1", (8, 8)), replace=True)
    assert [r.reader_id for r in store.get("IM1")] == ["upload"]
    assert sorted(p.name for p in (tmp_path / "gaze").iterdir()) == ["IM1.json"]  # no temp files
    with pytest.raises(InputError):
        store.path("../x")


def test_ids_and_datastore_view(studies: Path, tmp_path: Path) -> None:
    assert image_id_of("a.nii.gz") == "a" and image_id_of("00000001_000.png") == "00000001_000"
    assert is_safe_id("00000001_000") and not is_safe_id("../x") and not is_safe_id("/etc/passwd") and not is_safe_id(".hidden")
    view = DatastoreView(studies / "images")
    imgs = view.images()
    assert len(imgs) >= 24 and all(p.is_file() for p in imgs.values())
    lab = view.labels()
    assert lab["classes"] and set(lab["labels"]) <= set(imgs) and set(lab["splits"].values()) <= {"train", "test", "validate"}
    assert len(view.gaze()) > 0 and set(view.gaze().images) <= set(imgs)
    with pytest.raises(InputError, match="unknown image id"):
        view.image_path("nope")
    ws = view.workspace(tmp_path / "ws")
    from gazerad.pretrain.data import read_study_table

    table = read_study_table(ws)  # the gazerad trainers can read it
    assert table.classes == lab["classes"] and len(table.ids) == len(imgs)
    # the datastore's boxes come along under the workspace's names (box extraction is tuned on them)
    from gazerad.data.nih import read_bbox_list

    boxes = view.boxes()
    assert boxes, "the fixture study set has boxes"
    ws_boxes = read_bbox_list(ws / "BBox_List_2017.csv")
    assert set(ws_boxes) <= set(table.ids) and {image_id_of(k): v for k, v in ws_boxes.items()} == boxes


def test_heatmap_keeps_dicom_geometry(studies: Path, tmp_path: Path) -> None:
    dcm = next((studies / "dicom").glob("*.dcm")) if (studies / "dicom").is_dir() else next(studies.rglob("*.dcm"))
    img, geom = load_input(dcm)
    ref = sitk.ReadImage(str(dcm))
    assert geom.size == tuple(ref.GetSize()[:2]) and geom.spacing == pytest.approx(ref.GetSpacing()[:2])
    heat = np.random.default_rng(0).random(img.shape).astype(np.float32)
    out = write_heatmap(tmp_path / "h.nrrd", heat, geom)
    back = sitk.ReadImage(str(out))
    assert back.GetSize() == geom.size and back.GetSpacing() == pytest.approx(geom.spacing)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), heat)
    assert read_geometry(tmp_path / "missing.png", (4, 6)).size == (6, 4)


def test_attention_summary() -> None:
    h = np.zeros((90, 90))
    h[10, 80] = 3.0
    h[70, 5] = 1.0
    s = attention_summary(h, boxes=[[75, 5, 10, 10], [0, 0, 1, 1]])
    assert s["peaks"][0] == {"x": 80.5, "y": 10.5, "value": 0.75}
    assert s["regions"]["upper-right"] == pytest.approx(0.75) and s["regions"]["lower-left"] == pytest.approx(0.25)
    assert sum(s["regions"].values()) == pytest.approx(1.0) and s["boxes"] == [pytest.approx(0.75), 0.0]


def test_active_scores() -> None:
    e = entropy_scores(np.array([[0.5, 0.5], [0.99, 0.01], [0.5, 0.01]]))
    assert e[0] == pytest.approx(1.0) and e[1] < 0.1 and e[1] < e[2] < e[0]
    f = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    n = novelty_scores(f, [0])
    assert n[0] == pytest.approx(0.0, abs=1e-12) and n[1] < n[2] and n[2] == pytest.approx(1.0)
    assert (novelty_scores(f, []) == 1).all()


def test_active_probabilities_are_the_calibrated_ones() -> None:
    """Active learning ranks by the probabilities the server answers with: sigmoid(logit / T)."""
    from gazerad.kacl.calibration import calibrated_probabilities
    from gazerad.kacl.model import KACLModel

    torch.manual_seed(0)
    model = KACLModel(3, 6, "resnet10", proj_dim=8, dropout=0.0).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        logits = model.classifier(model.backbone(x)).numpy()
    for t in (1.0, 2.5):
        got = embed_and_predict(model, x, temperature=t, mc_passes=3)
        assert got["probs"] == pytest.approx(calibrated_probabilities(logits, t), abs=1e-5)
        assert got["mc_std"].shape == logits.shape
    assert not np.allclose(embed_and_predict(model, x, temperature=2.5)["probs"], embed_and_predict(model, x)["probs"], atol=1e-3)
    with pytest.raises(ValueError, match="temperature"):
        embed_and_predict(model, x, temperature=0.0)


def test_markups_roi() -> None:
    m = roi_markups([{"label": "Mass", "score": 0.9, "center_mm": [10.0, 20.0], "size_mm": [5.0, 6.0]}])
    assert m["@schema"].endswith("markups-schema-v1.0.3.json#")
    roi = m["markups"][0]
    assert roi["type"] == "ROI" and roi["roiType"] == "Box" and roi["center"] == [10.0, 20.0, 0.0]
    assert roi["size"] == [5.0, 6.0, 1.0] and len(roi["orientation"]) == 9 and roi["controlPoints"][0]["position"] == roi["center"]


def test_pretrain_then_classifier_fine_tuning_under_torchrun(tmp_path: Path) -> None:
    """The server's training jobs in-process: McGIP pre-training from stored gaze, then the
    classifier fine-tuned from its encoder with ``multi_gpu`` (2 gloo processes on the CPU)."""
    from gazerad.serving.train import read_stats, run_job
    from tests.support.studies import mass_boxes, mass_studies, simulated_gaze_csv

    root = mass_studies(tmp_path / "m", n=32, seed=5)
    store = DatastoreView(root / "images").gaze_store
    boxes = mass_boxes(root)
    for k, p in enumerate(sorted((root / "images").glob("*.png"))):
        store.put(p.stem, parse_gaze_upload(simulated_gaze_csv(tmp_path / "g.csv", boxes.get(p.name), seed=k), p.stem, (128, 128)))
    md = tmp_path / "model"
    s = run_job("pretrain", root / "images", md, {"epochs": 1, "image_size": 32, "batch_size": 8, "max_steps": 2, "device": "cpu"})
    assert s["methods"] == ["mcgip"] and (md / "pretrain_encoder.pt").is_file() and np.isfinite(s["best_metric"])
    s = run_job("classification", root / "images", md, {"epochs": 1, "image_size": 64, "batch_size": 8, "device": "cpu", "multi_gpu": True, "nproc": 2})
    assert (md / "classification.pt").is_file() and s["key_metric"] == "heldout_macro_auc"
    assert len(s["history"]) == 1 and read_stats(md, "classification")["published"] == str(md / "classification.pt")
    log = (md / "runs" / "classification" / "out" / "history.json").read_text()
    assert json.loads(log)["config"]["init_encoder"] == str(md / "pretrain_encoder.pt")

    # active-learning scores with the published classifier
    from gazerad.serving.active import SCORES, score_datastore

    store.remove("00001")
    store.remove("00002")
    for method in SCORES:
        sc = score_datastore(method, root / "images", md, device="cpu", mc_passes=5)
        assert set(sc) == {p.stem for p in (root / "images").glob("*.png")} and all(np.isfinite(list(sc.values())))
        if method == "entropy":
            assert all(0.0 <= v <= 1.0 for v in sc.values())
        if method == "mc_dropout":
            assert all(v >= 0.0 for v in sc.values()) and max(sc.values()) > 0.0
        if method == "gaze_novelty":  # an image with gaze is not novel; the two without are
            assert sc["00000"] == pytest.approx(0.0, abs=1e-6) and sc["00001"] > 0.0 and sc["00002"] > 0.0
    # without a classifier: entropy says so, novelty falls back to thumbnails
    from gazerad.serving.infer import ModelNotReady

    with pytest.raises(ModelNotReady, match="classifier"):
        score_datastore("entropy", root / "images", tmp_path / "empty")
    sc = score_datastore("gaze_novelty", root / "images", tmp_path / "empty")
    assert sc["00000"] == pytest.approx(0.0, abs=1e-6) and sc["00001"] > 0.0


def test_gazerad_serve_starts_the_app(tmp_path: Path) -> None:
    """``gazerad serve`` on a study set: shipped weights are copied into model/, the server answers."""
    import os
    import subprocess
    import sys
    import time

    import requests

    from gazerad.serving.launch import datastore_dir, prepare_models
    from tests.support.server import REPO, free_port
    from tests.support.studies import mass_studies

    root = mass_studies(tmp_path / "m", n=8, seed=1)
    assert datastore_dir(root) == root / "images" and datastore_dir(root / "images") == root / "images"
    app = tmp_path / "app"
    shutil.copytree(REPO / "monailabel_app", app, ignore=shutil.ignore_patterns("model", "__pycache__"))
    (app / "model").mkdir()
    (app / "model" / "pretrained_attention.pt").write_bytes(b"weights")
    (app / "model" / "pretrained_attention.stats.json").write_text('{"key_metric": "heldout_cc", "best_metric": 0.7}')
    done = prepare_models(root / "images", app / "model", names=("attention",))
    assert done == {"attention": "copied from shipped weights"} and (app / "model" / "attention.pt").read_bytes() == b"weights"
    assert json.loads((app / "model" / "attention.stats.json").read_text())["best_metric"] == 0.7  # the shipped model card comes along
    port = free_port()
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gazerad",
            "serve",
            "--studies",
            str(root),
            "--app-dir",
            str(app),
            "--port",
            str(port),
            "--no-prepare",
            "--conf",
            "models",
            "attention,localization",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        info = None
        for _ in range(240):
            try:
                info = requests.get(f"http://127.0.0.1:{port}/info/", timeout=2).json()
                break
            except requests.RequestException:
                assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
                time.sleep(0.5)
        assert info is not None and set(info["models"]) == {"attention", "localization"}
        assert info["models"]["attention"]["weights"] == "ready" and info["models"]["localization"]["weights"].startswith("missing")
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_model_slot_reloads_and_prefers_published_over_shipped(tmp_path: Path) -> None:
    import os

    from gazerad.serving.infer import ModelNotReady, ModelSlot

    loads = []
    slot = ModelSlot(tmp_path / "m.pt", lambda p: loads.append(p.read_text()) or p.read_text(), "m", fallback=tmp_path / "pre.pt")
    with pytest.raises(ModelNotReady, match="no weights yet"):
        slot.get()
    (tmp_path / "pre.pt").write_text("shipped")
    assert slot.get() == "shipped" and slot.get() == "shipped" and loads == ["shipped"]  # loaded once
    (tmp_path / "m.pt").write_text("trained-1")
    assert slot.get() == "trained-1" and slot.version.startswith("m.pt:")
    (tmp_path / "m.pt").write_text("trained-2!")  # a publish: new size and mtime
    os.utime(tmp_path / "m.pt", ns=(1, 10**18))
    assert slot.get() == "trained-2!" and loads == ["shipped", "trained-1", "trained-2!"]


def test_training_parameters_are_cast_and_checked() -> None:
    from gazerad.serving.train import _params

    p = _params("pretrain", {"epochs": "3", "mcgip": "false", "multi_gpu": "true", "threshold": 0.5, "model": "pretrain"})
    assert p["epochs"] == 3 and p["mcgip"] is False and p["multi_gpu"] is True and p["threshold"] == 0.5 and "model" not in p
    with pytest.raises(ValueError, match="'epochs' must be a number"):
        _params("attention", {"epochs": "many"})
    with pytest.raises(ValueError, match="unknown training parameter 'unknown'"):
        _params("pretrain", {"unknown": 1})
    with pytest.raises(ValueError, match="'mcgip' must be true or false"):
        _params("pretrain", {"mcgip": "no"})
    with pytest.raises(ValueError, match="'epochs' must be a whole number"):
        _params("attention", {"epochs": 2.5})
    for bad in ("__class__", "backbone", "backbone.layer2.__class__", "classifier"):
        with pytest.raises(ValueError, match="is not a feature layer"):
            _params("localization", {"cam_layer": bad})
    assert _params("localization", {"cam_layer": "backbone.layer3"})["cam_layer"] == "backbone.layer3"
    assert _params("attention", {})["precision"] == "auto" and _params("pretrain", {"precision": "fp32"})["precision"] == "fp32"
    with pytest.raises(ValueError, match="'precision' must be one of"):
        _params("attention", {"precision": "int8"})
    # the localiser's method and contrastive weight (KACL by default, at the validated weight 0.1)
    loc = _params("localization", {})
    assert loc["method"] == "kacl" and loc["w_con"] == pytest.approx(0.1)
    loc = _params("localization", {"method": "Supervised", "w_con": "0.3"})
    assert loc["method"] == "supervised" and loc["w_con"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="'method' must be one of"):
        _params("localization", {"method": "simclr"})
    with pytest.raises(ValueError, match="'w_con'"):
        _params("localization", {"w_con": -1})
    with pytest.raises(ValueError, match="unknown training parameter 'method' for classification"):
        _params("classification", {"method": "kacl"})


def test_localization_job_trains_the_requested_method(tmp_path: Path) -> None:
    """``POST /train/localization`` with ``method: supervised``: the baseline (no radiomics
    branch) is trained, served, and its card says which method it is."""
    from gazerad.kacl import load_kacl
    from gazerad.serving.infer import LocalizationService
    from gazerad.serving.model_card import model_card
    from gazerad.serving.train import read_stats, run_job
    from tests.support.studies import mass_studies

    root = mass_studies(tmp_path / "m", n=32, seed=3)
    md = tmp_path / "model"
    s = run_job("localization", root / "images", md, {"method": "supervised", "epochs": 1, "image_size": 64, "batch_size": 8, "device": "cpu"})
    _, state = load_kacl(md / "localization.pt")
    assert state["config"]["method"] == "supervised"
    assert s["params"]["method"] == "supervised" and model_card("localization", read_stats(md, "localization"))["training_params"]["method"] == "supervised"
    assert "finding" in LocalizationService(md / "localization.pt", "cpu")(next((root / "images").glob("*.png")))


def test_model_card_names_training_data_and_heldout_metrics(studies: Path, tmp_path: Path) -> None:
    from gazerad.serving.model_card import model_card, training_data
    from tests.support.studies import mass_studies

    synth = training_data(studies / "images", 24)  # a gazerad synth set: its dataset.json sits above images/
    manifest = json.loads((studies / "dataset.json").read_text())
    assert synth["kind"] == "synthetic" and synth["n_images"] == manifest["n_images"] == 24
    assert "no patient data" in synth["description"] and synth["generator_version"] == manifest["generator_version"]
    own = training_data(mass_studies(tmp_path / "m", n=4, seed=2) / "images", 4)
    assert own == {"kind": "datastore", "description": "the server's datastore images (4)", "n_images": 4}
    stats = {
        "key_metric": "heldout_macro_auc",
        "best_metric": 0.71,
        "auc": {"Mass": 0.8, "Nodule": 0.62, "macro": 0.71},
        "calibration": {"temperature": 1.7, "fitted_on": "validate", "ece": 0.04, "ece_uncalibrated": 0.11, "n_images": 40, "reliability": []},
        "localization": {"overall": {"0.3": 0.4}, "per_class": {"Mass": {"0.1": 0.9, "0.3": 0.6}}, "mean_best_iou": 0.33},
        "baseline_centred": {"overall": {"0.3": 0.07}},
        "training_data": synth,
        "finished": "2026-12-02 07:00:00",
        "gazerad_version": "0.1.0",
        "params": {"epochs": 6},
        "history": [{"loss": 1.0}],
    }
    card = model_card("localization", stats, "ready")
    assert card["status"] == "trained" and card["training_data"] is synth and card["trained"] == stats["finished"]
    m = card["heldout_metrics"]
    assert m["heldout_macro_auc"] == 0.71 and m["auc_per_class"] == {"Mass": 0.8, "Nodule": 0.62}
    assert m["t_iou_0.3_per_class"] == {"Mass": 0.6} and m["centred_box_t_iou"] == {"0.3": 0.07}
    assert m["calibration"]["ece"] == 0.04 and "reliability" not in m["calibration"] and "history" not in json.dumps(card)
    assert "selection" not in card
    chosen = {"chosen": "supervised", "rule": "validation macro AUC + T(IoU=0.3)", "validation": {"kacl": {"score": 1.1}, "supervised": {"score": 1.2}}}
    assert model_card("localization", {**stats, "selection": chosen})["selection"] == chosen
    blank = model_card("attention", {})
    assert blank["status"].startswith("no statistics") and "clinical" in blank["intended_use"]


def test_serve_prepare_only_readies_all_three_models(studies: Path, tmp_path: Path) -> None:
    """``gazerad serve --prepare-only`` on a synth study set: attention, localisation and
    classification trained, published with stats and a model card, each able to answer."""
    import subprocess
    import sys

    from gazerad.serving.infer import AttentionService, ClassificationService, LocalizationService
    from gazerad.serving.model_card import model_card
    from gazerad.serving.train import read_stats
    from tests.support.server import REPO

    app = tmp_path / "app"
    shutil.copytree(REPO / "monailabel_app", app, ignore=shutil.ignore_patterns("model", "__pycache__"))
    cmd = [sys.executable, "-m", "gazerad", "serve", "--studies", str(studies), "--app-dir", str(app), "--prepare-only", "--prepare-epochs", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    md = app / "model"
    for name in ("attention", "localization", "classification"):
        assert (md / f"{name}.pt").is_file(), r.stdout[-2000:]
        assert f"[gazerad serve] {name}: trained" in r.stdout
        card = model_card(name, read_stats(md, name), "ready")
        assert card["training_data"]["kind"] == "synthetic" and card["heldout_metrics"], card
    assert json.loads((md / "classification.stats.json").read_text())["calibration"]["fitted_on"] == "validate"
    image = next((studies / "images").glob("*.png"))
    assert AttentionService(md / "attention.pt", "cpu")(image)[0].shape == (512, 512)
    assert len(ClassificationService(md / "classification.pt", "cpu")(image)["prediction"]) == 5
    assert "finding" in LocalizationService(md / "localization.pt", "cpu")(image)


def test_new_attention_model_retunes_the_localisers_gaze_boxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A localiser whose boxes use the attention map keeps them after ``POST /train/attention``:
    its box extraction is re-tuned on the validation boxes with the new attention model (weights
    untouched, fingerprint updated, card says so); a localiser without gaze boxes is left alone."""
    from gazerad.attention.checkpoint import load_attention_model
    from gazerad.engine.checkpoint import rewrite_model_file
    from gazerad.gaze.store import GazeStore, parse_gaze_upload
    from gazerad.kacl.evaluate import ATTENTION_SOURCE, attention_fingerprint, box_settings, needs_attention
    from gazerad.serving.infer import LocalizationService
    from gazerad.serving.model_card import model_card
    from gazerad.serving.train import read_stats, retune_served_localiser, run_job
    from tests.support.studies import SIZE, mass_boxes, mass_studies, simulated_gaze_csv

    root = mass_studies(tmp_path / "m", n=32, seed=4)
    rows = list(csv.reader((root / "labels.csv").open()))
    for r in rows[15:23]:  # a validation split: the boxes are tuned there
        r[2] = "validate"
    with (root / "labels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    boxes = mass_boxes(root)
    store = GazeStore(root / "images" / "labels" / "gaze")
    for k in range(24):
        i = f"{k:05d}"
        store.put(i, parse_gaze_upload(simulated_gaze_csv(tmp_path / f"{i}.csv", boxes.get(f"{i}.png"), seed=k), i, (SIZE, SIZE), reader_id="sim"))
    md = tmp_path / "model"
    first = run_job("attention", root / "images", md, {"epochs": 1, "input_size": 64, "device": "cpu"})
    assert first["localization_boxes"] == {"retuned": False, "reason": "no localiser is published"}
    run_job("localization", root / "images", md, {"method": "supervised", "epochs": 1, "image_size": 64, "batch_size": 8, "device": "cpu"})
    loc = md / "localization.pt"
    fp_a = attention_fingerprint(load_attention_model(md / "attention.pt"))

    NODULE = {"cam_layer": "backbone.layer3", "cam_threshold": 0.7, "blur": 9, "t_iou_0.3": 0.33, "n_boxes": 3}

    def gaze_boxes(state: dict) -> None:  # as if the tuning had chosen the attention map for Mass
        be = state["box_extraction"]
        be["per_class"]["Mass"] = {**be["per_class"].get("Mass", {}), "cam_layer": ATTENTION_SOURCE, "cam_threshold": 0.5, "blur": 3, "t_iou_0.3": 0.5}
        be["per_class"]["Nodule"] = dict(NODULE)  # a class boxed from a CAM layer alone: kept as it is
        be.setdefault("cam_only", {k: be[k] for k in ("cam_layer", "cam_threshold", "blur", "t_iou_0.3")})
        be["attention_fingerprint"] = fp_a

    rewrite_model_file(loc, loc, gaze_boxes)
    before = torch.load(loc, map_location="cpu", weights_only=True)
    assert needs_attention(box_settings(before, fp_a))
    again = run_job("attention", root / "images", md, {"epochs": 2, "input_size": 64, "device": "cpu", "seed": 3})
    fp_b = attention_fingerprint(load_attention_model(md / "attention.pt"))
    assert fp_b != fp_a
    done = again["localization_boxes"]
    assert done["retuned"] and done["attention_fingerprint"] == fp_b and 0.0 <= done["t_iou_0.3"] <= 1.0, done
    assert done["kept"] == ["Nodule"] and done["per_class"]["Nodule"] == {"cam_layer": "backbone.layer3", "t_iou_0.3": 0.33}
    after = torch.load(loc, map_location="cpu", weights_only=True)
    assert after["box_extraction"]["attention_fingerprint"] == fp_b and after["config"]["attention"] == str((md / "attention.pt").resolve())
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])  # the weights are untouched
    assert after["box_extraction"]["per_class"]["Nodule"] == NODULE
    served = box_settings(after, fp_b)["per_class"]  # beside the new attention model: the re-tuned choice itself
    assert served == {c: {k: v[k] for k in served[c]} for c, v in after["box_extraction"]["per_class"].items()}
    card = model_card("localization", read_stats(md, "localization"))
    assert card["boxes_retuned"]["attention_fingerprint"] == fp_b and "earlier attention model" in card["boxes_retuned"]["note"]
    assert "finding" in LocalizationService(loc, "cpu")(root / "images" / "00000.png", min_score=0.0)

    # a localiser whose boxes do not use the attention map is left as it is
    def cam_only(state: dict) -> None:
        be = state["box_extraction"]
        be.update(be["cam_only"])
        be["per_class"] = {}

    rewrite_model_file(loc, loc, cam_only)
    raw = loc.read_bytes()
    from gazerad.serving.data import DatastoreView

    left = retune_served_localiser(DatastoreView(root / "images"), tmp_path / "run", md, "cpu")
    assert left == {"retuned": False, "reason": "the localiser's boxes do not use the attention map"} and loc.read_bytes() == raw
    # without validation boxes the gaze boxes cannot be re-tuned: the file stays, the reason is given
    rewrite_model_file(loc, loc, gaze_boxes)
    for r in rows[15:23]:
        r[2] = "train"
    with (root / "labels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    raw = loc.read_bytes()
    left = retune_served_localiser(DatastoreView(root / "images"), tmp_path / "run", md, "cpu")
    assert not left["retuned"] and "validate" in left["reason"] and "CAM layers alone" in left["reason"] and loc.read_bytes() == raw, left

    # a re-tune that fails leaves the file as it is and says why (the attention job does not fail)
    def boom(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("CAM hooks failed")

    monkeypatch.setattr("gazerad.kacl.trainer.retune_boxes", boom)
    left = retune_served_localiser(DatastoreView(root / "images"), tmp_path / "run", md, "cpu")
    assert not left["retuned"] and "CAM hooks failed" in left["reason"] and loc.read_bytes() == raw, left


def test_serve_prepares_only_the_models_conf_names(studies: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gazerad.cli import main
    from gazerad.serving import launch

    asked: list[tuple] = []
    monkeypatch.setattr(launch, "prepare_models", lambda store, model_dir, names=launch.SERVED, params=None: asked.append(tuple(names)) or {})
    base = ["serve", "--studies", str(studies), "--app-dir", str(tmp_path / "app"), "--prepare-only"]
    assert main([*base, "--conf", "models", "attention,pretrain"]) == 0
    assert main(base) == 0
    assert asked == [("attention",), launch.SERVED]
    assert launch.served_models("all") == launch.APP_MODELS and launch.served_models(" localization , classification") == ("localization", "classification")
    for bad in ("attentoin", ",", "attention,../x"):
        with pytest.raises(ValueError, match="in conf 'models'; choose from"):
            launch.served_models(bad)
