"""Training the attention predictor (:func:`train_attention`; ``gazerad train-attention`` in :mod:`gazerad.cli.attention`)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gazerad.attention.checkpoint import save_attention_model
from gazerad.attention.config import AttentionConfig
from gazerad.attention.data import AttentionDataset
from gazerad.attention.evaluation import _predict_dataset, centre_prior, fit_centre_prior, saliency_scores
from gazerad.attention.loss import attention_loss
from gazerad.attention.network import AttentionPredictor, _device
from gazerad.attention.plots import _plot_curve, _plot_overlay
from gazerad.engine.handlers import CheckpointSaver, ProgressBar
from gazerad.engine.loop import Events, TrainLoop
from gazerad.engine.runtime import Runtime
from gazerad.errors import InputError
from gazerad.io.atomic import json_safe

__all__ = ["train_attention"]

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
    cfg: AttentionConfig | PathLike, out: PathLike | None = None, *, gaze: Any = None, input_size: int | None = None, **settings: Any
) -> dict[str, Any]:
    """Train the attention predictor on a study folder; evaluate on its held-out images.

    AdamW with a cosine learning-rate decay over all steps, :func:`attention_loss`, batches
    shuffled by a seeded generator: on the CPU the same ``seed`` gives bit-identical
    weights; CUDA runs use cuDNN's deterministic mode (identical in practice, not
    guaranteed by PyTorch for every kernel), and AMP there uses float16 with a grad scaler.
    ``OUT/checkpoint.pt`` is written after every epoch; a run started again with the same
    ``out`` resumes from it and ends with the same weights as an uninterrupted run.

    Args:
        cfg: an :class:`AttentionConfig`, or the study folder (see :class:`AttentionDataset`)
            with ``out`` and the config's other fields as keywords (``input_size`` is
            ``image_size``'s former name).
        gaze: an already loaded :class:`~gazerad.gaze.record.GazeCollection` (default:
            ``load_gaze(cfg.data)``), e.g. gaze uploaded to the server.

    Returns:
        ``{"heldout": {cc, kl, nss, auc_judd, sim, loss, n}, "centre_prior": {...},
        "history": [per-epoch {epoch, train_loss, heldout_loss, cc, kl, nss, auc_judd,
        sim}], "n_train", "n_heldout", "skipped", "config", "seconds", "files"}``
        (also in ``out/metrics.json``).

    Raises:
        InputError: no training image with gaze.
    """
    from gazerad.gaze.importers import load_gaze
    from gazerad.io.atomic import atomic_write_text

    if not isinstance(cfg, AttentionConfig):
        if input_size is not None:
            settings["image_size"] = input_size
        cfg = AttentionConfig(data=str(cfg), out=str(out), **settings)
    t0 = time.perf_counter()
    studies, out = Path(cfg.data), Path(cfg.out)
    dev = _device(cfg.device)
    rt = Runtime(dev, cfg.precision if cfg.amp else "fp32", cfg.channels_last)
    size = cfg.image_size
    if gaze is None:
        gaze = load_gaze(cfg.gaze or studies)
    kw = dict(input_size=size, sigma_deg=cfg.sigma_deg, gaze=gaze, progress=cfg.progress)
    train_ds = AttentionDataset(studies, part="train", **kw)
    held_ds = AttentionDataset(studies, part="heldout", **kw)
    if len(train_ds) == 0:
        raise InputError(studies, "no training images with gaze (split 'train' in labels.csv)")
    config = {**cfg.to_dict(), "input_size": size, "device": str(dev), **rt.describe(), "studies": str(studies)}
    out.mkdir(parents=True, exist_ok=True)
    with _deterministic(cfg.seed):
        model = rt.model(AttentionPredictor(size, cfg.features))
        # the epoch's order is a function of (seed, epoch): nothing to carry across a resume
        sampler = torch.utils.data.DistributedSampler(train_ds, num_replicas=1, rank=0, shuffle=True, seed=cfg.seed)
        loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler)
        opt = rt.optimizer("AdamW", model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * len(loader))

        def step(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            with rt.autocast():
                logits = model(rt.batch(batch["image"]))
            return {"loss": attention_loss(logits.float(), batch["target"].to(dev), cfg.w_kl, cfg.w_cc)}

        def epoch_completed(lp: TrainLoop) -> None:
            row = lp.state.history[-1]
            row["train_loss"] = row.pop("loss")
            if len(held_ds):
                # held-out metrics in float32 whatever the training precision (comparable across runs)
                maps, losses = _predict_dataset(model, held_ds, 2 * cfg.batch_size, dev)
                row["heldout_loss"] = float(losses.mean())
                row.update(saliency_scores(maps, held_ds.targets[:, 0].numpy(), held_ds.fixmaps[:, 0].numpy()))
            model.train()

        loop = TrainLoop(step, optimizer=opt, scheduler=sched, scaler=rt.scaler(), max_epochs=cfg.epochs, max_steps=cfg.max_steps)
        saver = CheckpointSaver(out / "checkpoint.pt", "attention", model, cfg.to_dict())
        saver.resume(loop, dev)

        def epoch_started(lp: TrainLoop) -> None:
            sampler.set_epoch(lp.state.epoch - 1)
            model.train()

        loop.on(Events.EPOCH_STARTED, epoch_started)
        loop.on(Events.EPOCH_COMPLETED, epoch_completed)
        loop.add(ProgressBar(lambda lp: f"train-attention epoch {lp.state.epoch}/{cfg.epochs}", cfg.progress), saver)
        history = loop.run(loader).history
    model = model.cpu().eval()
    sigma_xy = fit_centre_prior(train_ds.targets)
    prior = centre_prior((size, size), sigma_xy)
    heldout: dict[str, Any] = {"n": len(held_ds)}
    base: dict[str, Any] = {"n": len(held_ds), "sigma_xy": list(sigma_xy)}
    maps = np.zeros((0, size, size), np.float32)
    if len(held_ds):
        last = history[-1]
        heldout.update({k: last[k] for k in ("cc", "kl", "nss", "auc_judd", "sim")}, loss=last["heldout_loss"])
        maps, _ = _predict_dataset(model, held_ds, 2 * cfg.batch_size, torch.device("cpu"))
        pri = np.broadcast_to(prior, maps.shape)
        base.update(saliency_scores(pri, held_ds.targets[:, 0].numpy(), held_ds.fixmaps[:, 0].numpy()))
        lp = torch.log(torch.from_numpy(np.ascontiguousarray(pri)).clamp_min(1e-30))[:, None]
        base["loss"] = float(attention_loss(lp, held_ds.targets, cfg.w_kl, cfg.w_cc))
    files = {k: str(out / f) for k, f in (("model", "attention.pt"), ("metrics", "metrics.json"), ("curve", "curve.png"), ("overlay", "overlay.png"))}
    result = {
        "heldout": heldout,
        "centre_prior": base,
        "history": history,
        "n_train": len(train_ds),
        "n_heldout": len(held_ds),
        "skipped": {"train": train_ds.skipped, "heldout": held_ds.skipped},
        "config": config,
        "runtime": rt.describe(),  # what was used, as pre-training's and KACL's history.json record it
        "seconds": time.perf_counter() - t0,
        "files": files,
    }
    result = json_safe(result)
    save_attention_model(model, files["model"], metrics=result)
    atomic_write_text(files["metrics"], json.dumps(result, indent=2) + "\n")
    _plot_curve(history, base, files["curve"])
    _plot_overlay(held_ds if len(held_ds) else train_ds, maps if len(held_ds) else None, prior, model, files["overlay"], cfg.n_overlay)
    return result
