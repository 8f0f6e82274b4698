"""HTTP client for the GazeRad MONAI Label server: standard library only (urllib).

Every failure becomes a :class:`GazeRadError` whose message can be shown to a clinician
as it is: which server, what was asked, what went wrong and what to do about it.

- :class:`ServerUnreachable`: nothing answers at the URL (refused, unknown host, TLS).
- :class:`ServerTimeout`: the server did not answer in time.
- :class:`ServerBusy`: HTTP 429 (a training is already running).
- :class:`AuthRequired`: HTTP 401/403 (the server has auth enabled; log in).
- :class:`NotFound`: HTTP 404 (unknown image id, no such label).
- :class:`ModelNotReady`: HTTP 503 (the model has not been trained yet).
- :class:`ServerError`: any other HTTP error, with the server's ``detail``.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

__all__ = [
    "GazeRadError",
    "ServerUnreachable",
    "ServerTimeout",
    "ServerBusy",
    "AuthRequired",
    "NotFound",
    "ModelNotReady",
    "ServerError",
    "GazeRadClient",
    "Response",
    "encode_multipart",
    "decode_multipart",
]

DEFAULT_URL = "http://127.0.0.1:8000"


class GazeRadError(Exception):
    """Base class: ``str(exc)`` is a complete message for the user."""


class ServerUnreachable(GazeRadError):
    pass


class ServerTimeout(GazeRadError):
    pass


class ServerError(GazeRadError):
    """The server answered with an HTTP error. ``status`` and ``detail`` hold what it said."""

    def __init__(self, message: str, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class ServerBusy(ServerError):
    pass


class AuthRequired(ServerError):
    pass


class NotFound(ServerError):
    pass


class ModelNotReady(ServerError):
    pass


@dataclass
class Response:
    status: int
    headers: Dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            snippet = self.body[:120].decode("utf-8", "replace")
            raise GazeRadError(f"the server answered with something that is not JSON: {snippet!r}") from None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def encode_multipart(fields: Mapping[str, str] | None = None, files: Mapping[str, Tuple[str, bytes]] | None = None) -> Tuple[bytes, str]:
    """``multipart/form-data`` body and its Content-Type: text ``fields`` and ``files``
    (``{field: (file name, bytes)}``)."""
    boundary = "gazerad-" + uuid.uuid4().hex
    out: List[bytes] = []
    for k, v in (fields or {}).items():
        out += [f"--{boundary}\r\n".encode(), f'Content-Disposition: form-data; name="{k}"\r\n\r\n'.encode(), str(v).encode("utf-8"), b"\r\n"]
    for k, (name, data) in (files or {}).items():
        safe = os.path.basename(name).replace('"', "_") or "upload"
        out += [
            f"--{boundary}\r\n".encode(),
            f'Content-Disposition: form-data; name="{k}"; filename="{safe}"\r\n'.encode(),
            b"Content-Type: application/octet-stream\r\n\r\n",
            bytes(data),
            b"\r\n",
        ]
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


def decode_multipart(body: bytes, content_type: str) -> Dict[str, Tuple[Optional[str], bytes]]:
    """Parts of a ``multipart/form-data`` answer: ``{name: (file name or None, bytes)}``."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body
    )
    if not msg.is_multipart():
        raise GazeRadError(f"expected a multipart answer from the server, got {content_type!r}")
    parts: Dict[str, Tuple[Optional[str], bytes]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return parts


def _detail(body: bytes) -> str:
    try:
        d = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body[:300].decode("utf-8", "replace").strip()
    if isinstance(d, dict) and "detail" in d:
        det = d["detail"]
        if isinstance(det, list):  # FastAPI validation errors
            return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', []))}: {e.get('msg')}" for e in det if isinstance(e, dict)) or str(det)
        return str(det)
    return json.dumps(d)[:300]


class GazeRadClient:
    """Talks to one GazeRad MONAI Label server.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000``.
        token: a MONAI Label access token (servers with auth enabled); sent as
            ``Authorization: Bearer <token>``. :meth:`login` fetches one.
        timeout: seconds to wait for an answer (inference, uploads).
        poll_timeout: seconds for the quick status calls (training progress).
    """

    def __init__(self, url: str = DEFAULT_URL, token: Optional[str] = None, timeout: float = 120.0, poll_timeout: float = 10.0) -> None:
        url = (url or "").strip().rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise GazeRadError(f"invalid server URL {url!r}: expected http://HOST:PORT, e.g. {DEFAULT_URL}")
        self.url = url
        self.token = token or None
        self.timeout = float(timeout)
        self.poll_timeout = float(poll_timeout)

    # ------------------------------------------------------------------ transport
    def request(
        self,
        method: str,
        path: str,
        params: Optional[Mapping[str, Any]] = None,
        json_body: Any = None,
        fields: Optional[Mapping[str, str]] = None,
        files: Optional[Mapping[str, Tuple[str, bytes]]] = None,
        timeout: Optional[float] = None,
        form: Optional[Mapping[str, str]] = None,
    ) -> Response:
        """One HTTP request; HTTP and network errors become :class:`GazeRadError` subclasses."""
        query = urllib.parse.urlencode({k: ("true" if v is True else "false" if v is False else v) for k, v in (params or {}).items() if v is not None})
        full = self.url + path + ("?" + query if query else "")
        headers = {"Accept": "application/json, */*"}
        data = None
        if files is not None or fields is not None:
            data, ctype = encode_multipart(fields, files)
            headers["Content-Type"] = ctype
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif json_body is not None:
            data = json.dumps(json_body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(full, data=data, method=method, headers=headers)
        what = f"{method} {path}"
        t = self.timeout if timeout is None else timeout
        try:
            with urllib.request.urlopen(req, timeout=t) as r:
                return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
        except urllib.error.HTTPError as exc:
            body = exc.read() if exc.fp is not None else b""
            raise self._http_error(exc.code, body, what) from None
        except urllib.error.URLError as exc:
            raise self._network_error(exc.reason, what, t) from None
        except (socket.timeout, TimeoutError) as exc:
            raise self._network_error(exc, what, t) from None
        except (ConnectionError, OSError) as exc:  # reset while reading, etc.
            raise self._network_error(exc, what, t) from None

    def _network_error(self, reason: Any, what: str, t: float) -> GazeRadError:
        if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
            return ServerTimeout(
                f"the GazeRad server at {self.url} did not answer {what} within {t:g} s; "
                "it may be busy (training?) or the network is slow; try again or raise the timeout"
            )
        if isinstance(reason, ConnectionRefusedError) or "refused" in str(reason).lower():
            why = "connection refused (is the server running, and is the port right?)"
        elif isinstance(reason, socket.gaierror):
            why = f"unknown host ({reason})"
        elif isinstance(reason, ssl.SSLError):
            why = f"TLS error ({reason})"
        elif isinstance(reason, ConnectionResetError):
            why = "the connection was reset by the server"
        else:
            why = str(reason) or type(reason).__name__
        return ServerUnreachable(f"cannot reach GazeRad server at {self.url}: {why}")

    def _http_error(self, status: int, body: bytes, what: str) -> ServerError:
        detail = _detail(body)
        if status == 429:
            return ServerBusy(
                f"the GazeRad server is busy (429): {detail or 'a task is already running'}. "
                "Wait for the running training to finish, or stop it, and try again.",
                status,
                detail,
            )
        if status in (401, 403):
            return AuthRequired(
                f"the GazeRad server refused {what} ({status}): {detail or 'not authorised'}. "
                "This server has authentication enabled: log in with your user name and password "
                "(or paste a token) in the GazeRad module's Server section.",
                status,
                detail,
            )
        if status == 404:
            return NotFound(f"not found on the GazeRad server ({what}): {detail}", status, detail)
        if status == 503:
            return ModelNotReady(f"the GazeRad server cannot answer yet: {detail}", status, detail)
        if status in (400, 422):
            return ServerError(f"the GazeRad server rejected the request ({status}): {detail}", status, detail)
        return ServerError(f"the GazeRad server failed on {what} ({status}): {detail}", status, detail)

    # ------------------------------------------------------------------ server
    def info(self) -> Dict[str, Any]:
        """``GET /info/``: models (with ``weights`` ready/missing), trainers, strategies, train stats."""
        return self.request("GET", "/info/").json()

    def auth_enabled(self) -> bool:
        """Whether the server has MONAI Label authentication on (``GET /auth/``; absent = off)."""
        try:
            return bool(self.request("GET", "/auth/", timeout=self.poll_timeout).json().get("enabled", False))
        except NotFound:
            return False

    def login(self, username: str, password: str) -> Optional[str]:
        """``POST /auth/token``; keeps and returns the access token (``None`` when auth is off)."""
        try:
            tok = self.request("POST", "/auth/token", form={"username": username, "password": password}).json()
        except NotFound:  # a server without the auth router: nothing to log in to
            self.token = None
            return None
        self.token = tok.get("access_token") or None
        return self.token

    # ------------------------------------------------------------------ datastore
    def studies(self) -> Dict[str, Any]:
        """``{image id: object}`` of the datastore."""
        return self.request("GET", "/datastore/", params={"output": "all"}).json().get("objects", {})

    def image_info(self, image_id: str) -> Dict[str, Any]:
        return self.request("GET", "/datastore/image/info", params={"image": image_id}).json()

    def download_image(self, image_id: str, folder: str) -> str:
        """Save the study's image file (PNG, DICOM, ...) into ``folder``; returns its path."""
        r = self.request("GET", "/datastore/image", params={"image": image_id})
        name = _filename(r.headers.get("content-disposition", "")) or image_id
        name = os.path.basename(name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, name)
        with open(path, "wb") as fh:
            fh.write(r.body)
        return path

    def next_study(self, strategy: str = "random", exclude: Iterable[str] = ()) -> Optional[Dict[str, Any]]:
        """``POST /activelearning/<strategy>``: the next study to read (``None`` when none is left)."""
        res = self.request("POST", f"/activelearning/{urllib.parse.quote(strategy)}", json_body={"exclude": list(exclude)}).json()
        return res if res and res.get("id") else None

    # ------------------------------------------------------------------ inference
    def attention(self, image_id: str, boxes: Optional[Sequence[Sequence[float]]] = None) -> Tuple[bytes, Dict[str, Any]]:
        """``POST /infer/attention?output=all``: the heatmap NRRD bytes and the JSON result."""
        fields = {"params": json.dumps({"boxes": [list(b) for b in boxes]})} if boxes else {"params": "{}"}
        r = self.request("POST", "/infer/attention", params={"image": image_id, "output": "all"}, fields=fields)
        parts = decode_multipart(r.body, r.content_type)
        if "params" not in parts or "image" not in parts:
            raise GazeRadError(f"the attention answer for {image_id!r} lacks the heatmap or its description (parts: {sorted(parts)})")
        return parts["image"][1], json.loads(parts["params"][1].decode("utf-8"))

    def localization(
        self,
        image_id: str,
        classes: Optional[Sequence[str]] = None,
        min_score: Optional[float] = None,
        cam_threshold: Optional[float] = None,
        max_boxes: Optional[int] = None,
        top_k: Optional[int] = None,
        rank: Optional[str] = None,
    ) -> Dict[str, Any]:
        """``POST /infer/localization?output=json``: boxes (pixels and LPS mm) with scores, class
        probabilities; ``finding: false`` and a ``message`` when no class reaches ``min_score``.
        ``rank``: ``expected_hit`` (the server's default) or ``probability``, the box order."""
        p: Dict[str, Any] = {"output": "json"}
        if classes:
            p["classes"] = list(classes)
        for k, v in (("min_score", min_score), ("cam_threshold", cam_threshold), ("max_boxes", max_boxes), ("top_k", top_k), ("rank", rank)):
            if v is not None:
                p[k] = v
        return self.request("POST", "/infer/localization", params={"image": image_id, "output": "json"}, fields={"params": json.dumps(p)}).json()

    def classification(self, image_id: str) -> Dict[str, Any]:
        return self.request("POST", "/infer/classification", params={"image": image_id, "output": "json"}, fields={"params": "{}"}).json()

    # ------------------------------------------------------------------ gaze
    def upload_gaze(
        self, image_id: str, path: str, reader: Optional[str] = None, pixels_per_degree: Optional[float] = None, replace: bool = False
    ) -> Dict[str, Any]:
        """``PUT /datastore/label?tag=gaze``: a gaze file of any format the server reads
        (generic CSV, REFLACX fixations.csv, McGIP JSON/CSV, EGD-CXR CSV, GazeRad JSON, EyeLink EDF)."""
        fields, files = gaze_upload_parts(path, reader=reader, pixels_per_degree=pixels_per_degree, replace=replace)
        return self.request("PUT", "/datastore/label", params={"image": image_id, "tag": "gaze"}, fields=fields, files=files).json()

    def gaze(self, image_id: str) -> Optional[Dict[str, Any]]:
        """The study's stored gaze as canonical GazeRad JSON (``None`` when it has none)."""
        try:
            return self.request("GET", "/datastore/label", params={"label": image_id, "tag": "gaze"}).json()
        except NotFound:
            return None

    def delete_gaze(self, image_id: str) -> None:
        self.request("DELETE", "/datastore/label", params={"id": image_id, "tag": "gaze"})

    # ------------------------------------------------------------------ training
    def train_start(self, model: str, params: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """``POST /train/<model>``; :class:`ServerBusy` when a training already runs.

        The model is checked against the server's trainers first (the server itself accepts
        any name and the task then fails in the background)."""
        trainers = self.info().get("trainers") or {}
        if model not in trainers:
            raise GazeRadError(
                f"the GazeRad server at {self.url} has no trainer {model!r}; it offers: {', '.join(sorted(trainers)) or 'none (trainers are switched off)'}"
            )
        return self.request("POST", f"/train/{urllib.parse.quote(model)}", json_body=dict(params or {})).json()

    def train_status(self) -> Optional[Dict[str, Any]]:
        """The last training task (``None`` before the first): ``{id, status, details, start_ts, end_ts}``."""
        try:
            return self.request("GET", "/train/", timeout=self.poll_timeout).json()
        except NotFound:
            return None

    def train_running(self) -> Optional[Dict[str, Any]]:
        """The running training task, or ``None``."""
        try:
            return self.request("GET", "/train/", params={"check_if_running": True}, timeout=self.poll_timeout).json()
        except NotFound:
            return None

    def train_stop(self) -> Dict[str, Any]:
        """``DELETE /train/``: stop the running training."""
        return self.request("DELETE", "/train/").json()


def gaze_upload_parts(
    path: str, reader: Optional[str] = None, pixels_per_degree: Optional[float] = None, replace: bool = False
) -> Tuple[Dict[str, str], Dict[str, Tuple[str, bytes]]]:
    """Form fields and file of a gaze upload. The file goes as it is (the server sniffs
    the format by name and content, and answers 422 naming the problem)."""
    if not os.path.isfile(path):
        raise GazeRadError(f"gaze file {path!r} does not exist")
    with open(path, "rb") as fh:
        data = fh.read()
    if not data:
        raise GazeRadError(f"gaze file {path!r} is empty")
    params: Dict[str, Any] = {"replace": bool(replace)}
    if reader:
        params["reader"] = reader
    if pixels_per_degree:
        params["pixels_per_degree"] = float(pixels_per_degree)
    return {"params": json.dumps(params)}, {"label": (os.path.basename(path), data)}


def _filename(disposition: str) -> Optional[str]:
    if not disposition:
        return None
    msg = email.parser.HeaderParser(policy=email.policy.HTTP).parsestr(f"Content-Disposition: {disposition}\r\n\r\n")
    return msg.get_filename()
