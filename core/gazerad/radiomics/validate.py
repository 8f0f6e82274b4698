"""Input checks shared by both radiomics backends.

Every problem is raised as :class:`gazerad.errors.InputError` naming the sample, before
any C extension or batched kernel sees the data.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

__all__ = ["check_pair", "roi_ok"]


def roi_ok(mask: np.ndarray) -> bool:
    """True when a mask is one pyradiomics accepts: >= 2 pixels spanning >= 2 rows and >= 2 columns."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return rows.size >= 2 and cols.size >= 2


def check_pair(image: np.ndarray, mask: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one image/mask pair; return ``(float64 image, bool mask)``.

    Raises:
        InputError: non-2-D arrays, mismatched sizes, a non-binary or empty mask, a ROI
            narrower than 2 x 2 pixels (pyradiomics refuses those), non-finite values in the ROI.
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2:
        raise InputError(name, f"image must be 2-D (H, W), got shape {image.shape}")
    if mask.shape != image.shape:
        raise InputError(name, f"mask shape {mask.shape} does not match image shape {image.shape}")
    if mask.dtype != bool:
        values = np.unique(mask)
        if not np.all(np.isin(values, (0, 1))):
            raise InputError(name, f"mask must be binary (0/1), found values {values[:6].tolist()}")
        mask = mask.astype(bool)
    if not mask.any():
        raise InputError(name, "mask is empty (no ROI pixel)")
    if not roi_ok(mask):
        raise InputError(name, "ROI must span at least 2 rows and 2 columns (a single pixel or a line has no 2-D texture)")
    img = image.astype(np.float64, copy=False)
    if not np.isfinite(img[mask]).all():
        raise InputError(name, "image has NaN or infinite values inside the ROI")
    return img, mask
