"""Training data of the attention predictor: images and gaze-heatmap targets of a study folder, and its split."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gazerad.data.inputs import attention_input
from gazerad.data.layouts import open_study_folder
from gazerad.data.study import find_image
from gazerad.errors import InputError

prepare_images = attention_input  # the former name

__all__ = ["prepare_images", "read_splits", "AttentionDataset"]

PathLike = str | os.PathLike


def _resize_maps(maps: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``(B, 1, s, s)`` densities -> ``(B, 1, H, W)``, non-negative, each summing to 1."""
    if tuple(maps.shape[-2:]) != tuple(shape):
        maps = F.interpolate(maps.float(), size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)
    maps = maps.float().clamp_min(0)
    return maps / maps.sum((-2, -1), keepdim=True).clamp_min(1e-30)


def read_splits(studies: PathLike) -> dict[str, str]:
    """``{Image Index: split}`` (lower case; ``train`` for an empty cell) from
    ``studies/labels.csv`` (or an NIH / MIMIC-CXR root's tables), read and checked by
    :func:`gazerad.data.layouts.open_study_folder`.

    Without a ``labels.csv`` (or without a ``split`` column) returns ``{}``;
    :class:`AttentionDataset` then holds out a fixed 20 % of the images by the CRC-32 of
    their id (our choice).
    """
    folder = open_study_folder(studies)
    if not folder.has_labels or not folder.table.has_split:
        return {}
    return folder.table.split_of()


def _hash_split(image_id: str, holdout: float = 0.2) -> str:
    return "test" if (zlib.crc32(image_id.encode()) % 1000) < holdout * 1000 else "train"


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
            gaze without a pixels-per-degree figure, except EGD-CXR's, whose readings get
            EGD's own kernel, :func:`gazerad.gaze.egd_cxr.egd_sigma`).
        images_dir: folder of the images (default: the study folder's, or the NIH /
            MIMIC-CXR root's nested folders); an image id is looked up as is, then with each
            supported suffix (:func:`gazerad.data.study.find_image`).
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

        from gazerad.gaze.egd_cxr import egd_sigma
        from gazerad.gaze.heatmap import gaze_heatmap, record_shape
        from gazerad.gaze.importers import load_gaze
        from gazerad.gaze.metrics import fixation_map
        from gazerad.io.xray import read_xray

        if part not in ("train", "heldout", "all"):
            raise ValueError(f"part must be 'train', 'heldout' or 'all', got {part!r}")
        root = Path(studies)
        if not root.exists():
            raise InputError(root, "study folder does not exist")
        folder = open_study_folder(root)
        locate = folder.find_image if images_dir is None else lambda name: find_image(images_dir, name)
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
            path = locate(image_id)
            if path is None:
                self.skipped["no_image"] += 1
                continue
            img, _ = read_xray(path)
            x = attention_input(torch.from_numpy(img)[None, None], s)[0]
            heat = np.zeros((s, s), dtype=np.float64)
            fm = np.zeros((s, s), dtype=bool)
            fx_all = []
            for rec in gaze[image_id]:
                shape = record_shape(rec, img.shape)
                try:
                    h = gaze_heatmap(
                        rec.fixations,
                        shape,
                        sigma=sigma if sigma is not None or rec.pixels_per_degree else egd_sigma(rec.screen, shape),
                        sigma_deg=sigma_deg,
                        pixels_per_degree=rec.pixels_per_degree,
                        out_shape=(s, s),
                        mode="area",
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
