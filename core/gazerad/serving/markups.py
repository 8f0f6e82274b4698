"""3D Slicer markups JSON for localisation boxes (markups schema v1.0.3, ROI nodes).

Positions are LPS millimetres, as ITK and MONAI Label write them; Slicer converts them to
its RAS world on load. The orientation ``diag(-1, -1, 1)`` written in LPS is the identity in
RAS (axis-aligned boxes), which is what Slicer itself writes for an axis-aligned ROI.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["MARKUPS_SCHEMA", "box_description", "roi_markups", "roi_node"]

MARKUPS_SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
_LPS_IDENTITY = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]


def box_description(box: Mapping[str, Any]) -> str:
    """A served box in words, for its ROI's control point: label, score, CAM score,
    probability and its class's validation hit rate where the answer has them (the Slicer
    module's ``GazeRadLib.conversions`` writes the same)."""
    desc = f"{box['label']}; score {float(box['score']):.3f}"
    if box.get("cam_score") is not None:
        desc += f"; CAM {float(box['cam_score']):.3f}"
    if box.get("probability") is not None:
        desc += f"; probability {float(box['probability']):.3f}"
    if box.get("validation_t_iou_0.3") is not None:
        n = box.get("validation_boxes")
        desc += f"; validation hit rate {100 * float(box['validation_t_iou_0.3']):.0f}%" + (f" of {int(n)} boxes" if n else "") + " at IoU 0.3"
    if box.get("below_min_score"):
        desc += "; below the minimum score (explored)"
    return desc


def roi_node(
    label: str, score: float, center_mm: Sequence[float], size_mm: Sequence[float], thickness_mm: float = 1.0, description: str | None = None
) -> dict[str, Any]:
    """One ROI markup: ``center_mm`` / ``size_mm`` are the in-plane (x, y) LPS centre and size;
    ``description`` (default: label and score) goes on its control point."""
    center = [float(center_mm[0]), float(center_mm[1]), 0.0]
    name = f"{label} {score:.2f}"
    return {
        "type": "ROI",
        "name": name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": True,
        "fixedNumberOfControlPoints": False,
        "labelFormat": "%N-%d",
        "lastUsedControlPointNumber": 1,
        "roiType": "Box",
        "center": center,
        "orientation": list(_LPS_IDENTITY),
        "size": [float(size_mm[0]), float(size_mm[1]), float(thickness_mm)],
        "insideOut": False,
        "controlPoints": [
            {
                "id": "1",
                "label": name,
                "description": description or f"{label}; score {score:.3f}",
                "associatedNodeID": "",
                "position": center,
                "orientation": list(_LPS_IDENTITY),
                "selected": True,
                "locked": True,
                "visibility": True,
                "positionStatus": "defined",
            }
        ],
        "measurements": [],
        "display": {"visibility": True, "opacity": 1.0, "propertiesLabelVisibility": True, "glyphScale": 1.0, "textScale": 3.0},
    }


def roi_markups(boxes: Sequence[Mapping[str, Any]], geometry: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A markups file with one ROI per box (dicts with ``label``, ``score``, ``center_mm``, ``size_mm``)."""
    nodes = [roi_node(b["label"], float(b["score"]), b["center_mm"], b["size_mm"], description=box_description(b)) for b in boxes]
    return {"@schema": MARKUPS_SCHEMA, "markups": nodes}
