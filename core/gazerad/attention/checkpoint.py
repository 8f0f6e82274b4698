"""The attention predictor's file format (``attention.pt``): save, load, fingerprint."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gazerad.attention.network import AttentionPredictor, _device
from gazerad.errors import InputError

__all__ = ["save_attention_model", "load_attention_model", "model_fingerprint"]

PathLike = str | os.PathLike


_FORMAT = "gazerad-attention"


_FORMAT_VERSION = 1


def save_attention_model(model: AttentionPredictor, path: PathLike, metrics: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"format", "version", "config", "state_dict", "metrics"}`` to ``path`` atomically."""
    from gazerad.io.atomic import atomic_path

    payload = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "config": model.config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "metrics": _json_safe(dict(metrics)) if metrics is not None else None,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_attention_model(path: PathLike, device: str | torch.device | None = "cpu") -> AttentionPredictor:
    """Load a model written by :func:`train_attention` (a file, or a folder holding
    ``attention.pt``), in eval mode on ``device``.

    Raises:
        InputError: naming the file, when it is missing, unreadable, not a GazeRad attention
            model, or its weights do not fit its config.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "attention.pt"
    if not p.is_file():
        raise InputError(p, "attention model file does not exist")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(p, f"cannot be read as a GazeRad attention model ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT or "state_dict" not in payload:
        raise InputError(p, f"not a GazeRad attention model (no {_FORMAT!r} format tag)")
    if not isinstance(payload.get("version"), int) or payload["version"] > _FORMAT_VERSION:
        raise InputError(p, f"attention model format version {payload.get('version')} is newer than this GazeRad")
    try:
        model = AttentionPredictor(**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise InputError(p, f"attention model weights do not match its config ({exc})") from None
    model.metrics = payload.get("metrics")  # type: ignore[assignment]
    return model.to(_device(device)).eval()


def model_fingerprint(model: AttentionPredictor) -> str:
    """SHA-256 (hex) of the model's config and weights: the key of cached maps."""
    h = hashlib.sha256(json.dumps(model.config, sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _json_safe(v: Any) -> Any:
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (np.floating, np.integer)):
        return _json_safe(v.item())
    return v
