"""Gaze heatmaps (gazerad.gaze.heatmap) and saliency metrics (gazerad.gaze.metrics)."""

from __future__ import annotations

import numpy as np
import pytest

from gazerad.gaze.heatmap import (
    GazeHeatmap,
    GazeHeatmapd,
    gaze_heatmap,
    gaze_heatmaps,
    resize_area,
    save_heatmap_overlay,
)
from gazerad.gaze.metrics import auc_judd, cc, fixation_map, kl, nss, sim
from gazerad.gaze.record import GazeRecord


def _fix(*rows: tuple[float, float, float]) -> np.ndarray:
    """Fixations from ``(x, y, duration)`` rows, back to back in time."""
    out, t = [], 0.0
    for x, y, d in rows:
        out.append([x, y, t, t + d])
        t += d + 0.05
    return np.array(out, dtype=np.float64)


# ---------------------------------------------------------------- heatmaps


def test_heatmap_sums_to_one_float32_and_shape():
    h = gaze_heatmap(_fix((10.0, 5.0, 0.3), (30.0, 15.0, 0.2)), (20, 40), sigma=3.0)
    assert h.shape == (20, 40) and h.dtype == np.float32
    assert h.sum() == pytest.approx(1.0, abs=1e-5)
    assert (h >= 0).all()


def test_peak_at_fixation_pixel_non_square():
    # H != W and x != y: a transposed render would put the peak elsewhere (or fail)
    h = gaze_heatmap(_fix((25.3, 4.7, 0.3)), (12, 30), sigma=1.5)
    r, c = np.unravel_index(np.argmax(h), h.shape)
    assert (r, c) == (4, 25)
    # the Gaussian is evaluated at pixel centres: exact value of a neighbour relative to the peak
    rel = h[4, 26] / h[4, 25]
    expect = np.exp(-((26.5 - 25.3) ** 2 - (25.5 - 25.3) ** 2) / (2 * 1.5**2))
    assert rel == pytest.approx(expect, rel=1e-5)


def test_duration_weighting_and_count():
    f = _fix((10.5, 10.5, 0.6), (50.5, 30.5, 0.2))
    h = gaze_heatmap(f, (40, 60), sigma=2.0)
    assert h[10, 10] / h[30, 50] == pytest.approx(3.0, rel=1e-4)
    hc = gaze_heatmap(f, (40, 60), sigma=2.0, weight="count")
    assert hc[10, 10] / hc[30, 50] == pytest.approx(1.0, rel=1e-4)
    # all-zero durations fall back to counts (formats without timestamps)
    f0 = f.copy()
    f0[:, 3] = f0[:, 2]
    np.testing.assert_allclose(gaze_heatmap(f0, (40, 60), sigma=2.0), hc, atol=1e-8)


def test_sigma_deg_equals_sigma_px_times_ppd():
    f = _fix((12.0, 7.0, 0.3), (20.0, 3.0, 0.1))
    a = gaze_heatmap(f, (16, 24), sigma_deg=0.5, pixels_per_degree=6.0)
    b = gaze_heatmap(f, (16, 24), sigma=3.0)
    np.testing.assert_allclose(a, b, atol=1e-8)


def test_missing_kernel_width_is_a_clear_error():
    with pytest.raises(ValueError, match="pixels_per_degree"):
        gaze_heatmap(_fix((1.0, 1.0, 0.1)), (4, 4))
    with pytest.raises(ValueError):
        gaze_heatmap(_fix((1.0, 1.0, 0.1)), (4, 4), sigma=-1.0)


def test_empty_fixations_give_zero_map():
    h = gaze_heatmap(np.zeros((0, 4)), (5, 7), sigma=1.0)
    assert h.shape == (5, 7) and not h.any()


def test_batched_equals_single():
    rng = np.random.default_rng(0)
    recs = []
    for i in range(4):
        xy = rng.uniform([0, 0], [50, 30], (6, 2))
        d = rng.uniform(0.1, 0.4, 6)
        t = np.cumsum(d + 0.05)
        recs.append(GazeRecord(f"i{i}", "r", np.column_stack([xy, t, t + d]), image_size=(30, 50), pixels_per_degree=4.0))
    hb = gaze_heatmaps(recs)
    assert hb.shape == (4, 30, 50)
    for r, h in zip(recs, hb):
        # the batch renders all records in one pass: equal to rounding (sums in another order)
        np.testing.assert_allclose(h, gaze_heatmap(r.fixations, (30, 50), pixels_per_degree=4.0), rtol=1e-12, atol=1e-15)
    # out_shape: coordinates and sigma rescaled per axis; area mode == full render area-resized
    ho = gaze_heatmaps(recs, out_shape=(6, 10), mode="area")
    for r, h in zip(recs, ho):
        full = gaze_heatmap(r.fixations, (30, 50), pixels_per_degree=4.0, normalise=False)
        ref = resize_area(full, (6, 10))
        np.testing.assert_allclose(h, ref / ref.sum(), atol=1e-2 * ref.max() / ref.sum())  # centre sampling vs exact area
    # transforms
    np.testing.assert_array_equal(GazeHeatmap()(recs[1])[0], hb[1])
    d = GazeHeatmapd(keys="gaze")({"gaze": recs[2], "x": 1})
    np.testing.assert_array_equal(d["gaze_heatmap"][0], hb[2])
    assert d["x"] == 1


def test_different_sizes_need_out_shape():
    f = _fix((1.0, 1.0, 0.1))
    recs = [GazeRecord("a", "r", f, image_size=(4, 4), pixels_per_degree=1.0), GazeRecord("b", "r", f, image_size=(8, 4), pixels_per_degree=1.0)]
    with pytest.raises(ValueError, match="out_shape"):
        gaze_heatmaps(recs)
    assert gaze_heatmaps(recs, out_shape=(4, 4)).shape == (2, 4, 4)


def test_resize_area_exact():
    a = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_allclose(resize_area(a, (2, 2)), [[2.5, 4.5], [10.5, 12.5]])
    b = np.array([[0.0, 3.0, 6.0]])
    np.testing.assert_allclose(resize_area(b, (1, 2)), [[1.0, 5.0]])  # (0 + 3/2) / 1.5, (3/2 + 6) / 1.5


def test_overlay_png(tmp_path):
    img = np.random.default_rng(0).integers(0, 4096, (40, 60)).astype(np.uint16)
    f = _fix((10.0, 5.0, 0.3), (50.0, 30.0, 0.2))
    h = gaze_heatmap(f, (40, 60), sigma=4.0)
    p = save_heatmap_overlay(img, h, tmp_path / "o" / "ov.png", fixations=f)
    from PIL import Image

    with Image.open(p) as im:
        assert im.size == (60, 40)
    assert [q.name for q in (tmp_path / "o").iterdir()] == ["ov.png"]


# ---------------------------------------------------------------- metrics

P = np.array([[1.0, 2.0], [3.0, 4.0]])


def test_cc_hand_values():
    assert cc(P, P) == pytest.approx(1.0)
    assert cc(P, P[::-1, ::-1]) == pytest.approx(-1.0)
    assert cc(P, np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(0.0, abs=1e-12)
    assert cc(P, 3 * P + 1) == pytest.approx(1.0)
    assert np.isnan(cc(P, np.ones((2, 2))))


def test_kl_hand_values():
    gt = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert kl(np.ones((2, 2)), gt) == pytest.approx(np.log(4.0), rel=1e-9)
    assert kl(P, P) == pytest.approx(0.0, abs=1e-12)
    # sum G log(G / P) with P = (.1 .2 .3 .4), G = (.25 .25 .25 .25)
    g = np.ones((2, 2))
    expect = sum(0.25 * np.log(0.25 / p) for p in (0.1, 0.2, 0.3, 0.4))
    assert kl(P, g) == pytest.approx(expect, rel=1e-9)
    assert np.isnan(kl(P, np.zeros((2, 2))))


def test_nss_hand_values():
    fm = np.array([[0, 0], [0, 1]])
    # mean 2.5, std (ddof 1) sqrt(5/3): (4 - 2.5) / sqrt(5/3)
    assert nss(P, fm) == pytest.approx(1.5 / np.sqrt(5 / 3))
    assert nss(P, fm, ddof=0) == pytest.approx(1.5 / np.sqrt(1.25))
    assert nss(P, np.array([[1, 0], [0, 1]])) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(nss(P, np.zeros((2, 2))))
    assert np.isnan(nss(np.ones((2, 2)), fm))


def test_auc_judd_hand_values():
    s = np.array([[0.1, 0.4], [0.8, 0.3]])
    fm = np.array([[1, 0], [1, 0]])
    # thresholds 0.8, 0.1: (fp, tp) = (0, .5), (1, 1) -> area 0.75
    assert auc_judd(s, fm) == pytest.approx(0.75)
    assert auc_judd(s, np.array([[0, 0], [1, 0]])) == pytest.approx(1.0)
    assert auc_judd(s, np.array([[1, 0], [0, 0]])) == pytest.approx(0.5)  # worst case: the chance diagonal
    assert np.isnan(auc_judd(s, np.zeros((2, 2))))
    assert np.isnan(auc_judd(s, np.ones((2, 2))))


def test_sim_hand_values():
    a = np.array([[1.0, 1.0], [0.0, 0.0]])
    b = np.array([[1.0, 0.0], [0.0, 0.0]])
    assert sim(a, b) == pytest.approx(0.5)
    assert sim(a, a) == pytest.approx(1.0)
    assert sim(b, b[::-1]) == pytest.approx(0.0)
    # without min-max: (.1 .2 .3 .4) vs uniform -> .1 + .2 + .25 + .25
    assert sim(P, np.ones((2, 2)), minmax=False) == pytest.approx(0.8)
    assert np.isnan(sim(P, np.ones((2, 2))))


def test_metrics_batched():
    rng = np.random.default_rng(3)
    pred = rng.random((3, 5, 6))
    gt = rng.random((3, 5, 6))
    fm = rng.random((3, 5, 6)) > 0.7
    for fn, second in ((cc, gt), (kl, gt), (sim, gt), (nss, fm), (auc_judd, fm)):
        out = fn(pred, second)
        assert out.shape == (3,)
        for i in range(3):
            assert out[i] == pytest.approx(fn(pred[i], second[i]))
    with pytest.raises(ValueError):
        cc(pred, gt[:, :4])


def test_fixation_map():
    m = fixation_map(np.array([[0.5, 0.5], [5.9, 2.1], [100.0, 1.0], [-1.0, 0.0]]), (3, 6))
    assert m.sum() == 2 and m[0, 0] and m[2, 5]


def test_heatmap_transforms_are_monai_transforms_that_compose():
    from monai.transforms import Compose, MapTransform, Transform

    assert issubclass(GazeHeatmap, Transform) and not issubclass(GazeHeatmap, MapTransform)
    assert issubclass(GazeHeatmapd, MapTransform)
    rec = GazeRecord("a", "r", _fix((3.0, 2.0, 0.2), (7.0, 5.0, 0.1)), image_size=(6, 9), pixels_per_degree=2.0)
    ref = gaze_heatmaps([rec], out_shape=(3, 4), mode="area")
    out = Compose([GazeHeatmap(out_shape=(3, 4), mode="area")])(rec)
    assert isinstance(out, np.ndarray) and out.shape == (1, 3, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out, ref)
    full = Compose([GazeHeatmap()])(rec)  # default: the record's own image size
    assert full.shape == (1, 6, 9) and full.sum() == pytest.approx(1.0, rel=1e-6)

    chain = Compose([GazeHeatmapd(keys=["gaze", "other"], out_shape=(3, 4), mode="area", allow_missing_keys=True)])
    d = chain({"gaze": rec, "label": 1})
    np.testing.assert_array_equal(d["gaze_heatmap"], ref)
    assert d["label"] == 1 and d["gaze"] is rec and "other_heatmap" not in d
    assert GazeHeatmapd(keys="gaze", postfix="_h")({"gaze": rec})["gaze_h"].shape == (1, 6, 9)
    with pytest.raises(KeyError):
        GazeHeatmapd(keys="other")({"gaze": rec})
    with pytest.raises(TypeError, match="sigmaa"):
        GazeHeatmap(sigmaa=3.0)


def test_heatmap_functions_do_not_import_monai():
    """The similarity schemes and the relation matrix use gaze.heatmap; MONAI stays out of them."""
    import subprocess
    import sys

    code = "import sys, gazerad.gaze.heatmap, gazerad.gaze.schemes, gazerad.gaze.relation; assert 'monai' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
