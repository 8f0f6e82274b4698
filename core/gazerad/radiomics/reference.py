"""The reference backend: pyradiomics, 2-D (``force2D``, ``shape2D``), one process per core.

pyradiomics is the ground truth the torch backend is tested against. Each image goes in
as a ``(1, H, W)`` slice with ``force2D=True, force2Ddimension=0``: 4 in-plane angles
(GLCM, GLRLM) and the 8-neighbourhood (GLSZM, GLDM, NGTDM). Settings: fixed
bin width, ``distances = [1]``, no resampling or normalisation, ``label = 1``; the 3-D
``shape`` class is never enabled (it takes seconds on a 2-D image).
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Sequence

import numpy as np

from .names import FEATURE_CLASSES, feature_names
from .validate import check_pair

__all__ = ["pyradiomics_features", "extract_pyradiomics"]

_EXTRACTORS: dict = {}


def _extractor(bin_width: float, classes: tuple[str, ...]):
    key = (float(bin_width), classes)
    if key not in _EXTRACTORS:
        import radiomics
        from radiomics import featureextractor

        radiomics.setVerbosity(logging.ERROR)
        ex = featureextractor.RadiomicsFeatureExtractor(binWidth=float(bin_width), force2D=True, force2Ddimension=0, additionalInfo=False)
        ex.disableAllFeatures()
        for c in classes:
            ex.enableFeatureClassByName(c)
        _EXTRACTORS[key] = ex
    return _EXTRACTORS[key]


def pyradiomics_features(
    image: np.ndarray,
    mask: np.ndarray,
    bin_width: float = 25.0,
    classes: Sequence[str] = FEATURE_CLASSES,
    spacing: tuple[float, float] = (1.0, 1.0),
    name: str = "<sample>",
) -> np.ndarray:
    """pyradiomics features of one 2-D image/mask pair, in :func:`feature_names` order.

    Args:
        image: ``(H, W)`` array.
        mask: ``(H, W)`` binary array (the ROI).
        bin_width: fixed bin width for the texture classes and first-order entropy/uniformity.
        classes: feature classes (subset of :data:`FEATURE_CLASSES`).
        spacing: pixel spacing ``(row, col)`` in mm.
        name: how errors name this sample.

    Returns:
        ``(F,)`` float64 vector.
    """
    import SimpleITK as sitk

    classes = tuple(classes)
    img, m = check_pair(image, mask, name)
    # pyradiomics refuses a mask without background ("no labels found"); a 1-pixel frame
    # outside the ROI changes no feature (every class reads ROI pixels only)
    img = np.pad(img, 1, mode="edge")
    m = np.pad(m, 1)
    # a (1, H, W) slice: with force2Ddimension=0 pyradiomics then uses the 4 in-plane angles
    # and the 8-neighbourhood. (A 2-D SimpleITK image with the same settings silently keeps
    # only the left/right neighbours: 1-D texture.)
    si = sitk.GetImageFromArray(img[None])
    sm = sitk.GetImageFromArray(m[None].astype(np.uint8))
    si.SetSpacing((float(spacing[1]), float(spacing[0]), 1.0))  # SimpleITK is (x, y, z)
    sm.SetSpacing((float(spacing[1]), float(spacing[0]), 1.0))
    result = _extractor(bin_width, classes).execute(si, sm)
    return np.array([float(result[f"original_{n}"]) for n in feature_names(classes)], dtype=np.float64)


def _one(args: tuple) -> np.ndarray:
    return pyradiomics_features(*args)


def extract_pyradiomics(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    bin_width: float = 25.0,
    classes: Sequence[str] = FEATURE_CLASSES,
    spacing: tuple[float, float] = (1.0, 1.0),
    n_workers: int = 1,
    names: Sequence[str] | None = None,
    pool: Executor | None = None,
) -> np.ndarray:
    """pyradiomics features for a list of pairs, optionally over a process pool.

    Args:
        n_workers: processes of a pool made for this call (1: in this process).
        pool: an executor to reuse across calls instead (its workers keep their extractors
            warm); ``n_workers`` then only sets the map's chunk size.

    Returns:
        ``(N, F)`` float64 matrix, rows in input order.
    """
    if len(images) != len(masks):
        raise ValueError(f"{len(images)} images but {len(masks)} masks")
    names = list(names) if names is not None else [f"sample {i}" for i in range(len(images))]
    jobs = [(np.asarray(im), np.asarray(m), bin_width, tuple(classes), spacing, nm) for im, m, nm in zip(images, masks, names)]
    if pool is not None:
        rows = list(pool.map(_one, jobs, chunksize=max(1, len(jobs) // (4 * max(1, n_workers)))))
    elif n_workers <= 1 or len(jobs) <= 1:
        rows = [_one(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            rows = list(pool.map(_one, jobs, chunksize=max(1, len(jobs) // (4 * n_workers))))
    if not rows:
        return np.zeros((0, len(feature_names(tuple(classes)))))
    return np.stack(rows)
