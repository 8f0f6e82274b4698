"""The attention predictor's file format (``attention.pt``): save, load, fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gazerad.attention.network import AttentionPredictor, _device
from gazerad.engine.checkpoint import load_model_file, save_model_file
from gazerad.io.atomic import json_safe

__all__ = ["save_attention_model", "load_attention_model", "model_fingerprint"]

PathLike = str | os.PathLike


def save_attention_model(model: AttentionPredictor, path: PathLike, metrics: Mapping[str, Any] | None = None) -> Path:
    """Write the model (:func:`gazerad.engine.checkpoint.save_model_file`, kind ``attention``:
    ``config``, ``state_dict``, ``metrics``) to ``path`` atomically."""
    return save_model_file(
        path,
        "attention",
        model.config,
        state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()},
        metrics=json_safe(dict(metrics)) if metrics is not None else None,
    )


def load_attention_model(path: PathLike, device: str | torch.device | None = "cpu") -> AttentionPredictor:
    """Load a model written by :func:`train_attention` (a file, or a folder holding
    ``attention.pt``), in eval mode on ``device`` (``None``: CUDA when available).

    Raises:
        InputError: naming the file, when it is missing, unreadable, not a GazeRad attention
            model, or its weights do not fit its config.
    """

    def build(state: dict[str, Any]) -> AttentionPredictor:
        model = AttentionPredictor(**state["config"])
        model.load_state_dict(state["state_dict"])
        return model

    model, state = load_model_file(path, "attention", build, _device(device))
    model.metrics = state.get("metrics")  # type: ignore[assignment]
    return model


def model_fingerprint(model: AttentionPredictor) -> str:
    """SHA-256 (hex) of the model's config and weights: the key of cached maps."""
    h = hashlib.sha256(json.dumps(model.config, sort_keys=True).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
