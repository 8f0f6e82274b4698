"""NIH ChestX-ray14 and MIMIC-CXR(-JPG) roots read in place, REFLACX / EGD-CXR downloads as
gaze, ``gazerad datasets check`` and the server's linked study folder, on small trees with
the downloads' own names, depths and columns (:mod:`tests.support.layouts`)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gazerad.cli import main
from gazerad.data.check import check_dataset, format_report
from gazerad.data.layouts import NIH_CLASSES, LayoutFolder, detect_layout, link_study_folder, open_study_folder, patient_split
from gazerad.errors import InputError
from tests.support.layouts import dicom_id, egd_tree, mimic_tree, nih_tree, reflacx_tree


@pytest.fixture(scope="module")
def trees(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("layouts")
    nih = nih_tree(studies, root / "ChestX-ray14")
    mimic = mimic_tree(studies, root / "mimic-cxr-jpg" / "2.0.0")
    reflacx = reflacx_tree(studies, root / "reflacx" / "1.0.0", mimic["ids"], mimic)
    egd = egd_tree(studies, root / "egd-cxr" / "1.0.0", mimic["ids"], mimic)
    return {"root": root, "nih": nih, "mimic": mimic, "reflacx": reflacx, "egd": egd}


# ---------------------------------------------------------------------------- NIH


def test_nih_root_reads_labels_official_split_and_images_in_nested_folders(trees: dict, studies: Path) -> None:
    root = trees["root"] / "ChestX-ray14"
    assert detect_layout(root) == "nih"
    f = open_study_folder(root)
    assert isinstance(f, LayoutFolder) and f.layout == "nih"
    t = f.table
    nih = trees["nih"]
    assert t.classes == list(NIH_CLASSES) and len(t.classes) == 14
    assert t.names == [n for n in nih["names"] if n not in nih["missing"]]
    assert f.missing == [(len(nih["names"]), nih["missing"][0])]
    for k, n in enumerate(t.names):
        assert t.findings[k] == nih["findings"][n]
        assert [c for c, v in zip(t.classes, t.labels[k]) if v] == nih["findings"][n]
        official = nih["splits"][n]
        # test_list.txt is test; train_val_list.txt is train or (10 % of patients) validate
        assert t.splits[k] == "test" if official == "test" else t.splits[k] in ("train", "validate")
        assert f.find_image(n).parent.name == "images" and f.find_image(n).parent.parent.name.startswith("images_00")
        assert f.find_image(n[: -len(".png")]) == f.find_image(n)  # an id without suffix works too
    pid = {n: f.meta[n]["Patient ID"] for n in t.names}
    for k, n in enumerate(t.names):
        if t.splits[k] != "test":
            assert t.splits[k] == patient_split(pid[n], official_train=True)
    assert {p.parent.parent.name for p in f.index().values()} == {"images_001", "images_002"}
    # spacing of the 1024 px PNG: the original spacing times original side / 1024
    n0 = t.names[0]
    w = float(f.meta[n0]["Width"])
    assert f.spacing[n0] == pytest.approx((0.139 * w / 1024, 0.139 * w / 1024), rel=1e-9)
    assert any("test_list.txt" in note for note in f.notes)


def test_nih_rgba_and_grey_alpha_pngs_read_as_grey_luma(trees: dict) -> None:
    from gazerad.io.xray import read_xray

    f = open_study_folder(trees["root"] / "ChestX-ray14")
    assert "converted_from" not in read_xray(f.find_image(trees["nih"]["names"][5]))[1]
    for name in trees["nih"]["rgba"] + trees["nih"]["la"]:
        p = f.find_image(name)
        assert Image.open(p).mode in ("RGBA", "LA")
        img, meta = read_xray(p)
        assert meta["converted_from"] == Image.open(p).mode  # and the reader says so
        grey = np.asarray(Image.open(p).convert("L")).astype(np.float32)
        assert img.ndim == 2 and np.allclose(img * 255.0 if img.max() <= 1.0 else img, grey, atol=0.51)


def test_nih_2017_table_trailing_comma_and_no_lists_split_by_patient(studies: Path, tmp_path: Path) -> None:
    nih_tree(studies, tmp_path / "nih", v2020=False, lists=False, missing=0)
    f = open_study_folder(tmp_path / "nih")
    t = f.table
    assert f.labels_csv.name == "Data_Entry_2017.csv" and len(t) == 24 and not f.missing
    assert t.splits == [patient_split(f.meta[n]["Patient ID"]) for n in t.names]
    assert any("absent" in n for n in f.notes) and any("2020 revision" in n for n in f.notes)
    # both tables present: the 2020 revision is read
    shutil.copy(f.labels_csv, tmp_path / "nih" / "Data_Entry_2017_v2020.csv")
    assert open_study_folder(tmp_path / "nih").labels_csv.name == "Data_Entry_2017_v2020.csv"


def test_nih_box_list_infiltrate_is_infiltration(tmp_path: Path) -> None:
    from gazerad.data.nih import read_bbox_list

    p = tmp_path / "BBox_List_2017.csv"
    p.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00000001_000.png,Infiltrate,10,20,30,40,,,\n00000001_000.png,Mass,1,2,3,4,,,\n")
    assert read_bbox_list(p) == {"00000001_000.png": [("Infiltration", (10.0, 20.0, 30.0, 40.0)), ("Mass", (1.0, 2.0, 3.0, 4.0))]}


def test_nih_box_list_refuses_a_repeated_box(tmp_path: Path) -> None:
    from gazerad.data.nih import read_bbox_list

    p = tmp_path / "BBox_List_2017.csv"
    rows = ["00000001_000.png,Mass,1,2,3,4", "00000001_000.png,Mass,1,2,3,5", "00000001_000.png,Mass,1.0,2,3,4"]
    p.write_text("Image Index,Finding Label,x,y,w,h\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError) as e:  # it would count twice in T(IoU)
        read_bbox_list(p)
    assert str(p) in str(e.value) and "row 3" in str(e.value) and "repeats row 1" in str(e.value)
    p.write_text("Image Index,Finding Label,x,y,w,h\n" + "\n".join(rows[:2] + ["00000001_000.png,Nodule,1,2,3,4"]) + "\n")
    assert len(read_bbox_list(p)["00000001_000.png"]) == 3  # another size or finding is another box


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda s: s.replace("Nodule", "Nodul", 1), "unknown finding(s) ['Nodul']"),
        (lambda s: s.replace("\n00000002_000.png", "\n00000001_000.png", 1), "duplicate 'Image Index'"),
        (lambda s: s.replace("\n00000002_000.png", "\n../00000002_000.png", 1), "'Image Index'"),
        (lambda s: s.replace("Finding Labels", "Findings", 1), "missing column(s) ['Finding Labels']"),
        (lambda s: s.replace(",0.139,0.139", ",nan,0.139", 1), "NaN/inf"),
    ],
)
def test_nih_bad_tables_name_file_and_row(studies: Path, tmp_path: Path, edit, words: str) -> None:
    nih_tree(studies, tmp_path / "nih", missing=0)
    p = tmp_path / "nih" / "Data_Entry_2017_v2020.csv"
    p.write_text(edit(p.read_text()))
    with pytest.raises(InputError) as e:
        _ = open_study_folder(tmp_path / "nih").table
    assert words in str(e.value) and "Data_Entry_2017_v2020.csv" in str(e.value)


def test_an_image_in_two_folders_is_an_error(studies: Path, tmp_path: Path) -> None:
    nih_tree(studies, tmp_path / "nih", missing=0)
    (tmp_path / "nih" / "images_003" / "images").mkdir(parents=True)
    shutil.copy(tmp_path / "nih" / "images_001" / "images" / "00000001_000.png", tmp_path / "nih" / "images_003" / "images")
    with pytest.raises(InputError, match="00000001_000.png.*also at.*ids must be unique"):
        _ = open_study_folder(tmp_path / "nih").table


# ---------------------------------------------------------------------------- MIMIC


def test_mimic_jpg_root_reads_split_and_chexpert_u_zeros(trees: dict) -> None:
    root = trees["root"] / "mimic-cxr-jpg" / "2.0.0"
    assert detect_layout(root) == "mimic"
    f = open_study_folder(root)
    t, m = f.table, trees["mimic"]
    assert set(t.names) == set(m["paths"]) and not f.missing
    assert "Atelectasis" in t.classes and "No Finding" not in t.classes
    assert t.labels[:, t.classes.index("Atelectasis")].sum() == 0  # only -1.0 / 0.0 / blank cells: U-Zeros
    assert t.labels[:, t.classes.index("Support Devices")].sum() == 0
    for k, d in enumerate(t.names):
        assert t.findings[k] == sorted(m["labels"][d], key=t.classes.index)
        assert t.splits[k] == m["splits"][d]
        assert f.find_image(d) == m["paths"][d] and f.meta[d]["Patient ID"] == m["subject"][d]
        assert f.find_image(f"{d}.jpg") == m["paths"][d]


def test_mimic_dicom_root_without_tables(studies: Path, tmp_path: Path) -> None:
    from gazerad.io.xray import read_xray

    m = mimic_tree(studies, tmp_path / "mimic-cxr" / "2.0.0", suffix=".dcm", tables=False)
    f = open_study_folder(tmp_path / "mimic-cxr" / "2.0.0")
    t = f.table
    assert t.classes == [] and sorted(t.names) == sorted(m["paths"])
    assert t.splits == [patient_split(m["subject"][d]) for d in t.names]
    assert all(f.find_image(d).suffix == ".dcm" for d in t.names) and read_xray(f.find_image(t.names[0]))[0].ndim == 2
    with pytest.raises(InputError, match=r"no mimic-cxr-2.0.0-chexpert.csv\[.gz\] here: no class labels") as e:
        from gazerad.pretrain.data import read_study_table

        read_study_table(tmp_path / "mimic-cxr" / "2.0.0")
    assert str(e.value).startswith(str(tmp_path / "mimic-cxr" / "2.0.0") + ":") and "split.csv" not in str(e.value)


def test_mimic_bad_split_value_names_the_file(studies: Path, tmp_path: Path) -> None:
    root = tmp_path / "m"
    mimic_tree(studies, root)
    p = root / "mimic-cxr-2.0.0-split.csv.gz"
    text = gzip.open(p, "rt").read().replace(",train\n", ",training\n", 1)
    with gzip.open(p, "wt") as fh:
        fh.write(text)
    with pytest.raises(InputError, match=r"mimic-cxr-2.0.0-split.csv.gz.*'training' is not train, validate or test"):
        _ = open_study_folder(root).table


def test_unknown_and_gaze_only_folders_say_what_they_are(trees: dict, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown data layout.*Data_Entry_2017"):
        detect_layout(tmp_path)
    for g in ("reflacx", "egd"):
        with pytest.raises(InputError, match="this is gaze data.*--gaze"):
            detect_layout(trees[g])


def test_reflacx_and_egd_downloads_load_as_gaze_keyed_by_dicom_id(trees: dict, studies: Path) -> None:
    from gazerad.gaze.importers import load_gaze

    ref = load_gaze(trees["reflacx"])  # the download root: main_data/ is found
    own = load_gaze(studies)
    assert sorted(ref.images) == sorted(trees["mimic"]["ids"][i] for i in own.images)
    assert len(ref.records()) == len(own.records())
    egd = load_gaze(trees["egd"])  # fixations.csv + master_sheet.csv
    assert set(egd.images) <= set(trees["mimic"]["paths"]) and {r.reader_id for r in egd.records()} == {"EGD"}
    rec = egd.records()[0]
    assert rec.screen["image_left_pad"] == 420  # the master sheet's paddings come along (EGD's kernel)
    from gazerad.gaze.egd_cxr import EGD_KERNEL_PX, egd_sigma

    assert egd_sigma(rec.screen, (512, 512)) == pytest.approx(EGD_KERNEL_PX * 512 / 1080)


# ---------------------------------------------------------------------------- datasets check


def test_check_reports_counts_conversions_and_the_missing_file(trees: dict, capsys: pytest.CaptureFixture) -> None:
    root = trees["root"] / "ChestX-ray14"
    rep = check_dataset(root)
    nih = trees["nih"]
    assert rep["layout"] == "nih"
    assert rep["images"]["listed"] == 24 and rep["images"]["found"] == 23 and rep["images"]["missing"] == nih["missing"]
    assert rep["images"]["converted"] == {"RGBA": 2, "LA": 1} and rep["images"]["unreadable"] == []
    assert rep["labels"]["positives"]["Mass"] == sum("Mass" in v for n, v in nih["findings"].items() if n not in nih["missing"])
    assert sum(rep["splits"].values()) == 23 and rep["patients"]["in_two_splits"] == []
    assert rep["boxes"]["n"] > 0 and rep["boxes"]["unknown_images"] == []
    assert len(rep["problems"]) == 1 and "1 listed images are missing: 00000024_000.png" in rep["problems"][0]
    text = format_report(rep)
    assert "converted" in text and "RGBA 2" in text and text.endswith("BROKEN: 1 problem(s)")
    # the CLI prints the same table and exits 1 on a broken tree
    assert main(["datasets", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "missing" in out and "00000024_000.png" in out and "BROKEN" in out


def test_check_mimic_with_reflacx_gaze_is_sound_and_written_as_json(trees: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = trees["root"] / "mimic-cxr-jpg" / "2.0.0"
    js = tmp_path / "report.json"
    assert main(["datasets", "check", str(root), "--gaze", str(trees["reflacx"]), "--deep", "--json", str(js)]) == 0
    rep = json.loads(js.read_text())
    assert rep["problems"] == [] and rep["images"]["checked"] == "decoded"
    assert rep["gaze"]["images"] == 24 and rep["gaze"]["images_in_data_set"] == 24 and len(rep["gaze"]["readers"]) >= 2
    assert "OK: no problems found" in capsys.readouterr().out


def test_check_says_when_gaze_gives_nothing_to_use(trees: dict, studies: Path, tmp_path: Path) -> None:
    root = trees["root"] / "mimic-cxr-jpg" / "2.0.0"
    egd = tmp_path / "egd"
    shutil.copytree(trees["egd"], egd)
    fix = egd / "fixations.csv"
    full = fix.read_text()
    fix.write_text(full.splitlines()[0] + "\n")  # header only
    rep = check_dataset(root, gaze=egd)
    assert any("has no usable reading" in pr for pr in rep["problems"]), rep["problems"]
    lines = full.splitlines()
    cells = lines[1].split(",")
    cells[-2] = "99999"  # X_ORIGINAL far outside the image
    fix.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    rep = check_dataset(root, gaze=egd)
    assert any("1 fixations lie outside their image" in pr and "(99999," in pr for pr in rep["problems"]), rep["problems"]
    assert not any("dropped as faulty" in pr for pr in rep["problems"])
    rows = full.splitlines()  # times in a wrong unit: most fixations past 24 h
    rows[1:] = [",".join(c if k not in (4, 5) else f"{float(c) * 1e5:g}" for k, c in enumerate(r.split(","))) for r in rows[1:]]
    fix.write_text("\n".join(rows) + "\n")
    rep = check_dataset(root, gaze=egd)
    assert any("more fixations were dropped as faulty (implausible_time" in pr for pr in rep["problems"]), rep["problems"]
    other = tmp_path / "other"  # readings of images of another data set
    nih = nih_tree(studies, other / "nih", missing=0)
    fix.write_text(full)
    rep = check_dataset(other / "nih", gaze=egd)
    assert any("none of the 24 images" in pr and "is in the data set" in pr for pr in rep["problems"]), (rep["problems"], nih["names"][:1])


def test_check_finds_corrupt_images_leaks_and_foreign_boxes(studies: Path, tmp_path: Path) -> None:
    root = tmp_path / "nih"
    nih_tree(studies, root, missing=0)
    (root / "images_002" / "images" / "00000020_000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with (root / "BBox_List_2017.csv").open("a") as fh:
        fh.write("99999999_000.png,Mass,1,2,3,4,,,\n")
    with (root / "BBox_List_2017.csv").open("a") as fh:
        fh.write("00000001_000.png,Mass,500,600,116,65,,,\n")  # past the bottom right of the 512 px film
    rep = check_dataset(root)
    text = " | ".join(rep["problems"])
    assert "unreadable image 00000020_000.png" in text and "99999999_000.png" in text
    assert "1 boxes lie outside their image: 00000001_000.png Mass [500, 600, 116, 65] in 512 x 512" in text
    # the deep check decodes: a truncated PNG with a sound header is found only then
    good = root / "images_002" / "images" / "00000021_000.png"
    good.write_bytes(good.read_bytes()[:300])
    assert not any("00000021_000.png" in p for p in check_dataset(root)["problems"])
    assert any("00000021_000.png" in p for p in check_dataset(root, deep=True)["problems"])
    # a patient on both sides of a split is leakage
    m = tmp_path / "m"
    mimic_tree(studies, m)
    p = m / "mimic-cxr-2.0.0-split.csv.gz"
    lines = gzip.open(p, "rt").read().splitlines()
    first = lines[1].rsplit(",", 1)[1]
    lines[2] = lines[2].rsplit(",", 1)[0] + ("," + ("test" if first != "test" else "train"))  # the second image of patient 1
    with gzip.open(p, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    assert any("more than one split (leakage): 10000032" in q for q in check_dataset(m)["problems"])


# ---------------------------------------------------------------------------- the server's linked study folder


def test_linked_study_folder_links_tables_and_gaze(trees: dict, tmp_path: Path) -> None:
    from gazerad.data.study import read_labels_table
    from gazerad.serving.data import DatastoreView

    root = trees["root"] / "mimic-cxr-jpg" / "2.0.0"
    view = link_study_folder(root, tmp_path / "view", gaze=trees["reflacx"])
    links = sorted((view / "images").iterdir())
    assert len(links) == 24 and all(p.is_symlink() and p.suffix == ".jpg" for p in links)
    assert all(Path(os.readlink(p)) == trees["mimic"]["paths"][p.stem].resolve() for p in links)
    t = read_labels_table(view / "labels.csv")
    src = open_study_folder(root).table
    assert t.names == [f"{n}.jpg" for n in src.names] and t.classes == src.classes and np.array_equal(t.labels, src.labels) and t.splits == src.splits
    dv = DatastoreView(view / "images")
    assert sorted(dv.images()) == sorted(trees["mimic"]["paths"]) and len(dv.gaze()) == 24
    # refreshed in place: a link whose image left the data set goes, the rest stay
    (view / "images" / "stale.jpg").symlink_to(links[0].resolve())
    link_study_folder(root, view)
    assert not (view / "images" / "stale.jpg").exists() and len(list((view / "images").iterdir())) == 24
    nview = link_study_folder(trees["root"] / "ChestX-ray14", tmp_path / "nview")
    boxes = DatastoreView(nview / "images").boxes()
    assert boxes and set(boxes) <= {p.stem for p in (nview / "images").iterdir()}
    with pytest.raises(InputError, match="study folder already"):
        link_study_folder(view, tmp_path / "again")


def test_dicom_ids_stay_safe_names(trees: dict) -> None:
    from gazerad.io.confine import is_safe_name

    assert all(is_safe_name(dicom_id(k)) for k in range(50))


def test_check_with_gaze_needs_only_the_images_it_reads(studies: Path, tmp_path: Path) -> None:
    import csv

    m = mimic_tree(studies, tmp_path / "m")
    ref = reflacx_tree(studies, tmp_path / "r", m["ids"], m)
    no_gaze, with_gaze = dicom_id(0), dicom_id(1)
    for meta in (ref / "main_data").glob("metadata_phase_*.csv"):  # image 0 loses its readings ...
        rows = list(csv.DictReader(meta.open()))
        with meta.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(r for r in rows if r["dicom_id"] != no_gaze)
    m["paths"][no_gaze].unlink()  # ... and its file: a partial download REFLACX does not need
    rep = check_dataset(tmp_path / "m", gaze=ref)
    assert rep["problems"] == [] and rep["images"]["missing"] == [no_gaze] and any("no gaze readings" in n for n in rep["notes"])
    assert check_dataset(tmp_path / "m")["problems"]  # without --gaze every listed image is needed
    m["paths"][with_gaze].unlink()
    rep = check_dataset(tmp_path / "m", gaze=ref)
    assert len(rep["problems"]) == 1 and f"1 images with gaze readings are missing: {with_gaze}" in rep["problems"][0]


# ---------------------------------------------------------------------------- second fuzzing pass (session 29)
def test_tables_refuse_repeated_columns_extra_fields_and_unreadable_bytes(tmp_path: Path) -> None:
    from gazerad.data._table import read_rows

    p = tmp_path / "t.csv"
    cases = [
        ("Image Index,Mass,Mass\na.png,1,0\n", "column(s) ['Mass'] appear more than once"),  # the last one's values won
        ("Image Index,Mass\na.png,1,1\n", "has 3 fields, more than the header's 2"),
        ('Image Index,Mass\n"a.png' + "x" * 140_000 + "\n", "is not a readable CSV file"),
    ]
    for text, words in cases:
        p.write_text(text)
        with pytest.raises(InputError, match=None) as e:
            read_rows(p, ["Image Index"])
        assert str(p) in str(e.value) and words in str(e.value), str(e.value)
    p.write_text("Image Index,Mass,,,\na.png,1,,,\n")  # NIH's trailing empty columns stay fine
    assert read_rows(p, ["Image Index"])[1] == [{"Image Index": "a.png", "Mass": "1", "": ""}]
    gz = tmp_path / "t.csv.gz"
    data = bytearray(gzip.compress(("Image Index,Mass\n" + "a.png,1\n" * 500).encode()))
    data[20:60] = bytes(40)
    gz.write_bytes(bytes(data))
    with pytest.raises(InputError, match="not a readable gzip file") as e:
        read_rows(gz, ["Image Index"])
    assert str(gz) in str(e.value)
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(InputError, match="is a folder, not a file"):
        read_rows(tmp_path / "d.csv", [])


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("train_val_list.txt", lambda s: s.replace("\n", " "), "names on one line: one image name per line"),
        ("test_list.txt", lambda s: s + "00000001_000.png\n", "is in train_val_list.txt and test_list.txt"),
        ("test_list.txt", lambda s: "\udcff", "is not a UTF-8 text file"),
        ("test_list.txt", None, "is a folder, not a file"),
    ],
    ids=["one-line", "in-both", "not-utf8", "folder"],
)
def test_nih_split_lists_are_checked(studies: Path, tmp_path: Path, name: str, data, words: str) -> None:
    nih_tree(studies, tmp_path / "nih", missing=0)
    p = tmp_path / "nih" / name
    if data is None:
        p.unlink()
        p.mkdir()
    else:
        p.write_bytes(data(p.read_text()).encode("utf-8", "surrogateescape"))
    if name == "test_list.txt" and data is not None and "both" in words:
        tv = (tmp_path / "nih" / "train_val_list.txt").read_text()
        (tmp_path / "nih" / "train_val_list.txt").write_text(tv if "00000001_000.png" in tv else tv + "00000001_000.png\n")
    with pytest.raises(InputError) as e:
        _ = open_study_folder(tmp_path / "nih").table
    assert words in str(e.value) and name in str(e.value), str(e.value)


def test_nih_lists_naming_other_images_and_unlisted_images_are_said(studies: Path, tmp_path: Path) -> None:
    nih_tree(studies, tmp_path / "nih", missing=0)
    (tmp_path / "nih" / "test_list.txt").write_text("99999999_000.png\n")
    f = open_study_folder(tmp_path / "nih")
    t = f.table
    n_unlisted = t.splits.count("unlisted")
    assert n_unlisted > 0
    assert any("1 names in the split lists are not in Data_Entry_2017_v2020.csv" in n for n in f.notes), f.notes
    assert any(f"{n_unlisted} of {len(t)} images" in n and "in neither list" in n for n in f.notes), f.notes


def test_nih_spacing_must_be_plausible(studies: Path, tmp_path: Path) -> None:
    nih_tree(studies, tmp_path / "nih", missing=0)
    p = tmp_path / "nih" / "Data_Entry_2017_v2020.csv"
    p.write_text(p.read_text().replace(",0.139,0.139", ",1e308,0.139", 1))
    with pytest.raises(InputError, match=r"spacing 1e\+308 x 0.139 in \(0, 10\] mm") as e:
        _ = open_study_folder(tmp_path / "nih").table
    assert "row 1" in str(e.value)


def _rewrite_gz(p: Path, edit) -> None:
    text = gzip.decompress(p.read_bytes()).decode()
    with gzip.open(p, "wt") as fh:
        fh.write(edit(text))


def test_mimic_tables_that_contradict_the_files_are_errors(studies: Path, tmp_path: Path) -> None:
    root = tmp_path / "mimic"
    m = mimic_tree(studies, root)
    first = next(iter(m["paths"]))
    chex = root / "mimic-cxr-2.0.0-chexpert.csv.gz"
    split = root / "mimic-cxr-2.0.0-split.csv.gz"
    keep_chex, keep_split = chex.read_bytes(), split.read_bytes()
    _rewrite_gz(chex, lambda s: s + s.splitlines()[1] + "\n")
    with pytest.raises(InputError, match="duplicate study_id") as e:
        _ = open_study_folder(root).table
    assert chex.name in str(e.value)
    chex.write_bytes(keep_chex)
    _rewrite_gz(chex, lambda s: s.replace(",5041", ",9041"))  # another download's table: no study matches
    with pytest.raises(InputError, match="no study of the 24 images has a row"):
        _ = open_study_folder(root).table
    chex.write_bytes(keep_chex)
    _rewrite_gz(split, lambda s: s.replace(f"{first},{m['study'][first]}", f"{first},59999999", 1))
    with pytest.raises(InputError, match="study_id '59999999' of .* contradicts its image's folder") as e:
        _ = open_study_folder(root).table
    assert "row 1" in str(e.value)
    split.write_bytes(keep_split)
    (root / "mimic-cxr-2.0.0-split.csv").write_text(gzip.decompress(keep_split).decode())
    f = open_study_folder(root)
    assert len(f.table) == 24 and any("mimic-cxr-2.0.0-split.csv and mimic-cxr-2.0.0-split.csv.gz are both present" in n for n in f.notes)


def test_a_bad_box_list_leaves_the_linked_view_untouched(studies: Path, tmp_path: Path) -> None:
    nih_tree(studies, tmp_path / "nih", missing=0)
    b = tmp_path / "nih" / "BBox_List_2017.csv"
    good = b.read_text()
    view = link_study_folder(tmp_path / "nih", tmp_path / "view")
    before = sorted(p.relative_to(view).as_posix() for p in view.rglob("*"))
    labels = (view / "labels.csv").read_text()
    lines = good.splitlines()
    b.write_text("\n".join([lines[0], lines[1].replace(lines[1].split(",")[2], "nan", 1), *lines[2:]]) + "\n")
    (tmp_path / "nih" / "test_list.txt").write_text("\n")  # the table would change too
    with pytest.raises(InputError, match="NaN/inf"):
        link_study_folder(tmp_path / "nih", view)
    assert sorted(p.relative_to(view).as_posix() for p in view.rglob("*")) == before and (view / "labels.csv").read_text() == labels
    with pytest.raises(InputError, match="NaN/inf"):
        link_study_folder(tmp_path / "nih", tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    b.unlink()  # the box list is gone: so are the view's boxes
    link_study_folder(tmp_path / "nih", view)
    assert not (view / "BBox_List_2017.csv").exists()


def test_check_says_a_folder_in_place_of_the_box_list(studies: Path, tmp_path: Path) -> None:
    nih_tree(studies, tmp_path / "nih", missing=0)
    (tmp_path / "nih" / "BBox_List_2017.csv").unlink()
    (tmp_path / "nih" / "BBox_List_2017.csv").mkdir()
    rep = check_dataset(tmp_path / "nih")
    assert any("BBox_List_2017.csv: is a folder, not a file" in pr for pr in rep["problems"]), rep["problems"]
