"""The study folder: its ``labels.csv``, its ``images/`` and the image-id rules.

Layout (what ``gazerad synth`` writes; real data in the same layout reads the same)::

    STUDIES/
        labels.csv   NIH layout, one row per image: ``Image Index``, an optional ``split``
                     and one 0/1 column per class; the other NIH columns
                     (:data:`METADATA_COLUMNS`: ``Finding Labels``, ``Patient ID``, ...) are
                     metadata, every other column is a class
        images/      the X-rays, any suffix of :data:`gazerad.io.xray.SUPPORTED_SUFFIXES`

Rules (every trainer, the server and the app use these, nothing else):

* ``Image Index`` is a file name (``00000001_000.png``) or an image id (``00000001_000``),
  and must be a plain name by :func:`gazerad.io.confine.check_name` (no folders).
* An image id is a file name without its supported suffix, the longest one matched,
  case-insensitively (``a.nii.gz`` -> ``a``): :func:`image_id_of`.
* An image is looked up in ``images/`` as named, then as ``<name><suffix>`` for each
  supported suffix in :data:`~gazerad.io.xray.SUPPORTED_SUFFIXES` order: :func:`find_image`.
* ``split`` is lower-cased; an empty cell, or no ``split`` column, means ``train``.
* A class cell is ``0`` or ``1`` (``0.0``/``1.0`` too); an empty cell is 0; anything else
  (``2``, ``0.5``, ``NaN``, text) is an error naming the file, the row and the column.
* An ``Image Index`` appears once.

The suffix table is read from :mod:`gazerad.io.xray` on first use, so importing this
module stays light (no MONAI/torch).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gazerad.data._table import read_rows
from gazerad.errors import InputError
from gazerad.io.confine import UnsafeName, check_name, is_safe_name

__all__ = [
    "LABELS_CSV",
    "IMAGES_DIR",
    "ID_COLUMN",
    "SPLIT_COLUMN",
    "FINDINGS_COLUMN",
    "METADATA_COLUMNS",
    "image_suffixes",
    "image_suffix",
    "has_image_suffix",
    "image_id_of",
    "check_image_id",
    "find_image",
    "is_study_folder",
    "LabelsTable",
    "read_labels_table",
    "StudyFolder",
]

LABELS_CSV = "labels.csv"
IMAGES_DIR = "images"
ID_COLUMN = "Image Index"
SPLIT_COLUMN = "split"
FINDINGS_COLUMN = "Finding Labels"
#: Columns of ``labels.csv`` that are not classes (NIH metadata and the split).
METADATA_COLUMNS: tuple[str, ...] = (
    "Image Index",
    "Finding Labels",
    "Patient ID",
    "View Position",
    "Width",
    "Height",
    "PixelSpacing",
    "split",
)
_DEFAULT_SPLIT = "train"

PathLike = str | os.PathLike


# ---------------------------------------------------------------------------- suffixes, ids


@functools.cache
def image_suffixes() -> tuple[str, ...]:
    """The image file suffixes GazeRad reads (lower case, with the dot), in the order of
    :data:`gazerad.io.xray.SUPPORTED_SUFFIXES` (the one table; imported on first call)."""
    from gazerad.io.xray import SUPPORTED_SUFFIXES

    return tuple(s.lower() for s in SUPPORTED_SUFFIXES)


@functools.cache
def _longest_first() -> tuple[str, ...]:
    return tuple(sorted(image_suffixes(), key=len, reverse=True))


def image_suffix(name: str) -> str | None:
    """The supported suffix ``name`` ends with, lower case, the longest one matched
    (``A.NII.GZ`` -> ``.nii.gz``); ``None`` when it has none."""
    low = name.lower()
    for s in _longest_first():
        if low.endswith(s):
            return s
    return None


def has_image_suffix(name: str) -> bool:
    """``True`` when ``name`` ends with a supported image suffix (any case)."""
    return image_suffix(name) is not None


def image_id_of(name: str) -> str:
    """Image id of a file name: ``00000001_000.png`` -> ``00000001_000``, ``a.nii.gz`` -> ``a``
    (the longest supported suffix is removed, matched case-insensitively); a name without
    one is its own id."""
    s = image_suffix(name)
    return name[: -len(s)] if s else name


def check_image_id(name: object, source: PathLike | None = None, row: int | None = None, what: str = "image id") -> str:
    """Return ``name`` when :func:`gazerad.io.confine.check_name` accepts it, else raise
    :class:`InputError` naming ``source`` (a file, or ``None``) and ``row``."""
    try:
        return check_name(name, what)
    except UnsafeName as exc:
        raise InputError(source, str(exc), row=row) from None


def find_image(folder: PathLike, name: str, exact: bool = True) -> Path | None:
    """The image file for ``name`` (a file name or an image id) directly inside ``folder``.

    Tried in order: ``folder/name`` (when ``exact``), then ``folder/<name><suffix>`` for each
    of :func:`image_suffixes`. ``None`` when no such file exists, or when ``name`` is not a
    plain name (no path is built from it then).
    """
    if not is_safe_name(name):
        return None
    folder = Path(folder)
    if exact:
        p = folder / name
        if p.is_file():
            return p
    for s in image_suffixes():
        p = folder / f"{name}{s}"
        if p.is_file():
            return p
    return None


def is_study_folder(path: PathLike) -> bool:
    """``True`` when ``path`` has an ``images/`` folder and a ``labels.csv`` file."""
    p = Path(path)
    return (p / IMAGES_DIR).is_dir() and (p / LABELS_CSV).is_file()


# ---------------------------------------------------------------------------- labels.csv


def rows_in_splits(splits: Sequence[str], split: str | Sequence[str]) -> np.ndarray:
    """``(M,)`` int64 indices of the ``splits`` entries equal to ``split`` (or one of them;
    compared lower-cased), in order: what every study table's ``subset`` answers."""
    want = {split.lower()} if isinstance(split, str) else {s.lower() for s in split}
    return np.array([i for i, s in enumerate(splits) if s.lower() in want], dtype=np.int64)


@dataclass(frozen=True, eq=False)
class LabelsTable:
    """A parsed, checked ``labels.csv`` (see the module docstring for the rules).

    Attributes:
        source: the file read.
        names: ``Image Index`` per row, as written (stripped), in file order; ``N`` rows.
        splits: split per row, lower case (``train`` when empty or without a column).
        classes: the class columns, in file order; ``C`` of them.
        labels: ``(N, C)`` int64 of 0/1.
        findings: per row, the sorted ``Finding Labels`` without ``No Finding``; without that
            column, the classes marked 1.
        has_split: whether the file has a ``split`` column.
        columns: the header, as read.
        no_classes: why there are no classes, where the reason is not a missing column
            (a MIMIC-CXR root without its CheXpert table).
    """

    source: Path
    names: list[str]
    splits: list[str]
    classes: list[str]
    labels: np.ndarray
    findings: list[list[str]]
    has_split: bool
    columns: list[str]
    no_classes: str = ""

    def __len__(self) -> int:
        return len(self.names)

    @property
    def ids(self) -> list[str]:
        """Image id per row (:func:`image_id_of` of ``names``)."""
        return [image_id_of(n) for n in self.names]

    def row(self, name: str) -> int:
        """Row index (0-based) of ``Image Index`` ``name``; :class:`KeyError` if absent."""
        return self._rows()[name]

    def __contains__(self, name: object) -> bool:
        return name in self._rows()

    def _rows(self) -> dict[str, int]:
        rows = self.__dict__.get("_row_index")
        if rows is None:
            rows = {n: i for i, n in enumerate(self.names)}
            object.__setattr__(self, "_row_index", rows)
        return rows

    def subset(self, split: str | Sequence[str]) -> np.ndarray:
        """``(M,)`` int64 row indices whose split is ``split`` (or one of them; compared
        lower-cased), in file order."""
        return rows_in_splits(self.splits, split)

    def split_of(self) -> dict[str, str]:
        """``{Image Index: split}`` in file order."""
        return dict(zip(self.names, self.splits))

    def by_image_id(self) -> dict[str, int]:
        """``{image id: row index}``; :class:`InputError` when two rows have the same image
        id (``a.png`` and ``a.jpg``)."""
        out: dict[str, int] = {}
        for i, n in enumerate(self.names):
            iid = image_id_of(n)
            if iid in out:
                raise InputError(self.source, f"image id {iid!r} is listed twice ({self.names[out[iid]]!r} and {n!r})", row=i + 1)
            out[iid] = i
        return out

    def require(self, split: bool = False, classes: bool = False, rows: bool = False) -> LabelsTable:
        """``self`` after checking it has a ``split`` column, at least one class column and
        at least one row (each only when asked); :class:`InputError` naming the file."""
        if split and not self.has_split:
            raise InputError(self.source, f"missing column(s) [{SPLIT_COLUMN!r}]; found {self.columns}")
        if classes and not self.classes:
            if self.no_classes:  # a data-set root read in place: the root is what lacks them
                raise InputError(self.source.parent, self.no_classes)
            raise InputError(self.source, "no 0/1 class columns besides " + ", ".join(METADATA_COLUMNS))
        if rows and not self.names:
            raise InputError(self.source, "no images listed")
        return self


def _class_value(path: Path, row: int, column: str, text: str) -> int:
    t = text.strip()
    if t in ("0", "1"):
        return int(t)
    if t == "":
        return 0
    try:
        v = float(t)
    except ValueError:
        v = math.nan
        bad = f"{text!r} is not a number"
    else:
        bad = f"value is {text!r}" + (" (NaN/inf)" if not math.isfinite(v) else "")
    if v in (0.0, 1.0):
        return int(v)
    raise InputError(path, f"class column {column!r} must be 0 or 1: {bad}", row=row)


def read_labels_table(path: PathLike) -> LabelsTable:
    """Read and check one ``labels.csv`` (the only reader of that file).

    Needs an ``Image Index`` column; ``split`` and class columns are optional here (ask for
    them with :meth:`LabelsTable.require`). Images are not looked up (:class:`StudyFolder`).

    Raises:
        InputError: naming the file (and row): missing file or ``Image Index`` column, an empty
            or unsafe ``Image Index``, a repeated one, a class cell that is not 0/1.
    """
    p = Path(path)
    header, rows = read_rows(p, [ID_COLUMN])
    classes = [c for c in header if c and c not in METADATA_COLUMNS]
    has_split = SPLIT_COLUMN in header
    has_findings = FINDINGS_COLUMN in header
    names: list[str] = []
    splits: list[str] = []
    findings: list[list[str]] = []
    labels = np.zeros((len(rows), len(classes)), dtype=np.int64)
    seen: dict[str, int] = {}
    for i, r in enumerate(rows, start=1):
        name = (r.get(ID_COLUMN) or "").strip()
        if not name:
            raise InputError(p, f"empty {ID_COLUMN!r}", row=i)
        check_image_id(name, p, row=i, what=f"{ID_COLUMN!r}")
        if name in seen:
            raise InputError(p, f"duplicate {ID_COLUMN!r} {name!r} (first in row {seen[name]})", row=i)
        seen[name] = i
        for k, c in enumerate(classes):
            labels[i - 1, k] = _class_value(p, i, c, r.get(c) or "")
        names.append(name)
        splits.append((r.get(SPLIT_COLUMN) or "").strip().lower() or _DEFAULT_SPLIT)
        if has_findings:
            found = (s.strip() for s in (r.get(FINDINGS_COLUMN) or "").split("|"))
            findings.append(sorted(f for f in found if f and f != "No Finding"))
        else:
            findings.append(sorted(c for k, c in enumerate(classes) if labels[i - 1, k]))
    return LabelsTable(p, names, splits, classes, labels, findings, has_split, [h for h in header if h])


# ---------------------------------------------------------------------------- the folder


class StudyFolder:
    """A study folder: ``labels.csv`` read once, images looked up by the one rule.

    Args:
        root: the folder.
        images_dir: folder of the images (default ``root/images``).
        labels_csv: the labels table (default ``root/labels.csv``).

    Nothing is read until asked; :attr:`table` is read on first use and kept.
    """

    def __init__(self, root: PathLike, images_dir: PathLike | None = None, labels_csv: PathLike | None = None) -> None:
        self.root = Path(root)
        self.images_dir = Path(images_dir) if images_dir is not None else self.root / IMAGES_DIR
        self.labels_csv = Path(labels_csv) if labels_csv is not None else self.root / LABELS_CSV
        self._table: LabelsTable | None = None

    def __repr__(self) -> str:
        return f"StudyFolder({str(self.root)!r})"

    @property
    def has_labels(self) -> bool:
        """Whether ``labels.csv`` exists."""
        return self.labels_csv.is_file()

    @property
    def table(self) -> LabelsTable:
        """The parsed ``labels.csv`` (:func:`read_labels_table`), read on first use;
        :class:`InputError` ``not a study folder: labels.csv is missing`` without one."""
        if self._table is None:
            if not self.has_labels:
                raise InputError(self.root, f"not a study folder: {self.labels_csv.name} is missing")
            self._table = read_labels_table(self.labels_csv)
        return self._table

    def find_image(self, name: str) -> Path | None:
        """:func:`find_image` in :attr:`images_dir` (``None`` when absent or unsafe)."""
        return find_image(self.images_dir, name)

    def image_path(self, name: str, row: int | None = None) -> Path:
        """The image file of ``name``; :class:`InputError` (naming ``labels.csv`` and ``row``
        when given) for an unsafe name or a missing file."""
        source = self.labels_csv if row is not None else self.images_dir
        check_image_id(name, source, row=row)
        p = self.find_image(name)
        if p is None:
            raise InputError(
                source,
                f"image {name!r} not found at {self.images_dir / name} (nor with a suffix of {', '.join(image_suffixes())})",
                row=row,
            )
        return p

    def image_paths(self) -> list[Path]:
        """The image file of every row of :attr:`table`, in row order (``N`` paths);
        :class:`InputError` naming ``labels.csv`` and the row of the first missing one."""
        return [self.image_path(n, row=i) for i, n in enumerate(self.table.names, start=1)]
