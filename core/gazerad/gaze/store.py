"""Gaze recordings stored beside images: one canonical JSON file per image.

Used by the MONAI Label app (gaze uploaded through the label API) and by anything that
keeps gaze next to a folder of X-rays. An upload in any supported format is parsed
*strictly* (a bad row, a point outside the image, an empty recording are errors naming the
file), re-keyed to the target image and written atomically as::

    {"format": "gazerad-gaze", "version": 1, "image_id": "IM0001",
     "records": [{"reader_id": "r1", "fixations": [[x, y, t_start, t_end], ...],
                  "image_size": [H, W], "pixels_per_degree": 38.2, "source_format": "mcgip_json"}]}

Accepted upload formats: this canonical JSON, McGIP JSON / ``;``-CSV, EGD-CXR CSV, EyeLink
EDF, a REFLACX ``fixations.csv`` (one reading), and a generic CSV with columns
``x, y, t_start, t_end`` (or ``duration``), optional ``reader``, times in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from gazerad.data.study import check_image_id
from gazerad.errors import InputError
from gazerad.gaze._checks import MAX_PPD, MAX_SECONDS, TIME_RULE, image_size_of, ppd_ok, times_ok
from gazerad.gaze.formats import CANONICAL as FORMAT
from gazerad.gaze.formats import json_loads as _json_loads
from gazerad.gaze.formats import sniff_gaze_file
from gazerad.gaze.record import GazeCollection, GazeRecord
from gazerad.io.atomic import atomic_write_text
from gazerad.io.confine import UnsafeName, confine, is_safe_name

__all__ = [
    "FORMAT",
    "MAX_SECONDS",
    "is_safe_id",
    "parse_gaze_upload",
    "write_gaze_json",
    "read_gaze_json",
    "GazeStore",
    "default_pixels_per_degree",
]

_VERSION = 1
# a chest film read on a diagnostic monitor subtends about 25 degrees of visual angle vertically
_DEFAULT_FIELD_DEG = 25.0


def default_pixels_per_degree(image_size: tuple[int, int]) -> float:
    """The pixels-per-degree assumed when a recording does not say: image height / 25 deg."""
    return float(image_size[0]) / _DEFAULT_FIELD_DEG


# MAX_SECONDS (the longest recording, seconds) is gazerad.gaze._checks's, shared by every gaze reader


def _check_fixations(path: Path, f: np.ndarray, image_size: tuple[int, int] | None, row: int | None = None) -> None:
    """The content rule of every stored or uploaded recording: ``(N, 4)`` finite numbers,
    times within :data:`~gazerad.gaze._checks.TIME_RULE`, points inside the ``(H, W)``
    image (``x, y >= 0`` when its size is unknown). InputError naming ``path`` and ``row``."""
    if f.ndim != 2 or f.shape[1] < 4:
        raise InputError(path, "each fixation needs x, y, t_start, t_end", row=row)
    fin = np.isfinite(f[:, :4]).all(axis=1)
    if not fin.all():
        i = int(np.argmin(fin))
        raise InputError(path, f"fixation {i + 1} holds a value that is not a finite number: {f[i, :4].tolist()}", row=row)
    t_bad = ~times_ok(f[:, 2], f[:, 3])
    if t_bad.any():
        i = int(np.argmax(t_bad))
        raise InputError(path, f"fixation {i + 1} times ({f[i, 2]:g} .. {f[i, 3]:g} s) must satisfy {TIME_RULE}", row=row)
    h, w = image_size if image_size is not None else (np.inf, np.inf)
    bad = ~((f[:, 0] >= 0) & (f[:, 0] < w) & (f[:, 1] >= 0) & (f[:, 1] < h))
    if bad.any():
        i = int(np.argmax(bad))
        where = f"the {w} x {h} image" if image_size is not None else "the image (x, y >= 0)"
        raise InputError(path, f"fixation {i + 1} at (x={f[i, 0]:.1f}, y={f[i, 1]:.1f}) lies outside {where}", row=row)


def _check_ppd(path: Path, v: object, row: int | None = None) -> float | None:
    """``v`` (``None``: not given) as a pixels-per-degree figure in ``(0, MAX_PPD]``."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not ppd_ok(float(v)):
        raise InputError(path, f"pixels_per_degree must be a positive finite number up to {MAX_PPD:g}, got {v!r}", row=row)
    return float(v)


def _fixation_table(path: Path, value: object, row: int) -> np.ndarray:
    """A canonical record's ``fixations``: a list of ``[x, y, t_start, t_end]`` numbers."""
    rows = value if isinstance(value, list) else None
    if rows is None or not all(isinstance(q, list) and len(q) == 4 and all(type(v) in (int, float) for v in q) for q in rows):
        raise InputError(path, "'fixations' must be a list of [x, y, t_start, t_end] numbers", row=row)
    try:
        return np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    except OverflowError:
        raise InputError(path, "'fixations' holds a number too large for a float", row=row) from None


def _image_size(path: Path, value: object, row: int) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError(f"must be [H, W], got {value!r}")
        return image_size_of(*value)
    except ValueError as exc:
        raise InputError(path, f"'image_size' {exc}", row=row) from None


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise InputError(path, "is not a file" if path.exists() else "file does not exist")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "is not a UTF-8 text file") from None
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from None


def _canonical_record(path: Path, image_id: str, r: object, k: int) -> GazeRecord:
    """Record ``k`` (1-based) of a canonical file, checked by :func:`_check_fixations`."""
    if not isinstance(r, dict) or "fixations" not in r:
        raise InputError(path, "each record needs a 'fixations' list of [x, y, t_start, t_end]", row=k)
    reader = r.get("reader_id", "")
    if not isinstance(reader, str):
        raise InputError(path, f"'reader_id' must be text, got {type(reader).__name__}", row=k)
    fix = _fixation_table(path, r["fixations"], k)
    size = _image_size(path, r.get("image_size"), k)
    _check_fixations(path, fix, size, row=k)
    ppd = _check_ppd(path, r.get("pixels_per_degree"), k)
    fmt = r.get("source_format")
    try:
        return GazeRecord(
            image_id=image_id,
            reader_id=reader,
            fixations=fix,
            image_size=size,
            pixels_per_degree=ppd,
            source=str(path),
            screen={"source_format": fmt} if isinstance(fmt, str) else None,
        )
    except ValueError as exc:
        raise InputError(path, f"bad record: {exc}", row=k) from None


def _records_from_canonical(path: Path) -> list[GazeRecord]:
    obj = _json_loads(path, _read_text(path))
    if not isinstance(obj, dict) or obj.get("version") != _VERSION or not isinstance(obj.get("records"), list):
        raise InputError(path, f"GazeRad gaze JSON must have version {_VERSION} and a 'records' list")
    image_id = obj.get("image_id")
    image_id = "" if image_id is None else check_image_id(image_id, path)
    return [_canonical_record(path, image_id, r, k) for k, r in enumerate(obj["records"], start=1)]


def _load_any(path: Path, fmt: str, image_id: str, image_size: tuple[int, int], reader: str) -> list[GazeRecord]:
    from gazerad.gaze import importers as imp
    from gazerad.gaze.reflacx import read_reflacx_reading

    sizes = {image_id: image_size}
    if fmt == "canonical":
        return _records_from_canonical(path)
    if fmt == "reflacx_fixations":
        coll = GazeCollection()
        with tempfile.TemporaryDirectory() as td:
            shutil.copy(path, Path(td) / "fixations.csv")
            rec = read_reflacx_reading(coll, Path(td), image_id, reader, image_size, False, True)
        if rec is not None:
            rec.source = str(path)
        return [rec] if rec is not None else []
    if fmt == "generic":
        header = [h.strip() for h in path.read_text(encoding="utf-8-sig").splitlines()[0].split(",")]
        cols = {"x": "x", "y": "y", "t_start": "t_start"}
        cols["t_end" if "t_end" in header else "duration"] = "t_end" if "t_end" in header else "duration"
        if "reader" in header:
            cols["reader"] = "reader"
        if "image" not in header:
            # the generic loader groups by an image column: add one holding the target id
            with tempfile.TemporaryDirectory() as td:
                lines = path.read_text(encoding="utf-8-sig").splitlines()
                tmp = Path(td) / path.name
                tmp.write_text("\n".join([lines[0] + ",image"] + [ln + f",{image_id}" for ln in lines[1:] if ln.strip()]) + "\n")
                cols["image"] = "image"
                coll = imp.load_generic_csv(tmp, cols, image_sizes=sizes, strict=True)
                for r in coll.records():
                    r.source = str(path)
                return coll.records()
        cols["image"] = "image"
        return imp.load_generic_csv(path, cols, strict=True).records()
    if fmt == "edf":
        # an upload is recorded on the image itself: screen pixels are image pixels
        return imp.load_edf(path, image_id, (1.0, 1.0, 0.0, 0.0), image_size=image_size, reader_id=reader, strict=True).records()
    # McGIP / EGD-CXR name their image inside the file: size every image they name as the target
    coll = imp.load_gaze(path, format=fmt, strict=True, **({"image_sizes": _AnySize(image_size)} if fmt in ("mcgip_json", "mcgip_csv") else {}))
    return coll.records()


class _AnySize(dict):
    """``image_sizes`` mapping that answers one size for any image id (uploads are for one image)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self._size = size

    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> tuple[int, int]:
        return self._size

    def get(self, key: str, default: Any = None) -> tuple[int, int]:
        return self._size


def parse_gaze_upload(
    path: str | os.PathLike,
    image_id: str,
    image_size: tuple[int, int],
    reader_id: str | None = None,
    pixels_per_degree: float | None = None,
) -> list[GazeRecord]:
    """Parse an uploaded gaze file for one image, strictly.

    Args:
        path: the uploaded file (any format of the module docstring).
        image_id: the image the recording belongs to; every record is re-keyed to it.
        image_size: ``(H, W)`` of that image; every fixation must lie inside it.
        reader_id: overrides the readers named in the file (default: the file's, or ``"upload"``).
        pixels_per_degree: overrides the file's; records without one get
            :func:`default_pixels_per_degree`.

    Returns:
        one :class:`GazeRecord` per reader, each with at least one fixation.

    Raises:
        InputError: naming the file (and row) for an unknown format, bad numbers, NaN,
            fixations ending before they start, points outside the image, or no fixation.
    """
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise InputError(p, "gaze upload is empty or missing")
    fmt = sniff_gaze_file(p)
    try:
        recs = _load_any(p, fmt, image_id, tuple(image_size), reader_id or "upload")
    except InputError:
        raise  # already names the file and the problem
    except (ValueError, KeyError, TypeError, IndexError, OverflowError) as exc:
        raise InputError(p, f"cannot read gaze ({fmt}): {exc}") from None
    except RecursionError:
        raise InputError(p, f"cannot read gaze ({fmt}): nested too deeply") from None
    _check_ppd(p, pixels_per_degree)
    h, w = int(image_size[0]), int(image_size[1])
    out = []
    for k, r in enumerate(recs):
        f = r.fixations
        if len(f) == 0:
            continue
        if r.image_size is not None and tuple(r.image_size) != (h, w):
            raise InputError(p, f"recorded on a {r.image_size[1]} x {r.image_size[0]} image, but the image is {w} x {h} (W x H)")
        _check_fixations(p, f, (h, w))
        _check_ppd(p, r.pixels_per_degree)
        ppd = pixels_per_degree or r.pixels_per_degree or default_pixels_per_degree((h, w))
        rid = reader_id or r.reader_id or (f"upload{k + 1}" if len(recs) > 1 else "upload")
        if len(rid) > 128 or not rid.isprintable():
            raise InputError(p, f"reader id {rid[:40]!r} must be printable text of at most 128 characters")
        out.append(GazeRecord(image_id, rid, f, image_size=(h, w), pixels_per_degree=float(ppd), source=str(p)))
    if not out:
        raise InputError(p, "gaze upload holds no fixation")
    for r in out:
        r.screen = {"source_format": fmt}
    return out


def write_gaze_json(path: str | os.PathLike, image_id: str, records: Iterable[GazeRecord]) -> Path:
    """Write records of one image as canonical JSON, atomically (temp file + rename)."""
    recs = [
        {
            "reader_id": r.reader_id,
            "fixations": np.round(r.fixations, 6).tolist(),
            "image_size": list(r.image_size) if r.image_size else None,
            "pixels_per_degree": r.pixels_per_degree,
            "source_format": (r.screen or {}).get("source_format"),
        }
        for r in records
    ]
    atomic_write_text(path, json.dumps({"format": FORMAT, "version": _VERSION, "image_id": image_id, "records": recs}))
    return Path(path)


def read_gaze_json(path: str | os.PathLike) -> list[GazeRecord]:
    """Records of a canonical gaze JSON file, with the checks of an upload
    (:func:`_check_fixations`, pixels per degree, image size and id).

    Raises:
        InputError: naming the file (and the 1-based record as row) for anything else.
    """
    return _records_from_canonical(Path(path))


# one rule for every name from a request: gazerad.io.confine
is_safe_id = is_safe_name


class GazeStore:
    """A folder of canonical gaze files, one ``<image id>.json`` per image.

    Args:
        root: the folder (created on the first write).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def path(self, image_id: str) -> Path:
        try:
            return confine(self.root, image_id, "image id", ".json")
        except UnsafeName as exc:
            raise InputError(None, str(exc)) from None

    def has(self, image_id: str) -> bool:
        return self.path(image_id).is_file()

    def put(self, image_id: str, records: Iterable[GazeRecord], replace: bool = False) -> list[GazeRecord]:
        """Store (append to, or with ``replace`` overwrite) the image's readings; returns all stored."""
        recs = list(records)
        old = [] if replace or not self.has(image_id) else self.get(image_id)
        taken = {r.reader_id for r in old}
        for r in recs:
            base, n = r.reader_id, 2
            while r.reader_id in taken:
                r.reader_id = f"{base}-{n}"
                n += 1
            taken.add(r.reader_id)
        allr = old + recs
        write_gaze_json(self.path(image_id), image_id, allr)
        return allr

    def get(self, image_id: str) -> list[GazeRecord]:
        recs = read_gaze_json(self.path(image_id))
        for r in recs:
            r.image_id = image_id
        return recs

    def remove(self, image_id: str) -> None:
        p = self.path(image_id)
        if p.is_file():
            p.unlink()

    def image_ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json") if not p.name.startswith("."))

    def summary(self, image_id: str) -> dict[str, Any]:
        """``{"readers": [...], "fixations": n, "seconds": total fixation time}`` of one image."""
        recs = self.get(image_id)
        return {
            "readers": [r.reader_id for r in recs],
            "fixations": int(sum(len(r) for r in recs)),
            "seconds": round(float(sum(r.durations.sum() for r in recs)), 3),
        }

    def collection(self, rename: dict[str, str] | None = None) -> GazeCollection:
        """Every stored recording; ``rename`` maps stored ids to the ids wanted in the collection."""
        coll = GazeCollection()
        for i in self.image_ids():
            for r in self.get(i):
                r.image_id = (rename or {}).get(i, i)
                coll.add(r)
        return coll
