"""Exported MONAI bundles: MONAI's own tools accept and run them, their outputs equal
GazeRad's inference, GazeRad and the server load them back."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from gazerad.cli import main
from gazerad.errors import InputError

#: The fields MONAI's bundle metadata schema (meta_schema_20220324) requires. The schema is
#: downloaded by ``monai.bundle verify_metadata`` and these machines have no internet, so the
#: test checks these fields and types itself.
REQUIRED_META = (
    *("version", "changelog", "monai_version", "pytorch_version", "numpy_version"),
    *("task", "description", "authors", "copyright", "network_data_format"),
)
REQUIRED_IO = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data", "channel_def")


@pytest.fixture(scope="module")
def models(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from gazerad.attention import train_attention
    from gazerad.kacl import train_kacl
    from gazerad.pretrain import pretrain

    root = tmp_path_factory.mktemp("bundle_models")
    train_attention(studies, root / "att", epochs=1, batch_size=8, image_size=32, progress=False, device="cpu")
    kacl = dict(data=str(studies), out=str(root / "kacl"), backbone="resnet10", image_size=32, epochs=1, batch_size=8, device="cpu", progress=False)
    train_kacl(kacl)
    pretrain(dict(data=str(studies), out=str(root / "enc"), backbone="resnet10", image_size=32, epochs=1, batch_size=8, device="cpu", progress=False))
    return {"attention": root / "att", "kacl": root / "kacl", "encoder": root / "enc"}


@pytest.fixture(scope="module")
def xrays(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("bundle_in")
    for name in ("00000002_000.png", "00000005_000.png"):
        shutil.copy(studies / "images" / name, d / name)
    shutil.copy(studies / "images_dicom" / "00000007_000.dcm", d / "00000007_000.dcm")
    return d


def _monai_bundle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def bundles(models: dict[str, Path], xrays: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for kind, run in models.items():
        b = root / kind
        assert main(["export-bundle", "--model", str(run), "--out", str(b)]) == 0
        res = root / f"{kind}_out"
        args = ["--config_file", "configs/inference.json", "--bundle_root", ".", "--input_dir", str(xrays), "--output_dir", str(res), "--min_score", "0.0"]
        r = _monai_bundle("run", *args, cwd=b)
        assert r.returncode == 0, r.stderr[-3000:]
        out[kind] = {"bundle": b, "out": res}
    return out


@pytest.mark.parametrize("kind", ["attention", "kacl", "encoder"])
def test_bundle_layout_and_metadata(bundles: dict, kind: str) -> None:
    import monai

    b = bundles[kind]["bundle"]
    for f in ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md", "LICENSE"):
        assert (b / f).is_file(), f
    meta = json.loads((b / "configs" / "metadata.json").read_text())
    assert all(k in meta for k in REQUIRED_META) and meta["monai_version"] == monai.__version__
    assert meta["pytorch_version"] == torch.__version__.split("+")[0] and meta["gazerad"]["kind"] == kind
    for io in (meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]):
        assert all(k in io for k in REQUIRED_IO) and isinstance(io["spatial_shape"], list) and isinstance(io["num_channels"], int)
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]
    readme = (b / "docs" / "README.md").read_text()
    assert "Not a medical device" in readme and "Training data" in readme and "Apache" in (b / "LICENSE").read_text()
    # MONAI's CheckpointLoader reads the weights: models/model.pt holds them under one key, float32
    state = torch.load(b / "models" / "model.pt", weights_only=True)
    weights = state[{"attention": "state_dict", "kacl": "model", "encoder": "backbone"}[kind]]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())


@pytest.mark.parametrize("kind", ["attention", "kacl", "encoder"])
def test_monai_verify_net_in_out_passes(bundles: dict, kind: str) -> None:
    args = ["network", "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--device", "cpu"]
    r = _monai_bundle("verify_net_in_out", *args, cwd=bundles[kind]["bundle"])
    assert r.returncode == 0 and "verified with no error" in r.stdout + r.stderr, r.stderr[-3000:]


def test_bundle_run_attention_equals_gazerad(bundles: dict, xrays: Path) -> None:
    from gazerad.attention.checkpoint import load_attention_model
    from gazerad.attention.predict import predict_attention
    from gazerad.io.xray import read_xray

    model = load_attention_model(bundles["attention"]["bundle"])  # gazerad loads the bundle itself
    files = sorted(xrays.iterdir())
    assert len(list(bundles["attention"]["out"].glob("*_attention.npy"))) == len(files) == 3
    for f in files:
        mine = predict_attention(model, read_xray(f)[0])
        theirs = np.load(bundles["attention"]["out"] / f"{f.stem}_attention.npy")
        assert theirs.shape == mine.shape and float(np.abs(theirs - mine).max()) < 1e-5 and abs(float(theirs.sum()) - 1) < 1e-4


def test_bundle_run_classifier_equals_gazerad(bundles: dict, xrays: Path) -> None:
    from gazerad.serving.infer import LocalizationService

    svc = LocalizationService(bundles["kacl"]["bundle"] / "models" / "model.pt", device="cpu")
    for f in sorted(xrays.iterdir()):
        res = json.loads((bundles["kacl"]["out"] / f"{f.stem}.json").read_text())
        ours = svc(f, min_score=0.0, max_boxes=100)
        probs = {q["label"]: q["score"] for q in ours["prediction"]}
        assert res["classes"] == list(probs)
        assert np.allclose(res["probabilities"], [probs[c] for c in res["classes"]], atol=1e-5, rtol=0)
        boxes = sorted((b["label"], round(b["x"], 3), round(b["y"], 3), round(b["w"], 3), round(b["h"], 3)) for b in res["boxes"])
        theirs = sorted((b["label"], round(b["x"], 3), round(b["y"], 3), round(b["w"], 3), round(b["h"], 3)) for b in ours["boxes"])
        assert boxes == theirs and boxes  # every class >= 0.0: boxes for each
        assert [b["label"] for b in res["boxes"]] == [b["label"] for b in ours["boxes"]]  # in the server's order
        assert [b["expected_hit"] for b in res["boxes"]] == pytest.approx([b["expected_hit"] for b in ours["boxes"]], abs=1e-5)


def test_bundle_run_encoder_equals_gazerad(bundles: dict, xrays: Path) -> None:
    from gazerad.data.inputs import encoder_input
    from gazerad.io.xray import read_xray
    from gazerad.pretrain.trainer import load_encoder

    net, cfg = load_encoder(bundles["encoder"]["bundle"])
    for f in sorted(xrays.iterdir()):
        with torch.no_grad():
            mine = net(encoder_input(read_xray(f)[0], int(cfg["image_size"])))[0].numpy()
        theirs = np.load(bundles["encoder"]["out"] / f"{f.stem}_features.npy")
        assert theirs.shape == mine.shape and float(np.abs(theirs - mine).max()) < 1e-5


def test_gazerad_commands_take_a_bundle(bundles: dict, studies: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", "--encoder", str(bundles["encoder"]["bundle"]), "--data", str(studies)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["encoder"] == str(bundles["encoder"]["bundle"])
    ev = ["--out", str(tmp_path / "ev"), "--overlays", "0"]
    assert main(["evaluate-localization", "--model", str(bundles["kacl"]["bundle"]), "--data", str(studies), *ev]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["auc"]
    # a bundle exports again (round trip), and a wrong file or a full folder is refused
    assert main(["export-bundle", "--model", str(bundles["attention"]["bundle"]), "--out", str(tmp_path / "again")]) == 0
    with pytest.raises(InputError, match="not empty"):
        from gazerad.bundle import export_bundle

        export_bundle(bundles["attention"]["bundle"], tmp_path / "again")
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a model")
    assert main(["export-bundle", "--model", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "cannot be read as a GazeRad model" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_server_answers_from_a_bundle_in_its_model_folder(bundles: dict, studies: Path, tmp_path: Path) -> None:
    from gazerad.attention.checkpoint import load_attention_model
    from gazerad.attention.predict import predict_attention
    from gazerad.io.xray import read_xray
    from tests.support.server import Server

    s = Server(studies / "images", tmp_path / "srv")
    shutil.copytree(bundles["attention"]["bundle"], s.model_dir / "attention")  # no attention.pt: the bundle serves
    s.start()
    try:
        info = requests.get(s.url + "/info/", timeout=30).json()["models"]["attention"]
        assert info["weights"].startswith("bundle") and "Not a medical device" in info["model_card"]["intended_use"]
        r = requests.post(s.url + "/infer/attention", params={"image": "00000002_000", "output": "json"}, timeout=60)
        assert r.status_code == 200, r.text
        from gazerad.serving.infer import attention_summary

        heat = predict_attention(load_attention_model(bundles["attention"]["bundle"]), read_xray(studies / "images" / "00000002_000.png")[0])
        want = attention_summary(heat)
        got = r.json()
        assert [(q["x"], q["y"]) for q in got["peaks"]] == [(q["x"], q["y"]) for q in want["peaks"]]
        assert abs(got["max"] - want["max"]) < 1e-6 and abs(got["entropy"] - want["entropy"]) < 1e-4
    finally:
        s.stop()


def test_bad_export_and_evaluation_inputs_are_named(models: dict[str, Path], studies: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """What a CLI fuzzing pass found: each is exit 2 with the file and the problem, nothing written."""
    kacl = models["kacl"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["export-bundle", "--model", str(kacl), "--out", str(afile)], "exists and is a file"),
        (["export-bundle", "--model", str(kacl / "checkpoint.pt"), "--out", str(tmp_path / "b1")], "not a finished model file"),
        (["export-bundle", "--model", str(kacl), "--out", str(tmp_path / "b2"), "--stats", str(tmp_path / "none.json")], "statistics file does not exist"),
        (["evaluate-localization", "--model", str(kacl), "--data", str(studies), "--boxes", str(tmp_path / "none.csv")], "box list does not exist"),
    ]
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err, err
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists() and afile.read_text() == "x"
    boxes = tmp_path / "boxes.csv"
    rows = (studies / "BBox_List_2017.csv").read_text().splitlines()
    first = rows[1].split(",")
    first[2:6] = ["500", "600", "116", "65"]  # past the bottom right of a 512 px film
    boxes.write_text("\n".join([rows[0], ",".join(first), *rows[2:]]) + "\n")
    assert main(["evaluate-localization", "--model", str(kacl), "--data", str(studies), "--boxes", str(boxes), "--splits", "train", "validate", "test"]) == 2
    assert "lies outside its 512 x 512 image" in capsys.readouterr().err
