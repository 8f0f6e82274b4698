"""Localisation accuracy at T(IoU), the ChestX-ray14 protocol KACL reports.

For every ground-truth box, the best IoU over the predicted boxes *of the same label* on
the same image; a box is localised at ``T`` when that IoU >= ``T``. Accuracy is the
fraction of ground-truth boxes localised, per class and over all boxes.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .boxes import Box, iou

__all__ = ["DEFAULT_THRESHOLDS", "localization_accuracy"]

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)

BoxList = Sequence[tuple[str, tuple[float, float, float, float]]]


def localization_accuracy(
    predicted: Mapping[str, Sequence[Box]],
    truth: Mapping[str, BoxList],
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict:
    """T(IoU) accuracy.

    Args:
        predicted: image id -> predicted boxes (their ``label`` must match the truth's).
        truth: image id -> ``[(label, (x, y, w, h)), ...]`` (as read by
            :func:`gazerad.data.nih.read_bbox_list`).
        thresholds: IoU thresholds.

    Returns:
        ``{"overall": {T: acc}, "per_class": {label: {T: acc}}, "n_boxes": {label: n},
        "mean_best_iou": float, "mean_best_iou_per_class": {label: float}}``
    """
    best: dict[str, list[float]] = {}
    for image, gts in truth.items():
        preds = predicted.get(image, [])
        for label, box in gts:
            cand = [iou(p, box) for p in preds if p.label == label]
            best.setdefault(label, []).append(max(cand) if cand else 0.0)
    allv = np.array([v for vs in best.values() for v in vs], dtype=np.float64)
    out = {
        "overall": {float(t): float((allv >= t).mean()) if allv.size else float("nan") for t in thresholds},
        "per_class": {lab: {float(t): float((np.array(v) >= t).mean()) for t in thresholds} for lab, v in sorted(best.items())},
        "n_boxes": {lab: len(v) for lab, v in sorted(best.items())},
        "mean_best_iou": float(allv.mean()) if allv.size else float("nan"),
        "mean_best_iou_per_class": {lab: float(np.mean(v)) for lab, v in sorted(best.items())},
    }
    return out
