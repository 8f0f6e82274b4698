"""The confinement rule, safe archive unpacking, typed parameters, the request guard (as an
ASGI app, no server) and DICOM spacing 0\\0: the pieces the server's safety rests on."""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from gazerad.io.archive import safe_extract
from gazerad.io.confine import MAX_NAME, UnsafeName, check_archive_member, check_name, confine, is_safe_name, sniff_image_suffix
from gazerad.serving.guard import GuardConfig, RequestGuard, is_loopback
from gazerad.serving.params import InferParams, UploadParams, parse_bool, parse_number

GOOD = ["00000001_000", "a", "IM-0001.dcm", "p10_s5+x", "0" * MAX_NAME, "_x"]
BAD = ["", ".", "..", ".hidden", "-rf", "a/b", "a\\b", "../x", "/etc/passwd", "a\x00", "x" * (MAX_NAME + 1), "r\u00e9", "a b", "%2e%2e", "C:x", None, 5, b"abc"]


@pytest.mark.parametrize("name", GOOD)
def test_plain_names_pass(name: str, tmp_path: Path) -> None:
    assert check_name(name) == name and is_safe_name(name)
    assert confine(tmp_path, name, suffix=".png") == tmp_path.resolve() / f"{name}.png"


@pytest.mark.parametrize("name", BAD)
def test_everything_else_is_refused(name, tmp_path: Path) -> None:
    assert not is_safe_name(name)
    with pytest.raises(UnsafeName, match="invalid image id"):
        confine(tmp_path, name, "image id")


def test_symlinked_folder_cannot_lead_outside(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "store" / "tag")
    with pytest.raises(UnsafeName, match="does not stay inside"):
        confine(tmp_path / "store", "tag")  # a plain name, but a link to a folder outside
    os.symlink("/etc/hostname", tmp_path / "store" / "x.png")
    with pytest.raises(UnsafeName, match="does not stay inside"):
        confine(tmp_path / "store", "x", suffix=".png")
    with pytest.raises(UnsafeName):
        confine(tmp_path, "x", suffix="/../../y")


def test_archive_members() -> None:
    assert check_archive_member("a/b/c.png") == Path("a/b/c.png")
    assert check_archive_member("./a//b.png") == Path("a/b.png")
    for bad in ("/abs", "../x", "a/../../x", "a\\b", "", "a/.hidden", "a\x00", "/".join("a" * 9)):
        with pytest.raises(UnsafeName):
            check_archive_member(bad)


def _tar_with(path: Path, entries: dict[str, bytes], link: str | None = None) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for n, d in entries.items():
            ti = tarfile.TarInfo(n)
            ti.size = len(d)
            t.addfile(ti, io.BytesIO(d))
        if link:
            ti = tarfile.TarInfo(link)
            ti.type, ti.linkname = tarfile.SYMTYPE, "/etc/passwd"
            t.addfile(ti)
    return path


def test_safe_extract_writes_inside_or_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    files = safe_extract(_tar_with(tmp_path / "ok.tgz", {"d/a.png": b"1", "b.png": b"22"}), out)
    assert sorted(p.relative_to(out).as_posix() for p in files) == ["b.png", "d/a.png"]
    for name, kw in [
        ("slip.tgz", {"entries": {"ok.png": b"1", "../x": b"2"}}),
        ("abs.tgz", {"entries": {"/tmp/x": b"2"}}),
        ("link.tgz", {"entries": {"ok.png": b"1"}, "link": "l"}),
    ]:
        dest = tmp_path / name.replace(".", "_")
        dest.mkdir()
        with pytest.raises(UnsafeName):
            safe_extract(_tar_with(tmp_path / name, **kw), dest)
        assert not list(dest.iterdir()), "an archive with one bad entry must write nothing"
    zpath = tmp_path / "z.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("../../zz", b"x")
    with pytest.raises(UnsafeName):
        safe_extract(zpath, out)
    with pytest.raises(UnsafeName, match="more than the limit"):
        safe_extract(_tar_with(tmp_path / "big.tgz", {"a": b"0" * 5000}), out, max_total=4000)
    (tmp_path / "junk").write_bytes(b"plain text")
    with pytest.raises(UnsafeName, match="neither a tar nor a zip"):
        safe_extract(tmp_path / "junk", out)


def test_sniff_image_suffix(tmp_path: Path) -> None:
    import gzip

    import SimpleITK as sitk
    from PIL import Image

    from gazerad.io.dicom import write_dicom_xray

    a = (np.arange(64 * 64).reshape(64, 64) % 255).astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "x.bin", format="PNG")
    assert sniff_image_suffix(tmp_path / "x.bin") == ".png"
    Image.fromarray(a).save(tmp_path / "j.bin", format="JPEG")
    assert sniff_image_suffix(tmp_path / "j.bin") == ".jpg"
    write_dicom_xray(tmp_path / "d.bin", a.astype(np.uint16))
    assert sniff_image_suffix(tmp_path / "d.bin") == ".dcm"
    img = sitk.GetImageFromArray(a.astype(np.float32))
    sitk.WriteImage(img, str(tmp_path / "n.nrrd"))
    sitk.WriteImage(img, str(tmp_path / "n.nii"))
    sitk.WriteImage(img, str(tmp_path / "n.nii.gz"))
    assert [sniff_image_suffix(tmp_path / f"n.{s}") for s in ("nrrd", "nii", "nii.gz")] == [".nrrd", ".nii", ".nii.gz"]
    (tmp_path / "py.png").write_text("import os\n")
    (tmp_path / "gz.png").write_bytes(gzip.compress(b"not nifti" * 100))
    assert sniff_image_suffix(tmp_path / "py.png") is None and sniff_image_suffix(tmp_path / "gz.png") is None


def test_typed_params() -> None:
    assert parse_bool("TRUE", "k") is True and parse_bool(False, "k") is False
    for bad in ("no", "yes", "1", 1, 0, None, "tru"):
        with pytest.raises(ValueError, match="'k' must be true or false"):
            parse_bool(bad, "k")
    assert parse_number("3", "n", 1, 5, integer=True) == 3
    for bad in (True, "abc", float("nan"), float("inf"), 1e308, 0, "2.5"):
        with pytest.raises(ValueError, match="'n'"):
            parse_number(bad, "n", 1, 5, integer=True)
    assert UploadParams.parse({"replace": "true", "pixels_per_degree": "38.2", "user": "x"}) == UploadParams(None, 38.2, True)
    with pytest.raises(ValueError, match="'reader'"):
        UploadParams.parse({"reader": "a\nb"})
    p = InferParams.parse({"boxes": [[1, 2, 3, 4]], "output": "cam", "image": "ignored"})
    assert p.boxes == ((1.0, 2.0, 3.0, 4.0),) and p.output == "cam" and p.rank == "expected_hit"
    assert InferParams.parse({"rank": "probability"}).rank == "probability"
    for bad, words in [
        ({"rank": "cam_score"}, "'rank'"),
        ({"rank": ["probability"]}, "'rank'"),
        ({"output": "../x"}, "'output'"),
        ({"max_boxes": 1e9}, "'max_boxes'"),
        ({"boxes": [[0, 0, -1, 1]]}, "boxes"),
        ({"min_score": "nan"}, "'min_score'"),
    ]:
        with pytest.raises(ValueError, match=words):
            InferParams.parse(bad)


# ---------------------------------------------------------------------------- the guard as an ASGI app
def _call(
    guard: RequestGuard, method: str, path: str, query: bytes = b"", headers: dict | None = None, body: bytes = b"", chunks: list[bytes] | None = None
) -> tuple[int, bytes, dict]:
    sent: list = []
    seen: dict = {}
    msgs = (
        [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
        if chunks
        else [{"type": "http.request", "body": body, "more_body": False}]
    )

    async def receive():
        return msgs.pop(0) if msgs else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    async def app(scope, rcv, snd):
        got = b""
        while True:
            m = await rcv()
            got += m.get("body", b"")
            if not m.get("more_body"):
                break
        seen["body"] = got
        await snd({"type": "http.response.start", "status": 500 if b"fail" in got else 200, "headers": [(b"access-control-allow-origin", b"*")]})
        await snd({"type": "http.response.body", "body": b"error at /srv/app/x.py" if b"fail" in got else b"ok"})

    guard.app = app
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    asyncio.run(guard(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    return (
        start["status"],
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"),
        {k.decode(): v.decode() for k, v in start["headers"]} | {"_app_body": seen.get("body")},
    )


def test_guard_names_origins_auth_and_size() -> None:
    g = RequestGuard(None, GuardConfig(token="t" * 20, cors_origins=["http://ok.example/"], max_body=100, hide_paths=["/srv/app"]))
    auth = {"Authorization": "Bearer " + "t" * 20}
    assert _call(g, "GET", "/info/", headers=auth)[0] == 200
    assert _call(g, "GET", "/info/")[0] == 401
    assert _call(g, "GET", "/info/", headers={"Authorization": "Bearer " + "t" * 19})[0] == 401
    assert _call(g, "GET", "/auth/")[0] == 200
    st, body, _ = _call(g, "POST", "/auth/token", headers={"content-type": "application/x-www-form-urlencoded"}, body=b"username=a&password=" + b"t" * 20)
    assert st == 200 and b"t" * 20 in body
    assert _call(g, "POST", "/auth/token", body=b"username=a&password=x")[0] == 401
    for q in (b"image=../x", b"tag=..", b"id=%2Fetc", b"label=a%00", b"image=%C3%A9"):
        st, body, _ = _call(g, "GET", "/datastore/image", query=q, headers=auth)
        assert st == 400 and b"invalid" in body, q
    assert _call(g, "GET", "/session/..%2f..", headers=auth)[0] == 400
    assert _call(g, "GET", "/static/%2e%2e/x", headers=auth)[0] == 400
    st, _, h = _call(g, "GET", "/info/", headers={**auth, "Origin": "http://ok.example"})
    assert st == 200 and h["access-control-allow-origin"] == "http://ok.example"
    st, _, h = _call(g, "GET", "/info/", headers={**auth, "Origin": "http://evil.example"})
    assert st == 403 and "access-control-allow-origin" not in h
    assert _call(g, "PUT", "/datastore/image", headers={**auth, "Content-Length": "101"}, body=b"x" * 101)[0] == 413
    st, _, h = _call(g, "PUT", "/datastore/image", headers=auth, chunks=[b"x" * 60, b"y" * 30])
    assert st == 200 and h["_app_body"] == b"x" * 60 + b"y" * 30  # streamed body replayed whole
    assert _call(g, "PUT", "/datastore/image", headers=auth, chunks=[b"x" * 60, b"y" * 60])[0] == 413
    st, body, h = _call(g, "PUT", "/x", headers=auth, body=b"fail")
    assert st == 500 and body == b"error at x.py" and h["content-length"] == str(len(body))
    with pytest.raises(ValueError, match="16 characters"):
        GuardConfig(token="short")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


def test_dicom_spacing_zero_is_unknown(tmp_path: Path) -> None:
    from gazerad.io.dicom import write_dicom_xray
    from gazerad.io.xray import read_xray
    from gazerad.serving.infer import load_input

    a = (np.arange(32 * 48).reshape(32, 48) % 4000).astype(np.uint16)
    write_dicom_xray(tmp_path / "cr.dcm", a, spacing=(0.0, 0.0))
    _, meta = read_xray(tmp_path / "cr.dcm")
    assert meta["spacing"] is None and "unknown" in meta["spacing_note"]
    _, geom = load_input(tmp_path / "cr.dcm")
    assert geom.spacing == (1.0, 1.0) and geom.spacing_known is False and geom.to_dict()["spacing_known"] is False
    write_dicom_xray(tmp_path / "dx.dcm", a, spacing=(0.2, 0.3))
    assert read_xray(tmp_path / "dx.dcm")[1]["spacing"] == pytest.approx((0.2, 0.3))
    _, geom = load_input(tmp_path / "dx.dcm")
    assert geom.spacing_known is True and geom.spacing == pytest.approx((0.3, 0.2))  # ITK order: (column, row)
