"""The one gaze-file sniffer: which format a single file holds, judged by its content.

Used by :func:`gazerad.gaze.importers.load_gaze` (``format="auto"`` on a file) and by the
server's uploads (:func:`gazerad.gaze.store.parse_gaze_upload`), so both agree. A file's
name never decides: an EyeLink recording is known by its ``SR_RESEARCH`` header, JSON by
its first character, CSV dialects by their header row.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gazerad.errors import InputError

__all__ = ["CANONICAL", "FORMATS", "json_loads", "sniff_gaze_file"]

CANONICAL = "gazerad-gaze"  # the "format" field of GazeRad's own gaze JSON (gazerad.gaze.store)
_EDF_MAGIC = b"SR_RESEARCH"
FORMATS = ("edf", "canonical", "mcgip_json", "reflacx_fixations", "egd", "generic", "mcgip_csv")


def json_loads(path: str | os.PathLike, text: str) -> Any:
    """``json.loads`` with errors (syntax, nesting depth) naming the file."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise InputError(path, "invalid JSON (nested too deeply)") from None


def sniff_gaze_file(path: str | os.PathLike) -> str:
    """One of :data:`FORMATS` for the file at ``path``.

    Raises:
        InputError: empty, neither UTF-8 text nor EDF, invalid JSON, or no known header.
    """
    p = Path(path)
    with p.open("rb") as fh:
        if fh.read(len(_EDF_MAGIC)) == _EDF_MAGIC:
            return "edf"
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(p, "gaze file is neither UTF-8 text nor an EyeLink .edf recording") from None
    if not text.strip():
        raise InputError(p, "gaze file is empty")
    if text.lstrip()[:1] in ("{", "["):
        obj = json_loads(p, text)
        return "canonical" if isinstance(obj, dict) and obj.get("format") == CANONICAL else "mcgip_json"
    first = text.splitlines()[0]
    header = {h.strip() for h in first.split(",")}
    if {"x_position", "y_position", "timestamp_start_fixation", "timestamp_end_fixation"} <= header:
        return "reflacx_fixations"
    if {"DICOM_ID", "FPOGX", "FPOGY"} <= header:
        return "egd"
    if {"x", "y", "t_start"} <= header and ({"t_end"} <= header or {"duration"} <= header):
        return "generic"
    if len(first.split(";")) >= 3:
        return "mcgip_csv"
    raise InputError(
        p,
        "cannot tell the gaze format (unknown gaze format): expected GazeRad JSON, McGIP JSON/CSV, EGD-CXR CSV, EyeLink EDF, a REFLACX "
        "fixations.csv or a CSV with columns x, y, t_start, t_end",
    )
