"""Server answers -> what Slicer shows. Plain Python + numpy, no Slicer imports.

- :func:`heatmap_volume`: attention NRRD -> array (K, J, I) + IJK-to-RAS + display range,
  for a scalar volume shown as a foreground overlay.
- :func:`colour_table`: the overlay colour map (dark red -> yellow -> white, transparent
  at zero) as rows for a ``vtkMRMLColorTableNode``.
- :func:`roi_markups`: localisation boxes -> a Slicer markups JSON (schema v1.0.3) with
  one ``ROI`` per box named "<finding> <score>".
- :func:`score_table`: class probabilities and boxes -> table columns and rows.
- :func:`scanpath_markups`: stored gaze (canonical GazeRad JSON) -> a markups ``Curve``
  through the fixations in time order and a ``Fiducial`` list (one point per fixation).
- :func:`training_progress`: ``GET /train/`` status -> state, fraction done, last log line.

Coordinates: image pixel coordinates are continuous with the image's top-left corner at
(0, 0) and pixel centres at (i + 0.5, j + 0.5) (the server's boxes, peaks and gaze use
this), so a pixel coordinate ``x`` is the voxel index ``x - 0.5``. With an IJK-to-RAS
matrix (the loaded image volume's, in Slicer), markups are written in RAS; without one,
the server's LPS millimetres are used as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .nrrd import Geometry, read_nrrd

__all__ = [
    "MARKUPS_SCHEMA",
    "HeatmapVolume",
    "heatmap_volume",
    "colour_table",
    "pixel_to_ras",
    "roi_markups",
    "score_table",
    "scanpath_markups",
    "training_progress",
    "TrainingProgress",
]

MARKUPS_SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
_IDENTITY3 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


# ---------------------------------------------------------------------------- heatmap
@dataclass
class HeatmapVolume:
    """An attention heatmap ready for a Slicer scalar volume.

    ``array``: float32 ``(1, H, W)`` in Slicer's KJI order (``slicer.util.addVolumeFromArray``);
    ``ijk_to_ras``: 4x4 (list of lists); ``geometry``: ITK geometry read from the NRRD;
    ``value_range``: (min, max) of the values (kept as the server sent them: they sum to 1);
    ``threshold``: values below it are shown transparent (a fraction of the maximum).
    """

    array: np.ndarray
    ijk_to_ras: List[List[float]]
    geometry: Geometry
    value_range: Tuple[float, float]
    threshold: float

    @property
    def window_level(self) -> Tuple[float, float]:
        lo, hi = self.value_range
        return max(hi - lo, 1e-12), (hi + lo) / 2.0


def heatmap_volume(nrrd: Union[bytes, str], threshold_fraction: float = 0.1) -> HeatmapVolume:
    """Attention NRRD (bytes or path) -> :class:`HeatmapVolume` (geometry and values kept)."""
    arr, geom, _ = read_nrrd(nrrd)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim != 3:
        raise ValueError(f"attention heatmap has {arr.ndim} dimensions, expected 2")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    return HeatmapVolume(array=arr, ijk_to_ras=geom.ijk_to_ras().tolist(), geometry=geom, value_range=(lo, hi), threshold=lo + threshold_fraction * (hi - lo))


def colour_table(n: int = 256) -> List[Tuple[float, float, float, float]]:
    """``n`` RGBA rows (0..1) of the overlay colour map: transparent black at 0, then dark
    red, orange, yellow, white; opacity ramps up over the lowest fifth."""
    t = np.linspace(0.0, 1.0, n)
    stops = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    r = np.interp(t, stops, [0.0, 0.55, 0.95, 1.0, 1.0])
    g = np.interp(t, stops, [0.0, 0.05, 0.35, 0.8, 1.0])
    b = np.interp(t, stops, [0.0, 0.15, 0.05, 0.1, 0.9])
    a = np.clip(t / 0.2, 0.0, 1.0)
    return [(float(r[i]), float(g[i]), float(b[i]), float(a[i])) for i in range(n)]


# ---------------------------------------------------------------------------- markups
def pixel_to_ras(x: float, y: float, ijk_to_ras: Sequence[Sequence[float]]) -> List[float]:
    """Continuous pixel coordinates (top-left corner = (0, 0)) -> RAS with a 4x4 IJK-to-RAS."""
    m = np.asarray(ijk_to_ras, dtype=float)
    p = m @ np.array([x - 0.5, y - 0.5, 0.0, 1.0])
    return [float(v) for v in p[:3]]


def _display(color: Sequence[float], **extra: Any) -> Dict[str, Any]:
    d = {
        "visibility": True,
        "opacity": 1.0,
        "color": list(color),
        "selectedColor": list(color),
        "propertiesLabelVisibility": True,
        "pointLabelsVisibility": False,
        "textScale": 3.0,
        "glyphScale": 1.0,
        "sliceProjection": False,
    }
    d.update(extra)
    return d


_COLOURS = [(1.0, 0.85, 0.1), (0.2, 0.9, 1.0), (1.0, 0.4, 0.9), (0.5, 1.0, 0.3), (1.0, 0.55, 0.2)]


def _box_colour(label: str, labels: List[str]) -> Tuple[float, float, float]:
    if label not in labels:
        labels.append(label)
    return _COLOURS[labels.index(label) % len(_COLOURS)]


def roi_markups(
    boxes: Sequence[Mapping[str, Any]], ijk_to_ras: Optional[Sequence[Sequence[float]]] = None, thickness_mm: float = 1.0, locked: bool = True
) -> Dict[str, Any]:
    """Localisation boxes -> markups JSON with one axis-aligned ``ROI`` per box.

    With ``ijk_to_ras`` (the image volume's), centre and size come from the pixel box
    (``x, y, w, h``) and are written in RAS; without it, from the server's ``center_mm`` /
    ``size_mm`` in LPS. Each ROI is named ``"<label> <score>"`` (score to 2 decimals); the
    control point's label says the same, its description the CAM score, probability and the class's validation hit rate
    (``validation_t_iou_0.3``: the share of validation boxes its tuned boxes found at IoU 0.3).
    """
    markups = []
    seen: List[str] = []
    for b in boxes:
        label, score = str(b["label"]), float(b["score"])
        name = f"{label} {score:.2f}"
        if ijk_to_ras is not None:
            m = np.asarray(ijk_to_ras, dtype=float)
            cx, cy = float(b["x"]) + float(b["w"]) / 2.0, float(b["y"]) + float(b["h"]) / 2.0
            center = pixel_to_ras(cx, cy, m)
            axes = m[:3, :3]
            # size along the box's own axes: the pixel extent times the voxel spacing
            size = [float(b["w"]) * float(np.linalg.norm(axes[:, 0])), float(b["h"]) * float(np.linalg.norm(axes[:, 1])), float(thickness_mm)]
            # orientation: columns = image axes' unit vectors (axis-aligned in image space)
            unit = axes / np.linalg.norm(axes, axis=0)[None, :]
            orientation = [float(v) for v in unit.ravel()]
            system = "RAS"
        else:
            center = [float(b["center_mm"][0]), float(b["center_mm"][1]), 0.0]
            size = [float(b["size_mm"][0]), float(b["size_mm"][1]), float(thickness_mm)]
            orientation = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]  # identity in RAS, written in LPS
            system = "LPS"
        desc = f"{label}; score {score:.3f}"
        if b.get("cam_score") is not None:
            desc += f"; CAM {float(b['cam_score']):.3f}"
        if b.get("probability") is not None:
            desc += f"; probability {float(b['probability']):.3f}"
        if b.get("validation_t_iou_0.3") is not None:
            n = b.get("validation_boxes")
            desc += f"; validation hit rate {100 * float(b['validation_t_iou_0.3']):.0f}%" + (f" of {int(n)} boxes" if n else "") + " at IoU 0.3"
        if b.get("below_min_score"):
            desc += "; below the minimum score (explored)"
        markups.append(
            {
                "type": "ROI",
                "name": name,
                "coordinateSystem": system,
                "coordinateUnits": "mm",
                "locked": locked,
                "fixedNumberOfControlPoints": False,
                "labelFormat": "%N-%d",
                "lastUsedControlPointNumber": 1,
                "roiType": "Box",
                "center": center,
                "orientation": orientation,
                "size": size,
                "insideOut": False,
                "controlPoints": [
                    {
                        "id": "1",
                        "label": name,
                        "description": desc,
                        "associatedNodeID": "",
                        "position": center,
                        "orientation": list(orientation),
                        "selected": True,
                        "locked": locked,
                        "visibility": True,
                        "positionStatus": "defined",
                    }
                ],
                "measurements": [],
                "display": _display(_box_colour(label, seen), handlesInteractive=False, fillOpacity=0.0, outlineOpacity=1.0),
            }
        )
    return {"@schema": MARKUPS_SCHEMA, "markups": markups}


def localization_status(answer: Mapping[str, Any], min_score: float) -> str:
    """One line for the module's status label from a localisation answer: the server's
    "no finding" message when there is one, and how many boxes are findings at or above
    ``min_score`` and how many are explored candidates below it (``top_k``)."""
    boxes = answer.get("boxes") or []
    below = sum(1 for b in boxes if b.get("below_min_score"))
    above = len(boxes) - below
    explored = f"{below} candidate box(es) below it, best first" if below else ""
    if answer.get("message"):
        return answer["message"] + (f"; showing {explored}" if explored else "")
    return f"{above} finding box(es) at probability >= {min_score:.2f}" + (f"; also {explored}" if explored else "")


def scanpath_markups(gaze: Mapping[str, Any], ijk_to_ras: Optional[Sequence[Sequence[float]]] = None, reader: Optional[str] = None) -> Dict[str, Any]:
    """Canonical GazeRad gaze JSON -> markups JSON: per reader a ``Curve`` (linear, the
    scanpath in time order) and a ``Fiducial`` list (one point per fixation, labelled with
    its order and duration).

    Without ``ijk_to_ras`` positions are LPS mm of an image with 1 mm pixels at origin 0.
    """
    if gaze.get("format") != "gazerad-gaze" or not isinstance(gaze.get("records"), list):
        raise ValueError("not a GazeRad gaze JSON (expected format 'gazerad-gaze' with 'records')")
    m = np.asarray(ijk_to_ras if ijk_to_ras is not None else np.diag([-1.0, -1.0, 1.0, 1.0]), dtype=float)
    out = []
    for rec in gaze["records"]:
        rid = str(rec.get("reader_id") or "reader")
        if reader is not None and rid != reader:
            continue
        fix = np.asarray(rec.get("fixations") or [], dtype=float).reshape(-1, 4)
        pts = [pixel_to_ras(x, y, m) for x, y in fix[:, :2]]
        if ijk_to_ras is None:  # LPS of a 1 mm grid at 0
            pts = [[-p[0], -p[1], p[2]] for p in pts]
        system = "RAS" if ijk_to_ras is not None else "LPS"
        cps = [
            {
                "id": str(i + 1),
                "label": f"{i + 1}",
                "description": f"fixation {i + 1}: {1000 * (e - s):.0f} ms at {s:.2f} s",
                "associatedNodeID": "",
                "position": p,
                "orientation": list(_IDENTITY3),
                "selected": True,
                "locked": True,
                "visibility": True,
                "positionStatus": "defined",
            }
            for i, (p, (s, e)) in enumerate(zip(pts, fix[:, 2:4]))
        ]
        common = {
            "coordinateSystem": system,
            "coordinateUnits": "mm",
            "locked": True,
            "fixedNumberOfControlPoints": False,
            "labelFormat": "%N-%d",
            "lastUsedControlPointNumber": len(cps),
            "measurements": [],
        }
        out.append(
            {
                "type": "Curve",
                "name": f"Scanpath {rid}",
                **common,
                "controlPoints": [dict(c, label="") for c in cps],
                "display": _display((0.3, 1.0, 0.4), propertiesLabelVisibility=False, glyphScale=0.6, lineThickness=0.2),
            }
        )
        out.append(
            {
                "type": "Fiducial",
                "name": f"Fixations {rid}",
                **common,
                "controlPoints": cps,
                "display": _display((1.0, 0.9, 0.2), propertiesLabelVisibility=False, pointLabelsVisibility=True, glyphScale=1.5, textScale=2.0),
            }
        )
    if not out:
        raise ValueError(f"the gaze holds no recording{' by ' + reader if reader else ''}")
    return {"@schema": MARKUPS_SCHEMA, "markups": out}


# ---------------------------------------------------------------------------- tables
def score_table(result: Mapping[str, Any]) -> Dict[str, Any]:
    """Localisation or classification JSON -> ``{"columns": [(name, "string"|"double")], "rows": [...]}``.

    One row per finding class (probability), then one per box (score, CAM score, centre and
    size in pixels). Columns: Finding, Kind, Score, Probability, x, y, w, h.
    """
    cols = [
        ("Finding", "string"),
        ("Kind", "string"),
        ("Score", "double"),
        ("Probability", "double"),
        ("x", "double"),
        ("y", "double"),
        ("w", "double"),
        ("h", "double"),
    ]
    nan = float("nan")
    rows: List[List[Any]] = []
    for p in sorted(result.get("prediction") or [], key=lambda p: -float(p["score"])):
        rows.append([str(p["label"]), "class", float(p["score"]), float(p["score"]), nan, nan, nan, nan])
    for b in result.get("boxes") or []:
        rows.append([str(b["label"]), "box", float(b["score"]), float(b.get("probability", nan)), float(b["x"]), float(b["y"]), float(b["w"]), float(b["h"])])
    return {"columns": cols, "rows": rows}


# ---------------------------------------------------------------------------- training
@dataclass
class TrainingProgress:
    state: str  # NONE, SUBMITTED, RUNNING, DONE, ERROR, STOPPED
    fraction: Optional[float]  # 0..1 when the log tells, else None
    message: str  # the last log line (or the state in words)
    task_id: Optional[str] = None

    @property
    def finished(self) -> bool:
        return self.state in ("DONE", "ERROR", "STOPPED", "NONE")


_EPOCH = re.compile(r"epoch\s+(\d+)\s*/\s*(\d+)", re.I)
_PERCENT = re.compile(r"(\d{1,3})%\|")
_COUNT = re.compile(r"\|\s*(\d+)/(\d+)\s*\[")  # tqdm: "| 8/1500 [00:01<03:11"


def training_progress(status: Optional[Mapping[str, Any]]) -> TrainingProgress:
    """``GET /train/`` -> :class:`TrainingProgress`: the fraction comes from the last
    ``epoch i/n`` (refined by a tqdm ``NN%|`` on the same line) or a training progress bar
    (``train...: NN%| k/n [``) in the log lines; data-loading bars are skipped; DONE is 1."""
    if not status:
        return TrainingProgress("NONE", None, "no training has run on this server yet")
    state = str(status.get("status", "UNKNOWN")).upper()
    lines = [str(x).strip() for x in (status.get("details") or []) if str(x).strip()]
    frac = None
    for line in reversed(lines):
        ep = _EPOCH.findall(line)
        if ep:
            i, n = (int(v) for v in ep[-1])
            if n > 0:
                pc = _PERCENT.findall(line)
                within = int(pc[-1]) / 100.0 if pc else 1.0
                frac = min(1.0, max(0.0, (i - 1 + within) / n))
            break
        desc = line.split(":")[0].strip().lower()
        if not (desc.startswith("train") or "epoch" in desc):
            continue  # other progress bars (loading images, data preparation) are not training
        cnt = _COUNT.findall(line)
        if cnt and int(cnt[-1][1]) > 0:
            frac = min(1.0, int(cnt[-1][0]) / int(cnt[-1][1]))
            break
        pc = _PERCENT.findall(line)
        if pc:
            frac = min(1.0, int(pc[-1]) / 100.0)
            break
    if state == "DONE":
        frac = 1.0
    last = lines[-1] if lines else state.lower()
    last = last.split("\r")[-1][-200:]
    return TrainingProgress(state, frac, last, status.get("id"))
