"""A folder of X-rays as the MONAI Label app sees it: images, class labels, boxes and gaze.

The folder is MONAI Label's datastore (``studies``). Class labels and splits come from a
``labels.csv`` (NIH layout: ``Image Index``, ``split``, one 0/1 column per class) in the
folder or its parent (a ``gazerad synth`` study set served from ``STUDIES/images``);
``BBox_List_2017.csv`` likewise. Gaze comes from two places, merged per image: the study
set's own readings (``load_gaze`` of the parent) and recordings uploaded to the server,
kept as canonical JSON in ``<datastore>/labels/gaze/<image id>.json``
(:class:`gazerad.gaze.store.GazeStore`).

Image ids are MONAI Label's: the file name without its extension (``00000001_000`` for
``00000001_000.png``); tables keyed by file name are matched either way. The suffixes, the
id rule and the ``labels.csv`` reader are the study-folder layer's
(:mod:`gazerad.data.study`); :data:`IMAGE_SUFFIXES` is its suffix list
(:data:`gazerad.io.xray.SUPPORTED_SUFFIXES`), looked up on first use.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gazerad.data.study import LABELS_CSV, find_image, has_image_suffix, image_id_of, image_suffixes, read_labels_table
from gazerad.errors import InputError
from gazerad.gaze.record import GazeCollection
from gazerad.gaze.store import GazeStore, is_safe_id
from gazerad.io.atomic import atomic_path

__all__ = ["IMAGE_SUFFIXES", "DatastoreView", "is_safe_id", "image_id_of"]  # noqa: F822 - IMAGE_SUFFIXES: module __getattr__

GAZE_TAG = "gaze"


def __getattr__(name: str) -> Any:
    # IMAGE_SUFFIXES is gazerad.data.study.image_suffixes(): read from gazerad.io.xray on
    # first use, so importing this module does not import MONAI
    if name == "IMAGE_SUFFIXES":
        return image_suffixes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class DatastoreView:
    """Read-side view of a datastore folder (cheap to build: nothing is read until asked).

    Args:
        root: the datastore folder (MONAI Label's ``studies``).
    """

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # ------------------------------------------------------------------ images
    def images(self) -> dict[str, Path]:
        """``{image id: path}`` of every X-ray in the folder (sorted by file name): files with
        a supported suffix whose image id passes :func:`is_safe_id` (the ids the app serves)."""
        out = {}
        for p in sorted(self.root.iterdir()):
            if p.is_file() and has_image_suffix(p.name) and is_safe_id(image_id_of(p.name)):
                out.setdefault(image_id_of(p.name), p)
        return out

    def image_path(self, image_id: str) -> Path:
        """Path of one image; :class:`InputError` for an unsafe or unknown id."""
        if not is_safe_id(image_id):
            raise InputError(None, f"invalid image id {image_id!r} (ids are file names without a path)")
        p = find_image(self.root, image_id, exact=False)
        if p is not None:
            return p
        raise InputError(None, f"unknown image id {image_id!r}: no such image in the datastore")

    # ------------------------------------------------------------------ tables
    def _find(self, name: str) -> Path | None:
        for d in (self.root, self.root.parent):
            if (d / name).is_file():
                return d / name
        return None

    def labels(self) -> dict[str, Any]:
        """``{"classes": [...], "labels": {id: (C,) int64 0/1}, "splits": {id: split},
        "source": path}`` from ``labels.csv`` (:func:`gazerad.data.study.read_labels_table`;
        empty, ``source`` ``None``, when there is none). Keyed by image id."""
        p = self._find(LABELS_CSV)
        if p is None:
            return {"classes": [], "labels": {}, "splits": {}, "source": None}
        t = read_labels_table(p)
        rows = t.by_image_id()
        labels = {iid: t.labels[i].copy() for iid, i in rows.items()}
        splits = {iid: t.splits[i] for iid, i in rows.items()}
        return {"classes": list(t.classes), "labels": labels, "splits": splits, "source": str(p)}

    def boxes(self) -> dict[str, list[tuple[str, tuple[float, float, float, float]]]]:
        """NIH boxes by image id (``{}`` without a ``BBox_List_2017.csv``)."""
        from gazerad.data.nih import read_bbox_list

        p = self._find("BBox_List_2017.csv")
        return {image_id_of(k): v for k, v in read_bbox_list(p).items()} if p else {}

    # ------------------------------------------------------------------ gaze
    @property
    def gaze_store(self) -> GazeStore:
        return GazeStore(self.root / "labels" / GAZE_TAG)

    def gaze(self) -> GazeCollection:
        """Every reading keyed by image id: the study set's own (if any) plus uploads."""
        coll = GazeCollection()
        parent = self.root.parent
        if self.root.name == "images" and any((parent / "reflacx" / "main_data").glob("metadata_phase_*.csv")):
            from gazerad.gaze.importers import load_gaze

            for r in load_gaze(parent).records():
                r.image_id = image_id_of(r.image_id)
                coll.add(r)
        for r in self.gaze_store.collection().records():
            coll.add(r)
        return coll

    # ------------------------------------------------------------------ workspace
    def workspace(self, out: str | os.PathLike, need_labels: bool = True, id_names: bool = False) -> Path:
        """A study folder for the gazerad trainers: ``labels.csv`` (file names, or image ids
        with ``id_names``, splits, classes), ``images`` (a link to the datastore) and, where
        the datastore has boxes, ``BBox_List_2017.csv`` with the same names. Images
        without a label row get split ``unlabelled``. Raises :class:`InputError` when
        ``need_labels`` and no image has a label."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        imgs = self.images()
        lab = self.labels()
        classes = lab["classes"] or ["Finding"]
        if need_labels and not any(i in lab["labels"] for i in imgs):
            raise InputError(self.root, "no image has class labels: put a labels.csv (Image Index, split, one 0/1 column per class) beside the images")
        link = out / "images"
        if link.is_symlink():
            link.unlink()  # re-pointed on every call (the datastore may have moved)
        if not link.exists():
            os.symlink(self.root.resolve(), link, target_is_directory=True)
        with atomic_path(out / LABELS_CSV) as tmp, tmp.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["Image Index", "split", *classes])
            for iid, p in imgs.items():
                y = lab["labels"].get(iid)
                split = lab["splits"].get(iid, "train") if y is not None else "unlabelled"
                y = y if y is not None else np.zeros(len(classes), dtype=np.int64)
                w.writerow([iid if id_names else p.name, split, *[int(v) for v in y]])
        boxes = {iid: b for iid, b in self.boxes().items() if iid in imgs}
        if boxes:  # the trainer tunes box extraction on the validation boxes, the job scores the test boxes
            with atomic_path(out / "BBox_List_2017.csv") as tmp, tmp.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"])
                for iid, bs in boxes.items():
                    for label, (x, y_, bw, bh) in bs:
                        w.writerow([iid if id_names else imgs[iid].name, label, x, y_, bw, bh])
        elif (out / "BBox_List_2017.csv").exists():
            (out / "BBox_List_2017.csv").unlink()
        return out
