"""Small trees in the public data sets' own layouts, built from a synthetic study set.

The file names, folder depths and columns are those of the downloads (NIH ChestX-ray14,
MIMIC-CXR-JPG / MIMIC-CXR, REFLACX, EGD-CXR); the images are the synthetic phantoms under
real-looking names. Each builder returns what a test needs to check the readers.
"""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from gazerad.data.study import read_labels_table

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],"
)


def _grey8(src: Path) -> Image.Image:
    a = np.asarray(Image.open(src)).astype(np.float64)
    return Image.fromarray(np.round(255 * (a - a.min()) / max(np.ptp(a), 1)).astype(np.uint8), "L")


def _rows(studies: Path) -> list[dict[str, str]]:
    with (studies / "labels.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def nih_tree(studies: Path, root: Path, rgba: int = 2, la: int = 1, missing: int = 1, v2020: bool = True, lists: bool = True) -> dict:
    """NIH ChestX-ray14: ``Data_Entry_2017_v2020.csv`` (or ``Data_Entry_2017.csv``, with
    its trailing comma), ``images_001/images/`` and ``images_002/images/`` (8-bit PNGs; the
    first ``rgba`` as RGBA and the next ``la`` as grey+alpha), ``train_val_list.txt`` /
    ``test_list.txt`` from the synthetic split, ``BBox_List_2017.csv`` as is. The last
    ``missing`` rows' images are not written.

    Returns ``{"names", "missing", "rgba", "la", "splits", "findings"}``.
    """
    rows = _rows(studies)
    root.mkdir(parents=True)
    names = [r["Image Index"] for r in rows]
    lines = [NIH_HEADER if not v2020 else NIH_HEADER.rstrip(",")]
    for r in rows:
        w = h = 2048 + 500 * (int(r["Patient ID"]) % 2)  # originals of two sizes, 0.139 mm pixels
        end = "," if not v2020 else ""
        lines.append(f"{r['Image Index']},{r['Finding Labels']},0,{int(r['Patient ID'])},58,M,{r['View Position']},{w},{h},0.139,0.139{end}")
    (root / ("Data_Entry_2017_v2020.csv" if v2020 else "Data_Entry_2017.csv")).write_text("\n".join(lines) + "\n")
    gone = names[len(names) - missing :] if missing else []
    for k, name in enumerate(names):
        if name in gone:
            continue
        folder = root / f"images_{1 + k * 2 // len(names):03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        im = _grey8(studies / "images" / name)
        if k < rgba:
            im = im.convert("RGBA")
        elif k < rgba + la:
            im = im.convert("LA")
        im.save(folder / name)
    if lists:
        tv = [r["Image Index"] for r in rows if r["split"] in ("train", "validate")]
        te = [r["Image Index"] for r in rows if r["split"] == "test"]
        (root / "train_val_list.txt").write_text("\n".join(tv) + "\n")
        (root / "test_list.txt").write_text("\n".join(te) + "\n")
    shutil.copy(studies / "BBox_List_2017.csv", root / "BBox_List_2017.csv")
    t = read_labels_table(studies / "labels.csv")
    return {
        "names": names,
        "missing": gone,
        "rgba": names[:rgba],
        "la": names[rgba : rgba + la],
        "splits": {r["Image Index"]: r["split"] for r in rows},
        "findings": dict(zip(t.names, t.findings)),
    }


def dicom_id(k: int) -> str:
    """A MIMIC-CXR-looking ``dicom_id`` (five dash-separated hex groups)."""
    return f"{0x02AA804E + k:08x}-bde0afdd-112c0b34-7bc16630-{0x4E384014 + 7 * k:08x}"


def mimic_tree(studies: Path, root: Path, suffix: str = ".jpg", tables: bool = True) -> dict:
    """MIMIC-CXR-JPG (``suffix`` ``.jpg``) or MIMIC-CXR (``.dcm``, the synthetic DICOM
    copies): ``files/p1N/p1NNNNNNN/s5NNNNNNN/<dicom_id><suffix>``, two studies of one
    patient for every other image; with ``tables``, ``mimic-cxr-2.0.0-split.csv.gz`` and
    ``mimic-cxr-2.0.0-chexpert.csv.gz`` (CheXpert columns: 1.0, 0.0, -1.0 or blank).

    Returns ``{"ids": {Image Index: dicom_id}, "paths", "subject", "study", "labels", "splits"}``.
    """
    rows = _rows(studies)
    classes = [c for c in read_labels_table(studies / "labels.csv").classes]
    ids, paths, subject, study, labels, splits = {}, {}, {}, {}, {}, {}
    for k, r in enumerate(rows):
        did = dicom_id(k)
        sub = 10000032 + (k // 2) * 1000  # two images (two studies) per patient
        stu = 50414267 + k
        folder = root / "files" / f"p{str(sub)[:2]}" / f"p{sub}" / f"s{stu}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = r["Image Index"].rsplit(".", 1)[0]
        if suffix == ".dcm":
            shutil.copy(studies / "images_dicom" / f"{stem}.dcm", folder / f"{did}.dcm")
        else:
            _grey8(studies / "images" / r["Image Index"]).save(folder / f"{did}.jpg", quality=95)
        ids[r["Image Index"]], paths[did] = did, folder / f"{did}{suffix}"
        subject[did], study[did] = str(sub), str(stu)
        labels[did] = [c for c in classes if r[c] == "1"]
        splits[did] = splits.get(dicom_id(k - 1), r["split"]) if k % 2 else r["split"]  # patient-wise, as MIMIC's
    if tables:
        split_lines = ["dicom_id,study_id,subject_id,split"] + [f"{d},{study[d]},{subject[d]},{splits[d]}" for d in paths]
        with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt") as fh:
            fh.write("\n".join(split_lines) + "\n")
        chex = ["Atelectasis", *classes, "No Finding", "Support Devices"]
        lines = ["subject_id,study_id," + ",".join(chex)]
        for k, d in enumerate(paths):
            cells = []
            for c in chex:
                if c in labels[d]:
                    cells.append("1.0")
                elif c == "No Finding":
                    cells.append("" if labels[d] else "1.0")
                else:
                    cells.append(("-1.0", "0.0", "")[k % 3])  # uncertain, negative, blank: all negative
            lines.append(f"{subject[d]},{study[d]}," + ",".join(cells))
        with gzip.open(root / "mimic-cxr-2.0.0-chexpert.csv.gz", "wt") as fh:
            fh.write("\n".join(lines) + "\n")
    return {"ids": ids, "paths": paths, "subject": subject, "study": study, "labels": labels, "splits": splits}


def reflacx_tree(studies: Path, root: Path, ids: dict[str, str], mimic: dict) -> Path:
    """REFLACX as downloaded: ``main_data/metadata_phase_N.csv`` whose ``image`` is the
    MIMIC-CXR DICOM path and ``dicom_id`` the image's, ``main_data/<id>/fixations.csv`` (and
    the other reading files) copied from the synthetic readings, ``gaze_data/<id>/gaze.csv``.
    Returns ``root``."""
    src = studies / "reflacx" / "main_data"
    (root / "main_data").mkdir(parents=True)
    for meta in sorted(src.glob("metadata_phase_*.csv")):
        with meta.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        out = []
        for r in rows:
            did = ids[r["image"].rsplit("/", 1)[-1]]
            rel = mimic["paths"][did].relative_to(mimic["paths"][did].parents[3]).with_suffix(".dcm")
            out.append(
                {
                    "id": r["id"],
                    "split": r["split"],
                    "eye_tracking_data_discarded": r["eye_tracking_data_discarded"],
                    "image": f"physionet.org/files/mimic-cxr/2.0.0/files/{rel.as_posix()}",
                    "dicom_id": did,
                    "subject_id": mimic["subject"][did],
                    "study_id": mimic["study"][did],
                    "image_size_x": r["image_size_x"],
                    "image_size_y": r["image_size_y"],
                    "Mass": "0",
                    "Nodule": "0",
                }
            )
            shutil.copytree(src / r["id"], root / "main_data" / r["id"], ignore=shutil.ignore_patterns("gaze.csv"))
            if (src / r["id"] / "gaze.csv").is_file():
                (root / "gaze_data" / r["id"]).mkdir(parents=True, exist_ok=True)
                shutil.copy(src / r["id"] / "gaze.csv", root / "gaze_data" / r["id"] / "gaze.csv")
        with (root / "main_data" / meta.name).open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(out[0]))
            w.writeheader()
            w.writerows(out)
    return root


def egd_tree(studies: Path, root: Path, ids: dict[str, str], mimic: dict) -> Path:
    """EGD-CXR as downloaded: ``fixations.csv`` (Gazepoint columns, ``X_ORIGINAL`` /
    ``Y_ORIGINAL`` in image pixels) of the first radiologist's synthetic readings and
    ``master_sheet.csv`` (``dicom_id``, ``path``, paddings, labels). Returns ``root``."""
    src = studies / "reflacx" / "main_data"
    root.mkdir(parents=True)
    fix, sheet, seen = [], [], set()
    for meta in sorted(src.glob("metadata_phase_*.csv")):
        with meta.open(newline="") as fh:
            for r in csv.DictReader(fh):
                did = ids[r["image"].rsplit("/", 1)[-1]]
                if did in seen:
                    continue
                seen.add(did)
                with (src / r["id"] / "fixations.csv").open(newline="") as f2:
                    for k, f in enumerate(csv.DictReader(f2)):
                        t0, t1 = float(f["timestamp_start_fixation"]), float(f["timestamp_end_fixation"])
                        x, y = float(f["x_position"]), float(f["y_position"])
                        fix.append([did, k, f"{x / 1920:.5f}", f"{y / 1080:.5f}", f"{t0:.3f}", f"{t1 - t0:.3f}", k, 1, f"{x:.1f}", f"{y:.1f}"])
                rel = mimic["paths"][did].relative_to(mimic["paths"][did].parents[3]).with_suffix(".dcm")
                sheet.append([did, f"files/{rel.as_posix()}", mimic["study"][did], mimic["subject"][did], 0, 0, 420, 420, int(not mimic["labels"][did]), 0, 0])
    with (root / "fixations.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["DICOM_ID", "CNT", "FPOGX", "FPOGY", "FPOGS", "FPOGD", "FPOGID", "FPOGV", "X_ORIGINAL", "Y_ORIGINAL"])
        w.writerows(fix)
    with (root / "master_sheet.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        pads = ["image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad"]
        w.writerow(["dicom_id", "path", "study_id", "patient_id", *pads, "Normal", "CHF", "pneumonia"])
        w.writerows(sheet)
    return root
