"""gazerad.data.study, the one study-folder layer: labels.csv, splits, image lookup, ids;
and the trainers' / server's readers built on it. Real files in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gazerad.data import StudyFolder, find_image, image_id_of, image_suffix, image_suffixes, is_study_folder, read_labels_table
from gazerad.errors import InputError

HEADER = "Image Index,Finding Labels,Patient ID,split,Mass,Nodule"


def _png(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((8, 10), value, dtype=np.uint8)
    img[2:5, 3:7] = 255
    Image.fromarray(img).save(path, format="PNG")
    return path


def _study(root: Path, rows: list[str], header: str = HEADER, images: tuple[str, ...] | None = None) -> Path:
    """``root/labels.csv`` with ``header`` and ``rows``; a PNG under ``images/`` for every
    ``Image Index`` (or for ``images`` when given)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(header + "\n" + "".join(r + "\n" for r in rows))
    names = images if images is not None else tuple(r.split(",", 1)[0] for r in rows)
    for n in names:
        _png(root / "images" / n)
    return root


GOOD = [
    "a.png,Mass,1,train,1,0",
    "b.png,Mass|Nodule,2,Test,1.0,1",
    "c.png,No Finding,3,,0,",
    "d.png,Nodule,4,validate,0.0,1",
]


def test_happy_path_table_splits_lookup_and_trainer_reader(tmp_path: Path) -> None:
    from gazerad.attention.data import read_splits
    from gazerad.pretrain.data import read_study_table

    root = _study(tmp_path / "s", GOOD)
    assert is_study_folder(root) and not is_study_folder(root / "images")
    folder = StudyFolder(root)
    t = folder.table
    assert folder.table is t  # read once
    assert t.source == root / "labels.csv" and len(t) == 4
    assert t.names == ["a.png", "b.png", "c.png", "d.png"] and t.ids == ["a", "b", "c", "d"]
    assert t.classes == ["Mass", "Nodule"] and t.has_split
    assert t.labels.dtype == np.int64 and t.labels.tolist() == [[1, 0], [1, 1], [0, 0], [0, 1]]
    assert t.splits == ["train", "test", "train", "validate"]  # lower case; empty -> train
    assert t.findings == [["Mass"], ["Mass", "Nodule"], [], ["Nodule"]]
    assert t.subset("train").tolist() == [0, 2] and t.subset(["TEST", "validate"]).tolist() == [1, 3]
    assert t.subset("train").dtype == np.int64 and t.row("c.png") == 2 and "d.png" in t and "x.png" not in t
    assert t.split_of() == {"a.png": "train", "b.png": "test", "c.png": "train", "d.png": "validate"}
    assert t.by_image_id() == {"a": 0, "b": 1, "c": 2, "d": 3}
    paths = folder.image_paths()
    assert paths == [root / "images" / n for n in t.names] and all(p.is_file() for p in paths)
    assert folder.image_path("b") == root / "images" / "b.png"  # an id finds its file too

    st = read_study_table(root)
    assert st.root == root and st.ids == t.names and st.paths == paths and st.classes == t.classes
    assert st.splits == t.splits and np.array_equal(st.labels, t.labels)
    assert st.subset("train").tolist() == [0, 2] and st.subset(("test", "validate")).tolist() == [1, 3]
    assert read_splits(root) == t.split_of()

    # without class columns the table still reads (attention, serving); pre-training refuses it
    bare = _study(tmp_path / "bare", ["a.png,train", "b.png,test"], header="Image Index,split")
    assert read_labels_table(bare / "labels.csv").labels.shape == (2, 0)
    with pytest.raises(InputError, match="no 0/1 class columns") as e:
        read_study_table(bare)
    assert str(bare / "labels.csv") in str(e.value)


def test_nii_gz_id_suffixes_and_reading(tmp_path: Path) -> None:
    import SimpleITK as sitk

    from gazerad.io.xray import SUPPORTED_SUFFIXES, read_xray
    from gazerad.serving import data as serving_data

    assert image_suffixes() == tuple(SUPPORTED_SUFFIXES)  # the one table, in its order
    assert serving_data.IMAGE_SUFFIXES == image_suffixes() and serving_data.image_id_of is image_id_of
    assert image_id_of("scan.nii.gz") == "scan" and image_id_of("SCAN.NII.GZ") == "SCAN"
    assert image_id_of("scan.nii") == "scan" and image_id_of("x.dicom") == "x" and image_id_of("plain") == "plain"
    assert image_suffix("a.Nii.Gz") == ".nii.gz" and image_suffix("a.txt") is None

    root = tmp_path / "s"
    (root / "images").mkdir(parents=True)
    arr = np.arange(6 * 7, dtype=np.float32).reshape(6, 7)
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(root / "images" / "scan.nii.gz"))
    _png(root / "images" / "00000001_000.png")
    (root / "labels.csv").write_text("Image Index,split,Mass\nscan,train,1\n00000001_000.png,test,0\n")
    folder = StudyFolder(root)
    assert folder.table.ids == ["scan", "00000001_000"]
    p = folder.image_path("scan")
    assert p == root / "images" / "scan.nii.gz"
    img, _ = read_xray(p)
    assert img.shape == (6, 7)
    assert find_image(root / "images", "scan.nii.gz") == p  # a file name is found as is

    view = serving_data.DatastoreView(root / "images")  # the server: datastore = images/, labels.csv beside it
    assert sorted(view.images()) == ["00000001_000", "scan"] and view.image_path("scan") == p
    lab = view.labels()
    assert lab["classes"] == ["Mass"] and lab["source"] == str(root / "labels.csv")
    assert {k: v.tolist() for k, v in lab["labels"].items()} == {"scan": [1], "00000001_000": [0]}
    assert lab["splits"] == {"scan": "train", "00000001_000": "test"}


def test_missing_columns_and_files_are_named(tmp_path: Path) -> None:
    from gazerad.attention.data import read_splits
    from gazerad.pretrain.data import read_study_table

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="not a study folder: labels.csv is missing"):
        StudyFolder(empty).table
    assert read_splits(empty) == {} and not StudyFolder(empty).has_labels
    with pytest.raises(InputError, match="labels.csv is missing"):
        read_study_table(empty)

    root = _study(tmp_path / "noid", ["a.png,train,1"], header="Image,split,Mass", images=())
    with pytest.raises(InputError, match=r"missing column\(s\) \['Image Index'\]") as e:
        StudyFolder(root).table
    assert e.value.path == str(root / "labels.csv")

    nosplit = _study(tmp_path / "nosplit", ["a.png,1", "b.png,0"], header="Image Index,Mass")
    t = StudyFolder(nosplit).table
    assert not t.has_split and t.splits == ["train", "train"]
    assert read_splits(nosplit) == {}  # attention then holds out by hash
    with pytest.raises(InputError, match=r"missing column\(s\) \['split'\]") as e:
        read_study_table(nosplit)
    assert e.value.path == str(nosplit / "labels.csv")

    header_only = _study(tmp_path / "none", [], images=())
    with pytest.raises(InputError, match="no images listed"):
        read_study_table(header_only)


@pytest.mark.parametrize(
    "value, words",
    [
        ("2", "value is '2'"),
        ("0.5", "value is '0.5'"),
        ("nan", "NaN"),
        ("inf", "NaN/inf"),
        ("yes", "'yes' is not a number"),
    ],
)
def test_bad_class_value_names_file_row_and_column(tmp_path: Path, value: str, words: str) -> None:
    from gazerad.serving.data import DatastoreView

    root = _study(tmp_path / "s", ["a.png,,1,train,1,0", f"b.png,,2,train,0,{value}"])
    with pytest.raises(InputError, match="class column 'Nodule' must be 0 or 1") as e:
        StudyFolder(root).table
    assert e.value.path == str(root / "labels.csv") and e.value.row == 2 and words in e.value.problem
    with pytest.raises(InputError, match="must be 0 or 1"):  # the server reads it the same way
        DatastoreView(root / "images").labels()


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    from gazerad.pretrain.data import read_study_table

    root = _study(tmp_path / "s", ["a.png,,1,train,1,0", "b.png,,2,train,0,0", "a.png,,3,test,0,1"], images=("a.png", "b.png"))
    with pytest.raises(InputError, match=r"duplicate 'Image Index' 'a.png' \(first in row 1\)") as e:
        read_study_table(root)
    assert e.value.path == str(root / "labels.csv") and e.value.row == 3

    # two files, one image id: fine for the trainers (file names), refused where ids key the table
    both = _study(tmp_path / "both", ["a.png,,1,train,1,0", "a.jpg,,2,train,0,0"], images=("a.png",))
    _png(both / "images" / "a.jpg")
    assert read_study_table(both).ids == ["a.png", "a.jpg"]
    with pytest.raises(InputError, match="image id 'a' is listed twice") as e:
        StudyFolder(both).table.by_image_id()
    assert e.value.row == 2


@pytest.mark.parametrize("name", ["../x.png", "sub/x.png", ".hidden.png", "a b.png", "-rf.png", "x" * 200])
def test_unsafe_ids_are_refused_by_the_one_rule(tmp_path: Path, name: str) -> None:
    from gazerad.serving.data import DatastoreView

    root = _study(tmp_path / "s", ["ok.png,,1,train,0,0", f"{name},,2,train,1,0"], images=("ok.png",))
    with pytest.raises(InputError, match="it must be a plain name") as e:
        StudyFolder(root).table
    assert e.value.path == str(root / "labels.csv") and e.value.row == 2 and "'Image Index'" in e.value.problem
    assert find_image(root / "images", name) is None  # no path is built from it
    with pytest.raises(InputError, match="plain name"):
        StudyFolder(root).image_path(name)
    with pytest.raises(InputError, match="invalid image id"):
        DatastoreView(root / "images").image_path(name)


def test_missing_image_is_named_with_its_row(tmp_path: Path) -> None:
    from gazerad.attention.data import read_splits
    from gazerad.pretrain.data import read_study_table

    root = _study(tmp_path / "s", GOOD, images=("a.png", "b.png", "d.png"))
    folder = StudyFolder(root)
    assert folder.find_image("c.png") is None and folder.find_image("c") is None
    with pytest.raises(InputError, match=r"image 'c.png' not found at .*c\.png \(nor with a suffix of \.png, ") as e:
        read_study_table(root)
    assert e.value.path == str(root / "labels.csv") and e.value.row == 3
    with pytest.raises(InputError, match="image 'zz' not found") as e:
        folder.image_path("zz")
    assert e.value.path == str(root / "images") and e.value.row is None
    assert read_splits(root)["c.png"] == "train"  # the attention split does not need the file


def test_datastore_view_and_launch_use_the_layer(tmp_path: Path) -> None:
    from gazerad.serving.data import DatastoreView
    from gazerad.serving.launch import datastore_dir

    root = _study(tmp_path / "s", GOOD)
    _png(root / "images" / "bad name.png")  # the app can never ask for it: left out
    (root / "images" / "notes.txt").write_text("x")
    _png(root / "images" / ".hidden.png")
    assert datastore_dir(root) == root / "images" and datastore_dir(root / "images") == root / "images"
    view = DatastoreView(datastore_dir(root))
    assert list(view.images()) == ["a", "b", "c", "d"]
    with pytest.raises(InputError, match="unknown image id"):
        view.image_path("a.png")  # ids only: no file "a.png.png"
    ws = view.workspace(tmp_path / "ws")
    from gazerad.pretrain.data import read_study_table

    st = read_study_table(ws)
    assert st.ids == ["a.png", "b.png", "c.png", "d.png"] and st.splits == ["train", "test", "train", "validate"]
    assert st.labels.tolist() == [[1, 0], [1, 1], [0, 0], [0, 1]]
    ws_ids = view.workspace(tmp_path / "ws_ids", id_names=True)
    assert read_study_table(ws_ids).ids == ["a", "b", "c", "d"]  # ids are looked up with a suffix
