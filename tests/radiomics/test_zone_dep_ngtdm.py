"""Torch GLSZM / GLDM / NGTDM vs pyradiomics 3.0.1, plus hand-computed matrices.

Tolerance: ``rtol = 1e-4``, ``atol = 1e-8`` (the defaults of ``assert_parity``); the
observed worst relative error is ~1e-15. Values near 0 are exact zeros of pyradiomics'
conventions (NGTDM on a flat ROI) or sums of positive terms, so no looser ``atol`` is needed.

Neighbourhood: the reference settings (``force2D=True, force2Ddimension=0`` on 2-D images)
make pyradiomics use only the left/right neighbours; the 8-neighbourhood is what it uses
with ``force2D=False``. Both are tested against pyradiomics.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import pytest
import torch
from scipy import ndimage

from gazerad.radiomics import torch_backend
from gazerad.radiomics.discretize import discretize
from gazerad.radiomics.names import feature_names
from gazerad.radiomics.torch_backend import gldm, glszm, ngtdm, pad_batch
from tests.support.radiomics_cases import assert_parity, parity_cases, reference_matrix

MODULES = {"glszm": glszm, "gldm": gldm, "ngtdm": ngtdm}
CLASSES = tuple(MODULES)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@lru_cache(maxsize=None)
def _reference_8(cls: str) -> np.ndarray:
    """pyradiomics with ``force2D=False`` (8-neighbourhood on 2-D images) on every parity case."""
    import radiomics
    import SimpleITK as sitk
    from radiomics import featureextractor

    radiomics.setVerbosity(logging.ERROR)
    rows = []
    for im, m, bw, _ in parity_cases():
        ex = featureextractor.RadiomicsFeatureExtractor(binWidth=bw, force2D=False, additionalInfo=False)
        ex.disableAllFeatures()
        ex.enableFeatureClassByName(cls)
        r = ex.execute(sitk.GetImageFromArray(im), sitk.GetImageFromArray(m.astype(np.uint8)))
        rows.append([float(r[f"original_{n}"]) for n in feature_names((cls,))])
    return np.array(rows)


def _ours(cls: str, device: str, batched: bool, neighbourhood=None) -> np.ndarray:
    mod = MODULES[cls]
    cases = parity_cases()
    if not batched:
        rows = []
        for im, m, bw, _ in cases:
            img, msk = pad_batch([im], [m], device)
            rows.append(mod.features(img, msk, discretize(img, msk, bw), (1.0, 1.0), neighbourhood=neighbourhood))
        return torch.cat(rows).cpu().numpy()
    img, msk = pad_batch([c[0] for c in cases], [c[1] for c in cases], device)
    lev = torch.cat([discretize(img[i : i + 1], msk[i : i + 1], c[2]) for i, c in enumerate(cases)])
    return mod.features(img, msk, lev, (1.0, 1.0), neighbourhood=neighbourhood).cpu().numpy()


def _check(cls: str, device: str, neighbourhood=None) -> None:
    ref = reference_matrix((cls,)) if neighbourhood is None else _reference_8(cls)
    for batched in (False, True):
        assert_parity(_ours(cls, device, batched, neighbourhood), ref, feature_names((cls,)))


# CPU parity runs both CPU code paths: the numpy fast path and the batched torch code CUDA runs
PATHS = pytest.mark.parametrize("fast", [True, False], ids=["cpu-fast-path", "batched-path"])


@PATHS
@pytest.mark.parametrize("cls", CLASSES)
def test_parity_reference_settings_cpu(cls, fast, monkeypatch):
    monkeypatch.setattr(torch_backend, "CPU_FAST_PATHS", fast)
    _check(cls, "cpu")


@PATHS
@pytest.mark.parametrize("cls", CLASSES)
def test_parity_8_neighbourhood_cpu(cls, fast, monkeypatch):
    monkeypatch.setattr(torch_backend, "CPU_FAST_PATHS", fast)
    _check(cls, "cpu", gldm.EIGHT_NEIGHBOURS)


def test_glszm_torch_labelling_parity_cpu(monkeypatch):
    """The torch connected-component path (the one CUDA uses) on CPU, without the scipy shortcut."""
    monkeypatch.setattr(glszm, "USE_SCIPY_ON_CPU", False)
    _check("glszm", "cpu", gldm.EIGHT_NEIGHBOURS)


@needs_cuda
@pytest.mark.parametrize("cls", CLASSES)
def test_parity_cuda(cls):
    _check(cls, "cuda")
    _check(cls, "cuda", gldm.EIGHT_NEIGHBOURS)


@pytest.mark.parametrize("cls", CLASSES)
def test_parity_anisotropic_spacing(cls):
    """These classes ignore the spacing, in pyradiomics too."""
    from gazerad.radiomics.reference import pyradiomics_features

    spacing = (0.7, 1.9)
    for im, m, bw, _ in parity_cases()[:3]:
        img, msk = pad_batch([im], [m])
        ours = MODULES[cls].features(img, msk, discretize(img, msk, bw), spacing).numpy()[0]
        ref = pyradiomics_features(im, m, bw, (cls,), spacing)
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-8)


def test_default_neighbourhood_matches_reference_settings():
    """pyradiomics on a (1, H, W) slice links diagonal pixels (8-neighbourhood); on a 2-D array
    with the same force2D settings it only looks left/right (the trap the reference avoids)."""
    from radiomics import cMatrices

    img = np.array([[1, 2], [2, 1]])
    p = cMatrices.calculate_glszm(img, np.ones_like(img, bool), 2, 4, True, 0)
    assert p[0].tolist() == [[2.0], [2.0]]  # 2-D array: four single-pixel zones, no diagonal links
    p3 = cMatrices.calculate_glszm(img[None], np.ones_like(img, bool)[None], 2, 4, True, 0)
    assert p3[0].tolist() == [[0.0, 1.0], [0.0, 1.0]]  # slice: two diagonal 2-pixel zones
    assert gldm.DEFAULT_NEIGHBOURHOOD == gldm.EIGHT_NEIGHBOURS


# the 5 x 5 example of pyradiomics' GLSZM documentation
_DOC_IMAGE = np.array([[5, 2, 5, 4, 4], [3, 3, 3, 1, 3], [2, 1, 1, 1, 3], [4, 2, 2, 2, 3], [3, 5, 3, 3, 2]])


def _zone_matrix(levels: np.ndarray, neighbourhood, use_scipy: bool = True) -> np.ndarray:
    old = glszm.USE_SCIPY_ON_CPU
    glszm.USE_SCIPY_ON_CPU = use_scipy
    try:
        _, zl, zs = glszm.zones(torch.from_numpy(levels)[None], neighbourhood)
    finally:
        glszm.USE_SCIPY_ON_CPU = old
    p = np.zeros((int(levels.max()), int(zs.max())))
    np.add.at(p, (zl.numpy() - 1, zs.numpy() - 1), 1)
    return p


@pytest.mark.parametrize("use_scipy", [True, False])
def test_glszm_documentation_example(use_scipy):
    expected = np.array([[0, 0, 0, 1, 0], [1, 0, 0, 0, 1], [1, 0, 1, 0, 1], [1, 1, 0, 0, 0], [3, 0, 0, 0, 0]], float)
    np.testing.assert_array_equal(_zone_matrix(_DOC_IMAGE, gldm.EIGHT_NEIGHBOURS, use_scipy), expected)
    # left/right neighbours only: the zones are the horizontal runs
    runs = np.array([[1, 0, 1], [3, 0, 1], [4, 1, 1], [1, 1, 0], [3, 0, 0]], float)
    np.testing.assert_array_equal(_zone_matrix(_DOC_IMAGE, gldm.ROW_NEIGHBOURS, use_scipy), runs)


@pytest.mark.parametrize("use_scipy", [True, False])
def test_zone_labels_match_scipy_per_level(use_scipy, monkeypatch):
    """Large smooth zones with holes and snakes: same partition as scipy's 8-connected labelling."""
    monkeypatch.setattr(glszm, "USE_SCIPY_ON_CPU", use_scipy)
    rng = np.random.default_rng(5)
    smooth = [ndimage.gaussian_filter(rng.normal(size=(70, 90)), s) for s in (1, 6)]
    lev = np.stack([np.digitize(x, [-0.05, 0, 0.05]) + 1 for x in smooth])
    lev[:, 30:40, 20:60] = 0  # a hole outside the ROI
    lab = glszm.zone_labels(torch.from_numpy(lev), gldm.EIGHT_NEIGHBOURS).numpy()
    assert ((lab >= 0) == (lev > 0)).all()
    for b in range(lev.shape[0]):
        ref = np.zeros(lev[b].shape, np.int64)
        for g in range(1, lev.max() + 1):
            lab_g, n = ndimage.label(lev[b] == g, structure=np.ones((3, 3)))
            ref[lab_g > 0] = lab_g[lab_g > 0] + ref.max()
        pairs = {(int(a), int(r)) for a, r in zip(lab[b][lev[b] > 0], ref[lev[b] > 0])}
        assert len(pairs) == len({a for a, _ in pairs}) == len({r for _, r in pairs})


def test_gldm_hand_computed():
    lev = torch.tensor([[[1, 1, 2], [1, 2, 2], [3, 3, 3]]])
    p8 = gldm.gldm_matrix(lev, 3, gldm.EIGHT_NEIGHBOURS)[0, :, :4].numpy()
    np.testing.assert_array_equal(p8, [[0, 0, 3, 0], [0, 0, 3, 0], [0, 2, 1, 0]])
    prow = gldm.gldm_matrix(lev, 3, gldm.ROW_NEIGHBOURS)[0].numpy()
    np.testing.assert_array_equal(prow, [[1, 2, 0], [1, 2, 0], [0, 2, 1]])


def test_ngtdm_hand_computed_and_flat_roi():
    lev = torch.tensor([[[1, 2, 0], [0, 3, 0]]])  # (1, 1) has no left/right ROI neighbour
    n, s = ngtdm.ngtdm_matrix(lev, 3, gldm.ROW_NEIGHBOURS)
    np.testing.assert_array_equal(n[0].numpy(), [1, 1, 1])
    np.testing.assert_array_equal(s[0].numpy(), [1, 1, 0])
    f = dict(zip(feature_names(("ngtdm",)), ngtdm.features(lev.double(), lev > 0, lev, neighbourhood=gldm.ROW_NEIGHBOURS)[0].tolist()))
    assert f["ngtdm_Coarseness"] == pytest.approx(1.5, rel=1e-14)
    assert f["ngtdm_Contrast"] == pytest.approx(4 / 27, rel=1e-14)
    # flat ROI: pyradiomics' conventions (Coarseness 1e6, the rest 0)
    flat = torch.zeros(1, 6, 6, dtype=torch.int64)
    flat[0, 1:5, 1:5] = 1
    f = ngtdm.features(flat.double(), flat > 0, flat, neighbourhood=gldm.ROW_NEIGHBOURS)[0].tolist()
    assert f == [0.0, 1e6, 0.0, 0.0, 0.0]
