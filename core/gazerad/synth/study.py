"""Writing a synthetic chest X-ray study set with labels, boxes and REFLACX-layout gaze.

Layout of ``OUT``::

    images/00000001_000.png          512 x 512 16-bit PNG phantoms
    images_dicom/00000001_000.dcm    the same as DICOM DX (``dicom=True``; some MONOCHROME1)
    labels.csv                       one row per image: multi-label, split, one 0/1 column per class
    BBox_List_2017.csv               NIH columns: Image Index, Finding Label, Bbox [x, y, w, h]
    findings.csv                     the boxes again, with conspicuity and who noticed them
    reflacx/main_data/metadata_phase_{1,2,3}.csv
    reflacx/main_data/<reading id>/fixations.csv, gaze.csv, anomaly_location_ellipses.csv
    dataset.json                     generator version, seed, classes, counts

Each study depends only on ``(seed, index)``, so the set is the same for any number of
worker processes, and ``n=200`` is a prefix-extension of ``n=100`` with the same seed.
The whole set is written into a temporary sibling folder and renamed into place: an
interrupted run never leaves a half-written set, and ``overwrite`` swaps atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gazerad.data.study import METADATA_COLUMNS
from gazerad.io.atomic import atomic_path, atomic_write_text
from gazerad.synth.phantom import FINDING_CLASSES, render, sample_spec
from gazerad.synth.readers import ReaderProfile, reader_pool, simulate_reading

__all__ = [
    "GENERATOR_VERSION",
    "REFLACX_FIXATION_COLUMNS",
    "REFLACX_GAZE_COLUMNS",
    "REFLACX_ELLIPSE_LABELS",
    "REFLACX_METADATA_COLUMNS",
    "LABEL_COLUMNS",
    "BBOX_HEADER",
    "StudySetSummary",
    "generate_studies",
]

GENERATOR_VERSION = "3"
PIXEL_SPACING_MM = 0.7

_GEOMETRY_COLUMNS = [
    "angular_resolution_x_pixels_per_degree",
    "angular_resolution_y_pixels_per_degree",
    "window_width",
    "window_level",
    "xmin_shown_from_image",
    "ymin_shown_from_image",
    "xmax_shown_from_image",
    "ymax_shown_from_image",
    "xmin_in_screen_coordinates",
    "ymin_in_screen_coordinates",
    "xmax_in_screen_coordinates",
    "ymax_in_screen_coordinates",
]
#: Columns of a REFLACX ``fixations.csv`` (times in s, positions in original-image pixels).
REFLACX_FIXATION_COLUMNS = [
    "timestamp_start_fixation",
    "timestamp_end_fixation",
    "x_position",
    "y_position",
    "pupil_area_normalized",
    *_GEOMETRY_COLUMNS,
]
#: Columns of a REFLACX ``gaze.csv`` (raw samples; empty x/y while the tracker lost the eye).
REFLACX_GAZE_COLUMNS = ["timestamp_sample", "x_position", "y_position", "pupil_area_normalized", *_GEOMETRY_COLUMNS]
#: REFLACX ellipse label columns for the generator's classes.
REFLACX_ELLIPSE_LABELS = {
    "Nodule": "Lung nodule or mass",
    "Mass": "Lung nodule or mass",
    "Effusion": "Pleural effusion",
    "Cardiomegaly": "Enlarged cardiac silhouette",
    "Pneumothorax": "Pneumothorax",
}
_ELLIPSE_COLUMNS = ["xmin", "ymin", "xmax", "ymax", "certainty", *dict.fromkeys(REFLACX_ELLIPSE_LABELS.values())]
#: Columns of REFLACX ``metadata_phase_*.csv`` written by the generator (``radiologist`` is ours).
REFLACX_METADATA_COLUMNS = [
    "id",
    "split",
    "eye_tracking_data_discarded",
    "image",
    "dicom_id",
    "subject_id",
    "image_size_x",
    "image_size_y",
    "radiologist",
]
#: Columns of ``labels.csv``.
LABEL_COLUMNS = [*METADATA_COLUMNS, *FINDING_CLASSES]
#: Header of NIH ``BBox_List_2017.csv`` exactly as NIH ships it (rows end in three empty fields).
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"


@dataclass
class StudySetSummary:
    """What :func:`generate_studies` wrote."""

    out: Path
    n_images: int
    n_readings: int
    n_findings: int
    no_finding_fraction: float
    seconds: float


def _split_for(index: int, n: int) -> str:
    r = (index * 2654435761) % 100  # spread deterministically, independent of n
    return "train" if r < 70 else ("validate" if r < 80 else "test")


def _phase_for(index: int, n: int) -> int:
    f = index / max(n, 1)
    return 1 if f < 0.05 else (2 if f < 0.2 else 3)


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _fmt_matrix(header: list[str], mat: np.ndarray, fmts: list[str]) -> str:
    """Fast CSV of a float matrix; NaN written as an empty field."""
    lines = [",".join(header)]
    cols = []
    for j, fmt in enumerate(fmts):
        col = mat[:, j]
        txt = np.char.mod(fmt, np.nan_to_num(col, nan=0.0))
        txt = np.where(np.isnan(col), "", txt)
        cols.append(txt)
    body = cols[0]
    for c in cols[1:]:
        body = np.char.add(np.char.add(body, ","), c)
    lines.extend(body.tolist())
    return "\n".join(lines) + "\n"


def _make_study(args: tuple[int, int, int, int, str, bool, list[ReaderProfile]]) -> dict[str, Any]:
    index, n, seed, size, out, dicom, pool = args
    from PIL import Image

    out_dir = Path(out)
    rng = np.random.default_rng([seed, index])
    spec = sample_spec(rng, size=size)
    rendered = render(spec)
    image_id = f"{index + 1:08d}_000.png"
    patient = f"{index + 1:08d}"
    with atomic_path(out_dir / "images" / image_id) as tmp:
        Image.fromarray(rendered.image).save(tmp, format="PNG", compress_level=1)
    photometric = None
    if dicom:
        from gazerad.io.dicom import write_dicom_xray

        photometric = "MONOCHROME1" if rng.random() < 0.3 else "MONOCHROME2"
        stored = rendered.image if photometric == "MONOCHROME2" else (65535 - rendered.image).astype(np.uint16)
        write_dicom_xray(
            out_dir / "images_dicom" / image_id.replace(".png", ".dcm"),
            stored,
            photometric=photometric,
            bits_stored=16,
            spacing=(PIXEL_SPACING_MM, PIXEL_SPACING_MM),
            patient_id=patient,
        )
    visible = [(f, b) for f, b in zip(spec.findings, rendered.boxes) if b is not None]
    labels = sorted({f.label for f, _ in visible})
    split = _split_for(index, n)
    phase = _phase_for(index, n)

    n_readers = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    readers = rng.choice(len(pool), size=n_readers, replace=False)
    readings = []
    noticed_by: list[list[str]] = [[] for _ in spec.findings]
    for r in sorted(int(i) for i in readers):
        prof = pool[r]
        reading = simulate_reading(rng, prof, spec, rendered)
        rid = f"P{phase}0{r + 1}R{index + 1:06d}"
        d = out_dir / "reflacx" / "main_data" / rid
        ppd = prof.pixels_per_degree
        geom = [ppd, ppd, 65535.0, 32768.0, 0, 0, size, size, 0, 0, 1080, 1080]
        fx = reading.fixations
        pupil = 1.0 + 0.05 * rng.standard_normal(len(fx))
        fmat = np.column_stack([fx[:, 2], fx[:, 3], fx[:, 0], fx[:, 1], pupil, np.tile(geom, (len(fx), 1))])
        fmts = ["%.3f", "%.3f", "%.2f", "%.2f", "%.4f"] + ["%.3f", "%.3f"] + ["%g"] * 10
        atomic_write_text(d / "fixations.csv", _fmt_matrix(REFLACX_FIXATION_COLUMNS, fmat, fmts))
        s = reading.samples
        gmat = np.column_stack([s[:, 0], s[:, 1], s[:, 2], s[:, 3], np.tile(geom, (len(s), 1))])
        gfmts = ["%.4f", "%.2f", "%.2f", "%.4f"] + ["%.3f", "%.3f"] + ["%g"] * 10
        atomic_write_text(d / "gaze.csv", _fmt_matrix(REFLACX_GAZE_COLUMNS, gmat, gfmts))
        ell_rows = []
        for k in reading.noticed:
            f, box = spec.findings[k], rendered.boxes[k]
            noticed_by[k].append(prof.reader_id)
            x, y, bw, bh = box
            pad = rng.uniform(0.05, 0.25)
            x0 = max(0.0, x - pad * bw)
            y0 = max(0.0, y - pad * bh)
            x1 = min(float(size), x + bw * (1 + pad))
            y1 = min(float(size), y + bh * (1 + pad))
            flags = [str(REFLACX_ELLIPSE_LABELS[f.label] == col) for col in _ELLIPSE_COLUMNS[5:]]
            certainty = int(np.clip(round(1 + 4 * f.conspicuity + rng.normal(0, 0.5)), 1, 5))
            ell_rows.append([f"{x0:.1f}", f"{y0:.1f}", f"{x1:.1f}", f"{y1:.1f}", certainty, *flags])
        atomic_write_text(d / "anomaly_location_ellipses.csv", _csv_text(_ELLIPSE_COLUMNS, ell_rows))
        readings.append(
            {
                "phase": phase,
                "row": [rid, split, "False", f"images/{image_id}", image_id[:-4], patient, size, size, prof.reader_id],
            }
        )
    findings = [
        {
            "label": f.label,
            "box": list(b),
            "conspicuity": round(float(f.conspicuity), 4),
            "noticed_by": noticed_by[k],
        }
        for k, (f, b) in enumerate(zip(spec.findings, rendered.boxes))
        if b is not None
    ]
    return {
        "index": index,
        "image_id": image_id,
        "patient": patient,
        "labels": labels,
        "split": split,
        "findings": findings,
        "readings": readings,
        "photometric": photometric,
    }


def generate_studies(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    size: int = 512,
    dicom: bool = False,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_progress: Callable[[int, int], None] | None = None,
) -> StudySetSummary:
    """Generate ``n`` synthetic studies into ``out``.

    Args:
        out: output folder; must not exist (or be empty) unless ``overwrite``.
        n: number of images.
        seed: master seed; the set is a pure function of ``(seed, n, size, dicom)``.
        size: image side in pixels (512 as in the spec; smaller for fast tests).
        dicom: also write DICOM DX copies (30 % MONOCHROME1) under ``images_dicom/``.
        workers: processes (default: all cores); results do not depend on it.
        overwrite: replace an existing study set.
        progress: show a tqdm progress bar.
        on_progress: optional callback ``(done, total)``.

    Raises:
        FileExistsError: ``out`` holds files and ``overwrite`` is false.
        ValueError: bad ``n`` or ``size`` (64 to 4096).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 64 <= size <= 4096:
        raise ValueError(f"size must be 64 to 4096 pixels (a film is at most ~4300 px a side), got {size}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out}: exists and is not empty; pass overwrite=True (--overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pool = reader_pool(seed)
        jobs = [(i, n, seed, size, str(tmp), dicom, pool) for i in range(n)]
        workers = max(1, min(workers or os.cpu_count() or 1, n))
        results: list[dict[str, Any]] = []
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="synth", unit="study", disable=not progress)
        if workers == 1:
            it = map(_make_study, jobs)
            executor = None
        else:
            import multiprocessing as mp

            ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context("spawn")
            executor = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
            it = executor.map(_make_study, jobs, chunksize=max(1, min(8, n // (4 * workers) or 1)))
        try:
            for res in it:
                results.append(res)
                bar.update(1)
                if on_progress:
                    on_progress(len(results), n)
        finally:
            bar.close()
            if executor is not None:
                executor.shutdown(cancel_futures=True)
        _write_tables(tmp, results, seed, n, size, dicom, pool)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_findings = sum(len(r["findings"]) for r in results)
    return StudySetSummary(
        out=out,
        n_images=n,
        n_readings=sum(len(r["readings"]) for r in results),
        n_findings=n_findings,
        no_finding_fraction=sum(1 for r in results if not r["labels"]) / n,
        seconds=time.perf_counter() - t_start,
    )


def _write_tables(out: Path, results: list[dict[str, Any]], seed: int, n: int, size: int, dicom: bool, pool: list[ReaderProfile]) -> None:
    results = sorted(results, key=lambda r: r["index"])
    label_rows, box_lines, finding_rows = [], [BBOX_HEADER], []
    phase_rows: dict[int, list[list[Any]]] = {1: [], 2: [], 3: []}
    for r in results:
        labels = r["labels"]
        label_rows.append(
            [
                r["image_id"],
                "|".join(labels) if labels else "No Finding",
                r["patient"],
                "PA",
                size,
                size,
                PIXEL_SPACING_MM,
                r["split"],
                *[int(c in labels) for c in FINDING_CLASSES],
            ]
        )
        for f in r["findings"]:
            x, y, w, h = f["box"]
            box_lines.append(f"{r['image_id']},{f['label']},{x},{y},{w},{h},,,")
            finding_rows.append([r["image_id"], f["label"], x, y, w, h, f["conspicuity"], "|".join(f["noticed_by"])])
        for rd in r["readings"]:
            phase_rows[rd["phase"]].append(rd["row"])
    atomic_write_text(out / "labels.csv", _csv_text(LABEL_COLUMNS, label_rows))
    atomic_write_text(out / "BBox_List_2017.csv", "\n".join(box_lines) + "\n")
    atomic_write_text(
        out / "findings.csv",
        _csv_text(["Image Index", "Finding Label", "x", "y", "w", "h", "conspicuity", "noticed_by"], finding_rows),
    )
    for phase, rows in phase_rows.items():
        atomic_write_text(out / "reflacx" / "main_data" / f"metadata_phase_{phase}.csv", _csv_text(REFLACX_METADATA_COLUMNS, rows))
    manifest = {
        "generator": "gazerad.synth",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_images": n,
        "size": size,
        "pixel_spacing_mm": PIXEL_SPACING_MM,
        "classes": list(FINDING_CLASSES),
        "dicom": dicom,
        "readers": [p.__dict__ for p in pool],
        "coordinate_convention": "x = column, y = row, origin at the top-left corner of the top-left pixel (gazerad.coords)",
    }
    atomic_write_text(out / "dataset.json", json.dumps(manifest, indent=2) + "\n")
