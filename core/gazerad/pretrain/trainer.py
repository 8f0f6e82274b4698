"""The pre-training loop: ``gazerad pretrain``, :func:`pretrain` and config files.

One loop serves every framework and gaze method:

- **plain**: two random-resized-crop views;
- **McGIP / GzPT**: ``relation`` + ``threshold`` (+ ``drop_p``) add gaze positives;
- **FocusContrast**: ``attention`` (a model from ``gazerad train-attention``) predicts each
  image's attention once (cached), and the crop keeps at least ``q`` of its mass.

Per epoch the loop writes ``OUT/checkpoint.pt`` atomically (model, optimiser, scheduler,
AMP scaler, history); a killed run started again with the same ``OUT`` resumes from it and
reaches the same weights as an uninterrupted run (views and batch order depend only on
``(seed, epoch, index)``). It logs to TensorBoard (``OUT/tb``), shows a progress bar, and
ends with ``OUT/encoder.pt`` (backbone weights + config, for :mod:`gazerad.pretrain.evaluate`),
``OUT/history.json`` and ``OUT/loss.png``. Under ``torchrun`` it runs DDP (gloo on CPU,
NCCL on CUDA) with a distributed sampler; the global batch is ``batch_size``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gazerad.engine.checkpoint import load_model_file, save_model_file
from gazerad.engine.handlers import CheckpointSaver, EpochPrinter, ProgressBar, RunSummary, TensorBoardLogger
from gazerad.engine.loop import Events, TrainLoop
from gazerad.engine.run import start_run, training_rows
from gazerad.errors import InputError
from gazerad.pretrain.config import PretrainConfig, load_config

__all__ = ["PretrainConfig", "pretrain", "load_config", "load_encoder", "align_relation"]


def align_relation(relation_path: str | os.PathLike, ids: list[str]):  # noqa: ANN201 - scipy csr
    """The relation file re-indexed to ``ids`` (:meth:`gazerad.gaze.relation.Relation.aligned`);
    :class:`InputError` naming the file when none of ``ids`` is in it."""
    from gazerad.gaze.relation import load_relation

    try:
        return load_relation(relation_path).aligned(ids)
    except ValueError as exc:
        raise InputError(relation_path, str(exc)) from None


# --------------------------------------------------------------------------------------


def _lr_lambda(cfg: PretrainConfig, steps_per_epoch: int):  # noqa: ANN202
    warm = max(0, cfg.warmup_epochs * steps_per_epoch)
    total = max(1, cfg.epochs * steps_per_epoch)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return f


def _attention_maps(cfg: PretrainConfig, table, images: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    """Predicted attention per training image at the base size (cached on disk under OUT)."""
    from gazerad.attention import AttentionCache

    cache = AttentionCache(cfg.attention, cache_dir=Path(cfg.out) / "attention_cache")
    maps = np.stack([cache.get(i, images[k, 0].numpy()) for k, i in enumerate(table)])
    return torch.from_numpy(maps.astype(np.float32))


def _gaze_relation(gaze: Any, ids: list[str], out: Path, progress: bool) -> Path:
    """``OUT/relation.npz``: the TIMA relation of ``gaze`` over the run's images ``ids`` (gaze
    keyed by image id or file name alike), computed once (deterministic: every rank gets the
    same matrix) and reused on resume."""
    from gazerad.data.study import image_id_of
    from gazerad.gaze.record import GazeCollection
    from gazerad.gaze.relation import compute_relation

    path = out / "relation.npz"
    if not path.is_file():
        by_id = {image_id_of(i): i for i in ids}
        coll = GazeCollection()
        for r in gaze.records():
            if image_id_of(r.image_id) in by_id:
                r.image_id = by_id[image_id_of(r.image_id)]
                coll.add(r)
        rel = compute_relation(gaze=coll, scheme="tima", image_ids=ids, progress=progress)
        rel.save(path)
    return path


def pretrain(cfg: PretrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) a pre-training run; returns ``{"history", "encoder", "seconds", ...}``.

    See the module docstring for what is written under ``cfg.out``.
    """
    from gazerad.attention import AttentionRandResizedCrop
    from gazerad.data.inputs import encoder_inputs
    from gazerad.pretrain.data import TwoViewDataset
    from gazerad.pretrain.frameworks import build_framework
    from gazerad.ssl import GazePositives

    cfg = cfg if isinstance(cfg, PretrainConfig) else PretrainConfig(**cfg)
    run = start_run(cfg)
    rt, dev = run.runtime, run.device
    gaze = None
    if cfg.gaze:
        from gazerad.data.study import image_id_of
        from gazerad.gaze.importers import load_gaze

        gaze = load_gaze(cfg.gaze)
    table, rows = training_rows(cfg, classes=False, keep=None if gaze is None else {image_id_of(i) for i in gaze.images})
    ids = [table.ids[i] for i in rows]
    relation = cfg.relation or (_gaze_relation(gaze, ids, run.out, cfg.progress and run.is_main) if gaze is not None else None)
    base = cfg.base_size or min(2 * cfg.image_size, 512)
    images = encoder_inputs([table.paths[i] for i in rows], base, progress=cfg.progress and run.is_main)

    attention = _attention_maps(cfg, ids, images) if cfg.attention else None
    positives = None
    if relation:
        # one drop seed on every rank: SimCLR/BYOL/SimSiam compute the global-batch mask on each
        # rank, and it must be the same mask everywhere for the gathered loss to be one loss
        positives = GazePositives(align_relation(relation, ids), threshold=cfg.threshold, drop_p=cfg.drop_p, seed=cfg.seed)
    crop = AttentionRandResizedCrop(cfg.image_size, scale=cfg.crop_scale, q=cfg.q)
    ds = TwoViewDataset(images, crop, attention, seed=cfg.seed)
    loader, sampler = run.loader(ds, cfg.batch_size, cfg.seed, cfg.workers)
    total_steps = len(loader) * cfg.epochs

    kw: dict[str, Any] = dict(backbone=cfg.backbone, proj_dim=cfg.proj_dim, hidden_dim=cfg.hidden_dim)
    if cfg.framework in ("simclr", "moco"):
        kw["temperature"] = cfg.temperature
    if cfg.framework == "moco":
        kw["queue_size"] = cfg.queue_size
    if cfg.framework in ("moco", "byol"):
        kw["momentum"] = cfg.momentum if cfg.momentum is not None else (0.999 if cfg.framework == "moco" else 0.99)
    model = rt.model(build_framework(cfg.framework, **kw))
    opt = rt.optimizer("AdamW", [p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, len(loader)))

    def step(batch: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
        v1, v2, idx = batch
        with rt.autocast():
            return {"loss": net(rt.batch(v1), rt.batch(v2), idx.to(dev), positives)}

    loop = TrainLoop(step, optimizer=opt, scheduler=sched, scaler=rt.scaler(), max_epochs=cfg.epochs, max_steps=cfg.max_steps, world=run.world)
    saver = CheckpointSaver(
        run.out / "checkpoint.pt",
        "pretrain",
        model,
        cfg.to_dict(),
        extra=lambda: {"positives_rng": None if positives is None else positives.generator.get_state()},
        save=run.is_main,
    )
    extra = saver.resume(loop, dev)
    if extra is not None:
        if positives is not None and extra.get("positives_rng") is not None:
            positives.generator.set_state(extra["positives_rng"])
        if run.is_main and cfg.progress:
            print(f"resuming {cfg.framework} from {saver.path} at epoch {loop.state.epoch}/{cfg.epochs}")

    net = run.ddp(model, broadcast_buffers=False)

    def epoch_started(lp: TrainLoop) -> None:
        ds.set_epoch(lp.state.epoch - 1)
        sampler.set_epoch(lp.state.epoch - 1)
        model.train()

    loop.on(Events.EPOCH_STARTED, epoch_started)
    loop.on(Events.ITERATION_COMPLETED, lambda lp: model.after_step(lp.state.iteration - 1, total_steps))
    title = f"{cfg.framework} [{cfg.method}]"
    loop.add(ProgressBar(lambda lp: f"{title} epoch {lp.state.epoch}/{cfg.epochs}", cfg.progress and run.is_main))
    if run.is_main:
        loop.add(
            TensorBoardLogger(run.out / "tb"),
            saver,
            EpochPrinter(lambda lp: f"epoch {lp.state.epoch}/{cfg.epochs}  loss {lp.state.metrics['loss']:.4f}  ({lp.state.seconds:.1f} s)", cfg.progress),
            RunSummary(run.out, cfg.to_dict(), rt.describe(), f"{title} on {Path(cfg.data).name}"),
        )
    state = loop.run(loader)
    result: dict[str, Any] = {"history": state.history, "seconds": state.seconds, "steps": state.iteration, "method": cfg.method}
    if run.is_main:
        result["encoder"] = str(
            save_model_file(run.out / "encoder.pt", "encoder", cfg.to_dict(), backbone=model.backbone.state_dict(), feature_dim=model.feature_dim)
        )
    run.barrier()
    return result


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The pre-trained backbone saved as ``encoder.pt`` -> ``(module (B,1,H,W)->(B,F), config)``."""
    from gazerad.ssl import build_backbone

    def build(state: dict[str, Any]) -> torch.nn.Module:
        net, _ = build_backbone(state["config"]["backbone"])
        net.load_state_dict(state["backbone"])
        return net

    net, state = load_model_file(path, "encoder", build, device, "run 'gazerad pretrain' first")
    return net, state["config"]
