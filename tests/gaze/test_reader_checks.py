"""Attacks on the gaze readers' input checks: times, ids, duplicates, bounds, flags, numbers.

The REFLACX and EGD-CXR trees are the download-shaped ones of :mod:`tests.support.layouts`,
copied and mutated per test; the canonical JSON cases go through
:func:`gazerad.gaze.store.read_gaze_json` and the upload parser alike.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gazerad.errors import InputError
from gazerad.gaze import _checks, store
from gazerad.gaze.egd_cxr import load_egd_cxr
from gazerad.gaze.importers import load_gaze, load_generic_csv, load_mcgip_json
from gazerad.gaze.record import GazeCollection, GazeRecord
from gazerad.gaze.reflacx import load_reflacx
from gazerad.gaze.store import GazeStore, parse_gaze_upload, read_gaze_json
from tests.support.layouts import egd_tree, mimic_tree, reflacx_tree

PLAIN = "it must be a plain name"


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A REFLACX and an EGD-CXR tree as downloaded, from a small synthetic set."""
    from gazerad.synth.study import generate_studies

    base = tmp_path_factory.mktemp("downloads")
    studies = base / "studies"
    generate_studies(studies, n=8, size=128, seed=0, workers=1, progress=False)
    m = mimic_tree(studies, base / "mimic", tables=False)
    return {"reflacx": reflacx_tree(studies, base / "reflacx", m["ids"], m), "egd": egd_tree(studies, base / "egd", m["ids"], m)}


@pytest.fixture()
def ref(downloads: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the REFLACX ``main_data`` folder, to mutate."""
    return shutil.copytree(downloads["reflacx"], tmp_path / "reflacx") / "main_data"


@pytest.fixture()
def egd(downloads: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the EGD-CXR folder, to mutate."""
    return shutil.copytree(downloads["egd"], tmp_path / "egd")


def _rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def _write(path: Path, rows: list[list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _set(path: Path, row: int = 1, **values: object) -> Path:
    """Set columns of data row ``row`` (1-based) of a CSV."""
    rows = _rows(path)
    for k, v in values.items():
        rows[row][rows[0].index(k)] = str(v)
    return _write(path, rows)


def _append_row(path: Path, row: list[str]) -> Path:
    return _write(path, _rows(path) + [row])


def _raises(fn: Any, path: Path, row: int | None, *words: str) -> InputError:
    with pytest.raises(InputError) as e:
        fn()
    msg = str(e.value)
    assert e.value.path is not None and Path(e.value.path).name == path.name, msg
    assert e.value.row == row, msg
    for w in words:
        assert w in msg, msg
    return e.value


def _meta(ref: Path, phase: int = 1) -> Path:
    return ref / f"metadata_phase_{phase}.csv"


def _reading(ref: Path) -> str:
    """The id of the first reading of phase 1."""
    return _rows(_meta(ref))[1][0]


def _fix(ref: Path) -> Path:
    return ref / _reading(ref) / "fixations.csv"


def _generic(tmp_path: Path, rows: list[list[object]]) -> tuple[Path, dict[str, str]]:
    cols = {"image": "image", "x": "x", "y": "y", "t_start": "t0", "t_end": "t1"}
    return _write(tmp_path / "g.csv", [["image", "x", "y", "t0", "t1"], *rows]), cols


# --------------------------------------------------------------------------- 1, 6: the time rule


TIMES = [(-1e308, 1e308), (0.0, 1e300), (-100.0, -99.0), (0.0, _checks.MAX_SECONDS + 1)]


@pytest.mark.parametrize(("t0", "t1"), TIMES)
def test_reflacx_implausible_times_are_refused(ref: Path, t0: float, t1: float) -> None:
    f = _set(_fix(ref), 2, timestamp_start_fixation=t0, timestamp_end_fixation=t1)
    _raises(lambda: load_reflacx(ref, strict=True), f, 2, "0 <= t_start <= t_end <= 86400")
    c = load_reflacx(ref)
    assert c.dropped == {"implausible_time": 1}
    assert all(np.isfinite(r.durations).all() and (r.fixations[:, 3] <= _checks.MAX_SECONDS).all() for r in c.records())
    # the server's upload path reads the same file by the same rule
    _raises(lambda: parse_gaze_upload(f, "IM1", (128, 128)), f, 2, "0 <= t_start")


@pytest.mark.parametrize(("start", "dur"), [(1e308, 1e308), (-5.0, 1.0), (0.0, 1e300)])
def test_egd_implausible_times_are_input_errors_with_row(egd: Path, start: float, dur: float) -> None:
    f = _set(egd / "fixations.csv", 3, FPOGS=start, FPOGD=dur)
    _raises(lambda: load_egd_cxr(f, egd / "master_sheet.csv", strict=True), f, 3, "0 <= t_start")
    assert load_gaze(egd).dropped == {"implausible_time": 1}


@pytest.mark.parametrize(("t0", "t1"), TIMES)
def test_generic_implausible_times_are_refused(tmp_path: Path, t0: float, t1: float) -> None:
    f, cols = _generic(tmp_path, [["i1", 1, 1, 0, 0.2], ["i1", 2, 2, t0, t1]])
    _raises(lambda: load_generic_csv(f, cols, strict=True), f, 2, "0 <= t_start")
    assert load_generic_csv(f, cols).dropped == {"implausible_time": 1}


def test_one_time_rule() -> None:
    assert store.MAX_SECONDS is _checks.MAX_SECONDS
    ok = _checks.times_ok(np.array([0.0, -1.0, 0.0, 2.0]), np.array([86400.0, 1.0, 86400.5, 1.0]))
    assert ok.tolist() == [True, False, False, False]


# --------------------------------------------------------------------------- 2-3: ids are confined


@pytest.mark.parametrize("bad", ["../../outside", "/tmp/outside", "a/b"])
def test_reflacx_reading_id_is_confined(ref: Path, bad: str) -> None:
    if bad.startswith(".."):  # a readable reading outside the download: never read
        shutil.copytree(ref / _reading(ref), (ref / bad).resolve(), dirs_exist_ok=True)
    meta = _set(_meta(ref), 1, id=bad)
    for strict in (False, True):
        _raises(lambda: load_reflacx(ref, strict=strict), meta, 1, "reading id", PLAIN)


def test_reflacx_dicom_id_is_confined(ref: Path) -> None:
    meta = _set(_meta(ref), 1, dicom_id="../etc/passwd")
    _raises(lambda: load_reflacx(ref), meta, 1, "'../etc/passwd'", PLAIN)


def test_egd_dicom_id_is_confined_before_any_lookup(egd: Path) -> None:
    f = _set(egd / "fixations.csv", 4, DICOM_ID="../../etc/passwd")
    _raises(lambda: load_gaze(egd), f, 4, "'../../etc/passwd'", PLAIN)
    sizes = {r[0]: (128, 128) for r in _rows(f)[1:]}
    _raises(lambda: load_egd_cxr(f, image_sizes=sizes), f, 4, PLAIN)


def test_generic_and_mcgip_image_ids_are_confined(tmp_path: Path) -> None:
    f, cols = _generic(tmp_path, [["i1", 1, 1, 0, 0.2], ["../../x", 2, 2, 0, 0.2]])
    _raises(lambda: load_generic_csv(f, cols), f, 2, "'../../x'", PLAIN)
    j = tmp_path / "m.json"
    j.write_text(json.dumps([{"gaze": [[1, 1]], "img": "a/b.png"}, {"gaze": [[1, 1]], "img": "a/.."}]))
    _raises(lambda: load_mcgip_json(j), j, 2, PLAIN)


def test_every_collection_add_confines_the_id() -> None:
    rec = GazeRecord("../x", "r", np.array([[1.0, 1.0, 0.0, 0.1]]), source="/data/g.csv")
    with pytest.raises(InputError) as e:
        GazeCollection().add(rec, row=7)
    assert e.value.path == "/data/g.csv" and e.value.row == 7 and PLAIN in str(e.value)


# --------------------------------------------------------------------------- 4: duplicate readings


def test_reflacx_repeated_reading_row(ref: Path) -> None:
    meta = _meta(ref)
    n = len(_rows(meta)) - 1
    _append_row(meta, _rows(meta)[1])
    e = _raises(lambda: load_reflacx(ref), meta, n + 1, f"reading id {_reading(ref)!r} is listed twice")
    assert "metadata_phase_1.csv, row 1" in str(e)


def test_reflacx_reading_in_two_phase_files(ref: Path) -> None:
    p2 = _meta(ref, 2)
    n = len(_rows(p2)) - 1
    _append_row(p2, _rows(_meta(ref))[1])
    e = _raises(lambda: load_reflacx(ref), p2, n + 1, "listed twice")
    assert "metadata_phase_1.csv, row 1" in str(e)


# --------------------------------------------------------------------------- 5, 7: EGD master sheet


def test_egd_master_sheet_must_list_every_image(egd: Path) -> None:
    ms = egd / "master_sheet.csv"
    rows = _rows(ms)
    gone = rows.pop(2)[0]
    _write(ms, rows)
    _raises(lambda: load_gaze(egd), ms, None, f"no row for DICOM_ID {gone!r}")  # X_ORIGINAL present: still needed


def test_egd_master_sheet_rows_are_unique(egd: Path) -> None:
    ms = egd / "master_sheet.csv"
    rows = _rows(ms)
    _append_row(ms, [rows[1][0], *rows[1][1:4], "0", "0", "0", "0", *rows[1][8:]])
    _raises(lambda: load_gaze(egd), ms, len(rows), f"second row for dicom_id {rows[1][0]!r}", "first at row 1")


@pytest.mark.parametrize(("pads", "word"), [({"image_left_pad": 960, "image_right_pad": 960}, "no display area"), ({"image_top_pad": 1080}, "no display area")])
def test_egd_paddings_must_leave_a_display_area(egd: Path, pads: dict[str, int], word: str) -> None:
    f = egd / "fixations.csv"
    rows = _rows(f)
    _write(f, [r[:8] for r in rows])  # no X_ORIGINAL: screen coordinates are mapped
    sizes = {r[0]: (128, 128) for r in rows[1:]}
    ms = _set(egd / "master_sheet.csv", 2, **pads)
    _raises(lambda: load_egd_cxr(f, ms, image_sizes=sizes), ms, 2, word)


# --------------------------------------------------------------------------- 8: canonical JSON


RECORD = {"reader_id": "r1", "fixations": [[10, 10, 0, 0.2]], "image_size": [128, 128], "pixels_per_degree": 20}
GOOD = {"format": "gazerad-gaze", "version": 1, "image_id": "IM1", "records": [RECORD]}


def _canon(**record: object) -> dict[str, Any]:
    obj = json.loads(json.dumps(GOOD))
    obj["records"][0].update(record)
    return obj


@pytest.mark.parametrize(
    ("obj", "words"),
    [
        (_canon(fixations=[[500, 1, 0, 1]]), "outside the 128 x 128 image"),
        (_canon(image_size=[-128, 0]), "must be positive"),
        (_canon(image_size=[1, 2, 3]), "must be [H, W]"),
        (_canon(image_size=[1e9, 1e9]), "at most 67108864 pixels"),
        (_canon(pixels_per_degree=-5), "pixels_per_degree"),
        (_canon(pixels_per_degree=1e9), "pixels_per_degree"),
        (_canon(pixels_per_degree="20"), "pixels_per_degree"),
        (_canon(fixations=[[5, 1, 0, 1e300]]), "0 <= t_start"),
        (_canon(fixations=[[True, 1, 0, 1]]), "numbers"),
        (_canon(fixations=[[10**400, 1, 0, 1]]), "too large"),
        ({**GOOD, "image_id": "../../x"}, PLAIN),
    ],
)
def test_read_gaze_json_has_the_upload_checks(tmp_path: Path, obj: dict[str, Any], words: str) -> None:
    p = tmp_path / "IM1.json"
    p.write_text(json.dumps(obj))
    for read in (lambda: read_gaze_json(p), lambda: parse_gaze_upload(p, "IM1", (128, 128))):
        with pytest.raises(InputError) as e:
            read()
        assert words in str(e.value) and "IM1.json" in str(e.value)


def test_read_gaze_json_file_errors_are_input_errors(tmp_path: Path) -> None:
    p = tmp_path / "IM1.json"
    p.write_bytes(json.dumps(GOOD).encode() + b"\xff")
    _raises(lambda: read_gaze_json(p), p, None, "UTF-8")
    p.unlink()
    p.mkdir()
    _raises(lambda: read_gaze_json(p), p, None, "is not a file")
    with pytest.raises(InputError):
        GazeStore(tmp_path).collection()  # the folder IM1.json is listed by the store
    p.rmdir()
    p.write_text(json.dumps(GOOD))
    (rec,) = GazeStore(tmp_path).collection()["IM1"]
    assert rec.pixels_per_degree == 20 and rec.image_size == (128, 128)


# --------------------------------------------------------------------------- 9: bounds


def test_reflacx_pixels_per_degree_bounds(ref: Path) -> None:
    f = _fix(ref)
    rows = _rows(f)
    good = float(rows[1][rows[0].index("angular_resolution_x_pixels_per_degree")])
    for k, bad in enumerate(["1e9", "-3", "abc"], start=2):
        _set(f, k, angular_resolution_x_pixels_per_degree=bad)
    _raises(lambda: load_reflacx(ref, strict=True), f, 2, "angular_resolution_x_pixels_per_degree", "'1e9'")
    c = load_reflacx(ref)
    assert c.dropped == {"bad_pixels_per_degree": 3}
    (rec,) = [r for r in c.records() if r.screen and r.screen["reading_id"] == _reading(ref)]
    assert rec.pixels_per_degree == pytest.approx(good, rel=1e-6) and len(rec) == len(rows) - 1  # fixations kept


@pytest.mark.parametrize("size", ["1e9", "0", "-128", "12.5", "1_28"])
def test_reflacx_image_size_bounds(ref: Path, size: str) -> None:
    meta = _set(_meta(ref), 1, image_size_x=size)
    _raises(lambda: load_reflacx(ref, strict=True), meta, 1, "image_size_x/y")
    assert load_reflacx(ref).dropped == {"bad_metadata": 1}


def test_image_size_bound_is_the_readers() -> None:
    with pytest.raises(InputError, match="at most"):
        _checks.size_for("g.csv", {"a": (1 << 20, 1 << 20)}, "a")


# --------------------------------------------------------------------------- 10-12: flags and numbers


@pytest.mark.parametrize(("flag", "kept"), [("Ture", None), ("maybe", None), ("", None), ("TRUE", False), ("false", True), ("0", True)])
def test_reflacx_discarded_flag_must_be_a_boolean(ref: Path, flag: str, kept: bool | None) -> None:
    meta = _set(_meta(ref), 1, eye_tracking_data_discarded=flag)
    readings = {r.screen["reading_id"] for r in load_reflacx(ref).records() if r.screen}
    if kept is None:
        _raises(lambda: load_reflacx(ref, strict=True), meta, 1, "eye_tracking_data_discarded", "not a boolean")
        assert load_reflacx(ref).dropped == {"bad_metadata": 1}
    assert (_reading(ref) in readings) is bool(kept)


@pytest.mark.parametrize("flag", ["0.5", "2", "-1"])
def test_egd_fpogv_is_a_0_1_flag(egd: Path, flag: str) -> None:
    f = _set(egd / "fixations.csv", 2, FPOGV=flag)
    _raises(lambda: load_egd_cxr(f, egd / "master_sheet.csv", strict=True), f, 2, "FPOGV", "0/1 flag")
    assert load_gaze(egd).dropped == {"bad_flag": 1}


@pytest.mark.parametrize("text", ["1_0", "\u0661\u0662", "1,5"])
def test_numbers_are_plain_decimals(ref: Path, text: str) -> None:
    f = _set(_fix(ref), 1, x_position=text)
    _raises(lambda: load_reflacx(ref, strict=True), f, 1, "x_position", "is not a number")
    assert load_reflacx(ref).dropped == {"non_numeric": 1}


def test_parse_float() -> None:
    assert _checks.parse_float(" 12 ") == 12.0 and _checks.parse_float("-1.5e3") == -1500.0 and _checks.parse_float(3) == 3.0
    for bad in ("1_0", "\u0661", True, 10**400, None, "x"):
        with pytest.raises(ValueError):
            _checks.parse_float(bad)
