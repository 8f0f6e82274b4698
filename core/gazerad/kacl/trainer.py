"""The KACL feedback-loop trainer (``gazerad train-kacl``) and its supervised baseline.

Per refresh (every epoch, or every ``refresh_every`` steps):

1. Grad-CAM of the current classifier for each training image, on the image's own
   class (its most confident *labelled* finding when labelled, else its top prediction);
2. normalise, blur 5 x 5, threshold, connected components, best box (mean saliency
   inside) -> ROI mask (:func:`gazerad.kacl.evaluate.localize_images`); with ``roi_tuning``
   each class's CAM layer, threshold and blur are first re-tuned on the validation split's
   boxes (:func:`fit_box_extraction`; a heart needs a coarse layer, a mass a fine one);
3. radiomics of the ROI (:class:`gazerad.radiomics.RadiomicsExtractor`, torch backend by
   default) -> cache, standardised with statistics refitted on the training images.

The first epoch uses the whole image as ROI (an untrained network's CAM is noise). Before
every refresh and at the end, BatchNorm statistics are re-estimated exactly
(:func:`precise_bn`): eval-mode CAMs after few steps are otherwise meaningless.
Each step (images optionally jittered, ``augment``: :mod:`gazerad.data.augment`): ``w_cls * BCE`` on the labelled items of the batch + ``w_con * NT-Xent``
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

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from gazerad.engine.checkpoint import load_model_file, rewrite_model_file, save_model_file
from gazerad.engine.handlers import CheckpointSaver, EpochPrinter, ProgressBar, RunSummary, TensorBoardLogger
from gazerad.engine.loop import Events, TrainLoop
from gazerad.engine.run import start_run, training_rows
from gazerad.errors import InputError
from gazerad.kacl.config import KACLConfig
from gazerad.localize.boxes import Box

__all__ = [
    "KACLConfig",
    "train_kacl",
    "labelled_mask",
    "refresh_radiomics",
    "load_kacl",
    "cam_classes",
    "precise_bn",
    "fit_calibration",
    "fit_box_extraction",
    "retune_boxes",
    "model_logits",
]


ROI_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)  # roi_tuning's grid (per refresh: kept small)
ROI_BLURS = (1, 5)


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


def labelled_mask(n: int, fraction: float, seed: int) -> torch.Tensor:
    """Which of a run's ``n`` training images keep their labels: ``round(fraction * n)`` (at
    least one) drawn by ``seed``; the same subset for every method of that seed. ``(n,)`` bool."""
    labelled = torch.zeros(n, dtype=torch.bool)
    labelled[torch.from_numpy(np.random.default_rng(seed).permutation(n)[: max(1, int(round(fraction * n)))])] = True
    return labelled


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
    box_settings: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    attention: np.ndarray | None = None,
) -> tuple[torch.Tensor, dict[str, float], list[Box]]:
    """CAM -> ROI -> radiomics for ``images`` ``(N, 1, S, S)`` in ``[0, 1]``.

    Args:
        threshold, blur: box extraction on ``model.cam_layer`` for every class ...
        box_settings: ... unless given here: ``{"cam_layer", "cam_threshold", "blur",
            "per_class"}`` as :func:`fit_box_extraction` tunes them (each class its own CAM
            layer, threshold and blur; ``per_class`` keys are ``class_names``); settings
            whose tuning was ``"skipped"`` are ignored.
        attention: ``(N, S, S)`` attention maps of ``images``, for settings whose box source
            is the attention map (:func:`gazerad.kacl.evaluate.source_maps`).

    Returns:
        ``(N, F)`` float32 raw (unstandardised) features, ``{"cam_seconds",
        "radiomics_seconds"}`` and the ``N`` ROI boxes in ``S``-pixel coordinates, each
        labelled with the class its CAM is for (unlabelled with ``whole_image``).
    """
    from gazerad.kacl.evaluate import localize_images
    from gazerad.localize import box_mask

    n, _, s, _ = images.shape
    settings = box_settings if box_settings and "skipped" not in box_settings else {"cam_layer": model.cam_layer, "cam_threshold": threshold, "blur": blur}
    whole = Box(0.0, 0.0, float(s), float(s), 0.0)
    out = torch.empty(n, len(extractor.names))
    rois: list[Box] = []
    t_cam = t_rad = 0.0
    was = model.training
    model.eval()  # eval-mode logits pick the classes; a train-mode forward would move the BatchNorm statistics
    for b0 in range(0, n, batch):
        x = images[b0 : b0 + batch].to(device)
        t = time.perf_counter()
        if whole_image:
            chosen = [whole] * x.shape[0]
        else:
            with torch.no_grad():
                logits = model(x)
            lab = None if labels is None else labels[b0 : b0 + batch].to(device)
            lbd = None if labelled is None else labelled[b0 : b0 + batch].to(device)
            which = cam_classes(logits, lab, lbd).tolist()
            names = list(class_names) if class_names is not None else [str(c) for c in range(logits.shape[1])]
            boxes, _ = localize_images(
                model,
                x,
                [[c] for c in which],
                names,
                cam_method,
                settings["cam_threshold"],
                settings["blur"],
                batch=batch,
                device=device,
                cam_layer=settings.get("cam_layer"),
                per_class=settings.get("per_class"),
                attention=None if attention is None else attention[b0 : b0 + batch],
            )
            # the best box of the class (the whole image if none), labelled with the class
            chosen = [bs[0] if bs else Box(0.0, 0.0, float(s), float(s), 0.0, names[c]) for bs, c in zip(boxes, which)]
        masks = torch.from_numpy(np.stack([box_mask(b, (s, s)) for b in chosen])).to(device)
        if whole_image:
            masks[:, [0, -1]] = masks[:, :, [0, -1]] = False  # one pixel in from the border
        rois += chosen
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
    model.train(was)
    return out, {"cam_seconds": t_cam, "radiomics_seconds": t_rad}, rois


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
    from torch.utils.data import TensorDataset

    from gazerad.data.augment import RandRadiographAugment, step_generator
    from gazerad.data.inputs import encoder_inputs
    from gazerad.kacl.model import KACLModel
    from gazerad.radiomics import FeatureStandardizer, RadiomicsExtractor
    from gazerad.ssl import MultiPositiveNTXentLoss

    cfg = cfg if isinstance(cfg, KACLConfig) else KACLConfig(**cfg)
    run = start_run(cfg)
    rt, dev, rank, world = run.runtime, run.device, run.rank, run.world
    table, rows = training_rows(cfg)
    images = encoder_inputs([table.paths[i] for i in rows], cfg.image_size, progress=cfg.progress and run.is_main)
    labels = torch.from_numpy(table.labels[rows]).float()
    n = len(rows)
    labelled = labelled_mask(n, cfg.labelled_fraction, cfg.seed)

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
    loader, sampler = run.loader(TensorDataset(torch.arange(n)), cfg.batch_size, cfg.seed)
    total = len(loader) * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / max(1, total))))
    ntxent = MultiPositiveNTXentLoss(cfg.temperature)
    raw = torch.zeros(n, len(extractor.names))
    standardizer = FeatureStandardizer()
    secs = {"cam_seconds": 0.0, "radiomics_seconds": 0.0}

    roi: dict[str, Any] = {}  # the last refresh's ROI extraction (tuned on validation with roi_tuning)
    attention_model = None
    if cfg.attention:
        from gazerad.attention.checkpoint import load_attention_model
        from gazerad.kacl.evaluate import predicted_attention

        attention_model = load_attention_model(cfg.attention, dev)
    heat = predicted_attention(attention_model, images) if attention_model is not None and use_rad and cfg.roi_tuning else None

    def refresh(whole: bool) -> None:
        nonlocal raw, roi
        if not whole:
            precise_bn(model, images, device=dev)
        t = time.perf_counter()
        if not whole and cfg.roi_tuning:  # every rank tunes the same weights on the same images
            roi = fit_box_extraction(model, table, cfg, dev, thresholds=ROI_THRESHOLDS, blurs=ROI_BLURS, attention_model=attention_model)
            roi.pop("grid", None)
        tuning = time.perf_counter() - t
        mine = torch.arange(rank, n, world)
        feats, took, _ = refresh_radiomics(
            model,
            images[mine],
            extractor,
            labels[mine],
            labelled[mine],
            whole_image=whole,
            cam_method=cfg.cam_method,
            threshold=cfg.cam_threshold,
            blur=cfg.blur,
            device=dev,
            box_settings=roi,
            class_names=table.classes,
            attention=None if heat is None else heat[mine.numpy()],
        )
        took["cam_seconds"] += tuning
        new = torch.zeros(n, feats.shape[1])
        new[mine] = feats
        if world > 1:
            new = new.to(dev)
            dist.all_reduce(new)
            new = new.cpu()
        raw = new
        standardizer.fit(raw.double().numpy(), extractor.names)
        for k in secs:
            secs[k] += took[k]
        model.train()

    augment = RandRadiographAugment() if cfg.augment else None
    net: torch.nn.Module = _TrainForward(model)  # one module for every forward: DDP synchronises both branches

    def step(batch: tuple[torch.Tensor]) -> dict[str, torch.Tensor]:
        (idx,) = batch
        x = images[idx]
        if augment is not None:  # the image view only: radiomics come from the unaugmented image's ROI
            x = augment(x, step_generator(cfg.seed, loop.state.epoch, loop.state.iteration, rank))
        x, y, lab = rt.batch(x), labels[idx].to(dev), labelled[idx].to(dev)
        with rt.autocast():  # the networks; the losses below run in float32
            if use_rad:
                logits, z_img, z_rad = net(x, standardizer.transform(raw[idx].double()).float().to(dev))
            else:
                logits, _, _ = net(x)
        con = ntxent(z_img, z_rad) if use_rad else torch.zeros((), device=dev)
        per = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none").mean(1)
        cls = (per * lab).sum() / lab.sum().clamp(min=1)
        return {"loss": (cfg.w_cls * cls + cfg.w_con * con) if use_rad else cls, "bce": cls, "contrastive": con}

    loop = TrainLoop(step, optimizer=opt, scheduler=sched, scaler=rt.scaler(), max_epochs=cfg.epochs, max_steps=cfg.max_steps, world=world)
    saver = CheckpointSaver(
        run.out / "checkpoint.pt",
        "kacl",
        model,
        cfg.to_dict(),
        extra=lambda: {"radiomics": raw, "labelled": labelled, "roi_settings": roi},
        save=run.is_main,
    )
    extra = saver.resume(loop, dev)
    if extra is not None:
        raw, labelled, roi = extra["radiomics"], extra["labelled"], extra.get("roi_settings") or {}
        if run.is_main and cfg.progress:
            print(f"resuming {cfg.method} from {saver.path} at epoch {loop.state.epoch}/{cfg.epochs}")
    net = run.ddp(net, find_unused_parameters=not use_rad)

    def epoch_started(lp: TrainLoop) -> None:
        sampler.set_epoch(lp.state.epoch - 1)
        secs.update(cam_seconds=0.0, radiomics_seconds=0.0)
        if use_rad:
            refresh(whole=lp.state.epoch == 1)  # the first epoch's ROI is the whole image: an untrained CAM is noise
        model.train()

    def iteration_started(lp: TrainLoop) -> None:
        s = lp.state
        if use_rad and cfg.refresh_every and s.iteration > 0 and s.iteration % cfg.refresh_every == 0 and s.epoch > 1:
            refresh(whole=False)

    def epoch_completed(lp: TrainLoop) -> None:
        row = lp.state.history[-1]
        row.pop("seconds")
        row.update(epoch_seconds=lp.state.epoch_seconds, **secs)
        if "t_iou_0.3" in roi:
            row["roi_validation_t_iou_0.3"] = roi["t_iou_0.3"]

    loop.on(Events.EPOCH_STARTED, epoch_started)
    loop.on(Events.ITERATION_STARTED, iteration_started)
    loop.on(Events.EPOCH_COMPLETED, epoch_completed)
    loop.add(ProgressBar(lambda lp: f"{cfg.method} epoch {lp.state.epoch}/{cfg.epochs}", cfg.progress and run.is_main))
    if run.is_main:

        def line(lp: TrainLoop) -> str:
            e = lp.state.history[-1]
            return (
                f"epoch {e['epoch']}/{cfg.epochs}  loss {e['loss']:.4f} (bce {e['bce']:.4f}, con {e['contrastive']:.4f})"
                f"  {e['epoch_seconds']:.1f} s, radiomics {e['radiomics_seconds']:.1f} s"
            )

        loop.add(
            TensorBoardLogger(run.out / "tb"),
            saver,
            EpochPrinter(line, cfg.progress),
            RunSummary(run.out, cfg.to_dict(), rt.describe(), f"{cfg.method} ({cfg.backbone}) on {Path(cfg.data).name}"),
        )
    loop.on(Events.COMPLETED, lambda lp: precise_bn(model, images, device=dev))
    state = loop.run(loader)
    result: dict[str, Any] = {"history": state.history, "seconds": state.seconds, "steps": state.iteration}
    if run.is_main:
        result["calibration"] = calibration = fit_calibration(model, table, cfg, dev)
        result["box_extraction"] = box_extraction = fit_box_extraction(model, table, cfg, dev, attention_model=attention_model)
        result["model"] = str(
            save_model_file(
                run.out / "kacl.pt",
                "kacl",
                cfg.to_dict(),
                model=model.state_dict(),
                classes=list(table.classes),
                feature_names=list(extractor.names),
                standardizer=standardizer.state_dict(),
                calibration=calibration,
                box_extraction=box_extraction,
                roi_settings=roi,
            )
        )
    run.barrier()
    return result


def model_logits(model: torch.nn.Module, images: torch.Tensor, device: torch.device | str = "cpu", batch: int = 64) -> np.ndarray:
    """Eval-mode logits ``(N, C)`` of ``images`` ``(N, 1, S, S)``, in batches."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[b : b + batch].to(device)).float().cpu() for b in range(0, len(images), batch)]).numpy()


def fit_calibration(model: torch.nn.Module, table: Any, cfg: KACLConfig, device: torch.device | str = "cpu", split: str = "validate") -> dict[str, Any]:
    """Temperature scaling on the ``split`` rows of ``table`` (:mod:`gazerad.kacl.calibration`).

    Returns ``{"temperature", "split", "n_images", "nll_before", "nll_after", "ece_before",
    "ece_after"}``; ``temperature`` 1 with a ``"skipped"`` reason when the split is empty or
    was trained on (its probabilities would not be held out).
    """
    from gazerad.data.inputs import encoder_inputs
    from gazerad.kacl.calibration import binary_nll, calibrated_probabilities, expected_calibration_error, fit_temperature

    rows = table.subset(split)
    if split in cfg.splits:
        return {"temperature": 1.0, "split": split, "skipped": f"the {split} split was trained on"}
    if len(rows) < 2:
        return {"temperature": 1.0, "split": split, "skipped": f"fewer than 2 images in the {split} split"}
    z = model_logits(model, encoder_inputs([table.paths[i] for i in rows], cfg.image_size), device)
    y = table.labels[rows].astype(np.float64)
    t = fit_temperature(z, y)
    out = {"temperature": t, "split": split, "n_images": int(len(rows))}
    for tag, temp in (("before", 1.0), ("after", t)):
        out[f"nll_{tag}"] = binary_nll(z, y, temp)
        out[f"ece_{tag}"] = expected_calibration_error(calibrated_probabilities(z, temp), y)
    return out


def fit_box_extraction(
    model: torch.nn.Module,
    table: Any,
    cfg: KACLConfig,
    device: torch.device | str = "cpu",
    split: str = "validate",
    thresholds: Sequence[float] | None = None,
    blurs: Sequence[int] | None = None,
    attention_model: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Box source (CAM layer; with ``attention_model`` also its gaze map), threshold and
    blur tuned on the ``split`` rows' boxes (``BBox_List_2017.csv`` in ``cfg.data``;
    :func:`gazerad.kacl.evaluate.tune_box_extraction` over ``thresholds`` x ``blurs``, default
    its full grid), with a ``"skipped"`` reason (and the defaults) when there are none or the
    split was trained on."""
    from gazerad.kacl.evaluate import BLUR_GRID, DEFAULT_BOX_SETTINGS, THRESHOLD_GRID, tune_box_extraction

    bpath = Path(cfg.data) / "BBox_List_2017.csv"
    rows = table.subset(split)
    why = (
        "no BBox_List_2017.csv in the study folder"
        if not bpath.is_file()
        else f"the {split} split was trained on"
        if split in cfg.splits
        else f"no images in the {split} split"
        if len(rows) == 0
        else None
    )
    if why:
        return {**DEFAULT_BOX_SETTINGS, "split": split, "skipped": why}
    grid = dict(thresholds=thresholds or THRESHOLD_GRID, blurs=blurs or BLUR_GRID)
    out = tune_box_extraction(model, table, rows, bpath, cfg.image_size, cfg.cam_method, **grid, device=device, attention_model=attention_model)
    model.zero_grad(set_to_none=True)
    return {**out, "split": split}


def retune_boxes(
    model_path: str | Path, data: str | Path, attention: str | Path | None = None, out: str | Path | None = None, device: str | None = None
) -> dict[str, Any]:
    """Re-tune a saved model's box extraction on ``data``'s validation boxes
    (:func:`fit_box_extraction`, the full grid; with ``attention``, an ``attention.pt``, its
    map and the CAMs it gates are box sources too) and write the model file with the new
    settings (and ``attention`` in its config) to ``out`` (default: in place), atomically.

    Returns the new ``box_extraction`` (``"skipped"`` and the file unchanged when ``data``
    has no validation boxes).
    """
    from gazerad.attention.checkpoint import load_attention_model
    from gazerad.kacl.evaluate import model_study_table

    src = Path(model_path) / "kacl.pt" if Path(model_path).is_dir() else Path(model_path)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, state = load_kacl(src, dev)
    table = model_study_table(state, data)
    att = None if attention is None else str(Path(attention).resolve())
    cfg = KACLConfig(**{**state["config"], "data": str(data), "attention": att})
    tuned = fit_box_extraction(model, table, cfg, dev, attention_model=None if att is None else load_attention_model(att, dev))
    if "skipped" in tuned:
        return tuned

    def change(s: dict[str, Any]) -> None:
        s["box_extraction"] = tuned
        s["config"]["attention"] = att

    rewrite_model_file(src, Path(out) if out else src, change)
    return tuned


def load_kacl(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """``kacl.pt`` (or its folder) -> ``(KACLModel in eval mode, state without weights)``."""
    from gazerad.kacl.model import KACLModel

    def build(state: dict[str, Any]) -> torch.nn.Module:
        c = state["config"]
        model = KACLModel(len(state["classes"]), len(state["feature_names"]), c["backbone"], c["proj_dim"], c["dropout"], c.get("cam_layer"))
        model.load_state_dict(state["model"])
        return model

    model, state = load_model_file(path, "kacl", build, device, "run 'gazerad train-kacl' first")
    state.pop("model")
    return model, state
