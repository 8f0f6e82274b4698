"""The KACL feedback-loop trainer (``gazerad train-kacl``) and its supervised baseline.

Per refresh (every epoch, or every ``refresh_every`` steps):

1. Grad-CAM of the current classifier for each training image, on the image's own
   class (its most confident *labelled* finding when labelled, else its top prediction);
2. normalise, blur 5 x 5, threshold, connected components, best box (mean saliency
   inside) -> ROI mask (:func:`gazerad.localize.maps_to_rois`);
3. radiomics of the ROI (:class:`gazerad.radiomics.RadiomicsExtractor`, torch backend by
   default) -> cache, standardised with statistics refitted on the training images.

The first epoch uses the whole image as ROI (an untrained network's CAM is noise). Before
every refresh and at the end, BatchNorm statistics are re-estimated exactly
(:func:`precise_bn`): eval-mode CAMs after few steps are otherwise meaningless.
Each step: ``w_cls * BCE`` on the labelled items of the batch + ``w_con * NT-Xent``
between the image embedding and the radiomics embedding of every item (other items are
negatives), so unlabelled images (``labelled_fraction < 1``) train only the contrastive
term. ``method="supervised"`` drops the radiomics branch: the baseline classifier.

Writes under ``out``: ``checkpoint.pt`` every epoch (atomic; a killed run resumes),
``kacl.pt`` (model, classes, radiomics standardiser, config), ``history.json`` (loss,
seconds, radiomics/CAM seconds per epoch), ``loss.png``, TensorBoard under ``tb``.
Under ``torchrun``: DDP with a distributed sampler; each rank refreshes its share of
the images and the cache is summed across ranks.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from gazerad.engine.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from gazerad.engine.runlog import save_loss_curve
from gazerad.engine.runtime import Runtime, seed_everything, setup_distributed
from gazerad.errors import InputError
from gazerad.io.atomic import atomic_path, atomic_write_text

__all__ = ["KACLConfig", "train_kacl", "refresh_radiomics", "load_kacl", "cam_classes", "precise_bn"]


@dataclass
class KACLConfig:
    """A KACL (or supervised baseline) run; CLI flags have these names."""

    data: str
    out: str
    method: str = "kacl"  # kacl | supervised
    backbone: str = "densenet121"
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 32  # global batch
    lr: float = 3e-4
    weight_decay: float = 1e-4
    labelled_fraction: float = 1.0
    temperature: float = 0.5
    w_cls: float = 0.7
    w_con: float = 0.3
    proj_dim: int = 64
    dropout: float = 0.1
    refresh_every: int | None = None  # steps; None = every epoch
    cam_method: str = "gradcam"
    cam_layer: str | None = None  # default: the backbone's last block
    cam_threshold: float = 0.5
    blur: int = 5
    bin_width: float = 8.0  # on intensities scaled to 0..255
    radiomics_backend: str = "torch"
    splits: tuple[str, ...] = ("train",)
    seed: int = 0
    amp: bool = True  # False forces precision fp32
    precision: str = "auto"  # gazerad.engine.Runtime: bf16 on CPUs with native bf16, fp16 on CUDA
    channels_last: bool | str = "auto"
    device: str | None = None
    progress: bool = True
    max_steps: int | None = None
    init_encoder: str | None = None  # encoder.pt of `gazerad pretrain`: backbone initialisation (fine-tuning)

    def __post_init__(self) -> None:
        if self.method not in ("kacl", "supervised"):
            raise ValueError(f"method must be 'kacl' or 'supervised', got {self.method!r}")
        if not 0.0 < self.labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        if self.epochs < 1 or self.batch_size < 2 or self.image_size < 32:
            raise ValueError("need epochs >= 1, batch_size >= 2, image_size >= 32")
        if self.radiomics_backend not in ("torch", "pyradiomics"):
            raise ValueError(f"radiomics_backend must be torch or pyradiomics, got {self.radiomics_backend!r}")
        self.splits = (self.splits,) if isinstance(self.splits, str) else tuple(self.splits)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _TrainForward(torch.nn.Module):
    """One training forward of a :class:`KACLModel`: ``(x, radiomics or None)`` ->
    ``(logits, image embedding or None, radiomics embedding or None)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, r: torch.Tensor | None = None) -> tuple:
        if r is None:
            return self.model(x), None, None
        logits, z_img = self.model.image_branch(x)
        return logits, z_img, self.model.radiomics_branch(r)


def cam_classes(logits: torch.Tensor, labels: torch.Tensor | None, labelled: torch.Tensor | None) -> torch.Tensor:
    """The class each sample's CAM is computed for: the most confident labelled finding
    of a labelled sample with findings, else the top prediction. ``(B, C)`` -> ``(B,)``."""
    if labels is None or labelled is None:
        return logits.argmax(1)
    has = labelled & (labels.sum(1) > 0)
    masked = torch.where(labels.bool(), logits, torch.full_like(logits, -torch.inf))
    return torch.where(has, masked.argmax(1), logits.argmax(1))


def refresh_radiomics(
    model: torch.nn.Module,
    images: torch.Tensor,
    extractor,  # noqa: ANN001 - RadiomicsExtractor
    labels: torch.Tensor | None = None,
    labelled: torch.Tensor | None = None,
    whole_image: bool = False,
    cam_method: str = "gradcam",
    threshold: float = 0.5,
    blur: int = 5,
    batch: int = 32,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, dict[str, float]]:
    """CAM -> ROI -> radiomics for ``images`` ``(N, 1, S, S)`` in ``[0, 1]``.

    Returns:
        ``(N, F)`` float32 raw (unstandardised) features and ``{"cam_seconds", "radiomics_seconds"}``.
    """
    from gazerad.localize import make_cam, maps_to_rois

    n, _, s, _ = images.shape
    out = torch.empty(n, len(extractor.names))
    t_cam = t_rad = 0.0
    cam = None if whole_image else make_cam(model, model.cam_layer, cam_method)
    for b0 in range(0, n, batch):
        x = images[b0 : b0 + batch].to(device)
        t = time.perf_counter()
        if whole_image:
            masks = torch.zeros(x.shape[0], s, s, dtype=torch.bool, device=device)
            masks[:, 1:-1, 1:-1] = True
        else:
            with torch.no_grad():
                logits = model(x)
            lab = None if labels is None else labels[b0 : b0 + batch].to(device)
            lbd = None if labelled is None else labelled[b0 : b0 + batch].to(device)
            maps = cam(x, class_idx=cam_classes(logits, lab, lbd))[:, 0].detach()
            masks, _ = maps_to_rois(maps, threshold, blur)
        t_cam += time.perf_counter() - t
        t = time.perf_counter()
        img255 = x[:, 0].detach().double() * 255.0
        if extractor.backend == "torch":
            feats = extractor.extract_tensor(img255.to(extractor.device), masks.to(extractor.device))
        else:
            feats = torch.from_numpy(extractor.extract(list(img255.cpu().numpy()), list(masks.cpu().numpy())).values)
        out[b0 : b0 + x.shape[0]] = feats.float().cpu()
        t_rad += time.perf_counter() - t
    model.zero_grad(set_to_none=True)
    return out, {"cam_seconds": t_cam, "radiomics_seconds": t_rad}


@torch.no_grad()
def precise_bn(model: torch.nn.Module, images: torch.Tensor, batch: int = 64, device: torch.device | str = "cpu", limit: int = 2048) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over (up to ``limit``) images.

    After few optimiser steps the exponential running averages still remember the
    initialisation, so eval-mode outputs (and the Grad-CAM ROIs of the feedback loop) are
    wrong; a forward pass in train mode with cumulative averaging fixes that. Weights are
    untouched; the same images give the same statistics on every rank.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    was = model.training
    model.train()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    step = max(1, len(images) // limit)
    sub = images[::step][:limit]
    for b0 in range(0, len(sub), batch):
        model(sub[b0 : b0 + batch].to(device))
    for m, (mom, tr) in zip(bns, saved):
        m.momentum = mom
    model.train(was)


def train_kacl(cfg: KACLConfig | dict[str, Any]) -> dict[str, Any]:
    """Run (or resume) KACL / supervised training; returns ``{"history", "model", "seconds"}``."""
    from torch.utils.data import DataLoader, TensorDataset
    from torch.utils.data.distributed import DistributedSampler
    from tqdm.auto import tqdm

    from gazerad.kacl.model import KACLModel
    from gazerad.pretrain.data import load_image_tensor, read_study_table
    from gazerad.radiomics import FeatureStandardizer, RadiomicsExtractor
    from gazerad.ssl import MultiPositiveNTXentLoss

    cfg = cfg if isinstance(cfg, KACLConfig) else KACLConfig(**cfg)
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
    images = load_image_tensor([table.paths[i] for i in rows], cfg.image_size, progress=cfg.progress and rank == 0)
    labels = torch.from_numpy(table.labels[rows]).float()
    n = len(rows)
    rng = np.random.default_rng(cfg.seed)
    n_lab = max(1, int(round(cfg.labelled_fraction * n)))
    labelled = torch.zeros(n, dtype=torch.bool)
    labelled[torch.from_numpy(rng.permutation(n)[:n_lab])] = True

    use_rad = cfg.method == "kacl"
    extractor = RadiomicsExtractor(cfg.radiomics_backend, bin_width=cfg.bin_width, device=dev if cfg.radiomics_backend == "torch" else None)
    model = KACLModel(len(table.classes), len(extractor.names), cfg.backbone, cfg.proj_dim, cfg.dropout, cfg.cam_layer)
    if cfg.init_encoder:
        from gazerad.pretrain.trainer import load_encoder

        enc, enc_cfg = load_encoder(cfg.init_encoder, dev)
        if enc_cfg.get("backbone") != cfg.backbone:
            raise InputError(cfg.init_encoder, f"encoder is a {enc_cfg.get('backbone')}, the model a {cfg.backbone}: pass --backbone {enc_cfg.get('backbone')}")
        model.backbone.load_state_dict(enc.state_dict())
    rt.model(model)
    opt = rt.optimizer("AdamW", model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ds = TensorDataset(torch.arange(n))
    local = cfg.batch_size // world
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    loader = DataLoader(ds, batch_size=local, sampler=sampler, drop_last=True)
    steps_per_epoch = len(loader)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(1, total))))
    scaler = rt.scaler()
    ntxent = MultiPositiveNTXentLoss(cfg.temperature)

    raw = torch.zeros(n, len(extractor.names))
    standardizer = FeatureStandardizer()
    start_epoch, step, history = 0, 0, []
    ckpt = out / "checkpoint.pt"
    state = load_checkpoint(ckpt, "kacl", dev, {"method": cfg.method, "backbone": cfg.backbone})
    if state is not None:
        start_epoch, step, history, extra = restore_checkpoint(state, model, opt, sched, scaler)
        raw, labelled = extra["radiomics"], extra["labelled"]
        if rank == 0 and cfg.progress:
            print(f"resuming {cfg.method} from {ckpt} at epoch {start_epoch}/{cfg.epochs}")

    # every forward goes through one module, so DDP synchronises all gradients (image and
    # radiomics branches); the supervised baseline leaves the projection heads unused
    net: torch.nn.Module = _TrainForward(model)
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None,
                                                        find_unused_parameters=not use_rad)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))

    def refresh(whole: bool) -> dict[str, float]:
        nonlocal raw
        if not whole:
            precise_bn(model, images, device=dev)
        mine = torch.arange(rank, n, world)
        feats, secs = refresh_radiomics(model, images[mine], extractor, labels[mine], labelled[mine], whole_image=whole,
                                        cam_method=cfg.cam_method, threshold=cfg.cam_threshold, blur=cfg.blur, device=dev)
        new = torch.zeros(n, feats.shape[1])
        new[mine] = feats
        if world > 1:
            new = new.to(dev)
            dist.all_reduce(new)
            new = new.cpu()
        raw = new
        standardizer.fit(raw.double().numpy(), extractor.names)
        return secs

    t0 = time.perf_counter()
    stop = False
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        te = time.perf_counter()
        secs = {"cam_seconds": 0.0, "radiomics_seconds": 0.0}
        if use_rad:
            s = refresh(whole=epoch == 0)
            secs = {k: secs[k] + s[k] for k in secs}
        model.train()
        cls_l, con_l, tot_l = [], [], []
        bar = tqdm(loader, desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and rank == 0), leave=False)
        for (idx,) in bar:
            if use_rad and cfg.refresh_every and step > 0 and step % cfg.refresh_every == 0 and epoch > 0:
                s = refresh(whole=False)
                secs = {k: secs[k] + s[k] for k in secs}
                model.train()
            x = rt.batch(images[idx])
            y = labels[idx].to(dev)
            lab = labelled[idx].to(dev)
            with rt.autocast():  # the networks; the losses below run in float32
                if use_rad:
                    r = standardizer.transform(raw[idx].double()).float().to(dev)
                    logits, z_img, z_rad = net(x, r)
                else:
                    logits, _, _ = net(x)
            con = ntxent(z_img, z_rad) if use_rad else torch.zeros((), device=dev)
            per = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none").mean(1)
            cls = (per * lab).sum() / lab.sum().clamp(min=1)
            loss = (cfg.w_cls * cls + cfg.w_con * con) if use_rad else cls
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}, step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            cls_l.append(float(cls.detach()))
            con_l.append(float(con.detach()))
            tot_l.append(float(loss.detach()))
            bar.set_postfix(loss=f"{tot_l[-1]:.4f}")
            if writer is not None:
                writer.add_scalar("loss/step", tot_l[-1], step)
            if cfg.max_steps is not None and step >= cfg.max_steps:
                stop = True
                break
        entry = {
            "epoch": epoch + 1, "loss": float(np.mean(tot_l)) if tot_l else float("nan"),
            "bce": float(np.mean(cls_l)) if cls_l else float("nan"), "contrastive": float(np.mean(con_l)) if con_l else float("nan"),
            "steps": step, "epoch_seconds": time.perf_counter() - te, **secs,
        }
        history.append(entry)
        if rank == 0:
            writer.add_scalar("loss/epoch", entry["loss"], epoch + 1)
            save_checkpoint(ckpt, "kacl", model=model, optimizer=opt, scheduler=sched, scaler=scaler, epoch=epoch + 1, step=step,
                            history=history, config=cfg.to_dict(), extra={"radiomics": raw, "labelled": labelled})
            if cfg.progress:
                print(f"epoch {epoch + 1}/{cfg.epochs}  loss {entry['loss']:.4f} (bce {entry['bce']:.4f}, con {entry['contrastive']:.4f})"
                      f"  {entry['epoch_seconds']:.1f} s, radiomics {entry['radiomics_seconds']:.1f} s", flush=True)
        if stop:
            break
    precise_bn(model, images, device=dev)
    result: dict[str, Any] = {"history": history, "seconds": time.perf_counter() - t0, "steps": step}
    if rank == 0:
        writer.close()
        path = out / "kacl.pt"
        with atomic_path(path) as tmp:
            torch.save({"model": model.state_dict(), "classes": list(table.classes), "config": cfg.to_dict(),
                        "feature_names": list(extractor.names), "standardizer": standardizer.state_dict()}, tmp)
        atomic_write_text(out / "history.json", json.dumps({"config": cfg.to_dict(), "runtime": rt.describe(), "history": history}, indent=1))
        if history:
            save_loss_curve(history, out / "loss.png", f"{cfg.method} ({cfg.backbone}) on {Path(cfg.data).name}")
        result["model"] = str(path)
    if dist.is_initialized():
        dist.barrier()
    return result


def load_kacl(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """``kacl.pt`` (or its folder) -> ``(KACLModel in eval mode, state without weights)``."""
    from gazerad.kacl.model import KACLModel

    p = Path(path)
    if p.is_dir():
        p = p / "kacl.pt"
    if not p.is_file():
        raise InputError(p, "KACL model not found (run 'gazerad train-kacl' first)")
    try:
        state = torch.load(p, map_location=device, weights_only=True)
        c = state["config"]
        model = KACLModel(len(state["classes"]), len(state["feature_names"]), c["backbone"], c["proj_dim"], c["dropout"], c.get("cam_layer"))
        model.load_state_dict(state["model"])
    except Exception as exc:  # noqa: BLE001
        raise InputError(p, f"not a GazeRad KACL model: {exc}") from None
    state.pop("model")
    return model.to(device).eval(), state
