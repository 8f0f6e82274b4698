"""Pre-training throughput, all measured in one run (ratios are what to compare across machines).

1. Training step img/s of our SimCLR (``gazerad.pretrain.SimCLR``: backbone + projector +
   multi-positive NT-Xent) vs the same backbone, projector, batch and optimiser with
   ``lightly``'s ``NTXentLoss`` (goal >= 0.95x).
2. Extra cost of the McGIP gaze mask (``GazePositives`` lookups on a sparse relation over
   N images + the masked loss) per step (goal <= 5 %).
3. Extra cost of the FocusContrast attention crop over the plain random resized crop, per
   view and as a share of the step (goal <= 5 %).
4. Data loading img/s (two views per image, one process) vs step img/s.

Timings interleave the variants round by round and report medians.
Usage: python benchmarks/pretrain_throughput.py [--backbone resnet18] [--size 128] [--batch 64] [--rounds 5]
Needs ``pip install -e .[bench]`` for lightly.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import scipy.sparse as sp
import torch

from gazerad.attention import AttentionRandResizedCrop
from gazerad.pretrain.data import TwoViewDataset
from gazerad.pretrain.frameworks import SimCLR
from gazerad.ssl import GazePositives


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n-relation", type=int, default=50_000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    from lightly.loss import NTXentLoss

    dev = torch.device(a.device)
    torch.manual_seed(0)
    b, s = a.batch, a.size
    print(f"device {dev}, {torch.get_num_threads()} threads, backbone {a.backbone}, batch {b}, views {s} px")

    ours = SimCLR(backbone=a.backbone, temperature=0.2).to(dev)
    ref = SimCLR(backbone=a.backbone, temperature=0.2).to(dev)
    ref.load_state_dict(ours.state_dict())
    lightly_loss = NTXentLoss(temperature=0.2)
    opt_o = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_r = torch.optim.AdamW(ref.parameters(), lr=1e-4)
    v1, v2 = torch.rand(b, 1, s, s, device=dev), torch.rand(b, 1, s, s, device=dev)

    # a sparse relation over N images, ~32 related images per row
    rng = np.random.default_rng(0)
    n = a.n_relation
    rows = np.repeat(np.arange(n), 32)
    cols = rng.integers(0, n, n * 32)
    rel = sp.csr_matrix((rng.uniform(0, 1, n * 32).astype(np.float32), (rows, cols)), shape=(n, n))
    pos = GazePositives(rel, threshold=0.5, drop_p=0.5, seed=0)
    idx = torch.as_tensor(rng.choice(n, b, replace=False))

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step_ours(mask: bool) -> float:
        t = time.perf_counter()
        loss = ours(v1, v2, idx.to(dev), pos if mask else None)
        opt_o.zero_grad()
        loss.backward()
        opt_o.step()
        sync()
        return time.perf_counter() - t

    def step_lightly() -> float:
        t = time.perf_counter()
        loss = lightly_loss(ref.projector(ref.backbone(v1)), ref.projector(ref.backbone(v2)))
        opt_r.zero_grad()
        loss.backward()
        opt_r.step()
        sync()
        return time.perf_counter() - t

    # loss parity on the same embeddings
    with torch.no_grad():
        z1, z2 = torch.randn(b, 128), torch.randn(b, 128)
        print(f"loss parity: ours {float(ours.criterion(z1, z2)):.6f}  lightly {float(lightly_loss(z1, z2)):.6f}")

    for _ in range(2):
        step_ours(False), step_lightly(), step_ours(True)
    t_o, t_l, t_m = [], [], []
    for _ in range(a.rounds):
        t_o.append(step_ours(False))
        t_l.append(step_lightly())
        t_m.append(step_ours(True))
    mo, ml, mm = statistics.median(t_o), statistics.median(t_l), statistics.median(t_m)
    print(f"step  ours SimCLR          {b / mo:8.1f} img/s  ({mo * 1e3:.0f} ms)")
    print(f"step  lightly NTXentLoss   {b / ml:8.1f} img/s  ({ml * 1e3:.0f} ms)   ours/lightly = {ml / mo:.3f}x (goal >= 0.95)")
    print(f"step  ours + gaze mask     {b / mm:8.1f} img/s  ({mm * 1e3:.0f} ms)   extra cost {100 * (mm / mo - 1):+.1f} % (goal <= 5 %)")
    tm = []
    for _ in range(50):
        t = time.perf_counter()
        pos.batch_mask(idx)
        tm.append(time.perf_counter() - t)
    print(f"      gaze mask lookup alone (N = {n:,} sparse, B = {b}): {1e3 * statistics.median(tm):.2f} ms")

    # data side: two views per image from the in-memory base images
    base = 2 * s
    images = torch.rand(256, 1, base, base)
    yy, xx = np.mgrid[0:base, 0:base]
    att = np.exp(-(((xx - base * 0.7) ** 2 + (yy - base * 0.3) ** 2) / (2 * (base * 0.04) ** 2)))
    att = torch.from_numpy(np.repeat((att / att.sum())[None], 256, 0).astype(np.float32))
    plain = TwoViewDataset(images, AttentionRandResizedCrop(s, q=0.5), None, seed=0)
    focus = TwoViewDataset(images, AttentionRandResizedCrop(s, q=0.5), att, seed=0)
    td_p, td_f = [], []
    for r in range(a.rounds):
        for ds, acc in ((plain, td_p), (focus, td_f)):
            ds.set_epoch(r)
            t = time.perf_counter()
            for i in range(b):
                ds[i]
            acc.append(time.perf_counter() - t)
    dp, df = statistics.median(td_p), statistics.median(td_f)
    print(f"data  plain crop views     {b / dp:8.1f} img/s  ({dp * 1e3:.0f} ms per batch of {b})")
    print(
        f"data  attention crop views {b / df:8.1f} img/s  ({df * 1e3:.0f} ms per batch)   "
        f"extra per batch {1e3 * (df - dp):+.1f} ms = {100 * (df - dp) / mo:+.1f} % of a step (goal <= 5 %)"
    )
    print(
        f"data loading (1 process) vs step: {b / dp:.1f} vs {b / mo:.1f} img/s = {(b / dp) / (b / mo):.1f}x "
        f"(> 1: one loader process keeps up; use --workers otherwise)"
    )


if __name__ == "__main__":
    main()
