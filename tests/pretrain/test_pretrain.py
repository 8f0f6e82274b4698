"""Contrastive pre-training end to end: every framework x {plain, FocusContrast, McGIP},
resume after a kill, DDP gradient parity, torchrun, config files, evaluation, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gazerad.gaze import load_gaze
from gazerad.gaze.relation import compute_relation
from gazerad.pretrain import PretrainConfig, build_framework, evaluate_encoder, load_config, pretrain
from gazerad.pretrain.data import read_study_table
from gazerad.synth import generate_studies

TINY = dict(
    backbone="resnet10", image_size=32, base_size=64, batch_size=16, proj_dim=32, hidden_dim=64, queue_size=16, lr=3e-3, warmup_epochs=0, progress=False
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """48 studies at 128 px, a moment relation and a tiny trained attention model."""
    root = tmp_path_factory.mktemp("pretrain")
    studies = root / "s"
    generate_studies(studies, n=48, seed=11, size=128, workers=2, progress=False)
    ids = read_study_table(studies).ids
    rel = compute_relation(load_gaze(studies), "moment", image_ids=ids, workers=1, progress=False)
    rel.save(root / "rel.npz")
    from gazerad.attention import train_attention

    train_attention(studies, root / "att", epochs=1, batch_size=8, input_size=32, progress=False)
    return {"studies": studies, "relation": root / "rel.npz", "attention": root / "att" / "attention.pt", "root": root}


@pytest.mark.parametrize("framework", ["simclr", "moco", "byol", "simsiam"])
@pytest.mark.parametrize("method", ["plain", "focuscontrast", "mcgip"])
def test_loss_falls_for_every_framework_and_method(small, tmp_path, framework, method):
    extra = {}
    if method == "focuscontrast":
        extra = {"attention": str(small["attention"]), "q": 0.6}
    elif method == "mcgip":
        extra = {"relation": str(small["relation"]), "threshold": 0.8, "drop_p": 0.0}
    if framework == "moco":
        # MoCo's 0.999 key momentum is for runs of 100k steps: over these 36 steps the key
        # encoder would hardly move and the loss only fluctuates (seen: +0.05 after 12 epochs)
        extra["momentum"] = 0.9
    cfg = PretrainConfig(
        data=str(small["studies"]), out=str(tmp_path / "run"), framework=framework, epochs=12, seed=1, splits=("train", "validate", "test"), **TINY, **extra
    )
    assert cfg.method == method
    res = pretrain(cfg)
    loss = [h["loss"] for h in res["history"]]
    assert len(loss) == 12 and np.isfinite(loss).all()
    # epoch 1 is skipped: MoCo's queue is still filling (fewer negatives, lower loss)
    assert np.mean(loss[-2:]) < loss[1] - 0.02, loss
    out = tmp_path / "run"
    for name in ("encoder.pt", "checkpoint.pt", "history.json", "loss.png"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    if method == "focuscontrast":  # predicted maps cached per image
        assert len(list((out / "attention_cache").rglob("*.npy"))) == 48


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["backbone"]


def test_resume_after_kill_matches_uninterrupted_run(small, tmp_path):
    common = dict(
        data=str(small["studies"]),
        framework="moco",
        epochs=4,
        seed=3,
        relation=str(small["relation"]),
        threshold=0.8,
        drop_p=0.5,
        splits=("train", "validate", "test"),
        **TINY,
    )
    ref = pretrain(PretrainConfig(out=str(tmp_path / "ref"), **common))
    out = tmp_path / "killed"
    args = [
        sys.executable,
        "-m",
        "gazerad",
        "pretrain",
        "--data",
        common["data"],
        "--out",
        str(out),
        "--framework",
        "moco",
        "--epochs",
        "4",
        "--seed",
        "3",
        "--relation",
        common["relation"],
        "--threshold",
        "0.8",
        "--drop-p",
        "0.5",
    ]
    cfg_file = tmp_path / "tiny.json"
    cfg_file.write_text(json.dumps({k: v for k, v in TINY.items() if k != "progress"} | {"splits": ["train", "validate", "test"]}))
    args += ["--config", str(cfg_file)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.time() + 240
    seen = ""
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen += line
        if line.startswith("epoch 2/4") or proc.poll() is not None:
            break
    assert proc.poll() is None, f"run ended before it could be killed:\n{seen}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert 2 <= state["epoch"] < 4 and not (out / "encoder.pt").exists()
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resuming moco from {out / 'checkpoint.pt'} at epoch {state['epoch']}/4" in r.stdout
    a, b = _weights(Path(ref["encoder"])), _weights(out / "encoder.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist = json.loads((out / "history.json").read_text())["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    np.testing.assert_allclose([h["loss"] for h in hist], [h["loss"] for h in ref["history"]], rtol=1e-6)


def _ddp_worker(rank: int, world: int, port: int, payload: dict, out: str) -> None:
    import torch.distributed as dist

    from gazerad.ssl import GazePositives

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_framework(payload["framework"], backbone="resnet10", proj_dim=16, hidden_dim=32)
    model.load_state_dict(payload["state"])
    model.eval()  # batch-norm with running statistics: each sample independent of its batch
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    b = payload["v1"].shape[0] // world
    sl = slice(rank * b, (rank + 1) * b)
    pos = GazePositives(payload["relation"], threshold=0.5)
    loss = ddp(payload["v1"][sl], payload["v2"][sl], payload["idx"][sl], pos)
    loss.backward()
    if rank == 0:
        torch.save({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, out)
    dist.destroy_process_group()


@pytest.mark.parametrize("framework", ["simclr", "byol"])
def test_ddp_two_processes_equal_single_process_gradient(tmp_path, framework):
    import socket

    from gazerad.ssl import GazePositives

    torch.manual_seed(0)
    model = build_framework(framework, backbone="resnet10", proj_dim=16, hidden_dim=32)
    g = torch.Generator().manual_seed(1)
    v1, v2 = torch.rand(8, 1, 32, 32, generator=g), torch.rand(8, 1, 32, 32, generator=g)
    idx = torch.arange(8)
    rel = np.eye(8)
    rel[0, 5] = rel[5, 0] = rel[2, 3] = rel[3, 2] = 0.9  # gaze positives across and within ranks
    payload = {"framework": framework, "state": model.state_dict(), "v1": v1, "v2": v2, "idx": idx, "relation": rel}
    model.eval()
    model(v1, v2, idx, GazePositives(rel, threshold=0.5)).backward()
    single = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "ddp.pt"
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, payload, str(out)), nprocs=2, join=True)
    ddp = torch.load(out)
    assert set(ddp) == set(single)
    worst = max(float((ddp[n] - single[n]).abs().max() / (single[n].abs().max() + 1e-12)) for n in single)
    assert worst < 1e-4, worst


def test_torchrun_two_ranks_end_to_end(small, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "gazerad",
        "pretrain",
        "--data",
        str(small["studies"]),
        "--out",
        str(out),
        "--framework",
        "simclr",
        "--backbone",
        "resnet10",
        "--size",
        "32",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--relation",
        str(small["relation"]),
        "--threshold",
        "0.8",
        "--quiet",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "encoder.pt").is_file()
    hist = json.loads((out / "history.json").read_text())["history"]
    assert hist[0]["steps"] == 2 and np.isfinite(hist[0]["loss"])


def test_config_file_with_references_and_overrides(small, tmp_path):
    yml = tmp_path / "pretrain.yaml"
    yml.write_text(
        "size: 32\n"
        "pretrain:\n"
        f"  data: {small['studies']}\n"
        f"  out: {tmp_path / 'cfgrun'}\n"
        "  framework: byol\n  backbone: resnet10\n  image_size: '@size'\n  base_size: '$@size * 2'\n"
        "  batch_size: 16\n  epochs: 3\n"
    )
    cfg = load_config(yml, {"epochs": 1})
    assert (cfg.framework, cfg.image_size, cfg.base_size, cfg.epochs) == ("byol", 32, 64, 1)
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  data: x\n  out: y\n  framewrk: byol\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*unknown config keys \['framewrk'\]"):
        load_config(bad)
    r = subprocess.run(
        [sys.executable, "-m", "gazerad", "pretrain", "--config", str(yml), "--epochs", "1", "--quiet"], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "cfgrun" / "history.json").read_text())["config"]["framework"] == "byol"


def test_evaluate_protocols_and_cli(small, tmp_path):
    enc_dir = tmp_path / "enc"
    pretrain(PretrainConfig(data=str(small["studies"]), out=str(enc_dir), framework="simclr", epochs=1, **TINY))
    for protocol in ("linear", "knn", "finetune"):
        res = evaluate_encoder(enc_dir / "encoder.pt", small["studies"], protocol=protocol, epochs=1)
        assert 0.0 <= res["accuracy"] <= 1.0 and 0.0 <= res["auc"] <= 1.0, res
        assert res["n_train"] + res["n_test"] == 48
    ordinal = evaluate_encoder(enc_dir, small["studies"], protocol="linear", task="ordinal")
    assert ordinal["mae"] >= 0 and "auc" in ordinal
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "gazerad",
            "evaluate",
            "--encoder",
            "random",
            "--backbone",
            "resnet10",
            "--size",
            "32",
            "--data",
            str(small["studies"]),
            "--protocol",
            "knn",
            "--out",
            str(tmp_path / "m.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "m.json").read_text())["protocol"] == "knn"
    missing = tmp_path / "nope.pt"
    r = subprocess.run(
        [sys.executable, "-m", "gazerad", "evaluate", "--encoder", str(missing), "--data", str(small["studies"])], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2 and str(missing) in r.stderr and "Traceback" not in r.stderr


def test_bad_input_is_named(small, tmp_path):
    other = tmp_path / "other.npz"
    from gazerad.gaze.relation import Relation

    Relation(["x.png", "y.png"], np.eye(2), "moment").save(other)
    with pytest.raises(ValueError, match="none of the .* images is in this relation"):
        pretrain(PretrainConfig(data=str(small["studies"]), out=str(tmp_path / "r"), relation=str(other), **TINY))
    with pytest.raises(ValueError, match="unknown framework 'swav'"):
        PretrainConfig(data="d", out="o", framework="swav")
    with pytest.raises(ValueError, match="drop_p must be in"):
        PretrainConfig(data="d", out="o", drop_p=1.5)
    r = subprocess.run(
        [sys.executable, "-m", "gazerad", "pretrain", "--data", str(tmp_path), "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2 and "labels.csv is missing" in r.stderr
