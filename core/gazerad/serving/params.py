"""Typed, bounded request parameters: one parser per value kind, one schema per endpoint.

Booleans are ``true``/``false`` (JSON or the strings, any case) and nothing else
(``"no"`` used to count as true); numbers are finite and inside their bounds; choices come
from a known set; free text is short and printable. Every error is a :class:`ValueError`
naming the parameter, answered 422 by the server before anything is stored or started.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = ["parse_bool", "parse_number", "parse_choice", "parse_text", "parse_json_object", "finite_json_object", "UploadParams", "InferParams"]


def parse_bool(value: Any, key: str) -> bool:
    """``True``/``False`` from a JSON boolean or the strings ``"true"``/``"false"``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"parameter {key!r} must be true or false, got {value!r:.60}")


def parse_number(value: Any, key: str, lo: float, hi: float, integer: bool = False) -> float | int:
    """A finite number in ``[lo, hi]`` (an ``int`` with ``integer``); strings of numbers accepted."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"parameter {key!r} must be a number, got {value!r:.60}")
    try:
        x = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"parameter {key!r} must be a number, got {value!r:.60}") from None
    if not math.isfinite(x) or not lo <= x <= hi:
        raise ValueError(f"parameter {key!r} must be a finite number in [{lo:g}, {hi:g}], got {value!r:.60}")
    if integer:
        if x != int(x):
            raise ValueError(f"parameter {key!r} must be a whole number, got {value!r:.60}")
        return int(x)
    return x


def parse_choice(value: Any, key: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (compared as given)."""
    c = list(choices)
    if not isinstance(value, str) or value not in c:
        raise ValueError(f"parameter {key!r} must be one of {c}, got {value!r:.60}")
    return value


def parse_text(value: Any, key: str, max_len: int = 128) -> str:
    """Short printable text (reader names and the like)."""
    if not isinstance(value, str) or not value.strip() or len(value) > max_len or not value.isprintable():
        raise ValueError(f"parameter {key!r} must be printable text of 1 to {max_len} characters, got {value!r:.60}")
    return value.strip()


class _NonFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


def finite_json_object(value: Any, what: str = "params") -> dict[str, Any]:
    """A request body already parsed (FastAPI's reader, like Python's, takes ``NaN`` and
    ``Infinity``): ``{}`` for ``None``, else it must be a JSON object without them
    (:class:`ValueError` naming ``what``)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ValueError(f"{what} holds NaN or Infinity, which JSON does not allow") from None
    return dict(value)


def parse_json_object(text: Any, what: str = "params") -> dict[str, Any]:
    """A form field holding a JSON object (``""`` is ``{}``); ``NaN`` and ``Infinity``, which
    Python's reader takes but strict JSON forbids, are :class:`ValueError`."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except _NonFinite as exc:
        raise ValueError(f"{what} holds {exc}, which JSON does not allow (stored, it would break every JSON answer)") from None
    except (json.JSONDecodeError, TypeError, RecursionError):
        raise ValueError(f"{what} must be a JSON object, got {str(text)[:60]!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


@dataclass(frozen=True)
class UploadParams:
    """``params`` of a gaze upload (``PUT /datastore/label?tag=gaze``)."""

    reader: str | None = None
    pixels_per_degree: float | None = None
    replace: bool = False

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> "UploadParams":
        p = dict(raw or {})
        return cls(
            reader=parse_text(p["reader"], "reader") if p.get("reader") is not None else None,
            pixels_per_degree=parse_number(p["pixels_per_degree"], "pixels_per_degree", 1e-3, 1e4) if p.get("pixels_per_degree") is not None else None,
            replace=parse_bool(p["replace"], "replace") if p.get("replace") is not None else False,
        )


_BOX_MAX = 1e6
BOX_RANKS = ("expected_hit", "probability")  # how localisation orders its boxes; the first is the default


@dataclass(frozen=True)
class InferParams:
    """Options of the three infer tasks (defaults as documented in ``lib/infers``)."""

    heatmap: bool = True
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    classes: tuple[str, ...] = ()
    min_score: float = 0.5
    cam_threshold: float | None = None  # None: the model's own (tuned on its validation split)
    max_boxes: int = 3
    top_k: int = 0
    rank: str = BOX_RANKS[0]  # box order and top-k choice (gazerad.kacl.evaluate.box_rank_key)
    output: str = "json"
    cam_layer: str | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> "InferParams":
        p = dict(raw or {})
        boxes = p.get("boxes") or []
        if not isinstance(boxes, (list, tuple)) or len(boxes) > 64:
            raise ValueError("parameter 'boxes' must be a list of at most 64 [x, y, w, h] boxes")
        bx = []
        for k, b in enumerate(boxes):
            if not isinstance(b, (list, tuple)) or len(b) != 4:
                raise ValueError(f"parameter 'boxes' item {k + 1} must be [x, y, w, h]")
            x, y = (parse_number(v, f"boxes[{k}]", -_BOX_MAX, _BOX_MAX) for v in b[:2])
            w, h = (parse_number(v, f"boxes[{k}]", 0.0, _BOX_MAX) for v in b[2:])
            bx.append((x, y, w, h))
        classes = p.get("classes") or []
        if not isinstance(classes, (list, tuple)) or len(classes) > 64:
            raise ValueError("parameter 'classes' must be a list of class names")
        return cls(
            heatmap=parse_bool(p["heatmap"], "heatmap") if p.get("heatmap") is not None else True,
            boxes=tuple(bx),
            classes=tuple(parse_text(c, "classes") for c in classes),
            min_score=parse_number(p.get("min_score", 0.5), "min_score", 0.0, 1.0),
            cam_threshold=parse_number(p["cam_threshold"], "cam_threshold", 0.0, 1.0) if p.get("cam_threshold") is not None else None,
            max_boxes=parse_number(p.get("max_boxes", 3), "max_boxes", 1, 100, integer=True),
            top_k=parse_number(p.get("top_k", 0), "top_k", 0, 64, integer=True),
            rank=parse_choice(p.get("rank", BOX_RANKS[0]), "rank", BOX_RANKS),
            output=parse_choice(p.get("output", "json"), "output", ("json", "slicer", "cam")),
            cam_layer=parse_text(p["cam_layer"], "cam_layer") if p.get("cam_layer") else None,
        )
