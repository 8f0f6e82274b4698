"""Torch backend ``firstorder`` and ``shape2D`` vs pyradiomics, plus hand-checked behaviour.

Tolerances: ``rtol = 1e-4`` and ``atol = 1e-8`` (the default of ``assert_parity``). Near-zero
reference values in these classes are exact zeros (Skewness / spreads of the constant ROI),
reproduced exactly, so no larger ``atol`` is needed. Observed errors are <= 6e-13 relative.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from gazerad.radiomics import torch_backend
from gazerad.radiomics.discretize import _discretize_dense, discretize
from gazerad.radiomics.names import CLASS_FEATURES
from gazerad.radiomics.reference import pyradiomics_features
from gazerad.radiomics.torch_backend import firstorder, pad_batch, shape2d
from tests.support.radiomics_cases import assert_parity, parity_cases, reference_matrix

MODULES = {"firstorder": firstorder, "shape2D": shape2d}
ANISO = (0.7, 1.3)  # (row, col) spacing
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@lru_cache(maxsize=None)
def _reference(cls: str, spacing: tuple[float, float]) -> np.ndarray:
    if spacing == (1.0, 1.0):
        return reference_matrix((cls,))
    return np.stack([pyradiomics_features(im, m, bw, (cls,), spacing=spacing) for im, m, bw, _ in parity_cases()])


def _run(cls: str, images, masks, bin_widths, spacing, device) -> np.ndarray:
    """Features of the given pairs as one padded batch (bin widths may differ per sample)."""
    img, msk = pad_batch(images, masks, device=device)
    lev = torch.stack([discretize(img[i : i + 1], msk[i : i + 1], bw)[0] for i, bw in enumerate(bin_widths)])
    out = MODULES[cls].features(img, msk, lev, spacing)
    assert out.device.type == torch.device(device).type and out.dtype == torch.float64
    return out.cpu().numpy()


def _parity(cls: str, spacing: tuple[float, float], device: str, batched: bool) -> None:
    cases = parity_cases()
    if batched:
        ours = _run(cls, [c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases], spacing, device)
    else:
        ours = np.concatenate([_run(cls, [im], [m], [bw], spacing, device) for im, m, bw, _ in cases])
    assert_parity(ours, _reference(cls, spacing), list(CLASS_FEATURES[cls]))


@pytest.mark.parametrize("fast", [True, False], ids=["cpu-fast-path", "batched-path"])
@pytest.mark.parametrize("spacing", [(1.0, 1.0), ANISO])
@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batch"])
@pytest.mark.parametrize("cls", ["firstorder", "shape2D"])
def test_parity_cpu(cls: str, batched: bool, spacing: tuple[float, float], fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both CPU code paths: the per-sample fast path and the batched torch code CUDA runs."""
    monkeypatch.setattr(torch_backend, "CPU_FAST_PATHS", fast)
    _parity(cls, spacing, "cpu", batched)


@CUDA
@pytest.mark.parametrize("spacing", [(1.0, 1.0), ANISO])
@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batch"])
@pytest.mark.parametrize("cls", ["firstorder", "shape2D"])
def test_parity_cuda(cls: str, batched: bool, spacing: tuple[float, float]) -> None:
    _parity(cls, spacing, "cuda", batched)


def _shape(mask: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)) -> dict[str, float]:
    m = torch.from_numpy(mask)[None]
    row = shape2d.features(m.double(), m, m.long(), spacing)[0].tolist()
    return dict(zip(CLASS_FEATURES["shape2D"], row))


def test_shape_square_by_hand() -> None:
    """A 2 x 2 square: corners cut by the mesh; spacing stretches rows."""
    sq = np.ones((2, 2), bool)
    f = _shape(sq)
    assert f["MeshSurface"] == 3.5  # 4 x 1/8 + 4 x 1/2 + 1
    assert f["PixelSurface"] == 4.0
    assert f["Perimeter"] == pytest.approx(4 + 2 * math.sqrt(2), rel=1e-14)
    assert f["MaximumDiameter"] == pytest.approx(math.sqrt(5), rel=1e-14)  # (-1/2, 0) to (3/2, 1)
    assert f["MajorAxisLength"] == pytest.approx(2.0) and f["MinorAxisLength"] == pytest.approx(2.0)
    assert f["Elongation"] == pytest.approx(1.0)
    g = _shape(sq, (2.0, 1.0))
    assert g["MeshSurface"] == 7.0 and g["PixelSurface"] == 8.0
    assert g["Perimeter"] == pytest.approx(6 + 2 * math.sqrt(5), rel=1e-14)
    assert g["MaximumDiameter"] == pytest.approx(math.sqrt(17), rel=1e-14)  # (-1, 0) to (3, 1)
    assert g["MajorAxisLength"] == pytest.approx(4.0) and g["MinorAxisLength"] == pytest.approx(2.0)
    assert g["Elongation"] == pytest.approx(0.5)


def test_shape_saddle_is_two_separate_corners() -> None:
    """Diagonal pixels: pyradiomics cuts both corners of the saddle window (two diamonds)."""
    diag = np.eye(2, dtype=bool)
    f = _shape(diag)
    assert f["MeshSurface"] == 1.0  # two diamonds of area 1/2
    assert f["Perimeter"] == pytest.approx(4 * math.sqrt(2), rel=1e-14)
    assert f["MaximumDiameter"] == pytest.approx(math.sqrt(5), rel=1e-14)
    ref = pyradiomics_features(diag.astype(float), diag, 25.0, ("shape2D",))
    np.testing.assert_allclose(list(f.values()), ref, rtol=1e-12)


def _brute_diameter(mask: np.ndarray, spacing: tuple[float, float]) -> float:
    """Largest distance over all pairs of mesh vertices (edge midpoints between differing pixels)."""
    p = np.pad(mask, 1)
    iy, ix = np.nonzero(p[:-1] != p[1:])
    jy, jx = np.nonzero(p[:, :-1] != p[:, 1:])
    v = np.concatenate([np.stack([iy + 0.5, ix], 1), np.stack([jy, jx + 0.5], 1)]) * np.asarray(spacing)
    d = v[:, None] - v[None]
    return float(np.sqrt((d**2).sum(-1).max()))


def test_max_diameter_matches_all_pairs() -> None:
    """The hull pruning keeps the farthest pair on ragged, holey, multi-component masks."""
    rng = np.random.default_rng(3)
    masks = []
    for k in range(90):
        h, w = rng.integers(2, 40, 2)
        if k % 3 == 0:
            m = rng.random((h, w)) < rng.uniform(0.05, 0.9)
        elif k % 3 == 1:
            m = ndimage.gaussian_filter(rng.normal(size=(h, w)), rng.uniform(0.5, 3)) > rng.uniform(-0.2, 0.3)
        else:
            m = np.zeros((h, w), bool)
            m[rng.integers(h, size=3), rng.integers(w, size=3)] = True
        m[0, 0] |= not m.any()
        masks.append(m)
    for spacing in [(1.0, 1.0), (0.3, 1.7)]:
        img, msk = pad_batch([m.astype(float) for m in masks], masks)
        ours = shape2d.features(img, msk, msk.long(), spacing)[:, CLASS_FEATURES["shape2D"].index("MaximumDiameter")]
        ref = [_brute_diameter(m, spacing) for m in masks]
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12)


def test_firstorder_by_hand() -> None:
    """Known values: numpy percentiles, scipy moments, histogram of the levels, pixel-area scaling."""
    vals = np.array([1.0, 2.0, 2.0, 3.5, 10.0, -4.0, 7.25])
    img = np.zeros((3, 4))
    mask = np.zeros((3, 4), bool)
    mask.flat[[0, 2, 3, 5, 6, 9, 11]] = True
    img[mask] = vals
    img[~mask] = 1e6  # outside the ROI: must not matter
    t_img, t_msk = torch.from_numpy(img)[None], torch.from_numpy(mask)[None]
    lev = discretize(t_img, t_msk, 5.0)
    f = dict(zip(CLASS_FEATURES["firstorder"], firstorder.features(t_img, t_msk, lev, (0.5, 3.0))[0].tolist()))
    for q in (10, 90):
        assert f[f"{q}Percentile"] == pytest.approx(np.percentile(vals, q), rel=1e-14)
    assert f["InterquartileRange"] == pytest.approx(np.percentile(vals, 75) - np.percentile(vals, 25), rel=1e-14)
    assert f["Median"] == 2.0 and f["Minimum"] == -4.0 and f["Maximum"] == 10.0 and f["Range"] == 14.0
    assert f["Energy"] == pytest.approx((vals**2).sum(), rel=1e-14)
    assert f["TotalEnergy"] == pytest.approx(1.5 * (vals**2).sum(), rel=1e-14)
    assert f["Kurtosis"] == pytest.approx(stats.kurtosis(vals, fisher=False), rel=1e-12)
    assert f["Skewness"] == pytest.approx(stats.skew(vals), rel=1e-12)
    assert f["Variance"] == pytest.approx(vals.var(), rel=1e-14)
    inner = vals[(vals >= np.percentile(vals, 10)) & (vals <= np.percentile(vals, 90))]
    assert f["RobustMeanAbsoluteDeviation"] == pytest.approx(np.abs(inner - inner.mean()).mean(), rel=1e-14)
    # bins of width 5 from -5: [-4], [1, 2, 2, 3.5], [7.25], [10] -> p = 1/7, 4/7, 1/7, 1/7
    p = np.array([1, 4, 1, 1]) / 7
    assert f["Uniformity"] == pytest.approx((p**2).sum(), rel=1e-14)
    assert f["Entropy"] == pytest.approx(-(p * np.log2(p)).sum(), rel=1e-12)


def test_order_statistics_with_ties_and_spikes() -> None:
    """Bucketed selection equals a full sort, incl. heavy ties, a spike and ragged ROI sizes."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.integers(0, 4, (3, 500)).astype(float), rng.normal(0, 1, (3, 500)) ** 5], axis=1)
    x[1, :700] = 42.0  # one value holds most of the row
    m = rng.random(x.shape) < 0.8
    m[2, 50:] = False  # a small ROI next to large ones
    xt, mt = torch.from_numpy(x), torch.from_numpy(m)
    n = mt.sum(1)
    ranks = torch.stack([torch.zeros_like(n), n // 10, n // 2, (n * 9) // 10, n - 1], dim=1)
    xz = torch.where(mt, xt, 0.0)
    lo, hi = torch.where(mt, xt, np.inf).amin(1), torch.where(mt, xt, -np.inf).amax(1)
    got = firstorder.order_statistics(xz, mt, ranks, lo, hi)
    want = torch.sort(torch.where(mt, xt, np.inf), dim=1).values.gather(1, ranks)
    assert torch.equal(got, want)
    for b in range(x.shape[0]):  # the CPU path's numpy version, one row at a time
        row = x[b][m[b]]
        got_np = firstorder._order_statistics_np(row, ranks[b].numpy(), row.min(), row.max())
        np.testing.assert_array_equal(got_np, want[b].numpy())


def test_cpu_discretisation_equals_the_dense_path() -> None:
    """The compacted CPU binning equals the whole-grid binning, values on bin edges included."""
    rng = np.random.default_rng(11)
    for trial in range(60):
        b, h, w = int(rng.integers(1, 4)), int(rng.integers(2, 30)), int(rng.integers(2, 30))
        bw = float(rng.choice([0.1, 0.3, 1.0, 7.5, 25.0]))
        if trial % 3 == 0:
            x = rng.integers(-50, 300, (b, h, w)).astype(np.float64) * bw / 2  # many values on edges
        elif trial % 3 == 1:
            x = rng.normal(0, 100, (b, h, w))
        else:
            x = np.round(rng.uniform(-1, 1, (b, h, w)), 1)  # decimal steps: float ties at the edges
        m = rng.random((b, h, w)) < rng.uniform(0.1, 1.0)
        m[:, 0, 0] = True
        img, msk = torch.from_numpy(x), torch.from_numpy(m)
        want = _discretize_dense(img, msk, bw)
        got = discretize(img, msk, bw)
        assert got.dtype == torch.int64 and torch.equal(got, want), (trial, bw)
        small = discretize(img, msk, bw, dtype=None)
        assert small.dtype == (torch.uint8 if int(want.max()) < 256 else torch.int16) and torch.equal(small.long(), want)


def test_constant_roi_moments_follow_numpy_rounding() -> None:
    """A constant ROI whose numpy mean is inexact: pyradiomics' Skewness is +-1, Kurtosis 1."""
    images, masks = [], []
    for v, shape in [(0.1, (130, 140)), (1 / 3, (130, 140)), (-0.7, (7, 9)), (75.0, (20, 20))]:
        m = np.zeros(shape, bool)
        m[1:-2, 2:-1] = True
        images.append(np.full(shape, v))
        masks.append(m)
    ours = _run("firstorder", images, masks, [25.0] * len(images), (1.0, 1.0), "cpu")
    ref = np.stack([pyradiomics_features(im, m, 25.0, ("firstorder",)) for im, m in zip(images, masks)])
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-30)
    skew = ref[:, CLASS_FEATURES["firstorder"].index("Skewness")]
    assert set(np.abs(skew[:3]).round(6)) == {1.0} and skew[3] == 0.0  # the quirk is exercised
