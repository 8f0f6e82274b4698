"""GazeRad MONAI Label app: attention maps, localisation, classification, training and
gaze-aware active learning for 2-D X-rays.

    monailabel start_server --app monailabel_app --studies STUDIES/images \
        --conf models all --conf use_pretrained_model true
    gazerad serve                      # the same, with sample studies and first models prepared

Conf keys (``--conf KEY VALUE``):

- ``models``: ``all`` (default) or a comma list of ``attention, localization,
  classification, pretrain``.
- ``use_pretrained_model``: ``true`` (default): a missing ``model/<name>.pt`` is taken from
  ``model/pretrained_<name>.pt`` when present.
- ``skip_trainers``, ``skip_strategies``, ``skip_scoring``: ``false`` by default.
- ``auto_update_scoring``: ``false`` by default (MONAI Label's default would rescore every
  image at start and after each training).
- ``model_dir``: weights folder (default ``<app>/model``).
- ``max_upload_mb`` (128): largest request body and image / label upload; ``max_gaze_mb``
  (32): largest gaze upload. Beyond them: 413.
- ``cors_origins``: comma list of browser origins allowed to call the server (default none:
  a request with any other ``Origin`` header is refused with 403).

Safety (see ``lib/routes.py``, ``lib/datastore.py``): every id, tag, file name and archive
entry from a request goes through :func:`gazerad.io.confine.confine`; uploads are
validated before they are stored; the index file is written atomically. Auth: with
``GAZERAD_AUTH_TOKEN_FILE`` (or ``GAZERAD_AUTH_TOKEN``) in the environment every request
needs ``Authorization: Bearer <token>``; ``POST /auth/token`` logs in with the token as
password (MONAI Label's protocol: its Slicer plugin and GazeRad's module log in unchanged).
``gazerad serve --auth`` sets this up.

Construction is cheap and has no side effects beyond MONAI Label's own datastore index:
no model is loaded until the first request, and training runs in MONAI Label's
subprocess. Errors reach clients as 4xx/5xx with a message: unknown or unsafe image id
(404/400), unreadable image or bad parameters (422), model not trained yet (503).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.exception import MONAILabelException
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool

import gazerad
from gazerad.errors import InputError
from gazerad.io.confine import UnsafeName, check_name
from gazerad.io.scratch import TEMP_SCRATCH, clean_stale
from gazerad.serving.data import DatastoreView, is_safe_id
from gazerad.serving.guard import GuardConfig
from gazerad.serving.infer import ModelNotReady
from gazerad.serving.launch import served_models
from gazerad.serving.params import InferParams, finite_json_object, parse_bool, parse_text
from lib.activelearning import RandomUnread
from lib.configs import AttentionConfig, ClassificationConfig, LocalizationConfig, PretrainConfig
from lib.datastore import GazeRadDatastore

logger = logging.getLogger(__name__)

CONFIGS: Dict[str, type] = {
    "attention": AttentionConfig,
    "localization": LocalizationConfig,
    "classification": ClassificationConfig,
    "pretrain": PretrainConfig,
}


def _http_error(exc: Exception) -> HTTPException:
    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, UnsafeName):
        return HTTPException(status_code=400, detail=str(exc))
    if isinstance(exc, ModelNotReady):
        return HTTPException(status_code=503, detail=str(exc))
    if isinstance(exc, MONAILabelException):
        return HTTPException(status_code=404 if "There is no" in exc.msg else 422, detail=exc.msg)
    if isinstance(exc, InputError):
        return HTTPException(status_code=422, detail=exc.problem + (f" (row {exc.row})" if exc.row is not None else ""))
    if isinstance(exc, (ValueError, KeyError, TypeError)):
        return HTTPException(status_code=422, detail=f"bad request: {exc}")
    return HTTPException(status_code=500, detail=f"{type(exc).__name__}: {exc}")


class GazeRadApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]) -> None:
        self.model_dir = conf.get("model_dir") or os.path.join(app_dir, "model")
        os.makedirs(self.model_dir, exist_ok=True)
        names = served_models(conf.get("models", "all"))  # conf 'models': all, or a comma list of CONFIGS
        self.planner = None
        self.models: Dict[str, TaskConfig] = {}
        try:  # class names for /info (a small CSV read; no model is loaded)
            classes = DatastoreView(studies).labels()["classes"] if os.path.isdir(studies) else []
        except InputError:
            classes = []
        for n in names:
            c = CONFIGS[n]()
            c.init(n, self.model_dir, conf, None, classes=classes)
            self.models[n] = c
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="GazeRad",
            description="Gaze- and knowledge-guided X-ray models: attention maps, localisation, classification",
            version=gazerad.__version__,
        )
        self._auto_update_scoring = strtobool(conf.get("auto_update_scoring", "false"))
        self._install_guard()

    def guard_config(self) -> GuardConfig:
        """The server's front-door settings from conf keys and the environment."""
        token = os.environ.get("GAZERAD_AUTH_TOKEN") or None
        tfile = os.environ.get("GAZERAD_AUTH_TOKEN_FILE")
        if tfile:
            with open(tfile) as fh:
                token = fh.read().strip() or None
        origins = [o for o in self.conf.get("cors_origins", "").split(",") if o.strip()]
        hide = {self.app_dir, self.studies, self.model_dir, tempfile.gettempdir(), os.path.expanduser("~")}
        hide |= {os.path.realpath(p) for p in hide}
        return GuardConfig(token=token, cors_origins=origins, max_body=int(float(self.conf.get("max_upload_mb", 128)) * 2**20) + (1 << 20), hide_paths=hide)

    def _install_guard(self) -> None:
        """Inside ``monailabel start_server`` (its FastAPI app is loaded): GazeRad's routes and
        guard go in front of MONAI Label's (see ``lib/routes.py``). Elsewhere (training
        subprocess, tests building the app) nothing happens."""
        import sys

        mod = sys.modules.get("monailabel.app")
        if mod is not None and hasattr(mod, "app"):
            from lib.routes import install

            install(mod.app, self.guard_config())
            self._clean_scratch()

    def _clean_scratch(self) -> None:
        """At server start: remove what servers killed mid-request left behind (their scratch
        folders in the temp folder and the datastore; a live server's are locked, so kept)."""
        store = self.datastore()
        for root, prefix in ((TEMP_SCRATCH.root, TEMP_SCRATCH.prefix), (store.incoming.root, store.incoming.prefix)):
            for p in clean_stale(root, prefix):
                logger.info("removed %s, left by a server that was stopped mid-request", p)

    # ------------------------------------------------------------------ construction
    def init_datastore(self) -> Datastore:
        return GazeRadDatastore(
            self.studies,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
            max_image_mb=float(self.conf.get("max_upload_mb", 128)),
            max_gaze_mb=float(self.conf.get("max_gaze_mb", 32)),
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for c in self.models.values():
            infers.update(c.infer() or {})
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        return {n: t for n, c in self.models.items() if (t := c.trainer()) is not None}

    def init_strategies(self) -> Dict[str, Strategy]:
        strategies: Dict[str, Strategy] = {"random": RandomUnread()}
        if not strtobool(self.conf.get("skip_strategies", "false")):
            for c in self.models.values():
                strategies.update(c.strategy() or {})
        return strategies

    def init_scoring_methods(self) -> Dict[str, ScoringMethod]:
        methods: Dict[str, ScoringMethod] = {}
        if not strtobool(self.conf.get("skip_scoring", "false")):
            for c in self.models.values():
                methods.update(c.scoring_method() or {})
        return methods

    # ------------------------------------------------------------------ requests
    def _resolve_image(self, image: Any) -> None:
        """Accept a datastore id, or the file a request in flight uploaded (or its session image)."""
        if not isinstance(image, str):
            return
        if is_safe_id(image):
            if not self.datastore().get_image_uri(image):
                raise HTTPException(status_code=404, detail=f"unknown image id {image!r}: no such image in the datastore")
            return
        from lib.routes import is_request_file

        if is_request_file(image):
            return  # the upload or session image of the request in flight (lib/routes.py)
        raise HTTPException(status_code=400, detail=f"invalid image id {image!r} (ids are file names without a path)")

    def bundle_path(self, model):
        # MONAI Label asks this of every async task before it starts: refuse unknown models
        # here, with a 404, instead of a background task that fails later
        if model and model not in self._trainers and model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model {model!r}; trainers: {sorted(self._trainers)}, models: {sorted(self._infers)}")
        return super().bundle_path(model)

    def infer(self, request, datastore=None):
        self._resolve_image(request.get("image"))
        try:
            request = dict(request)
            # MONAI Label takes any truthy save_label; the tag names a folder: both checked first
            request["save_label"] = parse_bool(request.get("save_label", False), "save_label")
            if request.get("label_tag") is not None:
                check_name(request["label_tag"], "label tag")
            InferParams.parse(request)
            return super().infer(request, datastore)
        except Exception as exc:  # noqa: BLE001 - every failure becomes an HTTP answer with a message
            logger.warning(f"infer failed: {exc}")
            raise _http_error(exc) from None

    def next_sample(self, request):
        try:
            # stored in the chosen image's info: strict JSON, and client_id printable text
            request = finite_json_object(request, "the request")
            if request.get("client_id") is not None:
                request["client_id"] = parse_text(request["client_id"], "client_id")
            return super().next_sample(request)
        except Exception as exc:  # noqa: BLE001
            raise _http_error(exc) from None

    def scoring(self, request, datastore=None):
        try:
            return super().scoring(request, datastore)
        except Exception as exc:  # noqa: BLE001
            raise _http_error(exc) from None
