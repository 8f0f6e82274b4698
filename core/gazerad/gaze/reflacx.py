"""REFLACX importer (:func:`load_reflacx`): a ``main_data`` folder of metadata and readings.

The schema and the decisions are in :func:`load_reflacx`; the validation rules and the
``dropped`` reason keys are those of :mod:`gazerad.gaze.importers`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from gazerad.data._table import read_rows
from gazerad.data.study import check_image_id
from gazerad.errors import InputError
from gazerad.gaze._checks import MISSING_TEXT, Checker, PathLike, image_size_of, parse_bool, parse_float
from gazerad.gaze.record import GazeCollection, GazeRecord

__all__ = ["load_reflacx", "read_reflacx_reading"]

_META_REQUIRED = ["id", "image", "image_size_x", "image_size_y", "eye_tracking_data_discarded"]
_FIX_REQUIRED = ["timestamp_start_fixation", "timestamp_end_fixation", "x_position", "y_position"]
_FIX_ORDER = ("x_position", "y_position", "timestamp_start_fixation", "timestamp_end_fixation")  # as Checker.accept takes them
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


def _reflacx_size(row: dict[str, str]) -> tuple[int, int]:
    """``(height, width)`` from a metadata row; ValueError (the problem) when unusable."""
    try:
        return image_size_of(row["image_size_y"], row["image_size_x"])
    except ValueError as exc:
        raise ValueError(f"image_size_x/y {row['image_size_x']!r} x {row['image_size_y']!r}: {exc}") from None


def _reading_id(row: dict[str, str], meta: Path, i: int, seen: dict[str, str]) -> str:
    """The row's reading id (``""`` when empty): a plain name (it names the reading's
    folder), not listed before; ``seen`` maps the ids read so far to where they were."""
    rid = row["id"].strip()
    if rid:
        check_image_id(rid, meta, i, what="reading id")
        if rid in seen:
            raise InputError(meta, f"reading id {rid!r} is listed twice (first in {seen[rid]})", row=i)
        seen[rid] = f"{meta.name}, row {i}"
    return rid


def _discarded(row: dict[str, str], mchk: Checker, i: int) -> bool | None:
    """``eye_tracking_data_discarded`` of a row; ``None`` (after fail) when not a boolean."""
    try:
        return parse_bool(row["eye_tracking_data_discarded"])
    except ValueError as exc:
        mchk.fail("bad_metadata", f"column 'eye_tracking_data_discarded': {exc}", i)
        return None


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
    * ``pixels_per_degree`` is the mean of both angular-resolution columns over all rows;
      a value outside ``(0, 10000]`` (the upload's bound) is counted
      ``"bad_pixels_per_degree"`` and left out.
    * ``eye_tracking_data_discarded`` must be a boolean spelling (``True``/``False``, ...):
      anything else is a bad metadata row. Image sizes must be whole, positive and at most
      ``gazerad.io.xray.MAX_PIXELS`` pixels.
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
        InputError: no metadata file, missing columns, a reading id or image id that is not
            a plain name (:func:`gazerad.data.study.check_image_id`: no ``../x``, no path),
            a reading id listed twice (in one or two metadata files), or (strict) any bad
            row/file; it names the file and row.
    """
    root = Path(main_data)
    if not root.is_dir():
        raise InputError(root, "is not a folder (expected a REFLACX main_data folder)")
    files = sorted(root.glob("metadata_phase_*.csv"))
    if not files:
        raise InputError(root, "no metadata_phase_*.csv files (is this a REFLACX main_data folder?)")
    keep = _selected_images(images)
    coll = GazeCollection()
    seen: dict[str, str] = {}
    for meta in files:
        _, rows = read_rows(meta, _META_REQUIRED)
        phase = meta.stem.rsplit("_", 1)[-1]
        mchk = Checker(coll, meta, strict)
        for i, row in enumerate(rows, start=1):
            rid = _reading_id(row, meta, i, seen)
            if not rid:
                mchk.fail("bad_metadata", "empty reading id", i)
                continue
            image_id = mchk.image_id(_reflacx_image_id(row), i)
            if keep is not None and image_id not in keep and image_id.rsplit(".", 1)[0] not in keep:
                continue
            discarded = _discarded(row, mchk, i)
            if discarded is None:
                continue
            if discarded and not include_discarded:
                coll.count_dropped("discarded_reading")
                continue
            try:
                size = _reflacx_size(row)
            except ValueError as exc:
                mchk.fail("bad_metadata", str(exc), i)
                continue
            rec = read_reflacx_reading(coll, root / rid, image_id, _reflacx_reader(row), size, with_samples, strict)
            if rec is not None:
                rec.screen = {"reading_id": rid, "split": row.get("split", "").strip(), "phase": phase}
                coll.add(rec, source=meta, row=i)
    return coll


def _open_reading_file(coll: GazeCollection, path: Path, required: list[str], strict: bool, why: str) -> tuple[list[str], list[dict[str, str]], Checker] | None:
    """``(header, rows, checker)`` of a file of a reading folder; a missing file raises
    (``strict``, the message saying ``why`` it was expected) or is counted ``"missing_file"``."""
    if not path.is_file():
        if strict:
            raise InputError(path, f"file does not exist ({why})")
        coll.count_dropped("missing_file")
        return None
    header, rows = read_rows(path, required)
    return header, rows, Checker(coll, path, strict)


def read_reflacx_reading(
    coll: GazeCollection,
    folder: Path,
    image_id: str,
    reader_id: str,
    size: tuple[int, int],
    with_samples: bool,
    strict: bool,
) -> GazeRecord | None:
    """One reading folder's ``fixations.csv`` (and ``gaze.csv`` with ``with_samples``) as a
    record, or ``None`` when the file is missing (counted) or no fixation is valid.

    The rules of :func:`load_reflacx`; also used for single ``fixations.csv`` uploads to the
    server (:mod:`gazerad.gaze.store`).
    """
    opened = _open_reading_file(coll, folder / "fixations.csv", _FIX_REQUIRED, strict, "reading listed in the metadata")
    if opened is None:
        return None
    header, rows, chk = opened
    fix = []
    for i, r in enumerate(rows, start=1):
        v = chk.numbers(i, [(c, r[c]) for c in _FIX_ORDER])
        if v is not None and chk.accept(i, *v, size):
            fix.append(tuple(v))
    ppd = None
    if all(c in header for c in _PPD_COLUMNS):
        vals = [chk.pixels_per_degree(i, c, r[c]) for i, r in enumerate(rows, start=1) for c in _PPD_COLUMNS]
        ok = [v for v in vals if v is not None]
        ppd = float(np.mean(ok)) if ok else None
    samples = None
    if with_samples:
        samples = _reflacx_samples(coll, folder / "gaze.csv", strict)
    return chk.record(fix, image_id, reader_id, image_size=size, samples=samples, pixels_per_degree=ppd)


def _reflacx_samples(coll: GazeCollection, gpath: Path, strict: bool) -> np.ndarray | None:
    opened = _open_reading_file(coll, gpath, _GAZE_REQUIRED, strict, "with_samples=True")
    if opened is None:
        return None
    _, rows, chk = opened
    out = []
    for i, r in enumerate(rows, start=1):
        vals = []
        for c in _GAZE_REQUIRED:
            text = r[c].strip()
            if text.lower() in MISSING_TEXT:
                vals.append(math.nan)
                continue
            try:
                vals.append(parse_float(text))
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
