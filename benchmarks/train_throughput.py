"""Training-step throughput of every trainer: the engine's fast path against float32 NCHW.

One training step (forward, loss, backward, optimiser step) of each trainer's real model
and loss on random 1-channel batches, at 64 and 128 px, timed in this process twice: with
:meth:`gazerad.engine.Runtime.fp32_reference` (float32, NCHW: how every trainer ran before
the engine) and with ``Runtime(device)`` on its defaults (bf16 autocast where the CPU has
native bf16, channels-last, fused AdamW). Warm-up steps first; then the best of ``--reps`` timings of
``--steps`` steps each (best-of: this VM's neighbours add noise, never speed).

Trainers: SimCLR / MoCo v2 / BYOL / SimSiam pre-training (ResNet-10 and ResNet-18), the
attention predictor (MONAI BasicUNet), KACL's image branch (ResNet-10; radiomics refresh
excluded: it runs once per epoch, not per step) and supervised fine-tuning (ResNet-18).

    python benchmarks/train_throughput.py [--sizes 64 128] [--batch 32] [--steps 3] [--reps 3]

Writes ``benchmarks/results/train_throughput.json``: a list of rows ``{trainer, size,
fp32_img_s, fast_img_s, ratio, ...}``, each with the machine and both runtimes, and a PNG
of the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from gazerad.engine import Runtime, cpu_has_bf16

RESULTS = Path(__file__).resolve().parent / "results"


def _step_pretrain(framework: str, backbone: str) -> Callable[[Runtime, int, int], Callable[[], None]]:
    def make(rt: Runtime, size: int, batch: int) -> Callable[[], None]:
        from gazerad.pretrain.frameworks import build_framework

        kw = {"backbone": backbone, "proj_dim": 128, "hidden_dim": 512}
        if framework == "moco":
            kw["queue_size"] = 1024
        model = rt.model(build_framework(framework, **kw))
        opt = rt.optimizer("AdamW", [p for p in model.parameters() if p.requires_grad], lr=1e-3)
        scaler = rt.scaler()
        g = torch.Generator().manual_seed(0)
        v1, v2 = (rt.batch(torch.rand(batch, 1, size, size, generator=g)) for _ in range(2))
        idx = torch.arange(batch)

        def step() -> None:
            with rt.autocast():
                loss = model(v1, v2, idx, None)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            model.after_step(0, 100)

        return step

    return make


def _optimise(rt: Runtime, model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], lr: float = 1e-3) -> Callable[[], None]:
    """One training step of ``model``: ``loss_fn()`` (forward under the run's autocast inside), backward, AdamW."""
    opt = rt.optimizer("AdamW", model.parameters(), lr=lr)
    scaler = rt.scaler()

    def step() -> None:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def _step_attention(rt: Runtime, size: int, batch: int) -> Callable[[], None]:
    from gazerad.attention.loss import attention_loss
    from gazerad.attention.network import AttentionPredictor

    model = rt.model(AttentionPredictor())
    x = rt.batch(torch.rand(batch, 1, size, size))
    t = torch.rand(batch, 1, size, size)
    t = t / t.sum((-2, -1), keepdim=True)

    def loss() -> torch.Tensor:
        with rt.autocast():
            logits = model(x)
        return attention_loss(logits.float(), t, 1.0, 1.0)

    return _optimise(rt, model, loss)


def _step_kacl(rt: Runtime, size: int, batch: int) -> Callable[[], None]:
    from gazerad.kacl.model import KACLModel
    from gazerad.ssl import MultiPositiveNTXentLoss

    model = rt.model(KACLModel(5, 102, "resnet10", cam_layer="backbone.layer2"))
    con = MultiPositiveNTXentLoss(0.5)
    x = rt.batch(torch.rand(batch, 1, size, size))
    y = (torch.rand(batch, 5) > 0.7).float()
    feats = torch.randn(batch, 102)

    def loss() -> torch.Tensor:
        with rt.autocast():
            logits, z_img = model.image_branch(x)
            z_rad = model.radiomics_head(model.radiomics_encoder(feats))
        return 0.7 * F.binary_cross_entropy_with_logits(logits.float(), y) + 0.3 * con(z_img, z_rad)

    return _optimise(rt, model, loss)


def _step_finetune(rt: Runtime, size: int, batch: int) -> Callable[[], None]:
    from gazerad.ssl import build_backbone

    backbone, dim = build_backbone("resnet18")
    model = rt.model(torch.nn.Sequential(backbone, torch.nn.Linear(dim, 5)))
    x = rt.batch(torch.rand(batch, 1, size, size))
    y = (torch.rand(batch, 5) > 0.7).float()

    def loss() -> torch.Tensor:
        with rt.autocast():
            logits = model(x)
        return F.binary_cross_entropy_with_logits(logits.float(), y)

    return _optimise(rt, model, loss, lr=1e-4)


TRAINERS: dict[str, Callable[[Runtime, int, int], Callable[[], None]]] = {
    "simclr/resnet10": _step_pretrain("simclr", "resnet10"),
    "moco/resnet10": _step_pretrain("moco", "resnet10"),
    "byol/resnet10": _step_pretrain("byol", "resnet10"),
    "simsiam/resnet10": _step_pretrain("simsiam", "resnet10"),
    "simclr/resnet18": _step_pretrain("simclr", "resnet18"),
    "moco/resnet18": _step_pretrain("moco", "resnet18"),
    "attention/basicunet": _step_attention,
    "kacl/resnet10": _step_kacl,
    "finetune/resnet18": _step_finetune,
}
# pre-training steps see two views per image
VIEWS = {k: 2 if k.split("/")[0] in ("simclr", "moco", "byol", "simsiam") else 1 for k in TRAINERS}


def img_per_s(make: Callable, rt: Runtime, size: int, batch: int, steps: int, reps: int) -> float:
    torch.manual_seed(0)
    step = make(rt, size, batch)
    for _ in range(2):
        step()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - t0)
    return batch * steps / best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--trainers", nargs="+", default=list(TRAINERS))
    ap.add_argument("--json", default=str(RESULTS / "train_throughput.json"))
    args = ap.parse_args()
    ref, fast = Runtime.fp32_reference(args.device), Runtime(torch.device(args.device))
    print(f"fast path: {fast.describe()}  (CPU native bf16: {cpu_has_bf16()}; torch {torch.__version__}, {torch.get_num_threads()} threads)", flush=True)
    rows = []
    for name in args.trainers:
        for size in args.sizes:
            a = img_per_s(TRAINERS[name], ref, size, args.batch, args.steps, args.reps)
            b = img_per_s(TRAINERS[name], fast, size, args.batch, args.steps, args.reps)
            rows.append(
                {
                    "trainer": name,
                    "size": size,
                    "batch": args.batch,
                    "views": VIEWS[name],
                    "fp32_img_s": round(a, 2),
                    "fast_img_s": round(b, 2),
                    "ratio": round(b / a, 2),
                }
            )
            print(f"{name:20s} {size:4d} px  fp32 NCHW {a:7.1f} img/s  fast {b:7.1f} img/s  x{b / a:5.2f}", flush=True)
    run = {
        "fast_runtime": fast.describe(),
        "reference_runtime": ref.describe(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cpu_bf16": cpu_has_bf16(),
        "steps": args.steps,
        "reps": args.reps,
    }
    out = [{**r, **run} for r in rows]  # a list of rows, each carrying how it was measured
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    _plot(rows, Path(args.json).with_suffix(".png"))
    return 0


def _plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(r["trainer"] for r in rows))
    sizes = sorted({r["size"] for r in rows})
    fig = Figure(figsize=(9, 4))
    ax = fig.add_subplot()
    w = 0.8 / len(sizes)
    for k, s in enumerate(sizes):
        vals = [next((r["ratio"] for r in rows if r["trainer"] == n and r["size"] == s), 0) for n in names]
        ax.bar([i + k * w for i in range(len(names))], vals, w, label=f"{s} px")
    ax.axhline(1, color="k", lw=0.8)
    ax.set_xticks([i + w * (len(sizes) - 1) / 2 for i in range(len(names))], names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("fast path / fp32 NCHW (img/s)")
    ax.set_title("Training-step speed-up of the engine's fast path (bf16 autocast + channels-last)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
