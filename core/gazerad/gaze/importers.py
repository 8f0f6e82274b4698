"""Importers for public gaze data formats, producing :class:`~gazerad.gaze.record.GazeCollection`.

Every importer returns a :class:`GazeCollection` of :class:`GazeRecord` in the
:mod:`gazerad.coords` convention: ``x`` = column, ``y`` = row, origin at the top-left corner
of the original image, original-image pixels; times in seconds. Fixations of a record are
sorted by start time.

Supported formats (see each function for the exact schema):

* **REFLACX** (:func:`load_reflacx`): a ``main_data`` folder with ``metadata_phase_*.csv``
  and one folder per reading holding ``fixations.csv`` (and ``gaze.csv``).
* **EGD-CXR** (:func:`load_egd_cxr`): ``fixations.csv`` (Gazepoint ``FPOG*`` columns) and
  optionally ``master_sheet.csv`` (screen paddings).
* **McGIP** (:func:`load_mcgip_csv`, :func:`load_mcgip_json`): gaze samples on an
  ``800 x 800`` canvas without timestamps.
* **Generic CSV** (:func:`load_generic_csv`): one row per fixation, columns named by the caller.
* **EyeLink EDF** (:func:`load_edf`): through the optional ``eyelinkio`` package.
* :func:`load_gaze` guesses the format from the path's layout and content.

Validation
----------
Missing files or columns, malformed metadata and unknown ids always raise
:class:`~gazerad.errors.InputError` naming the file (and the 1-based data row where there is
one). Problems in single fixation rows depend on ``strict``:

* ``strict=True``: the first bad row raises :class:`InputError` naming file and row;
* ``strict=False`` (default): the row is dropped and counted in ``collection.dropped``
  under one of these reason keys:

  ``"missing_value"``   an empty or NaN field;
  ``"non_numeric"``     a field that is not a number;
  ``"negative_duration"`` a fixation ending before it starts (or a negative duration);
  ``"outside_image"``   a point outside the image (``0 <= x < W``, ``0 <= y < H``; when the
  image size is unknown only ``x >= 0`` and ``y >= 0`` are checked);
  ``"invalid"``         a point the tracker marked invalid (EGD-CXR ``FPOGV == 0``);
  ``"empty_record"``    a record left with no valid fixation (the record is not added);
  ``"discarded_reading"`` a REFLACX reading with ``eye_tracking_data_discarded`` true;
  ``"missing_file"``    a REFLACX reading folder without ``fixations.csv`` (or without
  ``gaze.csv`` when samples are requested: the record is kept, without samples);
  ``"bad_metadata"``    a metadata row with an unusable image size (reading skipped);
  ``"bad_sample"``      a raw sample with a non-numeric field (REFLACX ``gaze.csv``).
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gazerad.data._table import read_rows
from gazerad.errors import InputError
from gazerad.gaze.record import GazeCollection, GazeRecord

__all__ = [
    "EGD_SCREEN",
    "MCGIP_CANVAS",
    "MCGIP_SAMPLE_DURATION",
    "load_reflacx",
    "load_egd_cxr",
    "load_mcgip_csv",
    "load_mcgip_json",
    "load_generic_csv",
    "load_edf",
    "load_gaze",
]

PathLike = str | os.PathLike
ImageSizes = Mapping[str, tuple[int, int]]

#: Screen of the EGD-CXR experiment, ``(width, height)`` in pixels.
EGD_SCREEN = (1920, 1080)
#: Side of McGIP's square gaze canvas in pixels.
MCGIP_CANVAS = 800
#: Default duration (s) given to each McGIP sample turned into a pseudo-fixation.
MCGIP_SAMPLE_DURATION = 0.25

_MISSING_TEXT = {"", "nan", "na", "n/a", "none", "null"}


# --------------------------------------------------------------------------- helpers


class _Checker:
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
            if text is None or (isinstance(text, str) and text.strip().lower() in _MISSING_TEXT):
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

    def accept(
        self, row: int | None, x: float, y: float, t0: float, t1: float, image_size: tuple[int, int] | None
    ) -> bool:
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


def _inside(x: float, y: float, image_size: tuple[int, int] | None) -> bool:
    if image_size is None:
        return x >= 0 and y >= 0
    h, w = image_size
    return 0 <= x < w and 0 <= y < h


def _size_for(
    path: PathLike, image_sizes: ImageSizes | None, *keys: str, row: int | None = None
) -> tuple[int, int] | None:
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


def _truthy(text: str) -> bool:
    return text.strip().lower() in {"true", "1", "yes", "t", "y"}


def _col(header: Sequence[str], *names: str) -> str | None:
    """First header entry matching one of ``names`` case-insensitively."""
    low = {h.lower(): h for h in header}
    for n in names:
        if n.lower() in low:
            return low[n.lower()]
    return None


# --------------------------------------------------------------------------- REFLACX

_META_REQUIRED = ["id", "image", "image_size_x", "image_size_y", "eye_tracking_data_discarded"]
_FIX_REQUIRED = ["timestamp_start_fixation", "timestamp_end_fixation", "x_position", "y_position"]
_GAZE_REQUIRED = ["timestamp_sample", "x_position", "y_position"]
_PPD_COLUMNS = ["angular_resolution_x_pixels_per_degree", "angular_resolution_y_pixels_per_degree"]
_READING_ID = re.compile(r"^P\d(\d{2})R\d+$")


def _reflacx_image_id(row: dict[str, str]) -> str:
    name = row["image"].strip().replace("\\", "/").rsplit("/", 1)[-1]
    if name.lower().endswith(".dcm"):
        dicom = row.get("dicom_id", "").strip()
        return dicom or name[:-4]
    return name


def _reflacx_reader(row: dict[str, str]) -> str:
    rad = row.get("radiologist", "").strip()
    if rad:
        return rad
    m = _READING_ID.match(row["id"].strip())
    if m:
        return f"R{int(m.group(1))}"
    return row["id"].strip()


def _reflacx_size(row: dict[str, str]) -> tuple[int, int] | None:
    """``(height, width)`` from a metadata row, ``None`` when unusable."""
    try:
        w, h = float(row["image_size_x"]), float(row["image_size_y"])
    except ValueError:
        return None
    if not (math.isfinite(w) and math.isfinite(h)) or w <= 0 or h <= 0 or w != int(w) or h != int(h):
        return None
    return int(h), int(w)


def _selected_images(images: Iterable[str] | PathLike | None) -> set[str] | None:
    if images is None:
        return None
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if not folder.is_dir():
            raise InputError(folder, "images must be a folder of images or a collection of image ids")
        names = [p.name for p in folder.iterdir() if p.is_file()]
        return set(names) | {n.rsplit(".", 1)[0] for n in names}
    return {str(i) for i in images}


def load_reflacx(
    main_data: PathLike,
    images: Iterable[str] | PathLike | None = None,
    with_samples: bool = False,
    strict: bool = False,
    include_discarded: bool = False,
) -> GazeCollection:
    """Load a REFLACX ``main_data`` folder.

    Schema:

    * ``metadata_phase_{1,2,3}.csv``: ``id`` (reading id, also the reading's folder name),
      ``image`` (image path), ``image_size_x`` (width), ``image_size_y`` (height),
      ``eye_tracking_data_discarded`` (``True``/``False``), ``split``; optional
      ``dicom_id`` and ``radiologist``.
    * ``<id>/fixations.csv``: ``timestamp_start_fixation``, ``timestamp_end_fixation`` (s),
      ``x_position``, ``y_position`` (original-image pixels); optional
      ``angular_resolution_{x,y}_pixels_per_degree``.
    * ``<id>/gaze.csv`` (``with_samples``): ``timestamp_sample`` (s), ``x_position``,
      ``y_position``; empty positions (tracker lost the eye) become NaN.

    Decisions:

    * ``image_id`` is the file name of ``image`` (``00000001_000.png`` for GazeRad's
      synthetic sets). When that file is a DICOM (``.dcm``, the MIMIC-CXR paths of real
      REFLACX) the ``dicom_id`` column is used when present, else the file stem.
    * ``reader_id`` is the ``radiologist`` column when present; otherwise it is derived from
      a reading id of the form ``P<phase><2-digit radiologist>R<n>`` as ``"R<radiologist>"``;
      otherwise it is the reading id itself.
    * ``pixels_per_degree`` is the mean of both angular-resolution columns over all rows.
    * ``screen`` holds ``{"reading_id", "split", "phase"}``.
    * Raw samples are not range-checked (the eye may leave the image); a sample with an
      empty timestamp or a non-numeric field is dropped (``"bad_sample"``).

    Args:
        main_data: the folder holding ``metadata_phase_*.csv``.
        images: keep only these image ids (a collection of ids, or a folder whose file names
            - with or without extension - are the ids); ``None`` keeps all.
        with_samples: also read ``gaze.csv`` into ``record.samples`` ``[t, x, y]``.
        strict: raise on the first bad row instead of dropping it.
        include_discarded: keep readings flagged ``eye_tracking_data_discarded``.

    Raises:
        InputError: no metadata file, missing columns, or (strict) any bad row/file.
    """
    root = Path(main_data)
    if not root.is_dir():
        raise InputError(root, "is not a folder (expected a REFLACX main_data folder)")
    files = sorted(root.glob("metadata_phase_*.csv"))
    if not files:
        raise InputError(root, "no metadata_phase_*.csv files (is this a REFLACX main_data folder?)")
    keep = _selected_images(images)
    coll = GazeCollection()
    for meta in files:
        _, rows = read_rows(meta, _META_REQUIRED)
        phase = meta.stem.rsplit("_", 1)[-1]
        mchk = _Checker(coll, meta, strict)
        for i, row in enumerate(rows, start=1):
            rid = row["id"].strip()
            if not rid:
                mchk.fail("bad_metadata", "empty reading id", i)
                continue
            image_id = _reflacx_image_id(row)
            if keep is not None and image_id not in keep and image_id.rsplit(".", 1)[0] not in keep:
                continue
            if _truthy(row["eye_tracking_data_discarded"]) and not include_discarded:
                coll.count_dropped("discarded_reading")
                continue
            size = _reflacx_size(row)
            if size is None:
                problem = f"image_size_x/y {row['image_size_x']!r} x {row['image_size_y']!r} is not a positive integer size"
                mchk.fail("bad_metadata", problem, i)
                continue
            rec = _reflacx_reading(coll, root / rid, image_id, _reflacx_reader(row), size, with_samples, strict)
            if rec is not None:
                rec.screen = {"reading_id": rid, "split": row.get("split", "").strip(), "phase": phase}
                coll.add(rec)
    return coll


def _reflacx_reading(
    coll: GazeCollection,
    folder: Path,
    image_id: str,
    reader_id: str,
    size: tuple[int, int],
    with_samples: bool,
    strict: bool,
) -> GazeRecord | None:
    fpath = folder / "fixations.csv"
    if not fpath.is_file():
        if strict:
            raise InputError(fpath, "file does not exist (reading listed in the metadata)")
        coll.count_dropped("missing_file")
        return None
    header, rows = read_rows(fpath, _FIX_REQUIRED)
    chk = _Checker(coll, fpath, strict)
    fix = []
    for i, r in enumerate(rows, start=1):
        v = chk.numbers(
            i,
            [
                ("x_position", r["x_position"]),
                ("y_position", r["y_position"]),
                ("timestamp_start_fixation", r["timestamp_start_fixation"]),
                ("timestamp_end_fixation", r["timestamp_end_fixation"]),
            ],
        )
        if v is not None and chk.accept(i, *v, size):
            fix.append(tuple(v))
    ppd = None
    if all(c in header for c in _PPD_COLUMNS):
        vals = []
        for r in rows:
            for c in _PPD_COLUMNS:
                try:
                    vals.append(float(r[c]))
                except ValueError:
                    pass
        vals = [v for v in vals if math.isfinite(v) and v > 0]
        ppd = float(np.mean(vals)) if vals else None
    samples = None
    if with_samples:
        samples = _reflacx_samples(coll, folder / "gaze.csv", strict)
    return chk.record(fix, image_id, reader_id, image_size=size, samples=samples, pixels_per_degree=ppd)


def _reflacx_samples(coll: GazeCollection, gpath: Path, strict: bool) -> np.ndarray | None:
    if not gpath.is_file():
        if strict:
            raise InputError(gpath, "file does not exist (with_samples=True)")
        coll.count_dropped("missing_file")
        return None
    _, rows = read_rows(gpath, _GAZE_REQUIRED)
    chk = _Checker(coll, gpath, strict)
    out = []
    for i, r in enumerate(rows, start=1):
        vals = []
        for c in _GAZE_REQUIRED:
            text = r[c].strip()
            if text.lower() in _MISSING_TEXT:
                vals.append(math.nan)
                continue
            try:
                vals.append(float(text))
            except ValueError:
                vals = None
                chk.fail("bad_sample", f"column {c!r}: {text!r} is not a number", i)
                break
        if vals is None:
            continue
        if not math.isfinite(vals[0]):
            chk.fail("bad_sample", "column 'timestamp_sample' is empty/NaN", i)
            continue
        if not (math.isfinite(vals[1]) and math.isfinite(vals[2])):
            vals[1] = vals[2] = math.nan
        out.append(vals)
    s = np.asarray(out, dtype=np.float64).reshape(-1, 3)
    return s[np.argsort(s[:, 0], kind="stable")]


# --------------------------------------------------------------------------- EGD-CXR

_EGD_REQUIRED = ["DICOM_ID", "FPOGX", "FPOGY", "FPOGS", "FPOGD", "FPOGV"]
_PAD_COLUMNS = ["image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad"]


def _egd_paddings(master_sheet_csv: PathLike) -> dict[str, dict[str, float]]:
    path = Path(master_sheet_csv)
    header, rows = read_rows(path, [])
    idcol = _col(header, "dicom_id")
    if idcol is None:
        raise InputError(path, f"missing column 'dicom_id'; found {[h for h in header if h]}")
    pads = {c: _col(header, c) for c in _PAD_COLUMNS}
    missing = [c for c, h in pads.items() if h is None]
    if missing:
        raise InputError(path, f"missing column(s) {missing}; found {[h for h in header if h]}")
    out = {}
    for i, r in enumerate(rows, start=1):
        vals = _Checker(GazeCollection(), path, True).numbers(i, [(c, r[h]) for c, h in pads.items()])
        assert vals is not None
        if any(v < 0 for v in vals):
            raise InputError(path, f"negative image padding {vals}", row=i)
        out[r[idcol].strip()] = dict(zip(_PAD_COLUMNS, vals))
    return out


def _egd_screen_to_image(
    fx: float, fy: float, pads: Mapping[str, float], size: tuple[int, int], screen: tuple[int, int] = EGD_SCREEN
) -> tuple[float, float]:
    """EGD-CXR screen fraction -> image pixel (see :func:`load_egd_cxr`)."""
    sw, sh = screen
    h, w = size
    area_w = sw - pads["image_left_pad"] - pads["image_right_pad"]
    area_h = sh - pads["image_top_pad"] - pads["image_bottom_pad"]
    s = min(area_w / w, area_h / h)
    x0 = pads["image_left_pad"] + (area_w - s * w) / 2.0
    y0 = pads["image_top_pad"] + (area_h - s * h) / 2.0
    return (fx * sw - x0) / s, (fy * sh - y0) / s


def load_egd_cxr(
    fixations_csv: PathLike,
    master_sheet_csv: PathLike | None = None,
    image_sizes: ImageSizes | None = None,
    strict: bool = False,
) -> GazeCollection:
    """Load EGD-CXR ``fixations.csv`` (one radiologist, reader id ``"EGD"``).

    Schema of ``fixations.csv`` (Gazepoint): ``DICOM_ID``; ``FPOGX``, ``FPOGY`` fixation point
    as a fraction of the 1920 x 1080 screen; ``FPOGS`` start (s); ``FPOGD`` duration (s);
    ``FPOGV`` valid flag (0/1); optional ``X_ORIGINAL``, ``Y_ORIGINAL`` (original-image
    pixels, -1 when the point is outside the image) and ``FPOGID`` (fixation id).
    ``master_sheet.csv``: ``dicom_id`` and the image paddings on screen ``image_top_pad``,
    ``image_bottom_pad``, ``image_left_pad``, ``image_right_pad`` (screen pixels).

    Decisions:

    * Positions are ``X_ORIGINAL``/``Y_ORIGINAL`` when these columns exist. Otherwise the
      screen point ``(FPOGX * 1920, FPOGY * 1080)`` is mapped to the image: the display area
      is the screen minus the paddings, ``[left, 1920 - right] x [top, 1080 - bottom]``; the
      ``W x H`` image is letterboxed into it (uniform scale
      ``s = min(area_w / W, area_h / H)``, centred; with EGD's paddings the image fills the
      area exactly), so ``x = (X_screen - left - (area_w - s W) / 2) / s`` and likewise for y.
      This needs ``master_sheet_csv`` and ``image_sizes``.
    * ``image_sizes`` maps ``DICOM_ID -> (height, width)``; with it, points are checked
      against the image and ``record.image_size`` is set.
    * Times: ``t_start = FPOGS``, ``t_end = FPOGS + FPOGD``, on the tracker's clock (not
      rebased to the image onset).
    * When ``FPOGID`` repeats within an image (Gazepoint writes a growing fixation over
      several rows), the row with the longest ``FPOGD`` is kept for that fixation.
    * ``FPOGV == 0`` rows are dropped as ``"invalid"``, ``X_ORIGINAL == -1`` (or a mapped
      point off the image) as ``"outside_image"``.

    Raises:
        InputError: missing columns, no way to get image coordinates, an id unknown to
            ``image_sizes`` or the master sheet, or (strict) a bad row.
    """
    path = Path(fixations_csv)
    header, rows = read_rows(path, _EGD_REQUIRED)
    has_orig = "X_ORIGINAL" in header and "Y_ORIGINAL" in header
    pads: dict[str, dict[str, float]] | None = None
    if not has_orig:
        if master_sheet_csv is None or image_sizes is None:
            raise InputError(
                path,
                "no X_ORIGINAL/Y_ORIGINAL columns: pass master_sheet_csv (paddings) and image_sizes "
                "{dicom_id: (H, W)} to map screen coordinates to the image",
            )
        pads = _egd_paddings(master_sheet_csv)
    coll = GazeCollection()
    chk = _Checker(coll, path, strict)
    has_id = "FPOGID" in header
    per_image: dict[str, dict[Any, tuple[int, float, tuple[float, float, float, float]]]] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    for i, r in enumerate(rows, start=1):
        dicom = r["DICOM_ID"].strip()
        if not dicom:
            chk.fail("missing_value", "column 'DICOM_ID' is empty", i)
            continue
        if dicom not in sizes:
            sizes[dicom] = _size_for(path, image_sizes, dicom, row=i)
            if pads is not None and dicom not in pads:
                raise InputError(master_sheet_csv, f"no row for DICOM_ID {dicom!r} (used in {path}, row {i})")
        size = sizes[dicom]
        v = chk.numbers(i, [(c, r[c]) for c in ("FPOGV", "FPOGS", "FPOGD")])
        if v is None:
            continue
        valid, t0, dur = v
        if valid == 0:
            chk.fail("invalid", "fixation marked invalid (FPOGV = 0)", i)
            continue
        if has_orig:
            xy = chk.numbers(i, [("X_ORIGINAL", r["X_ORIGINAL"]), ("Y_ORIGINAL", r["Y_ORIGINAL"])])
            if xy is None:
                continue
            x, y = xy
        else:
            fxy = chk.numbers(i, [("FPOGX", r["FPOGX"]), ("FPOGY", r["FPOGY"])])
            if fxy is None:
                continue
            assert pads is not None and size is not None
            x, y = _egd_screen_to_image(fxy[0], fxy[1], pads[dicom], size)
        if not chk.accept(i, x, y, t0, t0 + dur, size):
            continue
        fid: Any = r["FPOGID"].strip() if has_id and r["FPOGID"].strip() else ("row", i)
        fixes = per_image.setdefault(dicom, {})
        if fid not in fixes or dur > fixes[fid][1]:
            fixes[fid] = (i, dur, (x, y, t0, t0 + dur))
    for dicom in sizes:
        fixes = per_image.get(dicom, {})
        screen: dict[str, Any] = {"width": EGD_SCREEN[0], "height": EGD_SCREEN[1]}
        if pads is not None:
            screen.update(pads[dicom])
        rec = chk.record([f for _, _, f in fixes.values()], dicom, "EGD", image_size=sizes[dicom], screen=screen)
        if rec is not None:
            coll.add(rec)
    return coll


# --------------------------------------------------------------------------- McGIP


def _mcgip_record(
    chk: _Checker,
    row: int | None,
    points: Any,
    image_path: str,
    label: str,
    canvas: int,
    image_sizes: ImageSizes | None,
    sample_duration: float | None,
) -> GazeRecord | None:
    image_id = image_path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    if not image_id:
        raise InputError(chk.path, "empty image path", row=row)
    size = _size_for(chk.path, image_sizes, image_id, image_path, row=row)
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
    return chk.record(
        fix,
        image_id,
        "",
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
    chk = _Checker(coll, p, strict)
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
        r = _mcgip_record(chk, row, points, image_path, _parent_label(image_path), canvas, image_sizes, sample_duration)
        if r is not None:
            coll.add(r)
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
            obj = json.loads(f.read_text(encoding="utf-8-sig"))
        except UnicodeDecodeError:
            raise InputError(f, "is not a UTF-8 text file") from None
        except json.JSONDecodeError as e:
            raise InputError(f, f"invalid JSON ({e.msg} at line {e.lineno})") from None
        objs = obj if isinstance(obj, list) else [obj]
        chk = _Checker(coll, f, strict)
        for k, o in enumerate(objs, start=1):
            if not isinstance(o, dict) or "gaze" not in o:
                raise InputError(f, 'expected an object with a "gaze" list', row=k)
            img = str(o.get("img") or f.stem)
            label = str(o["gt"]) if o.get("gt") is not None else _parent_label(img)
            r = _mcgip_record(chk, k, o["gaze"], img, label, canvas, image_sizes, sample_duration)
            if r is not None:
                coll.add(r)
    return coll


# --------------------------------------------------------------------------- generic CSV


def load_generic_csv(
    path: PathLike,
    columns: Mapping[str, str],
    delimiter: str = ",",
    time_unit: Literal["s", "ms"] = "s",
    image_sizes: ImageSizes | None = None,
    strict: bool = False,
) -> GazeCollection:
    """Load a CSV with one fixation per row and caller-named columns.

    Args:
        path: the CSV (with a header row).
        columns: maps roles to column names: ``"image"``, ``"x"``, ``"y"``, ``"t_start"``,
            and exactly one of ``"t_end"`` / ``"duration"``; optional ``"reader"``.
            ``x``/``y`` are original-image pixels (``x`` = column, ``y`` = row, origin top-left).
        delimiter: field separator.
        time_unit: ``"s"`` or ``"ms"`` for the time columns (converted to seconds).
        image_sizes: ``{image_id: (height, width)}``; when given, every image must be in it
            and points are checked against the image.
        strict: raise on the first bad row instead of dropping it.

    Rows are grouped by ``(image, reader)`` in order of first appearance; each group becomes
    one record sorted by start time (reader ``""`` without a reader column).

    Raises:
        InputError: bad ``columns``/``time_unit``, missing columns, an image unknown to
            ``image_sizes``, or (strict) a bad row.
    """
    p = Path(path)
    roles = dict(columns)
    unknown = sorted(set(roles) - {"image", "x", "y", "t_start", "t_end", "duration", "reader"})
    if unknown:
        raise InputError(None, f"columns: unknown role(s) {unknown}")
    missing = [k for k in ("image", "x", "y", "t_start") if k not in roles]
    if missing:
        raise InputError(None, f"columns: missing role(s) {missing}")
    if ("t_end" in roles) == ("duration" in roles):
        raise InputError(None, "columns: give exactly one of 't_end' and 'duration'")
    if time_unit not in ("s", "ms"):
        raise InputError(None, f"time_unit must be 's' or 'ms', got {time_unit!r}")
    scale = 1e-3 if time_unit == "ms" else 1.0
    _, rows = read_rows(p, list(roles.values()), delimiter=delimiter)
    coll = GazeCollection()
    chk = _Checker(coll, p, strict)
    end_role = "t_end" if "t_end" in roles else "duration"
    groups: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    sizes: dict[str, tuple[int, int] | None] = {}
    for i, r in enumerate(rows, start=1):
        image = r[roles["image"]].strip()
        reader = r[roles["reader"]].strip() if "reader" in roles else ""
        if not image:
            chk.fail("missing_value", f"column {roles['image']!r} is empty", i)
            continue
        if image not in sizes:
            sizes[image] = _size_for(p, image_sizes, image, row=i)
        groups.setdefault((image, reader), [])
        v = chk.numbers(i, [(roles[k], r[roles[k]]) for k in ("x", "y", "t_start", end_role)])
        if v is None:
            continue
        x, y, t0, t1 = v[0], v[1], v[2] * scale, v[3] * scale
        if end_role == "duration":
            t1 = t0 + t1
        if chk.accept(i, x, y, t0, t1, sizes[image]):
            groups[(image, reader)].append((x, y, t0, t1))
    for (image, reader), fix in groups.items():
        rec = chk.record(fix, image, reader, image_size=sizes[image])
        if rec is not None:
            coll.add(rec)
    return coll


# --------------------------------------------------------------------------- EyeLink EDF


def _import_eyelinkio() -> Any:
    try:
        import eyelinkio
    except ImportError:
        raise ImportError(
            "reading EyeLink EDF files needs the optional package eyelinkio: pip install 'gazerad[edf]'"
        ) from None
    return eyelinkio


def load_edf(
    path: PathLike,
    image_id: str,
    screen_to_image: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    | tuple[float, float, float, float],
    image_size: tuple[int, int] | None = None,
    reader_id: str = "",
    strict: bool = False,
    with_samples: bool = False,
    eye: Literal["auto", "left", "right"] = "auto",
    time_window: tuple[float, float] | None = None,
) -> GazeCollection:
    """Load the fixations of an EyeLink ``.edf`` recording as one record (needs ``eyelinkio``).

    The fixations are the EDF's own discrete fixation events (``stime``, ``etime`` in s from
    the start of the recording; ``axp``, ``ayp`` mean position in screen pixels). Raw
    samples (``xpos``/``ypos``, NaN while the eye is lost) are read when ``with_samples``.

    Args:
        path: the ``.edf`` file.
        image_id: id of the image shown.
        screen_to_image: either a callable ``(x_screen, y_screen) -> (x_img, y_img)`` taking
            and returning arrays, or a tuple ``(scale_x, scale_y, offset_x, offset_y)``
            meaning ``x_img = scale_x * x_screen + offset_x`` and
            ``y_img = scale_y * y_screen + offset_y``.
        image_size: ``(height, width)`` of the image; points outside it are dropped
            (without it only negative coordinates are).
        reader_id: the reader.
        strict: raise on the first bad fixation instead of dropping it.
        with_samples: also read raw samples into ``record.samples`` ``[t, x, y]`` (mapped).
        eye: for binocular recordings, which eye's events and samples to use; ``"auto"``
            uses the recorded eye, and the left eye of binocular recordings.
        time_window: ``(t0, t1)`` in s: keep fixations starting in ``[t0, t1)`` (and samples
            in it) and rebase times to ``t0`` - for recordings that show several images.

    The "row" of an error is the 1-based index of the fixation event in the EDF.

    Raises:
        ImportError: ``eyelinkio`` is not installed.
        InputError: the file is missing or unreadable, has no fixation events, or (strict)
            a fixation is bad.
    """
    eyelinkio = _import_eyelinkio()
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file does not exist")
    mapper = _edf_mapper(screen_to_image)
    try:
        edf = eyelinkio.read_edf(str(p))
    except Exception as e:  # eyelinkio raises bare exceptions for corrupt files
        raise InputError(p, f"cannot read EyeLink EDF ({type(e).__name__}: {e})") from None
    info = edf["info"]
    recorded = str(info.get("eye", "")).upper()
    if eye == "auto":
        eye_name = "right" if recorded.startswith("RIGHT") else "left"
    elif eye in ("left", "right"):
        eye_name = eye
    else:
        raise InputError(None, f"eye must be 'auto', 'left' or 'right', got {eye!r}")
    if recorded in ("LEFT_EYE", "RIGHT_EYE") and not recorded.startswith(eye_name.upper()):
        raise InputError(p, f"recorded {recorded}, no data for the {eye_name} eye")
    fixev = edf["discrete"].get("fixations")
    if fixev is None or len(fixev) == 0:
        raise InputError(p, "no fixation events in the EDF (were events recorded?)")
    coll = GazeCollection()
    chk = _Checker(coll, p, strict)
    t_shift = 0.0
    sel = np.ones(len(fixev), dtype=bool)
    if recorded == "BINOCULAR":
        sel &= fixev["eye"] == (0 if eye_name == "left" else 1)
    if time_window is not None:
        t_shift = float(time_window[0])
        sel &= (fixev["stime"] >= time_window[0]) & (fixev["stime"] < time_window[1])
    idx = np.flatnonzero(sel)
    xs, ys = mapper(fixev["axp"][idx].astype(np.float64), fixev["ayp"][idx].astype(np.float64))
    fix = []
    for k, x, y in zip(idx, np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)):
        row = int(k) + 1
        v = chk.numbers(
            row, [("x", x), ("y", y), ("stime", fixev["stime"][k] - t_shift), ("etime", fixev["etime"][k] - t_shift)]
        )
        if v is not None and chk.accept(row, *v, image_size):
            fix.append(tuple(v))
    samples = None
    if with_samples:
        samples = _edf_samples(edf, eye_name, recorded, mapper, time_window)
    screen = {"screen_coords": [int(c) for c in np.asarray(info.get("screen_coords", [])).ravel()], "eye": eye_name}
    rec = chk.record(fix, image_id, reader_id, image_size=image_size, samples=samples, screen=screen)
    if rec is not None:
        coll.add(rec)
    return coll


def _edf_mapper(
    screen_to_image: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    | tuple[float, float, float, float],
) -> Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if callable(screen_to_image):
        return screen_to_image
    try:
        sx, sy, ox, oy = (float(v) for v in screen_to_image)
    except (TypeError, ValueError):
        raise InputError(
            None, f"screen_to_image must be a callable or (scale_x, scale_y, offset_x, offset_y), got {screen_to_image!r}"
        ) from None
    return lambda x, y: (sx * x + ox, sy * y + oy)


def _edf_samples(
    edf: Any,
    eye_name: str,
    recorded: str,
    mapper: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
    time_window: tuple[float, float] | None,
) -> np.ndarray:
    fields = list(edf["info"]["sample_fields"])
    suffix = f"_{eye_name}" if recorded == "BINOCULAR" else ""
    s = edf["samples"]
    x = np.asarray(s[fields.index("xpos" + suffix)], dtype=np.float64)
    y = np.asarray(s[fields.index("ypos" + suffix)], dtype=np.float64)
    t = np.asarray(edf["times"], dtype=np.float64)
    if time_window is not None:
        keep = (t >= time_window[0]) & (t < time_window[1])
        t, x, y = t[keep] - time_window[0], x[keep], y[keep]
    xi, yi = mapper(x, y)
    return np.column_stack([t, np.asarray(xi, dtype=float), np.asarray(yi, dtype=float)])


# --------------------------------------------------------------------------- dispatch

_LOADERS: dict[str, Callable[..., GazeCollection]] = {
    "reflacx": load_reflacx,
    "egd": load_egd_cxr,
    "mcgip_csv": load_mcgip_csv,
    "mcgip_json": load_mcgip_json,
    "generic": load_generic_csv,
    "edf": load_edf,
}


def _detect(p: Path, kw: Mapping[str, Any]) -> str:
    if p.is_dir():
        if any(p.glob("metadata_phase_*.csv")):
            return "reflacx"
        if any(p.glob("*.json")):
            return "mcgip_json"
        raise InputError(p, "cannot tell the gaze format: neither a REFLACX main_data folder nor a folder of McGIP JSON")
    if not p.is_file():
        raise InputError(p, "file does not exist")
    if p.name.startswith("metadata_phase_") and p.suffix.lower() == ".csv":
        return "reflacx"  # a file of the REFLACX folder layout: the folder is read
    if "columns" in kw:
        return "generic"
    from gazerad.gaze.formats import sniff_gaze_file

    fmt = sniff_gaze_file(p)
    if fmt not in _LOADERS or fmt == "generic":  # generic: its columns are not known without columns=
        hint = ("read the REFLACX main_data folder (load_reflacx), or upload the file to the server" if fmt == "reflacx_fixations"
                else "a generic CSV needs columns= (x, y, t_start, t_end, image)" if fmt == "generic"
                else "GazeRad's own JSON: gazerad.gaze.store.read_gaze_json reads it")
        raise InputError(p, f"this is a {fmt} file: {hint}")
    return fmt


def load_gaze(path: PathLike, format: str = "auto", **kw: Any) -> GazeCollection:
    """Load gaze data of any supported format.

    ``format="auto"`` decides by layout and content: a study folder written by
    ``gazerad synth`` reads its ``reflacx/main_data``; a folder with ``metadata_phase_*.csv``
    (or such a file) is REFLACX (the folder is passed to :func:`load_reflacx`); a folder of
    ``*.json`` or a ``.json`` file is McGIP JSON; ``.edf`` is EyeLink; a CSV whose header has
    ``DICOM_ID``, ``FPOGX``, ``FPOGY`` is EGD-CXR; a ``;``-separated line with >= 3 fields is
    McGIP CSV; with ``columns=`` a CSV is generic. Explicit formats: ``"reflacx"``, ``"egd"``,
    ``"mcgip_csv"``, ``"mcgip_json"``, ``"generic"``, ``"edf"``.

    Args:
        path: file or folder.
        format: ``"auto"`` or one of the explicit formats.
        **kw: passed to the format's loader (e.g. ``image_id`` and ``screen_to_image`` for EDF).

    Raises:
        InputError: unknown format, or a layout that matches none.
    """
    p = Path(path)
    # a GazeRad study folder (gazerad synth) keeps its gaze under reflacx/main_data
    if p.is_dir() and format in ("auto", "reflacx") and any((p / "reflacx" / "main_data").glob("metadata_phase_*.csv")):
        p = p / "reflacx" / "main_data"
    fmt = _detect(p, kw) if format == "auto" else format
    if fmt not in _LOADERS:
        raise InputError(None, f"unknown gaze format {format!r}; expected 'auto' or one of {sorted(_LOADERS)}")
    if fmt == "reflacx" and p.is_file():
        p = p.parent
    return _LOADERS[fmt](p, **kw)
