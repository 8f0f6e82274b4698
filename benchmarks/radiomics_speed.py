"""Radiomics speed: torch backend vs pyradiomics, per feature class and in total, in one run.

Images: ``--n`` synthetic 512 x 512 chest phantoms (``gazerad.synth``; 16-bit range scaled
to 0..255 as KACL's 8-bit PNGs) with a ROI of ``--roi`` of the image (an ellipse in the
lungs, ~30 %), bin width 25. pyradiomics runs one image per process on a pool of
``--workers`` processes (all cores: the fair comparison; one persistent pool, warmed up
untimed, best of ``--pool-reps`` passes) and single-process as well; the
torch backend runs batches of ``--batch`` on ``--threads`` CPU threads, and on CUDA when
present (one untimed warm-up batch, then the best of ``--reps`` passes); and through
``RadiomicsExtractor(backend="torch", n_workers=--workers).extract`` on CPU, i.e. batches on
a pool of single-threaded processes like pyradiomics' (input checks, ROI crops and
transfers included; warm pool, best of ``--reps``). Prints images/s and the ratios
torch / pyradiomics(pool) per class and for all 102 features (goal: >= 10x on 2 CPU
cores, >= 100x on a GPU), plus the max relative difference between the backends on these
images.

Usage: python benchmarks/radiomics_speed.py [--n 32] [--batch 8] [--workers 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from gazerad.radiomics import FEATURE_CLASSES, RadiomicsExtractor, extract_pyradiomics, feature_names, torch_features
from gazerad.synth.phantom import render, sample_spec


def make_images(n: int, size: int, roi: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    images, masks = [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(n):
        img = render(sample_spec(rng, size=size)).image.astype(np.float64)
        lo, hi = np.percentile(img, [0.5, 99.5])
        images.append(np.clip((img - lo) / (hi - lo), 0, 1) * 255.0)
        # an ellipse of area `roi` of the image, jittered
        a = np.sqrt(roi * size * size / np.pi) * rng.uniform(1.0, 1.2)
        b = roi * size * size / (np.pi * a)
        cy, cx = size / 2 + rng.uniform(-10, 10), size / 2 + rng.uniform(-10, 10)
        masks.append(((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1.0)
    return images, masks


def time_torch(img: torch.Tensor, msk: torch.Tensor, classes: tuple[str, ...], batch: int, reps: int) -> tuple[float, np.ndarray]:
    out = None
    best = float("inf")
    torch_features(img[:batch], msk[:batch], 25.0, classes)  # warm-up (allocator, thread pool), untimed
    for _ in range(reps):
        if img.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        parts = [torch_features(img[i : i + batch], msk[i : i + batch], 25.0, classes) for i in range(0, img.shape[0], batch)]
        if img.is_cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
        out = torch.cat(parts).cpu().numpy()
    return img.shape[0] / best, out


def time_torch_pool(images: list, masks: list, classes: tuple[str, ...], batch: int, workers: int, reps: int) -> tuple[float, np.ndarray]:
    """``RadiomicsExtractor(backend="torch", n_workers=workers).extract`` on CPU: images/s (best of reps, warm pool)."""
    with RadiomicsExtractor("torch", 25.0, classes, device="cpu", batch_size=batch, n_workers=workers) as ex:
        ex.extract(images[: 2 * workers], masks[: 2 * workers])  # warm-up: starts the pool, untimed
        best, out = float("inf"), None
        for _ in range(reps):
            t = time.perf_counter()
            out = ex.extract(images, masks).values
            best = min(best, time.perf_counter() - t)
    return len(images) / best, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--roi", type=float, default=0.3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pool-reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, masks = make_images(args.n, args.size, args.roi, args.seed)
    print(
        f"{args.n} images {args.size}x{args.size}, ROI {np.mean([m.mean() for m in masks]):.0%}, bin width 25, "
        f"torch threads {args.threads}, pyradiomics pool {args.workers}"
    )
    img = torch.from_numpy(np.stack(images))
    msk = torch.from_numpy(np.stack(masks))
    cuda = torch.cuda.is_available()
    rows = []
    pool = ProcessPoolExecutor(max_workers=args.workers)
    extract_pyradiomics(images[: 2 * args.workers], masks[: 2 * args.workers], 25.0, FEATURE_CLASSES, n_workers=args.workers, pool=pool)  # warm-up
    header = f"{'class':12s} {'pyrad 1p':>9s} {'pyrad pool':>10s} {'torch 1p':>9s} {'ratio':>6s} {'torch pool':>10s} {'ratio':>6s}" + (
        f" {'cuda':>9s} {'ratio':>7s}" if cuda else ""
    )
    print(header + "   (images/s)")
    for classes in [(c,) for c in FEATURE_CLASSES] + [FEATURE_CLASSES]:
        name = classes[0] if len(classes) == 1 else "all (102)"
        k = min(4, args.n)
        t = time.perf_counter()
        extract_pyradiomics(images[:k], masks[:k], 25.0, classes, n_workers=1)
        py1 = k / (time.perf_counter() - t)
        best = float("inf")
        for _ in range(args.pool_reps):
            t = time.perf_counter()
            ref = extract_pyradiomics(images, masks, 25.0, classes, n_workers=args.workers, pool=pool)
            best = min(best, time.perf_counter() - t)
        pool_rate = args.n / best
        tc, ours = time_torch(img, msk, classes, args.batch, args.reps)
        tp, ours_pool = time_torch_pool(images, masks, classes, args.batch, args.workers, args.reps)
        err = float(max(np.max(np.abs(o - ref) / np.maximum(np.abs(ref), 1e-6)) for o in (ours, ours_pool)))
        row = {
            "class": name,
            "pyradiomics_1p": py1,
            "pyradiomics_pool": pool_rate,
            "torch_cpu": tc,
            "ratio_cpu": tc / pool_rate,
            "torch_cpu_pool": tp,
            "ratio_cpu_pool": tp / pool_rate,
            "max_rel_err": err,
        }
        line = f"{name:12s} {py1:9.2f} {pool_rate:10.2f} {tc:9.1f} {tc / pool_rate:5.1f}x {tp:10.1f} {tp / pool_rate:5.1f}x"
        if cuda:
            gc, _ = time_torch(img.cuda(), msk.cuda(), classes, args.batch * 4, args.reps + 1)
            row.update(torch_cuda=gc, ratio_cuda=gc / pool_rate)
            line += f" {gc:9.1f} {gc / pool_rate:6.1f}x"
        print(line + f"   max rel diff {err:.1e}", flush=True)
        rows.append(row)
    pool.shutdown()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "features": len(feature_names())}, f, indent=1)


if __name__ == "__main__":
    main()
