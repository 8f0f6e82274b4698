"""``gazerad datasets check ROOT``: what a data folder holds, what is missing, what is broken.

:func:`check_dataset` opens the folder the way every command does
(:func:`gazerad.data.layouts.open_study_folder`), then counts and checks images (each
file's header is read; with ``deep`` each image is decoded by
:func:`gazerad.io.xray.read_xray`), labels, boxes, splits and gaze. :func:`format_report`
prints the result as a table. A report with ``problems`` means a broken tree (the CLI exits
1): a table that cannot be read, listed images that are missing or unreadable, boxes of
unknown images or classes, a patient in two splits, gaze that cannot be read.
Images stored with colour or alpha channels are converted to grey by every reader
(ITU-R 601 luma, alpha dropped): they are counted under ``converted``, not as problems.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from gazerad.data._table import is_present_file
from gazerad.errors import InputError

__all__ = ["check_dataset", "format_report"]

# drop reasons of single fixations that mean a faulty row (not the tracker's own "invalid")
_FIXATION_FAULTS = {"missing_value", "non_numeric", "negative_duration", "implausible_time", "outside_image", "bad_flag"}

PathLike = str | os.PathLike
_SHOW = 5  # names shown per problem


def _header_problem(path: Path) -> tuple[str | None, str | None, tuple[int, int] | None]:
    """``(problem, mode, (width, height))`` from a cheap read of the file's header: PIL for
    PNG/JPEG (its mode), pydicom (without pixels) for DICOM; other types are decoded."""
    suffix = path.name.lower()
    try:
        if suffix.endswith((".png", ".jpg", ".jpeg")):
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(path) as im:
                    return None, im.mode, im.size
            except UnidentifiedImageError:
                return "not a readable PNG/JPEG image", None, None
        if suffix.endswith(".dcm"):
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            if "PixelData" not in ds and not hasattr(ds, "Rows"):
                return "DICOM without an image", None, None
            size = (int(ds.Columns), int(ds.Rows)) if hasattr(ds, "Rows") and hasattr(ds, "Columns") else None
            return None, str(getattr(ds, "PhotometricInterpretation", "")), size
        from gazerad.io.xray import read_xray

        h, w = read_xray(path)[0].shape
        return None, None, (w, h)
    except Exception as exc:  # noqa: BLE001 - every reader's failure is a finding of the check
        return f"{type(exc).__name__}: {exc}", None, None


def _deep_problem(path: Path) -> str | None:
    from gazerad.io.xray import read_xray

    try:
        read_xray(path)
    except Exception as exc:  # noqa: BLE001
        return str(exc)
    return None


def check_dataset(root: PathLike, gaze: PathLike | None = None, deep: bool = False) -> dict[str, Any]:
    """Check the data folder ``root`` (and, when given, the gaze data ``gaze``).

    Returns:
        ``{"root", "layout", "tables", "images": {listed, found, missing, unlisted_files,
        unreadable, converted}, "labels": {classes, positives, no_finding}, "boxes": {...},
        "splits": {split: n}, "patients": {...}, "gaze": {...} | None, "notes": [...],
        "problems": [...]}``; ``problems`` is empty for a sound tree.
    """
    from gazerad.data.layouts import LayoutFolder, detect_layout, open_study_folder
    from gazerad.data.study import has_image_suffix, image_id_of

    p = Path(root)
    rep: dict[str, Any] = {"root": str(p), "layout": None, "tables": [], "notes": [], "problems": [], "gaze": None}
    problems: list[str] = rep["problems"]
    try:
        rep["layout"] = detect_layout(p)
        folder = open_study_folder(p)
        table = folder.table
    except InputError as exc:
        problems.append(str(exc))
        return rep
    rep["tables"].append(str(folder.labels_csv))
    if isinstance(folder, LayoutFolder):
        missing = [n for _, n in folder.missing]
        rep["notes"] += folder.notes
        files = dict(folder.index())
    else:
        missing = [n for n in table.names if folder.find_image(n) is None]
        files = {e.name: Path(e.path) for e in os.scandir(folder.images_dir) if e.is_file() and has_image_suffix(e.name)} if folder.images_dir.is_dir() else {}
    present = [n for n in table.names if n not in set(missing)]
    used = {folder.find_image(n) for n in present}
    unlisted = sorted(n for n, f in files.items() if f not in used)
    unreadable, converted, sizes = [], Counter(), {}
    for n in present:
        f = folder.find_image(n)
        bad, mode, sizes[image_id_of(n)] = _header_problem(f)
        if bad is None and deep:
            bad = _deep_problem(f)
        if bad is not None:
            unreadable.append((n, bad))
        elif mode in ("RGB", "RGBA", "LA", "P", "CMYK", "YCbCr"):
            converted[mode] += 1
    rep["images"] = {
        "listed": len(table.names) + (len(missing) if isinstance(folder, LayoutFolder) else 0),
        "found": len(files),
        "missing": missing,
        "unlisted_files": unlisted,
        "unreadable": [{"image": n, "problem": why} for n, why in unreadable],
        "converted": dict(converted),
        "checked": "decoded" if deep else "header",
    }
    gaze_ids: set[str] | None = None
    if gaze is not None or rep["layout"] == "study":
        rep["gaze"], gaze_ids = _check_gaze(gaze, p, table, problems, sizes)
    # with gaze given, only the images it reads must be there (a partial download of a large
    # archive, e.g. the MIMIC-CXR images REFLACX covers, is the usual case)
    needed = [n for n in missing if gaze is None or image_id_of(n) in (gaze_ids or set())]
    if needed:
        what = "listed images are missing" if gaze is None else "images with gaze readings are missing"
        problems.append(f"{len(needed)} {what}: {', '.join(needed[:_SHOW])}" + (" ..." if len(needed) > _SHOW else ""))
    if len(needed) < len(missing):
        rep["notes"].append(f"{len(missing) - len(needed)} listed images without a file have no gaze readings either (not needed here)")
    for n, why in unreadable[:_SHOW]:
        problems.append(f"unreadable image {n} ({folder.find_image(n)}): {why}")
    if len(unreadable) > _SHOW:
        problems.append(f"... and {len(unreadable) - _SHOW} more unreadable images")

    labels = table.labels
    rep["labels"] = {
        "classes": list(table.classes),
        "positives": {c: int(labels[:, k].sum()) for k, c in enumerate(table.classes)},
        "no_finding": int((labels.sum(1) == 0).sum()) if table.classes else None,
    }
    if not table.classes and not isinstance(folder, LayoutFolder):
        rep["notes"].append("no class labels: pre-training and attention training run; classification and evaluation need labels")
    rep["splits"] = dict(Counter(table.splits))
    odd = sorted(set(rep["splits"]) - {"train", "validate", "test", "unlisted"})
    if odd:
        rep["notes"].append(
            "split names other than train/validate/test: " + ", ".join(f"{s!r} ({rep['splits'][s]})" for s in odd) + "; "
            "the commands train on 'train', tune on 'validate' and score 'test' unless given --splits"
        )
    meta = getattr(folder, "meta", {})
    if meta:
        by_patient: dict[str, set[str]] = {}
        for n, s in zip(table.names, table.splits):
            pid = meta.get(n, {}).get("Patient ID")
            if pid:
                by_patient.setdefault(pid, set()).add(s)
        both = sorted(pid for pid, ss in by_patient.items() if len(ss - {"unlisted"}) > 1)
        rep["patients"] = {"n": len(by_patient), "in_two_splits": both}
        if both:
            problems.append(f"{len(both)} patients are in more than one split (leakage): {', '.join(both[:_SHOW])}")

    bpath = p / "BBox_List_2017.csv"
    try:
        boxed = is_present_file(bpath)
    except InputError as exc:
        problems.append(f"{exc} (no box is read)")
        boxed = False
    if boxed:
        from gazerad.data.nih import read_bbox_list

        rep["tables"].append(str(bpath))
        try:
            boxes = read_bbox_list(bpath)
        except InputError as exc:
            problems.append(str(exc))
        else:
            ids = {image_id_of(n) for n in table.names} | {image_id_of(n) for n in missing}
            per = Counter(lab for bs in boxes.values() for lab, _ in bs)
            unknown_img = sorted(k for k in boxes if image_id_of(k) not in ids)
            unknown_cls = sorted(c for c in per if table.classes and c not in table.classes)
            rep["boxes"] = {"n": sum(per.values()), "images": len(boxes), "per_class": dict(sorted(per.items())), "unknown_images": unknown_img}
            if unknown_img:
                problems.append(f"{bpath.name}: {len(unknown_img)} boxed images are not in the data set: {', '.join(unknown_img[:_SHOW])}")
            if unknown_cls:
                problems.append(f"{bpath.name}: box classes {unknown_cls} are not among the classes")
            outside = [
                f"{k} {lab} [{x:g}, {y:g}, {w:g}, {h:g}] in {sz[0]} x {sz[1]}"
                for k, bs in boxes.items()
                if (sz := sizes.get(image_id_of(k)))
                for lab, (x, y, w, h) in bs
                if x < -1 or y < -1 or x + w > sz[0] + 1 or y + h > sz[1] + 1
            ]
            if outside:
                problems.append(f"{bpath.name}: {len(outside)} boxes lie outside their image: {'; '.join(outside[:_SHOW])}")
    else:
        rep["boxes"] = None

    return rep


def _check_gaze(
    gaze: PathLike | None, root: Path, table: Any, problems: list[str], sizes: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, set[str] | None]:
    """The gaze part of the report; ``sizes`` (image id -> ``(W, H)`` from the headers) lets
    it find fixations outside their image whatever the format says about image sizes."""
    from gazerad.data.study import image_id_of
    from gazerad.gaze.importers import load_gaze

    src = Path(gaze) if gaze is not None else root
    if gaze is None and not (root / "reflacx" / "main_data").is_dir():
        return None, None
    try:
        coll = load_gaze(src)
    except InputError as exc:
        problems.append(f"gaze: {exc}")
        return {"source": str(src), "readings": 0}, set()
    ids = {image_id_of(n) for n in table.names}
    images = [image_id_of(i) for i in coll.images]
    outside = sorted(i for i in images if i not in ids)
    readers = Counter(r.reader_id for r in coll.records())
    if not coll.records():  # nothing to train on: a header-only table, or every reading discarded
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(coll.dropped.items()))
        problems.append(f"gaze: {src} has no usable reading" + (f" (dropped: {dropped})" if dropped else ""))
    elif len(outside) == len(images):
        problems.append(f"gaze: none of the {len(images)} images {src} reads is in the data set, e.g. {outside[:3]}")
    bad_rows = {k: v for k, v in coll.dropped.items() if k in _FIXATION_FAULTS}
    kept = sum(len(r.fixations) for r in coll.records())
    if sum(bad_rows.values()) > kept:  # most rows unusable: a unit or column mix-up, not noise
        why = ", ".join(f"{k} {v}" for k, v in sorted(bad_rows.items()))
        problems.append(f"gaze: more fixations were dropped as faulty ({why}) than kept ({kept}): wrong units or columns?")
    off = []
    for r in coll.records():
        sz = (sizes or {}).get(image_id_of(r.image_id))
        if sz:
            f = np.asarray(r.fixations)
            bad = (f[:, 0] < 0) | (f[:, 1] < 0) | (f[:, 0] > sz[0]) | (f[:, 1] > sz[1])
            off += [f"{r.image_id} ({x:g}, {y:g}) in {sz[0]} x {sz[1]}" for x, y in f[bad, :2]]
    if off:
        problems.append(f"gaze: {len(off)} fixations lie outside their image (W x H from the image header): {'; '.join(off[:_SHOW])}")
    return {
        "source": str(src),
        "readings": len(coll.records()),
        "images": len(images),
        "images_in_data_set": len(images) - len(outside),
        "images_not_in_data_set": outside[:_SHOW],
        "n_not_in_data_set": len(outside),
        "readers": dict(sorted(readers.items())),
        "dropped": dict(coll.dropped),
    }, set(images)


def format_report(rep: dict[str, Any]) -> str:
    """The report as a two-column text table, problems last."""
    rows: list[tuple[str, str]] = [("root", rep["root"]), ("layout", str(rep["layout"]))]
    rows += [("table", t) for t in rep["tables"]]
    im = rep.get("images")
    if im:
        rows.append(("images", f"{im['listed']} listed, {im['found']} files found ({im['checked']} checked)"))
        rows.append(("  missing", str(len(im["missing"])) + (f" (first: {', '.join(im['missing'][:_SHOW])})" if im["missing"] else "")))
        rows.append(("  unreadable", str(len(im["unreadable"]))))
        rows.append(("  not listed", str(len(im["unlisted_files"]))))
        conv = ", ".join(f"{k} {v}" for k, v in sorted(im["converted"].items()))
        rows.append(("  converted", f"{conv} (read as grey: ITU-R 601 luma, alpha dropped)" if conv else "none"))
    lab = rep.get("labels")
    if lab:
        rows.append(("classes", str(len(lab["classes"]))))
        rows += [(f"  {c}", str(n)) for c, n in lab["positives"].items()]
        if lab["no_finding"] is not None:
            rows.append(("  No Finding", str(lab["no_finding"])))
    if rep.get("splits"):
        rows.append(("splits", ", ".join(f"{k} {v}" for k, v in sorted(rep["splits"].items()))))
    if rep.get("patients"):
        rows.append(("patients", f"{rep['patients']['n']} ({len(rep['patients']['in_two_splits'])} in two splits)"))
    b = rep.get("boxes")
    if b:
        rows.append(("boxes", f"{b['n']} on {b['images']} images: " + ", ".join(f"{k} {v}" for k, v in b["per_class"].items())))
    g = rep.get("gaze")
    if g:
        rows.append(("gaze", g["source"]))
        if "images" in g:
            rows.append(("  readings", f"{g['readings']} of {g['images']} images ({g['images_in_data_set']} in the data set), readers {len(g['readers'])}"))
            rows.append(("  dropped", ", ".join(f"{k} {v}" for k, v in sorted(g["dropped"].items())) or "none"))
    rows += [("note", n) for n in rep["notes"]]
    rows += [("PROBLEM", pr) for pr in rep["problems"]]
    w = max(len(k) for k, _ in rows)
    lines = [f"{k:<{w}}  {v}" for k, v in rows]
    lines.append("OK: no problems found" if not rep["problems"] else f"BROKEN: {len(rep['problems'])} problem(s)")
    return "\n".join(lines)
