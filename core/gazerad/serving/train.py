"""Training jobs the server runs: from a datastore folder to published weights.

Each job builds a study workspace from the datastore (:meth:`DatastoreView.workspace`),
runs the gazerad trainer, then *publishes*: the new weights are copied next to the old
ones and renamed over them (atomic), so the server's next inference loads them
(:class:`gazerad.serving.infer.ModelSlot` watches the file) and a failed run leaves the
published model untouched. Statistics (the key metric, history, time) go to
``MODEL_DIR/<name>.stats.json``.

Jobs and their key metric:

- ``attention``: the FocusContrast attention predictor on the datastore's gaze (study set
  readings plus uploads); held-out CC of predicted vs. gaze heatmaps.
- ``localization``: KACL (classifier + radiomics of the Grad-CAM region); held-out macro
  AUC, and T(IoU)=0.3 localisation accuracy when ``BBox_List_2017.csv`` exists.
- ``classification``: supervised multi-label classifier, fine-tuned from the ``pretrain``
  encoder when one is published; held-out macro AUC.
- ``pretrain``: SimCLR/MoCo/BYOL/SimSiam with McGIP positives from the gaze relation and/or
  FocusContrast crops from the published attention model; final loss.

``multi_gpu`` with more than one visible CUDA device runs the KACL, classifier and
pre-training jobs under ``torchrun`` (one process per GPU; ``nproc`` gloo processes on the
CPU when given, e.g. to test the path); otherwise one process.

A job's request keys are a subset of its trainer's settings dataclass (``AttentionConfig``,
``KACLConfig``, ``PretrainConfig``): the same names, types and defaults (the server's
smaller defaults aside), plus ``multi_gpu``, ``nproc`` and pre-training's ``mcgip``,
``focuscontrast`` and ``scheme``. ``input_size`` is still accepted as the former name of
attention's ``image_size``. The ``torchrun`` command line is the dataclass as flags
(:func:`gazerad.engine.config.config_argv`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

import gazerad
from gazerad.errors import InputError
from gazerad.io.atomic import atomic_path, atomic_write_json, json_safe
from gazerad.serving.data import DatastoreView
from gazerad.serving.model_card import training_data

__all__ = ["JOBS", "DEFAULTS", "run_job", "read_stats", "publish", "check_params"]

# What a request may set. The names, types and (unless overridden below) defaults are the
# trainer's settings dataclass's (gazerad.engine.config.field_specs); only bounds, the
# server's smaller defaults and the job options that are no trainer setting are written here.
_COMMON = ("device", "seed", "max_steps", "precision")  # every job (attention trains by epochs: max_steps is unused)
_SETTINGS: dict[str, tuple[str, ...]] = {
    "attention": ("epochs", "image_size", "batch_size", "lr"),
    "localization": ("method", "epochs", "image_size", "batch_size", "lr", "backbone", "cam_layer", "bin_width", "labelled_fraction", "w_con"),
    "classification": ("epochs", "image_size", "batch_size", "lr", "backbone", "cam_layer"),
    "pretrain": ("framework", "epochs", "image_size", "batch_size", "backbone", "threshold"),
}
# CPU-sized first models: the server's defaults where they differ from the dataclass's
_SERVER_DEFAULTS: dict[str, dict[str, Any]] = {
    "attention": {"epochs": 10},
    # w_con 0.1: the contrastive weight the KACL table chose on validation (README, KACL table protocol)
    "localization": {
        "epochs": 12,
        "image_size": 256,
        "batch_size": 16,
        "lr": 1e-3,
        "backbone": "resnet10",
        "cam_layer": "backbone.layer2",
        "bin_width": 16.0,
        "w_con": 0.1,
    },
    "classification": {"epochs": 12, "image_size": 256, "batch_size": 16, "lr": 1e-3, "backbone": "resnet10", "cam_layer": "backbone.layer2"},
    "pretrain": {"framework": "moco", "epochs": 10, "image_size": 64, "batch_size": 32, "backbone": "resnet10", "threshold": 0.7},
}
# job options that are no trainer setting: name -> (kind, default); kinds as in _schema
_OPTIONS: dict[str, dict[str, tuple[str, Any]]] = {
    "*": {"multi_gpu": ("bool", False), "nproc": ("int", None)},
    "attention": {"max_steps": ("int", None)},
    "pretrain": {"mcgip": ("bool", True), "focuscontrast": ("bool", True), "scheme": ("scheme", "tima")},
}
# former request keys -> settings (a request naming the former key overrides the setting)
_ALIASES: dict[str, dict[str, str]] = {"attention": {"input_size": "image_size"}}
# bounds of every number a request may set (inclusive)
_BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, 1000),
    "max_steps": (1, 10_000_000),
    "batch_size": (1, 1024),
    "lr": (1e-7, 10.0),
    "image_size": (32, 1024),
    "seed": (0, 2**31 - 1),
    "nproc": (1, 64),
    "bin_width": (1e-3, 1e4),
    "labelled_fraction": (1e-3, 1.0),
    "threshold": (0.0, 1.0),
    "w_con": (0.0, 100.0),
}
_IGNORED = {"model", "local_rank", "gpus", "client_id", "user"}  # MONAI Label's own request keys


def _config_class(name: str) -> type:
    """The settings dataclass of job ``name``."""
    if name == "attention":
        from gazerad.attention.config import AttentionConfig

        return AttentionConfig
    if name == "pretrain":
        from gazerad.pretrain.config import PretrainConfig

        return PretrainConfig
    from gazerad.kacl.config import KACLConfig

    return KACLConfig


@functools.lru_cache(maxsize=None)
def _schema(name: str) -> dict[str, tuple[str, Any, Any]]:
    """Job ``name``'s request keys: ``key -> (kind, default, choices or bounds)``, kinds
    ``int``, ``float``, ``bool``, ``choice``, ``scheme`` (a registered gaze scheme) or ``text``."""
    from gazerad.engine.config import default_choices, field_specs
    from gazerad.pretrain.frameworks import FRAMEWORKS

    if name not in _SETTINGS:
        raise ValueError(f"unknown training job {name!r}; choose one of {sorted(_SETTINGS)}")
    known_choices = {**default_choices(), "framework": tuple(FRAMEWORKS)}
    specs = {s.name: s for s in field_specs(_config_class(name))}
    out: dict[str, tuple[str, Any, Any]] = {}
    for key in (*_COMMON, *_SETTINGS[name]):
        spec = specs.get(key)
        if spec is None:
            continue  # a common key the trainer does not have: a job option below
        default = _SERVER_DEFAULTS[name].get(key, spec.default)
        if spec.nargs is not None or spec.bool_or_text:
            raise TypeError(f"server parameter {key!r}: only single numbers, booleans and text are supported")
        if spec.type in (int, float):
            out[key] = ("int" if spec.type is int else "float", default, _BOUNDS[key])
        elif spec.type is bool:
            out[key] = ("bool", default, None)
        elif spec.choices or key in known_choices:
            out[key] = ("choice", default, spec.choices or known_choices[key])
        else:
            out[key] = ("text", default, None)
    for key, (kind, default) in {**_OPTIONS["*"], **_OPTIONS.get(name, {})}.items():
        out.setdefault(key, (kind, default, _BOUNDS.get(key)))
    return out


def _defaults() -> dict[str, dict[str, Any]]:
    return {name: {k: v[1] for k, v in _schema(name).items() if k not in (*_COMMON, *_OPTIONS["*"])} for name in _SETTINGS}


def __getattr__(attr: str) -> Any:
    # DEFAULTS is built on first use: it imports the trainers' settings classes (torch, MONAI)
    if attr == "DEFAULTS":
        return _defaults()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


DEFAULTS: dict[str, dict[str, Any]]
"""Job -> its own request keys and their defaults (besides ``device``, ``seed``,
``max_steps``, ``precision``, ``multi_gpu``, ``nproc``, which every job takes); a fresh
dict on each access."""


def publish(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy ``src`` onto ``dest`` atomically (temp file in ``dest``'s folder, then rename)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)


def read_stats(model_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """The last published run's statistics (``{}`` before the first)."""
    p = Path(model_dir) / f"{name}.stats.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def public_stats(stats: Any) -> Any:
    """``stats`` as a client may see it (``/info``): every absolute path (where weights were
    published, which attention model tuned the boxes) cut to its file name."""
    if isinstance(stats, dict):
        return {k: public_stats(v) for k, v in stats.items()}
    if isinstance(stats, list):
        return [public_stats(v) for v in stats]
    if isinstance(stats, str) and os.path.isabs(stats):
        return os.path.basename(stats.rstrip("/")) or stats
    return stats


def check_params(name: str, request: dict[str, Any]) -> dict[str, Any]:
    """Defaults of job ``name`` overridden by the request, each value parsed by its schema:
    unknown keys, booleans other than true/false, numbers out of bounds, unknown choices,
    a ``cam_layer`` the backbone does not have and a device that is not ``auto``, ``cpu``,
    ``cuda`` or ``cuda:N`` are :class:`ValueError` naming the key (the server answers 422
    before the job starts)."""
    from gazerad.serving.params import parse_bool, parse_choice, parse_number, parse_text

    schema = _schema(name)
    aliases = _ALIASES.get(name, {})
    p = {k: v[1] for k, v in schema.items()}
    for k, v in sorted(request.items(), key=lambda kv: kv[0] in aliases):  # a former key wins over the setting
        if k in _IGNORED or v is None:
            continue
        key = aliases.get(k, k)
        if key not in schema:
            raise ValueError(f"unknown training parameter {k!r} for {name}; known: {', '.join(sorted([*schema, *aliases]))}")
        kind, _, extra = schema[key]
        if kind in ("int", "float"):
            p[key] = parse_number(v, k, extra[0], extra[1], integer=kind == "int")
        elif kind == "bool":
            p[key] = parse_bool(v, k)
        elif kind in ("choice", "scheme"):
            from gazerad.gaze.schemes import available_schemes

            p[key] = parse_choice(v.lower() if isinstance(v, str) else v, k, extra if kind == "choice" else available_schemes())
        else:
            p[key] = parse_text(v[0] if key == "device" and isinstance(v, (list, tuple)) and v else v, k)
    dev = p.get("device")
    if dev not in (None, "", "auto", "cpu", "cuda") and not (isinstance(dev, str) and dev.startswith("cuda:") and dev[5:].isdigit()):
        raise ValueError(f"parameter 'device' must be auto, cpu, cuda or cuda:N, got {dev!r:.40}")
    if p.get("cam_layer"):
        from gazerad.kacl.model import feature_layers
        from gazerad.ssl import build_backbone

        layers = feature_layers(build_backbone(p["backbone"])[0])
        if p["cam_layer"] not in layers:
            raise ValueError(
                f"parameter 'cam_layer' {p['cam_layer']!r:.60} is not a feature layer of {p['backbone']}; "
                f"e.g. {', '.join(x for x in layers if x.count('.') == 1)}"
            )
    return p


_params = check_params


def _device(p: dict[str, Any]) -> str:
    dev = p.get("device")
    if isinstance(dev, (list, tuple)):
        dev = dev[0] if dev else None
    if dev in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(dev).startswith("cuda") and not torch.cuda.is_available():
        print(f"[gazerad] device {dev!r} requested but CUDA is not available: training on the CPU", flush=True)
        return "cpu"
    return str(dev)


def _n_procs(p: dict[str, Any], dev: str) -> int:
    """Processes for ``multi_gpu``: one per visible GPU; on the CPU ``nproc`` gloo processes if asked."""
    if not p.get("multi_gpu"):
        return 1
    n = torch.cuda.device_count() if dev.startswith("cuda") else 0
    if n > 1:
        return n
    if dev == "cpu" and p.get("nproc") and int(p["nproc"]) > 1:
        return int(p["nproc"])
    print(f"[gazerad] multi_gpu requested, {n} CUDA device(s) visible: one process", flush=True)
    return 1


def _job_config(name: str, p: dict[str, Any], **fixed: Any) -> Any:
    """Job ``name``'s settings dataclass from checked parameters ``p`` (the keys it has) and ``fixed``."""
    cls = _config_class(name)
    names = set(cls.field_names())
    return cls(**{**{k: v for k, v in p.items() if k in names and k in (*_COMMON, *_SETTINGS[name])}, **fixed})


def _cli_args(command: str, cfg: Any, dev: str) -> list[str]:
    """``gazerad <command>`` flags rebuilding ``cfg`` in every torchrun rank (each rank picks its
    own GPU: the device is passed only for the CPU)."""
    from gazerad.engine.config import config_argv

    return [command, *config_argv(dataclasses.replace(cfg, device="cpu" if dev == "cpu" else None))]


def _fresh_start(out: Path, p: dict[str, Any]) -> None:
    """Remove the previous run's ``OUT/checkpoint.pt``: the trainers resume from it, a new job starts afresh."""
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file() and not p.get("resume"):
        ckpt.unlink()


def _torchrun(nproc: int, args: list[str]) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "gazerad", *args]
    print("[gazerad] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def heldout_metrics(model_file: Path, work: Path, dev: str | None) -> dict[str, Any]:
    """A trained localiser's model-card figures on ``work``'s test split: AUC, calibration,
    T(IoU) (with ``t_iou_0.3`` and ``mean_best_iou`` at the top), the centred-box baseline
    and where each class's boxes come from; ``{"evaluation": "skipped: ..."}`` when the
    split cannot be scored."""
    from gazerad.kacl.evaluate import evaluate_kacl

    try:
        m = evaluate_kacl(model_file, work, splits=("test",), overlays=0, device=dev)  # validate tuned T and the CAM threshold
    except InputError as exc:
        return {"evaluation": f"skipped: {exc}"}
    out: dict[str, Any] = {"auc": m["auc"], "calibration": m["calibration"]}
    if "localization" in m:
        loc = m["localization"]
        out["localization"] = loc
        out["baseline_centred"] = m.get("baseline_centred")
        box = m["box_extraction"]  # where each class's boxes come from (a CAM layer, the attention map, or a CAM gated by it)
        out["box_sources"] = {c: (box["per_class"].get(c) or {}).get("cam_layer") or box["cam_layer"] for c in m["auc"] if c != "macro"}
        out["box_attention"] = box.get("attention")
        out["t_iou_0.3"] = loc["overall"].get(0.3)
        out["mean_best_iou"] = loc["mean_best_iou"]
    elif "localization_skipped" in m:
        out["localization_skipped"] = m["localization_skipped"]
    return out


def _kacl_job(name: str, view: DatastoreView, run: Path, p: dict[str, Any], dev: str, model_dir: Path) -> tuple[Path, dict]:
    from gazerad.kacl.trainer import train_kacl

    work = view.workspace(run / "workspace")
    fixed = {} if name == "localization" else {"method": "supervised"}  # the localiser's method is a request key (default kacl)
    cfg = _job_config(name, p, data=str(work), out=str(run / "out"), device=dev, **fixed)
    enc = model_dir / "pretrain_encoder.pt"
    if name == "classification" and enc.is_file():
        try:
            enc_backbone = torch.load(enc, map_location="cpu", weights_only=True)["config"]["backbone"]
        except Exception:  # noqa: BLE001 - an unreadable encoder is reported by the trainer below
            enc_backbone = cfg.backbone
        if enc_backbone == cfg.backbone:
            cfg.init_encoder = str(enc)
            print(f"[gazerad] fine-tuning from the published encoder {enc}", flush=True)
    att = model_dir / PUBLISHED["attention"]
    if name == "localization" and att.is_file():  # the served attention map joins the CAM layers as a box source
        cfg.attention = str(att)
    _fresh_start(Path(cfg.out), p)
    nproc = _n_procs(p, dev)
    if nproc > 1:
        _torchrun(nproc, _cli_args("train-kacl", dataclasses.replace(cfg, progress=False), dev))
        hist = json.loads((Path(cfg.out) / "history.json").read_text())["history"]
    else:
        hist = train_kacl(cfg)["history"]
    model_file = Path(cfg.out) / "kacl.pt"
    metrics = heldout_metrics(model_file, work, dev)
    auc = metrics.get("auc", {}).get("macro")
    return model_file, {"key_metric": "heldout_macro_auc", "best_metric": auc, **metrics, "history": hist}


def _attention_job(view: DatastoreView, run: Path, p: dict[str, Any], dev: str, model_dir: Path) -> tuple[Path, dict]:
    from gazerad.attention.training import train_attention

    gaze = view.gaze()
    if len(gaze) == 0:
        raise InputError(view.root, "no gaze in the datastore: upload recordings (PUT /datastore/label?tag=gaze) first")
    work = view.workspace(run / "workspace", need_labels=False, id_names=True)
    cfg = _job_config("attention", p, data=str(work), out=str(run / "out"), device=dev, progress=True)
    _fresh_start(Path(cfg.out), p)
    res = train_attention(cfg, gaze=gaze)
    if _n_procs(p, dev) > 1:
        print("[gazerad] the attention predictor trains on one device", flush=True)
    cc = res["heldout"].get("cc")
    stats = {
        "key_metric": "heldout_cc",
        "best_metric": cc,
        "heldout": res["heldout"],
        "centre_prior": res["centre_prior"],
        "n_train": res["n_train"],
        "n_heldout": res["n_heldout"],
        "n_gaze_images": len(gaze),
        "history": res["history"],
    }
    return Path(res["files"]["model"]), stats


def _pretrain_job(view: DatastoreView, run: Path, p: dict[str, Any], dev: str, model_dir: Path) -> tuple[Path, dict]:
    from gazerad.gaze.relation import compute_relation
    from gazerad.gaze.schemes import get_scheme
    from gazerad.pretrain.trainer import pretrain

    work = view.workspace(run / "workspace", need_labels=False)
    out = run / "out"
    cfg = _job_config("pretrain", p, data=str(work), out=str(out), device=dev, splits=("train", "unlabelled", "test", "validate"))
    used = []
    if p.get("mcgip"):
        from gazerad.gaze.record import GazeCollection

        names = {i: path.name for i, path in view.images().items()}
        recs = view.gaze().records()
        for r in recs:
            r.image_id = names.get(r.image_id, r.image_id)  # the workspace's ids are file names
        gaze = GazeCollection.from_records(recs)
        if len(gaze) >= 2:
            # TIMA with eps 0.1: the setting that separates chest findings (README, McGIP's premise)
            scheme = get_scheme("tima", eps=0.1) if p["scheme"] == "tima" else p["scheme"]
            rel = compute_relation(gaze, scheme, progress=False)
            rel.save(run / "relation.npz")
            cfg.relation = str(run / "relation.npz")
            used.append("mcgip")
        else:
            print("[gazerad] McGIP skipped: fewer than 2 images have gaze", flush=True)
    att = model_dir / "attention.pt"
    if p.get("focuscontrast") and att.is_file():
        cfg.attention = str(att)
        used.append("focuscontrast")
    _fresh_start(out, p)
    nproc = _n_procs(p, dev)
    if nproc > 1:
        _torchrun(nproc, _cli_args("pretrain", cfg, dev))
        hist = json.loads((out / "history.json").read_text())["history"]
    else:
        hist = pretrain(cfg)["history"]
    final = hist[-1]["loss"] if hist else None
    return out / "encoder.pt", {"key_metric": "final_loss", "best_metric": final, "methods": used or ["plain"], "history": hist}


def retune_served_localiser(view: DatastoreView, run: Path, model_dir: Path, dev: str) -> dict[str, Any]:
    """Keep the served localiser's gaze box sources after a new attention model is published.

    A localiser whose boxes were tuned with an attention model's map serves them only
    beside that very model (:func:`gazerad.kacl.evaluate.box_settings`: the fingerprint
    must match), so a new ``attention.pt`` would silently send it back to its CAM-only
    boxes. Its box extraction is therefore re-tuned on the datastore's validation boxes
    with the new attention model (:func:`gazerad.kacl.trainer.retune_boxes`, weights
    untouched) and republished atomically. Only what depends on the attention map changes:
    a class whose boxes came from a CAM layer alone keeps its settings and their validation
    figures (``kept``). Without validation boxes, or when the localiser does not use the
    attention map, nothing changes. Returns what happened (``{"retuned": bool, "reason" |
    "t_iou_0.3", "per_class", "kept"}``)."""
    from gazerad.engine.checkpoint import rewrite_model_file
    from gazerad.kacl.evaluate import class_setting, needs_attention, uses_attention
    from gazerad.kacl.trainer import retune_boxes

    loc = next((f for f in (model_dir / PUBLISHED["localization"], model_dir / f"pretrained_{PUBLISHED['localization']}") if f.is_file()), None)
    if loc is None:
        return {"retuned": False, "reason": "no localiser is published"}
    state = torch.load(loc, map_location="cpu", weights_only=True)
    if not needs_attention(state.get("box_extraction") or {}):
        return {"retuned": False, "reason": "the localiser's boxes do not use the attention map"}
    tmp = run / "localization_retuned.pt"
    kept = "its boxes come from the CAM layers alone until it is retrained (POST /train/localization)"
    try:
        tuned = retune_boxes(loc, view.workspace(run / "localization_workspace"), attention=model_dir / PUBLISHED["attention"], out=tmp, device=dev)
    except Exception as exc:  # noqa: BLE001 - the attention model is published either way; the answer says why the boxes were not re-tuned
        print(f"[gazerad] the localiser's boxes were not re-tuned: {exc}", flush=True)
        return {"retuned": False, "reason": f"{exc}; {kept}"}
    if "skipped" in tuned:
        return {"retuned": False, "reason": f"{tuned['skipped']} in the datastore's validation split; {kept}"}
    before = state["box_extraction"]
    cam_only = {c: dict(v) for c, v in (before.get("per_class") or {}).items() if not uses_attention(class_setting(before, c)[0])}

    def keep_cam_only(s: dict[str, Any]) -> None:
        s["box_extraction"]["per_class"].update(cam_only)

    if cam_only:
        rewrite_model_file(tmp, tmp, keep_cam_only)
        tuned["per_class"].update(cam_only)
    publish(tmp, model_dir / PUBLISHED["localization"])
    tmp.unlink()
    print(f"[gazerad] localiser's boxes re-tuned with the new attention model: validation T(IoU=0.3) {tuned['t_iou_0.3']:.3f}", flush=True)
    done = {
        "retuned": True,
        "split": "validate",
        "attention_fingerprint": tuned.get("attention_fingerprint"),
        "t_iou_0.3": tuned["t_iou_0.3"],
        "per_class": {c: {"cam_layer": v.get("cam_layer"), "t_iou_0.3": v["t_iou_0.3"]} for c, v in tuned["per_class"].items()},
        "kept": sorted(cam_only),
    }
    loc_stats = read_stats(model_dir, "localization")
    if loc_stats:  # its card says the boxes changed after its held-out metrics were measured
        loc_stats["boxes_retuned"] = {
            **done,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            "note": "held-out metrics were measured with the earlier attention model",
        }
        atomic_write_json(model_dir / "localization.stats.json", loc_stats)
    return done


JOBS: dict[str, Callable[..., tuple[Path, dict]]] = {
    "attention": _attention_job,
    "localization": functools.partial(_kacl_job, "localization"),
    "classification": functools.partial(_kacl_job, "classification"),
    "pretrain": _pretrain_job,
}
PUBLISHED = {"attention": "attention.pt", "localization": "localization.pt", "classification": "classification.pt", "pretrain": "pretrain_encoder.pt"}


def check_servable(name: str, weights: str | os.PathLike, view: DatastoreView) -> None:
    """Load ``weights`` the way the server will and answer one request on a datastore image
    (when it has one); a model that cannot serve raises here and is never published."""
    from gazerad.serving import infer

    image = next(iter(view.images().values()), None)
    try:
        if name == "pretrain":
            from gazerad.pretrain.trainer import load_encoder

            load_encoder(weights)
            return
        service = {"attention": infer.AttentionService, "localization": infer.LocalizationService}.get(name, infer.ClassificationService)
        svc = service(weights, device="cpu")
        svc.slot.get()  # a file that is not such a model fails here, datastore images or not
        if image is not None:
            svc(image, None) if name == "attention" else svc(image)
    except Exception as exc:  # noqa: BLE001 - any failure means: do not publish
        raise RuntimeError(f"the {name} model cannot serve ({type(exc).__name__}: {exc}); the published model is unchanged") from exc


def publish_upload(name: str, weights: str | os.PathLike, datastore: str | os.PathLike, model_dir: str | os.PathLike) -> dict[str, Any]:
    """Publish client-sent ``weights`` as model ``name`` (``PUT /model/<name>``): checked by
    :func:`check_servable` first (:class:`RuntimeError`, nothing changed, when they cannot
    serve), copied in atomically, and recorded in ``<name>.stats.json`` (the model card says
    they were uploaded: no training record). Returns those statistics."""
    import hashlib

    import gazerad

    check_servable(name, weights, DatastoreView(Path(datastore)))
    digest = hashlib.sha256()
    with open(weights, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    dest = publish(weights, Path(model_dir) / PUBLISHED[name])
    stats = {
        "name": name,
        "published": str(dest),
        "uploaded": {"via": f"PUT /model/{name}", "bytes": Path(weights).stat().st_size, "sha256": digest.hexdigest()},
        "gazerad_version": gazerad.__version__,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    atomic_write_json(Path(model_dir) / f"{name}.stats.json", stats)
    return stats


def run_job(name: str, datastore: str | os.PathLike, model_dir: str | os.PathLike, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train model ``name`` on the datastore and publish it to ``model_dir``; returns its stats.

    Args:
        name: ``attention``, ``localization``, ``classification`` or ``pretrain``.
        datastore: the datastore folder.
        model_dir: where published weights live (MONAI Label's ``model/``).
        request: overrides of :data:`DEFAULTS` (``epochs``, ``device``, ``multi_gpu``, ...), checked
            by :func:`check_params`.
    """
    if name not in JOBS:
        raise ValueError(f"unknown training job {name!r}; choose one of {sorted(JOBS)}")
    p = _params(name, dict(request or {}))
    dev = _device(p)
    model_dir = Path(model_dir)
    run = model_dir / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"[gazerad] training {name} on {datastore} ({dev}); params {json.dumps({k: v for k, v in p.items() if v is not None})}", flush=True)
    view = DatastoreView(Path(datastore))
    weights, stats = JOBS[name](view, run, p, dev, model_dir)
    check_servable(name, weights, view)
    dest = publish(weights, model_dir / PUBLISHED[name])
    if name == "attention":
        stats["localization_boxes"] = retune_served_localiser(view, run, model_dir, dev)
    stats.update(
        name=name,
        published=str(dest),
        training_data=training_data(datastore, len(view.images())),
        gazerad_version=gazerad.__version__,
        seconds=round(time.perf_counter() - t0, 2),
        device=dev,
        finished=time.strftime("%Y-%m-%d %H:%M:%S"),
        params={k: v for k, v in p.items() if v is not None},
        total_time=f"{time.perf_counter() - t0:.1f}s",
    )
    stats = json_safe(stats)
    atomic_write_json(model_dir / f"{name}.stats.json", stats)
    print(f"[gazerad] published {dest} ({stats['key_metric']} = {stats['best_metric']})", flush=True)
    return stats
