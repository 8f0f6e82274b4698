"""Training the attention predictor (:func:`train_attention`) and ``gazerad train-attention``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gazerad.attention.checkpoint import _json_safe, save_attention_model
from gazerad.attention.data import AttentionDataset
from gazerad.attention.evaluation import _predict_dataset, centre_prior, fit_centre_prior, saliency_scores
from gazerad.attention.loss import attention_loss
from gazerad.attention.network import DEFAULT_FEATURES, AttentionPredictor, _device
from gazerad.attention.plots import _plot_curve, _plot_overlay
from gazerad.engine.runtime import Runtime
from gazerad.errors import InputError

__all__ = ["train_attention", "run_train_attention"]

PathLike = str | os.PathLike


@contextlib.contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seed torch and make cuDNN deterministic for the duration (restoring its flags)."""
    flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags


def train_attention(
    studies: PathLike,
    out: PathLike,
    epochs: int = 30,
    batch_size: int = 8,
    lr: float = 1e-3,
    input_size: int = 128,
    seed: int = 0,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    progress: bool = True,
    features: Sequence[int] = DEFAULT_FEATURES,
    precision: str = "auto",
    channels_last: bool | str = "auto",
    weight_decay: float = 1e-4,
    w_kl: float = 1.0,
    w_cc: float = 1.0,
    sigma_deg: float = 1.0,
    n_overlay: int = 4,
    gaze: Any = None,
) -> dict[str, Any]:
    """Train the attention predictor on a study folder; evaluate on its held-out images.

    AdamW with a cosine learning-rate decay over all steps, :func:`attention_loss`, batches
    shuffled by a seeded generator: on the CPU the same ``seed`` gives bit-identical
    weights; CUDA runs use cuDNN's deterministic mode (identical in practice, not
    guaranteed by PyTorch for every kernel), and AMP there uses float16 with a grad scaler.

    Args:
        studies: study folder (see :class:`AttentionDataset`).
        out: output folder (created; files replaced atomically).
        epochs, batch_size, lr, weight_decay: optimisation.
        input_size: model side ``S`` (multiple of 16).
        seed: seed of initialisation and shuffling.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        amp: ``False`` forces float32 (same as ``precision="fp32"``).
        precision, channels_last: :class:`gazerad.engine.Runtime` switches (default: bf16
            autocast on CPUs with native bf16, fp16 on CUDA; channels-last).
        progress: tqdm bars.
        gaze: an already loaded :class:`~gazerad.gaze.record.GazeCollection` (default:
            ``load_gaze(studies)``), e.g. gaze uploaded to the server.
        features: ``BasicUNet`` features.
        w_kl, w_cc: loss weights.
        sigma_deg: heatmap kernel in degrees.
        n_overlay: held-out images shown in ``overlay.png``.

    Returns:
        ``{"heldout": {cc, kl, nss, auc_judd, sim, loss, n}, "centre_prior": {...},
        "history": [per-epoch {epoch, train_loss, heldout_loss, cc, kl, nss, auc_judd,
        sim}], "n_train", "n_heldout", "skipped", "config", "seconds", "files"}``
        (also in ``out/metrics.json``).

    Raises:
        InputError: no training image with gaze.
    """
    from tqdm.auto import tqdm

    from gazerad.gaze.importers import load_gaze
    from gazerad.io.atomic import atomic_write_text

    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    t0 = time.perf_counter()
    studies, out = Path(studies), Path(out)
    dev = _device(device)
    rt = Runtime(dev, "fp32" if amp is False else precision, channels_last)
    if gaze is None:
        gaze = load_gaze(studies)
    kw = dict(input_size=input_size, sigma_deg=sigma_deg, gaze=gaze, progress=progress)
    train_ds = AttentionDataset(studies, part="train", **kw)
    held_ds = AttentionDataset(studies, part="heldout", **kw)
    if len(train_ds) == 0:
        raise InputError(studies, "no training images with gaze (split 'train' in labels.csv)")
    config = {
        "epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
        "input_size": input_size, "features": list(features), "seed": seed, "device": str(dev),
        **rt.describe(), "w_kl": w_kl, "w_cc": w_cc, "sigma_deg": sigma_deg, "studies": str(studies),
    }
    history: list[dict[str, Any]] = []
    with _deterministic(seed):
        model = rt.model(AttentionPredictor(input_size, features))
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=gen)
        opt = rt.optimizer("AdamW", model.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
        scaler = rt.scaler()
        bar = tqdm(total=epochs * len(loader), desc="train-attention", unit="step", disable=not progress)
        try:
            for epoch in range(1, epochs + 1):
                model.train()
                tot, n = 0.0, 0
                for batch in loader:
                    x, t = rt.batch(batch["image"]), batch["target"].to(dev)
                    opt.zero_grad(set_to_none=True)
                    with rt.autocast():
                        logits = model(x)
                    loss = attention_loss(logits.float(), t, w_kl, w_cc)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                    sched.step()
                    tot += float(loss.detach()) * len(x)
                    n += len(x)
                    bar.update(1)
                row: dict[str, Any] = {"epoch": epoch, "train_loss": tot / max(n, 1)}
                if len(held_ds):
                    # held-out metrics in float32 whatever the training precision (comparable across runs)
                    maps, losses = _predict_dataset(model, held_ds, 2 * batch_size, dev)
                    row["heldout_loss"] = float(losses.mean())
                    row.update(saliency_scores(maps, held_ds.targets[:, 0].numpy(), held_ds.fixmaps[:, 0].numpy()))
                    bar.set_postfix(loss=f"{row['train_loss']:.3f}", cc=f"{row['cc']:.3f}")
                else:
                    bar.set_postfix(loss=f"{row['train_loss']:.3f}")
                history.append(row)
        finally:
            bar.close()
    model = model.cpu().eval()
    sigma_xy = fit_centre_prior(train_ds.targets)
    prior = centre_prior((input_size, input_size), sigma_xy)
    heldout: dict[str, Any] = {"n": len(held_ds)}
    base: dict[str, Any] = {"n": len(held_ds), "sigma_xy": list(sigma_xy)}
    maps = np.zeros((0, input_size, input_size), np.float32)
    if len(held_ds):
        last = history[-1]
        heldout.update({k: last[k] for k in ("cc", "kl", "nss", "auc_judd", "sim")}, loss=last["heldout_loss"])
        maps, _ = _predict_dataset(model, held_ds, 2 * batch_size, torch.device("cpu"))
        pri = np.broadcast_to(prior, maps.shape)
        base.update(saliency_scores(pri, held_ds.targets[:, 0].numpy(), held_ds.fixmaps[:, 0].numpy()))
        lp = torch.log(torch.from_numpy(np.ascontiguousarray(pri)).clamp_min(1e-30))[:, None]
        base["loss"] = float(attention_loss(lp, held_ds.targets, w_kl, w_cc))
    files = {k: str(out / f) for k, f in
             (("model", "attention.pt"), ("metrics", "metrics.json"), ("curve", "curve.png"), ("overlay", "overlay.png"))}
    result = {
        "heldout": heldout, "centre_prior": base, "history": history, "n_train": len(train_ds),
        "n_heldout": len(held_ds), "skipped": {"train": train_ds.skipped, "heldout": held_ds.skipped},
        "config": config, "seconds": time.perf_counter() - t0, "files": files,
    }
    result = _json_safe(result)
    out.mkdir(parents=True, exist_ok=True)
    save_attention_model(model, files["model"], metrics=result)
    atomic_write_text(files["metrics"], json.dumps(result, indent=2) + "\n")
    _plot_curve(history, base, files["curve"])
    _plot_overlay(held_ds if len(held_ds) else train_ds, maps if len(held_ds) else None, prior, model,
                  files["overlay"], n_overlay)
    return result


def run_train_attention(args: argparse.Namespace) -> int:
    """Run ``gazerad train-attention``: train, then print held-out metrics vs the centre prior."""
    r = train_attention(
        args.studies, args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        input_size=args.size, seed=args.seed, device=args.device, progress=not args.quiet,
        precision=getattr(args, "precision", None) or "auto",
    )
    print(f"trained on {r['n_train']} images, {r['config']['epochs']} epochs, {r['seconds']:.1f} s")
    if r["n_heldout"]:

        def fmt(v: Any) -> str:
            return f"{v:9.3f}" if isinstance(v, (int, float)) else f"{'n/a':>9}"

        print(f"held-out ({r['n_heldout']} images)   {'CC':>9}{'KL':>9}{'NSS':>9}{'AUC-Judd':>9}")
        for name, m in (("attention model", r["heldout"]), ("centre prior", r["centre_prior"])):
            print(f"  {name:<22}{''.join(fmt(m.get(k)) for k in ('cc', 'kl', 'nss', 'auc_judd'))}")
    else:
        print("no held-out images with gaze: no metrics")
    print(f"wrote {', '.join(r['files'].values())}")
    return 0
