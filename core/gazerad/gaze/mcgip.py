"""McGIP importers (:func:`load_mcgip_csv`, :func:`load_mcgip_json`): gaze samples on a
square canvas, without timestamps, one pseudo-fixation per sample.

The schemas and the decisions are in :func:`load_mcgip_csv`; the validation rules and the
``dropped`` reason keys are those of :mod:`gazerad.gaze.importers`.
"""

from __future__ import annotations

import ast
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from gazerad.errors import InputError
from gazerad.gaze._checks import Checker, ImageSizes, PathLike, size_for
from gazerad.gaze.formats import json_loads
from gazerad.gaze.record import GazeCollection

__all__ = ["MCGIP_CANVAS", "MCGIP_SAMPLE_DURATION", "load_mcgip_csv", "load_mcgip_json"]

#: Side of McGIP's square gaze canvas in pixels.
MCGIP_CANVAS = 800
#: Default duration (s) given to each McGIP sample turned into a pseudo-fixation.
MCGIP_SAMPLE_DURATION = 0.25


def _add_mcgip_record(
    chk: Checker,
    row: int | None,
    points: Any,
    image_path: str,
    label: str,
    canvas: int,
    image_sizes: ImageSizes | None,
    sample_duration: float | None,
) -> None:
    """One viewing's points as pseudo-fixations (rules of :func:`load_mcgip_csv`), added to ``chk.coll``."""
    if image_path.endswith(("/", "\\")):
        raise InputError(chk.path, f"image path {image_path!r} names a folder, not an image file", row=row)
    image_id = image_path.replace("\\", "/").rsplit("/", 1)[-1]
    if not image_id:
        raise InputError(chk.path, "empty image path", row=row)
    size = size_for(chk.path, image_sizes, chk.image_id(image_id, row), image_path, row=row)
    dt = MCGIP_SAMPLE_DURATION if sample_duration is None else float(sample_duration)
    if not dt > 0:
        raise InputError(None, f"sample_duration must be > 0, got {sample_duration!r}")
    if not isinstance(points, (list, tuple)):
        raise InputError(chk.path, f"gaze must be a list of (x, y) points, got {type(points).__name__}", row=row)
    sx, sy = (1.0, 1.0) if size is None else (size[1] / canvas, size[0] / canvas)
    fix, samples = [], []
    for k, p in enumerate(points):
        t0 = k * dt
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise InputError(chk.path, f"gaze point {k} is {p!r}, expected (x, y)", row=row)
        v = chk.numbers(row, [(f"gaze[{k}].x", p[0]), (f"gaze[{k}].y", p[1])])
        if v is None or not (0 <= v[0] < canvas and 0 <= v[1] < canvas):
            if v is not None:
                chk.fail("outside_image", f"gaze point {k} ({v[0]:g}, {v[1]:g}) lies outside the {canvas} px canvas", row)
            samples.append((t0, math.nan, math.nan))
            continue
        x, y = v[0] * sx, v[1] * sy
        samples.append((t0, x, y))
        fix.append((x, y, t0, t0 + dt))
    chk.add(
        fix,
        image_id,
        "",
        row=row,
        image_size=size if size is not None else (canvas, canvas),
        samples=np.asarray(samples, dtype=np.float64).reshape(-1, 3),
        screen={"label": label, "image_path": image_path, "canvas": canvas, "coords": "image" if size else "canvas"},
    )


def _parent_label(image_path: str) -> str:
    parts = image_path.replace("\\", "/").rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def load_mcgip_csv(
    path: PathLike,
    canvas: int = MCGIP_CANVAS,
    image_sizes: ImageSizes | None = None,
    sample_duration: float | None = None,
    strict: bool = False,
) -> GazeCollection:
    """Load McGIP's own ``;``-separated gaze CSV.

    Schema: one line per viewing, fields separated by ``;``: field 0 the image path whose
    parent folder is the class label (``.../<label>/<image>``), field 1 unused, field 2 a
    Python-literal list ``[(x, y), ...]`` of gaze samples on a ``canvas x canvas`` (800 x 800)
    display, in time order, without timestamps. A first line whose field 2 does not start
    with ``[`` is taken for a header and skipped.

    Decisions:

    * The list is parsed with :func:`ast.literal_eval` (never ``eval``).
    * Each sample becomes a pseudo-fixation of equal duration ``dt = sample_duration``
      (default :data:`MCGIP_SAMPLE_DURATION` = 0.25 s, a typical fixation length, so that
      duration filters tuned for real fixations keep them): sample ``k`` spans
      ``[k dt, (k + 1) dt]``. ``record.samples`` holds all samples ``[k dt, x, y]`` (NaN for
      dropped ones).
    * Without ``image_sizes``, positions stay in canvas pixels and ``image_size`` is
      ``(canvas, canvas)``. With ``image_sizes`` (keyed by image file name, or by the full
      path of field 0) McGIP's canvas is taken as the image stretched to a square, so
      ``x_img = x * W / canvas`` and ``y_img = y * H / canvas``.
    * ``image_id`` is the file name of field 0, ``reader_id`` is ``""``, and
      ``record.screen`` is ``{"label", "image_path", "canvas", "coords"}``.
    * Samples outside the canvas or non-numeric are dropped (``"outside_image"``,
      ``"non_numeric"``, ``"missing_value"``).

    Raises:
        InputError: unreadable file, too few fields, a list that is not a valid literal, an
            image unknown to ``image_sizes``, or (strict) a bad sample; names file and row.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file does not exist")
    coll = GazeCollection()
    chk = Checker(coll, p, strict)
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            lines = list(csv.reader(fh, delimiter=";"))
    except UnicodeDecodeError:
        raise InputError(p, "is not a UTF-8 text/CSV file") from None
    except csv.Error as e:
        raise InputError(p, f"malformed CSV ({e})") from None
    data = [rec for rec in lines if any(c.strip() for c in rec)]
    if data and len(data[0]) >= 3 and not data[0][2].strip().startswith("["):
        data = data[1:]  # a header line
    if not data:
        raise InputError(p, "no gaze rows")
    for row, rec in enumerate(data, start=1):
        if len(rec) < 3:
            raise InputError(p, f"has {len(rec)} ';'-separated fields, expected at least 3", row=row)
        try:
            points = ast.literal_eval(rec[2].strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise InputError(p, "field 2 is not a Python list literal [(x, y), ...]", row=row) from None
        image_path = rec[0].strip()
        _add_mcgip_record(chk, row, points, image_path, _parent_label(image_path), canvas, image_sizes, sample_duration)
    return _one_label_per_image(coll, p)


def _one_label_per_image(coll: GazeCollection, path: Path) -> GazeCollection:
    """``coll`` when no image id comes with two labels (the same file name under two class
    folders would otherwise give one image two ground truths)."""
    seen: dict[str, tuple[str, str]] = {}
    for r in coll.records():
        label, where = r.screen["label"], r.screen["image_path"]
        first = seen.setdefault(r.image_id, (label, where))
        if first[0] != label:
            raise InputError(path, f"image {r.image_id!r} has two labels: {first[0]!r} ({first[1]}) and {label!r} ({where})")
    return coll


def load_mcgip_json(
    path_or_dir: PathLike,
    canvas: int = MCGIP_CANVAS,
    image_sizes: ImageSizes | None = None,
    sample_duration: float | None = None,
    strict: bool = False,
) -> GazeCollection:
    """Load McGIP JSON gaze files: a file or every ``*.json`` of a folder (sorted).

    Schema: an object ``{"gaze": [[x, y], ...], "img": "<path>", "gt": <label>}`` (or a list
    of such objects); points on the ``canvas x canvas`` display, in time order.

    Decisions are those of :func:`load_mcgip_csv`; ``image_id`` is the file name of ``img``
    (the JSON file's stem when ``img`` is absent); the label is ``gt`` (as a string), or the
    parent folder of ``img`` when ``gt`` is absent, kept in ``record.screen["label"]``.
    The "row" of an error is the 1-based object index inside the file.

    Raises:
        InputError: no JSON files, invalid JSON, a missing ``gaze`` key, an image unknown to
            ``image_sizes``, or (strict) a bad point.
    """
    root = Path(path_or_dir)
    if root.is_dir():
        files = sorted(root.glob("*.json"))
        if not files:
            raise InputError(root, "no *.json files")
    elif root.is_file():
        files = [root]
    else:
        raise InputError(root, "file does not exist")
    coll = GazeCollection()
    for f in files:
        try:
            text = f.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise InputError(f, "is not a UTF-8 text file") from None
        obj = json_loads(f, text)
        objs = obj if isinstance(obj, list) else [obj]
        chk = Checker(coll, f, strict)
        for k, o in enumerate(objs, start=1):
            if not isinstance(o, dict) or "gaze" not in o:
                raise InputError(f, 'expected an object with a "gaze" list', row=k)
            img = str(o.get("img") or f.stem)
            label = str(o["gt"]) if o.get("gt") is not None else _parent_label(img)
            _add_mcgip_record(chk, k, o["gaze"], img, label, canvas, image_sizes, sample_duration)
    return _one_label_per_image(coll, root)
