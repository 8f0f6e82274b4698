"""GazeRad's replacements for MONAI Label 0.8.5 endpoints that are unsafe as shipped, and the
install step that puts them (and :class:`gazerad.serving.guard.RequestGuard`) in front of
MONAI Label's FastAPI app from inside the app: site-packages stay untouched.

What changes against MONAI Label's own handlers:

- ``PUT /datastore/image`` (and the deprecated ``PUT /datastore/``), ``PUT /datastore/label``:
  the client's file name gives neither the stored extension nor a path (the content does:
  :class:`lib.datastore.GazeRadDatastore`), ``params`` must be a JSON object (422), and the
  handlers are plain functions, so FastAPI runs them in its thread pool: decoding an image
  or parsing a million-row gaze CSV no longer blocks every other request.
- ``PUT /session/``: file names through the confinement rule, archives unpacked by
  :func:`gazerad.io.archive.safe_extract` (no tar slip), expiry bounded.
- ``POST /infer/<model>``: a plain function too (inference off the event loop); an uploaded
  image is typed by its content (415 otherwise), not by the client's file name.
- ``POST /train/<model>``: parameters checked by :func:`gazerad.serving.train.check_params`
  (422 at once) before MONAI Label starts the training process.
- ``PUT /datastore/image/info``, ``PUT /datastore/label/info``: ``info`` must be a JSON object.
- Exceptions: ``json.JSONDecodeError`` / ``ValueError`` escaping any handler are 422, not 500.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional

from fastapi import APIRouter, BackgroundTasks, Body, Depends, File, Form, HTTPException, UploadFile
from fastapi.responses import JSONResponse
from monailabel.config import settings
from monailabel.endpoints import batch_infer as ml_batch
from monailabel.endpoints import datastore as ml_datastore
from monailabel.endpoints import infer as ml_infer
from monailabel.endpoints import logs as ml_logs
from monailabel.endpoints import scoring as ml_scoring
from monailabel.endpoints import train as ml_train
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.utils.app import app_instance

from gazerad.data import image_id_of
from gazerad.io.archive import safe_extract
from gazerad.io.confine import UnsafeName, check_name, sniff_image_suffix
from gazerad.io.scratch import TEMP_SCRATCH
from gazerad.serving.guard import GuardConfig, RequestGuard
from gazerad.serving.params import InferParams, finite_json_object, parse_bool, parse_json_object, parse_number
from gazerad.serving.train import PUBLISHED, check_params, publish_upload

logger = logging.getLogger(__name__)

router = APIRouter()
MAX_SESSION_DAYS = 7
MAX_MODEL_BYTES = 512 << 20  # a weights upload (the shipped localiser is 10 MB)
MAX_LOG_LINES = 100_000

# files a request in flight may name as its image (its own upload, its session's image): the
# app's infer accepts a path only when it is here (lib main.py: _resolve_image)
_REQUEST_FILES: dict[str, int] = {}
_REQUEST_FILES_LOCK = threading.Lock()


@contextlib.contextmanager
def _request_file(path: Optional[str]) -> Iterator[None]:
    real = os.path.realpath(path) if path else None
    if real:
        with _REQUEST_FILES_LOCK:
            _REQUEST_FILES[real] = _REQUEST_FILES.get(real, 0) + 1
    try:
        yield
    finally:
        if real:
            with _REQUEST_FILES_LOCK:
                _REQUEST_FILES[real] -= 1
                if not _REQUEST_FILES[real]:
                    del _REQUEST_FILES[real]


def is_request_file(path: str) -> bool:
    """Whether ``path`` is the upload or session image of a request now in flight."""
    with _REQUEST_FILES_LOCK:
        return os.path.realpath(path) in _REQUEST_FILES


def _name(value: Any, what: str) -> str:
    try:
        return check_name(value, what)
    except UnsafeName as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def _json(text: Any, what: str) -> dict[str, Any]:
    try:
        return parse_json_object(text, what)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


def _spool(upload: UploadFile, limit: int, what: str, folder: Optional[str] = None) -> str:
    """The upload in a temp file without the client's name (413 past ``limit`` bytes)."""
    fd, path = tempfile.mkstemp(prefix="up-", dir=folder or TEMP_SCRATCH.path())
    n = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := upload.file.read(1 << 20):
                n += len(chunk)
                if n > limit:
                    raise HTTPException(status_code=413, detail=f"{what} is over the limit of {limit >> 20} MB")
                out.write(chunk)
    except BaseException:
        os.unlink(path)
        raise
    return path


def _limit() -> int:
    return int(getattr(app_instance().datastore(), "max_image_bytes", 128 << 20))


# ---------------------------------------------------------------------------- datastore
def _add_image(image: Optional[str], params: str, file: UploadFile, user: User) -> dict[str, Any]:
    save = _json(params, "params")
    image_id = _name(image if image else image_id_of(os.path.basename(file.filename or "")), "image id")
    if user and user.username:
        save["user"] = user.username
    tmp = _spool(file, _limit(), f"image {image_id!r}")
    try:
        return {"image": app_instance().datastore().add_image(image_id, tmp, save)}
    finally:
        os.unlink(tmp)


@router.put("/datastore/", include_in_schema=False)
@router.put("/datastore/image", summary="Upload a new image (type from its content; validated before it is stored)")
def api_add_image(
    image: Optional[str] = None, params: str = Form("{}"), file: UploadFile = File(...), user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
) -> dict[str, Any]:
    return _add_image(image, params, file, user)


@router.put("/datastore/label", summary="Save a label (gaze: tag=gaze) for an image; validated before it is stored")
def api_save_label(
    image: str,
    params: str = Form("{}"),
    tag: str = DefaultLabelTag.FINAL.value,
    label: UploadFile = File(...),
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
) -> dict[str, Any]:
    image = _name(image, "image id")
    tag = _name(tag or DefaultLabelTag.FINAL.value, "label tag")
    save = _json(params, "params")
    instance = app_instance()
    store = instance.datastore()
    tmp = _spool(label, max(_limit(), getattr(store, "max_gaze_bytes", 0)), f"label for image {image!r}")
    try:
        label_id = store.save_label(image, tmp, tag, save)
    finally:
        os.unlink(tmp)
    res = instance.on_save_label(image, label_id) or {}
    res.update({"image": image, "label": label_id})
    return res


@router.put("/datastore/image/info", summary="Update image info (a JSON object)")
def api_put_image_info(image: str, info: str = Form("{}"), user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))) -> Any:
    i = _json(info, "info")
    if user and user.username:
        i["user"] = user.username
    return app_instance().datastore().update_image_info(_name(image, "image id"), i)


@router.put("/datastore/label/info", summary="Update label info (a JSON object)")
def api_put_label_info(label: str, tag: str, info: str = Form("{}"), user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))) -> Any:
    i = _json(info, "info")
    if user and user.username:
        i["user"] = user.username
    return app_instance().datastore().update_label_info(_name(label, "label id"), _name(tag, "label tag"), i)


# ---------------------------------------------------------------------------- sessions
def _typed_image(path: str, shown: str) -> str:
    """``path`` renamed to the suffix its content calls for (415 when it is no image)."""
    suffix = sniff_image_suffix(path)
    if suffix is None:
        raise HTTPException(status_code=415, detail=f"{shown!r} is not a PNG, JPEG, DICOM, NIfTI or NRRD file (judged by its content); nothing was stored")
    typed = os.path.join(os.path.dirname(path), image_id_of(os.path.basename(path)) + suffix)
    if typed != path:
        if os.path.exists(typed):
            raise HTTPException(status_code=422, detail=f"two session files are the image {os.path.basename(typed)!r} once typed by content")
        os.replace(path, typed)
    return typed


@router.put("/session/", summary="Create a session from image file(s) or an archive (entries confined)")
def api_create_session(
    background_tasks: BackgroundTasks,
    uncompress: str = "false",
    expiry: str = "0",
    files: List[UploadFile] = File(...),
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
) -> Any:
    try:
        unpack = parse_bool(uncompress, "uncompress")
        ttl = int(parse_number(expiry, "expiry", 0, MAX_SESSION_DAYS * 86400, integer=True))
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    sessions = app_instance().sessions()
    if sessions is None:
        raise HTTPException(status_code=406, detail="Session Feature is Not Enabled")
    if not files:
        raise HTTPException(status_code=422, detail="no file in the request")
    names = [_name(os.path.basename(f.filename or ""), "file name") for f in files]
    if len(set(names)) != len(names):
        raise HTTPException(status_code=422, detail="two uploaded files have the same name")
    received = tempfile.mkdtemp(prefix="session-", dir=TEMP_SCRATCH.path())
    scratch = [received]  # removed after the answer, or at once when the request is refused
    try:
        limit = _limit()
        paths = []
        for f, n in zip(files, names):
            tmp = _spool(f, limit, f"session file {n!r}", folder=received)
            os.replace(tmp, os.path.join(received, n))
            paths.append(os.path.join(received, n))
        if unpack:
            data = tempfile.mkdtemp(prefix="unpacked-", dir=TEMP_SCRATCH.path())
            scratch.append(data)
            try:
                for p in paths:
                    safe_extract(p, data, max_total=4 * limit)
            except (UnsafeName, FileExistsError) as exc:
                raise HTTPException(status_code=400, detail=f"archive refused, nothing was stored: {exc}") from None
            images = sorted(str(q) for q in Path(data).rglob("*") if q.is_file())
        else:
            data, images = received, paths
        images = [_typed_image(q, os.path.relpath(q, data)) for q in images]
        session_id, info = sessions.add_session(images[0] if len(images) == 1 else data, ttl, False)
    except BaseException:
        # FastAPI runs background tasks only after a successful answer: a refused upload
        # must not leave its bytes in the temp folder
        for d in scratch:
            shutil.rmtree(d, ignore_errors=True)
        raise
    for d in scratch:
        background_tasks.add_task(shutil.rmtree, d, True)
    return {"session_id": session_id, "session_info": info.to_json()}


# ---------------------------------------------------------------------------- inference
@router.post("/infer/{model}", summary="Run inference (off the event loop; an uploaded image is typed by its content)")
def api_run_inference(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[ml_infer.ResultType] = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
) -> Any:
    p = _json(params, "params")
    inner = sorted(k for k in ("image", "session", "label", "model") if k in p)
    if inner:
        raise HTTPException(status_code=422, detail=f"params may not set {inner}: the image is the query's image id, an uploaded file or a session_id")
    if label is not None:
        raise HTTPException(status_code=422, detail="GazeRad's models take no input label")
    if output == ml_infer.ResultType.dicom_seg:
        raise HTTPException(status_code=422, detail="GazeRad's models give no DICOM SEG: ask for output json, image or all")
    if sum(bool(v) for v in (image, file is not None, session_id)) != 1:
        raise HTTPException(status_code=422, detail="give exactly one of: an image id (image=), an uploaded file (file=), a session (session_id=)")
    if image:
        _name(image, "image id")
    path, scratch = None, None
    if file is not None:
        tmp = _spool(file, _limit(), "uploaded image")
        suffix = sniff_image_suffix(tmp)
        if suffix is None:
            os.unlink(tmp)
            raise HTTPException(status_code=415, detail="uploaded image is not a PNG, JPEG, DICOM, NIfTI or NRRD file (judged by its content)")
        path = scratch = tmp + suffix
        os.replace(tmp, path)
    elif session_id:
        sessions = app_instance().sessions()
        session = sessions.get_session(_name(session_id, "session id")) if sessions is not None else None
        if session is None:
            raise HTTPException(status_code=404, detail=f"unknown or expired session {session_id!r}")
        path = session.image
    try:
        with _request_file(path):
            return ml_infer.run_inference(background_tasks, model, path or image, "", params, None, None, output)
    finally:
        if scratch is not None:  # the answer is built: the upload is not needed any more, failed or not
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)


# ---------------------------------------------------------------------------- training
@router.post("/train/{model}", summary="Run a training task (parameters checked before it starts)")
def api_run_model(
    model: str,
    params: Optional[dict] = Body(None),
    run_sync: Optional[bool] = False,
    enqueue: Optional[bool] = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
) -> Any:
    instance = app_instance()
    model = _name(model, "model name")
    trainer = instance._trainers.get(model)
    if trainer is None:
        raise HTTPException(status_code=404, detail=f"unknown model {model!r}; trainers: {sorted(instance._trainers)}")
    if params is not None and not isinstance(params, dict):
        raise HTTPException(status_code=422, detail="training parameters must be a JSON object")
    try:
        check_params(model, {**trainer.config(), **(params or {})})
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return ml_train.run_model(model, params, run_sync, enqueue)


# ---------------------------------------------------------------------------- models
@router.put("/model/{model}", summary="Replace a served model's weights (loaded and run once before they are published)")
def api_update_model(model: str, file: UploadFile = File(...), user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))) -> Any:
    instance = app_instance()
    model = _name(model, "model name")
    if model not in instance._infers or model not in PUBLISHED:
        raise HTTPException(status_code=404, detail=f"unknown model {model!r}; models: {sorted(instance._infers)}")
    tmp = _spool(file, MAX_MODEL_BYTES, f"weights for {model!r}", folder=instance.model_dir)
    try:
        stats = publish_upload(model, tmp, instance.studies, instance.model_dir)
    except RuntimeError as exc:  # the loader may quote the temp file: name the upload instead
        why = str(exc).replace(tmp, "the upload").replace(os.path.basename(tmp), "the upload")
        raise HTTPException(status_code=422, detail=f"weights refused: {why}") from None
    finally:
        os.unlink(tmp)
    return {"model": model, **stats["uploaded"]}


# ---------------------------------------------------------------------------- jobs and logs
@router.post("/scoring/{method}", summary="Run a scoring method (known methods only)")
def api_run_scoring(
    method: str, params: Optional[dict] = Body(None), run_sync: Optional[bool] = False, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
) -> Any:
    instance = app_instance()
    method = _name(method, "scoring method")
    if method not in instance._scoring_methods:
        raise HTTPException(status_code=404, detail=f"unknown scoring method {method!r}; methods: {sorted(instance._scoring_methods)}")
    return ml_scoring.run_method(method, _finite_object(params, "params"), run_sync)


@router.post("/batch/infer/{model}", summary="Run batch inference (known models; save_label and label_tag checked)")
def api_run_batch_infer(
    model: str,
    images: Optional[ml_batch.BatchInferImageType] = ml_batch.BatchInferImageType.IMAGES_ALL,
    params: Optional[dict] = Body(None),
    run_sync: Optional[bool] = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
) -> Any:
    instance = app_instance()
    model = _name(model, "model name")
    if model not in instance._infers:
        raise HTTPException(status_code=404, detail=f"unknown model {model!r}; models: {sorted(instance._infers)}")
    p = _finite_object(params, "params")
    try:
        if "save_label" in p:
            p["save_label"] = parse_bool(p["save_label"], "save_label")
        if p.get("label_tag") is not None:
            p["label_tag"] = check_name(p["label_tag"], "label tag")
        InferParams.parse(p)
    except ValueError as exc:  # UnsafeName (a tag that leaves its folder) included
        raise HTTPException(status_code=400 if isinstance(exc, UnsafeName) else 422, detail=str(exc)) from None
    return ml_batch.run(model, images, p, run_sync)


@router.get("/logs/", summary="The server log (lines: 0 to 100000; 0 = all)")
def api_get_logs(
    lines: str = "300", html: str = "true", text: str = "false", refresh: str = "0", user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))
) -> Any:
    try:
        n = int(parse_number(lines, "lines", 0, MAX_LOG_LINES, integer=True))
        every = int(parse_number(refresh, "refresh", 0, 3600, integer=True))
        as_html, as_text = parse_bool(html, "html"), parse_bool(text, "text")
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return ml_logs.get_logs(os.path.join(settings.MONAI_LABEL_APP_DIR, "logs", "app.log"), n, as_html, as_text, every)


@router.get("/datastore/dataset", summary="Download the datastore as a ZIP archive (removed from the server once sent)")
def api_download_dataset(
    background_tasks: BackgroundTasks, limit_cases: Optional[str] = None, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
) -> Any:
    try:
        limit = None if limit_cases in (None, "") else int(parse_number(limit_cases, "limit_cases", 1, 10**7, integer=True))
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    try:
        answer = ml_datastore.download_dataset(limit)
    except AssertionError:  # MONAI Label's answer to an empty data list
        raise HTTPException(status_code=404, detail="nothing to archive: no image has a final label yet") from None
    background_tasks.add_task(_remove, answer.path)
    return answer


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _finite_object(value: Any, what: str) -> dict[str, Any]:
    """A JSON body that must be an object without NaN or infinities (422 otherwise)."""
    try:
        return finite_json_object(value, what)
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


# ---------------------------------------------------------------------------- install
def _unprocessable(request: Any, exc: Exception) -> JSONResponse:
    msg = f"invalid JSON ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else str(exc)
    return JSONResponse(status_code=422, content={"detail": f"bad request: {msg}"[:500]})


def install(app: Any, guard: GuardConfig) -> None:
    """Put GazeRad's routes first, its guard outermost and MONAI Label's open CORS out, on
    MONAI Label's running FastAPI ``app`` (idempotent; called once by the app at start)."""
    from starlette.middleware.cors import CORSMiddleware

    if getattr(app.state, "gazerad_guard", None) is not None:
        app.state.gazerad_guard.config = guard
        return
    prefix = settings.MONAI_LABEL_API_STR or ""
    n_before = len(app.router.routes)
    app.include_router(router, prefix=prefix)
    ours = app.router.routes[n_before:]
    del app.router.routes[n_before:]
    app.router.routes[:0] = ours
    app.user_middleware = [m for m in app.user_middleware if getattr(m, "cls", None) is not CORSMiddleware]
    app.exception_handlers[json.JSONDecodeError] = _unprocessable
    app.exception_handlers[UnsafeName] = lambda request, exc: JSONResponse(status_code=400, content={"detail": str(exc)})
    app.exception_handlers[ValueError] = _unprocessable
    inner = app.build_middleware_stack()
    app.middleware_stack = RequestGuard(inner, guard)
    app.state.gazerad_guard = app.middleware_stack
    app.openapi_schema = None
    logger.info(
        f"GazeRad guard installed: auth {'on' if guard.token else 'off'}, CORS origins {list(guard.cors_origins) or 'none'}, "
        f"body limit {guard.max_body >> 20} MB; {len(router.routes)} endpoints replaced"
    )
