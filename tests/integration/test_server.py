"""The MONAI Label app over HTTP: a real ``monailabel start_server`` on 127.0.0.1 with the
app, an obvious-mass study set and gaze uploaded by the tests.

The tests run in file order on one server (module scope): bad input first, then gaze
uploads, then training runs whose published weights later tests use.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
import SimpleITK as sitk

from gazerad.localize.boxes import iou
from tests.support.server import Server
from tests.support.studies import SIZE, mass_boxes, mass_studies, simulated_gaze_csv

pytestmark = pytest.mark.slow

N = 64  # studies: even = one mass; the first 70 % train, the rest test


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = mass_studies(tmp_path_factory.mktemp("server") / "masses", n=N, seed=3)
    # a DICOM DX copy of a held-out mass image (MONOCHROME1: stored inverted, 0.5 mm pixels)
    from PIL import Image

    from gazerad.io.dicom import write_dicom_xray

    px = np.asarray(Image.open(root / "images" / "00060.png")).astype(np.uint16)
    write_dicom_xray(root / "images" / "dx00060.dcm", 65535 - px, photometric="MONOCHROME1", spacing=(0.5, 0.5))
    return root


@pytest.fixture(scope="module")
def server(studies: Path, tmp_path_factory: pytest.TempPathFactory):
    s = Server(studies / "images", tmp_path_factory.mktemp("server_app")).start()
    yield s
    s.stop()


def _ids(studies: Path) -> list[str]:
    return sorted(p.stem for p in (studies / "images").glob("0*.png"))


def _gaze_files(studies: Path, out: Path) -> dict[str, Path]:
    boxes = mass_boxes(studies)
    out.mkdir(exist_ok=True)
    return {i: simulated_gaze_csv(out / f"{i}.csv", boxes.get(f"{i}.png"), seed=k) for k, i in enumerate(_ids(studies))}


def _gaze_dir(server: Server) -> Path:
    return server.studies / "labels" / "gaze"


def test_info_lists_models_trainers_strategies(server: Server) -> None:
    info = requests.get(server.url + "/info/", timeout=30).json()
    assert set(info["models"]) == {"attention", "localization", "classification"}
    assert info["models"]["attention"]["type"] == "others"
    assert info["models"]["localization"]["type"] == "detection"
    assert info["models"]["classification"]["type"] == "classification"
    assert all(m["dimension"] == 2 for m in info["models"].values())
    assert info["models"]["localization"]["labels"] == ["Mass", "Nodule"]
    assert all(m["weights"].startswith("missing") for m in info["models"].values())
    assert all(m["model_card"]["status"].startswith("no statistics") and "clinical" in m["model_card"]["intended_use"] for m in info["models"].values())
    assert set(info["trainers"]) == {"attention", "localization", "classification", "pretrain"}
    assert {"random", "entropy", "mc_dropout", "gaze_novelty", "diversity"} <= set(info["strategies"])
    assert {"entropy", "mc_dropout", "gaze_novelty", "diversity"} <= set(info["scoring"])


def test_untrained_model_says_so(server: Server) -> None:
    r = requests.post(server.url + "/infer/attention", params={"image": "00000"}, timeout=60)
    assert r.status_code == 503
    assert "no weights yet" in r.json()["detail"] and "train" in r.json()["detail"]


@pytest.mark.parametrize(
    "image, code, words",
    [
        ("nope", 404, "unknown image id"),
        ("../../etc/passwd", 400, "invalid image id"),
        ("/etc/passwd", 400, "invalid image id"),
    ],
)
def test_bad_image_ids(server: Server, image: str, code: int, words: str) -> None:
    r = requests.post(server.url + "/infer/attention", params={"image": image}, timeout=60)
    assert r.status_code == code and words in r.json()["detail"]


def test_unknown_trainer_and_strategy(server: Server) -> None:
    r = requests.post(server.url + "/train/nope", json={}, timeout=30)
    assert r.status_code == 404 and "unknown model 'nope'" in r.json()["detail"]
    r = requests.post(server.url + "/activelearning/nope", timeout=30)
    assert r.status_code == 404 and "nope" in r.json()["detail"]


def test_bad_gaze_uploads_are_rejected_and_leave_nothing(server: Server, tmp_path: Path) -> None:
    cases = {
        "outside.csv": ("x,y,t_start,t_end\n10,10,0,0.2\n900,10,0.3,0.5\n", "outside"),
        "nan.csv": ("x,y,t_start,t_end\n10,nan,0,0.2\n", "row 1"),
        "columns.csv": ("a,b,c\n1,2,3\n", "unknown gaze format"),
        "broken.json": ('{"gaze": [[1, 2], ', "invalid JSON"),
        "empty.csv": ("", "empty"),
        "backwards.csv": ("x,y,t_start,t_end\n10,10,0.5,0.2\n", "row 1"),
    }
    for name, (text, words) in cases.items():
        f = tmp_path / name
        f.write_text(text)
        r = requests.put(server.url + "/datastore/label", params={"image": "00001", "tag": "gaze"}, files={"label": (name, f.read_bytes())}, timeout=60)
        assert r.status_code == 422, (name, r.text)
        assert "00001" in r.json()["detail"] and words in r.json()["detail"], (name, r.json())
    ok = simulated_gaze_csv(tmp_path / "ok.csv", None)
    for image, code in (("nope", 404), ("../00001", 400)):
        r = requests.put(server.url + "/datastore/label", params={"image": image, "tag": "gaze"}, files={"label": ("ok.csv", ok.read_bytes())}, timeout=60)
        assert r.status_code == code, r.text
    gaze = _gaze_dir(server)
    assert not gaze.exists() or not any(gaze.iterdir())  # no file, no temp file
    # a gaze recorded on an image of another size is refused
    big = tmp_path / "big.json"
    big.write_text(
        json.dumps({"format": "gazerad-gaze", "version": 1, "records": [{"reader_id": "r", "fixations": [[5, 5, 0, 0.2]], "image_size": [512, 512]}]})
    )
    r = requests.put(server.url + "/datastore/label", params={"image": "00001", "tag": "gaze"}, files={"label": ("big.json", big.read_bytes())}, timeout=60)
    assert r.status_code == 422 and "512 x 512" in r.json()["detail"]


def test_gaze_upload_roundtrip(server: Server, studies: Path, tmp_path: Path) -> None:
    files = _gaze_files(studies, tmp_path / "gaze")
    for i, f in files.items():
        r = requests.put(
            server.url + "/datastore/label",
            params={"image": i, "tag": "gaze"},
            files={"label": (f.name, f.read_bytes())},
            data={"params": json.dumps({"reader": "dr_test"})},
            timeout=60,
        )
        assert r.status_code == 200, r.text
    info = requests.get(server.url + "/datastore/image/info", params={"image": "00000"}, timeout=30).json()
    n_fix = len(files["00000"].read_text().splitlines()) - 1
    assert info["gaze"]["readers"] == ["dr_test"] and info["gaze"]["fixations"] == n_fix
    back = requests.get(server.url + "/datastore/label", params={"label": "00000", "tag": "gaze"}, timeout=30).json()
    sent = np.loadtxt(files["00000"], delimiter=",", skiprows=1)
    np.testing.assert_allclose(np.asarray(back["records"][0]["fixations"]), sent, atol=1e-6)
    assert sorted(p.stem for p in _gaze_dir(server).glob("*.json")) == sorted(files)


def test_attention_training_uses_uploaded_gaze_and_infer_concentrates_on_findings(server: Server, studies: Path, tmp_path: Path) -> None:
    task = server.train("attention", {"epochs": 6, "input_size": 64, "batch_size": 8, "device": "cpu"})
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    stats = requests.get(server.url + "/info/", timeout=30).json()["train_stats"]["attention"]
    assert stats["n_gaze_images"] == N and stats["key_metric"] == "heldout_cc"
    assert stats["best_metric"] > stats["centre_prior"]["cc"]
    boxes = mass_boxes(studies)
    ratios = []
    for name, box in boxes.items():
        if int(name[:5]) < int(0.7 * N):
            continue  # held-out images only
        r = requests.post(
            server.url + "/infer/attention", params={"image": name[:-4], "output": "all"}, data={"params": json.dumps({"boxes": [list(box)]})}, timeout=60
        )
        assert r.status_code == 200
        res = _multipart(r, tmp_path)
        heat_file = res["file"]
        img = sitk.ReadImage(str(heat_file))
        assert img.GetSize() == (SIZE, SIZE) and img.GetSpacing() == (1.0, 1.0) and img.GetOrigin() == (0.0, 0.0)
        heat = sitk.GetArrayFromImage(img)
        assert heat.dtype == np.float32 and abs(float(heat.sum()) - 1.0) < 1e-3
        area = box[2] * box[3] / SIZE**2
        ratios.append(res["params"]["boxes"][0] / area)
        assert set(res["params"]["regions"]) >= {"upper-left", "middle-centre", "lower-right"}
    # attention mass inside the finding's box, relative to the box's share of the image
    assert len(ratios) >= 8 and float(np.median(ratios)) > 2.0, ratios


def _multipart(r: requests.Response, out_dir: Path) -> dict:
    """Split a multipart answer into its JSON params and its file (written into ``out_dir``)."""
    from requests_toolbelt.multipart import decoder

    out = {}
    for part in decoder.MultipartDecoder.from_response(r).parts:
        disp = part.headers[b"Content-Disposition"].decode()
        if 'name="params"' in disp:
            out["params"] = json.loads(part.content)
        else:
            fn = out_dir / "heat.nrrd"
            fn.write_bytes(part.content)
            out["file"] = fn
    return out


def test_new_training_is_published_and_used_without_restart(server: Server) -> None:
    before = requests.post(server.url + "/infer/attention", params={"image": "00001", "output": "json"}, timeout=60).json()
    task = server.train("attention", {"epochs": 1, "input_size": 64, "seed": 1, "device": "cpu"})
    assert task["status"] == "DONE"
    after = requests.post(server.url + "/infer/attention", params={"image": "00001", "output": "json"}, timeout=60).json()
    assert after["model_version"] != before["model_version"]
    assert after["peaks"] != before["peaks"]
    assert not list(server.model_dir.glob(".attention.pt.*"))  # no temp file left by the publish


def test_localization_finds_obvious_masses(server: Server, studies: Path) -> None:
    task = server.train("localization", {"epochs": 6, "image_size": 128, "batch_size": 16, "device": "cpu"})
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    info = requests.get(server.url + "/info/", timeout=30).json()
    stats = info["train_stats"]["localization"]
    assert stats["key_metric"] == "heldout_macro_auc" and stats["auc"]["Mass"] > 0.8
    card = info["models"]["localization"]["model_card"]
    assert card["status"] == "trained" and "not for" in card["intended_use"] and card["gazerad_version"]
    n_images = len([p for p in (studies / "images").iterdir() if p.suffix in (".png", ".dcm")])
    assert card["training_data"]["kind"] == "datastore" and card["training_data"]["n_images"] == n_images
    m = card["heldout_metrics"]
    assert m["heldout_macro_auc"] == pytest.approx(stats["best_metric"]) and m["auc_per_class"]["Mass"] == pytest.approx(stats["auc"]["Mass"])
    assert m["calibration"]["temperature"] > 0 and card["trained"] == stats["finished"]
    best = {}
    for name, box in mass_boxes(studies).items():
        if int(name[:5]) < int(0.7 * N):
            continue
        res = requests.post(
            server.url + "/infer/localization", params={"image": name[:-4], "output": "json"}, data={"params": json.dumps({"classes": ["Mass"]})}, timeout=60
        ).json()
        assert res["label"] and all(lab == "Mass" for lab in res["label"])
        assert len(res["box"]) == len(res["boxes"]) and all(len(b) == 6 for b in res["box"])
        best[name] = max(iou((b["x"], b["y"], b["w"], b["h"]), box) for b in res["boxes"])
    # every held-out mass is found; most with IoU >= 0.3
    assert len(best) >= 8 and min(best.values()) > 0.0, best
    assert float(np.median(list(best.values()))) >= 0.3, best
    # Slicer output: a markups ROI file
    r = requests.post(
        server.url + "/infer/localization",
        params={"image": "00060", "output": "all"},
        data={"params": json.dumps({"output": "slicer", "classes": ["Mass"]})},
        timeout=60,
    )
    from requests_toolbelt.multipart import decoder

    parts = decoder.MultipartDecoder.from_response(r).parts
    mk = json.loads([p for p in parts if b'name="image"' in p.headers[b"Content-Disposition"]][0].content)
    assert mk["@schema"].endswith("markups-schema-v1.0.3.json#")
    roi = mk["markups"][0]
    assert roi["type"] == "ROI" and roi["coordinateSystem"] == "LPS" and len(roi["center"]) == 3 and len(roi["size"]) == 3


def test_bad_uploaded_images(server: Server, tmp_path: Path) -> None:
    """Images sent with the request (MONAI Label's ``file`` field) are checked like stored ones."""
    from PIL import Image

    tiny = tmp_path / "tiny.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tiny)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    for f, words in ((tiny, "at least 8 x 8"), (bad, "PNG")):
        r = requests.post(server.url + "/infer/localization", files={"file": (f.name, f.read_bytes())}, timeout=60)
        assert r.status_code == 422, r.text
        assert words in r.json()["detail"], r.json()


def test_dicom_xray_in_the_datastore(server: Server, studies: Path) -> None:
    listing = requests.get(server.url + "/datastore/", params={"output": "all"}, timeout=30).json()
    assert "dx00060" in listing["objects"]
    r = requests.post(server.url + "/infer/attention", params={"image": "dx00060", "output": "image"}, timeout=60)
    assert r.status_code == 200
    f = Path(studies.parent / "dx_heat.nrrd")
    f.write_bytes(r.content)
    heat = sitk.ReadImage(str(f))
    assert heat.GetSize() == (SIZE, SIZE) and heat.GetSpacing() == pytest.approx((0.5, 0.5))
    png = requests.post(server.url + "/infer/localization", params={"image": "00060", "output": "json"}, timeout=60).json()
    dcm = requests.post(server.url + "/infer/localization", params={"image": "dx00060", "output": "json"}, timeout=60).json()
    # same pixels (inverted on disk, restored by the loader): same prediction, boxes in mm at 0.5 mm/px
    assert dcm["prediction"][0]["score"] == pytest.approx(png["prediction"][0]["score"], abs=1e-4)
    assert [b["x"] for b in dcm["boxes"]] == pytest.approx([b["x"] for b in png["boxes"]])
    assert dcm["boxes"][0]["size_mm"][0] == pytest.approx(0.5 * png["boxes"][0]["size_mm"][0])


def test_scoring_and_next_sample(server: Server) -> None:
    ids = requests.get(server.url + "/datastore/", params={"output": "all"}, timeout=30).json()
    r = requests.post(server.url + "/scoring/entropy", timeout=30)
    assert r.status_code == 200
    import time

    for _ in range(120):
        st = requests.get(server.url + "/scoring/", timeout=10).json()
        if st.get("status") in ("DONE", "ERROR"):
            break
        time.sleep(1)
    assert st["status"] == "DONE", st
    # every PNG has gaze now: drop two images' gaze so they are candidates (with the DICOM copy)
    for i in ("00003", "00010"):
        assert requests.delete(server.url + "/datastore/label", params={"id": i, "tag": "gaze"}, timeout=30).status_code == 200
    time.sleep(1.5)  # the server's datastore reloads the scores written by the scoring process
    scores = {}
    for i in ids["objects"]:
        info = requests.get(server.url + "/datastore/image/info", params={"image": i}, timeout=30).json()
        assert "gazerad_entropy" in info and 0.0 <= info["gazerad_entropy"] <= 1.0
        if "gaze" not in info:
            scores[i] = info["gazerad_entropy"]
    assert set(scores) == {"00003", "00010", "dx00060"}
    nxt = requests.post(server.url + "/activelearning/entropy", timeout=60).json()
    assert nxt["id"] == max(scores, key=scores.get)
    assert nxt["score"] == pytest.approx(max(scores.values()))
    nxt2 = requests.post(server.url + "/activelearning/entropy", json={"exclude": [nxt["id"]]}, timeout=60).json()
    assert nxt2["id"] == sorted(scores, key=scores.get)[-2]
    # random: only unread images, "exclude" respected
    keep = sorted(scores)[0]
    for _ in range(3):
        rnd = requests.post(server.url + "/activelearning/random", json={"exclude": sorted(scores)[1:]}, timeout=60).json()
        assert rnd["id"] == keep


def test_monailabel_client_works_unchanged(server: Server, tmp_path: Path) -> None:
    from monailabel.client import MONAILabelClient

    client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
    info = client.info()
    assert "localization" in info["models"]
    f = simulated_gaze_csv(tmp_path / "g.csv", None, seed=9)
    client.save_label("00003", str(f), tag="gaze", params={"reader": "dr_client"})
    assert requests.get(server.url + "/datastore/image/info", params={"image": "00003"}, timeout=30).json()["gaze"]["readers"] == ["dr_client"]
    back = json.loads(Path(client.download_label("00003", "gaze")).read_text())
    assert back["format"] == "gazerad-gaze" and back["records"][0]["reader_id"] == "dr_client"
    # as MONAI Label's own Slicer plugin asks (no output): the JSON and a markups ROI file it loads with slicer.util.loadMarkups
    file, params = client.infer("localization", "00060", {"min_score": 0.0})
    params = json.loads(params) if isinstance(params, (bytes, str)) else params
    assert params["label"] and params["prediction"][0]["label"] == "Mass"
    roi = json.loads(Path(file).read_text())
    assert Path(file).suffix == ".json" and roi["@schema"].endswith("markups-schema-v1.0.3.json#")
    assert [m["type"] for m in roi["markups"]] == ["ROI"] * len(params["boxes"]) and params["boxes"]
    assert [m["name"] for m in roi["markups"]] == [f"{b['label']} {b['score']:.2f}" for b in params["boxes"]]
    file, heat = client.infer("attention", "00060", {})
    assert Path(file).suffix == ".nrrd" and sitk.ReadImage(file).GetSize() == (SIZE, SIZE) and heat["peaks"]
    nxt = client.next_sample("random", {})
    assert nxt["id"]


def test_concurrent_requests_share_the_models_safely(server: Server, tmp_path: Path) -> None:
    """Requests run in the server's thread pool now: concurrent Grad-CAM on one model used to
    corrupt libtorch's memory (segfault) until model calls were serialised."""
    from tests.support.server import run_threads

    errors: list[str] = []
    gaze = simulated_gaze_csv(tmp_path / "g.csv", None)

    def client(k: int) -> None:
        s = requests.Session()
        for j in range(3):
            image = f"{(k * 3 + j) % 40:05d}"
            for r in (
                s.post(server.url + "/infer/localization", params={"image": image}, timeout=300),
                s.post(server.url + "/infer/attention", params={"image": image}, data={"params": json.dumps({"heatmap": False})}, timeout=300),
                s.put(
                    server.url + "/datastore/label",
                    params={"image": image, "tag": "gaze"},
                    data={"params": json.dumps({"reader": f"conc{k}_{j}"})},
                    files={"label": ("g.csv", gaze.read_bytes())},
                    timeout=300,
                ),
            ):
                if r.status_code != 200:
                    errors.append(f"{r.request.method} {r.url}: {r.status_code} {r.text[:200]}")

    run_threads(client, 6)
    assert not errors, errors[:3]
    assert server.proc.poll() is None and requests.get(server.url + "/info/", timeout=30).status_code == 200
