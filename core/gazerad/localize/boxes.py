"""From saliency maps to boxes and ROI masks (KACL's recipe), and box overlap.

Recipe (per map): normalise to ``[0, 1]``, blur with a ``k x k`` mean filter (5 x 5),
threshold (0.5), connected components (8-connectivity), one box per component; each box
is scored by the mean saliency *inside the box* and the best box becomes the ROI. With a
``size`` (a class's typical box, e.g. the median of its validation boxes), each component
gives a box of that size centred on its peak instead of its extent: a small finding (a
nodule) under a broad saliency blob is boxed at its own scale.
Boxes are ``(x, y, w, h)`` in pixels, ``x`` along columns (:mod:`gazerad.coords`), the
NIH ``BBox_List_2017.csv`` convention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = ["Box", "blur_maps", "map_to_boxes", "smoothed", "component_boxes", "maps_to_rois", "box_mask", "iou", "centred_box"]


@dataclass(frozen=True)
class Box:
    """An axis-aligned box ``(x, y, w, h)`` in pixels with a score and a label."""

    x: float
    y: float
    w: float
    h: float
    score: float = 1.0
    label: str = ""

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def scaled(self, sx: float, sy: float) -> "Box":
        """The box on a grid scaled by ``sx`` (columns) and ``sy`` (rows)."""
        return Box(self.x * sx, self.y * sy, self.w * sx, self.h * sy, self.score, self.label)


def blur_maps(maps: torch.Tensor, kernel: int = 5) -> torch.Tensor:
    """Mean-filter ``(B, H, W)`` maps with a ``kernel x kernel`` window (edge-replicated)."""
    if kernel <= 1:
        return maps
    pad = kernel // 2
    x = F.pad(maps[:, None].float(), (pad, kernel - 1 - pad, pad, kernel - 1 - pad), mode="replicate")
    return F.avg_pool2d(x, kernel, stride=1)[:, 0]


def _norm(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m, dtype=np.float64)


def map_to_boxes(
    saliency: np.ndarray | torch.Tensor,
    threshold: float = 0.5,
    blur: int = 5,
    label: str = "",
    min_pixels: int = 1,
    size: tuple[float, float] | None = None,
) -> list[Box]:
    """Boxes of the thresholded regions of one ``(H, W)`` map, best (mean saliency inside) first.

    Args:
        saliency: ``(H, W)`` map (any range; normalised here).
        threshold: on the normalised, blurred map.
        blur: mean-filter size (1 = none).
        label: label given to every box.
        min_pixels: drop components smaller than this.
        size: ``(w, h)`` in map pixels: each component's box is this size, centred on the
            component's peak (its maximum of the blurred map) and moved inside the map;
            ``None``: the component's extent.
    """
    return component_boxes(smoothed(saliency, blur), threshold, label, min_pixels, (size,))[0]


def smoothed(saliency: np.ndarray | torch.Tensor, blur: int = 5) -> np.ndarray:
    """One ``(H, W)`` map checked, blurred (:func:`blur_maps`) and normalised to ``[0, 1]``
    (float64): what :func:`component_boxes` thresholds (shared by every threshold and size)."""
    m = torch.as_tensor(saliency, dtype=torch.float32)
    if m.ndim != 2:
        raise ValueError(f"saliency map must be (H, W), got {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError("saliency map has NaN or infinite values")
    return _norm(blur_maps(m[None], blur)[0].cpu().numpy().astype(np.float64))


def component_boxes(
    s: np.ndarray, threshold: float, label: str = "", min_pixels: int = 1, sizes: Sequence[tuple[float, float] | None] = (None,)
) -> list[list[Box]]:
    """The boxes of the components of ``s >= threshold`` (``s`` from :func:`smoothed`), once
    per entry of ``sizes`` (``None``: extents; ``(w, h)``: peak-centred boxes, see
    :func:`map_to_boxes`), each list best first; one labelling serves every size."""
    for size in sizes:
        if size is not None and not (np.all(np.isfinite(size)) and min(size) > 0):
            raise ValueError(f"box size must be two positive numbers, got {size}")
    lab, _ = ndimage.label(s >= threshold, structure=np.ones((3, 3), bool))
    hh, ww = s.shape
    out: list[list[Box]] = [[] for _ in sizes]
    for i, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        own = lab[sl] == i
        if int(own.sum()) < min_pixels:
            continue
        ys, xs = sl
        peak = None
        for boxes, size in zip(out, sizes):
            if size is None:
                x, y, w, h = float(xs.start), float(ys.start), float(xs.stop - xs.start), float(ys.stop - ys.start)
            else:
                if peak is None:
                    peak = np.unravel_index(np.argmax(np.where(own, s[sl], -1.0)), own.shape)
                w, h = min(float(size[0]), float(ww)), min(float(size[1]), float(hh))
                x = float(np.clip(xs.start + peak[1] + 0.5 - w / 2, 0.0, ww - w))
                y = float(np.clip(ys.start + peak[0] + 0.5 - h / 2, 0.0, hh - h))
            inside = s[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))]
            boxes.append(Box(x, y, w, h, float(inside.mean()), label))
    return [sorted(b, key=lambda b: -b.score) for b in out]


def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool mask of a box clipped to the image; at least 2 x 2 pixels."""
    h, w = shape
    x0 = int(np.clip(np.floor(box.x), 0, w - 2))
    y0 = int(np.clip(np.floor(box.y), 0, h - 2))
    x1 = int(np.clip(np.ceil(box.x + box.w), x0 + 2, w))
    y1 = int(np.clip(np.ceil(box.y + box.h), y0 + 2, h))
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def maps_to_rois(maps: torch.Tensor, threshold: float = 0.5, blur: int = 5) -> tuple[torch.Tensor, list[Box]]:
    """ROI mask of each map of a ``(B, H, W)`` batch (or the CAMs' ``(B, 1, H, W)``): the
    best box (whole image if none).

    Returns:
        ``(B, H, W)`` bool masks on the maps' device and the ``B`` chosen boxes.
    """
    if maps.ndim == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.ndim != 3:
        raise ValueError(f"maps must be a (B, H, W) or (B, 1, H, W) batch, got shape {tuple(maps.shape)}")
    maps = maps.detach()
    b, h, w = maps.shape
    masks = np.zeros((b, h, w), bool)
    chosen = []
    for i in range(b):
        boxes = map_to_boxes(maps[i], threshold, blur)
        box = boxes[0] if boxes else Box(0.0, 0.0, float(w), float(h), 0.0)
        masks[i] = box_mask(box, (h, w))
        chosen.append(box)
    return torch.from_numpy(masks).to(maps.device), chosen


def iou(a: Box | tuple, b: Box | tuple) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax, ay, aw, ah = (a.x, a.y, a.w, a.h) if isinstance(a, Box) else a[:4]
    bx, by, bw, bh = (b.x, b.y, b.w, b.h) if isinstance(b, Box) else b[:4]
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return float(inter / union) if union > 0 else 0.0


def centred_box(shape: tuple[int, int], fraction: float = 0.5, label: str = "") -> Box:
    """The baseline box: centred, ``fraction`` of each side."""
    h, w = shape
    return Box(w * (1 - fraction) / 2, h * (1 - fraction) / 2, w * fraction, h * fraction, 0.0, label)
