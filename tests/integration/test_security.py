"""Attacks on a real ``monailabel start_server`` with GazeRad's app on 127.0.0.1 (issue 15).

Each finding of the security review is replayed here as an attacker would send it. Every
refused request must get a 4xx whose message names the problem, and the file tree under
the test's root (app code, datastore, sessions, a canary folder outside) must be exactly as
before, byte for byte: nothing written, changed or deleted. The server must still answer.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from gazerad.io.scratch import LOCK_GRACE_S, TEMP_PREFIX, ScratchFolder
from tests.support.server import Server, killed_process_folder, run_threads
from tests.support.studies import SIZE, mass_studies, simulated_gaze_csv

pytestmark = pytest.mark.slow

VOLATILE = ("server.log", ".lock")  # the server's own log and lock file


def tree(root: Path) -> dict[str, str]:
    """``{relative path: sha1}`` of every file under ``root`` (logs left out)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not p.name.endswith(VOLATILE) and "/logs/" not in f"/{rel}" and "__pycache__" not in rel:
            out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def png_bytes(side: int = SIZE, seed: int = 0) -> bytes:
    a = (np.random.default_rng(seed).random((side, side)) * 65535).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("security")
    mass_studies(r / "studies", n=6, seed=5)
    (r / "outside").mkdir()
    (r / "outside" / "canary.txt").write_text("do not touch")
    return r


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's own temp folder (``TMPDIR``), to see what requests leave there."""
    return tmp_path_factory.mktemp("security_tmp")


@pytest.fixture(scope="module")
def leftovers(root: Path, server_tmp: Path) -> dict:
    """Before the server starts: scratch folders of a server killed mid-request (in the temp
    folder and the datastore's), and one of a live process (this one's)."""
    incoming = root / "studies" / "images" / ".incoming"
    dead = [killed_process_folder(server_tmp, TEMP_PREFIX), killed_process_folder(incoming, "p-")]
    live = ScratchFolder(server_tmp, TEMP_PREFIX)
    (live.path() / "up-busy").write_bytes(b"in use")
    old = time.time() - 2 * LOCK_GRACE_S
    for d in (*dead, live.path()):
        os.utime(d, (old, old))
    yield {"dead": dead, "live": live.path()}
    live.close()


@pytest.fixture(scope="module")
def server(root: Path, server_tmp: Path, leftovers: dict):
    s = Server(root / "studies" / "images", root / "srv", env={"TMPDIR": str(server_tmp)}).start()
    yield s
    s.stop()


def test_a_killed_servers_scratch_is_removed_at_start(server: Server, leftovers: dict) -> None:
    assert [d.exists() for d in leftovers["dead"]] == [False, False]
    assert (leftovers["live"] / "up-busy").read_bytes() == b"in use"  # a live process's: kept
    log = server.log.read_text()
    assert all(f"removed {d}, left by a server that was stopped mid-request" in log for d in leftovers["dead"]), log[-2000:]


@pytest.fixture()
def unchanged(root: Path, server: Server):
    """Asserts after the test that no file under the root changed and the server answers."""
    before = tree(root)
    yield
    time.sleep(0.3)  # let the file watcher react to anything that did happen
    after = tree(root)
    assert after == before, {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in before if k in after and before[k] != after[k]),
    }
    assert requests.get(server.url + "/info/", timeout=30).status_code == 200


def _refused(r: requests.Response, code: int | tuple, words: str, root: Path) -> None:
    codes = code if isinstance(code, tuple) else (code,)
    assert r.status_code in codes, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert words in detail, detail
    assert str(root) not in detail, f"server path in the answer: {detail}"


# ---------------------------------------------------------------------------- C1: code execution
@pytest.mark.parametrize(
    "image, words",
    [
        ("../../app/lib/activelearning/__init__", "invalid image id"),
        ("/tmp/evil", "invalid image id"),
        ("..", "invalid image id"),
        (".hid", "invalid image id"),
        ("a\\b", "invalid image id"),
        ("x" * 10_000, "10000 characters"),
        ("rad\u00f6", "invalid image id"),
        ("a\x00b", "invalid image id"),
    ],
)
def test_c1_image_put_names_are_confined(server: Server, root: Path, unchanged, image: str, words: str) -> None:
    for path in ("/datastore/", "/datastore/image"):
        r = requests.put(server.url + path, params={"image": image}, files={"file": ("x.py", b"print('owned')\n")}, timeout=30)
        _refused(r, 400, words, root)


def test_c1_encoded_traversal_in_the_raw_query(server: Server, root: Path, unchanged) -> None:
    for q in ("image=%2e%2e%2f%2e%2e%2fapp%2fx", "image=..%2Fx", "image=%00", "image=%2e%2e"):
        r = requests.put(f"{server.url}/datastore/image?{q}", files={"file": ("x.png", png_bytes())}, timeout=30)
        _refused(r, 400, "invalid image id", root)


def test_c1_extension_comes_from_content_not_the_file_name(server: Server, root: Path, unchanged) -> None:
    r = requests.put(server.url + "/datastore/image", params={"image": "script"}, files={"file": ("x.py", b"import os\n")}, timeout=30)
    _refused(r, 415, "judged by its content", root)
    r = requests.put(server.url + "/datastore/image", params={"image": "garbage"}, files={"file": ("g.png", os.urandom(5000))}, timeout=30)
    _refused(r, 415, "not a PNG", root)
    # a PNG signature with a broken body: decoded before it is stored
    r = requests.put(server.url + "/datastore/image", params={"image": "broken"}, files={"file": ("b.png", png_bytes()[:200])}, timeout=30)
    _refused(r, 422, "cannot be read", root)
    r = requests.put(server.url + "/datastore/image", params={"image": "empty"}, files={"file": ("e.png", b"")}, timeout=30)
    assert r.status_code in (415, 422)


def test_c1_a_real_png_named_py_is_stored_as_png_inside(server: Server, root: Path) -> None:
    r = requests.put(server.url + "/datastore/image", params={"image": "up1"}, files={"file": ("../../x.py", png_bytes(seed=1))}, timeout=30)
    assert r.status_code == 200, r.text
    store = server.studies
    assert (store / "up1.png").is_file() and not list(root.rglob("x.py"))
    r = requests.put(server.url + "/datastore/image", files={"file": ("../../up2.png", png_bytes(seed=2))}, timeout=30)
    assert r.status_code == 200 and r.json()["image"] == "up2" and (store / "up2.png").is_file()
    assert not [p for p in (store / ".incoming").rglob("*") if p.is_file() and p.name != ".lock"]  # no temp file left
    info = requests.get(server.url + "/datastore/image/info", params={"image": "up1"}, timeout=30).json()
    assert info["name"] == "up1.png" and "path" not in info


def test_c1_delete_outside_is_refused(server: Server, root: Path, unchanged) -> None:
    for i in ("../../outside/canary.txt", "/etc/hostname", "../srv", "..", "%2e%2e"):
        for path in ("/datastore/", "/datastore/image"):
            r = requests.delete(server.url + path, params={"id": i}, timeout=30)
            _refused(r, 400, "invalid image id", root)
    r = requests.delete(server.url + "/datastore/image", params={"id": "nope"}, timeout=30)
    _refused(r, 404, "unknown image id", root)


# ---------------------------------------------------------------------------- C2: label tags
TAGS = ["..", "../../x", "/tmp/x", ".", "a/b", "a\\b", ".hidden", "\u00e9t\u00e9", "t" * 10_000, "a\x00"]


@pytest.mark.parametrize("tag", TAGS)
def test_c2_label_tags_are_confined(server: Server, root: Path, unchanged, tag: str) -> None:
    r = requests.put(server.url + "/datastore/label", params={"image": "00001", "tag": tag}, files={"label": ("l.png", png_bytes())}, timeout=30)
    _refused(r, 400, "invalid label tag", root)
    r = requests.delete(server.url + "/datastore/label", params={"id": "00001", "tag": tag}, timeout=30)
    _refused(r, 400, "invalid label tag", root)
    for path in ("/datastore/label", "/datastore/label/info"):
        r = requests.get(server.url + path, params={"label": "00001", "tag": tag}, timeout=30)
        assert r.status_code == 400, r.text


def test_c2_labels_are_validated_and_stored_inside(server: Server, root: Path) -> None:
    with_size = png_bytes(side=SIZE, seed=9)
    r = requests.put(server.url + "/datastore/label", params={"image": "00002", "tag": "final"}, files={"label": ("../../../l.nii.gz", with_size)}, timeout=30)
    assert r.status_code == 200, r.text
    assert (server.studies / "labels" / "final" / "00002.png").is_file()
    r = requests.put(server.url + "/datastore/label", params={"image": "00002", "tag": "final"}, files={"label": ("l.png", png_bytes(side=64))}, timeout=30)
    _refused(r, 422, "but its image is", root)
    r = requests.put(server.url + "/datastore/label", params={"image": "00002", "tag": "final"}, files={"label": ("l.png", b"#!/bin/sh\n")}, timeout=30)
    _refused(r, 415, "judged by its content", root)
    r = requests.delete(server.url + "/datastore/label", params={"id": "00002", "tag": "final"}, timeout=30)
    assert r.status_code == 200 and not (server.studies / "labels" / "final" / "00002.png").exists()
    assert (server.studies / "00002.png").is_file()  # the image itself is untouched


def test_c2_infer_label_tag_is_confined(server: Server, root: Path, unchanged) -> None:
    for tag in ("../../x", "/tmp/x", ".."):
        r = requests.post(
            server.url + "/infer/attention", params={"image": "00001"}, data={"params": json.dumps({"save_label": True, "label_tag": tag})}, timeout=60
        )
        _refused(r, 400, "invalid label tag", root)
    r = requests.post(server.url + "/infer/attention", params={"image": "00001"}, data={"params": json.dumps({"save_label": "yes"})}, timeout=60)
    _refused(r, 422, "'save_label' must be true or false", root)


# ---------------------------------------------------------------------------- C3: archives
def _tar(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data, kind in entries:
            ti = tarfile.TarInfo(name)
            if kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, "/etc"
                t.addfile(ti)
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, "../../outside/canary.txt"
                t.addfile(ti)
            else:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, data)
    return buf.getvalue()


def _zip_bad_crc() -> bytes:
    data = bytearray(_zip("a.png", png_bytes()))
    at = data.index(b"IDAT") + 8  # inside the stored (uncompressed) PNG data
    data[at] ^= 0xFF
    return bytes(data)


def _empty_zip() -> bytes:
    buf = io.BytesIO()
    zipfile.ZipFile(buf, "w").close()
    return buf.getvalue()


def _session_scratch(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.glob("gazerad-scratch-*/*") if p.name.startswith(("session-", "unpacked-")))


@pytest.mark.parametrize(
    "archive, words",
    [
        (_tar([("ok.png", png_bytes(), "file"), ("../x", b"owned", "file")]), "invalid archive entry"),
        (_tar([("/tmp/abs", b"owned", "file")]), "absolute paths"),
        (_tar([("a/../../x", b"owned", "file")]), "invalid archive entry"),
        (_tar([("link", None, "sym")]), "not a regular file"),
        (_tar([("hard", None, "hard")]), "not a regular file"),
        (_zip("../../zipped", b"owned"), "invalid archive entry"),
        (b"not an archive at all", "neither a tar nor a zip"),
        (_zip_bad_crc(), "corrupt archive (BadZipFile"),
        (_tar([("a.png", png_bytes(), "file"), ("b.png", png_bytes(seed=1), "file")])[:-300], "archive"),
        (_empty_zip(), "archive holds no file"),
    ],
    ids=[
        *("tar-dotdot", "tar-absolute", "tar-inner-dotdot", "tar-symlink", "tar-hardlink", "zip-dotdot"),
        *("not-an-archive", "zip-bad-crc", "tgz-truncated", "zip-empty"),
    ],
)
def test_c3_session_archives_cannot_slip(server: Server, root: Path, server_tmp: Path, unchanged, archive: bytes, words: str) -> None:
    r = requests.put(server.url + "/session/", params={"uncompress": "true"}, files={"files": ("a.tar.gz", archive)}, timeout=30)
    _refused(r, 400, words, root)
    assert _session_scratch(server_tmp) == []  # the refused archive's bytes are gone at once
    r = requests.put(server.url + "/session/", params={"uncompress": "true"}, files={"files": ("../a.tar", archive)}, timeout=30)
    assert r.status_code == 400


def test_c3_a_clean_archive_makes_a_session(server: Server, root: Path, server_tmp: Path) -> None:
    arc = _tar([("img/a.png", png_bytes(), "file")])
    r = requests.put(server.url + "/session/", params={"uncompress": "true", "expiry": "3600"}, files={"files": ("a.tgz", arc)}, timeout=30)
    assert r.status_code == 200, r.text
    sid = r.json()["session_id"]
    assert requests.get(server.url + f"/session/{sid}", timeout=30).status_code == 200
    for _ in range(50):  # the upload's scratch folders go after the answer (a background task)
        if not _session_scratch(server_tmp):
            break
        time.sleep(0.1)
    assert _session_scratch(server_tmp) == []
    for bad in ("..%2F..%2Fsrv", "%2e%2e"):
        assert requests.get(f"{server.url}/session/{bad}", timeout=30).status_code == 400
    r = requests.put(server.url + "/session/", params={"uncompress": "maybe"}, files={"files": ("a.tgz", arc)}, timeout=30)
    _refused(r, 422, "'uncompress' must be true or false", root)


# ---------------------------------------------------------------------------- C4: origins
def test_c4_foreign_origins_are_refused(server: Server, root: Path, unchanged) -> None:
    evil = {"Origin": "http://evil.example"}
    r = requests.get(server.url + "/info/", headers=evil, timeout=30)
    _refused(r, 403, "not allowed", root)
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}
    r = requests.options(server.url + "/datastore/image", headers={**evil, "Access-Control-Request-Method": "PUT"}, timeout=30)
    assert r.status_code == 403
    # a "simple" cross-site form post needs no preflight: refused by its Origin header, not by CORS
    r = requests.put(server.url + "/datastore/image", params={"image": "csrf"}, headers=evil, files={"file": ("x.png", png_bytes())}, timeout=30)
    assert r.status_code == 403 and not (server.studies / "csrf.png").exists()
    r = requests.post(server.url + "/train/attention", headers=evil, json={}, timeout=30)
    assert r.status_code == 403


# ---------------------------------------------------------------------------- highs and mediums
def test_gaze_with_infinite_or_huge_values_is_refused_and_nothing_breaks(server: Server, root: Path, tmp_path: Path) -> None:
    before = tree(root)
    for text, words in [
        ("x,y,t_start,t_end\n10,10,0,1e308\n", "must satisfy"),
        ("x,y,t_start,t_end\n10,10,0,inf\n", "row 1"),
        ("x,y,t_start,t_end\n1e308,10,0,1\n", "outside"),
    ]:
        r = requests.put(server.url + "/datastore/label", params={"image": "00003", "tag": "gaze"}, files={"label": ("g.csv", text.encode())}, timeout=30)
        _refused(r, 422, words, root)
    assert tree(root) == before
    ok = simulated_gaze_csv(tmp_path / "ok.csv", None)
    r = requests.put(server.url + "/datastore/label", params={"image": "00003", "tag": "gaze"}, files={"label": ("ok.csv", ok.read_bytes())}, timeout=30)
    assert r.status_code == 200, r.text
    info = requests.get(server.url + "/datastore/image/info", params={"image": "00003"}, timeout=30).json()
    assert info["gaze"]["fixations"] > 0
    stored = json.loads((server.studies / "labels" / "gaze" / "00003.json").read_text())  # strict JSON: no Infinity
    assert stored["records"][0]["fixations"]


@pytest.mark.parametrize(
    "params, words",
    [
        ({"replace": "no"}, "'replace' must be true or false"),
        ({"pixels_per_degree": "abc"}, "'pixels_per_degree' must be a number"),
        ({"pixels_per_degree": 1e308}, "'pixels_per_degree' must be a finite number"),
        ({"reader": "x" * 500}, "'reader' must be printable text"),
    ],
)
def test_gaze_upload_params_are_typed(server: Server, root: Path, tmp_path: Path, unchanged, params: dict, words: str) -> None:
    ok = simulated_gaze_csv(tmp_path / "ok.csv", None)
    r = requests.put(
        server.url + "/datastore/label",
        params={"image": "00004", "tag": "gaze"},
        data={"params": json.dumps(params)},
        files={"label": ("ok.csv", ok.read_bytes())},
        timeout=30,
    )
    _refused(r, 422, words, root)


@pytest.mark.parametrize(
    "body, code, words",
    [
        (b"", 422, "empty"),
        (b"[" * 100_000 + b"]" * 100_000, 422, "nested too deeply"),
        (b"SR_RESEARCH_1000" + os.urandom(2000), 422, "gaze"),
        (b"\xff\xfe\x00garbage", 422, "neither UTF-8"),
    ],
)
def test_bad_gaze_bodies_are_4xx(server: Server, root: Path, unchanged, body: bytes, code: int, words: str) -> None:
    r = requests.put(server.url + "/datastore/label", params={"image": "00004", "tag": "gaze"}, files={"label": ("g.edf", body)}, timeout=60)
    _refused(r, code, words, root)
    assert "positional argument" not in r.text


def test_non_json_params_and_bad_infer_options_are_422(server: Server, root: Path, unchanged) -> None:
    for data in ({"params": "not json"}, {"params": "[1, 2]"}):
        r = requests.put(
            server.url + "/datastore/label",
            params={"image": "00004", "tag": "gaze"},
            data=data,
            files={"label": ("g.csv", b"x,y,t_start,t_end\n1,1,0,1\n")},
            timeout=30,
        )
        _refused(r, 422, "params must be a JSON object", root)
    r = requests.post(server.url + "/infer/attention", params={"image": "00001"}, data={"params": "{nope"}, timeout=30)
    _refused(r, 422, "params must be a JSON object", root)
    r = requests.post(server.url + "/infer/attention", files={"file": ("x.png", b"#!/bin/sh\nrm -rf /\n")}, timeout=30)
    _refused(r, 415, "judged by its content", root)
    for p, words in [
        ({"boxes": [[1e308, 0, 1, 1]]}, "finite number"),
        ({"boxes": "all"}, "'boxes'"),
        ({"heatmap": "maybe"}, "'heatmap' must be true or false"),
    ]:
        r = requests.post(server.url + "/infer/attention", params={"image": "00001"}, data={"params": json.dumps(p)}, timeout=30)
        _refused(r, 422, words, root)


@pytest.mark.parametrize(
    "model, params, words",
    [
        ("localization", {"cam_layer": "__class__"}, "is not a feature layer"),
        ("localization", {"cam_layer": "backbone.layer2.__class__"}, "is not a feature layer"),
        ("attention", {"epochs": 1e9}, "'epochs' must be a finite number"),
        ("attention", {"epochs": "many"}, "'epochs' must be a number"),
        ("attention", {"lr": float("nan")}, "'lr'"),
        ("pretrain", {"mcgip": "no"}, "'mcgip' must be true or false"),
        ("pretrain", {"framework": "../x"}, "'framework' must be one of"),
        ("classification", {"device": "/dev/sda"}, "'device' must be"),
        ("attention", {"data": "/etc"}, "unknown training parameter 'data'"),
    ],
)
def test_training_params_are_refused_before_the_job_starts(server: Server, root: Path, unchanged, model: str, params: dict, words: str) -> None:
    r = requests.post(server.url + f"/train/{model}", data=json.dumps(params).replace("NaN", '"nan"'), headers={"Content-Type": "application/json"}, timeout=30)
    _refused(r, 422, words, root)
    assert requests.get(server.url + "/train/", params={"check_if_running": True}, timeout=30).status_code in (200, 404)


def test_oversized_bodies_are_413_before_reading(server: Server, root: Path, unchanged) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.putrequest("PUT", "/datastore/image?image=huge")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(300 * 2**20))
    conn.endheaders()
    conn.send(b"--x\r\n")
    resp = conn.getresponse()
    assert resp.status == 413 and b"over the limit" in resp.read()
    conn.close()


def test_concurrent_uploads_keep_the_index_and_the_watcher_alive(server: Server, root: Path, tmp_path: Path) -> None:
    acked, errors = [], []

    def put(k: int) -> None:
        for j in range(4):
            iid = f"burst{k}_{j}"
            r = requests.put(server.url + "/datastore/image", params={"image": iid}, files={"file": ("x.png", png_bytes(seed=k * 10 + j))}, timeout=60)
            (acked if r.status_code == 200 else errors).append(iid if r.status_code == 200 else r.text)

    run_threads(put, 6)
    assert not errors and len(acked) == 24
    index = json.loads((server.studies / "datastore_v2.json").read_text())
    assert set(acked) <= set(index["objects"])
    # the watcher still runs: a file dropped in by hand shows up
    Image.open(io.BytesIO(png_bytes(seed=99))).save(server.studies / "dropped.png")
    t0 = time.time()
    while time.time() - t0 < 20:
        if "dropped" in requests.get(server.url + "/datastore/", params={"output": "all"}, timeout=30).json()["objects"]:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the datastore's file watcher no longer sees new files")
    assert "watchdog" not in server.log.read_text().lower() or "changed size during iteration" not in server.log.read_text()


def test_big_gaze_csv_is_parsed_off_the_event_loop(server: Server, tmp_path: Path) -> None:
    n = 300_000
    rng = np.random.default_rng(0)
    xy = rng.uniform(1, SIZE - 1, (n, 2))
    t = np.arange(n) * 0.01
    big = tmp_path / "big.csv"
    big.write_text("x,y,t_start,t_end\n" + "\n".join(f"{a:.2f},{b:.2f},{s:.2f},{s + 0.005:.3f}" for (a, b), s in zip(xy, t)) + "\n")
    done = {}

    def upload() -> None:
        t0 = time.perf_counter()
        r = requests.put(server.url + "/datastore/label", params={"image": "00005", "tag": "gaze"}, files={"label": ("big.csv", big.read_bytes())}, timeout=300)
        done["status"], done["seconds"] = r.status_code, time.perf_counter() - t0

    th = threading.Thread(target=upload)
    th.start()
    waits = []
    while th.is_alive():
        t0 = time.perf_counter()
        assert requests.get(server.url + "/info/", timeout=60).status_code == 200
        waits.append(time.perf_counter() - t0)
        time.sleep(0.05)
    th.join()
    assert done["status"] in (200, 422)
    # before: /info/ waited for the whole parse (14 s for 1M rows); now the parse runs in a worker thread
    assert max(waits) < max(2.0, 0.5 * done["seconds"]), (max(waits), done)


def test_no_answer_carries_a_server_path(server: Server, root: Path) -> None:
    r = requests.post(server.url + "/infer/attention", params={"image": "00001"}, timeout=60)
    assert r.status_code == 503 and str(server.app) not in r.text and str(root) not in r.text


# ---------------------------------------------------------------------------- auth, allowed origins, exposure
@pytest.fixture(scope="module")
def auth_server(root: Path, tmp_path_factory: pytest.TempPathFactory):
    tok = tmp_path_factory.mktemp("tok") / "token"
    tok.write_text("s3cret-token-of-enough-length\n")
    s = Server(
        root / "studies" / "images", root / "srv_auth", conf={"cors_origins": "http://viewer.example"}, env={"GAZERAD_AUTH_TOKEN_FILE": str(tok)}
    ).start()
    yield s
    s.stop()


def test_auth_token_is_required_and_login_works(auth_server: Server) -> None:
    u = auth_server.url
    assert requests.get(u + "/info/", timeout=30).status_code == 401
    assert requests.get(u + "/info/", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    r = requests.put(u + "/datastore/image", params={"image": "noauth"}, files={"file": ("x.png", png_bytes())}, timeout=30)
    assert r.status_code == 401 and not (auth_server.studies / "noauth.png").exists()
    assert requests.get(u + "/auth/", timeout=30).json()["enabled"] is True
    assert requests.post(u + "/auth/token", data={"username": "dr", "password": "nope"}, timeout=30).status_code == 401
    tok = requests.post(u + "/auth/token", data={"username": "dr", "password": auth_server.token}, timeout=30).json()["access_token"]
    assert requests.get(u + "/info/", headers={"Authorization": f"Bearer {tok}"}, timeout=30).status_code == 200


def test_slicer_module_logs_in(auth_server: Server) -> None:
    from GazeRadLib.client import GazeRadClient, ServerError

    c = GazeRadClient(auth_server.url)
    assert c.auth_enabled() is True
    with pytest.raises(ServerError):
        c.info()
    assert c.login("radiologist", auth_server.token) == auth_server.token
    assert "attention" in c.info()["models"]


def test_allowed_origin_gets_cors_headers(auth_server: Server) -> None:
    h = {"Origin": "http://viewer.example", "Authorization": f"Bearer {auth_server.token}"}
    r = requests.get(auth_server.url + "/info/", headers=h, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://viewer.example"
    r = requests.options(auth_server.url + "/info/", headers={"Origin": "http://viewer.example", "Access-Control-Request-Method": "GET"}, timeout=30)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://viewer.example"
    assert requests.get(auth_server.url + "/info/", headers={**h, "Origin": "http://viewer.example.evil"}, timeout=30).status_code == 403


def test_serve_refuses_open_non_loopback_binds(tmp_path: Path) -> None:
    from gazerad.serving.launch import check_exposure, ensure_token

    with pytest.raises(SystemExit, match="without authentication"):
        check_exposure("0.0.0.0", auth=False, insecure=False)
    check_exposure("0.0.0.0", auth=True, insecure=False)
    check_exposure("0.0.0.0", auth=False, insecure=True)
    check_exposure("127.0.0.1", auth=False, insecure=False)
    p = ensure_token(tmp_path / "d" / "token")
    assert len(p.read_text().strip()) >= 32 and (p.stat().st_mode & 0o777) == 0o600
    assert ensure_token(p).read_text() == p.read_text()


# ---------------------------------------------------------------------------- faults: crashes and a corrupt index
def test_corrupt_index_does_not_stop_the_server(root: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    mass_studies(tmp_path / "m", n=3, seed=1)
    os.rename(tmp_path / "m" / "images", store)
    (store / "datastore_v2.json").write_text('{"name": "new-dataset", "objects": {"000')  # truncated
    s = Server(store, tmp_path / "srv").start()
    try:
        objs = requests.get(s.url + "/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
        assert {"00000", "00001", "00002"} <= set(objs)
        json.loads((store / "datastore_v2.json").read_text())
        assert list(store.glob("datastore_v2.json.corrupt-*"))
    finally:
        s.stop()


def test_sigkill_during_an_upload_burst_loses_no_acknowledged_upload(tmp_path: Path) -> None:
    store = tmp_path / "store"
    mass_studies(tmp_path / "m", n=3, seed=2)
    os.rename(tmp_path / "m" / "images", store)
    s = Server(store, tmp_path / "srv").start()
    acked: list[str] = []
    stop = threading.Event()

    def burst(k: int) -> None:
        j = 0
        while not stop.is_set():
            iid = f"k{k}_{j}"
            try:
                r = requests.put(s.url + "/datastore/image", params={"image": iid}, files={"file": ("x.png", png_bytes(seed=k * 1000 + j))}, timeout=30)
            except requests.RequestException:
                return
            if r.status_code == 200:
                acked.append(iid)
            j += 1

    threads = [threading.Thread(target=burst, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    time.sleep(3.0)
    s.kill()
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 4, "the burst did not get going before the kill"
    json.loads((store / "datastore_v2.json").read_text())  # never half-written
    s2 = Server(store, tmp_path / "srv").start()
    try:
        objs = requests.get(s2.url + "/datastore/", params={"output": "all"}, timeout=30).json()["objects"]
        missing = [i for i in acked if i not in objs]
        assert not missing, missing
        for i in acked[:: max(1, len(acked) // 8)]:
            assert Image.open(store / f"{i}.png").size == (SIZE, SIZE)
    finally:
        s2.stop()


def test_sigkill_during_training_leaves_the_old_model_published(tmp_path: Path) -> None:
    import hashlib as _h

    studies = mass_studies(tmp_path / "m", n=16, seed=4)
    s = Server(studies / "images", tmp_path / "srv").start()
    try:
        for k, i in enumerate(sorted(p.stem for p in (studies / "images").glob("*.png"))):
            g = simulated_gaze_csv(tmp_path / f"{i}.csv", None, seed=k)
            assert (
                requests.put(s.url + "/datastore/label", params={"image": i, "tag": "gaze"}, files={"label": ("g.csv", g.read_bytes())}, timeout=30).status_code
                == 200
            )
        assert s.train("attention", {"epochs": 1, "input_size": 32, "device": "cpu"})["status"] == "DONE"
        published = s.model_dir / "attention.pt"
        old = _h.sha1(published.read_bytes()).hexdigest()
        r = requests.post(s.url + "/train/attention", json={"epochs": 400, "input_size": 64, "device": "cpu"}, timeout=30)
        assert r.status_code == 200, r.text
        t0 = time.time()
        while time.time() - t0 < 60 and not (s.model_dir / "runs" / "attention" / "out").exists():
            time.sleep(0.2)
        time.sleep(2.0)  # well inside the (long) training run
        s.kill()
    finally:
        s.stop()
    assert _h.sha1(published.read_bytes()).hexdigest() == old, "a killed run changed the published model"
    s2 = Server(studies / "images", tmp_path / "srv").start()
    try:
        r = requests.post(s2.url + "/infer/attention", params={"image": "00000"}, data={"params": json.dumps({"heatmap": False})}, timeout=120)
        assert r.status_code == 200, r.text
        json.loads((studies / "images" / "datastore_v2.json").read_text())
    finally:
        s2.stop()


# ---------------------------------------------------------------------------- second review (session 28)
def _tmp_files(tmp: Path) -> set[str]:
    """Every file and folder in the server's temp folder (its scratch folder's own lock left out)."""
    return {p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.name != ".lock"}


def _nifti_declaring(side: int) -> bytes:
    import nibabel as nib

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((side, side))
    hdr.set_data_dtype(np.uint8)
    return hdr.binaryblock + b"\0" * 14


def _png_declaring(w: int, h: int) -> bytes:
    import struct
    import zlib

    png = bytearray(png_bytes(8))
    png[16:24] = struct.pack(">II", w, h)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def test_weights_uploads_are_checked_before_anything_is_published(server: Server, root: Path, server_tmp: Path, unchanged) -> None:
    before = _tmp_files(server_tmp)
    r = requests.put(server.url + "/model/attention", files={"file": ("a.pt", b"not a model at all")}, timeout=60)
    _refused(r, 422, "weights refused: the attention model cannot serve", root)
    assert "up-" not in r.json()["detail"] and "gazerad-scratch" not in r.json()["detail"], r.json()["detail"]  # the upload, not its temp file, is named
    r = requests.put(server.url + "/model/nope", files={"file": ("a.pt", b"x")}, timeout=30)
    _refused(r, 404, "unknown model 'nope'", root)
    assert _tmp_files(server_tmp) == before


@pytest.mark.parametrize(
    "name, data, words",
    [
        ("huge.nii", _nifti_declaring(30000), "30000 x 30000 = 900000000 pixels, over the limit"),
        ("bomb.png", _png_declaring(100_000, 100_000), "too many pixels"),
    ],
    ids=["nifti-900-megapixels", "png-10-gigapixels"],
)
def test_images_declaring_huge_sizes_are_refused_before_decoding(server: Server, root: Path, unchanged, name: str, data: bytes, words: str) -> None:
    r = requests.put(server.url + "/datastore/image", params={"image": "huge"}, files={"file": (name, data)}, timeout=60)
    _refused(r, 422, words, root)
    assert "up-" not in r.json()["detail"] and ".incoming" not in r.json()["detail"]  # no temp file names either
    r = requests.post(server.url + "/infer/attention", files={"file": (name, data)}, timeout=60)
    assert r.status_code in (422, 503), r.text  # never a 500, never gigabytes


def test_truncated_nifti_upload_is_refused_without_naming_temp_files(server: Server, root: Path, tmp_path: Path, unchanged) -> None:
    import gzip

    import nibabel as nib

    nib.save(nib.Nifti1Image(np.ones((SIZE, SIZE), np.float32), np.eye(4)), str(tmp_path / "s.nii"))
    short = gzip.compress((tmp_path / "s.nii").read_bytes()[:-5000])
    r = requests.put(server.url + "/datastore/image", params={"image": "short"}, files={"file": ("s.nii.gz", short)}, timeout=60)
    _refused(r, 422, "NIfTI data block is truncated", root)
    assert "up-" not in r.json()["detail"] and ".incoming" not in r.json()["detail"], r.json()["detail"]


def test_failed_inference_leaves_no_file_in_the_temp_folder(server: Server, root: Path, server_tmp: Path, unchanged) -> None:
    before = _tmp_files(server_tmp)
    corrupt = png_bytes()[:40] + os.urandom(20_000)
    for files, params in (({"file": ("x.png", corrupt)}, {}), ({}, {"image": "00001", "output": "dicom_seg"}), ({}, {"image": "00001"})):
        r = requests.post(server.url + "/infer/attention", params=params, files=files or None, timeout=60)
        assert 400 <= r.status_code < 500 or r.status_code == 503, (r.status_code, r.text[:200])
    time.sleep(0.3)
    assert _tmp_files(server_tmp) == before


def test_params_cannot_name_the_image_or_the_session(server: Server, root: Path, unchanged) -> None:
    for key in ("image", "session"):
        r = requests.post(server.url + "/infer/attention", params={"image": "00001"}, data={"params": json.dumps({key: "/tmp/tmpother.png"})}, timeout=30)
        _refused(r, 422, f"params may not set ['{key}']", root)
    r = requests.post(server.url + "/infer/attention", timeout=30)
    _refused(r, 422, "give exactly one of", root)


def test_nan_and_infinity_are_never_stored(server: Server, root: Path, unchanged) -> None:
    for const in ("NaN", "Infinity", "-Infinity"):
        r = requests.put(server.url + "/datastore/image/info", params={"image": "00001"}, data={"info": f'{{"x": {const}}}'}, timeout=30)
        _refused(r, 422, f"info holds {const}", root)
    r = requests.post(server.url + "/activelearning/random", json={"client_id": {"a": [1]}}, timeout=30)
    _refused(r, 422, "'client_id' must be printable text", root)
    nan_body = {"data": json.dumps({"client_id": "me", "x": float("nan")}), "headers": {"content-type": "application/json"}, "timeout": 30}
    _refused(requests.post(server.url + "/activelearning/random", **nan_body), 422, "holds NaN or Infinity", root)
    _refused(requests.post(server.url + "/batch/infer/attention", **nan_body), 422, "params holds NaN or Infinity", root)
    assert requests.get(server.url + "/datastore/", params={"output": "all"}, timeout=30).status_code == 200


def test_session_files_are_typed_by_content(server: Server, root: Path, unchanged) -> None:
    r = requests.put(server.url + "/session/", files={"files": ("a.png", b"<html><script>alert(1)</script></html>")}, timeout=30)
    _refused(r, 415, "'a.png' is not a PNG, JPEG, DICOM, NIfTI or NRRD file", root)
    page = _tar([("page.png", b"<html></html>", "file")])
    r = requests.put(server.url + "/session/", params={"uncompress": "true"}, files={"files": ("a.tgz", page)}, timeout=30)
    _refused(r, 415, "'page.png' is not a PNG", root)


def test_unknown_jobs_and_bad_options_are_4xx_at_once(server: Server, root: Path, unchanged) -> None:
    _refused(requests.post(server.url + "/scoring/nope", timeout=30), 404, "unknown scoring method 'nope'", root)
    r = requests.post(server.url + "/batch/infer/attention", json={"label_tag": "../../pwn"}, timeout=30)
    _refused(r, 400, "invalid label tag", root)
    _refused(requests.post(server.url + "/batch/infer/nope", json={}, timeout=30), 404, "unknown model 'nope'", root)
    _refused(requests.get(server.url + "/logs/", params={"lines": "99999999999999999999"}, timeout=30), 422, "'lines'", root)


def test_dataset_download_leaves_no_archive_behind(server: Server, root: Path, server_tmp: Path) -> None:
    if (
        requests.get(server.url + "/datastore/", params={"output": "all"}, timeout=30).json().get("objects", {}).get("00002", {}).get("labels", {}).get("final")
        is None
    ):
        _refused(requests.get(server.url + "/datastore/dataset", timeout=60), 404, "no image has a final label yet", root)
        r = requests.put(server.url + "/datastore/label", params={"image": "00002", "tag": "final"}, files={"label": ("m.png", png_bytes())}, timeout=30)
        assert r.status_code == 200, r.text
    before = _tmp_files(server_tmp)
    r = requests.get(server.url + "/datastore/dataset", timeout=60)
    assert r.status_code == 200 and zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    time.sleep(0.3)
    assert _tmp_files(server_tmp) == before


def test_uploaded_weights_serve_and_say_so_and_sessions_infer(server: Server, root: Path, tmp_path: Path) -> None:
    """Last in the module: it publishes an attention model on the shared server."""
    from gazerad.attention.checkpoint import save_attention_model
    from gazerad.attention.network import AttentionPredictor

    weights = save_attention_model(AttentionPredictor(input_size=32), tmp_path / "attention.pt")
    r = requests.put(server.url + "/model/attention", files={"file": ("whatever.bin", weights.read_bytes())}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["bytes"] == weights.stat().st_size and (server.model_dir / "attention.pt").read_bytes() == weights.read_bytes()
    card = requests.get(server.url + "/info/", timeout=30).json()["models"]["attention"]["model_card"]
    assert card["status"].startswith("uploaded") and card["uploaded"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    sid = requests.put(server.url + "/session/", files={"files": ("scan.dcm", png_bytes())}, timeout=30).json()["session_id"]
    r = requests.post(server.url + "/infer/attention", params={"session_id": sid, "output": "json"}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["peaks"] and r.json()["model_version"].startswith("attention.pt:")
    _refused(requests.post(server.url + "/infer/attention", params={"session_id": "nope"}, timeout=30), 404, "unknown or expired session 'nope'", root)


# ---------------------------------------------------------------------------- README review (session 29)
def _absolute_paths(obj) -> list[str]:
    if isinstance(obj, dict):
        return [p for v in obj.values() for p in _absolute_paths(v)]
    if isinstance(obj, list):
        return [p for v in obj for p in _absolute_paths(v)]
    return [obj] if isinstance(obj, str) and obj.startswith("/") else []


def test_info_carries_no_server_path(server: Server) -> None:
    stats = server.model_dir / "classification.stats.json"
    stats.write_text(
        json.dumps(
            {"published": str(server.model_dir / "classification.pt"), "box_attention": "/srv/x/attention.pt", "history": [], "n": [{"src": "/a/b.png"}]}
        )
    )
    try:
        info = requests.get(server.url + "/info/", timeout=30).json()
    finally:
        stats.unlink()
    assert info["train_stats"]["classification"]["published"] == "classification.pt"
    assert _absolute_paths(info) == []
