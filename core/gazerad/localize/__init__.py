"""Weakly supervised localisation: batched Grad-CAM / Grad-CAM++, boxes, T(IoU) accuracy."""

from .boxes import Box, blur_maps, box_mask, centred_box, component_boxes, iou, map_to_boxes, maps_to_rois, smoothed
from .cam import BatchGradCAM, BatchGradCAMpp, make_cam, normalize_maps
from .metrics import DEFAULT_THRESHOLDS, localization_accuracy

__all__ = [
    "BatchGradCAM",
    "BatchGradCAMpp",
    "Box",
    "DEFAULT_THRESHOLDS",
    "blur_maps",
    "box_mask",
    "centred_box",
    "component_boxes",
    "iou",
    "localization_accuracy",
    "make_cam",
    "map_to_boxes",
    "maps_to_rois",
    "normalize_maps",
    "smoothed",
]
