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

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from gazerad.engine.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from gazerad.engine.runlog import save_loss_curve
from gazerad.engine.runtime import Runtime, seed_everything, setup_distributed
from gazerad.errors import InputError
from gazerad.io.atomic import atomic_path, atomic_write_text

__all__ = ["PretrainConfig", "pretrain", "load_config", "load_encoder", "align_relation"]


@dataclass
class PretrainConfig:
    """Everything a pre-training run needs (CLI flags and config-file keys have these names).

    Defaults follow the authors' configs where they exist (AdamW, cosine schedule with
    warm-up, MoCo tau 0.2, BYOL momentum 0.99 -> 1) scaled down to a CPU-sized run.
    """

    data: str
    out: str
    framework: str = "simclr"
    backbone: str = "resnet18"
    image_size: int = 128  # view side (px)
    base_size: int | None = None  # side of the in-memory image the views are cut from (2 x image_size)
    epochs: int = 20
    batch_size: int = 64  # global batch
    lr: float = 1e-3
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: int = 1
    proj_dim: int = 128
    hidden_dim: int = 512
    temperature: float = 0.2
    queue_size: int = 1024
    momentum: float | None = None  # 0.999 MoCo, 0.99 BYOL
    crop_scale: tuple[float, float] = (0.2, 1.0)
    relation: str | None = None  # McGIP / GzPT
    threshold: float = 0.5
    drop_p: float = 0.0  # GzPT
    attention: str | None = None  # FocusContrast: attention.pt
    q: float = 0.5
    splits: tuple[str, ...] = ("train",)
    seed: int = 0
    amp: bool = True  # False forces precision fp32
    precision: str = "auto"  # auto (bf16 on CPUs with native bf16, fp16 on CUDA), fp32, bf16, fp16: gazerad.engine.Runtime
    channels_last: bool | str = "auto"
    device: str | None = None
    workers: int = 0
    progress: bool = True
    max_steps: int | None = None  # stop early (tests, benchmarks)

    def __post_init__(self) -> None:
        self.framework = self.framework.lower()
        if self.framework not in ("simclr", "moco", "byol", "simsiam"):
            raise ValueError(f"unknown framework {self.framework!r}; choose simclr, moco, byol or simsiam")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.drop_p <= 1.0:
            raise ValueError(f"drop_p must be in [0, 1], got {self.drop_p}")
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {self.q}")
        if self.epochs < 1 or self.batch_size < 2 or self.image_size < 16:
            raise ValueError("need epochs >= 1, batch_size >= 2 and image_size >= 16")
        self.betas = tuple(self.betas)  # type: ignore[assignment]
        self.crop_scale = tuple(self.crop_scale)  # type: ignore[assignment]
        self.splits = (self.splits,) if isinstance(self.splits, str) else tuple(self.splits)

    @property
    def method(self) -> str:
        """``plain``, ``focuscontrast``, ``mcgip``, ``gzpt`` or a ``+`` combination."""
        parts = []
        if self.attention:
            parts.append("focuscontrast")
        if self.relation:
            parts.append("gzpt" if self.drop_p > 0 else "mcgip")
        return "+".join(parts) or "plain"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> PretrainConfig:
    """A :class:`PretrainConfig` from a MONAI-bundle-style JSON/YAML file.

    The file holds the config keys at top level or under ``pretrain``; MONAI's
    :class:`~monai.bundle.ConfigParser` resolves ``@`` references and ``$`` expressions.
    ``overrides`` (e.g. CLI flags) win over the file.
    """
    from monai.bundle import ConfigParser

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "config file not found")
    try:
        parser = ConfigParser(ConfigParser.load_config_file(p))
        cfg = parser.get_parsed_content("pretrain") if "pretrain" in parser.get() else parser.get_parsed_content()
    except Exception as exc:  # noqa: BLE001 - yaml/json/expression errors
        raise InputError(p, f"cannot parse config: {exc}") from None
    if not isinstance(cfg, dict):
        raise InputError(p, "config must be a mapping of PretrainConfig keys")
    cfg = {**cfg, **(overrides or {})}
    known = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise InputError(p, f"unknown config keys {unknown}; known: {sorted(known)}")
    try:
        return PretrainConfig(**cfg)
    except (TypeError, ValueError) as exc:
        raise InputError(p, str(exc)) from None


def align_relation(relation_path: str | os.PathLike, ids: list[str]):  # noqa: ANN201 - scipy csr
    """The relation re-indexed to ``ids`` (rows/cols in dataset order) as a CSR matrix.

    Images without a row in the relation relate to nothing but themselves. Fails when no
    image of ``ids`` is in the relation (a relation of another data set).
    """
    import scipy.sparse as sp

    from gazerad.gaze.relation import load_relation

    rel = load_relation(relation_path)
    pos = {k: i for i, k in enumerate(rel.image_ids)}
    have = np.array([i for i, k in enumerate(ids) if k in pos], dtype=np.int64)
    if have.size == 0:
        raise InputError(relation_path, f"none of the {len(ids)} training images is in this relation (ids like {ids[:2]})")
    src = np.array([pos[ids[i]] for i in have], dtype=np.int64)
    m = rel.matrix if rel.is_sparse else sp.csr_matrix(np.asarray(rel.matrix))
    sub = sp.csr_matrix(m)[src][:, src].tocoo()
    out = sp.coo_matrix((sub.data, (have[sub.row], have[sub.col])), shape=(len(ids), len(ids))).tocsr()
    out.setdiag(1.0)
    return out


# --------------------------------------------------------------------------------------


def _lr_lambda(cfg: PretrainConfig, steps_per_epoch: int):  # noqa: ANN202
    warm = max(0, cfg.warmup_epochs * steps_per_epoch)
    total = max(1, cfg.epochs * steps_per_epoch)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return f


def _attention_maps(cfg: PretrainConfig, table, images: torch.Tensor, rank: int) -> torch.Tensor:  # noqa: ANN001
    """Predicted attention per training image at the base size (cached on disk under OUT)."""
    from gazerad.attention import AttentionCache

    cache = AttentionCache(cfg.attention, cache_dir=Path(cfg.out) / "attention_cache")
    maps = np.stack([cache.get(i, images[k, 0].numpy()) for k, i in enumerate(table)])
    return torch.from_numpy(maps.astype(np.float32))


def pretrain(cfg: PretrainConfig | dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) a pre-training run; returns ``{"history", "encoder", "seconds", ...}``.

    See the module docstring for what is written under ``cfg.out``.
    """
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    from tqdm.auto import tqdm

    from gazerad.attention import AttentionRandResizedCrop
    from gazerad.pretrain.data import TwoViewDataset, load_image_tensor, read_study_table
    from gazerad.pretrain.frameworks import build_framework
    from gazerad.ssl import GazePositives

    cfg = cfg if isinstance(cfg, PretrainConfig) else PretrainConfig(**cfg)
    rank, world, dev = setup_distributed(cfg.device)
    rt = Runtime(dev, cfg.precision if cfg.amp else "fp32", cfg.channels_last)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} ranks")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)

    table = read_study_table(cfg.data)
    rows = table.subset(cfg.splits)
    if len(rows) < cfg.batch_size:
        raise InputError(cfg.data, f"{len(rows)} images in splits {list(cfg.splits)}, fewer than one batch of {cfg.batch_size}")
    ids = [table.ids[i] for i in rows]
    base = cfg.base_size or min(2 * cfg.image_size, 512)
    images = load_image_tensor([table.paths[i] for i in rows], base, progress=cfg.progress and rank == 0)

    attention = _attention_maps(cfg, ids, images, rank) if cfg.attention else None
    positives = None
    if cfg.relation:
        # one drop seed on every rank: SimCLR/BYOL/SimSiam compute the global-batch mask on each
        # rank, and it must be the same mask everywhere for the gathered loss to be one loss
        positives = GazePositives(align_relation(cfg.relation, ids), threshold=cfg.threshold, drop_p=cfg.drop_p, seed=cfg.seed)
    crop = AttentionRandResizedCrop(cfg.image_size, scale=cfg.crop_scale, q=cfg.q)
    ds = TwoViewDataset(images, crop, attention, seed=cfg.seed)
    local_batch = cfg.batch_size // world
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(ds, batch_size=local_batch, sampler=sampler, drop_last=True, num_workers=cfg.workers,
                        pin_memory=dev.type == "cuda", persistent_workers=False)
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs

    kw: dict[str, Any] = dict(backbone=cfg.backbone, proj_dim=cfg.proj_dim, hidden_dim=cfg.hidden_dim)
    if cfg.framework in ("simclr", "moco"):
        kw["temperature"] = cfg.temperature
    if cfg.framework == "moco":
        kw["queue_size"] = cfg.queue_size
    if cfg.framework in ("moco", "byol"):
        kw["momentum"] = cfg.momentum if cfg.momentum is not None else (0.999 if cfg.framework == "moco" else 0.99)
    model = rt.model(build_framework(cfg.framework, **kw))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = rt.optimizer("AdamW", params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps_per_epoch))
    scaler = rt.scaler()

    start_epoch, step, history = 0, 0, []
    ckpt = out / "checkpoint.pt"
    state = load_checkpoint(ckpt, "pretrain", dev, {"framework": cfg.framework, "backbone": cfg.backbone})
    if state is not None:
        start_epoch, step, history, extra = restore_checkpoint(state, model, opt, sched, scaler)
        if positives is not None and extra.get("positives_rng") is not None:
            positives.generator.set_state(extra["positives_rng"])
        if rank == 0 and cfg.progress:
            print(f"resuming {cfg.framework} from {ckpt} at epoch {start_epoch}/{cfg.epochs}")

    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                        broadcast_buffers=False)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
    t0 = time.perf_counter()
    stop = False
    for epoch in range(start_epoch, cfg.epochs):
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        model.train()
        losses = []
        bar = tqdm(loader, desc=f"{cfg.framework}[{cfg.method}] epoch {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and rank == 0), leave=False)
        for v1, v2, idx in bar:
            v1, v2, idx = rt.batch(v1), rt.batch(v2), idx.to(dev)
            with rt.autocast():
                loss = net(v1, v2, idx, positives)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            model.after_step(step, total_steps)
            step += 1
            lv = float(loss.detach())
            if world > 1:
                t = torch.tensor([lv], device=dev)
                dist.all_reduce(t)
                lv = float(t) / world
            losses.append(lv)
            bar.set_postfix(loss=f"{lv:.4f}")
            if writer is not None:
                writer.add_scalar("loss/step", lv, step)
                writer.add_scalar("lr", sched.get_last_lr()[0], step)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stop = True
                break
        entry = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"), "steps": step,
                 "seconds": time.perf_counter() - t0}
        history.append(entry)
        if rank == 0:
            writer.add_scalar("loss/epoch", entry["loss"], epoch + 1)
            save_checkpoint(ckpt, "pretrain", model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                            history=history, config=cfg.to_dict(),
                            extra={"positives_rng": None if positives is None else positives.generator.get_state()})
            if cfg.progress:
                print(f"epoch {epoch + 1}/{cfg.epochs}  loss {entry['loss']:.4f}  ({entry['seconds']:.1f} s)", flush=True)
        if stop:
            break
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"history": history, "seconds": seconds, "steps": step, "method": cfg.method}
    if rank == 0:
        writer.close()
        enc = out / "encoder.pt"
        with atomic_path(enc) as tmp:
            torch.save({"backbone": model.backbone.state_dict(), "config": cfg.to_dict(), "feature_dim": model.feature_dim}, tmp)
        atomic_write_text(out / "history.json", json.dumps({"config": cfg.to_dict(), "runtime": rt.describe(), "history": history}, indent=1))
        if history:
            save_loss_curve(history, out / "loss.png", f"{cfg.framework} [{cfg.method}] on {Path(cfg.data).name}")
        result["encoder"] = str(enc)
    if dist.is_initialized():
        dist.barrier()
    return result


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """The pre-trained backbone saved as ``encoder.pt`` -> ``(module (B,1,H,W)->(B,F), config)``."""
    from gazerad.ssl import build_backbone

    p = Path(path)
    if p.is_dir():
        p = p / "encoder.pt"
    if not p.is_file():
        raise InputError(p, "encoder not found (run 'gazerad pretrain' first)")
    try:
        state = torch.load(p, map_location=device, weights_only=True)
        net, _ = build_backbone(state["config"]["backbone"])
        net.load_state_dict(state["backbone"])
    except Exception as exc:  # noqa: BLE001
        raise InputError(p, f"not a GazeRad encoder: {exc}") from None
    return net.to(device).eval(), state["config"]
