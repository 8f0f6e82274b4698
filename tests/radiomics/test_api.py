"""The radiomics extractor API: both backends agree, bad input fails clearly, standardiser, CSV."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from gazerad.errors import InputError
from gazerad.radiomics import FEATURE_CLASSES, FeatureStandardizer, RadiomicsExtractor, feature_names, torch_features
from tests.support.radiomics_cases import parity_cases


def test_feature_names_match_pyradiomics() -> None:
    import radiomics.featureextractor  # noqa: F401 - registers classes
    from radiomics import getFeatureClasses

    names = feature_names()
    assert len(names) == 102 and len(set(names)) == 102
    classes = getFeatureClasses()
    for c in FEATURE_CLASSES:
        live = {n for n, deprecated in classes[c].getFeatureNames().items() if not deprecated}
        ours = {n.split("_", 1)[1] for n in names if n.startswith(c + "_")}
        assert ours == live, c


def test_torch_backend_equals_reference_through_the_api() -> None:
    """The public API on a mixed-size list (padded batches of 5) matches pyradiomics on all 102 features."""
    cases = parity_cases()
    images, masks = [c[0] for c in cases if c[2] == 25.0], [c[1] for c in cases if c[2] == 25.0]
    ours = RadiomicsExtractor("torch", bin_width=25.0, batch_size=5, device="cpu").extract(images, masks)
    ref = RadiomicsExtractor("pyradiomics", bin_width=25.0, n_workers=2).extract(images, masks)
    assert ours.names == ref.names == feature_names()
    assert np.isfinite(ref.values).all()
    # assert_parity reports against the case list: compare row by row
    bad = np.abs(ours.values - ref.values) > 1e-8 + 1e-4 * np.abs(ref.values)
    assert not bad.any(), [(i, ours.names[j], ours.values[i, j], ref.values[i, j]) for i, j in zip(*np.nonzero(bad))][:10]


@pytest.mark.parametrize("backend", ["torch", "pyradiomics"])
def test_bad_input_is_named(backend: str) -> None:
    ex = RadiomicsExtractor(backend, device="cpu")
    img = np.random.default_rng(0).normal(100, 20, (32, 32))
    good = np.zeros((32, 32), bool)
    good[5:15, 5:15] = True
    with pytest.raises(InputError, match="case-b.*mask is empty"):
        ex.extract([img, img], [good, np.zeros((32, 32), bool)], ids=["case-a", "case-b"])
    with pytest.raises(InputError, match="case-a.*does not match image shape"):
        ex.extract([img], [np.ones((40, 40), bool)], ids=["case-a"])  # mask larger than (partly outside) the image
    line = np.zeros((32, 32), bool)
    line[4, 2:20] = True
    with pytest.raises(InputError, match="at least 2 rows and 2 columns"):
        ex.extract([img], [line], ids=["x"])
    nan = img.copy()
    nan[7, 7] = np.nan
    with pytest.raises(InputError, match="NaN"):
        ex.extract([nan], [good], ids=["x"])
    with pytest.raises(InputError, match="binary"):
        ex.extract([img], [good.astype(np.uint8) * 3], ids=["x"])
    with pytest.raises(InputError, match="2-D"):
        ex.extract([img[None]], [good[None]], ids=["x"])


def test_constant_image_policy() -> None:
    """A constant ROI gives finite values in both backends, equal to each other (documented policy)."""
    img = np.full((24, 24), 42.0)
    m = np.zeros((24, 24), bool)
    m[4:20, 3:18] = True
    t = RadiomicsExtractor("torch", device="cpu").extract([img], [m]).values
    r = RadiomicsExtractor("pyradiomics").extract([img], [m]).values
    assert np.isfinite(t).all() and np.isfinite(r).all()
    assert np.allclose(t, r, rtol=1e-4, atol=1e-8)


def test_whole_image_roi_works_in_both_backends() -> None:
    """pyradiomics refuses a mask without background; the reference backend pads a frame."""
    img = np.random.default_rng(1).normal(100, 20, (20, 20))
    m = np.ones((20, 20), bool)
    t = RadiomicsExtractor("torch", device="cpu").extract([img], [m]).values
    r = RadiomicsExtractor("pyradiomics").extract([img], [m]).values
    assert np.allclose(t, r, rtol=1e-4, atol=1e-8)


def test_extract_tensor_on_a_batch_matches_list_api() -> None:
    cases = [c for c in parity_cases() if c[0].shape == (64, 64) and c[2] == 25.0]
    img = torch.from_numpy(np.stack([c[0] for c in cases]))
    msk = torch.from_numpy(np.stack([c[1] for c in cases]))
    ex = RadiomicsExtractor("torch", device="cpu")
    a = ex.extract_tensor(img, msk).numpy()
    b = ex.extract([c[0] for c in cases], [c[1] for c in cases]).values
    assert np.allclose(a, b, rtol=1e-10, atol=1e-12)
    assert len(cases) >= 2
    empty = msk.clone()
    empty[1] = False
    with pytest.raises(InputError, match="sample 1.*empty"):
        torch_features(img, empty)
    # MONAI's channel-first batches (what CAMs and transforms give) read the same
    torch.testing.assert_close(ex.extract_tensor(img[:, None], msk[:, None]), torch.from_numpy(a), rtol=0, atol=0)
    with pytest.raises(InputError, match=r"image must be a \(B, H, W\) or \(B, 1, H, W\) batch, got shape \(2, 2, 64, 64\)"):
        ex.extract_tensor(img[:2, None].expand(2, 2, 64, 64), msk[:2, None].expand(2, 2, 64, 64))


def test_standardizer_fit_transform_and_state(tmp_path: Path) -> None:
    x = np.array([[1.0, 5.0, np.nan], [3.0, 5.0, 2.0], [5.0, 5.0, np.inf]])
    s = FeatureStandardizer().fit(x, ["a", "b", "c"])
    z = s.transform(x)
    assert np.allclose(z[:, 0], [-1.2247449, 0.0, 1.2247449])
    assert np.all(z[:, 1] == 0.0)  # constant feature: scale 1, centred
    assert z[0, 2] == 0.0 and z[2, 2] == 0.0  # NaN / inf -> 0
    zt = s.transform(torch.from_numpy(x))
    assert isinstance(zt, torch.Tensor) and np.allclose(zt.numpy(), z)
    s2 = FeatureStandardizer.from_state_dict(s.state_dict())
    assert np.allclose(s2.transform(x), z) and s2.names == ["a", "b", "c"]
    with pytest.raises(RuntimeError, match="not fitted"):
        FeatureStandardizer().transform(x)


def test_table_csv_is_written_atomically(tmp_path: Path) -> None:
    img = np.random.default_rng(2).normal(100, 20, (24, 24))
    m = np.zeros((24, 24), bool)
    m[3:20, 4:21] = True
    table = RadiomicsExtractor("torch", classes=("firstorder", "glcm"), device="cpu").extract([img, img + 1], [m, m], ids=["p", "q"])
    assert table.values.shape == (2, 18 + 24)
    out = tmp_path / "f.csv"
    table.to_csv(out)
    rows = list(csv.reader(out.open()))
    assert rows[0][:2] == ["id", "firstorder_10Percentile"] and [r[0] for r in rows[1:]] == ["p", "q"]
    assert float(rows[2][table.names.index("firstorder_Mean") + 1]) == pytest.approx(table.column("firstorder_Mean")[1])
    assert [p.name for p in tmp_path.iterdir()] == ["f.csv"]


def test_concurrent_calls_from_threads_agree_and_restore_threads() -> None:
    """Two Python threads extracting at once (each with 2 torch threads, batches of 3 and 4 so
    GLSZM's label pool differs per call) get the serial results, and torch's thread count is
    restored afterwards (the CPU path runs torch on one thread inside the call only)."""
    import threading

    rng = np.random.default_rng(3)
    batches = []
    for b in (3, 4):
        img = torch.from_numpy(rng.uniform(0, 255, (b, 40, 36)))
        msk = torch.from_numpy(rng.random((b, 40, 36)) < 0.7)
        msk[:, 5:30, 5:30] = True
        batches.append((img, msk))
    want = [torch_features(i, m, 25.0) for i, m in batches]
    errors: list[BaseException] = []
    got: dict[tuple[int, int], torch.Tensor] = {}

    def work(k: int) -> None:
        torch.set_num_threads(2)
        try:
            for rep in range(15):
                got[(k, rep)] = torch_features(*batches[k], 25.0)
            assert torch.get_num_threads() == 2
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (k, _), v in got.items():
        assert torch.equal(v, want[k])


def test_cpu_paths_agree_on_degenerate_ranges_and_non_binary_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A denormal value range (the fast order statistics' bucket scale overflows) and a 0/255 mask
    passed straight to the neighbourhood classes give the same values on both CPU paths."""
    from gazerad.radiomics import torch_backend
    from gazerad.radiomics.discretize import discretize
    from gazerad.radiomics.torch_backend import gldm, ngtdm

    tiny = torch.zeros(1, 4, 4, dtype=torch.float64)
    tiny[0, 0, 0], tiny[0, 1, 1] = 5e-324, 1e-310
    ones = torch.ones(1, 4, 4, dtype=torch.bool)
    rng = np.random.default_rng(4)
    img = torch.from_numpy(rng.uniform(0, 255, (2, 30, 30)))
    msk = torch.from_numpy(rng.random((2, 30, 30)) < 0.6)
    msk[:, 0, :] = msk[:, :, 0] = True
    lev = discretize(img, msk, 25.0)
    mask255 = msk.to(torch.uint8) * 255
    results = []
    for fast in (True, False):
        monkeypatch.setattr(torch_backend, "CPU_FAST_PATHS", fast)
        results.append(
            [
                torch_features(tiny, ones, 1.0, ("firstorder",)),
                gldm.features(img, mask255, lev),
                ngtdm.features(img, mask255, lev),
            ]
        )
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, equal_nan=True)
    # a 0/255 mask selects like a boolean one
    torch.testing.assert_close(results[0][1], gldm.features(img, msk, lev), rtol=1e-12, atol=1e-12)


def test_torch_backend_process_pool_matches_in_process() -> None:
    """``n_workers=2`` on CPU (batches on a process pool, pairs cropped to their ROI box) gives
    the in-process values, in input order, and the pool can be closed and re-made."""
    cases = parity_cases()
    images, masks = [c[0] for c in cases], [c[1] for c in cases]
    ids = [c[3] for c in cases]
    single = RadiomicsExtractor("torch", bin_width=25.0, device="cpu", batch_size=4).extract(images, masks, ids)
    with RadiomicsExtractor("torch", bin_width=25.0, device="cpu", batch_size=4, n_workers=2) as ex:
        pooled = ex.extract(images, masks, ids)
        assert ex._pool is not None
    assert ex._pool is None
    again = ex.extract(images[:3], masks[:3], ids[:3])  # a new pool after close()
    ex.close()
    assert pooled.ids == ids and pooled.names == single.names
    np.testing.assert_allclose(pooled.values, single.values, rtol=1e-12, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(again.values, single.values[:3], rtol=1e-12, atol=1e-12, equal_nan=True)


def test_too_many_grey_levels_is_a_clear_error_not_a_memory_error() -> None:
    """A bin width far below the ROI's range (25,501 levels) is refused by name before the dense
    GLCM/NGTDM matrices are built; classes without them still run."""
    rng = np.random.default_rng(8)
    img = torch.from_numpy(rng.uniform(0, 255, (2, 12, 12)))
    img[1, 0, 0], img[1, 0, 1] = 0.0, 255.0
    msk = torch.ones(2, 12, 12, dtype=torch.bool)
    with pytest.raises(InputError, match=r"scan-b.*grey levels in the ROI.*larger bin width"):
        torch_features(img, msk, 0.01, names=["scan-a", "scan-b"])
    out = torch_features(img, msk, 0.01, ("firstorder", "glrlm"))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", ["torch", "pyradiomics"])
def test_errors_in_pool_workers_reach_the_caller_as_input_errors(backend: str) -> None:
    """An InputError raised inside a worker process crosses the pool intact (it used to fail to
    unpickle, which broke the pool: BrokenProcessPool instead of the named sample)."""
    rng = np.random.default_rng(9)
    images = [rng.uniform(0, 255, (30, 30)) for _ in range(4)]
    masks = [np.ones((30, 30), bool) for _ in range(4)]
    if backend == "pyradiomics":
        images[2][4, 4] = np.nan  # checked inside the pyradiomics worker
        bin_width, match = 25.0, "scan-2: image has NaN"
    else:
        bin_width, match = 0.01, "scan-.: bin width 0.01 gives .* grey levels"  # refused inside the torch worker
    with RadiomicsExtractor(backend, bin_width=bin_width, device="cpu", n_workers=2) as ex:
        with pytest.raises(InputError, match=match):
            ex.extract(images, masks, [f"scan-{i}" for i in range(4)])
