"""The 3D Slicer extension outside Slicer: ``GazeRadLib`` (plain Python) against a real
GazeRad MONAI Label server on 127.0.0.1, and the Slicer layer's files checked statically.

One server for the module: localisation and attention models are trained in-process before
it starts (gaze stored for the first 40 of 48 studies). The training test runs last-but-one
and stops its own run; nothing else trains over HTTP.
"""

from __future__ import annotations

import ast
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import SimpleITK as sitk

from tests.support.server import (
    REPO,  # noqa: E402 - GazeRadLib comes from pytest's pythonpath (pyproject.toml)
    Server,
    free_port,
)
from tests.support.studies import SIZE, mass_boxes, mass_studies, simulated_gaze_csv

EXT = REPO / "slicer_extension"
MODULE = EXT / "GazeRad"

from GazeRadLib import (  # noqa: E402
    AuthRequired,
    GazeRadClient,
    GazeRadError,
    ModelNotReady,
    NotFound,
    NrrdError,
    ServerBusy,
    ServerError,
    ServerTimeout,
    ServerUnreachable,
    colour_table,
    decode_multipart,
    heatmap_volume,
    localization_status,
    pixel_to_ras,
    read_nrrd,
    roi_markups,
    scanpath_markups,
    score_table,
    training_progress,
)

pytestmark = pytest.mark.slow

N = 48
N_GAZE = 40  # studies 0..39 have stored gaze; 40..47 have none
DX = "dx00044"  # a DICOM copy of 00044 (MONOCHROME1, 0.5 mm pixels)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    from gazerad.gaze.store import GazeStore, parse_gaze_upload
    from gazerad.io.dicom import write_dicom_xray

    root = mass_studies(tmp_path_factory.mktemp("slicer") / "masses", n=N, seed=5)
    boxes = mass_boxes(root)
    store = GazeStore(root / "images" / "labels" / "gaze")
    gz = root / "gaze_csv"
    gz.mkdir()
    for k in range(N_GAZE):
        i = f"{k:05d}"
        f = simulated_gaze_csv(gz / f"{i}.csv", boxes.get(f"{i}.png"), seed=k)
        store.put(i, parse_gaze_upload(f, i, (SIZE, SIZE), reader_id="sim"))
    px = np.asarray(Image.open(root / "images" / "00044.png")).astype(np.uint16)
    write_dicom_xray(root / "images" / f"{DX}.dcm", 65535 - px, photometric="MONOCHROME1", spacing=(0.5, 0.5))
    return root


@pytest.fixture(scope="module")
def server(studies: Path, tmp_path_factory: pytest.TempPathFactory):
    from gazerad.serving.train import run_job

    s = Server(studies / "images", tmp_path_factory.mktemp("slicer_app"))
    run_job("localization", studies / "images", s.model_dir, {"epochs": 2, "device": "cpu"})
    run_job("attention", studies / "images", s.model_dir, {"epochs": 2, "input_size": 64, "device": "cpu"})
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> GazeRadClient:
    return GazeRadClient(server.url, timeout=60)


# ---------------------------------------------------------------------------- server basics
def test_info_and_no_auth(client: GazeRadClient) -> None:
    info = client.info()
    assert info["models"]["attention"]["weights"] == "ready" and info["models"]["localization"]["weights"] == "ready"
    assert info["models"]["classification"]["weights"].startswith("missing")
    assert {"attention", "localization"} <= set(info["trainers"]) and "random" in info["strategies"]
    assert client.auth_enabled() is False  # the auth router is mounted only with auth on
    assert client.login("someone", "secret") is None and client.token is None
    assert "00000" in client.studies() and DX in client.studies()


def test_untrained_model_and_bad_ids_are_clear_messages(client: GazeRadClient) -> None:
    with pytest.raises(ModelNotReady) as e:
        client.classification("00001")
    assert e.value.status == 503 and "no weights yet" in str(e.value) and "train" in str(e.value)
    with pytest.raises(NotFound) as e:
        client.attention("nope")
    assert "unknown image id 'nope'" in str(e.value)
    with pytest.raises(ServerError) as e:
        client.localization("../../etc/passwd")
    assert e.value.status == 400 and "invalid image id" in str(e.value)


# ---------------------------------------------------------------------------- attention heatmap
@pytest.mark.parametrize("image, spacing", [("00044", 1.0), (DX, 0.5)])
def test_heatmap_keeps_geometry_and_values(client: GazeRadClient, tmp_path: Path, image: str, spacing: float) -> None:
    nrrd, info = client.attention(image, boxes=[[10, 10, 30, 30]])
    f = tmp_path / "heat.nrrd"
    f.write_bytes(nrrd)
    ref = sitk.ReadImage(str(f))
    want = sitk.GetArrayFromImage(ref)
    hv = heatmap_volume(nrrd)
    # values: identical to SimpleITK's reading, float32, sum 1, range kept
    assert hv.array.dtype == np.float32 and hv.array.shape == (1, SIZE, SIZE)
    np.testing.assert_array_equal(hv.array[0], want)
    assert abs(float(hv.array.sum()) - 1.0) < 1e-3
    assert hv.value_range == (float(want.min()), float(want.max()))
    assert hv.value_range[0] <= hv.threshold < hv.value_range[1]
    assert hv.window_level[0] == pytest.approx(float(want.max() - want.min()))
    assert info["max"] == pytest.approx(hv.value_range[1], rel=1e-5)
    # geometry: SimpleITK's, and the server's JSON description
    g = hv.geometry
    assert g.size == ref.GetSize() and g.spacing == pytest.approx(ref.GetSpacing())
    assert g.origin == pytest.approx(ref.GetOrigin()) and g.direction == pytest.approx(ref.GetDirection())
    assert g.spacing == pytest.approx((spacing, spacing))
    for k, v in g.as_dict().items():
        assert v == pytest.approx(info["geometry"][k]), k
    # IJK-to-RAS: ITK's index -> LPS point, with x and y negated
    m = np.asarray(hv.ijk_to_ras)
    for ij in [(0, 0), (SIZE - 1, 0), (17, 93), (SIZE - 1, SIZE - 1)]:
        lps = ref.TransformIndexToPhysicalPoint(ij)
        np.testing.assert_allclose(m @ [ij[0], ij[1], 0, 1], [-lps[0], -lps[1], 0, 1], atol=1e-9)
    # the attention mass the server reports inside the box is the array's (rows y, columns x)
    assert info["boxes"][0] == pytest.approx(float(want[10:40, 10:40].sum()), abs=1e-4)


@pytest.mark.parametrize("pixel, compress, dim", [(sitk.sitkUInt16, False, 3), (sitk.sitkFloat64, True, 2), (sitk.sitkInt16, True, 3)])
def test_nrrd_reader_matches_simpleitk(tmp_path: Path, pixel: int, compress: bool, dim: int) -> None:
    rng = np.random.default_rng(dim)
    shape = (4, 7, 9) if dim == 3 else (7, 9)
    a = (rng.normal(0, 1000, shape)).astype(sitk.GetArrayFromImage(sitk.Image([2] * dim, pixel)).dtype)
    img = sitk.GetImageFromArray(a)
    img.SetSpacing([0.5, 0.75, 2.0][:dim])
    img.SetOrigin([-10.0, 20.0, 5.5][:dim])
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection([c, -s, 0, s, c, 0, 0, 0, 1] if dim == 3 else [c, -s, s, c])
    f = tmp_path / "x.nrrd"
    sitk.WriteImage(img, str(f), compress)
    arr, g, hdr = read_nrrd(str(f))
    np.testing.assert_array_equal(arr, a)
    assert g.spacing == pytest.approx(img.GetSpacing()) and g.origin == pytest.approx(img.GetOrigin())
    assert g.direction == pytest.approx(img.GetDirection())
    assert hdr["encoding"] == ("gzip" if compress else "raw")
    idx = (3, 5, 2)[:dim]
    p = np.asarray(img.TransformIndexToPhysicalPoint(idx))
    want = np.r_[p, [0.0] * (3 - dim)] * [-1, -1, 1]
    np.testing.assert_allclose((g.ijk_to_ras() @ np.r_[idx, [0] * (3 - dim), 1])[:3], want, atol=1e-9)


def test_nrrd_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(NrrdError, match="not an NRRD file"):
        read_nrrd(b'{"detail": "oops"}')
    img = sitk.GetImageFromArray(np.ones((8, 8), np.float32))
    f = tmp_path / "x.nrrd"
    sitk.WriteImage(img, str(f), False)
    with pytest.raises(NrrdError, match="truncated"):
        read_nrrd(f.read_bytes()[:-10])
    with pytest.raises(NrrdError, match="encoding 'bzip2'"):
        read_nrrd(f.read_bytes().replace(b"encoding: raw", b"encoding: bzip2"))


def test_colour_table_is_a_valid_lookup() -> None:
    t = np.asarray(colour_table(256))
    assert t.shape == (256, 4) and t.min() >= 0 and t.max() <= 1
    assert t[0, 3] == 0.0 and t[-1, 3] == 1.0  # zero attention is transparent
    assert np.all(np.diff(t[:, :3].sum(1)) >= -1e-9)  # brightness rises with attention


# ---------------------------------------------------------------------------- localisation
# The fields Slicer's markups schema (v1.0.3) requires or constrains for the ROIs we write,
# written out here (the schema file is Slicer's; not vendored).
_NUM3 = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}
_NUM9 = {"type": "array", "items": {"type": "number"}, "minItems": 9, "maxItems": 9}
ROI_SCHEMA = {
    "type": "object",
    "required": ["@schema", "markups"],
    "properties": {
        "@schema": {"type": "string", "pattern": "markups-schema-v1\\.0\\.3\\.json#$"},
        "markups": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "name", "coordinateSystem", "coordinateUnits", "roiType", "center", "orientation", "size", "controlPoints"],
                "properties": {
                    "type": {"enum": ["ROI"]},
                    "name": {"type": "string"},
                    "coordinateSystem": {"enum": ["LPS", "RAS"]},
                    "coordinateUnits": {"enum": ["mm", "um"]},
                    "roiType": {"enum": ["Box"]},
                    "center": _NUM3,
                    "orientation": _NUM9,
                    "size": _NUM3,
                    "locked": {"type": "boolean"},
                    "controlPoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["id", "label", "position", "positionStatus"],
                            "properties": {
                                "id": {"type": "string"},
                                "label": {"type": "string"},
                                "description": {"type": "string"},
                                "position": _NUM3,
                                "orientation": _NUM9,
                                "positionStatus": {"enum": ["undefined", "preview", "defined"]},
                            },
                        },
                    },
                    "display": {
                        "type": "object",
                        "properties": {
                            "opacity": {"type": "number", "minimum": 0, "maximum": 1},
                            "color": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 3, "maxItems": 3},
                            "visibility": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module")
def loc(client: GazeRadClient) -> dict:
    res = client.localization("00044", min_score=0.0, max_boxes=2)
    assert res["boxes"], res
    return res


def test_localization_rank_over_http(client: GazeRadClient, loc: dict) -> None:
    """``rank`` reaches the server (default expected hit); an unknown one is a 4xx naming it."""
    assert loc["rank"] == "expected_hit"
    by_p = client.localization("00044", min_score=0.0, max_boxes=2, rank="probability")
    assert by_p["rank"] == "probability" and by_p["prediction"] == loc["prediction"]
    assert sorted((b["label"], b["x"], b["y"]) for b in by_p["boxes"]) == sorted((b["label"], b["x"], b["y"]) for b in loc["boxes"])
    with pytest.raises(ServerError) as e:
        client.localization("00044", rank="cam_score")
    assert 400 <= e.value.status < 500 and "'rank'" in str(e.value), str(e.value)


def test_roi_markups_have_the_schema_fields_labels_and_scores(loc: dict) -> None:
    from gazerad.serving.markups import roi_markups as server_roi_markups

    lps = roi_markups(loc["boxes"])
    jsonschema.validate(lps, ROI_SCHEMA)
    assert len(lps["markups"]) == len(loc["boxes"])
    for mk, b in zip(lps["markups"], loc["boxes"]):
        assert mk["name"] == f"{b['label']} {b['score']:.2f}" == mk["controlPoints"][0]["label"]
        assert mk["coordinateSystem"] == "LPS" and mk["center"][:2] == pytest.approx(b["center_mm"])
        assert f"score {b['score']:.3f}" in mk["controlPoints"][0]["description"]
    # the class's validation hit rate, where the server sends one (null under an override)
    for rate, n, says in ((0.18, 17, "validation hit rate 18% of 17 boxes at IoU 0.3"), (0.18, None, "validation hit rate 18% at IoU 0.3"), (None, None, None)):
        box = {**loc["boxes"][0], "validation_t_iou_0.3": rate, "validation_boxes": n}
        desc = roi_markups([box])["markups"][0]["controlPoints"][0]["description"]
        assert (says in desc) if says else ("hit rate" not in desc), desc
        assert desc == server_roi_markups([box])["markups"][0]["controlPoints"][0]["description"]
    # the same ROIs as the server's own Slicer output (gazerad.serving.markups)
    ref = server_roi_markups(loc["boxes"])
    for mine, theirs in zip(lps["markups"], ref["markups"]):
        for k in ("type", "name", "coordinateSystem", "roiType", "center", "orientation", "size"):
            assert mine[k] == pytest.approx(theirs[k]) if isinstance(mine[k], list) else mine[k] == theirs[k], k
        assert mine["controlPoints"][0]["description"] == theirs["controlPoints"][0]["description"]  # the same words
    # in RAS from the pixel boxes and the heatmap's IJK-to-RAS: the LPS centres negated in x, y
    geo_ijk = np.diag([-1.0, -1.0, 1.0, 1.0]).tolist()
    ras = roi_markups(loc["boxes"], ijk_to_ras=geo_ijk)
    jsonschema.validate(ras, ROI_SCHEMA)
    for r, mk in zip(ras["markups"], lps["markups"]):
        assert r["coordinateSystem"] == "RAS"
        assert r["center"] == pytest.approx([-mk["center"][0], -mk["center"][1], 0.0])
        assert r["size"] == pytest.approx(mk["size"])
        assert r["controlPoints"][0]["position"] == r["center"]


def test_roi_markups_on_a_dicom_in_mm(client: GazeRadClient) -> None:
    res = client.localization(DX, min_score=0.0, max_boxes=1)
    nrrd, _ = client.attention(DX)
    hv = heatmap_volume(nrrd)  # the DICOM's grid: 0.5 mm pixels
    ras = roi_markups(res["boxes"], ijk_to_ras=hv.ijk_to_ras)
    jsonschema.validate(ras, ROI_SCHEMA)
    b, r = res["boxes"][0], ras["markups"][0]
    assert r["size"][:2] == pytest.approx([0.5 * b["w"], 0.5 * b["h"]])
    assert r["size"][:2] == pytest.approx(b["size_mm"])
    assert r["center"][:2] == pytest.approx([-b["center_mm"][0], -b["center_mm"][1]])


def test_server_slicer_output_agrees(client: GazeRadClient, loc: dict) -> None:
    r = client.request(
        "POST",
        "/infer/localization",
        params={"image": "00044", "output": "all"},
        fields={"params": json.dumps({"output": "slicer", "min_score": 0.0, "max_boxes": 2})},
    )
    parts = decode_multipart(r.body, r.content_type)
    theirs = json.loads(parts["image"][1])
    jsonschema.validate(theirs, ROI_SCHEMA)
    mine = roi_markups(json.loads(parts["params"][1])["boxes"])
    assert [m["center"] for m in mine["markups"]] == [m["center"] for m in theirs["markups"]]


def test_score_table(loc: dict) -> None:
    t = score_table(loc)
    names = [c[0] for c in t["columns"]]
    assert names[:4] == ["Finding", "Kind", "Score", "Probability"]
    classes = [r for r in t["rows"] if r[1] == "class"]
    boxes = [r for r in t["rows"] if r[1] == "box"]
    assert [r[0] for r in classes] == [p["label"] for p in sorted(loc["prediction"], key=lambda p: -p["score"])]
    assert len(boxes) == len(loc["boxes"])
    assert boxes[0][2] == loc["boxes"][0]["score"] and boxes[0][4:] == [loc["boxes"][0][k] for k in "xywh"]
    assert all(len(r) == len(t["columns"]) for r in t["rows"])


# ---------------------------------------------------------------------------- gaze
def test_gaze_import_upload_readback_roundtrip(client: GazeRadClient, studies: Path, tmp_path: Path) -> None:
    image = "00044"  # no gaze stored yet
    assert client.gaze(image) is None and "gaze" not in client.image_info(image)
    box = mass_boxes(studies)[f"{image}.png"]
    csv = simulated_gaze_csv(tmp_path / "reading.csv", box, seed=44)
    sent = np.loadtxt(csv, delimiter=",", skiprows=1)
    res = client.upload_gaze(image, str(csv), reader="dr_slicer")
    assert res["image"] == image
    back = client.gaze(image)
    assert back["format"] == "gazerad-gaze" and back["image_id"] == image
    rec = back["records"][0]
    assert rec["reader_id"] == "dr_slicer" and rec["image_size"] == [SIZE, SIZE] and rec["source_format"] == "generic"
    np.testing.assert_allclose(np.asarray(rec["fixations"]), sent, atol=1e-6)
    info = client.image_info(image)["gaze"]
    assert info["readers"] == ["dr_slicer"] and info["fixations"] == len(sent)

    # the scanpath Slicer shows: a curve in time order and numbered fixation points
    ijk = heatmap_volume(client.attention(image)[0]).ijk_to_ras
    mk = scanpath_markups(back, ijk_to_ras=ijk)
    curve, points = mk["markups"]
    assert curve["type"] == "Curve" and points["type"] == "Fiducial" and curve["coordinateSystem"] == "RAS"
    assert len(curve["controlPoints"]) == len(points["controlPoints"]) == len(sent)
    for cp, (x, y, t0, t1) in zip(points["controlPoints"], sent):
        assert cp["position"] == pytest.approx(pixel_to_ras(x, y, ijk))
        assert cp["position"] == pytest.approx([-(x - 0.5), -(y - 0.5), 0.0])  # 1 mm pixels at origin 0
        assert f"{1000 * (t1 - t0):.0f} ms" in cp["description"]
    assert [cp["label"] for cp in points["controlPoints"][:3]] == ["1", "2", "3"]

    # a second format (GazeRad JSON, another reader) appends; replace=True overwrites
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps(
            {
                "format": "gazerad-gaze",
                "version": 1,
                "records": [{"reader_id": "dr_two", "fixations": [[20.5, 30.0, 0.0, 0.3], [60.0, 64.0, 0.35, 0.9]], "image_size": [SIZE, SIZE]}],
            }
        )
    )
    client.upload_gaze(image, str(other))
    assert [r["reader_id"] for r in client.gaze(image)["records"]] == ["dr_slicer", "dr_two"]
    assert len(scanpath_markups(client.gaze(image))["markups"]) == 4
    assert scanpath_markups(client.gaze(image), reader="dr_two")["markups"][0]["name"] == "Scanpath dr_two"
    client.upload_gaze(image, str(other), reader="dr_three", replace=True)
    assert [r["reader_id"] for r in client.gaze(image)["records"]] == ["dr_three"]
    # a REFLACX fixations.csv (times in s, positions in pixels)
    reflacx = tmp_path / "fixations.csv"
    reflacx.write_text(
        "timestamp_start_fixation,timestamp_end_fixation,x_position,y_position,"
        "angular_resolution_x_pixels_per_degree,angular_resolution_y_pixels_per_degree\n"
        "0.5,1.0,40.0,50.0,20,22\n1.1,1.6,90.0,70.5,20,22\n"
    )
    client.upload_gaze(image, str(reflacx), reader="dr_reflacx", replace=True)
    rec = client.gaze(image)["records"][0]
    assert rec["source_format"] == "reflacx_fixations" and rec["reader_id"] == "dr_reflacx"
    np.testing.assert_allclose(rec["fixations"], [[40.0, 50.0, 0.5, 1.0], [90.0, 70.5, 1.1, 1.6]])

    # a bad file: the server's words reach the user, nothing is stored
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,t_start,t_end\n10,10,0,0.2\n900,10,0.3,0.5\n")
    with pytest.raises(ServerError) as e:
        client.upload_gaze(image, str(bad))
    assert e.value.status == 422 and "outside" in str(e.value) and image in str(e.value)
    with pytest.raises(GazeRadError, match="does not exist"):
        client.upload_gaze(image, str(tmp_path / "missing.csv"))
    client.delete_gaze(image)
    assert client.gaze(image) is None


def test_next_study(client: GazeRadClient) -> None:
    assert client.next_study("random")["id"] in client.studies()  # MONAI Label's own: ignores "exclude"
    # GazeRad's strategies: the best-scored study without gaze, never one in "exclude"
    unread = sorted(i for i in client.studies() if "gaze" not in client.image_info(i))
    assert unread == [f"{k:05d}" for k in range(N_GAZE, N)] + [DX]
    first = client.next_study("gaze_novelty")
    assert first["id"] in unread and isinstance(first["score"], float)
    second = client.next_study("gaze_novelty", exclude=[first["id"]])
    assert second["id"] in unread and second["id"] != first["id"]
    assert client.next_study("gaze_novelty", exclude=unread) is None
    with pytest.raises(ServerError) as e:
        client.next_study("no_such_strategy")
    assert "no_such_strategy" in str(e.value)


# ---------------------------------------------------------------------------- training
def test_train_start_status_busy_stop(client: GazeRadClient, server: Server) -> None:
    published = (server.model_dir / "attention.pt").stat().st_mtime_ns
    with pytest.raises(GazeRadError, match="no trainer 'nope'.*attention"):
        client.train_start("nope", {})
    task = client.train_start("attention", {"epochs": 400, "input_size": 64, "device": "cpu"})
    assert task["status"] in ("SUBMITTED", "RUNNING") and task["id"]
    prog = None
    t0 = time.time()
    while time.time() - t0 < 90:
        prog = training_progress(client.train_status())
        if prog.state == "RUNNING" and prog.fraction is not None:
            break
        assert prog.state in ("SUBMITTED", "RUNNING"), prog
        time.sleep(1.0)
    assert prog.state == "RUNNING" and prog.task_id == task["id"] and 0.0 <= prog.fraction < 1.0, prog
    assert client.train_running()["id"] == task["id"]
    with pytest.raises(ServerBusy) as e:
        client.train_start("localization", {"epochs": 1})
    msg = str(e.value)
    assert e.value.status == 429 and "busy" in msg and "Already Running" in msg and "stop it" in msg
    stopped = client.train_stop()
    assert stopped["status"] == "STOPPED"
    t0 = time.time()
    while client.train_running() is not None and time.time() - t0 < 30:
        time.sleep(0.5)
    final = training_progress(client.train_status())
    assert final.state == "STOPPED" and final.finished and final.task_id == task["id"]
    assert (server.model_dir / "attention.pt").stat().st_mtime_ns == published  # a stopped run publishes nothing


# ---------------------------------------------------------------------------- network and auth
def test_closed_port_is_a_clear_message() -> None:
    port = free_port()
    with pytest.raises(ServerUnreachable) as e:
        GazeRadClient(f"http://127.0.0.1:{port}").info()
    assert str(e.value).startswith(f"cannot reach GazeRad server at http://127.0.0.1:{port}: connection refused")
    with pytest.raises(ServerUnreachable, match="unknown host"):
        GazeRadClient("http://no-such-host.invalid:8000", timeout=10).info()
    with pytest.raises(GazeRadError, match="invalid server URL"):
        GazeRadClient("localhost:8000")


def test_silent_server_times_out_with_a_clear_message() -> None:
    with socket.socket() as s:  # accepts connections, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(ServerTimeout) as e:
            GazeRadClient(url, timeout=1).studies()
    assert f"GazeRad server at {url} did not answer GET /datastore/ within 1 s" in str(e.value)


class _AuthServer(http.server.BaseHTTPRequestHandler):
    """A server with MONAI Label's auth answers: 401 without the right bearer token, 429 on /train/."""

    seen: list = []

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != "Bearer tok-123":
            return self._send(401, {"detail": "Not authenticated"})
        if self.path.startswith("/auth/"):
            return self._send(200, {"enabled": True})
        self._send(200, {"models": {}, "trainers": {"attention": {}}})

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n).decode()
        if self.path == "/auth/token":
            ok = "username=dr&password=pw" in body
            return self._send(200 if ok else 401, {"access_token": "tok-123", "token_type": "bearer"} if ok else {"detail": "Invalid user credentials"})
        self._send(429, {"detail": "++++++++++ Train Task is Already Running"})

    def _send(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_auth_token_is_sent_and_refusals_are_clear() -> None:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AuthServer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        c = GazeRadClient(url)
        with pytest.raises(AuthRequired) as e:
            c.info()
        assert e.value.status == 401 and "Not authenticated" in str(e.value) and "log in" in str(e.value)
        with pytest.raises(AuthRequired, match="Invalid user credentials"):
            c.login("dr", "wrong")
        assert c.login("dr", "pw") == "tok-123" and c.token == "tok-123"
        assert c.auth_enabled() is True and c.info()["trainers"] == {"attention": {}}
        assert _AuthServer.seen[-1] == "Bearer tok-123"
        assert GazeRadClient(url, token="tok-123").info()["models"] == {}
        with pytest.raises(ServerBusy, match="busy .429.: \\+* ?Train Task is Already Running"):
            GazeRadClient(url, token="tok-123").train_start("attention")
    finally:
        httpd.shutdown()


# ---------------------------------------------------------------------------- the Slicer layer
def test_module_outside_slicer_fails_with_a_clear_message() -> None:
    src = (MODULE / "GazeRad.py").read_text()
    compile(src, "GazeRad.py", "exec")  # syntax
    r = subprocess.run([sys.executable, "-c", "import GazeRad"], cwd=MODULE, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "ImportError: GazeRad.py runs inside 3D Slicer" in r.stderr, r.stderr[-2000:]


def test_module_follows_the_scripted_module_template() -> None:
    tree = ast.parse((MODULE / "GazeRad.py").read_text())
    classes = {c.name: [ast.unparse(b) for b in c.bases] for c in tree.body if isinstance(c, ast.ClassDef)}
    assert classes["GazeRad"] == ["ScriptedLoadableModule"]
    assert classes["GazeRadWidget"][0] == "ScriptedLoadableModuleWidget"
    assert classes["GazeRadLogic"] == ["ScriptedLoadableModuleLogic", "SceneLogic"]
    assert classes["GazeRadTest"] == ["ScriptedLoadableModuleTest"]
    test_cls = next(c for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "GazeRadTest")
    assert {"setUp", "runTest"} <= {f.name for f in test_cls.body if isinstance(f, ast.FunctionDef)}
    # the Logic never imports the server package or third-party HTTP clients
    imported = {n.names[0].name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"gazerad", "requests", "torch", "SimpleITK", "monailabel"}
    for f in (MODULE / "GazeRadLib").glob("*.py"):
        t = ast.parse(f.read_text())
        mods = {n.names[0].name.split(".")[0] for n in ast.walk(t) if isinstance(n, ast.Import)}
        mods |= {n.module.split(".")[0] for n in ast.walk(t) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
        # scene.py builds MRML nodes: Slicer's own 'slicer' and 'vtk' (and pydicom, which Slicer bundles)
        extra = {"slicer", "vtk", "pydicom"} if f.name == "scene.py" else set()
        assert mods <= set(sys.stdlib_module_names) | {"numpy", "__future__"} | extra, (f.name, mods)


def test_ui_file_has_every_widget_the_module_uses() -> None:
    ui = ET.parse(MODULE / "Resources" / "UI" / "GazeRad.ui").getroot()
    names = {w.get("name") for w in ui.iter("widget")}
    used = set()
    for node in ast.walk(ast.parse((MODULE / "GazeRad.py").read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            used.add(node.attr)
    assert used and used <= names, sorted(used - names)


def test_cmake_lists_every_module_file() -> None:
    top = (EXT / "CMakeLists.txt").read_text()
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
        "EXTENSION_DEPENDS",
        "add_subdirectory(GazeRad)",
        "find_package(Slicer REQUIRED)",
        "Slicer_EXTENSION_GENERATE_CONFIG",
        "Slicer_EXTENSION_CPACK",
    ):
        assert key in top, key
    mod = (MODULE / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in mod and "WITH_GENERIC_TESTS" in mod
    listed = set()
    for line in mod.splitlines():
        line = line.strip()
        if line.endswith((".py", ".ui", ".png")):
            listed.add(line.replace("${MODULE_NAME}", "GazeRad"))
    on_disk = {
        str(p.relative_to(MODULE))
        for p in MODULE.rglob("*")
        if p.suffix in (".py", ".ui", ".png") and "Testing" not in p.parts and "__pycache__" not in p.parts
    }
    assert listed == on_disk
    entry = json.loads((EXT / "GazeRad.json").read_text())
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    assert {"scm_url", "scm_revision", "category", "build_subdirectory", "tier"} <= set(entry)


def test_localization_status_says_what_is_shown(client: GazeRadClient) -> None:
    """The status line: findings at or above the minimum score, explored candidates below it
    (``top_k``), and the server's "no finding" message when nothing reaches it."""
    none = client.localization("00044", min_score=1.0)
    assert localization_status(none, 1.0) == none["message"] and "no finding" in none["message"]
    explored = client.localization("00044", min_score=1.0, top_k=2)
    n = len(explored["boxes"])
    assert n and all(b["below_min_score"] for b in explored["boxes"])
    assert localization_status(explored, 1.0) == f"{none['message']}; showing {n} candidate box(es) below it, best first"
    desc = roi_markups(explored["boxes"])["markups"][0]["controlPoints"][0]["description"]
    assert desc.endswith("; below the minimum score (explored)"), desc
    found = client.localization("00044", min_score=0.0, max_boxes=1)
    assert localization_status(found, 0.0) == f"{len(found['boxes'])} finding box(es) at probability >= 0.00"
    mixed = {"boxes": [{"below_min_score": False}, {"below_min_score": True}]}
    assert localization_status(mixed, 0.5) == "1 finding box(es) at probability >= 0.50; also 1 candidate box(es) below it, best first"


def test_training_progress_reads_the_log_lines() -> None:
    # lines as the server's GET /train/ returns them (from real KACL and attention runs)
    kacl = ["kacl epoch 2/4:  50%|█████     | 1/2 [00:03<00:03,  3.39s/it, loss=1.2104]"]
    assert training_progress({"status": "RUNNING", "details": kacl}).fraction == pytest.approx(0.375)
    done_epoch = kacl + ["epoch 2/4  loss 1.1351 (bce 0.2732, con 3.1460)  15.8 s, radiomics 2.3 s"]
    assert training_progress({"status": "RUNNING", "details": done_epoch}).fraction == pytest.approx(0.5)
    att = [
        "train-attention:   1%|          | 15/1500 [00:01<03:11,  7.80step/s, cc=0.441, loss=2.038]",
        "attention data (train): 100%|██████████| 33/33 [00:00<00:00, 878.18image/s]",
        "attention data (heldout): 100%|██████████| 7/7 [00:00<00:00, 212.93image/s]",
    ]
    p = training_progress({"status": "RUNNING", "details": att, "id": "t1"})
    assert p.fraction == pytest.approx(0.01) and p.task_id == "t1" and not p.finished
    assert training_progress({"status": "RUNNING", "details": att[1:]}).fraction is None  # data loading only
    assert training_progress({"status": "DONE", "details": []}).fraction == 1.0
    none = training_progress(None)
    assert none.state == "NONE" and none.finished and "no training" in none.message


def test_module_has_no_undefined_names() -> None:
    """Every global name GazeRad.py (and GazeRadLib) reads is imported, defined or a builtin:
    the typos a Slicer run would hit first, found without Slicer."""
    import builtins
    import symtable

    for path in [MODULE / "GazeRad.py", *(MODULE / "GazeRadLib").glob("*.py")]:
        top = symtable.symtable(path.read_text(), str(path), "exec")
        defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
        undefined = set()

        def walk(t: symtable.SymbolTable) -> None:
            for s in t.get_symbols():
                global_read = s.is_global() or (t.get_type() == "module" and s.is_referenced())
                if global_read and s.is_referenced() and s.get_name() not in defined and not hasattr(builtins, s.get_name()):
                    undefined.add(s.get_name())
            for c in t.get_children():
                walk(c)

        walk(top)
        assert not undefined, (path.name, sorted(undefined))
