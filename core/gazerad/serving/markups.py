"""3D Slicer markups JSON for localisation boxes (markups schema v1.0.3, ROI nodes).

Positions are LPS millimetres, as ITK and MONAI Label write them; Slicer converts them to
its RAS world on load. The orientation ``diag(-1, -1, 1)`` written in LPS is the identity in
RAS (axis-aligned boxes), which is what Slicer itself writes for an axis-aligned ROI.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["MARKUPS_SCHEMA", "roi_markups", "roi_node"]

MARKUPS_SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
_LPS_IDENTITY = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0]


def roi_node(label: str, score: float, center_mm: Sequence[float], size_mm: Sequence[float], thickness_mm: float = 1.0) -> dict[str, Any]:
    """One ROI markup: ``center_mm`` / ``size_mm`` are the in-plane (x, y) LPS centre and size."""
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
                "description": f"{label}; score {score:.3f}",
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
    return {"@schema": MARKUPS_SCHEMA, "markups": [roi_node(b["label"], float(b["score"]), b["center_mm"], b["size_mm"]) for b in boxes]}
