"""MultiMatch: numerical parity with multimatch-gaze, batched == pairwise, scheme contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gazerad.gaze import GazeRecord, get_scheme
from gazerad.gaze.multimatch import (
    DIMENSIONS,
    MultiMatchScheme,
    multimatch,
    multimatch_all_pairs,
    multimatch_block,
    simplify_scanpath,
)

mmg = pytest.importorskip("multimatch_gaze")

SCREEN = (1920, 1080)
AUTHORS = dict(amplitude_threshold=160.0, direction_threshold=45.0, duration_threshold=0.1)


def _rec(s: np.ndarray) -> np.ndarray:
    return np.rec.fromarrays([s[:, 0], s[:, 1], s[:, 2]], names="start_x,start_y,duration")


def _reference(a: np.ndarray, b: np.ndarray, screen, th: dict | None = None) -> np.ndarray:
    th = th or {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = mmg.docomparison(
            _rec(a),
            _rec(b),
            screensize=list(screen),
            grouping=bool(th),
            TAmp=th.get("amplitude_threshold", 0.0),
            TDir=th.get("direction_threshold", 0.0),
            TDur=th.get("duration_threshold", 0.0),
        )
    return np.asarray(r, dtype=float)


def _uniform(rng: np.random.Generator, n: int, screen) -> np.ndarray:
    """Fixations anywhere on the screen, durations 50-600 ms."""
    return np.column_stack([rng.uniform(0, screen[0], n), rng.uniform(0, screen[1], n), rng.uniform(0.05, 0.6, n)])


def _walk(rng: np.random.Generator, n: int, screen, step: float = 150.0) -> np.ndarray:
    """Gaze-like random walk (many short saccades, some short fixations) folded into the screen."""
    size = np.asarray(screen, dtype=float)
    xy = size / 2 + np.cumsum(rng.normal(0, step, (n, 2)), axis=0)
    xy = np.abs((xy + size) % (2 * size) - size)
    return np.column_stack([xy, rng.uniform(0.04, 0.5, n)])


# ------------------------------------------------------------------------------------------
# parity with multimatch-gaze
# ------------------------------------------------------------------------------------------


def test_parity_without_simplification_100_pairs():
    rng = np.random.default_rng(0)
    worst = 0.0
    for k in range(100):
        screen = SCREEN if k % 2 == 0 else (int(rng.integers(300, 3000)), int(rng.integers(300, 3000)))
        make = _uniform if k % 3 else _walk
        a = make(rng, int(rng.integers(5, 41)), screen)
        b = make(rng, int(rng.integers(5, 41)), screen)
        ours = multimatch(a, b, screen)
        ref = _reference(a, b, screen)
        assert ours.shape == (5,) and np.isfinite(ours).all()
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert worst < 1e-6, worst


def test_parity_with_authors_thresholds():
    rng = np.random.default_rng(1)
    compared = simplified = 0
    for _ in range(60):
        a = _walk(rng, int(rng.integers(5, 41)), SCREEN)
        b = _walk(rng, int(rng.integers(5, 41)), SCREEN)
        try:
            ref = _reference(a, b, SCREEN, AUTHORS)
        except (IndexError, ValueError):  # the reference's own failures (see module notes)
            continue
        ours = multimatch(a, b, SCREEN, **AUTHORS)
        np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
        compared += 1
        simplified += len(simplify_scanpath(a, **AUTHORS)) < len(a) - 1
    assert compared >= 50
    assert simplified >= 30  # the thresholds really group saccades


@pytest.mark.parametrize("th", [(600.0, 60.0, 0.3), (400.0, 30.0, 0.2), (0.0, 90.0, 0.4), (300.0, 0.0, 0.3)])
def test_parity_with_aggressive_grouping(th):
    """Large thresholds exercise every branch of the grouping, incl. the last-saccade fold."""
    rng = np.random.default_rng(2)
    kw = dict(zip(("amplitude_threshold", "direction_threshold", "duration_threshold"), th))
    compared = 0
    for _ in range(25):
        a = _walk(rng, int(rng.integers(3, 25)), SCREEN, step=250.0)
        b = _walk(rng, int(rng.integers(3, 25)), SCREEN, step=250.0)
        try:
            ref = _reference(a, b, SCREEN, kw)
        except (IndexError, ValueError):
            continue
        np.testing.assert_allclose(multimatch(a, b, SCREEN, **kw), ref, atol=1e-6, rtol=0)
        compared += 1
    assert compared >= 10


def test_simplification_matches_reference_structure():
    """Grouped saccades (start, vector) and the durations they carry, pass for pass."""
    from multimatch_gaze import multimatch_gaze as ref

    rng = np.random.default_rng(11)
    folds = 0
    for k in range(60):
        th = [(160.0, 45.0, 0.1), (600.0, 60.0, 0.3), (300.0, 0.0, 0.3), (0.0, 90.0, 0.4)][k % 4]
        s = _walk(rng, int(rng.integers(3, 30)), SCREEN, step=250.0)
        try:
            path = ref.simplify_scanpath(ref.gen_scanpath_structure(_rec(s)), th[0], th[1], th[2])
        except (IndexError, ValueError):
            continue
        ours = simplify_scanpath(s, *th)
        sac = path["sac"]
        expect = np.column_stack([sac["x"], sac["y"], sac["lenx"], sac["leny"]]).reshape(-1, 4)
        np.testing.assert_allclose(ours[:, :4], expect, atol=1e-9, rtol=0)
        np.testing.assert_allclose(ours[:, 4], np.asarray(path["fix"]["dur"][: len(ours)], dtype=float), atol=0, rtol=0)
        folds += len(path["fix"]["dur"]) > len(sac["x"]) + 1  # the last-saccade fold happened
    assert folds >= 3


def test_parity_with_exact_ties():
    """Coarse integer coordinates and straight lines give equal-cost alignments: the path (and
    every dimension) must still be the one multimatch-gaze's Dijkstra picks."""
    rng = np.random.default_rng(3)
    for _ in range(40):
        n1, n2 = rng.integers(3, 20, 2)
        a, b = _uniform(rng, n1, SCREEN), _uniform(rng, n2, SCREEN)
        for s in (a, b):
            s[:, :2] = np.round(s[:, :2] / 200) * 200
            s[:, 2] = np.round(s[:, 2], 1) + 0.1
        np.testing.assert_allclose(multimatch(a, b, SCREEN), _reference(a, b, SCREEN), atol=1e-6, rtol=0)
    for n, m in [(10, 10), (10, 8), (7, 12)]:
        a = np.column_stack([np.arange(n) * 100.0, np.full(n, 500.0), np.full(n, 0.2)])
        b = np.column_stack([np.arange(m) * 100.0, np.full(m, 600.0), np.full(m, 0.2)])
        np.testing.assert_allclose(multimatch(a, b, SCREEN), _reference(a, b, SCREEN), atol=1e-6, rtol=0)


def test_too_short_scanpaths_are_nan_like_the_reference():
    rng = np.random.default_rng(4)
    long = _uniform(rng, 8, SCREEN)
    for n in (0, 1, 2):
        short = _uniform(rng, n, SCREEN)
        assert np.isnan(multimatch(long, short, SCREEN)).all()
        assert np.isnan(multimatch(short, long, SCREEN)).all()
        if n:
            assert np.isnan(_reference(long, short, SCREEN)).all()
    out = multimatch_all_pairs([long, _uniform(rng, 2, SCREEN), long], SCREEN)
    assert np.isnan(out[1]).all() and np.isnan(out[:, 1]).all()
    np.testing.assert_array_equal(out[0, 2], np.ones(5))


def test_input_forms_and_validation():
    rng = np.random.default_rng(5)
    a, b = _uniform(rng, 9, SCREEN), _uniform(rng, 12, SCREEN)
    np.testing.assert_array_equal(multimatch(_rec(a), _rec(b), SCREEN), multimatch(a, b, SCREEN))
    np.testing.assert_array_equal(multimatch(a.tolist(), b, list(SCREEN)), multimatch(a, b, SCREEN))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        multimatch(a[:, :2], b, SCREEN)
    with pytest.raises(ValueError, match="screen_size"):
        multimatch(a, b, (1920,))
    bad = a.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        multimatch(bad, b, SCREEN)


def test_zero_durations_give_a_finite_duration_dimension():
    """Deviation: the reference returns NaN when two aligned fixations both last 0 s."""
    rng = np.random.default_rng(6)
    a, b = _uniform(rng, 10, SCREEN), _uniform(rng, 10, SCREEN)
    a[:, 2] = 0.0
    b[:, 2] = 0.0
    out = multimatch(a, b, SCREEN)
    assert np.isfinite(out).all() and out[4] == 1.0
    np.testing.assert_allclose(out[:4], _reference(a, b, SCREEN)[:4], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------
# batched == pairwise
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("th", [{}, AUTHORS])
def test_all_pairs_equals_pairwise(th):
    rng = np.random.default_rng(7)
    sps = [(_walk if k % 2 else _uniform)(rng, int(rng.integers(5, 41)), SCREEN) for k in range(30)]
    # a small chunk forces many batches of mixed sizes
    allp = multimatch_all_pairs(sps, SCREEN, chunk=97, **th)
    assert allp.shape == (30, 30, 5)
    for i in range(30):
        for j in range(i, 30):
            # batched and pairwise sum in different orders: equal to rounding, not bit for bit
            np.testing.assert_allclose(allp[i, j], multimatch(sps[i], sps[j], SCREEN, **th), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(allp, allp.transpose(1, 0, 2))
    np.testing.assert_array_equal(allp[np.arange(30), np.arange(30)], np.ones((30, 5)))
    full = multimatch_all_pairs(sps, SCREEN, symmetric=False, **th)
    np.testing.assert_allclose(full, allp, atol=1e-12, rtol=0)
    blk = multimatch_block(sps[:7], sps[10:], SCREEN, chunk=50, **th)
    np.testing.assert_allclose(blk, full[:7, 10:], rtol=1e-12, atol=1e-12)
    # and against the reference on a few of those pairs
    for i, j in [(0, 1), (2, 17), (29, 5)]:
        try:
            ref = _reference(sps[i], sps[j], SCREEN, th)
        except (IndexError, ValueError):
            continue
        np.testing.assert_allclose(full[i, j], ref, atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------
# the similarity scheme
# ------------------------------------------------------------------------------------------


def _records(rng: np.random.Generator, counts, size=(512, 640)) -> list[GazeRecord]:
    out = []
    for k, n in enumerate(counts):
        f = _walk(rng, n, (size[1], size[0]), step=80.0)
        t_end = np.cumsum(f[:, 2] + 0.03)
        fix = np.column_stack([f[:, :2], t_end - f[:, 2], t_end])
        out.append(GazeRecord("img", f"R{k}", fix, image_size=size))
    return out


def test_scheme_is_registered_with_documented_defaults():
    s = get_scheme("multimatch")
    assert isinstance(s, MultiMatchScheme) and s.name == "multimatch"
    assert s.params() == {
        "weights": (0.1, 0.1, 0.1, 0.1, 0.6),
        "screen_size": None,
        "amplitude_threshold": 0.0,
        "direction_threshold": 0.0,
        "duration_threshold": 0.0,
    }
    with pytest.raises(ValueError, match="weights"):
        MultiMatchScheme(weights=(1, 1))


@pytest.mark.parametrize("params", [{}, dict(amplitude_threshold=40.0, direction_threshold=45.0, duration_threshold=0.1)])
def test_scheme_contract(params):
    rng = np.random.default_rng(8)
    recs = _records(rng, [0, 1, 2, 3, 5, 12, 20, 30, 30, 41])
    recs.append(recs[7])  # a duplicate record
    s = MultiMatchScheme(**params)
    f = s.features(recs)
    blk = s.block(f, f)
    assert blk.shape == (11, 11)
    assert np.all((blk >= 0) & (blk <= 1))
    np.testing.assert_array_equal(np.diag(blk), np.ones(11))
    np.testing.assert_allclose(blk, blk.T, atol=1e-12)
    assert blk[7, 10] == 1.0
    for i in range(11):
        for j in range(11):
            assert s.similarity(recs[i], recs[j]) == pytest.approx(blk[i, j], abs=1e-12)
    # separate chunks (fa is not fb) give the same values
    sub = s.block(s.take(f, [3, 5, 9]), s.take(f, slice(4, 11)))
    np.testing.assert_allclose(sub, blk[np.ix_([3, 5, 9], range(4, 11))], atol=1e-12)
    m = s.matrix(recs)
    np.testing.assert_allclose(m, blk, atol=1e-12)
    # records without a saccade: 0 against others, 1 against an identical record
    assert blk[0, 1] == 0.0 and blk[1, 5] == 0.0 and blk[0, 7] == 0.0
    one = GazeRecord("img", "x", recs[1].fixations.copy(), image_size=recs[1].image_size)
    assert s.similarity(recs[1], one) == 1.0
    # with >= 2 fixations every pair is a real comparison, strictly below 1 here
    assert np.all(blk[2:10, 2:10][~np.eye(8, dtype=bool)] < 1)


def test_scheme_dimensions_match_multimatch_with_image_size_as_screen():
    """image_size is (H, W); the screen is (W, H); x = column, y = row."""
    rng = np.random.default_rng(9)
    recs = _records(rng, [6, 15, 22, 33], size=(300, 1200))
    s = MultiMatchScheme()
    dims = s.dimensions(s.features(recs), s.features(recs))
    sps = [np.column_stack([r.xy, r.durations]) for r in recs]
    for i in range(4):
        for j in range(4):
            ref = _reference(sps[i], sps[j], (1200, 300))
            np.testing.assert_allclose(dims[i, j], ref, atol=1e-6, rtol=0)
    w = np.array([0.1, 0.1, 0.1, 0.1, 0.6])
    np.testing.assert_allclose(s.block(s.features(recs), s.features(recs)), np.clip(dims @ w, 0, 1), atol=1e-12)
    # an explicit screen size overrides image_size
    s2 = MultiMatchScheme(screen_size=SCREEN, weights=(1, 0, 0, 0, 0))
    v = s2.block(s2.features(recs[:1]), s2.features(recs[1:2]))[0, 0]
    assert v == pytest.approx(multimatch(sps[0], sps[1], SCREEN)[0], abs=1e-12)
    assert DIMENSIONS == ("vector", "direction", "length", "position", "duration")


def test_scheme_single_saccade_records_use_the_forced_alignment():
    """2 fixations (beyond the reference, which needs 3): the 1 x n grid has one path."""
    rng = np.random.default_rng(12)
    a, b = _records(rng, [2, 9])
    s = MultiMatchScheme()
    got = s.dimensions(s.features([a]), s.features([b]))[0, 0]
    sa, sb = np.diff(a.xy, axis=0)[0], np.diff(b.xy, axis=0)
    ta = np.arctan2(sa[1], sa[0]) % (2 * np.pi)
    tb = np.arctan2(sb[:, 1], sb[:, 0]) % (2 * np.pi)
    ang = np.abs(ta - tb)
    da, db = a.durations[0], b.durations[:-1]
    diag = np.hypot(640, 512)
    expect = [
        1 - np.median(np.linalg.norm(sb - sa, axis=1)) / (2 * diag),
        1 - np.median(np.minimum(ang, 2 * np.pi - ang)) / np.pi,
        1 - np.median(np.abs(np.linalg.norm(sb, axis=1) - np.linalg.norm(sa))) / diag,
        1 - np.median(np.linalg.norm(b.xy[:-1] - a.xy[0], axis=1)) / diag,
        1 - np.median(np.abs(da - db) / np.maximum(da, db)),
    ]
    np.testing.assert_allclose(got, expect, atol=1e-9)
    back = s.dimensions(s.features([b]), s.features([a]))[0, 0]
    np.testing.assert_allclose(back, got, atol=1e-12)


def test_scheme_without_image_size_uses_fixation_extent():
    rng = np.random.default_rng(10)
    recs = [GazeRecord("img", str(k), r.fixations) for k, r in enumerate(_records(rng, [10, 14]))]
    s = MultiMatchScheme()
    f = s.features(recs)
    ext = np.maximum(f[0].extent, f[1].extent)
    assert ext[0] <= 640 and ext[1] <= 512
    sps = [np.column_stack([r.xy, r.durations]) for r in recs]
    np.testing.assert_allclose(s.dimensions(f, f)[0, 1], multimatch(sps[0], sps[1], tuple(ext)), atol=1e-12)
