"""Gaze heatmaps: fixations rendered as a duration-weighted sum of Gaussians.

A heatmap is a 2-D density on an image grid: one isotropic Gaussian per fixation,
weighted by the fixation's duration, normalised to sum 1 (METHODS, "Heatmap").
Coordinates follow :mod:`gazerad.coords`: a fixation ``(x, y)`` is in original-image
pixels, origin at the top-left *corner*; pixel ``(row r, col c)`` has its centre at
``(c + 0.5, r + 0.5)``, and the returned array is indexed ``heat[row, col]``.

Kernel width. REFLACX draws each fixation with ``sigma = 1`` degree of visual angle
(``pixels_per_degree`` of the record); EGD-CXR's script uses 150 px on its 1920 x 1080
screen. Pass ``sigma`` (pixels of the original image) to fix it directly, or
``sigma_deg`` with ``pixels_per_degree`` (the record's own, by default). With neither a
``sigma`` nor a pixels-per-degree figure, a :class:`ValueError` says so, unless
``sigma_frac`` (a fraction of the image's longer side, *our* fallback) is given.

Rendering is vectorised and separable: with ``Gy`` ``(N, H)`` and ``Gx`` ``(N, W)`` the
per-fixation Gaussian factors along rows and columns and ``w`` the weights,
``heat = (Gy * w[:, None]).T @ Gx``.

Two sampling modes (our addition):

- ``"centre"`` (default): the Gaussian is evaluated at pixel centres.
- ``"area"``: the Gaussian is averaged over each pixel (exact, via the normal CDF). On a
  coarse grid (``out_shape`` of 32 x 32, 8 x 9) this equals rendering at full resolution
  and area-resizing (``INTER_AREA``) to the coarse grid, without the full-size render,
  and it never loses a fixation whose kernel is narrower than a pixel.

Canvas rendering (our addition, for the ``mcgip`` preset of the similarity schemes):
:func:`canvas_heatmap` draws the full-size map the way McGIP's code does, on a pixel canvas
(the image's own or an ``N x N`` one) with each fixation snapped to its pixel, optionally
each marked pixel counted once and each kernel cut to a window; :func:`resize_area` and
:func:`resize_bilinear` (OpenCV's ``INTER_AREA`` and ``INTER_LINEAR``) take it to a coarse
grid.

The MONAI transforms :class:`GazeHeatmap` and :class:`GazeHeatmapd` (record -> ``(1, h, w)``
heatmap) are defined in :mod:`gazerad.gaze.heatmap_transforms` and importable from here;
this module itself does not import MONAI.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from scipy.special import ndtr

from gazerad.gaze.record import GazeRecord
from gazerad.io.atomic import atomic_path

# the MONAI transforms live in gazerad.gaze.heatmap_transforms (importing MONAI takes seconds,
# which the similarity schemes, the relation matrix and their worker processes do not need)
_TRANSFORMS = ("GazeHeatmap", "GazeHeatmapd")

__all__ = [
    "resolve_sigma",
    "fixation_weights",
    "gaze_heatmap",
    "gaze_heatmaps",
    "record_shape",
    "resize_area",
    "resize_bilinear",
    "canvas_pixels",
    "canvas_heatmap",
    "HeatmapOptions",
    "save_heatmap_overlay",
    *_TRANSFORMS,
]

_SQRT_2PI = float(np.sqrt(2.0 * np.pi))


def __getattr__(name: str) -> Any:
    if name in _TRANSFORMS:
        return getattr(importlib.import_module("gazerad.gaze.heatmap_transforms"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class HeatmapOptions(TypedDict, total=False):
    """Keyword options of :func:`gaze_heatmaps` after ``records`` (all optional, same defaults),
    as :class:`~gazerad.gaze.heatmap_transforms.GazeHeatmap` takes them."""

    shape: tuple[int, int] | None
    out_shape: tuple[int, int] | None
    sigma: float | None
    sigma_deg: float | None
    pixels_per_degree: float | None
    weight: str
    normalise: bool
    mode: str
    sigma_frac: float | None


def resolve_sigma(
    sigma: float | None = None,
    sigma_deg: float | None = 1.0,
    pixels_per_degree: float | None = None,
    shape: tuple[int, int] | None = None,
    sigma_frac: float | None = None,
) -> float:
    """Kernel width in pixels of the original image.

    Priority: ``sigma`` (px) if given; else ``sigma_deg * pixels_per_degree``; else
    ``sigma_frac * max(shape)`` (our fallback, only when ``sigma_frac`` is given).

    Raises:
        ValueError: when none of these can be formed, or the result is not positive.
    """
    if sigma is not None:
        s = float(sigma)
    elif sigma_deg is not None and pixels_per_degree is not None:
        s = float(sigma_deg) * float(pixels_per_degree)
    elif sigma_frac is not None and shape is not None:
        s = float(sigma_frac) * float(max(shape))
    else:
        raise ValueError(
            "heatmap kernel width unknown: pass sigma (pixels) or sigma_deg with pixels_per_degree "
            "(REFLACX uses sigma_deg=1 with its angular_resolution_*_pixels_per_degree); the record "
            "has no pixels_per_degree"
        )
    if not np.isfinite(s) or s <= 0:
        raise ValueError(f"heatmap sigma must be a positive number of pixels, got {s}")
    return s


def fixation_weights(fixations: np.ndarray, weight: str = "duration") -> np.ndarray:
    """Per-fixation weights: durations (``t_end - t_start``) or ones (``"count"``).

    ``(N, 2)`` input (positions only) always gets count weights. When every duration is
    zero (formats without timestamps, e.g. McGIP's sample lists), duration weighting falls
    back to counts (our choice) so the heatmap is not empty.
    """
    f = np.asarray(fixations, dtype=np.float64)
    n = len(f)
    if weight not in ("duration", "count"):
        raise ValueError(f"weight must be 'duration' or 'count', got {weight!r}")
    if weight == "count" or f.ndim != 2 or f.shape[1] < 4:
        return np.ones(n)
    w = np.clip(f[:, 3] - f[:, 2], 0.0, None)
    if n and not w.sum() > 0:
        return np.ones(n)
    return w


def _axis_factors(pos: np.ndarray, n: int, sigma: float, mode: str) -> np.ndarray:
    """``(K, n)`` unit-amplitude Gaussian factors of ``K`` positions on a 1-px grid of ``n`` cells."""
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 1)
    if mode == "centre":
        d = (np.arange(n, dtype=np.float64) + 0.5 - pos) / sigma
        return np.exp(-0.5 * d * d)
    if mode == "area":
        cdf = ndtr((np.arange(n + 1, dtype=np.float64) - pos) / sigma)
        return np.diff(cdf, axis=1) * (_SQRT_2PI * sigma)
    raise ValueError(f"mode must be 'centre' or 'area', got {mode!r}")


def _render(
    xy: np.ndarray,
    w: np.ndarray,
    out_shape: tuple[int, int],
    sigma_y: float,
    sigma_x: float,
    mode: str,
    normalise: bool,
) -> np.ndarray:
    """Render on the output grid; ``xy`` already in output pixels, sigmas in output pixels."""
    h, wd = int(out_shape[0]), int(out_shape[1])
    if len(xy) == 0:
        return np.zeros((h, wd), dtype=np.float32)
    gy = _axis_factors(xy[:, 1], h, sigma_y, mode)
    gx = _axis_factors(xy[:, 0], wd, sigma_x, mode)
    heat = (gy * w[:, None]).T @ gx
    if normalise:
        s = heat.sum()
        if s > 0:
            heat /= s
    return heat.astype(np.float32)


def gaze_heatmap(
    fixations: np.ndarray,
    shape: tuple[int, int],
    sigma: float | None = None,
    sigma_deg: float | None = 1.0,
    pixels_per_degree: float | None = None,
    weight: str = "duration",
    normalise: bool = True,
    out_shape: tuple[int, int] | None = None,
    mode: str = "centre",
    sigma_frac: float | None = None,
) -> np.ndarray:
    """Render fixations as a heatmap.

    ``heat[r, c] = sum_k w_k exp(-((c + .5 - x_k)^2 + (r + .5 - y_k)^2) / (2 sigma^2))``,
    divided by its sum when ``normalise`` (an all-zero map, from no fixations, stays zero).
    Kernels are not renormalised at the border: a fixation near the edge loses the part
    of its Gaussian outside the image, as in REFLACX's and most saliency code.

    Args:
        fixations: ``(N, 4)`` ``[x, y, t_start, t_end]`` (or ``(N, 2)`` positions).
        shape: ``(H, W)`` of the image the coordinates refer to.
        sigma: kernel sigma in pixels of that image (overrides ``sigma_deg``).
        sigma_deg: kernel sigma in degrees of visual angle (REFLACX: 1).
        pixels_per_degree: image pixels per degree (needed with ``sigma_deg``).
        weight: ``"duration"`` (default) or ``"count"``.
        normalise: scale to sum 1.
        out_shape: render on this grid instead (coordinates and sigma rescaled per axis).
        mode: ``"centre"`` (sample at pixel centres) or ``"area"`` (pixel averages).
        sigma_frac: fallback sigma as a fraction of ``max(shape)`` (our choice; off by default).

    Returns:
        ``out_shape or shape`` float32 array.
    """
    f = np.asarray(fixations, dtype=np.float64)
    if f.size == 0:
        f = f.reshape(0, 4)
    if f.ndim != 2 or f.shape[1] not in (2, 4):
        raise ValueError(f"fixations must be (N, 4) [x, y, t_start, t_end] or (N, 2), got {f.shape}")
    h, w = int(shape[0]), int(shape[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"shape must be positive (H, W), got {shape}")
    s = resolve_sigma(sigma, sigma_deg, pixels_per_degree, (h, w), sigma_frac)
    oh, ow = (h, w) if out_shape is None else (int(out_shape[0]), int(out_shape[1]))
    fy, fx = oh / h, ow / w
    xy = f[:, :2] * np.array([fx, fy])
    return _render(xy, fixation_weights(f, weight), (oh, ow), s * fy, s * fx, mode, normalise)


def record_shape(record: GazeRecord, fallback: tuple[int, int] | None = None) -> tuple[int, int]:
    """Image ``(H, W)`` of a record: ``record.image_size``, else ``fallback``, else the
    fixations' extent (``ceil(max y)``, ``ceil(max x)``, at least 1; our fallback)."""
    if record.image_size is not None:
        return (int(record.image_size[0]), int(record.image_size[1]))
    if fallback is not None:
        return (int(fallback[0]), int(fallback[1]))
    if len(record.fixations) == 0:
        return (1, 1)
    xy = record.fixations[:, :2]
    return (max(1, int(np.ceil(xy[:, 1].max()))), max(1, int(np.ceil(xy[:, 0].max()))))


def gaze_heatmaps(
    records: Sequence[GazeRecord],
    shape: tuple[int, int] | None = None,
    out_shape: tuple[int, int] | None = None,
    sigma: float | None = None,
    sigma_deg: float | None = 1.0,
    pixels_per_degree: float | None = None,
    weight: str = "duration",
    normalise: bool = True,
    mode: str = "centre",
    sigma_frac: float | None = None,
) -> np.ndarray:
    """Heatmaps of several records, stacked ``(N, h, w)`` float32.

    Args:
        records: gaze records.
        shape: image ``(H, W)`` for records without ``image_size`` (each record's own
            ``image_size`` is used when set; without either, the fixations' extent, see
            :func:`record_shape`).
        out_shape: grid to render on (e.g. ``(32, 32)``), coordinates rescaled per record;
            required when the records' image sizes differ.
        pixels_per_degree: overrides each record's own.
        other arguments: as :func:`gaze_heatmap`.
    """
    shapes = [record_shape(r, shape) for r in records]
    if out_shape is None:
        if len(set(shapes)) > 1:
            raise ValueError("records have different image sizes; pass out_shape to render on one grid")
        out = shapes[0] if shapes else (1, 1) if shape is None else shape
    else:
        out = (int(out_shape[0]), int(out_shape[1]))
    res = np.zeros((len(records), out[0], out[1]), dtype=np.float32)
    for i, (r, shp) in enumerate(zip(records, shapes)):
        ppd = pixels_per_degree if pixels_per_degree is not None else r.pixels_per_degree
        res[i] = gaze_heatmap(r.fixations, shp, sigma, sigma_deg, ppd, weight, normalise, out_shape=out, mode=mode, sigma_frac=sigma_frac)
    return res


def resize_area(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Area-average resize (like OpenCV's ``INTER_AREA``) of ``(..., H, W)`` to ``(..., h, w)``.

    Exact for any ratio: output pixel ``(i, j)`` is the mean of the input over the box
    ``[i H/h, (i+1) H/h) x [j W/w, (j+1) W/w)``, pixels weighted by overlap.
    """
    a = np.asarray(image, dtype=np.float64)
    h_in, w_in = a.shape[-2:]
    ry = _area_matrix(h_in, int(out_shape[0]))
    rx = _area_matrix(w_in, int(out_shape[1]))
    return ry @ a @ rx.T


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` overlap-averaging matrix (rows sum to 1)."""
    edges = np.arange(n_out + 1, dtype=np.float64) * (n_in / n_out)
    lo = np.arange(n_in, dtype=np.float64)
    ov = np.clip(np.minimum(edges[1:, None], lo[None, :] + 1) - np.maximum(edges[:-1, None], lo[None, :]), 0.0, None)
    return ov / (n_in / n_out)


def resize_bilinear(image: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(..., H, W)`` to ``(..., h, w)`` as OpenCV's ``INTER_LINEAR`` does it.

    Output pixel ``j`` samples the input at ``(j + 0.5) W / w - 0.5`` (pixel centres aligned),
    interpolating its two neighbours; positions outside ``[0, W - 1]`` take the edge pixel.
    No antialiasing: shrinking samples the input at ``w`` points (nearly point sampling
    from 800 px to 9). Float result (round it for an 8-bit image).
    """
    a = np.asarray(image, dtype=np.float64)
    h_in, w_in = a.shape[-2:]
    ry = _bilinear_matrix(h_in, int(out_shape[0]))
    rx = _bilinear_matrix(w_in, int(out_shape[1]))
    return ry @ a @ rx.T


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` two-tap interpolation matrix of :func:`resize_bilinear` (rows sum to 1)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(src).astype(np.int64)
    t = src - i0
    t = np.where(i0 < 0, 0.0, t)
    i0 = np.clip(i0, 0, n_in - 1)
    t = np.where(i0 >= n_in - 1, 0.0, t)
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    m[rows, i0] += 1.0 - t
    m[rows, np.minimum(i0 + 1, n_in - 1)] += t
    return m


def canvas_pixels(fixations: np.ndarray, shape: tuple[int, int], canvas: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canvas pixel ``(rows, cols)`` of each fixation inside the image, and which fixations those are.

    A fixation ``(x, y)`` of an ``(H, W)`` image with ``0 <= x < W`` and ``0 <= y < H`` lands in
    canvas pixel ``row = floor(y Hc / H)``, ``col = floor(x Wc / W)`` (``canvas = (Hc, Wc)``,
    default the image's own grid); fixations outside the image are dropped (our choice).

    Returns:
        ``(rows, cols, keep)``: int64 pixel indices and the boolean mask of kept fixations.
    """
    f = np.asarray(fixations, dtype=np.float64)
    if f.size == 0:
        f = f.reshape(0, 2)
    h, w = int(shape[0]), int(shape[1])
    hc, wc = (h, w) if canvas is None else (int(canvas[0]), int(canvas[1]))
    x, y = f[:, 0], f[:, 1]
    keep = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    rows = np.clip(np.floor(y[keep] * hc / h), 0, hc - 1).astype(np.int64)
    cols = np.clip(np.floor(x[keep] * wc / w), 0, wc - 1).astype(np.int64)
    return rows, cols, keep


def canvas_heatmap(
    fixations: np.ndarray,
    shape: tuple[int, int],
    canvas: tuple[int, int] | None = None,
    sigma: float | tuple[float, float] = 1.0,
    window: int | None = None,
    weight: str = "count",
    mark_once: bool = False,
) -> np.ndarray:
    """Full-size heatmap drawn on a pixel canvas, the way McGIP's code draws it.

    Each fixation inside the image is snapped to its canvas pixel ``(r0, c0)``
    (:func:`canvas_pixels`) and adds ``w exp(-((r - r0)^2 / sy^2 + (c - c0)^2 / sx^2) / 2)``
    (a unit-peak Gaussian sampled at pixel centres) to every canvas pixel ``(r, c)``. The sum
    is returned as is (not normalised; an image without fixations inside gives zeros).

    Args:
        fixations: ``(N, 4)`` ``[x, y, t_start, t_end]`` (or ``(N, 2)``) in image pixels.
        shape: image ``(H, W)`` the coordinates refer to.
        canvas: ``(Hc, Wc)`` canvas (default the image's own grid).
        sigma: kernel sigma in *canvas* pixels, one value or ``(sigma_y, sigma_x)``.
        window: cut each kernel to a ``window x window`` square, rows ``r0 - window // 2``
            to ``r0 - window // 2 + window - 1`` (and likewise columns); ``None``: no cut.
        weight: ``"duration"`` or ``"count"`` per fixation (:func:`fixation_weights`).
        mark_once: a canvas pixel holding several fixations counts once (a point canvas
            whose pixels are set, not added); needs ``weight="count"``.

    Returns:
        ``(Hc, Wc)`` float64 map.
    """
    f = np.asarray(fixations, dtype=np.float64)
    if f.size == 0:
        f = f.reshape(0, 4)
    if f.ndim != 2 or f.shape[1] not in (2, 4):
        raise ValueError(f"fixations must be (N, 4) [x, y, t_start, t_end] or (N, 2), got {f.shape}")
    hc, wc = (int(shape[0]), int(shape[1])) if canvas is None else (int(canvas[0]), int(canvas[1]))
    if min(hc, wc, int(shape[0]), int(shape[1])) <= 0:
        raise ValueError(f"shape and canvas must be positive, got {shape} and {canvas}")
    sy, sx = (float(v) for v in np.broadcast_to(np.asarray(sigma, dtype=np.float64), (2,)))
    if not (np.isfinite(sy) and np.isfinite(sx) and sy > 0 and sx > 0):
        raise ValueError(f"canvas sigma must be positive, got {sigma}")
    if mark_once and weight != "count":
        raise ValueError("mark_once counts each marked pixel once; it needs weight='count'")
    if window is not None and int(window) < 1:
        raise ValueError(f"kernel window must be at least 1 pixel, got {window}")
    rows, cols, keep = canvas_pixels(f, shape, (hc, wc))
    w = fixation_weights(f, weight)[keep]
    if mark_once and len(rows):
        flat = np.unique(rows * wc + cols)
        rows, cols, w = flat // wc, flat % wc, np.ones(len(flat))
    if len(rows) == 0:
        return np.zeros((hc, wc))
    gy = _canvas_factors(rows, hc, sy, window)
    gx = _canvas_factors(cols, wc, sx, window)
    return (gy * w[:, None]).T @ gx


def _canvas_factors(centres: np.ndarray, n: int, sigma: float, window: int | None) -> np.ndarray:
    """``(K, n)`` unit-peak Gaussian factors around integer pixel ``centres``, cut to ``window``."""
    d = np.arange(n, dtype=np.int64)[None, :] - centres[:, None]
    g = np.exp(-0.5 * (d / sigma) ** 2)
    if window is not None:
        lo = -(int(window) // 2)
        g = np.where((d >= lo) & (d < lo + int(window)), g, 0.0)
    return g


def save_heatmap_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    path: str | os.PathLike,
    alpha: float = 0.5,
    fixations: np.ndarray | None = None,
    cmap: str = "jet",
    max_side: int = 1024,
) -> Path:
    """Write a PNG of ``heatmap`` over ``image`` (matplotlib Agg, atomic write).

    Args:
        image: ``(H, W)`` greyscale (percentile-windowed for display) or ``(H, W, 3)`` RGB.
        heatmap: any ``(h, w)`` map; stretched over the image (same pixel frame).
        path: PNG path.
        alpha: heatmap opacity.
        fixations: optional ``(N, >=2)`` ``(x, y, ...)`` in image pixels, drawn as circles
            joined in time order (sized by duration when given).
        cmap: matplotlib colour map of the heatmap.
        max_side: longest side of the PNG in pixels (the picture is not upscaled).

    Returns:
        The PNG path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    img = np.asarray(image)
    hm = np.asarray(heatmap, dtype=np.float64)
    if img.ndim not in (2, 3) or hm.ndim != 2:
        raise ValueError(f"image must be (H, W) or (H, W, 3) and heatmap 2-D, got {img.shape} and {hm.shape}")
    h, w = img.shape[:2]
    if img.ndim == 2:
        lo, hi = np.percentile(img, [0.5, 99.5])
        img = np.clip((img.astype(np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    scale = min(1.0, max_side / max(h, w))
    dpi = 100
    fig = Figure(figsize=(max(w * scale, 1) / dpi, max(h * scale, 1) / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    extent = (0, w, h, 0)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, extent=extent, interpolation="antialiased")
    mx = hm.max() if hm.size else 0.0
    ax.imshow(hm / mx if mx > 0 else hm, cmap=cmap, alpha=alpha, extent=extent, vmin=0, vmax=1, interpolation="bilinear")
    if fixations is not None and len(fixations):
        fx = np.asarray(fixations, dtype=np.float64)
        sizes = 20.0
        if fx.shape[1] >= 4:
            d = np.clip(fx[:, 3] - fx[:, 2], 0, None)
            sizes = 10 + 80 * d / d.max() if d.max() > 0 else 20.0
        ax.plot(fx[:, 0], fx[:, 1], "-", color="white", lw=0.8, alpha=0.8)
        ax.scatter(fx[:, 0], fx[:, 1], s=sizes, facecolors="none", edgecolors="white", linewidths=1.0)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)
