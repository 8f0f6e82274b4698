"""Row validation shared by the gaze readers: the importers (:mod:`gazerad.gaze.importers`)
and the canonical JSON / upload reader (:mod:`gazerad.gaze.store`).

The plausibility rules live here once: :func:`parse_float` (the number parser of every gaze
field), :func:`times_ok` (``0 <= t_start <= t_end <=`` :data:`MAX_SECONDS`),
:func:`ppd_ok` (``0 <`` pixels per degree ``<=`` :data:`MAX_PPD`), :func:`image_size_of`
(positive whole sides, at most :data:`MAX_IMAGE_PIXELS` pixels) and :func:`parse_bool`.

:class:`Checker` turns one bad field or fixation into an :class:`~gazerad.errors.InputError`
(``strict``) or a count in ``collection.dropped`` under a reason key (the keys are listed in
the :mod:`~gazerad.gaze.importers` docstring); the other helpers look image sizes and
columns up.
"""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gazerad.data._table import parse_float
from gazerad.data.study import check_image_id
from gazerad.errors import InputError
from gazerad.gaze.record import GazeCollection, GazeRecord
from gazerad.io.limits import MAX_PIXELS

PathLike = str | os.PathLike
ImageSizes = Mapping[str, tuple[int, int]]

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_PPD",
    "MAX_SECONDS",
    "MISSING_TEXT",
    "TIME_RULE",
    "Checker",
    "ImageSizes",
    "PathLike",
    "find_column",
    "image_size_of",
    "parse_bool",
    "parse_float",
    "ppd_ok",
    "size_for",
    "times_ok",
]

MISSING_TEXT = {"", "nan", "na", "n/a", "none", "null"}

# the longest recording (seconds): times beyond are a unit error or an attack
MAX_SECONDS = 24 * 3600.0
TIME_RULE = f"0 <= t_start <= t_end <= {MAX_SECONDS:g} s"
# the largest plausible pixels per degree of visual angle
MAX_PPD = 1e4
# the largest image: the image readers' bound
MAX_IMAGE_PIXELS = MAX_PIXELS

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def parse_bool(text: str) -> bool:
    """A boolean spelling (``True``/``False``, ``1``/``0``, ``yes``/``no``, ``t``/``f``,
    ``y``/``n``, any case); ValueError for anything else."""
    t = text.strip().lower()
    if t in _TRUE or t in _FALSE:
        return t in _TRUE
    raise ValueError(f"{text!r} is not a boolean (True/False)")


def times_ok(t0: Any, t1: Any) -> Any:
    """Whether fixation times satisfy :data:`TIME_RULE` (floats or arrays, elementwise)."""
    return (np.asarray(t0) >= 0) & (np.asarray(t0) <= t1) & (np.asarray(t1) <= MAX_SECONDS)


def ppd_ok(v: float) -> bool:
    """Whether ``v`` is a plausible pixels-per-degree figure (``0 < v <=`` :data:`MAX_PPD`)."""
    return math.isfinite(v) and 0 < v <= MAX_PPD


def _whole(v: object) -> int:
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a number")
    if isinstance(v, str):
        v = parse_float(v)
    try:
        return operator.index(v)  # type: ignore[arg-type]
    except TypeError:
        f = float(v)  # type: ignore[arg-type]
    if not f.is_integer():
        raise ValueError(f"{v!r} is not a whole number")
    return int(f)


def image_size_of(h: object, w: object) -> tuple[int, int]:
    """``(h, w)`` as positive whole numbers of at most :data:`MAX_IMAGE_PIXELS` pixels.

    Raises:
        ValueError: the problem, in words.
    """
    try:
        hh, ww = _whole(h), _whole(w)
    except (TypeError, ValueError):
        raise ValueError(f"image size {h!r} x {w!r} (H x W) is not two whole numbers") from None
    if hh <= 0 or ww <= 0 or hh * ww > MAX_IMAGE_PIXELS:
        raise ValueError(f"image size {hh} x {ww} (H x W) must be positive and at most {MAX_IMAGE_PIXELS} pixels")
    return hh, ww


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

    def image_id(self, image_id: str, row: int | None) -> str:
        """``image_id`` when it is a plain name (:func:`gazerad.data.study.check_image_id`,
        the check :meth:`GazeCollection.add` applies), checked where it is first read so
        that the error names this row before any lookup by it."""
        return check_image_id(image_id, self.path, row)

    def numbers(self, row: int | None, fields: Sequence[tuple[str, Any]]) -> list[float] | None:
        """Parse ``(column, text)`` pairs; ``None`` (after fail) on the first bad one."""
        out = []
        for column, text in fields:
            if text is None or (isinstance(text, str) and text.strip().lower() in MISSING_TEXT):
                self.fail("missing_value", f"column {column!r} is empty/NaN", row)
                return None
            try:
                v = parse_float(text)
            except ValueError:
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
        if not times_ok(t0, t1):
            self.fail("implausible_time", f"fixation times ({t0:g} .. {t1:g} s) must satisfy {TIME_RULE}", row)
            return False
        if not _inside(x, y, image_size):
            size = f"the {image_size[1]} x {image_size[0]} (W x H) image" if image_size else "the image (x, y >= 0)"
            self.fail("outside_image", f"point ({x:g}, {y:g}) lies outside {size}", row)
            return False
        return True

    def pixels_per_degree(self, row: int | None, column: str, text: str) -> float | None:
        """A pixels-per-degree field: ``None`` when empty, or (after fail) when not a number
        in ``(0,`` :data:`MAX_PPD` ``]``."""
        if text.strip().lower() in MISSING_TEXT:
            return None
        try:
            v = parse_float(text)
        except ValueError:
            v = math.nan
        if not ppd_ok(v):
            self.fail("bad_pixels_per_degree", f"column {column!r}: {text!r} is not a pixels-per-degree figure in (0, {MAX_PPD:g}]", row)
            return None
        return v

    def flag(self, row: int | None, column: str, text: str) -> float | None:
        """A 0/1 flag field (``1.0`` or ``0.0``); ``None`` (after fail) for anything else."""
        v = self.numbers(row, [(column, text)])
        if v is not None and v[0] not in (0.0, 1.0):
            self.fail("bad_flag", f"column {column!r}: {text!r} is not a 0/1 flag", row)
            return None
        return None if v is None else v[0]

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

    def add(self, fixations: list[tuple[float, float, float, float]], image_id: str, reader_id: str, row: int | None = None, **kw: Any) -> None:
        """:meth:`record`, added to the collection unless it is empty (``row``: where the
        image id was read, named if the id is refused)."""
        rec = self.record(fixations, image_id, reader_id, **kw)
        if rec is not None:
            self.coll.add(rec, row=row)


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
                return image_size_of(*hw)
            except (TypeError, ValueError) as exc:
                raise InputError(None, f"image_sizes[{k!r}] must be (height, width), got {hw!r}: {exc}") from None
    raise InputError(path, f"image_sizes has no entry for image {keys[0]!r} (wrong image id?)", row=row)


def find_column(header: Sequence[str], *names: str) -> str | None:
    """First header entry matching one of ``names`` case-insensitively."""
    low = {h.lower(): h for h in header}
    for n in names:
        if n.lower() in low:
            return low[n.lower()]
    return None
