"""Row validation shared by the gaze importers (:mod:`gazerad.gaze.importers`).

:class:`Checker` turns one bad field or fixation into an :class:`~gazerad.errors.InputError`
(``strict``) or a count in ``collection.dropped`` under a reason key (the keys are listed in
the :mod:`~gazerad.gaze.importers` docstring); the other helpers look image sizes and
columns up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gazerad.errors import InputError
from gazerad.gaze.record import GazeCollection, GazeRecord

PathLike = str | os.PathLike
ImageSizes = Mapping[str, tuple[int, int]]

__all__ = ["MISSING_TEXT", "Checker", "ImageSizes", "PathLike", "find_column", "size_for", "truthy"]

MISSING_TEXT = {"", "nan", "na", "n/a", "none", "null"}


class Checker:
    """Row validation for one file: raise in strict mode, count drops otherwise."""

    def __init__(self, coll: GazeCollection, path: PathLike, strict: bool) -> None:
        self.coll = coll
        self.path = os.fspath(path)
        self.strict = strict

    def fail(self, reason: str, problem: str, row: int | None = None) -> None:
        if self.strict:
            raise InputError(self.path, problem, row=row)
        self.coll.count_dropped(reason)

    def numbers(self, row: int | None, fields: Sequence[tuple[str, Any]]) -> list[float] | None:
        """Parse ``(column, text)`` pairs; ``None`` (after fail) on the first bad one."""
        out = []
        for column, text in fields:
            if text is None or (isinstance(text, str) and text.strip().lower() in MISSING_TEXT):
                self.fail("missing_value", f"column {column!r} is empty/NaN", row)
                return None
            try:
                v = float(text.strip() if isinstance(text, str) else text)
            except (TypeError, ValueError):
                self.fail("non_numeric", f"column {column!r}: {text!r} is not a number", row)
                return None
            if not math.isfinite(v):
                self.fail("missing_value", f"column {column!r} is {text!r} (NaN/inf)", row)
                return None
            out.append(v)
        return out

    def accept(self, row: int | None, x: float, y: float, t0: float, t1: float, image_size: tuple[int, int] | None) -> bool:
        """Check duration and position of one fixation."""
        if t1 < t0:
            self.fail("negative_duration", f"negative fixation duration ({t0} -> {t1} s)", row)
            return False
        if not _inside(x, y, image_size):
            size = f"the {image_size[1]} x {image_size[0]} (W x H) image" if image_size else "the image (x, y >= 0)"
            self.fail("outside_image", f"point ({x:g}, {y:g}) lies outside {size}", row)
            return False
        return True

    def record(
        self,
        fixations: list[tuple[float, float, float, float]],
        image_id: str,
        reader_id: str,
        **kw: Any,
    ) -> GazeRecord | None:
        """Build a time-sorted record, or count/raise an empty one."""
        if not fixations:
            who = f" by reader {reader_id!r}" if reader_id else ""
            self.fail("empty_record", f"no valid fixation for image {image_id!r}{who}")
            return None
        f = np.asarray(fixations, dtype=np.float64).reshape(-1, 4)
        f = f[np.argsort(f[:, 2], kind="stable")]
        return GazeRecord(image_id=image_id, reader_id=reader_id, fixations=f, source=self.path, **kw)

    def add(self, fixations: list[tuple[float, float, float, float]], image_id: str, reader_id: str, **kw: Any) -> None:
        """:meth:`record`, added to the collection unless it is empty."""
        rec = self.record(fixations, image_id, reader_id, **kw)
        if rec is not None:
            self.coll.add(rec)


def _inside(x: float, y: float, image_size: tuple[int, int] | None) -> bool:
    if image_size is None:
        return x >= 0 and y >= 0
    h, w = image_size
    return 0 <= x < w and 0 <= y < h


def size_for(path: PathLike, image_sizes: ImageSizes | None, *keys: str, row: int | None = None) -> tuple[int, int] | None:
    """Look an image up in ``image_sizes`` by its candidate ids; a miss is an error."""
    if image_sizes is None:
        return None
    for k in keys:
        if k in image_sizes:
            hw = image_sizes[k]
            try:
                h, w = int(hw[0]), int(hw[1])
            except (TypeError, ValueError, IndexError):
                raise InputError(None, f"image_sizes[{k!r}] must be (height, width), got {hw!r}") from None
            if h <= 0 or w <= 0:
                raise InputError(None, f"image_sizes[{k!r}] must be positive (height, width), got {hw!r}")
            return h, w
    raise InputError(path, f"image_sizes has no entry for image {keys[0]!r} (wrong image id?)", row=row)


def truthy(text: str) -> bool:
    return text.strip().lower() in {"true", "1", "yes", "t", "y"}


def find_column(header: Sequence[str], *names: str) -> str | None:
    """First header entry matching one of ``names`` case-insensitively."""
    low = {h.lower(): h for h in header}
    for n in names:
        if n.lower() in low:
            return low[n.lower()]
    return None
