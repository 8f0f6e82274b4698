"""Study tables, in-memory image tensors and the two-view dataset of contrastive pre-training.

A study folder (``gazerad synth`` or the same layout of real data) has ``labels.csv`` with
``Image Index``, ``Finding Labels``, ``split`` and one 0/1 column per class, and the images
under ``images/`` (read and checked by :mod:`gazerad.data.study`). Pre-training reads every image once, resizes it to a square ``base``
grid and keeps it in memory as a ``(N, 1, base, base)`` float tensor in ``[0, 1]``; the
views are cut from that tensor, so an epoch costs no file I/O.

Randomness of a view depends only on ``(seed, epoch, index, view)``: the same run gives the
same views whatever the number of loader workers or ranks, and a resumed run continues
exactly where the killed one stopped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gazerad.data.augment import derived_seed
from gazerad.data.inputs import encoder_input, encoder_inputs
from gazerad.data.layouts import open_study_folder
from gazerad.data.study import METADATA_COLUMNS

prepare_xray, load_image_tensor = encoder_input, encoder_inputs  # the former names

__all__ = ["StudyTable", "read_study_table", "load_image_tensor", "prepare_xray", "ViewAugment", "TwoViewDataset", "view_seed"]

_FIXED = METADATA_COLUMNS  # the non-class columns of labels.csv (kept for old imports)


@dataclass
class StudyTable:
    """The images of a study folder with their labels.

    Attributes:
        root: study folder.
        ids: image ids (``Image Index``), in ``labels.csv`` order.
        paths: image files.
        splits: ``train`` / ``validate`` / ``test`` per image (lower case).
        classes: finding classes (the 0/1 columns of ``labels.csv``).
        labels: ``(N, C)`` int64 multi-hot labels.
        left_out: names of the data set's table left out because their image file is
            missing (NIH / MIMIC-CXR roots read in place; a study folder has none).
    """

    root: Path
    ids: list[str]
    paths: list[Path]
    splits: list[str]
    classes: list[str]
    labels: np.ndarray
    left_out: list[str] = field(default_factory=list)

    def subset(self, split: str | Sequence[str]) -> np.ndarray:
        """``(M,)`` int64 row indices whose split is ``split`` (or one of them; compared
        lower-cased, like :meth:`gazerad.data.study.LabelsTable.subset`), in file order."""
        from gazerad.data.study import rows_in_splits

        return rows_in_splits(self.splits, split)

    def targets(self, task: str = "multilabel") -> np.ndarray:
        """Targets for ``task``: ``multilabel`` ``(N, C)`` 0/1; ``multiclass`` ``(N,)`` 0 for no
        finding else 1 + the first class present; ``ordinal`` ``(N,)`` number of findings."""
        if task == "multilabel":
            return self.labels.copy()
        if task == "multiclass":
            has = self.labels.any(1)
            return np.where(has, 1 + self.labels.argmax(1), 0).astype(np.int64)
        if task == "ordinal":
            return self.labels.sum(1).astype(np.int64)
        raise ValueError(f"unknown task {task!r}; choose multilabel, multiclass or ordinal")


def read_study_table(studies: str | os.PathLike, classes: bool = True) -> StudyTable:
    """Read ``STUDIES/labels.csv`` (see module docstring); images must exist under ``images/``.

    ``studies`` may also be an NIH ChestX-ray14 or MIMIC-CXR(-JPG) root, read in place
    (:func:`gazerad.data.layouts.open_study_folder`). The table is read and checked by
    :class:`gazerad.data.study.StudyFolder` (the one reader: safe unique ids, 0/1 classes);
    training also needs a ``split`` column, one row, every image file and (``classes``) at
    least one class.
    """
    folder = open_study_folder(studies)
    t = folder.table.require(split=True, classes=classes, rows=True)
    paths = folder.image_paths()
    left_out = [name for _, name in getattr(folder, "missing", [])]
    return StudyTable(folder.root, list(t.names), paths, list(t.splits), list(t.classes), t.labels.copy(), left_out)


def view_seed(seed: int, epoch: int, index: int, view: int) -> int:
    """The seed of one view (deterministic, independent of workers and ranks)."""
    return derived_seed(seed, epoch, index, view)


class ViewAugment:
    """Photometric and flip augmentation of a cropped view ``(1, h, w)`` in ``[0, 1]``.

    Knee-style recipe of McGIP/GzPT (no colour jitter): horizontal flip (``flip_p``),
    Gaussian blur with sigma in ``blur_sigma`` (fraction of the view side x 10, i.e. 0.1-2 px
    at 224 px scaled to the view) with probability ``blur_p``, solarisation with ``solarize_p``,
    plus a mild brightness/contrast jitter (``jitter``; X-ray exposure varies).
    """

    def __init__(
        self,
        flip_p: float = 0.5,
        blur_p: float = 0.5,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: float = 0.2,
        jitter: float = 0.2,
    ) -> None:
        self.flip_p, self.blur_p, self.blur_sigma = flip_p, blur_p, blur_sigma
        self.solarize_p, self.jitter = solarize_p, jitter

    def __call__(self, x: torch.Tensor, rng: np.random.RandomState) -> torch.Tensor:
        if rng.rand() < self.flip_p:
            x = x.flip(-1)
        if self.jitter > 0:
            c = 1.0 + rng.uniform(-self.jitter, self.jitter)
            b = rng.uniform(-self.jitter, self.jitter) / 2
            x = ((x - 0.5) * c + 0.5 + b).clamp(0.0, 1.0)
        if rng.rand() < self.blur_p:
            sigma = rng.uniform(*self.blur_sigma) * x.shape[-1] / 224.0
            if sigma > 0.2:
                r = max(1, int(3 * sigma))
                k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
                k = k / k.sum()
                x = F.conv2d(F.pad(x[None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
                x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))[0]
        if rng.rand() < self.solarize_p:
            x = torch.where(x >= 0.5, 1.0 - x, x)
        return x


class TwoViewDataset(Dataset):
    """Two augmented views of each image and its row index: ``(view1, view2, index)``.

    Args:
        images: ``(N, 1, S, S)`` tensor in ``[0, 1]``.
        crop: an :class:`gazerad.attention.AttentionRandResizedCrop` (plain random resized crop
            when ``attention`` is ``None``).
        attention: optional ``(N, S, S)`` predicted attention maps (FocusContrast).
        augment: photometric augmentation after the crop.
        seed: run seed; call :meth:`set_epoch` at every epoch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        crop,  # noqa: ANN001 - AttentionRandResizedCrop
        attention: torch.Tensor | np.ndarray | None = None,
        augment: ViewAugment | None = None,
        seed: int = 0,
    ) -> None:
        self.images = images
        self.crop = crop
        self.attention = None if attention is None else torch.as_tensor(attention, dtype=torch.float32)
        if self.attention is not None and self.attention.shape[0] != images.shape[0]:
            raise ValueError(f"attention has {self.attention.shape[0]} maps for {images.shape[0]} images")
        self.augment = augment or ViewAugment()
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def view(self, index: int, view: int) -> torch.Tensor:
        rng = np.random.RandomState(view_seed(self.seed, self.epoch, index, view) % (2**32))
        self.crop.set_random_state(state=rng)
        att = None if self.attention is None else self.attention[index]
        v = torch.as_tensor(self.crop(self.images[index], att), dtype=torch.float32)
        return self.augment(v, rng)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.view(index, 0), self.view(index, 1), int(index)
