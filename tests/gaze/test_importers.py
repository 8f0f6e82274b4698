"""Tests of the public gaze-format importers (fixtures written from the documented schemas)."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from gazerad.errors import InputError
from gazerad.gaze.importers import (
    MCGIP_SAMPLE_DURATION,
    load_edf,
    load_egd_cxr,
    load_gaze,
    load_generic_csv,
    load_mcgip_csv,
    load_mcgip_json,
    load_reflacx,
)
from gazerad.gaze.record import GazeCollection


def _write_csv(path: Path, header: list[str], rows: list[list[object]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _assert_error(exc: pytest.ExceptionInfo[InputError], path: Path, row: int | None = None, *words: str) -> None:
    msg = str(exc.value)
    assert path.name in msg
    if row is not None:
        assert f"(row {row})" in msg
    for w in words:
        assert w in msg, msg


# --------------------------------------------------------------------------- REFLACX

META = ["id", "split", "eye_tracking_data_discarded", "image", "image_size_x", "image_size_y"]
FIX = [
    "timestamp_start_fixation",
    "timestamp_end_fixation",
    "x_position",
    "y_position",
    "angular_resolution_x_pixels_per_degree",
    "angular_resolution_y_pixels_per_degree",
]


@pytest.fixture()
def reflacx(tmp_path: Path) -> Path:
    """Three readings: a 200 (W) x 100 (H) PNG, a MIMIC DICOM, and a discarded one."""
    root = tmp_path / "main_data"
    _write_csv(
        root / "metadata_phase_1.csv",
        META + ["dicom_id"],
        [
            ["P102R000001", "train", "False", "images/img_a.png", 200, 100, "img_a"],
            ["P107R000002", "test", "False", "files/p10/p10000/s5/abc-123.dcm", 64, 64, "abc-123"],
            ["P102R000003", "train", "True", "images/img_c.png", 64, 64, "img_c"],
        ],
    )
    # out of time order; one point outside (y = 150 >= H = 100)
    _write_csv(
        root / "P102R000001" / "fixations.csv",
        FIX,
        [
            [2.0, 2.5, 150.0, 50.0, 20, 22],
            [0.5, 1.0, 10.25, 99.5, 20, 22],
            [3.0, 3.2, 50.0, 150.0, 20, 22],
        ],
    )
    _write_csv(
        root / "P102R000001" / "gaze.csv",
        ["timestamp_sample", "x_position", "y_position"],
        [[0.0, 1.5, 2.5], [0.01, "", ""], [0.02, 3.0, 4.0]],
    )
    _write_csv(root / "P107R000002" / "fixations.csv", FIX, [[0.1, 0.3, 32, 32, 30, 30]])
    _write_csv(root / "P102R000003" / "fixations.csv", FIX, [[0.1, 0.3, 32, 32, 30, 30]])
    return root


def test_reflacx_handwritten(reflacx: Path) -> None:
    c = load_reflacx(reflacx, with_samples=True)
    assert c.images == ["img_a.png", "abc-123"]
    (a,) = c["img_a.png"]
    assert a.reader_id == "R2"  # derived from P1 02 R...
    assert a.image_size == (100, 200)
    np.testing.assert_allclose(a.fixations, [[10.25, 99.5, 0.5, 1.0], [150.0, 50.0, 2.0, 2.5]])
    assert a.pixels_per_degree == pytest.approx(21.0)
    assert a.screen == {"reading_id": "P102R000001", "split": "train", "phase": "1"}
    assert a.samples is not None and a.samples.shape == (3, 3)
    assert np.isnan(a.samples[1, 1:]).all() and a.samples[2].tolist() == [0.02, 3.0, 4.0]
    assert c["abc-123"][0].reader_id == "R7"
    assert c["abc-123"][0].samples is None  # no gaze.csv: record kept, counted
    assert c.dropped == {"outside_image": 1, "discarded_reading": 1, "missing_file": 1}
    assert os.path.basename(a.source or "") == "fixations.csv"


def test_reflacx_options(reflacx: Path) -> None:
    c = load_reflacx(reflacx, include_discarded=True)
    assert c.images == ["img_a.png", "abc-123", "img_c.png"]
    assert c["img_a.png"][0].samples is None
    only = load_reflacx(reflacx, images=["img_c"], include_discarded=True)
    assert only.images == ["img_c.png"]
    folder = reflacx.parent / "imgs"
    folder.mkdir()
    (folder / "img_a.png").write_bytes(b"")
    assert load_reflacx(reflacx, images=folder).images == ["img_a.png"]
    # radiologist column wins over the reading-id pattern
    meta = reflacx / "metadata_phase_1.csv"
    _write_csv(meta, META + ["radiologist"], [["P102R000001", "train", "False", "images/img_a.png", 200, 100, "Dr X"]])
    assert load_reflacx(reflacx).readers == ["Dr X"]


def test_reflacx_synthetic_study(tmp_path: Path) -> None:
    from gazerad.synth.study import generate_studies

    out = tmp_path / "set"
    generate_studies(out, n=3, size=128, seed=1, workers=1, progress=False)
    main = out / "reflacx" / "main_data"
    c = load_reflacx(main, with_samples=True)
    assert c.dropped == {}
    assert sorted(c.images) == ["00000001_000.png", "00000002_000.png", "00000003_000.png"]
    n_readings = 0
    for meta in sorted(main.glob("metadata_phase_*.csv")):
        with open(meta, newline="") as fh:
            for m in csv.DictReader(fh):
                n_readings += 1
                (rec,) = [r for r in c[m["image"].split("/")[-1]] if r.screen and r.screen["reading_id"] == m["id"]]
                assert rec.reader_id == m["radiologist"]
                assert rec.image_size == (128, 128)
                with open(main / m["id"] / "fixations.csv", newline="") as fh2:
                    rows = list(csv.DictReader(fh2))
                expect = np.array([[float(r[k]) for k in ("x_position", "y_position", "timestamp_start_fixation", "timestamp_end_fixation")] for r in rows])
                np.testing.assert_array_equal(rec.fixations, expect)
                assert rec.pixels_per_degree == pytest.approx(float(rows[0]["angular_resolution_x_pixels_per_degree"]))
                assert rec.samples is not None and len(rec.samples) > len(rec)
    assert len(c.records()) == n_readings
    assert load_gaze(main).images == c.images
    assert load_gaze(main / "metadata_phase_1.csv").images == c.images


@pytest.mark.parametrize(
    ("row", "reason", "words"),
    [
        (["a", 1.0, 5, 5, 20, 20], "non_numeric", "'a' is not a number"),
        (["", 1.0, 5, 5, 20, 20], "missing_value", "timestamp_start_fixation"),
        ([1.0, 2.0, "nan", 5, 20, 20], "missing_value", "x_position"),
        ([2.0, 1.0, 5, 5, 20, 20], "negative_duration", "negative fixation duration"),
        ([1.0, 2.0, 200, 5, 20, 20], "outside_image", "outside"),
        ([1.0, 2.0, -0.5, 5, 20, 20], "outside_image", "outside"),
    ],
)
def test_reflacx_bad_rows(reflacx: Path, row: list[object], reason: str, words: str) -> None:
    f = _write_csv(reflacx / "P102R000001" / "fixations.csv", FIX, [[0.1, 0.2, 10, 10, 20, 20], row])
    with pytest.raises(InputError) as e:
        load_reflacx(reflacx, strict=True)
    _assert_error(e, f, 2, words)
    assert str(reflacx / "P102R000001") in str(e.value)
    c = load_reflacx(reflacx)
    assert c.dropped == {reason: 1, "discarded_reading": 1}
    assert len(c["img_a.png"][0]) == 1


def test_reflacx_file_errors(reflacx: Path) -> None:
    # empty record: header only
    f = _write_csv(reflacx / "P102R000001" / "fixations.csv", FIX, [])
    c = load_reflacx(reflacx)
    assert "img_a.png" not in c and c.dropped["empty_record"] == 1
    with pytest.raises(InputError) as e:
        load_reflacx(reflacx, strict=True)
    _assert_error(e, f, None, "no valid fixation", "img_a.png")
    # missing column
    _write_csv(f, ["timestamp_start_fixation", "x_position", "y_position"], [[1, 2, 3]])
    with pytest.raises(InputError) as e:
        load_reflacx(reflacx)
    _assert_error(e, f, None, "timestamp_end_fixation")
    # missing reading folder
    f.unlink()
    assert load_reflacx(reflacx).dropped["missing_file"] == 1
    with pytest.raises(InputError) as e:
        load_reflacx(reflacx, strict=True)
    _assert_error(e, f, None, "does not exist")
    # missing gaze.csv with samples requested: record kept without samples
    rec = load_reflacx(reflacx, with_samples=True)
    assert rec["abc-123"][0].samples is None and rec.dropped["missing_file"] == 2
    # bad image size in metadata
    _write_csv(f, FIX, [[0.1, 0.2, 10, 10, 20, 20]])
    meta = _write_csv(reflacx / "metadata_phase_2.csv", META, [["P2", "train", "False", "images/z.png", "wide", 10]])
    with pytest.raises(InputError) as e:
        load_reflacx(reflacx, strict=True)
    _assert_error(e, meta, 1, "image_size")
    assert load_reflacx(reflacx).dropped["bad_metadata"] == 1
    # not a REFLACX folder
    with pytest.raises(InputError, match="metadata_phase"):
        load_reflacx(reflacx / "P107R000002")


def test_reflacx_bad_samples(reflacx: Path) -> None:
    _write_csv(reflacx / "P102R000001" / "fixations.csv", FIX, [[0.1, 0.2, 10, 10, 20, 20]])
    g = _write_csv(
        reflacx / "P102R000001" / "gaze.csv",
        ["timestamp_sample", "x_position", "y_position"],
        [[0.0, 1, 2], [0.01, "x!", 3], ["", 1, 1]],
    )
    _write_csv(reflacx / "P107R000002" / "gaze.csv", ["timestamp_sample", "x_position", "y_position"], [[0, 1, 1]])
    c = load_reflacx(reflacx, with_samples=True)
    s = c["img_a.png"][0].samples
    assert s is not None and s.shape == (1, 3)
    assert c.dropped["bad_sample"] == 2
    with pytest.raises(InputError) as e:
        load_reflacx(reflacx, with_samples=True, strict=True)
    _assert_error(e, g, 2, "'x!'")


# --------------------------------------------------------------------------- EGD-CXR

EGD = ["DICOM_ID", "FPOGX", "FPOGY", "FPOGS", "FPOGD", "FPOGID", "FPOGV", "X_ORIGINAL", "Y_ORIGINAL"]


def test_egd_original_coordinates(tmp_path: Path) -> None:
    f = _write_csv(
        tmp_path / "fixations.csv",
        EGD,
        [
            ["d1", 0.5, 0.5, 1.5, 0.2, 2, 1, 400, 300],
            ["d1", 0.4, 0.4, 1.0, 0.1, 1, 1, 100.5, 200.25],
            ["d1", 0.4, 0.4, 1.0, 0.3, 1, 1, 100.5, 200.25],  # same FPOGID, grown: kept once
            ["d1", 0.1, 0.1, 2.0, 0.1, 3, 0, 10, 10],  # invalid
            ["d1", 0.0, 0.0, 2.5, 0.1, 4, 1, -1, -1],  # outside the image
            ["d2", 0.5, 0.5, 0.0, 0.2, 1, 1, 5, 6],
            ["d3", 0.5, 0.5, 0.0, 0.2, 1, 0, 5, 6],  # only invalid -> empty record
        ],
    )
    c = load_egd_cxr(f)
    assert c.images == ["d1", "d2"] and c.readers == ["EGD"]
    np.testing.assert_allclose(c["d1"][0].fixations, [[100.5, 200.25, 1.0, 1.3], [400, 300, 1.5, 1.7]])
    assert c.dropped == {"invalid": 2, "outside_image": 1, "empty_record": 1}
    sized = load_egd_cxr(f, image_sizes={"d1": (350, 450), "d2": (10, 10), "d3": (10, 10)})
    assert sized["d1"][0].image_size == (350, 450)
    with pytest.raises(InputError) as e:
        load_egd_cxr(f, strict=True)
    _assert_error(e, f, 4, "FPOGV")
    with pytest.raises(InputError) as e:
        load_egd_cxr(f, image_sizes={"d1": (350, 450)})
    _assert_error(e, f, 6, "'d2'", "image_sizes")
    assert load_gaze(f).images == ["d1", "d2"]


def test_egd_padding_mapping(tmp_path: Path) -> None:
    # 1600 (W) x 2000 (H) image shown at scale 0.5 in [560, 1360] x [40, 1040]
    master = _write_csv(
        tmp_path / "master_sheet.csv",
        ["dicom_id", "image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad"],
        [["d1", 40, 40, 560, 560]],
    )
    cols = ["DICOM_ID", "FPOGX", "FPOGY", "FPOGS", "FPOGD", "FPOGV"]
    f = _write_csv(
        tmp_path / "fixations.csv",
        cols,
        [
            ["d1", 0.5, 0.5, 0.0, 0.2, 1],  # screen (960, 540): the image centre
            ["d1", 560 / 1920, 40 / 1080, 0.3, 0.1, 1],  # top-left corner of the image
            ["d1", 0.1, 0.5, 0.5, 0.1, 1],  # on the left padding
        ],
    )
    sizes = {"d1": (2000, 1600)}
    c = load_egd_cxr(f, master, sizes)
    (r,) = c["d1"]
    np.testing.assert_allclose(r.xy, [[800, 1000], [0, 0]], atol=1e-9)
    assert r.image_size == (2000, 1600) and r.screen is not None and r.screen["image_left_pad"] == 560
    assert c.dropped == {"outside_image": 1}
    with pytest.raises(InputError) as e:
        load_egd_cxr(f, master, sizes, strict=True)
    _assert_error(e, f, 3, "outside")
    # letterboxing when the paddings leave a wider area: centred horizontally
    _write_csv(master, ["dicom_id", "image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad"], [["d1", 40, 40, 0, 0]])
    np.testing.assert_allclose(load_egd_cxr(f, master, sizes)["d1"][0].xy[0], [800, 1000])
    # errors: no way to map, unknown DICOM in master sheet, missing paddings
    with pytest.raises(InputError) as e:
        load_egd_cxr(f)
    _assert_error(e, f, None, "X_ORIGINAL", "master_sheet_csv")
    _write_csv(master, ["dicom_id", "image_top_pad", "image_bottom_pad", "image_left_pad", "image_right_pad"], [["zz", 0, 0, 0, 0]])
    with pytest.raises(InputError) as e:
        load_egd_cxr(f, master, sizes)
    _assert_error(e, master, None, "'d1'")
    _write_csv(master, ["dicom_id", "image_top_pad"], [["d1", 0]])
    with pytest.raises(InputError) as e:
        load_egd_cxr(f, master, sizes)
    _assert_error(e, master, None, "image_left_pad")


def test_egd_bad_values(tmp_path: Path) -> None:
    f = _write_csv(
        tmp_path / "fixations.csv",
        EGD,
        [["d1", 0.5, 0.5, 1.0, 0.2, 1, 1, 5, 5], ["d1", 0.5, 0.5, "soon", 0.2, 2, 1, 5, 5], ["d1", 0.5, 0.5, 1.0, -0.2, 3, 1, 5, 5]],
    )
    c = load_egd_cxr(f)
    assert c.dropped == {"non_numeric": 1, "negative_duration": 1} and len(c["d1"][0]) == 1
    with pytest.raises(InputError) as e:
        load_egd_cxr(f, strict=True)
    _assert_error(e, f, 2, "FPOGS", "'soon'")
    g = _write_csv(tmp_path / "bad.csv", ["DICOM_ID", "FPOGX"], [["d1", 0.5]])
    with pytest.raises(InputError) as e:
        load_egd_cxr(g)
    _assert_error(e, g, None, "FPOGV")


# --------------------------------------------------------------------------- McGIP


def test_mcgip_csv(tmp_path: Path) -> None:
    f = tmp_path / "gaze.csv"
    f.write_text("image;x;gaze\ndata/train/COVID/img1.png;0;[(100, 200), (400.5, 400), (900, 10)]\n\ndata/train/Normal/img2.png;1;[(0, 0), (799, 799)]\n")
    c = load_mcgip_csv(f)
    assert c.images == ["img1.png", "img2.png"]
    (r,) = c["img1.png"]
    dt = MCGIP_SAMPLE_DURATION
    np.testing.assert_allclose(r.fixations, [[100, 200, 0, dt], [400.5, 400, dt, 2 * dt]])
    assert r.image_size == (800, 800) and r.reader_id == ""
    assert r.screen is not None and r.screen["label"] == "COVID" and c["img2.png"][0].screen["label"] == "Normal"
    assert r.samples is not None and r.samples.shape == (3, 3) and np.isnan(r.samples[2, 1:]).all()
    assert c.dropped == {"outside_image": 1}
    # rescaling canvas -> image and a custom sample duration
    s = load_mcgip_csv(f, image_sizes={"img1.png": (1600, 400), "img2.png": (8, 8)}, sample_duration=0.1)
    np.testing.assert_allclose(s["img1.png"][0].fixations, [[50, 400, 0, 0.1], [200.25, 800, 0.1, 0.2]])
    assert s["img1.png"][0].image_size == (1600, 400)
    with pytest.raises(InputError) as e:
        load_mcgip_csv(f, image_sizes={"img1.png": (10, 10)})
    _assert_error(e, f, 2, "'img2.png'")
    with pytest.raises(InputError) as e:
        load_mcgip_csv(f, strict=True)
    _assert_error(e, f, 1, "outside")
    assert load_gaze(f).images == ["img1.png", "img2.png"]


def test_mcgip_csv_unsafe_and_malformed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    f = tmp_path / "gaze.csv"
    f.write_text(f"a/L/i.png;0;[(1, 2)]\na/L/j.png;0;__import__('os').mkdir({str(marker)!r})\n")
    with pytest.raises(InputError) as e:
        load_mcgip_csv(f)
    _assert_error(e, f, 2, "literal")
    assert not marker.exists()
    f.write_text("a/L/i.png;0\n")
    with pytest.raises(InputError) as e:
        load_mcgip_csv(f)
    _assert_error(e, f, 1, "fields")
    f.write_text("a/L/i.png;0;[(1, 2, 3)]\n")
    with pytest.raises(InputError) as e:
        load_mcgip_csv(f)
    _assert_error(e, f, 1, "(x, y)")
    f.write_text("a/L/i.png;0;[(900, 900)]\na/L/j.png;0;[('a', 2), (3, 4)]\n")
    c = load_mcgip_csv(f)
    assert c.images == ["j.png"] and c.dropped == {"outside_image": 1, "empty_record": 1, "non_numeric": 1}
    f.write_text("a/Normal/;0;[(1, 2)]\n")  # a folder: its name is no image id
    with pytest.raises(InputError) as e:
        load_mcgip_csv(f)
    _assert_error(e, f, 1, "names a folder, not an image file")
    f.write_text("a/COVID/i.png;0;[(1, 2)]\na/Normal/i.png;0;[(3, 4)]\na/COVID/i.png;0;[(5, 6)]\n")
    with pytest.raises(InputError, match=r"image 'i.png' has two labels: 'COVID' \(a/COVID/i.png\) and 'Normal' \(a/Normal/i.png\)"):
        load_mcgip_csv(f)
    f.write_text("a/COVID/i.png;0;[(1, 2)]\na/COVID/i.png;1;[(5, 6)]\n")  # two viewings of one image: fine
    assert len(load_mcgip_csv(f)["i.png"]) == 2


def test_mcgip_json(tmp_path: Path) -> None:
    d = tmp_path / "json"
    d.mkdir()
    (d / "a.json").write_text(json.dumps({"gaze": [[10, 20], [30, 40]], "img": "x/Pneumonia/a.png", "gt": 1}))
    (d / "b.json").write_text(json.dumps([{"gaze": [[1, 2]], "img": "x/Normal/b.png"}, {"gaze": [[5, 5]]}]))
    c = load_mcgip_json(d, sample_duration=0.5)
    assert c.images == ["a.png", "b.png", "b"]
    r = c["a.png"][0]
    np.testing.assert_allclose(r.fixations, [[10, 20, 0, 0.5], [30, 40, 0.5, 1.0]])
    assert r.screen is not None and r.screen["label"] == "1" and c["b.png"][0].screen["label"] == "Normal"
    one = load_mcgip_json(d / "a.json", image_sizes={"a.png": (400, 1600)})
    np.testing.assert_allclose(one["a.png"][0].xy, [[20, 10], [60, 20]])
    assert load_gaze(d).images == c.images and load_gaze(d / "a.json").images == ["a.png"]
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError) as e:
        load_mcgip_json(bad)
    _assert_error(e, bad, None, "invalid JSON")
    bad.write_text(json.dumps([{"gaze": [[1, 1]]}, {"img": "q.png"}]))
    with pytest.raises(InputError) as e:
        load_mcgip_json(bad)
    _assert_error(e, bad, 2, "gaze")
    bad.write_text(json.dumps({"gaze": [[1, 1], [None, 3]], "img": "q.png"}))
    with pytest.raises(InputError) as e:
        load_mcgip_json(bad, strict=True)
    _assert_error(e, bad, 1, "gaze[1].x")
    assert load_mcgip_json(bad).dropped == {"missing_value": 1}
    with pytest.raises(InputError, match="no \\*.json"):
        load_mcgip_json(_empty_dir(tmp_path))


def _empty_dir(tmp_path: Path) -> Path:
    e = tmp_path / "empty"
    e.mkdir()
    return e


# --------------------------------------------------------------------------- generic CSV


def test_generic_ms_and_t_end(tmp_path: Path) -> None:
    f = _write_csv(
        tmp_path / "g.csv",
        ["img", "who", "px", "py", "start", "end"],
        [
            ["i1", "r1", 10, 20, 1500, 1700],
            ["i1", "r1", 30, 40, 500, 900],
            ["i1", "r2", 5, 5, 0, 100],
            ["i2", "r1", 1, 2, 0, 250],
        ],
    )
    cols = {"image": "img", "reader": "who", "x": "px", "y": "py", "t_start": "start", "t_end": "end"}
    c = load_generic_csv(f, cols, time_unit="ms")
    assert c.images == ["i1", "i2"] and [r.reader_id for r in c["i1"]] == ["r1", "r2"]
    np.testing.assert_allclose(c["i1"][0].fixations, [[30, 40, 0.5, 0.9], [10, 20, 1.5, 1.7]])
    assert c.dropped == {}
    assert load_gaze(f, columns=cols, time_unit="ms").images == ["i1", "i2"]


def test_generic_duration_and_delimiter(tmp_path: Path) -> None:
    f = _write_csv(
        tmp_path / "g.tsv",
        ["image", "x", "y", "t", "dur"],
        [["i1", 10, 20, 1.0, 0.25], ["i1", 60, 20, 2.0, 0.5], ["i1", 1, 1, 3.0, -0.1]],
        delimiter="\t",
    )
    cols = {"image": "image", "x": "x", "y": "y", "t_start": "t", "duration": "dur"}
    c = load_generic_csv(f, cols, delimiter="\t", image_sizes={"i1": (50, 50)})
    (r,) = c["i1"]
    np.testing.assert_allclose(r.fixations, [[10, 20, 1.0, 1.25]])
    assert r.reader_id == "" and r.image_size == (50, 50)
    assert c.dropped == {"outside_image": 1, "negative_duration": 1}
    with pytest.raises(InputError) as e:
        load_generic_csv(f, cols, delimiter="\t", image_sizes={"i1": (50, 50)}, strict=True)
    _assert_error(e, f, 2, "outside the 50 x 50")


def test_generic_errors(tmp_path: Path) -> None:
    f = _write_csv(tmp_path / "g.csv", ["image", "x", "y", "t0", "t1"], [["i1", 1, "oops", 0, 1], ["i2", 1, 1, 0, 1]])
    cols = {"image": "image", "x": "x", "y": "y", "t_start": "t0", "t_end": "t1"}
    with pytest.raises(InputError) as e:
        load_generic_csv(f, cols, strict=True)
    _assert_error(e, f, 1, "'oops'")
    c = load_generic_csv(f, cols)
    assert c.images == ["i2"] and c.dropped == {"non_numeric": 1, "empty_record": 1}
    with pytest.raises(InputError) as e:
        load_generic_csv(f, {**cols, "x": "col_x"})
    _assert_error(e, f, None, "col_x")
    with pytest.raises(InputError, match="exactly one"):
        load_generic_csv(f, {**cols, "duration": "t1"})
    with pytest.raises(InputError, match="missing role"):
        load_generic_csv(f, {"image": "image", "x": "x", "y": "y", "t_end": "t1"})
    with pytest.raises(InputError, match="time_unit"):
        load_generic_csv(f, cols, time_unit="min")  # type: ignore[arg-type]
    with pytest.raises(InputError) as e:
        load_generic_csv(f, cols, image_sizes={"i2": (5, 5)})
    _assert_error(e, f, 1, "'i1'")
    with pytest.raises(InputError) as e:
        load_generic_csv(tmp_path / "none.csv", cols)
    _assert_error(e, tmp_path / "none.csv", None, "does not exist")


# --------------------------------------------------------------------------- EDF


@pytest.fixture(scope="module")
def edf_dir() -> Path:
    eyelinkio = pytest.importorskip("eyelinkio")
    return Path(eyelinkio.__file__).parent / "tests" / "data"


@pytest.fixture(scope="module")
def raw_edf(edf_dir: Path) -> dict:
    import eyelinkio

    return eyelinkio.read_edf(str(edf_dir / "test_raw.edf"))


def test_edf_fixations(edf_dir: Path, raw_edf: dict) -> None:
    ev = raw_edf["discrete"]["fixations"]
    c = load_edf(edf_dir / "test_raw.edf", "img", (1.0, 1.0, 0.0, 0.0), image_size=(1080, 1920), reader_id="r")
    (r,) = c["img"]
    assert r.reader_id == "r" and len(r) == len(ev) and c.dropped == {}
    np.testing.assert_allclose(r.fixations, np.column_stack([ev["axp"], ev["ayp"], ev["stime"], ev["etime"]]))
    assert (r.durations > 0).all() and (np.diff(r.fixations[:, 2]) >= 0).all()
    # tuple mapping x = sx * X + ox, and a callable; points mapped off a 400 x 400 image dropped
    half = load_edf(edf_dir / "test_raw.edf", "img", (0.5, 0.25, -100.0, 10.0))["img"][0]
    np.testing.assert_allclose(half.xy, np.column_stack([0.5 * ev["axp"] - 100, 0.25 * ev["ayp"] + 10]))
    small = load_edf(edf_dir / "test_raw.edf", "img", lambda x, y: (x - 500, y - 400), image_size=(400, 400))
    inside = (ev["axp"] >= 500) & (ev["axp"] < 900) & (ev["ayp"] >= 400) & (ev["ayp"] < 800)
    assert len(small["img"][0]) == inside.sum() and small.dropped == {"outside_image": int((~inside).sum())}
    with pytest.raises(InputError) as e:
        load_edf(edf_dir / "test_raw.edf", "img", (1, 1, 0, 0), image_size=(10, 10), strict=True)
    _assert_error(e, edf_dir / "test_raw.edf", 1, "outside")
    # samples and a time window
    w = load_edf(edf_dir / "test_raw.edf", "img", (1, 1, 0, 0), with_samples=True, time_window=(10.0, 20.0))["img"][0]
    assert w.samples is not None and w.samples[0, 0] == pytest.approx(0.0) and w.samples[-1, 0] < 10.0
    assert len(w.samples) == pytest.approx(10_000, abs=2)
    sel = (ev["stime"] >= 10) & (ev["stime"] < 20)
    np.testing.assert_allclose(w.fixations[:, 2], ev["stime"][sel] - 10.0)
    with pytest.raises(InputError) as e:
        load_edf(edf_dir / "test_raw.edf", "img", (1, 1, 0, 0), eye="right")
    _assert_error(e, edf_dir / "test_raw.edf", None, "LEFT_EYE")
    with pytest.raises(InputError, match="screen_to_image"):
        load_edf(edf_dir / "test_raw.edf", "img", (1, 1))  # type: ignore[arg-type]


def test_edf_binocular_and_dispatch(edf_dir: Path) -> None:
    import eyelinkio

    path = edf_dir / "test_raw_binocular.edf"
    raw = eyelinkio.read_edf(str(path))
    ev = raw["discrete"]["fixations"]
    c = load_gaze(path, image_id="b", screen_to_image=(1, 1, 0, 0), eye="right", image_size=(1080, 1920))
    (r,) = c["b"]
    right = ev[ev["eye"] == 1]
    ok = (right["axp"] >= 0) & (right["axp"] < 1920) & (right["ayp"] >= 0) & (right["ayp"] < 1080)
    assert len(r) == ok.sum() and sum(c.dropped.values()) == (~ok).sum()
    np.testing.assert_allclose(np.sort(r.fixations[:, 2]), np.sort(right["stime"][ok]))


def test_edf_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("eyelinkio")
    junk = tmp_path / "junk.edf"
    junk.write_bytes(b"not an edf at all" * 10)
    with pytest.raises(InputError) as e:
        load_edf(junk, "i", (1, 1, 0, 0))
    _assert_error(e, junk, None, "EDF")
    with pytest.raises(InputError) as e:
        load_edf(tmp_path / "missing.edf", "i", (1, 1, 0, 0))
    _assert_error(e, tmp_path / "missing.edf", None, "does not exist")
    monkeypatch.setitem(sys.modules, "eyelinkio", None)
    with pytest.raises(ImportError, match=r"pip install 'gazerad\[edf\]'"):
        load_edf(junk, "i", (1, 1, 0, 0))


# --------------------------------------------------------------------------- dispatch


def test_load_gaze_dispatch_errors(tmp_path: Path) -> None:
    f = _write_csv(tmp_path / "what.csv", ["a", "b"], [[1, 2]])
    with pytest.raises(InputError) as e:
        load_gaze(f)
    _assert_error(e, f, None, "cannot tell the gaze format")
    with pytest.raises(InputError, match="unknown gaze format"):
        load_gaze(f, format="nope")
    with pytest.raises(InputError, match="does not exist"):
        load_gaze(tmp_path / "nothing.csv")
    with pytest.raises(InputError, match="cannot tell"):
        load_gaze(_empty_dir(tmp_path))
    assert isinstance(load_gaze(f, format="generic", columns={"image": "a", "x": "b", "y": "b", "t_start": "b", "duration": "b"}), GazeCollection)


def test_one_sniffer_judges_by_content_for_loader_and_uploads(tmp_path: Path, edf_dir: Path) -> None:
    """``load_gaze`` and the server's uploads share :func:`gazerad.gaze.formats.sniff_gaze_file`:
    a file's name decides nothing."""
    import shutil

    from gazerad.gaze.formats import sniff_gaze_file

    edf_as_csv = tmp_path / "looks_like.csv"
    shutil.copy(edf_dir / "test_raw.edf", edf_as_csv)
    assert sniff_gaze_file(edf_as_csv) == "edf"
    assert len(load_gaze(edf_as_csv, image_id="img", screen_to_image=(1.0, 1.0, 0.0, 0.0)).records()) == 1
    text_edf = tmp_path / "fake.edf"
    text_edf.write_text("DICOM_ID,FPOGX,FPOGY\n")
    assert sniff_gaze_file(text_edf) == "egd"
    for name, body, fmt in [
        ("m.txt", json.dumps({"img.png": [[0.5, 0.5]]}), "mcgip_json"),
        ("c.json", json.dumps({"format": "gazerad-gaze", "version": 1, "records": []}), "canonical"),
        ("g.dat", "x,y,t_start,t_end\n1,2,0,0.1\n", "generic"),
        ("r.csv", "x_position,y_position,timestamp_start_fixation,timestamp_end_fixation\n", "reflacx_fixations"),
    ]:
        (tmp_path / name).write_text(body)
        assert sniff_gaze_file(tmp_path / name) == fmt, name
    with pytest.raises(InputError, match="generic CSV needs columns="):
        load_gaze(tmp_path / "g.dat")
