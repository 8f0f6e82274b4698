"""One resumable checkpoint format for every trainer: tagged, versioned, written atomically.

A checkpoint holds the model, optimiser, scheduler and gradient-scaler states, the epoch,
step and history, the run's config, **every** random generator's state (Python, NumPy,
torch CPU and each CUDA device) and the method's own state (``extra``: McGIP's positive
sampler, KACL's radiomics cache and labelled mask, ...), so a killed run resumes exactly
where it stopped. Files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from gazerad.errors import InputError
from gazerad.io.atomic import atomic_path

__all__ = [
    "half_model_file",
    "rewrite_model_file",
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "restore_checkpoint",
    "rng_state",
    "set_rng_state",
    "MODEL_FORMAT",
    "save_model_file",
    "load_model_file",
]

FORMAT = "gazerad-checkpoint"
VERSION = 1


def rng_state() -> dict[str, Any]:
    """The state of every random generator, as tensors and plain values (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    return {
        "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    path: str | os.PathLike,
    kind: str,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    epoch: int,
    step: int,
    history: list,
    config: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the run's state to ``path`` atomically (temp file + rename)."""
    state = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": int(epoch),
        "step": int(step),
        "history": list(history),
        "config": dict(config),
        "rng": rng_state(),
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, kind: str, device: torch.device | str, match: Mapping[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``None`` when there is none), checked to be a ``kind`` run
    whose config agrees with ``match`` (e.g. the framework and backbone).

    Raises:
        InputError: unreadable, another format or version, another kind, or another run.
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        state = torch.load(p, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to delete
        raise InputError(p, f"cannot read checkpoint ({exc}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(p, "not a GazeRad checkpoint (or one written before the engine's format): delete it to start over")
    if state.get("version") != VERSION or state.get("kind") != kind:
        raise InputError(
            p, f"a {state.get('kind')} checkpoint of format version {state.get('version')}; this {kind} run reads version {VERSION}: use another --out"
        )
    differ = {k: (state["config"].get(k), v) for k, v in match.items() if _plain(state["config"].get(k)) != _plain(v)}
    if differ:
        what = "; ".join(f"{k} {old!r} there, {new!r} here" for k, (old, new) in differ.items())
        raise InputError(p, f"checkpoint is of another run ({what}): use another --out")
    return state


def _plain(v: Any) -> Any:
    """Tuples and lists compare equal (a config read back from a file has lists)."""
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v


def restore_checkpoint(
    state: Mapping[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler
) -> tuple[int, int, list, dict[str, Any]]:
    """Load ``state`` into the four objects and the random generators; returns
    ``(epoch, step, history, extra)``."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return state["epoch"], state["step"], state["history"], dict(state.get("extra") or {})


# ---------------------------------------------------------------------- model files
MODEL_FORMAT = "gazerad-model"
# the tag files of each kind carried before the shared model format (None: no tag at all)
_LEGACY_FORMATS = {"attention": "gazerad-attention", "encoder": None, "kacl": None}
_LABELS = {"kacl": "KACL"}  # how messages name a kind


def save_model_file(path: str | os.PathLike, kind: str, config: Mapping[str, Any], **payload: Any) -> Path:
    """A trained model's file (``encoder.pt``, ``kacl.pt``, ``attention.pt``): ``payload``
    (state dicts under the kind's names, metadata) with its kind and config, written atomically."""
    state = {"format": MODEL_FORMAT, "version": VERSION, "kind": kind, "config": dict(config), **payload}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return Path(path)


def half_model_file(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy a model file (:func:`save_model_file`) with its network weights (``state["model"]``)
    in float16, written atomically: half the size, for shipping; it loads into the float32
    network unchanged. Everything else (radiomics standardiser, calibration, ...) keeps its
    precision."""

    def halve(state: dict[str, Any]) -> None:
        state["model"] = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}

    return rewrite_model_file(src, dest, halve)


def load_failure(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, in one line. Its advice to
    load with ``weights_only=False`` is left out on purpose: a GazeRad model file holds
    tensors and plain values only, and a file that needs pickled objects is not one."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        return "not a tensor-only file: it is not a torch model file, or it holds pickled objects, which GazeRad never loads"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:200]}"


def rewrite_model_file(src: str | os.PathLike, dest: str | os.PathLike, change: Callable[[dict[str, Any]], None]) -> Path:
    """Copy a model file (:func:`save_model_file`) to ``dest`` (may be ``src``) with
    ``change(state)`` applied in place, written atomically: ``dest`` is the old file or the
    whole new one, never half of it."""
    state = torch.load(src, map_location="cpu", weights_only=True)
    change(state)
    with atomic_path(dest, suffix=".pt") as tmp:
        torch.save(state, tmp)
    return Path(dest)


def load_model_file(
    path: str | os.PathLike, kind: str, build: Callable[[dict[str, Any]], torch.nn.Module], device: torch.device | str | None = "cpu", hint: str = ""
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(build(state) on device in eval mode, state)`` for a file written by :func:`save_model_file`
    (or the folder holding ``<kind>.pt``, or a MONAI bundle exported by ``gazerad export-bundle``);
    files of earlier GazeRad versions (no format tag) load too.

    Raises:
        InputError: naming the file: missing (with ``hint``), unreadable, another kind, or
            weights that do not fit the network ``build`` makes.
    """
    p = Path(path)
    if p.is_dir():
        # a MONAI bundle exported by gazerad (models/model.pt is the model file), else a run folder
        p = p / "models" / "model.pt" if (p / "configs" / "metadata.json").is_file() else p / f"{kind}.pt"
    if not p.is_file():
        raise InputError(p, f"{_LABELS.get(kind, kind)} model not found" + (f" ({hint})" if hint else ""))
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise InputError(p, f"cannot be read as a GazeRad {_LABELS.get(kind, kind)} model ({load_failure(exc)})") from None
    fmt = state.get("format") if isinstance(state, dict) else "?"
    if fmt not in (MODEL_FORMAT, _LEGACY_FORMATS.get(kind, MODEL_FORMAT)) or (fmt == MODEL_FORMAT and state.get("kind") != kind):
        raise InputError(p, f"not a GazeRad {_LABELS.get(kind, kind)} model (format {fmt!r}, kind {state.get('kind') if isinstance(state, dict) else None!r})")
    version = state.get("version", 0)
    if not isinstance(version, int) or version > VERSION:
        raise InputError(p, f"{kind} model format version {state.get('version')} is newer than this GazeRad")
    try:
        module = build(state)
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(p, f"{kind} model weights do not match its config ({exc})") from None
    dev = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return module.to(dev).eval(), state
