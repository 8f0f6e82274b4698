"""GLCM and GLRLM torch backends vs pyradiomics 3.0.1, plus hand-computed matrices.

Tolerance: ``rtol = 1e-4`` (observed <= 3e-11, GLCM MCC), ``atol = 1e-9`` for values at 0 (exact
zeros such as the variances of the constant ROI, or IMC1 / ClusterShade / Correlation
near 0 that both implementations compute to ~1e-14 absolute).

Besides the reference settings (``force2D=True, force2Ddimension=0`` on a 2-D array, which
leaves pyradiomics a single horizontal angle) the 4-angle mode is checked against
pyradiomics with ``force2D=False``, and a few extra ROIs hit pyradiomics' corner cases
(no two ROI pixels on one line of an angle: the angle is empty).
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import pytest
import torch

from gazerad.radiomics import torch_backend
from gazerad.radiomics.discretize import discretize
from gazerad.radiomics.names import CLASS_FEATURES, feature_names
from gazerad.radiomics.torch_backend import glcm, glrlm, pad_batch
from tests.support.radiomics_cases import assert_parity, parity_cases, reference_matrix

# pyradiomics' own numpy warnings on empty angles (nanmean of empty/NaN slices)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

MODULES = {"glcm": glcm, "glrlm": glrlm}
ATOL = 1e-9
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _extra_cases() -> list[tuple[np.ndarray, np.ndarray, float, str]]:
    """ROIs where some angle has no two ROI pixels on one line (pyradiomics empties it)."""
    rng = np.random.default_rng(7)
    img = rng.normal(100, 30, (20, 20))
    diag = np.zeros((20, 20), bool)
    diag[np.arange(3, 15), np.arange(3, 15)] = True  # no row holds two pixels: no horizontal pair/run
    anti = np.zeros((20, 20), bool)
    anti[np.arange(3, 15), 17 - np.arange(3, 15)] = True
    anti[5, 4] = True  # one row with two separated pixels: a horizontal line with two runs, no pair
    mix = np.zeros((20, 20), bool)
    mix[4:9, 4:9] = True
    mix[12:16, 2:12:3] = True
    checker = np.zeros((20, 20), bool)
    checker[::2, ::2] = True  # no pair at distance 1 in any angle
    return [
        (img, diag, 10.0, "diag"),
        (img, anti, 10.0, "antidiag"),
        (img, mix, 10.0, "mix"),
        (img, checker, 10.0, "checker"),
    ]


@lru_cache(maxsize=None)
def _pyradiomics(cls: str, force2d: bool, extra: bool) -> np.ndarray:
    """pyradiomics on the parity cases (+ the extra ones), with ``force2D`` as given."""
    if force2d and not extra:
        return reference_matrix((cls,))
    import radiomics
    import SimpleITK as sitk
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.CRITICAL)
    logging.getLogger("radiomics").setLevel(logging.CRITICAL)
    cases = _extra_cases() if extra else list(parity_cases())
    rows = []
    for im, m, bw, _ in cases:
        ex = featureextractor.RadiomicsFeatureExtractor(binWidth=bw, force2D=force2d, force2Ddimension=0, additionalInfo=False)
        ex.disableAllFeatures()
        ex.enableFeatureClassByName(cls)
        # as gazerad.radiomics.reference: a 1-pixel frame outside the ROI (pyradiomics needs background)
        # force2D: a (1, H, W) slice as gazerad.radiomics.reference does (4 in-plane angles);
        # otherwise the 2-D array with force2D=False (also 4 angles, a second code path)
        pi, pm = np.pad(im, 1, mode="edge"), np.pad(m, 1).astype(np.uint8)
        if force2d:
            pi, pm = pi[None], pm[None]
        res = ex.execute(sitk.GetImageFromArray(pi), sitk.GetImageFromArray(pm))
        rows.append([float(res[f"original_{n}"]) for n in feature_names((cls,))])
    return np.array(rows)


def _batch(cases, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pad the cases into one batch; levels discretised per case (each has its own bin width)."""
    img, msk = pad_batch([c[0] for c in cases], [c[1] for c in cases], device=device)
    lev = torch.zeros(img.shape, dtype=torch.int64, device=device)
    for k, (im, m, bw, _) in enumerate(cases):
        x, mk = pad_batch([im], [m], device=device)
        lev[k, : im.shape[0], : im.shape[1]] = discretize(x, mk, bw)[0]
    return img, msk, lev


def _ours_single(cls: str, cases, device: str, angles) -> np.ndarray:
    rows = []
    for c in cases:
        img, msk, lev = _batch([c], device)
        rows.append(MODULES[cls].features(img, msk, lev, (1.0, 1.0), angles=angles)[0].cpu().numpy())
    return np.stack(rows)


def _ours_batch(cls: str, cases, device: str, angles) -> np.ndarray:
    img, msk, lev = _batch(cases, device)
    out = MODULES[cls].features(img, msk, lev, (0.7, 1.3), angles=angles)  # spacing is unused
    assert out.shape == (len(cases), len(CLASS_FEATURES[cls])) and out.dtype == torch.float64
    assert out.device == img.device
    return out.cpu().numpy()


def _assert(ours: np.ndarray, ref: np.ndarray, cls: str, labels: list[str] | None = None) -> None:
    if labels is None:
        assert_parity(ours, ref, feature_names((cls,)), rtol=1e-4, atol=ATOL)
        return
    ok = np.isclose(ours, ref, rtol=1e-4, atol=ATOL, equal_nan=True)
    bad = [f"{labels[i]} {CLASS_FEATURES[cls][j]} ours {ours[i, j]} ref {ref[i, j]}" for i, j in zip(*np.nonzero(~ok))]
    assert not bad, "\n".join(bad)


# CPU parity runs both CPU code paths: the numpy fast path and the batched torch code CUDA runs
PATHS = pytest.mark.parametrize("fast", [True, False], ids=["cpu-fast-path", "batched-path"])


@pytest.fixture
def cpu_path(fast: bool, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(torch_backend, "CPU_FAST_PATHS", fast)
    return fast


@PATHS
@pytest.mark.parametrize("cls", ["glcm", "glrlm"])
def test_parity_reference_settings(cls: str, cpu_path: bool) -> None:
    ref = _pyradiomics(cls, True, False)
    cases = list(parity_cases())
    _assert(_ours_single(cls, cases, "cpu", None), ref, cls)
    _assert(_ours_batch(cls, cases, "cpu", None), ref, cls)


@PATHS
@pytest.mark.parametrize("cls", ["glcm", "glrlm"])
def test_parity_four_angles(cls: str, cpu_path: bool) -> None:
    """``angles=FOUR_ANGLES`` matches pyradiomics with ``force2D=False`` (rows, columns, diagonals)."""
    _assert(_ours_batch(cls, list(parity_cases()), "cpu", glcm.FOUR_ANGLES), _pyradiomics(cls, False, False), cls)


@PATHS
@pytest.mark.parametrize("cls", ["glcm", "glrlm"])
@pytest.mark.parametrize("force2d", [True, False])
def test_parity_empty_angles(cls: str, force2d: bool, cpu_path: bool) -> None:
    """Empty angles: dropped from the mean; a lone empty angle gives NaN (GLRLM: RE = RV = 0)."""
    cases = _extra_cases()
    angles = None if force2d else glcm.FOUR_ANGLES
    ref = _pyradiomics(cls, force2d, True)
    labels = [c[3] for c in cases]
    _assert(_ours_batch(cls, cases, "cpu", angles), ref, cls, labels)
    # a lone empty angle: the diagonal ROI has no horizontal pair/run -> NaN (pyradiomics' 1-angle result)
    row = _ours_batch(cls, cases[:1], "cpu", glcm.ROW_ANGLES)[0]
    assert np.isnan(row).sum() >= len(CLASS_FEATURES[cls]) - 2


@CUDA
@pytest.mark.parametrize("cls", ["glcm", "glrlm"])
def test_parity_cuda(cls: str) -> None:
    cases = list(parity_cases())
    _assert(_ours_single(cls, cases, "cuda", None), _pyradiomics(cls, True, False), cls)
    _assert(_ours_batch(cls, cases, "cuda", None), _pyradiomics(cls, True, False), cls)
    _assert(_ours_batch(cls, cases, "cuda", glcm.FOUR_ANGLES), _pyradiomics(cls, False, False), cls)


# the 5 x 5 example of pyradiomics' GLCM documentation and its symmetric 0-degree GLCM
_DOC_IMAGE = np.array([[1, 2, 5, 2, 3], [3, 2, 1, 3, 1], [1, 3, 5, 5, 2], [1, 1, 1, 1, 2], [1, 2, 4, 3, 5]])
_DOC_GLCM_0 = np.array([[6, 4, 3, 0, 0], [4, 0, 2, 1, 3], [3, 2, 0, 1, 2], [0, 1, 1, 0, 0], [0, 3, 2, 0, 2]], float)


def test_glcm_matrix_hand_computed() -> None:
    lev = torch.from_numpy(_DOC_IMAGE)[None]
    p = glcm.glcm_matrices(lev, 5, glcm.ROW_ANGLES)
    np.testing.assert_array_equal(p[0, 0].numpy(), _DOC_GLCM_0)
    # vertical neighbours of the first column 1,3,1,1,1: pairs (1,3),(3,1),(1,1),(1,1) -> P[0,0] = 4 both ways
    p4 = glcm.glcm_matrices(lev, 5, glcm.FOUR_ANGLES)
    np.testing.assert_array_equal(p4[0, 3].numpy(), _DOC_GLCM_0)
    assert all(np.allclose(m, m.T) for m in p4[0].numpy())
    assert [int(m.sum()) for m in p4[0].numpy()] == [2 * 16, 2 * 20, 2 * 16, 2 * 20]
    # features of that matrix, by the textbook formulas
    x = torch.from_numpy(_DOC_IMAGE.astype(np.float64))[None]
    out = glcm.features(x, torch.ones_like(x, dtype=torch.bool), lev, (1.0, 1.0), angles=glcm.ROW_ANGLES)[0]
    f = dict(zip(CLASS_FEATURES["glcm"], out.tolist()))
    pn = _DOC_GLCM_0 / _DOC_GLCM_0.sum()
    i, j = np.meshgrid(np.arange(1, 6), np.arange(1, 6), indexing="ij")
    assert f["Contrast"] == pytest.approx((pn * (i - j) ** 2).sum(), rel=1e-12)
    assert f["JointEnergy"] == pytest.approx((pn**2).sum(), rel=1e-12)
    assert f["JointAverage"] == pytest.approx((pn * i).sum(), rel=1e-12)
    assert f["MaximumProbability"] == pytest.approx(pn.max(), rel=1e-12)
    assert f["Idn"] == pytest.approx((pn / (1 + np.abs(i - j) / 5)).sum(), rel=1e-12)


def test_glrlm_matrix_hand_computed() -> None:
    """Runs along the 4 angles of a 3 x 3 image with a hole in the middle (the hole breaks runs)."""
    lev = torch.tensor([[[1, 2, 3], [2, 0, 2], [3, 2, 1]]])
    p, multi = glrlm.glrlm_matrices(lev, 3, glcm.FOUR_ANGLES)  # (1, 4, 3, Nr)
    assert p.shape == (1, 4, 3, 2) and bool(multi.all())
    expected = {
        (1, 1): [[2, 0], [0, 2], [2, 0]],  # main diagonal 1,_,1 is two runs; 2,2 twice
        (1, 0): [[2, 0], [4, 0], [2, 0]],
        (1, -1): [[2, 0], [0, 2], [2, 0]],
        (0, 1): [[2, 0], [4, 0], [2, 0]],
    }
    for a, ang in enumerate(glcm.FOUR_ANGLES):
        np.testing.assert_array_equal(p[0, a].numpy(), np.array(expected[ang], float), err_msg=str(ang))
    # a diagonal line: no row holds two ROI pixels, so pyradiomics empties the horizontal angle
    lev = torch.diag(torch.tensor([1, 1, 2, 2]))[None]
    _, multi = glrlm.glrlm_matrices(lev, 2, glcm.FOUR_ANGLES)
    assert multi[0].tolist() == [True, False, False, False]
    f = glrlm.features(lev.double(), lev > 0, lev, (1.0, 1.0), angles=glcm.ROW_ANGLES)[0]
    names = CLASS_FEATURES["glrlm"]
    assert all(np.isnan(v) == (n not in ("RunEntropy", "RunVariance")) for n, v in zip(names, f.tolist()))
    f4 = glrlm.features(lev.double(), lev > 0, lev, (1.0, 1.0), angles=glcm.FOUR_ANGLES)[0]
    assert f4[names.index("LongRunEmphasis")].item() == pytest.approx(4.0)  # two runs of length 2, one angle left
