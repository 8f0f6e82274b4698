"""Public data-set layouts read as they are downloaded: NIH ChestX-ray14 and MIMIC-CXR(-JPG).

:func:`open_study_folder` is how every trainer, evaluator and the server open a data
folder. It gives a :class:`~gazerad.data.study.StudyFolder` (the same table, image lookup
and split rules) for any of these layouts, detected by :func:`detect_layout`:

``study``
    GazeRad's own folder (``labels.csv`` + ``images/``, what ``gazerad synth`` writes).
``nih``
    NIH ChestX-ray14 as downloaded::

        ROOT/Data_Entry_2017_v2020.csv     (or Data_Entry_2017.csv; v2020 is preferred)
        ROOT/images_001/images/00000001_000.png ... ROOT/images_012/images/...
        ROOT/train_val_list.txt, ROOT/test_list.txt     (the official patient-wise split)
        ROOT/BBox_List_2017.csv                         (boxes of 8 findings)

    Images are also found directly under ``images_NNN/`` or ``images/``. Classes are the 14
    NIH findings (:data:`NIH_CLASSES`, ``No Finding`` is no class). Splits: ``test`` from
    ``test_list.txt``; ``train_val_list.txt`` gives ``train``, except the patients whose
    CRC-32 of ``Patient ID`` falls in the first 10 % (:data:`VALIDATION_SHARE`), who are
    ``validate`` (our choice: NIH ships no validation list; patient-wise, so no patient is
    on both sides). Images in neither list are ``unlisted`` (used by no trainer). Without
    the lists, the split is patient-wise by the same hash: 70 / 10 / 20 %.
    Pixel spacing is ``OriginalImagePixelSpacing[x, y]`` scaled by
    ``OriginalImage[Width, Height]`` to the 1024 x 1024 PNG (:attr:`LayoutFolder.spacing`).
``mimic``
    MIMIC-CXR-JPG (``.jpg``) or MIMIC-CXR (``.dcm``)::

        ROOT/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
        ROOT/mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split
        ROOT/mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, one column per finding

    ``Image Index`` is the ``dicom_id`` (the file name without suffix; REFLACX and EGD-CXR
    name images by it). Labels are CheXpert's, per study, given to each of its images; a
    finding is positive only when its cell is ``1.0`` (uncertain ``-1.0`` and blank are
    negative: "U-Zeros"); ``No Finding`` is no class. Without the split file, the split is
    patient-wise by CRC-32 of ``subject_id`` (70 / 10 / 20 %); without the CheXpert file
    there are no classes (pre-training and attention training still run).

Rows whose image file is absent are left out of :attr:`LayoutFolder.table` and listed in
:attr:`LayoutFolder.missing` (``gazerad datasets check`` reports them); a name found twice
(two folders) is an error, so ids stay unique. Every ``Image Index`` passes the one
confinement rule (:func:`gazerad.io.confine.check_name`).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import zlib
from pathlib import Path

import numpy as np

from gazerad.data._table import is_present_file, read_rows, read_text, to_float
from gazerad.data.study import (
    FINDINGS_COLUMN,
    IMAGES_DIR,
    LabelsTable,
    StudyFolder,
    check_image_id,
    has_image_suffix,
    image_id_of,
    image_suffix,
    is_study_folder,
)
from gazerad.errors import InputError
from gazerad.io.confine import is_safe_name

__all__ = [
    "LAYOUTS",
    "NIH_CLASSES",
    "NIH_DATA_ENTRY",
    "MIMIC_SPLIT",
    "MIMIC_CHEXPERT",
    "VALIDATION_SHARE",
    "detect_layout",
    "open_study_folder",
    "LayoutFolder",
    "patient_split",
    "link_study_folder",
]

logger = logging.getLogger("gazerad.data")

PathLike = str | os.PathLike

LAYOUTS = ("study", "nih", "mimic")
#: The 14 findings of NIH ChestX-ray14, in the order of its paper (``No Finding`` is none).
NIH_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
#: NIH's tables, newest first: the 2020 revision is preferred when both are present.
NIH_DATA_ENTRY = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
NIH_LISTS = ("train_val_list.txt", "test_list.txt")
MIMIC_SPLIT = "mimic-cxr-2.0.0-split.csv"
MIMIC_CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv"
#: Share of patients held out for validation (official train lists) by CRC-32 of their id.
VALIDATION_SHARE = 0.1
_NIH_PNG_SIDE = 1024
_MAX_SIDE = 65535  # DICOM Rows / Columns are 16-bit
_MAX_SPACING_MM = 10.0  # radiographs have 0.1-0.2 mm pixels


def patient_split(patient: str, official_train: bool | None = None) -> str:
    """The split of one patient by the CRC-32 of its id (our choice; deterministic).

    With ``official_train`` (the image is in an official training list) it is
    ``validate`` for the first :data:`VALIDATION_SHARE` of the hash range, else ``train``;
    without official lists (``None``): ``validate`` 10 %, ``test`` 20 %, ``train`` 70 %.
    """
    u = (zlib.crc32(patient.encode()) % 1000) / 1000.0
    if official_train is not None:
        return "validate" if u < VALIDATION_SHARE else "train"
    return "validate" if u < 0.1 else "test" if u < 0.3 else "train"


def _nih_entry(root: Path) -> Path | None:
    for name in NIH_DATA_ENTRY:
        if (root / name).is_file():
            return root / name
    return None


def _mimic_files(root: Path) -> Path | None:
    files = root / "files"
    if files.is_dir() and any(p.is_dir() and len(p.name) == 3 and p.name[0] == "p" and p.name[1:].isdigit() for p in files.iterdir()):
        return files
    return None


def detect_layout(root: PathLike) -> str:
    """``"study"``, ``"nih"`` or ``"mimic"`` (see the module docstring); :class:`InputError`
    naming the folder and what was looked for when it is none of them."""
    p = Path(root)
    if not p.is_dir():
        raise InputError(p, "data folder does not exist")
    if is_study_folder(p):
        return "study"
    if _nih_entry(p) is not None:
        return "nih"
    if _mimic_files(p) is not None:
        return "mimic"
    if (p / "main_data").is_dir() or any(p.glob("metadata_phase_*.csv")) or (p / "fixations.csv").is_file():
        raise InputError(p, "this is gaze data (REFLACX or EGD-CXR), not images: pass it as --gaze, with the MIMIC-CXR(-JPG) root as the data folder")
    raise InputError(
        p,
        "unknown data layout: expected a study folder (labels.csv + images/), NIH ChestX-ray14 "
        f"({' or '.join(NIH_DATA_ENTRY)}) or MIMIC-CXR(-JPG) (files/pNN/pNNNNNNNN/sNNNNNNNN/<dicom_id>.jpg|.dcm)",
    )


def open_study_folder(root: PathLike) -> StudyFolder:
    """The data folder ``root`` as a :class:`StudyFolder`: a GazeRad study folder as is, an
    NIH or MIMIC-CXR(-JPG) root as a :class:`LayoutFolder`. A folder that is none of them
    (e.g. a folder of images without ``labels.csv``) is a plain :class:`StudyFolder`."""
    p = Path(root)
    if p.is_dir() and not is_study_folder(p):
        if _nih_entry(p) is not None:
            return LayoutFolder(p, "nih")
        if _mimic_files(p) is not None:
            return LayoutFolder(p, "mimic")
    return StudyFolder(p)


def _table_file(root: Path, name: str, notes: list[str] | None = None) -> Path | None:
    """``root/name`` or else ``root/name.gz`` (the one read is said in ``notes`` when both are there)."""
    found = [p for p in (root / name, root / f"{name}.gz") if is_present_file(p)]
    if len(found) == 2 and notes is not None:
        notes.append(f"{name} and {name}.gz are both present: {name} is read")
    return found[0] if found else None


def _read_list(path: Path) -> list[str]:
    """The image names of an NIH split list: one per line (blank lines skipped)."""
    names = []
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if len(name.split()) > 1:
            raise InputError(path, f"holds {len(name.split())} names on one line: one image name per line", row=i)
        names.append(check_image_id(name, path, row=i))
    return names


class LayoutFolder(StudyFolder):
    """An NIH or MIMIC-CXR(-JPG) root read in place (see the module docstring).

    Args:
        root: the data-set root.
        layout: ``"nih"`` or ``"mimic"``.

    Nothing is read until :attr:`table` or :meth:`find_image` is used; the image index and
    the table are then built once and kept.

    Attributes (after the first use):
        missing: ``[(row, Image Index)]`` rows of the data-set table without an image file.
        notes: what was assumed or derived (the split rule, label conventions), in words.
        spacing: ``{Image Index: (x, y)}`` pixel spacing in mm of the stored image (NIH).
        meta: ``{Image Index: {column: value}}`` the table's metadata columns (``Patient
            ID``, ``View Position``, ``Width``, ``Height``, ``PixelSpacing``).
    """

    def __init__(self, root: PathLike, layout: str) -> None:
        if layout not in ("nih", "mimic"):
            raise ValueError(f"layout must be 'nih' or 'mimic', got {layout!r}")
        super().__init__(root)
        self.layout = layout
        self.images_dir = self.root  # images live in nested folders: find them with find_image
        self._index: dict[str, Path] | None = None
        self.missing: list[tuple[int, str]] = []
        self.notes: list[str] = []
        self.spacing: dict[str, tuple[float, float]] = {}
        self.meta: dict[str, dict[str, str]] = {}
        entry = _nih_entry(self.root) if layout == "nih" else None
        self.labels_csv = entry or (_table_file(self.root, MIMIC_SPLIT) or self.root / MIMIC_SPLIT)

    def __repr__(self) -> str:
        return f"LayoutFolder({str(self.root)!r}, {self.layout!r})"

    @property
    def has_labels(self) -> bool:
        """NIH: its data-entry table exists; MIMIC: always (the images are the rows)."""
        return self.layout == "mimic" or self.labels_csv.is_file()

    # ------------------------------------------------------------------ images
    def image_folders(self) -> list[Path]:
        """The folders images are looked up in (NIH: ``images_NNN/images``, ``images_NNN``,
        ``images``; MIMIC: every study folder ``files/pNN/pN.../sN...``)."""
        if self.layout == "nih":
            cands = sorted(self.root.glob("images_*")) + [self.root / IMAGES_DIR]
            out = []
            for d in cands:
                if d.is_dir():
                    out += [d / IMAGES_DIR] if (d / IMAGES_DIR).is_dir() else []
                    out.append(d)
            return out
        files = self.root / "files"
        return [s for g in sorted(files.glob("p[0-9][0-9]")) for p in sorted(g.glob("p*")) for s in sorted(p.glob("s*")) if s.is_dir()]

    def index(self) -> dict[str, Path]:
        """``{name: path}`` of every image file (NIH: the file name, ``00000001_000.png``;
        MIMIC: the ``dicom_id``); :class:`InputError` when a name is found twice."""
        if self._index is None:
            idx: dict[str, Path] = {}
            for d in self.image_folders():
                for e in os.scandir(d):
                    if not (e.is_file() and has_image_suffix(e.name)):
                        continue
                    name = e.name if self.layout == "nih" else image_id_of(e.name)
                    if not is_safe_name(name):
                        logger.warning("%s: skipping %r (not a plain file name)", d, e.name)
                        continue
                    if name in idx:
                        raise InputError(Path(e.path), f"image {name!r} is also at {idx[name]}: ids must be unique")
                    idx[name] = Path(e.path)
            self._index = idx
        return self._index

    def find_image(self, name: str) -> Path | None:
        """The image of ``name`` (an ``Image Index``, or an id without suffix)."""
        idx = self.index()
        if name in idx:
            return idx[name]
        if self.layout == "nih" and image_suffix(name) is None:
            return idx.get(f"{name}.png")
        return idx.get(image_id_of(name)) if self.layout == "mimic" else None

    # ------------------------------------------------------------------ table
    @property
    def table(self) -> LabelsTable:
        """The data set's rows with an image file, as a :class:`LabelsTable` (read once)."""
        if self._table is None:
            self._table = self._read_nih() if self.layout == "nih" else self._read_mimic()
            if self.missing:
                logger.warning("%s: %d listed images are missing (first: %s); left out", self.root, len(self.missing), self.missing[0][1])
        return self._table

    def _finish(
        self, names: list[str], splits: list[str], classes: list[str], labels: np.ndarray, findings: list[list[str]], columns: list[str], no_classes: str = ""
    ) -> LabelsTable:
        keep = []
        for i, n in enumerate(names):
            if self.find_image(n) is None:
                self.missing.append((i + 1, n))
            else:
                keep.append(i)
        return LabelsTable(
            self.labels_csv,
            [names[i] for i in keep],
            [splits[i] for i in keep],
            classes,
            labels[keep] if len(labels) else np.zeros((0, len(classes)), np.int64),
            [findings[i] for i in keep],
            True,
            columns,
            no_classes,
        )

    def _read_nih(self) -> LabelsTable:
        p = self.labels_csv
        if not p.is_file():
            raise InputError(self.root, f"not an NIH ChestX-ray14 folder: none of {list(NIH_DATA_ENTRY)}")
        header, rows = read_rows(p, ["Image Index", FINDINGS_COLUMN, "Patient ID"])
        lists = {name: self.root / name for name in NIH_LISTS}
        official: dict[str, str] = {}
        present = {name: is_present_file(f) for name, f in lists.items()}
        if all(present.values()):
            for name, split in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
                for k, n in enumerate(_read_list(lists[name]), start=1):
                    if official.get(n, split) != split:
                        raise InputError(lists[name], f"{n!r} is in train_val_list.txt and test_list.txt: an image has one split", row=k)
                    official[n] = split
            self.notes.append(
                f"splits: test_list.txt is 'test'; train_val_list.txt is 'train', except {VALIDATION_SHARE:.0%} of its patients "
                "(CRC-32 of Patient ID) held out as 'validate'; images in neither list are 'unlisted'"
            )
        else:
            absent = [n for n, there in present.items() if not there]
            self.notes.append(f"splits: {' and '.join(absent)} absent, so patient-wise by CRC-32 of Patient ID: train 70 %, validate 10 %, test 20 %")
        sized = all(c in header for c in ("OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"))
        if not sized:
            self.notes.append(f"pixel spacing: {p.name} has no OriginalImage[Width,Height] / OriginalImagePixelSpacing[x,y] columns, so none is known")
        if p.name == NIH_DATA_ENTRY[1]:
            self.notes.append(f"labels: {p.name} (the 2020 revision {NIH_DATA_ENTRY[0]} is preferred when present)")
        classes = list(NIH_CLASSES)
        col = {c: k for k, c in enumerate(classes)}
        names, splits, findings = [], [], []
        labels = np.zeros((len(rows), len(classes)), dtype=np.int64)
        seen: dict[str, int] = {}
        for i, r in enumerate(rows, start=1):
            name = (r.get("Image Index") or "").strip()
            if not name:
                raise InputError(p, "empty 'Image Index'", row=i)
            check_image_id(name, p, row=i, what="'Image Index'")
            if name in seen:
                raise InputError(p, f"duplicate 'Image Index' {name!r} (first in row {seen[name]})", row=i)
            seen[name] = i
            found = sorted({s.strip() for s in (r.get(FINDINGS_COLUMN) or "").split("|") if s.strip()} - {"No Finding"})
            unknown = [f for f in found if f not in col]
            if unknown:
                raise InputError(p, f"unknown finding(s) {unknown} in 'Finding Labels' (NIH's are {', '.join(classes)} and No Finding)", row=i)
            for f in found:
                labels[len(names), col[f]] = 1
            patient = (r.get("Patient ID") or "").strip()
            if not patient:
                raise InputError(p, "empty 'Patient ID'", row=i)
            if official:
                off = official.get(name)
                split = "unlisted" if off is None else "test" if off == "test" else patient_split(patient, official_train=True)
            else:
                split = patient_split(patient)
            meta = {"Patient ID": patient, "View Position": (r.get("View Position") or "").strip()}
            if sized:
                w, h = to_float(p, i, "OriginalImage[Width", r["OriginalImage[Width"]), to_float(p, i, "Height]", r["Height]"])
                sx, sy = to_float(p, i, "OriginalImagePixelSpacing[x", r["OriginalImagePixelSpacing[x"]), to_float(p, i, "y]", r["y]"])
                if not (0 < w <= _MAX_SIDE and 0 < h <= _MAX_SIDE and 0 < sx <= _MAX_SPACING_MM and 0 < sy <= _MAX_SPACING_MM):
                    why = f"original size {w:g} x {h:g} must be 1..{_MAX_SIDE} px and spacing {sx:g} x {sy:g} in (0, {_MAX_SPACING_MM:g}] mm"
                    raise InputError(p, why, row=i)
                # the PNGs are the originals resized to 1024 x 1024
                self.spacing[name] = (sx * w / _NIH_PNG_SIDE, sy * h / _NIH_PNG_SIDE)
                meta.update(Width=f"{w:g}", Height=f"{h:g}", PixelSpacing=f"{self.spacing[name][0]:.6g} {self.spacing[name][1]:.6g}")
            self.meta[name] = meta
            names.append(name)
            splits.append(split)
            findings.append(found)
        if official:
            foreign = [n for n in official if n not in seen]
            unlisted = splits.count("unlisted")
            if foreign:
                self.notes.append(f"splits: {len(foreign)} names in the split lists are not in {p.name}, e.g. {foreign[:3]}")
            if unlisted:
                self.notes.append(f"splits: {unlisted} of {len(names)} images of {p.name} are in neither list ('unlisted': no split uses them)")
        return self._finish(names, splits, classes, labels, findings, [h for h in header if h])

    def _read_mimic(self) -> LabelsTable:
        idx = self.index()
        subject = {name: path.parent.parent.name[1:] for name, path in idx.items()}
        study = {name: path.parent.name[1:] for name, path in idx.items()}
        split_file = _table_file(self.root, MIMIC_SPLIT, self.notes)
        names: list[str]
        if split_file is not None:
            _, rows = read_rows(split_file, ["dicom_id", "study_id", "subject_id", "split"])
            names, splits = [], []
            seen: dict[str, int] = {}
            for i, r in enumerate(rows, start=1):
                name = r["dicom_id"].strip()
                check_image_id(name, split_file, row=i, what="'dicom_id'")
                if name in seen:
                    raise InputError(split_file, f"duplicate 'dicom_id' {name!r} (first in row {seen[name]})", row=i)
                seen[name] = i
                sp = r["split"].strip().lower()
                if sp not in ("train", "validate", "test"):
                    raise InputError(split_file, f"split {r['split']!r} is not train, validate or test", row=i)
                names.append(name)
                splits.append(sp)
                for ids, col in ((subject, "subject_id"), (study, "study_id")):
                    if ids.setdefault(name, r[col].strip()) != r[col].strip():  # the image's folder names its patient and study
                        raise InputError(split_file, f"{col} {r[col].strip()!r} of {name!r} contradicts its image's folder ({col} {ids[name]!r})", row=i)
            self.notes.append(f"splits: {split_file.name}")
        else:
            names = sorted(idx)
            splits = [patient_split(subject[n]) for n in names]
            self.notes.append(f"splits: no {MIMIC_SPLIT}[.gz], so patient-wise by CRC-32 of subject_id: train 70 %, validate 10 %, test 20 %")
        chex = _table_file(self.root, MIMIC_CHEXPERT, self.notes)
        classes: list[str] = []
        labels = np.zeros((len(names), 0), dtype=np.int64)
        findings: list[list[str]] = [[] for _ in names]
        if chex is not None:
            header, rows = read_rows(chex, ["subject_id", "study_id"])
            classes = [c for c in header if c and c not in ("subject_id", "study_id", "No Finding")]
            per_study: dict[str, np.ndarray] = {}
            first: dict[str, int] = {}
            for i, r in enumerate(rows, start=1):
                sid = r["study_id"].strip()
                if sid in first:
                    raise InputError(chex, f"duplicate study_id {sid!r} (first in row {first[sid]}): a study has one row of labels", row=i)
                first[sid] = i
                v = np.zeros(len(classes), dtype=np.int64)
                for k, c in enumerate(classes):
                    cell = (r.get(c) or "").strip()
                    if cell not in ("", "1.0", "1", "0.0", "0", "-1.0", "-1"):
                        raise InputError(chex, f"column {c!r}: {cell!r} is not 1.0, 0.0, -1.0 or blank", row=i)
                    v[k] = cell in ("1.0", "1")
                per_study[sid] = v
            if names and per_study and not any(study.get(n, "") in per_study for n in names):
                example = study.get(names[0], "")
                raise InputError(chex, f"no study of the {len(names)} images has a row (study_id), e.g. {example!r}: is it this download's table?")
            labels = np.stack([per_study.get(study.get(n, ""), np.zeros(len(classes), np.int64)) for n in names]) if names else labels
            findings = [[c for k, c in enumerate(classes) if row[k]] for row in labels]
            unlabelled = sum(study.get(n, "") not in per_study for n in names)
            self.notes.append(
                f"labels: {chex.name}, per study; positive only where 1.0 (uncertain -1.0 and blank are negative)"
                + (f"; {unlabelled} images of studies without a row are all-negative" if unlabelled else "")
            )
        else:
            no_classes = f"no {MIMIC_CHEXPERT}[.gz] here: no class labels (classification and evaluation need them)"
            self.notes.append(f"labels: {no_classes}")
        for n in names:
            self.meta[n] = {"Patient ID": subject.get(n, ""), "study_id": study.get(n, "")}
        return self._finish(names, splits, classes, labels, findings, ["Image Index", "split", *classes], "" if chex else no_classes)


def link_study_folder(root: PathLike, out: PathLike, gaze: PathLike | None = None) -> Path:
    """A GazeRad study folder at ``out`` that links to the NIH / MIMIC-CXR root ``root``
    instead of copying it (what the server's flat datastore needs; the originals stay
    read-only):

    - ``out/images/<file name>``: one symbolic link per image of the table (NIH: its file
      name; MIMIC: ``<dicom_id>.jpg`` / ``.dcm``); stale links are removed, nothing else is
      touched; names are the checked, unique names of :class:`LayoutFolder`;
    - ``out/labels.csv`` (``Image Index``, ``Finding Labels``, the metadata, ``split``, one
      0/1 column per class) and ``out/BBox_List_2017.csv`` (names as in ``images/``),
      written atomically;
    - ``out/reflacx/main_data``: a link to ``gaze``'s REFLACX ``main_data`` when given (the
      server reads the study set's readings there).

    Returns ``out``. A study folder ``root`` needs no view: :class:`InputError`.
    """
    from gazerad.io.atomic import atomic_write_text

    folder = open_study_folder(root)
    if not isinstance(folder, LayoutFolder):
        raise InputError(root, "is a study folder already (serve it as it is)")
    # everything is read and checked first: a bad box list or gaze folder leaves ``out`` as it was
    t = folder.table
    sources = {name: folder.find_image(name) for name in t.names}
    files = {name: src.name if folder.layout == "nih" else f"{name}{image_suffix(src.name) or src.suffix}" for name, src in sources.items()}
    meta_cols = ["Patient ID", "View Position", "Width", "Height", "PixelSpacing"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Image Index", FINDINGS_COLUMN, *meta_cols, "split", *t.classes])
    for k, name in enumerate(t.names):
        m = folder.meta.get(name, {})
        w.writerow([files[name], "|".join(t.findings[k]) or "No Finding", *(m.get(c, "") for c in meta_cols), t.splits[k], *t.labels[k].tolist()])
    labels_text, boxes_text = buf.getvalue(), None
    bpath = folder.root / "BBox_List_2017.csv"
    if is_present_file(bpath):
        from gazerad.data.nih import read_bbox_list

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"])
        by_id = {image_id_of(n): files[n] for n in t.names}
        for name, boxes in read_bbox_list(bpath).items():
            if image_id_of(name) in by_id:
                w.writerows([by_id[image_id_of(name)], lab, *(f"{v:g}" for v in box)] for lab, box in boxes)
        boxes_text = buf.getvalue()
    main = None
    if gaze is not None:
        main = Path(gaze) / "main_data" if (Path(gaze) / "main_data").is_dir() else Path(gaze)
        if not any(main.glob("metadata_phase_*.csv")):
            raise InputError(gaze, "the server reads REFLACX gaze (a folder with main_data/metadata_phase_*.csv); upload other formats")

    out = Path(out)
    images = out / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        link = images / files[name]
        if link.is_symlink() and Path(os.readlink(link)) == src.resolve():
            continue
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src.resolve())
    wanted = set(files.values())
    for e in os.scandir(images):
        if e.is_symlink() and e.name not in wanted:
            os.unlink(e.path)
    atomic_write_text(out / "labels.csv", labels_text)
    if boxes_text is not None:
        atomic_write_text(out / "BBox_List_2017.csv", boxes_text)
    elif (out / "BBox_List_2017.csv").is_file():  # the root's box list is gone: so are its boxes
        (out / "BBox_List_2017.csv").unlink()
    if main is not None:
        link = out / "reflacx" / "main_data"
        link.parent.mkdir(exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(main.resolve(), target_is_directory=True)
    return out
