"""``gazerad serve``: the MONAI Label server with GazeRad's app, ready for a first request.

1. Studies: ``--studies DIR`` (a ``gazerad synth`` study set, an NIH ChestX-ray14 or
   MIMIC-CXR(-JPG) root served through a linked study folder (:func:`datastore_dir`), or any
   folder of X-rays with an optional ``labels.csv``); without it ``studies/sample`` is generated (200 synthetic
   chests with simulated gaze) unless it exists.
2. Models: every served model (``attention``, ``localization``, ``classification``) missing
   from the app's ``model/`` folder is prepared, with progress:
   copied from shipped ``pretrained_*.pt`` weights when present, else trained now with the
   project's own training jobs (:data:`QUICK`: a few minutes on a laptop CPU;
   ``--prepare-epochs`` overrides their epochs). ``--no-prepare``
   skips this; the server then answers 503 "train first" for models without weights.
3. ``monailabel start_server --app ... --studies ... --host ... --port ...`` runs in the
   foreground (its launcher runs ``python`` from PATH: this venv's ``bin`` is put first).

Exposure: the server binds 127.0.0.1 by default. ``--auth`` turns on bearer-token auth
(the token is read from ``--auth-token-file``, default ``~/.gazerad/token``, and created
there, readable by the owner only, when missing); the server gets the file's path in
``GAZERAD_AUTH_TOKEN_FILE``, never the token on its command line. Any other address
without ``--auth`` is refused unless ``--insecure`` says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

__all__ = [
    "APP_MODELS",
    "SERVED",
    "find_app_dir",
    "datastore_dir",
    "prepare_models",
    "served_models",
    "serve_command",
    "run_serve",
    "QUICK",
    "ensure_token",
    "check_exposure",
]

DEFAULT_TOKEN_FILE = Path("~/.gazerad/token")

# quick first models for a newcomer's CPU: a few minutes in all
QUICK = {
    "attention": {"epochs": 6, "input_size": 96},
    "localization": {"epochs": 12},
    "classification": {"epochs": 12},
}


def find_app_dir() -> Path:
    """The ``monailabel_app`` folder of this checkout (``GAZERAD_APP_DIR`` overrides)."""
    env = os.environ.get("GAZERAD_APP_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "monailabel_app" / "main.py").is_file():
            return parent / "monailabel_app"
    raise FileNotFoundError("monailabel_app/ not found next to the gazerad sources; set GAZERAD_APP_DIR or pass --app-dir")


def datastore_dir(studies: Path, view: Path | None = None, gaze: Path | None = None) -> Path:
    """The folder MONAI Label serves for ``studies``.

    A study set (``images/`` + ``labels.csv``, :func:`gazerad.data.study.is_study_folder`)
    is served from its ``images/`` folder. An NIH ChestX-ray14 or MIMIC-CXR(-JPG) root is
    served from the ``images/`` of a linked study folder at ``view`` (default
    ``studies/<root name>-<layout>`` in the working folder;
    :func:`gazerad.data.layouts.link_study_folder`: links, its tables and, with ``gaze``,
    the REFLACX readings), refreshed at every start. Anything else is served as is.
    """
    from gazerad.data.layouts import LayoutFolder, link_study_folder, open_study_folder
    from gazerad.data.study import StudyFolder, is_study_folder

    if is_study_folder(studies):
        return StudyFolder(studies).images_dir
    folder = open_study_folder(studies)
    if isinstance(folder, LayoutFolder):
        view = view or Path.cwd() / "studies" / f"{studies.resolve().name}-{folder.layout}"
        print(f"[gazerad serve] {folder.layout} data set {studies}: serving its images through links in {view}", flush=True)
        return link_study_folder(studies, view, gaze) / "images"
    return studies


APP_MODELS = ("attention", "localization", "classification", "pretrain")  # the app's tasks (pretrain: training only)
SERVED = APP_MODELS[:3]  # the models that answer /infer: prepared before the server starts


def served_models(value: str = "all") -> tuple[str, ...]:
    """The app tasks conf ``models`` names: ``all`` or a comma list of :data:`APP_MODELS`
    (:class:`ValueError` naming any other)."""
    names = APP_MODELS if value.strip() == "all" else tuple(n.strip() for n in value.split(",") if n.strip())
    unknown = [n for n in names if n not in APP_MODELS]
    if unknown or not names:
        raise ValueError(f"unknown models {unknown or [value]} in conf 'models'; choose from {list(APP_MODELS)} or 'all'")
    return names


def prepare_models(datastore: Path, model_dir: Path, names: tuple[str, ...] = SERVED, params: dict[str, dict] | None = None) -> dict[str, str]:
    """Make sure each model has weights: shipped ``pretrained_*`` copy, else a training run now."""
    from gazerad.serving.train import PUBLISHED, publish, run_job

    done = {}
    for name in names:
        dest = model_dir / PUBLISHED[name]
        pre = model_dir / f"pretrained_{PUBLISHED[name]}"
        if dest.is_file():
            done[name] = "present"
        elif pre.is_file():
            pre_stats = pre.with_suffix(".stats.json")
            if pre_stats.is_file():  # the shipped run's model card (training data, held-out metrics)
                publish(pre_stats, model_dir / f"{name}.stats.json")
            publish(pre, dest)
            done[name] = "copied from shipped weights"
        else:
            print(f"[gazerad serve] no '{name}' model yet: training a first one on {datastore} ...", flush=True)
            stats = run_job(name, datastore, model_dir, (params or QUICK).get(name, {}))
            done[name] = f"trained ({stats['key_metric']} {stats['best_metric']:.3f}, {stats['seconds']:.0f} s)"
        print(f"[gazerad serve] {name}: {done[name]}", flush=True)
    return done


def serve_command(app_dir: Path, datastore: Path, host: str, port: int, conf: list[tuple[str, str]]) -> list[str]:
    launcher = Path(sys.executable).parent / "monailabel"
    cmd = [
        str(launcher) if launcher.is_file() else "monailabel",
        "start_server",
        "--app",
        str(app_dir),
        "--studies",
        str(datastore),
        "--host",
        host,
        "--port",
        str(port),
    ]
    for k, v in conf:
        cmd += ["--conf", k, v]
    return cmd


def ensure_token(path: str | os.PathLike) -> Path:
    """The token file at ``path`` (created with a fresh 32-byte token, mode 0600, when missing)."""
    import secrets

    p = Path(path).expanduser()
    if p.is_file():
        if len(p.read_text().strip()) < 16:
            raise ValueError(f"{p}: the auth token must have at least 16 characters")
        return p
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    print(f"[gazerad serve] new auth token written to {p} (owner-only); clients log in with it as password", flush=True)
    return p


def check_exposure(host: str, auth: bool, insecure: bool) -> None:
    """Refuse to bind a non-loopback address without auth unless ``insecure``."""
    from gazerad.serving.guard import is_loopback

    if not is_loopback(host) and not auth and not insecure:
        raise SystemExit(
            f"[gazerad serve] refusing to listen on {host} without authentication: anyone who can reach this machine could "
            "upload, delete and train. Add --auth (bearer token), or --insecure if a firewall or proxy already guards it."
        )


def run_serve(args: argparse.Namespace) -> int:
    from gazerad.synth.study import generate_studies

    check_exposure(args.host, args.auth, args.insecure)

    app_dir = Path(args.app_dir) if args.app_dir else find_app_dir()
    if args.studies:
        studies = Path(args.studies)
        if not studies.is_dir():
            raise FileNotFoundError(f"{studies}: studies folder does not exist")
    else:
        studies = Path.cwd() / "studies" / "sample"
        from gazerad.data.study import StudyFolder

        if not StudyFolder(studies).has_labels:
            print(f"[gazerad serve] generating {args.n} sample studies in {studies} ...", flush=True)
            generate_studies(studies, n=args.n, seed=0, overwrite=True, progress=True)
    store = datastore_dir(studies, Path(args.view) if args.view else None, Path(args.gaze) if args.gaze else None)
    conf = [tuple(c) for c in (args.conf or [])]
    model_dir = Path(dict(conf).get("model_dir") or app_dir / "model")
    model_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_prepare:
        epochs = getattr(args, "prepare_epochs", None)
        names = tuple(n for n in served_models(dict(conf).get("models", "all")) if n in SERVED)  # only those this server serves
        prepare_models(store, model_dir, names, params={k: {**v, "epochs": epochs} for k, v in QUICK.items()} if epochs else None)
    if args.prepare_only:
        return 0
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("GAZERAD_AUTH_TOKEN", None)
    env.pop("GAZERAD_AUTH_TOKEN_FILE", None)
    if args.auth:
        env["GAZERAD_AUTH_TOKEN_FILE"] = str(ensure_token(args.auth_token_file))
    cmd = serve_command(app_dir, store, args.host, args.port, conf)
    print(f"[gazerad serve] {' '.join(cmd)}", flush=True)
    hdr = f'-H "Authorization: Bearer $(cat {args.auth_token_file})" ' if args.auth else ""
    print(f"[gazerad serve] try: curl {hdr}-X POST 'http://{args.host}:{args.port}/infer/attention?image=<id>&output=json'", flush=True)
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).is_file():
        raise FileNotFoundError("the 'monailabel' launcher is not installed in this environment")
    sys.stdout.flush()
    # become the server: Ctrl-C and signals reach it directly, no Python process left waiting
    os.execvpe(cmd[0], cmd, env)
    return 0  # not reached


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="start the MONAI Label server with GazeRad's app (sample studies and first models prepared)")
    s.add_argument(
        "--studies",
        default=None,
        help="study set, NIH ChestX-ray14 or MIMIC-CXR(-JPG) root, or folder of X-rays (default: studies/sample, generated if missing)",
    )
    s.add_argument("--gaze", default=None, help="with an NIH / MIMIC-CXR root: REFLACX readings of its images (the download or its main_data)")
    s.add_argument("--view", default=None, help="with an NIH / MIMIC-CXR root: where its linked study folder goes (default studies/<root>-<layout>)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--app-dir", dest="app_dir", default=None, help="the MONAI Label app (default: this checkout's monailabel_app/)")
    s.add_argument("--n", type=int, default=200, help="sample studies to generate when --studies is not given")
    s.add_argument("--no-prepare", dest="no_prepare", action="store_true", help="do not train missing models before starting")
    s.add_argument("--prepare-only", dest="prepare_only", action="store_true", help="prepare studies and models, do not start the server")
    quick = ", ".join(f"{k} {v['epochs']}" for k, v in QUICK.items())
    s.add_argument("--prepare-epochs", dest="prepare_epochs", type=int, default=None, help=f"epochs of each first model trained before the start ({quick})")
    s.add_argument("--auth", action="store_true", help="require a bearer token on every request (POST /auth/token logs in with it)")
    s.add_argument(
        "--auth-token-file",
        dest="auth_token_file",
        default=str(DEFAULT_TOKEN_FILE),
        help="file holding the token (created, owner-only, when missing; default ~/.gazerad/token)",
    )
    s.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without --auth (behind a guarding proxy)")
    s.add_argument("--conf", nargs=2, action="append", metavar=("KEY", "VALUE"), help="app conf passed to MONAI Label (repeatable)")
    s.set_defaults(func=run_serve)
