"""Image/mask pairs for torch-vs-pyradiomics parity: varied texture, size, ROI and bin width.

Importable by every radiomics test module (``from radiomics_cases import parity_cases``).
Includes a tiny 2 x 3 ROI, ROIs touching every border, a constant ROI, holes, several
disjoint blobs, 16-bit-like ranges and negative values.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage


def _texture(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    h, w = shape
    if kind == "noise":
        return rng.normal(100, 30, shape)
    if kind == "smooth":
        return ndimage.gaussian_filter(rng.normal(0, 1, shape), 4) * 400 + 300
    if kind == "stripes":
        yy, xx = np.mgrid[0:h, 0:w]
        return 120 * np.sin(xx / 3.0 + yy / 7.0) + rng.normal(0, 10, shape) + 200
    if kind == "blocks":
        small = rng.integers(0, 6, (h // 8 + 1, w // 8 + 1)) * 40.0
        return np.kron(small, np.ones((8, 8)))[:h, :w]
    if kind == "xray16":
        return ndimage.gaussian_filter(rng.uniform(800, 60000, shape), 2)
    if kind == "negative":
        return rng.normal(-50, 80, shape)
    if kind == "integer":
        return rng.integers(0, 256, shape).astype(np.float64)
    raise ValueError(kind)


def _mask(rng: np.random.Generator, shape: tuple[int, int], kind: str) -> np.ndarray:
    h, w = shape
    m = np.zeros(shape, bool)
    yy, xx = np.mgrid[0:h, 0:w]
    if kind == "disk":
        cy, cx, r = h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3), min(h, w) * rng.uniform(0.2, 0.4)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    elif kind == "box":
        y0, x0 = rng.integers(1, h // 3), rng.integers(1, w // 3)
        m[y0 : y0 + h // 2, x0 : x0 + w // 2] = True
    elif kind == "border":  # touches all four image borders
        m[:, :] = True
        m[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = False  # with a hole
    elif kind == "corner":
        m[: h // 2, : w // 3] = True
    elif kind == "tiny":
        m[h // 2 : h // 2 + 2, w // 2 : w // 2 + 3] = True
    elif kind == "blobs":
        noise = ndimage.gaussian_filter(rng.normal(0, 1, shape), 3)
        m = noise > 0.05
    elif kind == "ring":
        r2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
        m = (r2 <= (0.4 * min(h, w)) ** 2) & (r2 >= (0.2 * min(h, w)) ** 2)
    elif kind == "ellipse":
        m = ((yy - h / 2) / (0.35 * h)) ** 2 + ((xx - w / 2) / (0.15 * w)) ** 2 <= 1
    else:
        raise ValueError(kind)
    return m


_SPECS = [
    # (texture, mask, shape, bin width)
    ("noise", "disk", (48, 48), 25.0),
    ("noise", "box", (40, 56), 10.0),
    ("smooth", "blobs", (64, 64), 25.0),
    ("smooth", "ellipse", (50, 70), 5.0),
    ("stripes", "ring", (64, 64), 25.0),
    ("stripes", "border", (32, 48), 40.0),
    ("blocks", "box", (48, 48), 25.0),
    ("blocks", "corner", (40, 40), 40.0),
    ("xray16", "disk", (64, 64), 500.0),
    ("xray16", "border", (36, 36), 1000.0),
    ("negative", "ellipse", (48, 40), 25.0),
    ("negative", "blobs", (56, 56), 15.0),
    ("integer", "disk", (40, 40), 8.0),
    ("integer", "tiny", (20, 20), 25.0),
    ("noise", "tiny", (16, 16), 5.0),
    ("smooth", "corner", (30, 45), 12.5),
    ("noise", "ring", (60, 60), 50.0),
    ("blocks", "blobs", (64, 48), 25.0),
    ("integer", "border", (24, 24), 16.0),
    ("stripes", "disk", (72, 72), 7.0),
    ("smooth", "box", (96, 96), 25.0),
]


@lru_cache(maxsize=None)
def parity_cases() -> tuple[tuple[np.ndarray, np.ndarray, float, str], ...]:
    """``(image float64 (H, W), mask bool (H, W), bin_width, label)`` for each parity case (>= 22)."""
    rng = np.random.default_rng(20261123)
    out = []
    for tex, mk, shape, bw in _SPECS:
        out.append((_texture(rng, shape, tex), _mask(rng, shape, mk), bw, f"{tex}-{mk}-{shape[0]}x{shape[1]}-bw{bw:g}"))
    # a constant ROI (flat region: one bin)
    img = np.full((32, 32), 75.0)
    m = np.zeros((32, 32), bool)
    m[8:24, 6:20] = True
    out.append((img, m, 25.0, "constant-box-32x32-bw25"))
    return tuple(out)


@lru_cache(maxsize=None)
def reference_matrix(classes: tuple[str, ...]) -> np.ndarray:
    """pyradiomics features of every parity case for ``classes``: ``(N, F)``."""
    from gazerad.radiomics.reference import pyradiomics_features

    return np.stack([pyradiomics_features(im, m, bw, classes, name=lab) for im, m, bw, lab in parity_cases()])


def assert_parity(ours: np.ndarray, ref: np.ndarray, names: list[str], rtol: float = 1e-4, atol: float = 1e-8) -> None:
    """Fail with a table of every (case, feature) outside ``|a - b| <= atol + rtol * |b|``."""
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    labels = [c[3] for c in parity_cases()]
    bad = []
    for i in range(ref.shape[0]):
        for j in range(ref.shape[1]):
            a, b = ours[i, j], ref[i, j]
            if np.isnan(a) and np.isnan(b):
                continue
            if not (abs(a - b) <= atol + rtol * abs(b)):
                bad.append(f"{labels[i]:34s} {names[j]:45s} ours {a:.10g} ref {b:.10g}")
    assert not bad, f"{len(bad)} mismatches:\n" + "\n".join(bad[:40])
