"""The one coordinate convention used by every GazeRad module.

**Points** (gaze fixations, peaks, box corners) are continuous ``(x, y)`` in pixels of the
*original* image: ``x`` runs along columns to the right, ``y`` along rows downwards, and the
origin ``(0, 0)`` is the top-left *corner* of the top-left pixel. Pixel ``(row r, col c)``
covers ``[c, c + 1) x [r, r + 1)``; its centre is ``(c + 0.5, r + 0.5)``. A point lies in an
image of ``height x width`` pixels when ``0 <= x < width`` and ``0 <= y < height``.

**Arrays** are indexed ``image[row, col]`` (``image[..., y, x]`` for channel-first tensors),
so the point ``(x, y)`` falls in ``image[floor(y), floor(x)]``.

**Boxes** are ``[x, y, w, h]`` as in NIH ``BBox_List_2017.csv`` (top-left corner, width,
height) or ``[x0, y0, x1, y1]`` corners; a tight box around mask pixels in columns
``c0..c1`` and rows ``r0..r1`` is ``[c0, r0, c1 - c0 + 1, r1 - r0 + 1]``.

This is the COCO/NIH convention. Loaders never transpose or flip: the first array axis of a
loaded image is always the image's rows as displayed.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "points_in_image",
    "point_to_index",
    "pixel_centres",
    "mask_to_box",
    "xywh_to_xyxy",
]


def points_in_image(xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean mask of points inside the image.

    Args:
        xy: ``(N, 2)`` array of ``(x, y)`` points.
        height, width: image size in pixels.

    Returns:
        ``(N,)`` bool array, ``False`` for NaN points.
    """
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    x, y = xy[:, 0], xy[:, 1]
    with np.errstate(invalid="ignore"):
        return (x >= 0) & (x < width) & (y >= 0) & (y < height)


def point_to_index(xy: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points ``(x, y)`` -> ``(N, 2)`` integer indices ``(row, col)``."""
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    return np.floor(xy[:, ::-1]).astype(np.int64)


def pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous ``(x, y)`` coordinates of pixel centres, each shaped ``(height, width)``."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return x + 0.5, y + 0.5


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight ``[x, y, w, h]`` box around the true pixels of a 2-D mask, ``None`` if empty."""
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def xywh_to_xyxy(box: np.ndarray) -> np.ndarray:
    """``[..., 4]`` boxes ``[x, y, w, h]`` -> ``[x0, y0, x1, y1]``."""
    b = np.asarray(box, dtype=float)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:4]], axis=-1)
