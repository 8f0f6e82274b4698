"""The engine's runtime: switches, float32 losses under autocast, and the fast path's numerics.

The fast path (bf16 autocast where the CPU has native bf16, channels-last) must change a
short training run's loss curve by rounding noise only: for every pre-training framework
the per-step losses of the fast and the float32 NCHW run stay within a stated tolerance,
while a real change (a 10x learning rate) leaves it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gazerad.engine import Runtime, cpu_has_bf16, fp32
from gazerad.pretrain.frameworks import build_framework
from gazerad.ssl import MaskedCosineLoss, MoCoInfoNCELoss, MultiPositiveNTXentLoss

# bf16 keeps 8 bits of mantissa (relative rounding 2^-8 = 0.4 %): over a few optimiser steps
# the curves drift apart a little. Stated tolerance: the largest per-step gap between the fast
# and the float32 curve is under 0.15 loss units and under a quarter of the gap a real change
# (a 10x learning rate, float32) makes. (SimSiam's trajectory drifts most: 0.103 by step 6 on
# one Xeon, 0.03-0.06 at other seeds, against 0.96 for the 10x learning rate; 0.1 was too tight.)
ABS_TOL = 0.15
STEPS = 6


def _curve(framework: str, rt: Runtime, lr: float = 1e-3, seed: int = 0) -> list[float]:
    torch.manual_seed(seed)
    kw = {"backbone": "resnet10", "proj_dim": 32, "hidden_dim": 64}
    if framework == "moco":
        kw["queue_size"] = 64
    model = rt.model(build_framework(framework, **kw))
    opt = rt.optimizer("AdamW", [p for p in model.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(1)
    base = torch.rand(16, 1, 48, 48, generator=g)
    out = []
    for step in range(STEPS):
        noise = torch.randn(2, 16, 1, 48, 48, generator=g) * 0.05
        v1, v2 = rt.batch((base + noise[0]).clamp(0, 1)), rt.batch((base + noise[1]).clamp(0, 1))
        with rt.autocast():
            loss = model(v1, v2, torch.arange(16), None)
        assert loss.dtype == torch.float32  # the loss itself is computed in float32
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.after_step(step, STEPS)
        out.append(float(loss))
    return out


def _gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.mark.parametrize("framework", ["simclr", "moco", "byol", "simsiam"])
def test_fast_path_loss_curve_matches_fp32(framework: str) -> None:
    ref = _curve(framework, Runtime.fp32_reference())
    fast_rt = Runtime(torch.device("cpu"))
    fast = _curve(framework, fast_rt)
    control = _gap(_curve(framework, Runtime.fp32_reference(), lr=1e-2), ref)
    gap = _gap(fast, ref)
    assert gap < ABS_TOL and gap < 0.25 * control, (fast_rt.describe(), gap, control, fast, ref)


def test_channels_last_alone_is_float32_to_rounding() -> None:
    ref = _curve("simclr", Runtime.fp32_reference())
    cl = _curve("simclr", Runtime(torch.device("cpu"), "fp32", True))
    assert _gap(cl, ref) < 1e-3 * abs(ref[0])


def test_switches_and_record() -> None:
    cpu = torch.device("cpu")
    assert Runtime(cpu, "fp32", False, False).describe() == {
        "device": "cpu",
        "precision": "fp32",
        "precision_asked": "fp32",
        "channels_last": False,
        "fused_optimizer": False,
    }
    assert Runtime(cpu).optimizer("AdamW", [torch.nn.Parameter(torch.zeros(2))]).defaults["fused"] is True
    assert not Runtime.fp32_reference().optimizer("AdamW", [torch.nn.Parameter(torch.zeros(2))]).defaults.get("fused")
    auto = Runtime(cpu)
    assert auto.describe()["precision"] == ("bf16" if cpu_has_bf16() else "fp32") and auto.channels_last is True
    assert Runtime(cpu, "bf16").dtype == torch.bfloat16 and not Runtime(cpu, "bf16").scaler().is_enabled()
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        Runtime(cpu, "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        Runtime(cpu, "int8")
    with pytest.raises(ValueError, match="channels_last"):
        Runtime(cpu, "auto", "sometimes")
    x = Runtime(cpu, "fp32", True).batch(torch.rand(2, 1, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_losses_run_in_float32_under_autocast() -> None:
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    h1, h2 = z1.bfloat16(), z2.bfloat16()
    for loss, args in [
        (MultiPositiveNTXentLoss(0.2), (h1, h2)),
        (MaskedCosineLoss(), (h1, h2)),
        (MoCoInfoNCELoss(0.2), (h1, h2, torch.nn.functional.normalize(torch.randn(32, 16, generator=g)).bfloat16())),
    ]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = loss(*args)
        want = loss(*(a.float() for a in args))  # the same rounded inputs, float32 arithmetic
        assert got.dtype == torch.float32 and torch.allclose(got, want, rtol=1e-6, atol=1e-7), (type(loss).__name__, got, want)
    # float64 stays float64 (hand-value tests and references)
    assert MultiPositiveNTXentLoss(0.2)(z1.double(), z2.double()).dtype == torch.float64

    @fp32
    def logits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a @ b.T

    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert logits(h1, h2).dtype == torch.float32


def test_trainer_records_its_runtime(tmp_path: Path) -> None:
    from gazerad.pretrain.trainer import PretrainConfig, pretrain
    from gazerad.synth.study import generate_studies

    data = tmp_path / "s"
    generate_studies(data, n=12, seed=0, size=64, progress=False)
    for precision in ("fp32", "auto"):
        out = tmp_path / precision
        pretrain(
            PretrainConfig(
                data=str(data),
                out=str(out),
                framework="simclr",
                backbone="resnet10",
                image_size=32,
                epochs=1,
                batch_size=8,
                splits=("train", "validate", "test"),
                max_steps=1,
                progress=False,
                precision=precision,
            )
        )
        rec = json.loads((out / "history.json").read_text())["runtime"]
        assert rec["precision"] == ("fp32" if precision == "fp32" or not cpu_has_bf16() else "bf16") and rec["channels_last"] is True


def test_checkpoint_restores_every_generator_and_refuses_other_runs(tmp_path: Path) -> None:
    import random

    import numpy as np

    from gazerad.engine.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
    from gazerad.errors import InputError

    model = torch.nn.Linear(3, 2)
    rt = Runtime.fp32_reference()
    opt = rt.optimizer("AdamW", model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    scaler = rt.scaler()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = save_checkpoint(
        tmp_path / "c.pt",
        "pretrain",
        model=model,
        optimizer=opt,
        scheduler=sched,
        scaler=scaler,
        epoch=2,
        step=7,
        history=[{"epoch": 1}],
        config={"framework": "moco", "backbone": "resnet10"},
        extra={"queue": torch.ones(4)},
    )
    want = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    state = load_checkpoint(path, "pretrain", "cpu", {"framework": "moco", "backbone": "resnet10"})
    epoch, step, history, extra = restore_checkpoint(state, torch.nn.Linear(3, 2), opt, sched, scaler)
    assert (epoch, step, history) == (2, 7, [{"epoch": 1}]) and torch.equal(extra["queue"], torch.ones(4))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == want
    assert load_checkpoint(tmp_path / "none.pt", "pretrain", "cpu", {}) is None
    with pytest.raises(InputError, match=r"another run \(framework 'moco' there, 'simclr' here\): use another --out"):
        load_checkpoint(path, "pretrain", "cpu", {"framework": "simclr", "backbone": "resnet10"})
    with pytest.raises(InputError, match="use another --out"):
        load_checkpoint(path, "kacl", "cpu", {})
    torch.save({"model": {}}, tmp_path / "old.pt")
    with pytest.raises(InputError, match="not a GazeRad checkpoint"):
        load_checkpoint(tmp_path / "old.pt", "pretrain", "cpu", {})
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt", "pretrain", "cpu", {})
