"""Every command on the public data sets' own layouts, unchanged: NIH ChestX-ray14
(``train-kacl``, ``evaluate-localization``, ``pretrain``, ``evaluate``) and MIMIC-CXR-JPG
with REFLACX or EGD-CXR gaze (``relation``, ``train-attention``, ``pretrain`` McGIP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gazerad.cli import main
from tests.support.layouts import egd_tree, mimic_tree, nih_tree, reflacx_tree

FAST = ["--epochs", "1", "--image-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def trees(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("public")
    nih_tree(studies, root / "nih")
    m = mimic_tree(studies, root / "mimic")
    reflacx_tree(studies, root / "reflacx", m["ids"], m)
    egd_tree(studies, root / "egd", m["ids"], m)
    return {k: root / k for k in ("nih", "mimic", "reflacx", "egd")}


def test_nih_root_trains_kacl_and_evaluates_localization(trees: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "kacl"
    args = ["train-kacl", "--data", str(trees["nih"]), "--out", str(run), "--backbone", "resnet10", "--batch-size", "8", *FAST]
    assert main(args) == 0
    state = json.loads((run / "history.json").read_text())
    assert state["config"]["data"] == str(trees["nih"]) and len(state["history"]) == 1
    ev = tmp_path / "ev"
    assert main(["evaluate-localization", "--model", str(run), "--data", str(trees["nih"]), "--out", str(ev), "--overlays", "1"]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    # 14 NIH classes; the boxes of the held-out NIH images are scored (the missing image's are skipped)
    assert m["localization"]["n_boxes"] and sum(m["localization"]["n_boxes"].values()) > 0
    assert set(m["auc"]) >= {"macro"}


def test_nih_root_preview(trees: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "p.png"
    assert main(["show", "--data", str(trees["nih"]), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    out2 = tmp_path / "m.png"
    assert main(["show", "--data", str(trees["mimic"]), "--gaze", str(trees["reflacx"]), "--out", str(out2)]) == 0
    assert out2.read_bytes()[:4] == b"\x89PNG" and out2.stat().st_size > out.stat().st_size // 4


def test_nih_root_pretrains_and_evaluates(trees: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "pre"
    assert main(["pretrain", "--data", str(trees["nih"]), "--out", str(run), "--backbone", "resnet10", "--batch-size", "8", *FAST]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--encoder", str(run), "--data", str(trees["nih"])]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n_train"] + res["n_test"] == 23  # every NIH image with a file; 00000024_000.png is missing


def test_mimic_with_reflacx_relation_attention_and_mcgip(trees: dict[str, Path], tmp_path: Path) -> None:
    from gazerad.gaze.relation import load_relation
    from gazerad.pretrain.data import read_study_table

    rel = tmp_path / "rel.npz"
    assert main(["relation", "--gaze", str(trees["reflacx"]), "--images", str(trees["mimic"]), "--out", str(rel), "--quiet", "--workers", "1"]) == 0
    r = load_relation(rel)
    table = read_study_table(trees["mimic"])
    assert r.image_ids == table.ids  # the MIMIC table's order, dicom ids
    att = tmp_path / "att"
    assert main(["train-attention", "--gaze", str(trees["reflacx"]), "--images", str(trees["mimic"]), "--out", str(att), *FAST]) == 0
    metrics = json.loads((att / "metrics.json").read_text())
    assert metrics["n_train"] == len(table.subset("train")) and metrics["n_heldout"] == len(table.ids) - metrics["n_train"]
    pre = tmp_path / "mcgip"
    args = ["pretrain", "--gaze", str(trees["reflacx"]), "--images", str(trees["mimic"]), "--out", str(pre), "--backbone", "resnet10", "--batch-size", "8"]
    assert main([*args, *FAST]) == 0
    hist = json.loads((pre / "history.json").read_text())
    assert hist["config"]["gaze"] == str(trees["reflacx"])
    own = load_relation(pre / "relation.npz")  # computed from the gaze, over the training images
    train_ids = [table.ids[i] for i in table.subset("train")]
    assert own.image_ids == train_ids
    k = [table.ids.index(i) for i in train_ids]
    assert np.allclose(own.dense(), r.dense()[np.ix_(k, k)], atol=1e-6)  # the same TIMA relation as 'gazerad relation'


def test_mimic_with_egd_gaze_relation_attention_and_mcgip(trees: dict[str, Path], tmp_path: Path) -> None:
    from gazerad.gaze.relation import load_relation

    rel = tmp_path / "rel.npz"
    assert main(["relation", "--gaze", str(trees["egd"]), "--images", str(trees["mimic"]), "--out", str(rel), "--quiet", "--workers", "1"]) == 0
    assert len(load_relation(rel).image_ids) == 24  # one EGD reading per image
    att = tmp_path / "att"
    assert main(["train-attention", "--gaze", str(trees["egd"]), "--images", str(trees["mimic"]), "--out", str(att), *FAST]) == 0
    assert json.loads((att / "metrics.json").read_text())["n_train"] > 0
    pre = tmp_path / "pre"
    args = ["pretrain", "--gaze", str(trees["egd"]), "--images", str(trees["mimic"]), "--out", str(pre), "--backbone", "resnet10", "--batch-size", "8"]
    assert main([*args, *FAST]) == 0 and (pre / "relation.npz").is_file() and (pre / "encoder.pt").is_file()
