"""FocusContrast's visual-attention predictor: a small U-Net trained on gaze heatmaps.

METHODS (section 2) leaves the predictor's architecture and loss open; our choices:

- **Network**: MONAI's ``BasicUNet`` (2-D, 1 input channel, 1 output channel, small
  ``features``) giving logits ``(B, 1, S, S)`` at a square input side ``S``
  (``input_size``, a multiple of 16); the attention map is the softmax of the logits over
  all pixels, so each map sums to 1.
- **Input**: the radiograph min-max scaled to ``[0, 1]`` per image and resized to
  ``S x S`` (bilinear, antialiased; the aspect ratio is not kept, as the heatmap grid is
  stretched the same way).
- **Target**: the mean over readers of each reader's duration-weighted gaze heatmap
  (``sigma = 1`` degree, REFLACX's rule, :func:`~gazerad.gaze.heatmap.gaze_heatmap`)
  rendered directly on the ``S x S`` grid (``mode="area"``), normalised to sum 1.
- **Loss** (:func:`attention_loss`): ``KL(target || softmax(logits)) + w_cc (1 - CC)``.
- **Split**: ``labels.csv``'s ``split`` column: ``train`` trains; every other value
  (``validate``, ``test``) is held out. Without that column, a fixed hash of the image id
  holds out 20 % (our fallback). The model saved is the one after the last epoch (no
  selection on held-out data).
- **Evaluation** on held-out images: CC and KL against the target heatmap, NSS and AUC-Judd
  against the fixated pixels of all held-out readers (fixations scaled to ``S x S``), with
  :mod:`gazerad.gaze.metrics`. The reference is a **centre prior**: a Gaussian centred on
  the image whose per-axis sigma is fitted to the spread of the training heatmaps about
  the centre.

Files written by :func:`train_attention`: ``attention.pt`` (state dict, config, metrics),
``metrics.json``, ``curve.png``, ``overlay.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gazerad.engine.runtime import Runtime
from gazerad.errors import InputError

__all__ = [
    "DEFAULT_FEATURES",
    "AttentionPredictor",
    "attention_loss",
    "prepare_images",
    "read_splits",
    "AttentionDataset",
    "centre_prior",
    "fit_centre_prior",
    "saliency_scores",
    "evaluate_attention",
    "train_attention",
    "save_attention_model",
    "load_attention_model",
    "model_fingerprint",
    "predict_attention",
    "AttentionCache",
    "PredictAttentiond",
    "run_train_attention",
]

PathLike = str | os.PathLike
DEFAULT_FEATURES: tuple[int, ...] = (16, 16, 32, 64, 128, 16)
"""``BasicUNet`` features of the default predictor (about 0.5 M parameters)."""

_FORMAT = "gazerad-attention"
_FORMAT_VERSION = 1
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii.gz", ".nii", ".nrrd")


# ----------------------------------------------------------------------------- network


class AttentionPredictor(nn.Module):
    """Image ``(B, 1, S, S)`` -> attention logits ``(B, 1, S, S)`` (MONAI ``BasicUNet``).

    Args:
        input_size: square side ``S`` the model is trained and run at (multiple of 16,
            the U-Net's four down-samplings).
        features: ``BasicUNet`` features (six numbers: five encoder levels, last decoder).
        dropout: ``BasicUNet`` dropout.
    """

    def __init__(
        self, input_size: int = 128, features: Sequence[int] = DEFAULT_FEATURES, dropout: float = 0.0
    ) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet

        input_size = int(input_size)
        if input_size < 16 or input_size % 16:
            raise ValueError(f"input_size must be a positive multiple of 16, got {input_size}")
        features = tuple(int(f) for f in features)
        if len(features) != 6 or min(features) < 1:
            raise ValueError(f"features must be six positive integers, got {features}")
        self.input_size = input_size
        self.features = features
        self.dropout = float(dropout)
        self.net = BasicUNet(
            spatial_dims=2, in_channels=1, out_channels=1, features=features, dropout=self.dropout
        )

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (saved with the weights)."""
        return {"input_size": self.input_size, "features": list(self.features), "dropout": self.dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` image in ``[0, 1]`` -> ``(B, 1, S, S)`` logits."""
        return self.net(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` image -> ``(B, 1, S, S)`` attention maps, each summing to 1
        (softmax over all pixels)."""
        logits = self(x).float()
        b = logits.shape[0]
        return torch.softmax(logits.reshape(b, -1), dim=1).reshape(logits.shape)


def attention_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    w_kl: float = 1.0,
    w_cc: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """``w_kl KL(T || P) + w_cc (1 - CC(P, T))`` per image, ``P = softmax(logits)`` over pixels.

    Our choice (METHODS leaves the loss open): KL drives the predicted density towards the
    gaze density where readers looked; the CC term (Pearson correlation of the two maps)
    rewards getting the *shape* right everywhere and is scale-free.

    Args:
        logits: ``(B, 1, H, W)`` or ``(B, H, W)`` network output.
        target: same shape, non-negative; each map is normalised to sum 1 here.
        w_kl, w_cc: weights of the two terms.
        reduction: ``"mean"`` over the batch (a scalar) or ``"none"`` (``(B,)``).

    ``KL = sum_i T_i (log T_i - log P_i)`` (``0 log 0 = 0``) is 0 and ``CC`` is 1 exactly
    when ``P = T``, so a perfect prediction has loss 0.
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits and target differ in shape: {tuple(logits.shape)} vs {tuple(target.shape)}")
    b = logits.shape[0]
    lg = logits.float().reshape(b, -1)
    t = target.float().reshape(b, -1).clamp_min(0)
    t = t / t.sum(1, keepdim=True).clamp_min(1e-12)
    logp = torch.log_softmax(lg, dim=1)
    kl = (torch.xlogy(t, t) - t * logp).sum(1)
    p = logp.exp()
    pc = p - p.mean(1, keepdim=True)
    tc = t - t.mean(1, keepdim=True)
    corr = (pc * tc).sum(1) / (pc.square().sum(1).sqrt() * tc.square().sum(1).sqrt()).clamp_min(1e-12)
    loss = w_kl * kl + w_cc * (1.0 - corr)
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def prepare_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 1, H, W)`` radiographs -> ``(B, 1, size, size)`` float32 model input.

    Each image is min-max scaled to ``[0, 1]`` (a constant image becomes 0), then resized
    with bilinear, antialiased interpolation.
    """
    x = images.float()
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"images must be (B, 1, H, W), got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    lo = flat.min(1).values.view(-1, 1, 1, 1)
    rng = (flat.max(1).values.view(-1, 1, 1, 1) - lo).clamp_min(1e-12)
    x = (x - lo) / rng
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp_(0.0, 1.0)


def _resize_maps(maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``(B, 1, s, s)`` densities -> ``(B, 1, H, W)``, non-negative, each summing to 1."""
    if tuple(maps.shape[-2:]) != tuple(shape):
        maps = F.interpolate(maps.float(), size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)
    maps = maps.float().clamp_min(0)
    return maps / maps.sum((-2, -1), keepdim=True).clamp_min(1e-30)


# ----------------------------------------------------------------------------- data


def read_splits(studies: PathLike) -> dict[str, str]:
    """Image id -> split (lower case) from ``studies/labels.csv``'s ``split`` column.

    Without a ``labels.csv`` (or without a ``split`` column) returns ``{}``;
    :class:`AttentionDataset` then holds out a fixed 20 % of the images by the CRC-32 of
    their id (our choice).
    """
    from gazerad.data._table import read_rows

    p = Path(studies) / "labels.csv"
    if not p.is_file():
        return {}
    header, rows = read_rows(p, ["Image Index"])
    if "split" not in header:
        return {}
    return {r["Image Index"].strip(): r["split"].strip().lower() for r in rows}


def _hash_split(image_id: str, holdout: float = 0.2) -> str:
    return "test" if (zlib.crc32(image_id.encode()) % 1000) < holdout * 1000 else "train"


def _find_image(images_dir: Path, image_id: str) -> Path | None:
    p = images_dir / image_id
    if p.is_file():
        return p
    for sfx in _IMAGE_SUFFIXES:
        q = images_dir / f"{image_id}{sfx}"
        if q.is_file():
            return q
    return None


class AttentionDataset(torch.utils.data.Dataset):
    """Images with gaze and their target heatmaps, from a study folder, held in memory.

    Item ``i``: ``{"image": (1, S, S) float32 in [0, 1], "target": (1, S, S) float32 summing
    to 1, "fixmap": (1, S, S) float32 0/1 (pixels fixated by any reader), "index": i}``.

    Args:
        studies: study folder (``images/``, ``labels.csv``, gaze readable by
            :func:`~gazerad.gaze.importers.load_gaze`).
        input_size: ``S``.
        part: ``"train"`` (split ``train``), ``"heldout"`` (any other split) or ``"all"``.
        sigma_deg: heatmap kernel in degrees of visual angle (REFLACX: 1).
        sigma: kernel in original-image pixels instead (overrides ``sigma_deg``; needed for
            gaze without a pixels-per-degree figure).
        images_dir: folder of the images (default ``studies/images``); an image id is
            looked up as is, then with the usual suffixes.
        gaze: an already loaded :class:`~gazerad.gaze.record.GazeCollection` (default:
            ``load_gaze(studies)``).
        progress: tqdm bar while loading.

    Attributes:
        image_ids: ids in item order.
        fixations: per item, the readers' fixations ``(N, 4)`` scaled to the ``S x S`` grid.
        skipped: ``{"no_gaze": n, "no_image": n, "no_label": n}``: images of this part
            (listed in ``labels.csv``) without gaze, gaze records whose image file is
            missing, and gaze records of images absent from ``labels.csv`` (no split).
    """

    def __init__(
        self,
        studies: PathLike,
        input_size: int = 128,
        part: str = "train",
        sigma_deg: float = 1.0,
        sigma: float | None = None,
        images_dir: PathLike | None = None,
        gaze: Any = None,
        progress: bool = False,
    ) -> None:
        from tqdm.auto import tqdm

        from gazerad.gaze.heatmap import gaze_heatmap, record_shape
        from gazerad.gaze.importers import load_gaze
        from gazerad.gaze.metrics import fixation_map
        from gazerad.io.xray import read_xray

        if part not in ("train", "heldout", "all"):
            raise ValueError(f"part must be 'train', 'heldout' or 'all', got {part!r}")
        root = Path(studies)
        if not root.exists():
            raise InputError(root, "study folder does not exist")
        images_dir = Path(images_dir) if images_dir is not None else root / "images"
        if gaze is None:
            gaze = load_gaze(root)
        splits = read_splits(root)
        s = int(input_size)
        self.input_size = s
        self.part = part

        def wanted(image_id: str) -> bool:
            sp = splits.get(image_id) if splits else _hash_split(image_id)
            if sp is None:
                return False
            return part == "all" or (sp == "train") == (part == "train")

        ids = [i for i in gaze if wanted(i)]
        self.skipped = {
            "no_gaze": sum(1 for i in splits if wanted(i) and i not in gaze),
            "no_image": 0,
            "no_label": sum(1 for i in gaze if splits and i not in splits),
        }
        images, targets, fixmaps, fixations, kept = [], [], [], [], []
        for image_id in tqdm(ids, desc=f"attention data ({part})", unit="image", disable=not progress):
            path = _find_image(images_dir, image_id)
            if path is None:
                self.skipped["no_image"] += 1
                continue
            img, _ = read_xray(path)
            x = prepare_images(torch.from_numpy(img)[None, None], s)[0]
            heat = np.zeros((s, s), dtype=np.float64)
            fm = np.zeros((s, s), dtype=bool)
            fx_all = []
            for rec in gaze[image_id]:
                shape = record_shape(rec, img.shape)
                try:
                    h = gaze_heatmap(
                        rec.fixations, shape, sigma=sigma, sigma_deg=sigma_deg,
                        pixels_per_degree=rec.pixels_per_degree, out_shape=(s, s), mode="area",
                    )
                except ValueError as exc:
                    raise InputError(rec.source or path, f"gaze heatmap of reader {rec.reader_id!r}: {exc}") from None
                heat += h
                f = rec.fixations.copy()
                f[:, 0] *= s / shape[1]
                f[:, 1] *= s / shape[0]
                fm |= fixation_map(f[:, :2], (s, s))
                fx_all.append(f)
            if not heat.sum() > 0:
                self.skipped["no_gaze"] += 1
                continue
            heat /= heat.sum()
            images.append(x)
            targets.append(torch.from_numpy(heat.astype(np.float32))[None])
            fixmaps.append(torch.from_numpy(fm.astype(np.float32))[None])
            fixations.append(np.concatenate(fx_all) if fx_all else np.zeros((0, 4)))
            kept.append(image_id)
        self.image_ids: list[str] = kept
        self.fixations: list[np.ndarray] = fixations
        empty = torch.zeros((0, 1, s, s))
        self.images = torch.stack(images) if images else empty
        self.targets = torch.stack(targets) if targets else empty.clone()
        self.fixmaps = torch.stack(fixmaps) if fixmaps else empty.clone()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "target": self.targets[i], "fixmap": self.fixmaps[i], "index": i}


# ----------------------------------------------------------------------------- evaluation


def centre_prior(shape: tuple[int, int], sigma_xy: tuple[float, float]) -> np.ndarray:
    """``(H, W)`` float32 Gaussian centred on the image, per-axis sigma in pixels, sum 1."""
    h, w = int(shape[0]), int(shape[1])
    sx, sy = max(float(sigma_xy[0]), 1e-6), max(float(sigma_xy[1]), 1e-6)
    gy = np.exp(-0.5 * ((np.arange(h) + 0.5 - h / 2) / sy) ** 2)
    gx = np.exp(-0.5 * ((np.arange(w) + 0.5 - w / 2) / sx) ** 2)
    m = np.outer(gy, gx)
    m /= m.sum()
    return m.astype(np.float32)


def fit_centre_prior(targets: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """Per-axis sigma ``(sx, sy)`` (pixels) of a centred Gaussian matching the spread of the
    mean of ``targets`` ``(N, [1,] H, W)`` about the image centre (second moments)."""
    t = np.asarray(targets.numpy() if isinstance(targets, torch.Tensor) else targets, dtype=np.float64)
    m = t.reshape(-1, *t.shape[-2:]).mean(0)
    m = m / m.sum()
    h, w = m.shape
    dy = np.arange(h) + 0.5 - h / 2
    dx = np.arange(w) + 0.5 - w / 2
    sy = math.sqrt(float((m.sum(1) * dy**2).sum()))
    sx = math.sqrt(float((m.sum(0) * dx**2).sum()))
    return (sx, sy)


def saliency_scores(pred: np.ndarray, target: np.ndarray, fixmap: np.ndarray) -> dict[str, float]:
    """Mean CC, KL, NSS, AUC-Judd, SIM over images (NaN-aware).

    Args:
        pred: ``(N, H, W)`` predicted maps.
        target: ``(N, H, W)`` gaze heatmaps (CC, KL, SIM).
        fixmap: ``(N, H, W)`` fixated pixels (NSS, AUC-Judd).
    """
    from gazerad.gaze import metrics as M

    p = np.asarray(pred, dtype=np.float64)
    g = np.asarray(target, dtype=np.float64)
    f = np.asarray(fixmap) > 0
    with np.errstate(all="ignore"), _nan_ok():
        out = {
            "cc": float(np.nanmean(M.cc(p, g))),
            "kl": float(np.nanmean(M.kl(p, g))),
            "nss": float(np.nanmean(M.nss(p, f))),
            "auc_judd": float(np.nanmean(M.auc_judd(p, f))),
            "sim": float(np.nanmean(M.sim(p, g))),
        }
    return out


@contextlib.contextmanager
def _nan_ok() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@torch.no_grad()
def _predict_dataset(
    model: AttentionPredictor, ds: AttentionDataset, batch_size: int, device: torch.device, rt: Runtime | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Held-out maps ``(N, S, S)`` and per-image losses ``(N,)`` (float32 unless ``rt`` says otherwise)."""
    rt = rt or Runtime.fp32_reference(device)
    was = model.training
    model.eval()
    maps, losses = [], []
    try:
        for i in range(0, len(ds), batch_size):
            x = rt.batch(ds.images[i : i + batch_size])
            t = ds.targets[i : i + batch_size].to(device)
            with rt.autocast():
                logits = model(x)
            logits = logits.float()
            losses.append(attention_loss(logits, t, reduction="none").cpu())
            b = logits.shape[0]
            maps.append(torch.softmax(logits.reshape(b, -1), 1).reshape(logits.shape)[:, 0].cpu())
    finally:
        model.train(was)
    if not maps:
        s = ds.input_size
        return np.zeros((0, s, s), np.float32), np.zeros(0)
    return torch.cat(maps).numpy(), torch.cat(losses).numpy().astype(np.float64)


def evaluate_attention(
    model: AttentionPredictor,
    dataset: AttentionDataset,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Loss and saliency metrics (:func:`saliency_scores`) of ``model`` on ``dataset``."""
    dev = next(model.parameters()).device if device is None else _device(device)
    maps, losses = _predict_dataset(model.to(dev), dataset, batch_size, dev)
    out = {"loss": float(losses.mean()) if len(losses) else float("nan"), "n": len(dataset)}
    out.update(saliency_scores(maps, dataset.targets[:, 0].numpy(), dataset.fixmaps[:, 0].numpy()))
    return out


# ----------------------------------------------------------------------------- training


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


def _json_safe(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return _json_safe(v.item())
    return v


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


def _plot_curve(history: list[dict[str, Any]], base: Mapping[str, Any], path: PathLike) -> None:
    from gazerad.engine.runlog import new_figure, save_figure

    ep = [h["epoch"] for h in history]
    fig = new_figure((9, 3.4), dpi=100)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    if history and "heldout_loss" in history[0]:
        ax1.plot(ep, [h["heldout_loss"] for h in history], "s-", label="held-out")
        if base.get("loss") is not None:
            ax1.axhline(base["loss"], color="grey", ls="--", label="centre prior (held-out)")
    ax1.set_xlabel("epoch")
    ax1.xaxis.get_major_locator().set_params(integer=True)
    ax1.set_ylabel("KL + (1 - CC)")
    ax1.legend(fontsize=8)
    for key, colour in (("cc", "C0"), ("auc_judd", "C1"), ("nss", "C2")):
        if history and key in history[0]:
            ax2.plot(ep, [h[key] for h in history], "o-", color=colour, label=key)
            if base.get(key) is not None:
                ax2.axhline(base[key], color=colour, ls="--", lw=1)
    ax2.set_xlabel("epoch")
    ax2.xaxis.get_major_locator().set_params(integer=True)
    ax2.set_title("held-out (dashed: centre prior)", fontsize=9)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _plot_overlay(
    ds: AttentionDataset,
    maps: np.ndarray | None,
    prior: np.ndarray,
    model: AttentionPredictor,
    path: PathLike,
    n: int,
) -> None:
    """One PNG: per row an image with its readers' heatmap (and fixations), the prediction
    and the centre prior, each titled with its CC against the heatmap."""
    from matplotlib import colormaps

    from gazerad.engine.runlog import new_figure, save_figure
    from gazerad.gaze.metrics import cc

    n = max(1, min(n, len(ds)))
    if maps is None:
        with torch.no_grad():
            maps = model.eval().predict(ds.images[:n])[:, 0].numpy()
    s, gap = ds.input_size, 4
    jet = colormaps["jet"]
    mosaic = np.ones((n * s + (n - 1) * gap, 3 * s + 2 * gap, 3))
    fig_h = mosaic.shape[0] / 40 + 0.3
    fig = new_figure((mosaic.shape[1] / 40, fig_h), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1 - 0.3 / fig_h))
    ax.set_axis_off()
    for r in range(n):
        img = ds.images[r, 0].numpy()[..., None].repeat(3, -1)
        tgt = ds.targets[r, 0].numpy()
        for c, (name, m) in enumerate((("gaze", tgt), ("predicted", maps[r]), ("centre prior", prior))):
            heat = jet(m / max(float(m.max()), 1e-30))[..., :3]
            y0, x0 = r * (s + gap), c * (s + gap)
            mosaic[y0 : y0 + s, x0 : x0 + s] = 0.55 * img + 0.45 * heat
            label = ds.image_ids[r] if c == 0 else f"{name} CC {float(cc(m, tgt)):.2f}"
            ax.text(x0 + 2, y0 + 2, label, color="white", fontsize=7, va="top",
                    bbox=dict(facecolor="black", alpha=0.5, pad=1, lw=0))
        f = ds.fixations[r]
        if len(f):
            ax.scatter(f[:, 0], f[:, 1] + r * (s + gap), s=5, facecolors="none", edgecolors="white", linewidths=0.5)
    ax.imshow(mosaic, extent=(0, mosaic.shape[1], mosaic.shape[0], 0), interpolation="nearest")
    ax.set_xlim(0, mosaic.shape[1])
    ax.set_ylim(mosaic.shape[0], 0)
    fig.text(0.5, 1 - 0.15 / fig_h, "held-out images: readers' gaze | predicted | centre prior", fontsize=8,
             ha="center", va="center")
    save_figure(fig, path)


# ----------------------------------------------------------------------------- save / load / predict


def save_attention_model(model: AttentionPredictor, path: PathLike, metrics: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"format", "version", "config", "state_dict", "metrics"}`` to ``path`` atomically."""
    from gazerad.io.atomic import atomic_path

    payload = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": _json_safe(dict(metrics)) if metrics is not None else None,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_attention_model(path: PathLike, device: str | torch.device | None = "cpu") -> AttentionPredictor:
    """Load a model written by :func:`train_attention` (a file, or a folder holding
    ``attention.pt``), in eval mode on ``device``.

    Raises:
        InputError: naming the file, when it is missing, unreadable, not a GazeRad attention
            model, or its weights do not fit its config.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "attention.pt"
    if not p.is_file():
        raise InputError(p, "attention model file does not exist")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(p, f"cannot be read as a GazeRad attention model ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT or "state_dict" not in payload:
        raise InputError(p, f"not a GazeRad attention model (no {_FORMAT!r} format tag)")
    if not isinstance(payload.get("version"), int) or payload["version"] > _FORMAT_VERSION:
        raise InputError(p, f"attention model format version {payload.get('version')} is newer than this GazeRad")
    try:
        model = AttentionPredictor(**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(p, f"attention model weights do not match its config ({exc})") from None
    model.metrics = payload.get("metrics")  # type: ignore[assignment]
    return model.to(_device(device)).eval()


def model_fingerprint(model: AttentionPredictor) -> str:
    """SHA-256 (hex) of the model's config and weights: the key of cached maps."""
    h = hashlib.sha256(json.dumps(model.config, sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _as_batch(images: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, int]:
    t = images.as_tensor() if hasattr(images, "as_tensor") else torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    nd = t.ndim
    if nd == 2:
        t = t[None, None]
    elif nd == 3 and t.shape[0] == 1:
        t = t[None]
    elif not (nd == 4 and t.shape[1] == 1):
        raise ValueError(f"images must be (H, W), (1, H, W) or (B, 1, H, W), got shape {tuple(t.shape)}")
    return t, nd


@torch.no_grad()
def _model_maps(model: AttentionPredictor, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(B, 1, H, W)`` raw images -> ``(B, 1, S, S)`` maps on the CPU (eval mode, restored)."""
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        outs = [
            model.predict(prepare_images(batch[i : i + batch_size].to(dev), model.input_size)).cpu()
            for i in range(0, len(batch), batch_size)
        ]
    finally:
        model.train(was)
    return torch.cat(outs) if outs else torch.zeros((0, 1, model.input_size, model.input_size))


def predict_attention(
    model: AttentionPredictor, images: np.ndarray | torch.Tensor, batch_size: int = 32
) -> np.ndarray | torch.Tensor:
    """Predicted attention at the images' own size.

    Images (any intensity range) are min-max scaled, resized to the model's side, run,
    and the ``S x S`` maps resized back (bilinear) and renormalised.

    Args:
        model: a trained :class:`AttentionPredictor`.
        images: ``(H, W)``, ``(1, H, W)`` or ``(B, 1, H, W)`` array or tensor.
        batch_size: images per forward pass.

    Returns:
        Maps of the input's shape, float32, each summing to 1: a numpy array for a numpy
        input, else a tensor on the input's device.
    """
    t, nd = _as_batch(images)
    maps = _resize_maps(_model_maps(model, t, batch_size), tuple(t.shape[-2:]))
    out = maps.reshape(maps.shape[-2:]) if nd == 2 else (maps[0] if nd == 3 else maps)
    if isinstance(images, torch.Tensor):
        return out.to(images.device)
    return out.numpy().astype(np.float32)


# ----------------------------------------------------------------------------- cache


class AttentionCache:
    """Predicted attention per image id, computed once (memory, optionally disk).

    Maps are kept at the model's side ``S`` (``S x S`` float32; 64 KiB at 128) and resized
    to the requested image's size on each :meth:`get`, exactly as :func:`predict_attention`
    does, so a cached map equals a fresh prediction. The disk cache holds one ``.npy`` per
    image under ``cache_dir/<model fingerprint[:16]>/``: a different model never reads
    another's maps, and a new cache instance (another run, another DataLoader worker)
    reuses them. An unreadable cached file is recomputed and replaced.

    The image id is the key: the caller promises one id names one image.

    Args:
        model_or_path: an :class:`AttentionPredictor` or a path for
            :func:`load_attention_model`.
        cache_dir: folder of the disk cache (``None``: memory only).
        max_items: memory cache size (least recently used dropped; ``None``: unbounded).
        device: device to load a model from a path to (default CPU).

    Attributes:
        computed, memory_hits, disk_hits: counters.
    """

    def __init__(
        self,
        model_or_path: AttentionPredictor | PathLike,
        cache_dir: PathLike | None = None,
        max_items: int | None = None,
        device: str | torch.device | None = "cpu",
    ) -> None:
        if isinstance(model_or_path, AttentionPredictor):
            self.model = model_or_path
        else:
            self.model = load_attention_model(model_or_path, device=device)
        self.fingerprint = model_fingerprint(self.model)[:16]
        self.cache_dir = Path(cache_dir) / self.fingerprint if cache_dir is not None else None
        self.max_items = max_items
        self._mem: OrderedDict[str, np.ndarray] = OrderedDict()
        self.computed = 0
        self.memory_hits = 0
        self.disk_hits = 0

    def _file(self, image_id: str) -> Path:
        assert self.cache_dir is not None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id)[-80:]
        digest = hashlib.sha1(image_id.encode()).hexdigest()[:10]
        return self.cache_dir / f"{safe}-{digest}.npy"

    def _remember(self, key: str, m: np.ndarray) -> None:
        self._mem[key] = m
        self._mem.move_to_end(key)
        if self.max_items is not None:
            while len(self._mem) > max(self.max_items, 0):
                self._mem.popitem(last=False)

    def _lookup(self, key: str) -> np.ndarray | None:
        if key in self._mem:
            self.memory_hits += 1
            self._mem.move_to_end(key)
            return self._mem[key]
        if self.cache_dir is not None:
            f = self._file(key)
            if f.is_file():
                s = self.model.input_size
                try:
                    m = np.load(f, allow_pickle=False)
                except (OSError, ValueError, EOFError):
                    m = None
                if m is not None and m.shape == (s, s) and m.dtype == np.float32 and np.isfinite(m).all():
                    self.disk_hits += 1
                    self._remember(key, m)
                    return m
        return None

    def _store(self, key: str, m: np.ndarray) -> None:
        self.computed += 1
        self._remember(key, m)
        if self.cache_dir is not None:
            from gazerad.io.atomic import atomic_path

            with atomic_path(self._file(key), suffix=".npy") as tmp:
                np.save(tmp, m, allow_pickle=False)

    def low_res(self, image_id: Hashable, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """The ``(S, S)`` float32 map of ``image`` (computed, or from the cache)."""
        key = str(image_id)
        m = self._lookup(key)
        if m is None:
            t, _ = _as_batch(image)
            if len(t) != 1:
                raise ValueError(f"get() takes one image, got a batch of {len(t)}")
            m = _model_maps(self.model, t, 1)[0, 0].numpy().astype(np.float32)
            self._store(key, m)
        return m

    def get(self, image_id: Hashable, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(H, W)`` float32 attention map of ``image`` (``(H, W)`` or ``(1, H, W)``), sum 1."""
        shape = tuple(int(s) for s in image.shape[-2:])
        m = self.low_res(image_id, image)
        return _resize_maps(torch.from_numpy(m)[None, None], shape)[0, 0].numpy()

    def precompute(
        self,
        items: Iterable[tuple[Hashable, np.ndarray | torch.Tensor]],
        batch_size: int = 32,
        progress: bool = True,
    ) -> int:
        """Compute the maps of ``(image_id, image)`` pairs not cached yet, in batches of
        same-size images; returns how many were computed."""
        from tqdm.auto import tqdm

        pending: dict[tuple[int, int], list[tuple[str, torch.Tensor]]] = {}
        done = 0

        def flush(group: list[tuple[str, torch.Tensor]]) -> int:
            maps = _model_maps(self.model, torch.cat([t for _, t in group]), batch_size)
            for (k, _), m in zip(group, maps):
                self._store(k, m[0].numpy().astype(np.float32))
            return len(group)

        for image_id, image in tqdm(items, desc="attention maps", unit="image", disable=not progress):
            key = str(image_id)
            if self._lookup(key) is not None:
                continue
            t, _ = _as_batch(image)
            grp = pending.setdefault(tuple(t.shape[-2:]), [])
            grp.append((key, t))
            if len(grp) >= batch_size:
                done += flush(grp)
                grp.clear()
        for grp in pending.values():
            if grp:
                done += flush(grp)
        return done

    def __len__(self) -> int:
        return len(self._mem)


class PredictAttentiond:
    """Dictionary transform adding the predicted attention of ``keys``'s image.

    Stores a ``(1, H, W)`` float32 map (sum 1) under ``attention_key``, from an
    :class:`AttentionCache`, ready for
    :class:`~gazerad.attention.crop.AttentionRandResizedCropd`.

    Args:
        keys: key of the ``(1, H, W)`` image (one key).
        cache: the :class:`AttentionCache`.
        id_key: key of the image id; ``None``: the image's ``filename_or_obj`` metadata (a
            ``MetaTensor`` from :class:`~gazerad.io.xray.LoadXRayd`).
        attention_key: output key.
    """

    def __init__(
        self, keys: Hashable, cache: AttentionCache, id_key: Hashable | None = None, attention_key: Hashable = "attention"
    ) -> None:
        if isinstance(keys, (list, tuple)):
            if len(keys) != 1:
                raise ValueError("PredictAttentiond takes one image key")
            keys = keys[0]
        self.key = keys
        self.cache = cache
        self.id_key = id_key
        self.attention_key = attention_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        img = d[self.key]
        if self.id_key is not None:
            image_id = d[self.id_key]
        else:
            meta = getattr(img, "meta", None) or {}
            image_id = meta.get("filename_or_obj")
            if image_id is None:
                raise KeyError(f"no image id: pass id_key, or give {self.key!r} as a MetaTensor with filename_or_obj")
        d[self.attention_key] = self.cache.get(image_id, img)[None]
        return d


# ----------------------------------------------------------------------------- CLI glue


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
