"""The server's front door: an ASGI middleware in front of MONAI Label's FastAPI app.

It does, for every request and before MONAI Label sees it:

1. **Names**: every query parameter that names an image, label, tag or session (and the
   ``/session/<id>``, ``/infer/<model>``, ... path segments) goes through
   :func:`gazerad.io.confine.check_name`; a ``..`` path segment, raw or percent-encoded, is
   refused. 400 with the reason.
2. **Origin / CORS**: a request carrying an ``Origin`` header that is not on the allow-list
   (empty by default) is refused with 403, preflights included. CORS only blocks *reading*
   answers; a page can still *send* a form POST, so the refusal is what keeps a web page
   in a browser on the same machine from driving the server.
3. **Auth** (when a token is configured): every request but ``GET /auth/`` and
   ``POST /auth/token`` needs ``Authorization: Bearer <token>`` (401 otherwise). The two
   open endpoints speak MONAI Label's protocol, so its Slicer plugin and GazeRad's module
   log in unchanged: ``POST /auth/token`` with form ``username``/``password`` (the password
   is the token) answers ``{"access_token": ..., "token_type": "bearer"}``.
4. **Size**: a body above ``max_body`` bytes is answered 413 (from ``Content-Length`` before
   anything is read, or as soon as a streamed body passes the limit).

No MONAI Label imports here: the middleware wraps any ASGI app.
"""

from __future__ import annotations

import hmac
import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from gazerad.io.confine import UnsafeName, check_name

__all__ = ["GuardConfig", "RequestGuard", "NAME_PARAMS", "is_loopback"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# query parameters that name things on disk (MONAI Label's endpoints and GazeRad's)
NAME_PARAMS = {"image": "image id", "id": "image id", "label": "label id", "tag": "label tag", "session_id": "session id"}
# path prefixes whose next segment is a name
_PATH_NAMES = {
    "/session/": "session id",
    "/infer/": "model name",
    "/train/": "model name",
    "/model/": "model name",
    "/activelearning/": "strategy name",
    "/scoring/": "scoring method",
    "/batch/infer/": "model name",
}
_DOTDOT = re.compile(r"(^|/)(\.|%2e){2}(/|$)", re.IGNORECASE)
_OPEN = {("GET", "/auth/"), ("GET", "/auth"), ("POST", "/auth/token")}
_MAX_LOGIN_BODY = 4096


def is_loopback(host: str) -> bool:
    """``127.0.0.0/8``, ``::1`` and ``localhost``."""
    h = host.strip("[]").lower()
    return h == "localhost" or h == "::1" or h.startswith("127.")


@dataclass
class GuardConfig:
    """Settings of :class:`RequestGuard`.

    Args:
        token: the bearer token; ``None`` leaves auth off (loopback use only: ``gazerad serve``
            refuses other addresses without it).
        cors_origins: origins allowed to call from a browser (exact ``scheme://host[:port]``).
        max_body: the largest request body in bytes.
    """

    token: str | None = None
    cors_origins: Iterable[str] = field(default_factory=tuple)
    max_body: int = 128 * 2**20
    hide_paths: Iterable[str] = field(default_factory=tuple)  # server folders never shown in error answers

    def __post_init__(self) -> None:
        self.cors_origins = tuple(o.strip().rstrip("/") for o in self.cors_origins if o and o.strip())
        # longest first, so a folder inside another is cut as a whole
        self.hide_paths = tuple(sorted({str(p).rstrip("/") for p in self.hide_paths if p and len(str(p)) > 1}, key=len, reverse=True))
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the auth token must have at least 16 characters")


class _TooLarge(Exception):
    pass


class RequestGuard:
    """ASGI middleware: name checks, origin allow-list, bearer auth and a body size limit."""

    def __init__(self, app: ASGIApp, config: GuardConfig | None = None) -> None:
        self.app = app
        self.config = config or GuardConfig()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    async def _answer(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        data = json.dumps(body).encode()
        h = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())] + (headers or [])
        await send({"type": "http.response.start", "status": status, "headers": h})
        await send({"type": "http.response.body", "body": data})

    def _cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if origin is None:
            return []
        return [(b"access-control-allow-origin", origin.encode()), (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin")]

    def check_names(self, path: str, query: str) -> str | None:
        """The reason to refuse a request's path or query names, ``None`` when all are fine."""
        if _DOTDOT.search(path) or "\x00" in path:
            return f"invalid path {path[:80]!r}: '..' segments are refused"
        for prefix, what in _PATH_NAMES.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                seg = urllib.parse.unquote(path[len(prefix) :].split("/", 1)[0])
                if seg:
                    try:
                        check_name(seg, what)
                    except UnsafeName as exc:
                        return str(exc)
                break
        try:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False, errors="strict")
        except (UnicodeDecodeError, ValueError):
            return "the query string is not valid UTF-8"
        for k, v in pairs:
            if k in NAME_PARAMS:
                try:
                    check_name(v, NAME_PARAMS[k])
                except UnsafeName as exc:
                    return str(exc)
        return None

    def hide(self, body: bytes) -> bytes:
        """``body`` with the server's own folders cut from every path in it."""
        text = body.decode("utf-8", "replace")
        for root in self.config.hide_paths:
            text = text.replace(root + "/", "").replace(root, "<server>")
        return text.encode()

    def _authorised(self, headers: dict[bytes, bytes]) -> bool:
        auth = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, tok = auth.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(tok.strip().encode(), str(self.config.token).encode())

    async def _read_body(self, receive: Receive, limit: int) -> bytes:
        chunks, n = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunk = msg.get("body", b"")
            n += len(chunk)
            if n > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not msg.get("more_body"):
                break
        return b"".join(chunks)

    async def _auth_endpoint(self, method: str, path: str, receive: Receive, send: Send, cors: list) -> None:
        cfg = self.config
        if method == "GET":
            return await self._answer(
                send, 200, {"enabled": cfg.token is not None, "client_id": "gazerad", "realm": None, "scheme": "bearer token (GazeRad)"}, cors
            )
        try:
            body = await self._read_body(receive, _MAX_LOGIN_BODY)
        except _TooLarge:
            return await self._answer(send, 413, {"detail": "log-in request too large"}, cors)
        if cfg.token is None:
            return await self._answer(send, 200, {"access_token": None, "token_type": None}, cors)
        form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
        password = form.get("password", "")
        if password and hmac.compare_digest(password.encode(), cfg.token.encode()):
            return await self._answer(send, 200, {"access_token": cfg.token, "token_type": "bearer"}, cors)
        return await self._answer(
            send, 401, {"detail": "wrong user name or password (the password is the server's token)"}, cors + [(b"www-authenticate", b"Bearer")]
        )

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cfg = self.config
        method = scope["method"].upper()
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/") or None
        if origin is not None and origin not in cfg.cors_origins:
            return await self._answer(send, 403, {"detail": f"origin {origin[:80]!r} is not allowed (cors_origins is empty or does not list it)"})
        cors = self._cors_headers(origin)
        if method == "OPTIONS" and origin is not None:
            want = headers.get(b"access-control-request-headers", b"").decode("latin-1")
            return await self._answer(
                send,
                200,
                {},
                cors
                + [
                    (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, HEAD, OPTIONS"),
                    (b"access-control-allow-headers", (want or "*").encode()),
                    (b"access-control-max-age", b"600"),
                ],
            )
        reason = self.check_names(path, scope.get("query_string", b"").decode("latin-1"))
        if reason:
            return await self._answer(send, 400, {"detail": reason}, cors)
        if (method, path) in _OPEN:
            return await self._auth_endpoint(method, path, receive, send, cors)
        if cfg.token is not None and not self._authorised(headers):
            return await self._answer(
                send,
                401,
                {"detail": "not authenticated: send 'Authorization: Bearer <token>' (POST /auth/token to log in)"},
                cors + [(b"www-authenticate", b"Bearer")],
            )
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await self._answer(send, 400, {"detail": "bad Content-Length"}, cors)
            if n > cfg.max_body:
                too_big = f"request body of {n} bytes is over the limit of {cfg.max_body} bytes (conf max_upload_mb)"
                return await self._answer(send, 413, {"detail": too_big}, cors)
        elif method in ("POST", "PUT", "PATCH"):
            # a streamed body without a length: read it (up to the limit) before the app sees it
            try:
                body = await self._read_body(receive, cfg.max_body)
            except _TooLarge:
                return await self._answer(send, 413, {"detail": f"request body is over the limit of {cfg.max_body} bytes (conf max_upload_mb)"}, cors)
            receive = _replay(body, receive)

        held: list[Message] = []  # an error answer's start and body, held to remove server paths

        async def send_with_cors(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                msg = dict(msg)
                msg["headers"] = [h for h in msg.get("headers", []) if not h[0].lower().startswith(b"access-control-")] + cors
                if msg["status"] >= 400 and cfg.hide_paths:
                    held.append(msg)
                    return
            elif held:
                held.append(msg)
                if msg.get("more_body"):
                    return
                start, body = held[0], b"".join(m.get("body", b"") for m in held[1:])
                body = self.hide(body)
                start["headers"] = [h for h in start["headers"] if h[0].lower() != b"content-length"] + [(b"content-length", str(len(body)).encode())]
                held.clear()
                await send(start)
                msg = {"type": "http.response.body", "body": body}
            await send(msg)

        await self.app(scope, receive, send_with_cors)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again
