"""Attention-aware random resized crop (FocusContrast's view rule).

A plain ``RandomResizedCrop`` can cut a small lesion out of both views of a contrastive
pair. :class:`AttentionRandResizedCrop` samples the same boxes as torchvision's
``RandomResizedCrop`` (area fraction uniform in ``scale``, aspect ratio ``w / h``
log-uniform in ``ratio``, position uniform) but accepts a box only if it keeps at least a
fraction ``q`` of the (predicted) attention mass. METHODS leaves the exact rule open; this
is our choice:

1. up to ``max_tries`` boxes are drawn; the first one keeping ``>= q`` of the mass is used;
2. otherwise (fallback) the last drawn box's size is re-centred on the attention peak
   (argmax of the map blurred with a Gaussian of ``peak_blur`` times its longer side, at
   least one attention pixel) and clamped into the image;
3. if that box still keeps ``< q``, it is grown around the peak (both sides by 10 % a step,
   each capped at the image side, re-centred and clamped) until it does; the full image
   always does.

With ``attention=None`` (or an all-zero map) the transform is a plain random resized crop,
the baseline, drawing exactly the same boxes from the same random state.

Box mass is O(1) per try with a summed-area table. The attention map may have any
resolution: it is taken to cover the image's field of view (stretched per axis) and to be
constant over each of its pixels, so a box in image pixels is mapped to fractional
attention coordinates and its mass is read *exactly* from the table by bilinear
interpolation of the cumulative sum (the integral of a piecewise-constant map is bilinear
inside each cell). Nothing is resized.

Boxes are ``(x0, y0, w, h)`` in image pixels (:mod:`gazerad.coords`: ``x`` = column).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Randomizable, Transform
from monai.utils import TransformBackends

__all__ = ["BoxMass", "sample_resized_crop_box", "AttentionRandResizedCrop", "AttentionRandResizedCropd"]

Box = tuple[int, int, int, int]


class BoxMass:
    """Attention mass inside image-pixel boxes, O(1) per box (summed-area table).

    Args:
        attention: ``(h, w)`` or ``(1, h, w)`` non-negative map (any resolution; it is
            normalised to sum 1 here).
        image_shape: ``(H, W)`` of the image the boxes refer to.

    Raises:
        ValueError: a map of the wrong rank, with NaN/inf, negative values, or summing to 0.
    """

    def __init__(self, attention: np.ndarray | torch.Tensor, image_shape: tuple[int, int]) -> None:
        a = _as_map(attention)
        if (a < 0).any():
            raise ValueError("attention must be non-negative")
        total = a.sum()
        if not total > 0:
            raise ValueError("attention sums to 0")
        self.attention = a / total
        self.shape = (int(image_shape[0]), int(image_shape[1]))
        ha, wa = a.shape
        sat = np.zeros((ha + 1, wa + 1), dtype=np.float64)
        np.cumsum(np.cumsum(self.attention, axis=0), axis=1, out=sat[1:, 1:])
        self.sat = sat
        self._sy = ha / self.shape[0]
        self._sx = wa / self.shape[1]

    def _cum(self, x: float, y: float) -> float:
        """Mass of ``[0, x) x [0, y)`` (image pixels), exact for a piecewise-constant map."""
        ha, wa = self.sat.shape[0] - 1, self.sat.shape[1] - 1
        u = min(max(x * self._sx, 0.0), float(wa))
        v = min(max(y * self._sy, 0.0), float(ha))
        j, i = min(int(u), wa - 1), min(int(v), ha - 1)
        fu, fv = u - j, v - i
        s = self.sat
        return float(s[i, j] * (1 - fu) * (1 - fv) + s[i, j + 1] * fu * (1 - fv) + s[i + 1, j] * (1 - fu) * fv + s[i + 1, j + 1] * fu * fv)

    def mass(self, box: Sequence[float]) -> float:
        """Fraction of the attention inside ``(x0, y0, w, h)`` (image pixels)."""
        x0, y0, w, h = (float(v) for v in box)
        x1, y1 = x0 + w, y0 + h
        return self._cum(x1, y1) - self._cum(x0, y1) - self._cum(x1, y0) + self._cum(x0, y0)

    def peak(self, blur: float = 1.0 / 64) -> tuple[float, float]:
        """``(x, y)`` image-pixel centre of the attention pixel with the highest blurred value.

        ``blur``: Gaussian sigma as a fraction of the map's longer side (at least 1 pixel).
        """
        from scipy.ndimage import gaussian_filter

        a = self.attention
        sigma = max(1.0, float(blur) * max(a.shape))
        b = gaussian_filter(a, sigma=sigma, mode="constant")
        r, c = np.unravel_index(int(np.argmax(b)), b.shape)
        return ((c + 0.5) / self._sx, (r + 0.5) / self._sy)


def _as_map(attention: Any) -> np.ndarray:
    if isinstance(attention, torch.Tensor):
        attention = attention.detach().cpu().numpy()
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"attention must be (H, W) or (1, H, W), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("attention contains NaN or infinite values")
    return a


def sample_resized_crop_box(
    rng: np.random.RandomState,
    shape: tuple[int, int],
    scale: tuple[float, float] = (0.2, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """One torchvision-style ``RandomResizedCrop`` box ``(x0, y0, w, h)`` in an ``(H, W)`` image.

    Area fraction uniform in ``scale``, ``w / h`` log-uniform in ``ratio``, position uniform;
    after 10 draws that do not fit, the central crop of the closest allowed ratio
    (torchvision's rule).
    """
    height, width = int(shape[0]), int(shape[1])
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.randint(0, height - h + 1))
            x0 = int(rng.randint(0, width - w + 1))
            return (x0, y0, w, h)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, max(1, int(round(width / min(ratio))))
    elif in_ratio > max(ratio):
        w, h = max(1, int(round(height * max(ratio)))), height
    else:
        w, h = width, height
    return ((width - w) // 2, (height - h) // 2, w, h)


def _centred_box(cx: float, cy: float, w: int, h: int, shape: tuple[int, int]) -> Box:
    """A ``w x h`` box centred on ``(cx, cy)`` and shifted to lie inside the image."""
    height, width = shape
    w, h = min(w, width), min(h, height)
    x0 = min(max(int(round(cx - w / 2)), 0), width - w)
    y0 = min(max(int(round(cy - h / 2)), 0), height - h)
    return (x0, y0, w, h)


def _size_pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        out = (int(size), int(size))
    else:
        s = tuple(int(v) for v in size)
        if len(s) != 2:
            raise ValueError(f"size must be an int or (height, width), got {size!r}")
        out = (s[0], s[1])
    if min(out) < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return out


def crop_resize(img: np.ndarray | torch.Tensor, box: Box, size: tuple[int, int]) -> torch.Tensor:
    """Crop ``(C, H, W)`` to ``box`` and resize to ``size`` (bilinear, antialiased).

    Returns a plain float ``torch.Tensor`` (integer inputs become float32; a ``MetaTensor``
    loses its metadata, whose affine would no longer hold).
    """
    t = img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)
    if t.ndim != 3:
        raise ValueError(f"image must be channel-first (C, H, W), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.float()
    x0, y0, w, h = box
    crop = t[:, y0 : y0 + h, x0 : x0 + w]
    if (h, w) == tuple(size):
        return crop.clone()
    return F.interpolate(crop[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


class AttentionRandResizedCrop(Randomizable, Transform):
    """Random resized crop that keeps at least a fraction ``q`` of the attention mass.

    ``__call__(img (C, H, W), attention (h, w) | (1, h, w) | None) -> (C, *size)`` float
    ``torch.Tensor``. See the module docstring for the rule and the fallback.

    Args:
        size: output side (int) or ``(height, width)``.
        scale: range of the box area as a fraction of the image area (torchvision's).
        ratio: range of the box aspect ratio ``w / h`` (log-uniform).
        q: minimum fraction of the attention mass a box must keep, in ``[0, 1]``.
        max_tries: random boxes drawn before the fallback (at least 1).
        peak_blur: sigma of the blur before the peak's argmax, as a fraction of the map's
            longer side (at least one map pixel).

    Attributes (of the last call, for statistics and tests):
        last_box: ``(x0, y0, w, h)`` in image pixels.
        last_mass: attention fraction inside ``last_box`` (``None`` without attention).
        last_tries: random boxes drawn.
        last_fallback: ``None`` (a drawn box was accepted), ``"peak"`` (re-centred on the
            peak) or ``"grown"`` (re-centred and grown).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        q: float = 0.5,
        max_tries: int = 10,
        peak_blur: float = 1.0 / 64,
    ) -> None:
        self.size = _size_pair(size)
        if not (0 < scale[0] <= scale[1]):
            raise ValueError(f"scale must be 0 < min <= max, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must be 0 < min <= max, got {ratio}")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        if max_tries < 1:
            raise ValueError(f"max_tries must be >= 1, got {max_tries}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.q = float(q)
        self.max_tries = int(max_tries)
        self.peak_blur = float(peak_blur)
        self.last_box: Box | None = None
        self.last_mass: float | None = None
        self.last_tries = 0
        self.last_fallback: str | None = None

    def randomize(self, data: tuple[tuple[int, int], Any]) -> None:
        """Choose the box for an image of spatial shape ``data[0]`` with attention ``data[1]``."""
        shape, attention = data
        shape = (int(shape[0]), int(shape[1]))
        bm = None
        if attention is not None:
            a = _as_map(attention)
            if a.sum() > 0:
                bm = BoxMass(a, shape)
        self.last_fallback, self.last_mass = None, None
        if bm is None:
            self.last_box = sample_resized_crop_box(self.R, shape, self.scale, self.ratio)
            self.last_tries = 1
            return
        tol = 1e-9
        box: Box = (0, 0, shape[1], shape[0])
        for t in range(1, self.max_tries + 1):
            box = sample_resized_crop_box(self.R, shape, self.scale, self.ratio)
            m = bm.mass(box)
            if m >= self.q - tol:
                self.last_box, self.last_mass, self.last_tries = box, m, t
                return
        self.last_tries = self.max_tries
        cx, cy = bm.peak(self.peak_blur)
        w, h = box[2], box[3]
        box = _centred_box(cx, cy, w, h, shape)
        m = bm.mass(box)
        self.last_fallback = "peak"
        while m < self.q - tol and (box[2] < shape[1] or box[3] < shape[0]):
            w = min(shape[1], max(w + 1, int(math.ceil(w * 1.1))))
            h = min(shape[0], max(h + 1, int(math.ceil(h * 1.1))))
            box = _centred_box(cx, cy, w, h, shape)
            m = bm.mass(box)
            self.last_fallback = "grown"
        self.last_box, self.last_mass = box, m

    def __call__(
        self,
        img: np.ndarray | torch.Tensor,
        attention: np.ndarray | torch.Tensor | None = None,
        randomize: bool = True,
    ) -> torch.Tensor:
        """Crop ``img`` ``(C, H, W)``; with ``randomize=False`` reuse ``last_box``."""
        if img.ndim != 3:
            raise ValueError(f"image must be channel-first (C, H, W), got shape {tuple(img.shape)}")
        shape = (int(img.shape[-2]), int(img.shape[-1]))
        if randomize or self.last_box is None:
            self.randomize((shape, attention))
        assert self.last_box is not None
        x0, y0, w, h = self.last_box
        if x0 + w > shape[1] or y0 + h > shape[0]:
            raise ValueError(f"box {self.last_box} does not fit an image of shape {shape}")
        return crop_resize(img, self.last_box, self.size)


class AttentionRandResizedCropd(Randomizable, MapTransform):
    """Dictionary version of :class:`AttentionRandResizedCrop`: one box for all ``keys``.

    The box is drawn once per call from the first present key's spatial shape and the map
    under ``attention_key`` (absent or ``None``: a plain random resized crop), then every
    key in ``keys`` (same spatial shape required) is cropped and resized. The attention
    entry itself is left as it is unless it is listed in ``keys``.

    Args:
        keys: keys of ``(C, H, W)`` images to crop.
        attention_key: key of the ``(h, w)`` or ``(1, h, w)`` attention map.
        other arguments: as :class:`AttentionRandResizedCrop`.
    """

    backend = AttentionRandResizedCrop.backend

    def __init__(
        self,
        keys: KeysCollection,
        attention_key: Hashable = "attention",
        size: int | Sequence[int] = 224,
        scale: tuple[float, float] = (0.2, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        q: float = 0.5,
        max_tries: int = 10,
        peak_blur: float = 1.0 / 64,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.attention_key = attention_key
        self.cropper = AttentionRandResizedCrop(size, scale, ratio, q, max_tries, peak_blur)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> AttentionRandResizedCropd:
        super().set_random_state(seed, state)
        self.cropper.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.cropper.randomize(data)

    @property
    def last_box(self) -> Box | None:
        return self.cropper.last_box

    @property
    def last_mass(self) -> float | None:
        return self.cropper.last_mass

    @property
    def last_fallback(self) -> str | None:
        return self.cropper.last_fallback

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        present = list(self.key_iterator(d))
        if not present:
            return d
        shape = tuple(int(s) for s in d[present[0]].shape[-2:])
        for k in present:
            if tuple(int(s) for s in d[k].shape[-2:]) != shape:
                raise ValueError(f"all keys must share one spatial shape: {present[0]!r} is {shape}, {k!r} is {tuple(d[k].shape[-2:])}")
        self.randomize((shape, d.get(self.attention_key)))
        for k in present:
            d[k] = self.cropper(d[k], randomize=False)
        return d
