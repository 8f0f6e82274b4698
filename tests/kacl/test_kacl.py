"""KACL end to end on CPU: the feedback loop trains, localises obvious synthetic masses
better than a centred box, resumes, and runs from the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gazerad.cli import main as cli
from gazerad.kacl import KACLConfig, cam_classes, evaluate_kacl, load_kacl, train_kacl
from gazerad.kacl.evaluate import box_settings, validation_hit_rate
from tests.support.studies import SIZE
from tests.support.studies import mass_studies as _mass_studies


@pytest.fixture(scope="module")
def masses(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mass_studies(tmp_path_factory.mktemp("kacl") / "masses")


@pytest.fixture(scope="module")
def kacl_run(masses: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("kacl") / "run"
    res = train_kacl(
        KACLConfig(
            data=str(masses),
            out=str(out),
            backbone="resnet10",
            image_size=SIZE,
            epochs=6,
            batch_size=16,
            lr=1e-3,
            cam_layer="backbone.layer3",
            bin_width=16,
            progress=False,
        )
    )
    return out, res


def test_kacl_loss_falls_and_localises_masses(kacl_run, masses: Path) -> None:
    out, res = kacl_run
    hist = res["history"]
    assert len(hist) == 6
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    assert hist[-1]["contrastive"] < hist[1]["contrastive"]  # the radiomics view is being matched
    assert all(h["radiomics_seconds"] > 0 for h in hist)  # the feedback loop ran every epoch
    for f in ("kacl.pt", "checkpoint.pt", "history.json", "loss.png"):
        assert (out / f).is_file()
    m = evaluate_kacl(out, masses, splits=("test",), out=out / "eval", overlays=2)
    assert m["auc"]["Mass"] > 0.8
    loc, base = m["localization"], m["baseline_centred"]
    assert loc["n_boxes"]["Mass"] >= 10
    assert loc["mean_best_iou_per_class"]["Mass"] > base["mean_best_iou_per_class"]["Mass"] + 0.1
    # Grad-CAM on an 8 x 8 map gives generous boxes: the gain shows at low IoU thresholds
    assert loc["per_class"]["Mass"][0.1] > base["per_class"]["Mass"][0.1] + 0.3
    assert loc["per_class"]["Mass"][0.2] > base["per_class"]["Mass"][0.2] + 0.3
    assert len(list((out / "eval" / "overlays").glob("*.png"))) == 2
    saved = json.loads((out / "eval" / "metrics.json").read_text())
    assert saved["auc"]["macro"] == pytest.approx(m["auc"]["macro"])


def test_model_and_standardiser_are_stored(kacl_run) -> None:
    out, _ = kacl_run
    model, state = load_kacl(out)
    assert len(state["feature_names"]) == 102 and len(state["standardizer"]["mean"]) == 102
    assert state["classes"] == ["Mass", "Nodule"]
    with torch.no_grad():
        assert model(torch.rand(2, 1, SIZE, SIZE)).shape == (2, 2)


def test_cam_class_choice() -> None:
    logits = torch.tensor([[0.1, 2.0, 0.5], [3.0, 0.0, 1.0], [0.0, 0.2, 0.1]])
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 0, 0]])
    labelled = torch.tensor([True, True, False])
    # labelled with findings: its most confident labelled class; no findings or unlabelled: argmax
    assert cam_classes(logits, labels, labelled).tolist() == [2, 0, 1]
    assert cam_classes(logits, None, None).tolist() == [1, 0, 1]


def test_semi_supervised_and_resume(masses: Path, tmp_path: Path) -> None:
    """10 % labels with augmentation: runs; a run stopped after epoch 1 resumes to the same
    weights as an uninterrupted run (the augmentation is seeded per step)."""
    kw = dict(
        data=str(masses),
        backbone="resnet10",
        image_size=64,
        epochs=2,
        batch_size=16,
        labelled_fraction=0.1,
        augment=True,
        cam_layer="backbone.layer3",
        bin_width=16,
        progress=False,
    )
    full = train_kacl(KACLConfig(out=str(tmp_path / "full"), **kw))
    assert len(full["history"]) == 2
    steps = full["history"][0]["steps"]
    train_kacl(KACLConfig(out=str(tmp_path / "cut"), max_steps=steps, **kw))  # "killed" after epoch 1
    resumed = train_kacl(KACLConfig(out=str(tmp_path / "cut"), **kw))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    a = torch.load(tmp_path / "full" / "kacl.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "kacl.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)


def test_cli_supervised_and_evaluate(masses: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sup"
    assert (
        cli(
            [
                "train-kacl",
                "--data",
                str(masses),
                "--out",
                str(out),
                "--method",
                "supervised",
                "--backbone",
                "resnet10",
                "--image-size",
                "64",
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--quiet",
            ]
        )
        == 0
    )
    assert "train-kacl [supervised]" in capsys.readouterr().out
    assert cli(["evaluate-localization", "--model", str(out), "--data", str(masses), "--splits", "test", "--overlays", "0"]) == 0
    text = capsys.readouterr().out
    assert "ROC AUC" in text and "centred box" in text and "left out" not in text
    # the box list names images by id (no suffix) and holds a class the model does not predict:
    # the same boxes are scored, and the left-out one is said
    rows = (masses / "BBox_List_2017.csv").read_text().splitlines()
    test = {r["Image Index"] for r in csv.DictReader((masses / "labels.csv").open()) if r["split"] == "test"}
    boxed = next(r.split(",")[0] for r in rows[1:] if r.split(",")[0] in test)
    renamed = [rows[0], *(r.replace(".png,", ",", 1) for r in rows[1:]), f"{boxed},Atelectasis,1,1,5,5"]
    (tmp_path / "b.csv").write_text("\n".join(renamed) + "\n")
    argv = ["evaluate-localization", "--model", str(out), "--data", str(masses), "--splits", "test", "--overlays", "0"]
    assert cli([*argv, "--boxes", str(tmp_path / "b.csv")]) == 0
    again = capsys.readouterr().out
    assert "left out: 1 boxes of classes the model does not predict (Atelectasis 1)" in again
    assert [ln for ln in again.splitlines() if ln.startswith("accuracy")] == [ln for ln in text.splitlines() if ln.startswith("accuracy")]
    assert cli(["evaluate-localization", "--model", str(tmp_path / "nothing"), "--data", str(masses)]) == 2
    assert "KACL model not found" in capsys.readouterr().err


def _kacl_ddp_worker(rank: int, world: int, port: int, payload: dict, out: str) -> None:
    import os

    import torch.distributed as dist
    import torch.nn.functional as F

    from gazerad.kacl.model import KACLModel
    from gazerad.kacl.trainer import _TrainForward
    from gazerad.ssl import MultiPositiveNTXentLoss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = KACLModel(2, 6, "resnet10", proj_dim=8, dropout=0.0)
    model.load_state_dict(payload["state"])
    model.eval()
    net = torch.nn.parallel.DistributedDataParallel(_TrainForward(model))
    b = payload["x"].shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    logits, z_img, z_rad = net(payload["x"][sl], payload["r"][sl])
    loss = F.binary_cross_entropy_with_logits(logits, payload["y"][sl]) + MultiPositiveNTXentLoss(0.5)(z_img, z_rad)
    loss.backward()
    if rank == 0:
        torch.save({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, out)
    dist.destroy_process_group()


def test_kacl_ddp_synchronises_both_branches(tmp_path: Path) -> None:
    """Under DDP the image *and* radiomics branches' gradients are averaged over ranks
    (a forward outside DDP's wrapper would leave the radiomics branch unsynchronised)."""
    import socket

    import torch.nn.functional as F

    from gazerad.kacl.model import KACLModel
    from gazerad.ssl import MultiPositiveNTXentLoss

    torch.manual_seed(0)
    model = KACLModel(2, 6, "resnet10", proj_dim=8, dropout=0.0).eval()
    g = torch.Generator().manual_seed(1)
    x, r = torch.rand(8, 1, 32, 32, generator=g), torch.randn(8, 6, generator=g)
    y = (torch.rand(8, 2, generator=g) > 0.5).float()
    grads = []
    for sl in (slice(0, 4), slice(4, 8)):  # each rank's local loss, in one process
        model.zero_grad()
        logits, z_img = model.image_branch(x[sl])
        loss = F.binary_cross_entropy_with_logits(logits, y[sl]) + MultiPositiveNTXentLoss(0.5)(z_img, model.radiomics_branch(r[sl]))
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    expected = {n: (grads[0][n] + grads[1][n]) / 2 for n in grads[0]}
    assert any(n.startswith("radiomics_") for n in expected)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    payload = {"state": model.state_dict(), "x": x, "r": r, "y": y}
    torch.multiprocessing.spawn(_kacl_ddp_worker, args=(2, port, payload, str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    assert set(ddp) == set(expected)
    worst = max(float((ddp[n] - expected[n]).abs().max() / (expected[n].abs().max() + 1e-12)) for n in expected)
    assert worst < 1e-4, worst


def test_localization_service_honours_min_score_and_top_k(kacl_run, masses: Path) -> None:
    """No box scores below ``min_score``; nothing above it: no boxes and a message; ``top_k`` and
    named classes localise below it, flagged."""
    from gazerad.serving.infer import LocalizationService

    out, _ = kacl_run
    svc = LocalizationService(out / "kacl.pt", device="cpu")
    image = masses / "images" / "00000.png"
    allc = svc(image, min_score=0.0)
    probs = {p["label"]: p["score"] for p in allc["prediction"]}
    assert allc["finding"] and {b["label"] for b in allc["boxes"]} == set(probs)
    assert all(b["score"] == pytest.approx(probs[b["label"]]) and not b["below_min_score"] for b in allc["boxes"])
    assert [b["score"] for b in allc["boxes"]] == sorted((b["score"] for b in allc["boxes"]), reverse=True)
    assert all(b["validation_t_iou_0.3"] is None for b in allc["boxes"])  # this run never tuned its boxes on validation
    cut = (max(probs.values()) + min(probs.values())) / 2
    mid = svc(image, min_score=cut)
    assert {b["label"] for b in mid["boxes"]} == {c for c, p in probs.items() if p >= cut}
    assert all(b["score"] >= cut for b in mid["boxes"])
    none = svc(image, min_score=1.0)
    assert none["boxes"] == [] and none["box"] == [] and not none["finding"]
    top = max(probs, key=probs.get)
    assert "no finding with probability >= 1.00" in none["message"] and top in none["message"]
    assert none["prediction"] == allc["prediction"]
    explore = svc(image, min_score=1.0, top_k=1)
    assert {b["label"] for b in explore["boxes"]} == {top} and all(b["below_min_score"] for b in explore["boxes"])
    named = svc(image, min_score=1.0, classes=["Nodule"])
    assert {b["label"] for b in named["boxes"]} <= {"Nodule"} and all(b["below_min_score"] for b in named["boxes"])
    with pytest.raises(Exception, match="unknown classes"):
        svc(image, classes=["Pneumonia"])


def test_served_boxes_carry_their_class_validation_hit_rate(kacl_run, masses: Path, tmp_path: Path) -> None:
    """A model whose boxes were tuned on validation serves each box with its class's tuned
    T(IoU=0.3) and box count (the overall ones for a class without its own) and its expected
    hit; boxes and top-k classes are ordered by expected hit unless ``rank: probability``;
    an explicit override serves no validation figures (and falls back to probability order)."""
    from gazerad.serving.infer import LocalizationService

    out, _ = kacl_run
    image = masses / "images" / "00000.png"
    probs = {q["label"]: q["score"] for q in LocalizationService(out / "kacl.pt", device="cpu")(image, min_score=0.0)["prediction"]}
    likely, unlikely = max(probs, key=probs.get), min(probs, key=probs.get)
    poor = 0.45 * probs[unlikely] / probs[likely]  # a hit rate that reverses the order: p_unlikely x 0.9 > p_likely x poor
    state = torch.load(out / "kacl.pt", map_location="cpu", weights_only=False)
    layer = state["config"]["cam_layer"]
    state["box_extraction"] = {  # the least probable class localises well on validation, the others poorly
        "cam_layer": layer,
        "cam_threshold": 0.5,
        "blur": 5,
        "t_iou_0.3": poor,
        "n_boxes": 30,
        "per_class": {unlikely: {"cam_layer": layer, "cam_threshold": 0.4, "blur": 3, "t_iou_0.3": 0.9, "n_boxes": 10}},
        "split": "validate",
    }
    torch.save(state, tmp_path / "tuned.pt")
    svc = LocalizationService(tmp_path / "tuned.pt", device="cpu")
    res = svc(image, min_score=0.0)
    boxes = res["boxes"]
    assert {b["label"] for b in boxes} == set(state["classes"]) and res["rank"] == "expected_hit"
    rate = {c: 0.9 if c == unlikely else poor for c in state["classes"]}  # the others: the all-class figure, for the order only
    assert {b["label"]: b["validation_t_iou_0.3"] for b in boxes} == {c: pytest.approx(0.9) if c == unlikely else None for c in state["classes"]}
    assert {b["label"]: b["validation_boxes"] for b in boxes} == {c: 10 if c == unlikely else None for c in state["classes"]}
    tuned = box_settings(state)
    assert all(((b["validation_t_iou_0.3"], b["validation_boxes"]) if b["validation_boxes"] else None) == validation_hit_rate(tuned, b["label"]) for b in boxes)
    assert all(b["expected_hit"] == pytest.approx(b["probability"] * rate[b["label"]]) for b in boxes)

    def first_of_each(bs: list) -> list:
        return list(dict.fromkeys(b["label"] for b in bs))

    assert first_of_each(boxes) == sorted(probs, key=lambda c: -probs[c] * rate[c]) and boxes[0]["label"] == unlikely
    by_p = sorted(probs, key=lambda c: -probs[c])
    assert first_of_each(svc(image, min_score=0.0, rank="probability")["boxes"]) == by_p
    assert {b["label"] for b in svc(image, min_score=1.0, top_k=1)["boxes"]} == {unlikely}
    assert {b["label"] for b in svc(image, min_score=1.0, top_k=1, rank="probability")["boxes"]} == {likely}
    for kw in ({"cam_threshold": 0.4}, {"cam_layer": layer}):
        over = svc(image, min_score=0.0, **kw)["boxes"]
        assert all(b["validation_t_iou_0.3"] is None and b["expected_hit"] is None for b in over), kw
        assert first_of_each(over) == by_p, kw
    with pytest.raises(Exception, match="rank must be one of expected_hit, probability"):
        svc(image, rank="cam")
    # the CAM returned (output "cam") is the top box's class's: here the less probable one
    import SimpleITK as sitk

    top = svc(image, min_score=0.0, cam_out=tmp_path / "top.nrrd")["boxes"][0]["label"]
    svc(image, classes=[top], cam_out=tmp_path / "named.nrrd")
    svc(image, classes=[likely], cam_out=tmp_path / "likely.nrrd")
    cams = {k: sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f"{k}.nrrd"))) for k in ("top", "named", "likely")}
    assert top == unlikely and cams["top"].shape == cams["likely"].shape
    assert np.abs(cams["top"] - cams["named"]).max() < 1e-6 < np.abs(cams["top"] - cams["likely"]).max()


def test_served_peak_boxes_have_their_class_size_in_image_pixels(kacl_run, masses: Path, tmp_path: Path) -> None:
    """A class tuned to peak boxes is served boxes of its ``box_size`` (fractions of the
    image) on the original image, one per component of the same map as its extents, the
    size reported in ``box_extraction``."""
    from gazerad.io.xray import read_xray
    from gazerad.serving.infer import LocalizationService

    out, _ = kacl_run
    image = masses / "images" / "00000.png"
    h, w = read_xray(image)[0].shape
    state = torch.load(out / "kacl.pt", map_location="cpu", weights_only=False)
    layer, cls = state["config"]["cam_layer"], state["classes"][0]
    extents = {"cam_layer": layer, "cam_threshold": 0.3, "blur": 3, "t_iou_0.3": 0.5, "n_boxes": 10}
    for name, own in (("extent", extents), ("peak", {**extents, "box_size": [0.125, 0.0625]})):
        state["box_extraction"] = {"cam_layer": layer, "cam_threshold": 0.5, "blur": 5, "per_class": {cls: own}, "split": "validate"}
        torch.save(state, tmp_path / f"{name}.pt")
    ext, peak = (LocalizationService(tmp_path / f"{n}.pt", device="cpu")(image, classes=[cls], max_boxes=20) for n in ("extent", "peak"))
    eb, pb = ([b for b in r["boxes"] if b["label"] == cls] for r in (ext, peak))
    assert len(pb) == len(eb) >= 1 and all((b["w"], b["h"]) == pytest.approx((0.125 * w, 0.0625 * h)) for b in pb)
    assert all(0 <= b["x"] <= w - b["w"] + 1e-6 and 0 <= b["y"] <= h - b["h"] + 1e-6 for b in pb)
    assert any(abs(e["w"] - 0.125 * w) > 1 for e in eb)  # the extents are other boxes
    assert peak["box_extraction"]["per_class"][cls]["box_size"] == [0.125, 0.0625] and "box_size" not in ext["box_extraction"]["per_class"][cls]


def test_roi_tuning_on_validation_boxes(masses: Path, tmp_path: Path) -> None:
    """``roi_tuning``: from the second refresh on, the ROI's CAM layer, threshold and blur per
    class come from the validation boxes; the saved settings reproduce the ROI of the
    tuned class from its own layer's CAM; without a validation split the run falls back
    to the configured extraction and says why."""
    import shutil

    from gazerad.data.inputs import encoder_inputs
    from gazerad.kacl import refresh_radiomics
    from gazerad.localize import make_cam, map_to_boxes
    from gazerad.radiomics import RadiomicsExtractor

    data = tmp_path / "studies"
    shutil.copytree(masses, data)
    (data / "labels.csv").write_text((data / "labels.csv").read_text().replace(",test,", ",validate,"))
    kw = dict(backbone="resnet10", image_size=64, epochs=2, batch_size=16, cam_layer="backbone.layer3", bin_width=16, roi_tuning=True, progress=False)
    res = train_kacl(KACLConfig(data=str(data), out=str(tmp_path / "run"), **kw))
    assert "roi_validation_t_iou_0.3" not in res["history"][0]  # epoch 1: the whole image
    assert 0.0 <= res["history"][1]["roi_validation_t_iou_0.3"] <= 1.0
    model, state = load_kacl(tmp_path / "run")
    roi = state["roi_settings"]
    assert roi["split"] == "validate" and "skipped" not in roi and roi["n_boxes"] == 14
    layer, thr, blur = (roi["per_class"]["Mass"][k] for k in ("cam_layer", "cam_threshold", "blur"))
    size = roi["per_class"]["Mass"].get("box_size")  # a peak-centred box where that localised better
    assert layer in model.cam_candidates

    images = encoder_inputs(sorted((data / "images").glob("*.png"))[:8:2], 64)  # masses, labelled
    labels = torch.tensor([[1.0, 0.0]] * 4)
    _, _, boxes = refresh_radiomics(
        model, images, RadiomicsExtractor("torch", bin_width=16), labels, torch.ones(4, dtype=torch.bool), box_settings=roi, class_names=state["classes"]
    )
    maps = make_cam(model, layer)(images, class_idx=[0] * 4)[:, 0].detach()
    for box, mp in zip(boxes, maps):
        first = map_to_boxes(mp, thr, blur, label="Mass", size=None if size is None else (size[0] * 64, size[1] * 64))[0]
        assert box.label == "Mass" and (box.x, box.y, box.w, box.h) == (first.x, first.y, first.w, first.h)

    plain = train_kacl(KACLConfig(data=str(masses), out=str(tmp_path / "plain"), **kw))  # no validation split
    assert "roi_validation_t_iou_0.3" not in plain["history"][1]
    assert load_kacl(tmp_path / "plain")[1]["roi_settings"]["skipped"] == "no images in the validate split"


def test_refresh_leaves_batchnorm_statistics_and_mode_alone() -> None:
    """The feedback loop's refresh runs mid-training: its class-choice forward must not
    update BatchNorm running statistics (re-estimated exactly just before) and the model
    comes back in training mode."""
    from gazerad.kacl import refresh_radiomics
    from gazerad.kacl.model import KACLModel
    from gazerad.radiomics import RadiomicsExtractor

    torch.manual_seed(0)
    ex = RadiomicsExtractor("torch", bin_width=16)
    model = KACLModel(2, len(ex.names), "resnet10", cam_layer="backbone.layer3").train()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    feats, _, boxes = refresh_radiomics(model, torch.rand(6, 1, 64, 64), ex, batch=4)
    assert model.training and feats.shape == (6, len(ex.names)) and len(boxes) == 6
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1]) and int(bn.num_batches_tracked) == before[2]
