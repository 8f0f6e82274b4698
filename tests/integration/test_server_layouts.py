"""A real ``monailabel start_server`` on a MIMIC-CXR-JPG root with REFLACX gaze, and on an
NIH ChestX-ray14 root, each served through the linked study folder of ``gazerad serve``
(:func:`gazerad.serving.launch.datastore_dir`): ids are the data sets' own, the images
are the originals, the server trains and infers on them, and the originals cannot be
overwritten or deleted through it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from gazerad.data.layouts import NIH_CLASSES
from gazerad.serving.launch import datastore_dir
from tests.support.layouts import mimic_tree, nih_tree, reflacx_tree
from tests.support.server import Server


@pytest.fixture(scope="module")
def mimic(studies: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("mimic_server")
    m = mimic_tree(studies, root / "mimic-cxr-jpg" / "2.0.0")
    reflacx_tree(studies, root / "reflacx", m["ids"], m)
    store = datastore_dir(root / "mimic-cxr-jpg" / "2.0.0", root / "view", root / "reflacx")
    s = Server(store, root / "app").start()
    yield {"server": s, "tree": m, "store": store}
    s.stop()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_mimic_ids_are_dicom_ids_and_images_the_originals(mimic: dict) -> None:
    s, m = mimic["server"], mimic["tree"]
    listed = requests.get(s.url + "/datastore/", params={"output": "all"}, timeout=30).json()
    assert sorted(listed["objects"]) == sorted(m["paths"])
    did = sorted(m["paths"])[3]
    r = requests.get(s.url + "/datastore/image", params={"image": did}, timeout=30)
    assert r.status_code == 200 and r.content == m["paths"][did].read_bytes()


def test_mimic_server_trains_attention_on_reflacx_gaze_and_infers(mimic: dict) -> None:
    s, m = mimic["server"], mimic["tree"]
    task = s.train("attention", {"epochs": 1, "input_size": 32, "batch_size": 8, "device": "cpu"})
    assert task["status"] == "DONE", "\n".join(task.get("details", []))
    stats = requests.get(s.url + "/info/", timeout=30).json()["train_stats"]["attention"]
    assert stats["n_gaze_images"] == len(m["paths"])  # every REFLACX reading found its MIMIC image
    did = sorted(m["paths"])[0]
    r = requests.post(s.url + "/infer/attention", params={"image": did, "output": "json"}, timeout=60)
    assert r.status_code == 200, r.text


def test_linked_originals_cannot_be_overwritten_or_deleted(mimic: dict) -> None:
    s, m = mimic["server"], mimic["tree"]
    did = sorted(m["paths"])[1]
    before = m["paths"][did].read_bytes()
    r = requests.put(s.url + "/datastore/image", params={"image": did}, files={"file": ("x.png", _png())}, timeout=30)
    assert r.status_code == 409 and "read-only" in r.json()["detail"], r.text
    r = requests.delete(s.url + "/datastore/", params={"id": did}, timeout=30)
    assert r.status_code == 409 and "cannot be deleted" in r.json()["detail"], r.text
    assert m["paths"][did].read_bytes() == before and (mimic["store"] / f"{did}.jpg").is_symlink()
    assert did in requests.get(s.url + "/datastore/", params={"output": "all"}, timeout=30).json()["objects"]


def test_nih_root_is_served_with_its_labels_and_boxes(studies: Path, tmp_path: Path) -> None:
    nih = nih_tree(studies, tmp_path / "ChestX-ray14")
    store = datastore_dir(tmp_path / "ChestX-ray14", tmp_path / "view")
    s = Server(store, tmp_path / "app").start()
    try:
        listed = requests.get(s.url + "/datastore/", params={"output": "all"}, timeout=30).json()
        assert sorted(listed["objects"]) == sorted(n[:-4] for n in nih["names"] if n not in nih["missing"])
        name = nih["rgba"][0]
        r = requests.get(s.url + "/datastore/image", params={"image": name[:-4]}, timeout=30)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).mode == "RGBA"
        task = s.train("classification", {"epochs": 1, "image_size": 32, "batch_size": 8, "device": "cpu"})
        assert task["status"] == "DONE", "\n".join(task.get("details", []))
        r = requests.post(s.url + "/infer/classification", params={"image": name[:-4], "output": "json", "min_score": 0.0}, timeout=60)
        assert r.status_code == 200, r.text
        labels = {p["label"] for p in r.json()["prediction"]}
        assert labels <= set(NIH_CLASSES) and len(labels) == 14, r.json()  # the 14 NIH findings
    finally:
        s.stop()
