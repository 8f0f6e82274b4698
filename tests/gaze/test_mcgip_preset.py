"""The ``mcgip`` rendering preset of the moment, dHash and TIMA schemes (issue 17, item 4).

The reference below is an independent implementation of the authors' rendering pipeline,
written from the facts in METHODS ("Authors' rendering pipeline"), with numpy, scipy,
scikit-learn and PIL; it calls nothing of gazerad's rendering or similarity code:

- moment / dHash: an 800 x 800 point canvas, a pixel set once per fixation position
  (``floor(x / W * 800)``, ``floor(y / H * 800)``), blurred with a Gaussian of sigma 30.2
  canvas px (FFT convolution, zero outside); TIMA: each moment's fixations on the image's
  own grid, each adding a ``floor(H / 10)`` px square window of a Gaussian with sigma
  window / 6; fixations outside the image are dropped;
- the full-size map scaled to max 255 and floored to 8 bit, then resized: an area average
  to 32 x 32 (pixels repeated to a multiple of 32, block means; PIL ``BOX`` agrees where
  the side is a multiple of 32), OpenCV-style bilinear to 9 x 8 for dHash
  (``scipy.ndimage.map_coordinates``), rounded half up;
- TIMA moments in DBSCAN label order; a record whose points are all noise is one moment
  (gazerad's rule; the authors' code fails there);
- the similarity maths (rd, ``(M00, Hu1)``, dHash bits and cosine, DTW) written again.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.signal import fftconvolve
from sklearn.cluster import DBSCAN

from gazerad.gaze.record import GazeRecord
from gazerad.gaze.schemes import get_scheme

CANVAS = 800
SIGMA = 30.2
HALF_UP = 1e-9  # exact halves round up, whatever the float error of the path to them


# ---------------------------------------------------------------- the reference (authors' way)


def _inside(f: np.ndarray, h: int, w: int) -> np.ndarray:
    return f[(f[:, 0] >= 0) & (f[:, 0] < w) & (f[:, 1] >= 0) & (f[:, 1] < h)]


def ref_canvas_map(f: np.ndarray, h: int, w: int) -> np.ndarray:
    """8-bit 800 x 800 map: point canvas (each pixel set once), Gaussian blur, floor(255 m / max)."""
    pts = np.zeros((CANVAS, CANVAS))
    f = _inside(f, h, w)
    cols = np.minimum((f[:, 0] / w * CANVAS).astype(int), CANVAS - 1)
    rows = np.minimum((f[:, 1] / h * CANVAS).astype(int), CANVAS - 1)
    pts[rows, cols] = 1.0
    d = np.arange(-(CANVAS - 1), CANVAS)
    k = np.exp(-0.5 * (d / SIGMA) ** 2)
    m = fftconvolve(fftconvolve(pts, k[:, None], mode="same"), k[None, :], mode="same")
    m = np.clip(m, 0.0, None)
    return np.floor(255.0 * m / m.max())


def ref_window_map(f: np.ndarray, h: int, w: int) -> np.ndarray:
    """8-bit H x W map of TIMA's moments: a window of floor(H / 10) px, sigma window / 6."""
    win = max(1, int(h / 10))
    s = win / 6.0
    lo = -(win // 2)
    off = np.arange(lo, lo + win)
    kern = np.outer(np.exp(-0.5 * (off / s) ** 2), np.exp(-0.5 * (off / s) ** 2))
    m = np.zeros((h, w))
    for x, y in _inside(f, h, w)[:, :2]:
        cx, cy = int(x), int(y)
        for dy in range(win):
            r = cy + lo + dy
            if not 0 <= r < h:
                continue
            for dx in range(win):
                c = cx + lo + dx
                if 0 <= c < w:
                    m[r, c] += kern[dy, dx]
    return np.floor(255.0 * m / m.max()) if m.max() > 0 else m


def ref_box32(img8: np.ndarray) -> np.ndarray:
    """Area average to 32 x 32 (OpenCV ``INTER_AREA``): each axis repeated to a multiple of 32,
    then block means; rounded half up as an 8-bit image. PIL's ``BOX`` on a float image
    gives the same where the side is a multiple of 32 (checked)."""
    a = np.asarray(img8, dtype=np.float64)
    for axis in (0, 1):
        n = a.shape[axis]
        k = 32 // np.gcd(n, 32)
        a = np.repeat(a, k, axis=axis)
        a = a.reshape(a.shape[:axis] + (32, n * k // 32) + a.shape[axis + 1 :]).mean(axis=axis + 1)
    if img8.shape[0] % 32 == 0 and img8.shape[1] % 32 == 0:
        im = Image.fromarray(img8.astype(np.float32), mode="F").resize((32, 32), Image.Resampling.BOX)
        np.testing.assert_allclose(np.asarray(im, dtype=np.float64), a, atol=1e-3)
    return np.floor(a + 0.5 + HALF_UP)


def ref_bilinear_9x8(img8: np.ndarray) -> np.ndarray:
    """OpenCV ``INTER_LINEAR`` to 9 wide x 8 high: centres at (i + .5) n / m - .5, edge-clamped."""
    n_r, n_c = img8.shape
    r = np.clip((np.arange(8) + 0.5) * n_r / 8 - 0.5, 0, n_r - 1)
    c = np.clip((np.arange(9) + 0.5) * n_c / 9 - 0.5, 0, n_c - 1)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    v = ndimage.map_coordinates(img8, [rr.ravel(), cc.ravel()], order=1, mode="nearest").reshape(8, 9)
    return np.floor(v + 0.5 + HALF_UP)


def ref_moments(img: np.ndarray) -> tuple[float, float]:
    """``(M00, Hu1)`` with ``Hu1 = (mu20 + mu02) / M00^2`` (x the column, y the row)."""
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    m00 = float(img.sum())
    if m00 == 0:
        return 0.0, float("nan")
    xb, yb = (xs * img).sum() / m00, (ys * img).sum() / m00
    mu20 = ((xs - xb) ** 2 * img).sum()
    mu02 = ((ys - yb) ** 2 * img).sum()
    return m00, float((mu20 + mu02) / m00**2)


def ref_rd(a: float, b: float) -> float:
    if a == b:
        return 0.0
    mx = max(a, b)
    return 1.0 if np.isnan(a) or np.isnan(b) or mx == 0 else abs(a - b) / abs(mx)


def ref_dhash(img8x9: np.ndarray) -> np.ndarray:
    return (img8x9[:, :-1] > img8x9[:, 1:]).ravel()


def ref_cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = int(a.sum()), int(b.sum())
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float((a & b).sum() / np.sqrt(na * nb))


def ref_tima_sequence(r: GazeRecord) -> list[tuple[float, float]]:
    h, w = r.image_size
    f = r.fixations
    n = len(f)
    emb = np.column_stack([f[:, 0] / w, f[:, 1] / h, np.arange(n) / n])
    labels = DBSCAN(eps=0.2, min_samples=n // 10 + 1).fit(emb).labels_
    groups = [labels == c for c in range(labels.max() + 1)] or [np.ones(n, dtype=bool)]
    seq = []
    for g in groups:
        m00, hu1 = ref_moments(ref_box32(ref_window_map(f[g], h, w)))
        if m00 > 0:
            seq.append((m00, hu1))
    return seq


def ref_dtw_similarity(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """``1 - D / len(path)``, cost 0.7 rd(M00) + 0.3 rd(Hu1); ties: the shorter path."""
    best: dict[tuple[int, int], tuple[float, int]] = {}
    for i in range(len(a)):
        for j in range(len(b)):
            c = 0.7 * ref_rd(a[i][0], b[j][0]) + 0.3 * ref_rd(a[i][1], b[j][1])
            prev = [best[p] for p in ((i - 1, j - 1), (i - 1, j), (i, j - 1)) if p in best]
            d, n = min(prev) if prev else (0.0, 0)
            best[i, j] = (d + c, n + 1)
    d, n = best[len(a) - 1, len(b) - 1]
    return 1.0 - d / n


def ref_relation(recs: list[GazeRecord]) -> dict[str, np.ndarray]:
    """Upper-triangle similarities (moment, TIMA, dHash) and the dHash bits, the authors' way."""
    feats_m, bits, seqs = [], [], []
    for r in recs:
        h, w = r.image_size
        q = ref_canvas_map(r.fixations, h, w)
        feats_m.append(ref_moments(ref_box32(q)))
        bits.append(ref_dhash(ref_bilinear_9x8(q)))
        seqs.append(ref_tima_sequence(r))
    iu = np.triu_indices(len(recs), 1)
    mom, tima, dh = [], [], []
    for i, j in zip(*iu):
        (ma, ha), (mb, hb) = feats_m[i], feats_m[j]
        mom.append(1.0 - (0.5 * ref_rd(ha, hb) + 0.5 * ref_rd(ma, mb)))
        tima.append(ref_dtw_similarity(seqs[i], seqs[j]))
        dh.append(ref_cosine(bits[i], bits[j]))
    return {"moment": np.array(mom), "tima": np.array(tima), "dhash": np.array(dh), "bits": np.array(bits)}


def upper(m: np.ndarray) -> np.ndarray:
    return np.asarray(m, dtype=np.float64)[np.triu_indices(len(m), 1)]


# ---------------------------------------------------------------- records


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    """A synthetic study set of 20 images (``gazerad.synth``)."""
    from gazerad.synth.study import generate_studies

    out = tmp_path_factory.mktemp("mcgip") / "study"
    generate_studies(out, n=20, seed=7, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def study_records(study_dir) -> list[GazeRecord]:
    """20 synthetic records (the first reading of each image, 190 pairs)."""
    from gazerad.gaze.importers import load_gaze

    g = load_gaze(study_dir)
    recs = [g[i][0] for i in g.images]
    assert len(recs) == 20 and all(r.image_size is not None for r in recs)
    return recs


@pytest.fixture(scope="module")
def reference(study_records):
    return ref_relation(study_records)


def _walk_records(n: int, size: tuple[int, int], seed: int) -> list[GazeRecord]:
    """Seeded clustered walks on a non-square image, some fixations refixating one pixel."""
    rng = np.random.default_rng(seed)
    h, w = size
    recs = []
    for i in range(n):
        k = int(rng.integers(12, 40))
        cs = rng.uniform([0.15 * w, 0.15 * h], [0.85 * w, 0.85 * h], (3, 2))
        xy = cs[np.sort(rng.integers(0, 3, k))] + rng.normal(0, 0.04 * min(h, w), (k, 2))
        xy = np.clip(xy, 0.0, [w - 1e-6, h - 1e-6])
        xy[1] = xy[0]  # a refixated pixel
        d = rng.uniform(0.1, 0.6, k)
        t0 = np.cumsum(d + 0.03) - d
        recs.append(GazeRecord(f"im{i}", "r", np.column_stack([xy, t0, t0 + d]), image_size=size, pixels_per_degree=20.0))
    return recs


# ---------------------------------------------------------------- parity with the authors' pipeline


@pytest.mark.parametrize("name", ["moment", "tima"])
def test_preset_matches_authors_pipeline(study_records, reference, name):
    ours = upper(get_scheme(name, preset="mcgip").matrix(study_records))
    assert len(ours) == 190
    diff = float(np.abs(ours - reference[name]).max())
    print(f"\n{name}: max |preset - reference| over 190 pairs = {diff:.3g}")
    assert diff <= 2e-3


def test_preset_dhash_bits_identical(study_records, reference):
    sch = get_scheme("dhash", preset="mcgip")
    f = sch.features(study_records)
    np.testing.assert_array_equal(f[:, :64].astype(bool), reference["bits"])
    assert f[:, 64].all()
    ours = upper(sch.matrix(study_records))
    np.testing.assert_allclose(ours, reference["dhash"], atol=1e-12)


def test_preset_matches_authors_pipeline_non_square():
    """x over W and y over H (the authors' swap not copied), on a 300 x 400 image."""
    recs = _walk_records(8, (300, 400), seed=3)
    ref = ref_relation(recs)
    for name in ("moment", "tima"):
        ours = upper(get_scheme(name, preset="mcgip").matrix(recs))
        assert np.abs(ours - ref[name]).max() <= 2e-3, name
    np.testing.assert_array_equal(get_scheme("dhash", preset="mcgip").features(recs)[:, :64].astype(bool), ref["bits"])


def test_defaults_differ_from_preset_and_correlation(study_records):
    """Our defaults vs the preset on the 190 pairs (figures in Rendering's docstring)."""
    rs = {}
    for name in ("moment", "dhash", "tima"):
        ours = upper(get_scheme(name).matrix(study_records))
        theirs = upper(get_scheme(name, preset="mcgip").matrix(study_records))
        assert not np.allclose(ours, theirs)
        rs[name] = float(np.corrcoef(ours, theirs)[0, 1])
    print("\nr(ours, mcgip) over 190 pairs: " + ", ".join(f"{k} {v:.3f}" for k, v in rs.items()))
    assert all(-1.0 <= v < 0.999 for v in rs.values())


# ---------------------------------------------------------------- the options themselves


def test_preset_params_and_cache_keys():
    for name in ("moment", "dhash", "tima"):
        ours, theirs = get_scheme(name).params(), get_scheme(name, preset="mcgip").params()
        assert "preset" not in ours and theirs["preset"] == "mcgip"
        assert ours != theirs
        assert "canvas" not in ours and "quantise" not in ours  # our keys are those from before the preset
    p = get_scheme("tima", preset="mcgip").params()
    assert p["order"] == "dbscan" and p["canvas"] == "image" and p["kernel_window"] == 0.1
    assert get_scheme("dhash", preset="mcgip").params()["resize"] == "bilinear"
    assert get_scheme("moment", preset="mcgip").params()["canvas_sigma"] == 30.2
    # explicit arguments override the preset's
    assert get_scheme("tima", preset="mcgip", order="time").order == "time"
    assert get_scheme("moment", preset="mcgip", canvas_sigma=20.0).canvas_sigma == 20.0


def test_unknown_preset_is_a_value_error_naming_it():
    for name in ("moment", "dhash", "tima"):
        with pytest.raises(ValueError, match="no-such-preset"):
            get_scheme(name, preset="no-such-preset")
    with pytest.raises(ValueError, match="mcgip.*cc"):
        get_scheme("cc", preset="mcgip")  # the preset covers moment, dhash, tima only


def test_canvas_options_need_a_canvas():
    with pytest.raises(ValueError, match="canvas"):
        get_scheme("moment", quantise="before_resize")
    with pytest.raises(ValueError, match="weight='count'"):
        get_scheme("moment", preset="mcgip", weight="duration")  # mark_once counts pixels
    with pytest.raises(ValueError, match="quantise"):
        get_scheme("moment", canvas=800, quantise="sometimes")


def test_preset_contract_and_empty_record():
    recs = _walk_records(6, (300, 400), seed=5)
    empty = GazeRecord("empty", "r", np.zeros((0, 4)), image_size=(100, 100))
    outside = GazeRecord("outside", "r", np.array([[500.0, 50.0, 0.0, 0.2]]), image_size=(300, 400))
    for name in ("moment", "dhash", "tima"):
        sch = get_scheme(name, preset="mcgip")
        f = sch.features(recs + [empty, outside])
        m = np.asarray(sch.block(f, f), dtype=np.float64)
        np.testing.assert_allclose(np.diag(m)[:6], 1.0, atol=1e-9)
        np.testing.assert_allclose(m, m.T, atol=1e-9)
        assert m.min() >= 0 and m.max() <= 1
        assert not m[6:, :].any() and not m[:, 6:].any(), name  # no fixation inside the image: 0
        sub = sch.block(sch.take(f, [0, 2]), sch.take(f, [1, 3, 4]))
        np.testing.assert_allclose(sub, m[np.ix_([0, 2], [1, 3, 4])], atol=1e-9)


def test_mark_once_counts_a_refixated_pixel_once():
    base = np.array([[100.0, 80.0, 0.0, 0.3], [250.0, 200.0, 0.4, 0.6]])
    again = np.vstack([base, [[100.2, 80.3, 0.7, 0.9]]])  # the same 800-canvas pixel as the first
    a = GazeRecord("a", "r", base, image_size=(400, 400))
    b = GazeRecord("b", "r", again, image_size=(400, 400))
    sch = get_scheme("moment", preset="mcgip")
    np.testing.assert_array_equal(sch.features([a]), sch.features([b]))
    counted = get_scheme("moment", preset="mcgip", mark_once=False)
    assert not np.array_equal(counted.features([a]), counted.features([b]))


def test_tima_dbscan_order():
    """Label order follows the first core point; time order sorts by mean fixation index."""
    rng = np.random.default_rng(0)
    a = np.column_stack([rng.normal(100, 3, 16), rng.normal(100, 3, 16)])
    b = np.column_stack([rng.normal(400, 3, 8), rng.normal(400, 3, 8)])
    xy = np.vstack([a[:4], b, a[4:]])  # region A first (indices 0-3, 12-23), B between (4-11)
    t = np.arange(len(xy)) * 0.3
    rec = GazeRecord("r", "r", np.column_stack([xy, t, t + 0.2]), image_size=(512, 512))
    ours = get_scheme("tima", eps=0.6).moments(rec)
    theirs = get_scheme("tima", eps=0.6, preset="mcgip").moments(rec)
    assert len(ours) == len(theirs) == 2
    assert 0 in theirs[0] and 0 in ours[1]  # A is label 0; its mean index (13.5) is after B's (7.5)


# ---------------------------------------------------------------- the CLI flag


def test_cli_preset_reaches_the_scheme(tmp_path, study_dir):
    from gazerad.cli import main
    from gazerad.gaze.relation import load_relation

    src = study_dir
    out = tmp_path / "rel.npz"
    argv = ["relation", "--gaze", str(src), "--scheme", "moment", "--preset", "mcgip", "--out", str(out), "--workers", "1", "--quiet"]
    assert main(argv) == 0
    sp = load_relation(out).params["scheme_params"]
    assert sp["preset"] == "mcgip" and sp["canvas"] == 800 and sp["quantise"] == "before_resize"
    assert main(["relation", "--gaze", str(src), "--scheme", "tima", "--preset", "nope", "--out", str(tmp_path / "x.npz"), "--quiet"]) == 2
    assert main(["relation", "--gaze", str(src), "--scheme", "moment", "--out", str(tmp_path / "d.npz"), "--workers", "1", "--quiet"]) == 0
    assert "preset" not in load_relation(tmp_path / "d.npz").params["scheme_params"]
