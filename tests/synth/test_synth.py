"""Synthetic studies: determinism, exact ground truth, simulated readers, REFLACX layout."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np

from gazerad.coords import points_in_image
from gazerad.data import read_bbox_list, read_labels
from gazerad.gaze.importers import load_reflacx
from gazerad.io.xray import read_xray
from gazerad.synth import FINDING_CLASSES, generate_studies, reader_pool, render, sample_spec, simulate_reading
from gazerad.synth.study import (
    BBOX_HEADER,
    LABEL_COLUMNS,
    REFLACX_FIXATION_COLUMNS,
    REFLACX_GAZE_COLUMNS,
    REFLACX_METADATA_COLUMNS,
)

STUDY_N = 24  # as in conftest.py


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generator_is_deterministic_per_seed_and_worker_count(tmp_path):
    a = generate_studies(tmp_path / "a", n=6, seed=3, size=256, workers=1, progress=False)
    b = generate_studies(tmp_path / "b", n=6, seed=3, size=256, workers=2, progress=False)
    c = generate_studies(tmp_path / "c", n=6, seed=4, size=256, workers=2, progress=False)
    da, db, dc = _digest(a.out), _digest(b.out), _digest(c.out)
    assert da == db
    assert da.keys() == dc.keys() or len(da) != len(dc)
    differing = [k for k in da if k.startswith("images/") and dc.get(k) != da[k]]
    assert len(differing) == 6  # another seed draws other images


def test_phantoms_vary_and_are_not_a_template():
    imgs = [render(sample_spec(np.random.default_rng([1, i]), size=256, n_findings=0)).image.astype(float) for i in range(6)]
    pairs = [np.abs(imgs[i] - imgs[j]).mean() for i in range(6) for j in range(i + 1, 6)]
    assert min(pairs) > 500  # 16-bit units: every pair differs visibly
    for im in imgs:
        assert im.min() >= 0 and im.max() <= 65535 and im.std() > 3000  # full-range 16-bit content


def test_every_box_covers_exactly_its_rendered_lesion():
    """Removing one finding changes pixels only inside its box, and the box is tight."""
    seen = set()
    for i in range(40):
        spec = sample_spec(np.random.default_rng([11, i]), size=512, n_findings=1 + i % 3)
        full = render(spec)
        for k, f in enumerate(spec.findings):
            box = full.boxes[k]
            assert box is not None
            x, y, w, h = box
            assert 0 <= x and 0 <= y and x + w <= 512 and y + h <= 512
            diff = full.image.astype(np.int64) != render(spec.without(k)).image.astype(np.int64)
            rows, cols = np.nonzero(diff)
            assert rows.size > 0, f"{f.label} left no trace in the image"
            assert cols.min() >= x and cols.max() < x + w and rows.min() >= y and rows.max() < y + h, (f.label, box)
            # tight: the changed pixels reach (almost) every side of the box
            assert cols.min() - x <= 2 and x + w - 1 - cols.max() <= 2 and rows.min() - y <= 2 and y + h - 1 - rows.max() <= 2
            if f.label == "Nodule":
                assert 6 <= w <= 21 and 6 <= h <= 21
            if f.label == "Mass":
                assert w >= 25 and h >= 25
            seen.add(f.label)
    assert seen == set(FINDING_CLASSES)


def test_label_distribution():
    n = 400
    specs = [sample_spec(np.random.default_rng([5, i]), size=512) for i in range(n)]
    counts = [len(s.findings) for s in specs]
    none = counts.count(0) / n
    assert 0.33 <= none <= 0.47  # about 40 % No Finding
    assert max(counts) <= 3 and min(counts) == 0
    per_class = {c: sum(f.label == c for s in specs for f in s.findings) for c in FINDING_CLASSES}
    assert min(per_class.values()) >= 0.05 * n, per_class  # every class is common enough to learn


def test_readers_differ_and_fixations_look_human():
    pool = reader_pool(0)
    assert len({p.strategy for p in pool}) >= 4
    assert len({round(p.duration_median, 3) for p in pool}) == len(pool)
    spec = sample_spec(np.random.default_rng([2, 0]), n_findings=2)
    rendered = render(spec)
    a = simulate_reading(np.random.default_rng(1), pool[0], spec, rendered)
    b = simulate_reading(np.random.default_rng(1), pool[2], spec, rendered)
    assert a.fixations.shape != b.fixations.shape or not np.allclose(a.fixations, b.fixations)
    durs = np.concatenate([np.diff(simulate_reading(np.random.default_rng(i), p, spec, rendered).fixations[:, 2:], axis=1).ravel() for i, p in enumerate(pool)])
    assert 0.18 < np.median(durs) < 0.33  # around 250 ms
    log = np.log(durs)
    skew = ((log - log.mean()) ** 3).mean() / log.std() ** 3
    assert abs(skew) < 0.6 and ((durs - durs.mean()) ** 3).mean() > 0  # log-normal: log symmetric, right-skewed


def test_raw_samples_rate_blinks_and_consistency():
    pool = reader_pool(0)
    spec = sample_spec(np.random.default_rng([2, 1]), n_findings=1)
    rendered = render(spec)
    for p in pool:
        r = simulate_reading(np.random.default_rng(3), p, spec, rendered)
        t = r.samples[:, 0]
        assert np.median(np.diff(t)) <= 1 / 60 + 1e-9
        assert np.isnan(r.samples[:, 1]).any()  # blinks / dropouts are invalid samples
        # samples during a fixation scatter around it (tremor below 1 degree)
        f = r.fixations[len(r.fixations) // 2]
        inside = (t >= f[2]) & (t < f[3]) & ~np.isnan(r.samples[:, 1])
        d = np.hypot(r.samples[inside, 1] - f[0], r.samples[inside, 2] - f[1])
        assert inside.sum() >= 3 and np.median(d) < p.pixels_per_degree


def test_study_set_tables_and_reflacx_layout(studies):
    labels = read_labels(studies / "labels.csv")
    boxes = read_bbox_list(studies / "BBox_List_2017.csv")
    assert len(labels) == STUDY_N
    with open(studies / "labels.csv") as fh:
        assert next(csv.reader(fh)) == LABEL_COLUMNS
    assert (studies / "BBox_List_2017.csv").read_text().splitlines()[0] == BBOX_HEADER
    for image, items in boxes.items():
        for label, (x, y, w, h) in items:
            assert label in labels[image]
            assert x >= 0 and y >= 0 and x + w <= 512 and y + h <= 512
    assert all(lb in FINDING_CLASSES for v in labels.values() for lb in v)

    main = studies / "reflacx" / "main_data"
    with open(main / "metadata_phase_3.csv") as fh:
        assert next(csv.reader(fh)) == REFLACX_METADATA_COLUMNS
    gaze = load_reflacx(main, strict=True)  # strict: any fixation outside the image raises
    assert not gaze.dropped
    per_image: dict[str, int] = {}
    for rec in gaze.records():
        per_image[rec.image_id] = per_image.get(rec.image_id, 0) + 1
        d = main / rec.screen["reading_id"]
        with open(d / "fixations.csv") as fh:
            assert next(csv.reader(fh)) == REFLACX_FIXATION_COLUMNS
        with open(d / "gaze.csv") as fh:
            assert next(csv.reader(fh)) == REFLACX_GAZE_COLUMNS
        assert (d / "anomaly_location_ellipses.csv").read_text().startswith("xmin,ymin,xmax,ymax,certainty,")
        assert rec.image_size == (512, 512)
        fx = rec.fixations
        assert points_in_image(fx[:, :2], 512, 512).all() and (fx[:, 3] >= fx[:, 2]).all()
        assert (np.diff(fx[:, 2]) > 0).all()
    assert set(per_image) == set(labels) and set(per_image.values()) <= {1, 2, 3}
    assert len(set(per_image.values())) > 1


def test_readers_dwell_on_findings(studies):
    """Dwell time per pixel inside finding boxes is clearly above that elsewhere."""
    boxes = read_bbox_list(studies / "BBox_List_2017.csv")
    inside_t = outside_t = inside_area = outside_area = 0.0
    for rec in load_reflacx(studies / "reflacx" / "main_data", strict=True).records():
        image, fx = rec.image_id, rec.fixations
        mask = np.zeros((512, 512), bool)
        for _, (x, y, w, h) in boxes.get(image, []):
            mask[int(y) : int(y + h), int(x) : int(x + w)] = True
        if not mask.any():
            continue
        hit = mask[fx[:, 1].astype(int), fx[:, 0].astype(int)]
        dur = fx[:, 3] - fx[:, 2]
        inside_t += dur[hit].sum()
        outside_t += dur[~hit].sum()
        inside_area += mask.sum()
        outside_area += (~mask).sum()
    ratio = (inside_t / inside_area) / (outside_t / outside_area)
    assert ratio > 3.0, ratio


def test_dicom_copies_match_png_for_both_photometrics(studies):
    seen = set()
    for dcm in sorted((studies / "images_dicom").glob("*.dcm"))[:12]:
        d, meta = read_xray(dcm)
        p, _ = read_xray(studies / "images" / dcm.name.replace(".dcm", ".png"))
        np.testing.assert_array_equal(d, p)
        assert meta["modality"] == "DX" and meta["spacing"] == (0.7, 0.7)
        seen.add(meta["photometric"])
    assert seen == {"MONOCHROME1", "MONOCHROME2"}


def _gazerad(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gazerad", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_cli_help_synth_overwrite_and_show(tmp_path):
    h = _gazerad("--help")
    assert h.returncode == 0 and all(c in h.stdout for c in ("synth", "show", "info"))
    out = tmp_path / "s"
    r = _gazerad("synth", "--out", str(out), "--n", "3", "--size", "256", "--quiet", "--preview", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = _digest(out)
    r = _gazerad("synth", "--out", str(out), "--n", "3", "--size", "256", "--quiet")
    assert r.returncode == 2 and "not empty" in r.stderr and "--overwrite" in r.stderr
    assert _digest(out) == before  # refused: nothing touched
    r = _gazerad("synth", "--out", str(out), "--n", "4", "--size", "256", "--seed", "9", "--quiet", "--overwrite")
    assert r.returncode == 0 and len(read_labels(out / "labels.csv")) == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left
    r = _gazerad("show", "--studies", str(out))
    assert r.returncode == 0 and (out / "preview.png").stat().st_size > 10_000


def test_cli_info_reports_bad_file_cleanly(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    r = _gazerad("info", str(bad))
    assert r.returncode == 2 and str(bad) in r.stderr and "Traceback" not in r.stderr
