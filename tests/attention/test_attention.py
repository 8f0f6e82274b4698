"""FocusContrast attention: the attention-aware crop (gazerad.attention.crop) and the
attention predictor (gazerad.attention.model): loss, training, save/load, prediction, cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gazerad.attention.crop import AttentionRandResizedCrop, AttentionRandResizedCropd, BoxMass
from gazerad.attention.model import (
    AttentionCache,
    AttentionDataset,
    PredictAttentiond,
    attention_loss,
    evaluate_attention,
    load_attention_model,
    predict_attention,
    read_splits,
    train_attention,
)
from gazerad.errors import InputError

TINY = (8, 8, 16, 32, 64, 8)
SIZE = 64


def _blob(shape: tuple[int, int], cx: float, cy: float, sigma: float) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    a = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    return a / a.sum()


def _box_sum(att: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, w, h = box
    return float(att[y0 : y0 + h, x0 : x0 + w].sum() / att.sum())


# ---------------------------------------------------------------- crop


@pytest.mark.parametrize("q", [0.5, 0.8])
def test_crop_keeps_q_of_mass_on_every_draw(q):
    shape = (160, 200)  # non-square: a transposed box would show
    att = _blob(shape, cx=22.0, cy=18.0, sigma=6.0)
    img = torch.rand(2, *shape)
    crop = AttentionRandResizedCrop(32, q=q).set_random_state(0)
    fallbacks = 0
    for _ in range(500):
        out = crop(img, att)
        assert out.shape == (2, 32, 32)
        x0, y0, w, h = crop.last_box
        assert 0 <= x0 and x0 + w <= shape[1] and 0 <= y0 and y0 + h <= shape[0]
        mass = _box_sum(att, crop.last_box)
        assert mass >= q - 1e-6
        assert crop.last_mass == pytest.approx(mass, abs=1e-9)
        fallbacks += crop.last_fallback is not None
    # the blob is in a corner: many random boxes miss it, most draws still find one in 10 tries
    assert fallbacks < 500


def test_crop_fallback_recentres_on_tiny_blob_and_grows_for_split_mass():
    shape = (256, 256)
    att = np.zeros(shape)
    att[6:9, 240:243] = 1.0  # 3 x 3 px blob near the top-right corner
    crop = AttentionRandResizedCrop(24, scale=(0.02, 0.06), q=0.8, max_tries=3).set_random_state(1)
    kinds = []
    for _ in range(300):
        crop(torch.rand(1, *shape), att)
        assert _box_sum(att, crop.last_box) >= 0.8 - 1e-9
        kinds.append(crop.last_fallback)
    assert kinds.count("peak") > 150  # random boxes of 2-6 % area rarely hold the blob
    # with plain boxes the same setting loses the blob most of the time
    plain = AttentionRandResizedCrop(24, scale=(0.02, 0.06), q=0.8).set_random_state(1)
    kept = 0
    for _ in range(300):
        plain(torch.rand(1, *shape), None)
        kept += _box_sum(att, plain.last_box) >= 0.8
    assert kept < 60

    # two far-apart blobs of equal mass: no small box keeps 80 %, the fallback box must grow
    two = np.zeros(shape)
    two[20:24, 20:24] = 1.0
    two[230:234, 230:234] = 1.0
    crop = AttentionRandResizedCrop(24, scale=(0.02, 0.06), q=0.8, max_tries=2).set_random_state(2)
    for _ in range(20):
        crop(torch.rand(1, *shape), two)
        assert crop.last_fallback == "grown"
        assert _box_sum(two, crop.last_box) >= 0.8 - 1e-9


def test_no_attention_is_the_plain_crop():
    shape = (128, 96)
    att = _blob(shape, cx=12.0, cy=110.0, sigma=4.0)
    a = AttentionRandResizedCrop(16, q=0.0).set_random_state(5)
    b = AttentionRandResizedCrop(16, q=0.9).set_random_state(5)
    img = torch.rand(1, *shape)
    boxes_none, missed = [], 0
    for _ in range(300):
        b(img, None)
        boxes_none.append(b.last_box)
        assert b.last_mass is None and b.last_fallback is None
        w, h = b.last_box[2:]
        assert 0.2 - 0.03 <= w * h / (shape[0] * shape[1]) <= 1.0
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05 or (w, h) == (shape[1], shape[0])
        missed += _box_sum(att, b.last_box) < 0.9
    # q = 0 accepts the first box: attention then changes nothing, box for box
    boxes_q0 = []
    for _ in range(300):
        a(img, att)
        boxes_q0.append(a.last_box)
    assert boxes_q0 == boxes_none
    assert 30 < missed < 300  # plain boxes sometimes miss the blob, sometimes not
    # an all-zero map also means "no attention"
    b.set_random_state(5)
    b(img, np.zeros(shape))
    assert b.last_box == boxes_none[0]


def test_attention_at_another_resolution_mass_is_exact():
    rng = np.random.default_rng(0)
    shape = (120, 180)
    coarse = rng.random((30, 45))  # exactly 4x coarser
    fine = np.kron(coarse, np.ones((4, 4)))
    odd = rng.random((37, 53))  # non-integer ratio: independent overlap-weighted sum
    bm_c, bm_o = BoxMass(coarse, shape), BoxMass(odd, shape)
    fy, fx = odd.shape[0] / shape[0], odd.shape[1] / shape[1]

    def overlap(lo: float, hi: float, n: int) -> np.ndarray:
        edges = np.arange(n + 1, dtype=np.float64)
        return np.clip(np.minimum(hi, edges[1:]) - np.maximum(lo, edges[:-1]), 0, None)

    for _ in range(200):
        w, h = int(rng.integers(1, 181)), int(rng.integers(1, 121))
        x0, y0 = int(rng.integers(0, 181 - w)), int(rng.integers(0, 121 - h))
        box = (x0, y0, w, h)
        assert bm_c.mass(box) == pytest.approx(_box_sum(fine, box), abs=1e-10)
        wy = overlap(y0 * fy, (y0 + h) * fy, odd.shape[0])
        wx = overlap(x0 * fx, (x0 + w) * fx, odd.shape[1])
        assert bm_o.mass(box) == pytest.approx(float(wy @ odd @ wx) / odd.sum(), abs=1e-10)

    # the crop uses the coarse map as if it were stretched over the image
    crop = AttentionRandResizedCrop(16, q=0.7).set_random_state(3)
    att = np.zeros((30, 45))
    att[25:28, 2:5] = 1.0
    big = np.kron(att, np.ones((4, 4)))
    for _ in range(100):
        crop(torch.rand(1, *shape), att[None])
        assert _box_sum(big, crop.last_box) >= 0.7 - 1e-9


def test_dict_variant_crops_all_keys_with_one_box():
    shape = (90, 110)
    att = _blob(shape, cx=95.0, cy=15.0, sigma=5.0)
    a = torch.rand(1, *shape)
    d = {"a": a, "b": 3.0 * a.repeat(2, 1, 1) + 1.0, "attention": att}
    t = AttentionRandResizedCropd(["a", "b"], size=(20, 30), q=0.6).set_random_state(4)
    boxes = set()
    for _ in range(50):
        out = t(d)
        assert out["a"].shape == (1, 20, 30) and out["b"].shape == (2, 20, 30)
        # bilinear (antialiased) resampling is affine: the same box gives b = 3 a + 1
        assert torch.allclose(out["b"], 3.0 * out["a"].repeat(2, 1, 1) + 1.0, atol=1e-5)
        assert out["attention"] is att
        assert _box_sum(att, t.last_box) >= 0.6 - 1e-9
        boxes.add(t.last_box)
    assert len(boxes) > 10
    with pytest.raises(ValueError, match="spatial shape"):
        t({"a": a, "b": torch.rand(1, 50, 50), "attention": att})


def test_crop_determinism_and_types():
    shape = (64, 80)
    att = _blob(shape, cx=60.0, cy=10.0, sigma=3.0)
    img = np.random.default_rng(0).integers(0, 255, size=(3, *shape), dtype=np.uint8)
    c1 = AttentionRandResizedCrop((12, 16), q=0.5).set_random_state(7)
    c2 = AttentionRandResizedCrop((12, 16), q=0.5).set_random_state(7)
    c3 = AttentionRandResizedCrop((12, 16), q=0.5).set_random_state(8)
    b1, b3 = [], []
    for _ in range(20):
        o1, o2 = c1(img, att), c2(img, att)
        c3(img, att)
        assert isinstance(o1, torch.Tensor) and o1.dtype == torch.float32 and o1.shape == (3, 12, 16)
        assert torch.equal(o1, o2) and c1.last_box == c2.last_box
        b1.append(c1.last_box)
        b3.append(c3.last_box)
    assert b1 != b3
    # randomize=False re-applies the last box (to a second image of the same size)
    box = c1.last_box
    other = torch.rand(1, *shape)
    o = c1(other, randomize=False)
    assert c1.last_box == box
    x0, y0, w, h = box
    ref = torch.nn.functional.interpolate(other[None, :, y0 : y0 + h, x0 : x0 + w], size=(12, 16), mode="bilinear", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(o, ref)
    with pytest.raises(ValueError):
        AttentionRandResizedCrop(8, q=1.5)
    with pytest.raises(ValueError):
        c1(torch.rand(8, 8), att)


# ---------------------------------------------------------------- loss


def test_attention_loss_hand_checked():
    rng = np.random.default_rng(0)
    t = rng.random((2, 1, 4, 4)) + 0.05
    t /= t.sum((2, 3), keepdims=True)
    target = torch.tensor(t, dtype=torch.float32)
    # prediction = target up to a constant in the logits: KL 0, CC 1
    same = attention_loss(torch.log(target) + 7.0, 3.0 * target)
    assert float(same) == pytest.approx(0.0, abs=1e-5)
    shifted = torch.roll(torch.log(target), shifts=2, dims=-1)
    loss = attention_loss(shifted, target, reduction="none")
    assert loss.shape == (2,) and (loss > 0.05).all()
    # each term against numpy
    p = np.exp(np.roll(np.log(t), 2, axis=-1))
    p /= p.sum((2, 3), keepdims=True)
    kl = (t * np.log(t / p)).sum((1, 2, 3))
    r = np.array([np.corrcoef(p[i].ravel(), t[i].ravel())[0, 1] for i in range(2)])
    np.testing.assert_allclose(attention_loss(shifted, target, w_cc=0.0, reduction="none"), kl, rtol=1e-4)
    np.testing.assert_allclose(attention_loss(shifted, target, w_kl=0.0, reduction="none"), 1 - r, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(attention_loss(shifted, target, 2.0, 0.5)), float(np.mean(2 * kl + 0.5 * (1 - r))), rtol=1e-4)
    # a target with zeros (0 log 0 = 0) stays finite
    z = torch.zeros(1, 1, 3, 3)
    z[0, 0, 1, 1] = 1.0
    assert torch.isfinite(attention_loss(torch.zeros(1, 1, 3, 3), z))
    with pytest.raises(ValueError):
        attention_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 4))


# ---------------------------------------------------------------- training


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gazerad.synth.study import generate_studies

    out = tmp_path_factory.mktemp("attn") / "studies"
    generate_studies(out, n=16, seed=1, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def trained(study: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("attn_out")
    metrics = train_attention(study, out, epochs=3, batch_size=4, lr=2e-3, input_size=SIZE, features=TINY, seed=0, progress=False)
    return out, metrics


def test_dataset_targets_splits_and_fixations(study):
    splits = read_splits(study)
    train = AttentionDataset(study, input_size=SIZE, part="train")
    held = AttentionDataset(study, input_size=SIZE, part="heldout")
    assert len(train) + len(held) == 16 and len(held) > 0
    assert all(splits[i] == "train" for i in train.image_ids)
    assert all(splits[i] != "train" for i in held.image_ids)
    assert train.skipped == {"no_gaze": 0, "no_image": 0, "no_label": 0}
    item = train[0]
    assert item["image"].shape == (1, SIZE, SIZE)
    lo, hi = float(item["image"].min()), float(item["image"].max())
    assert 0.0 <= lo < 0.2 and 0.8 < hi <= 1.0  # min-max scaled before the antialiased resize
    sums = train.targets.sum((1, 2, 3))
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
    # the target is dense where the readers looked: high NSS against their fixated pixels
    from gazerad.gaze.metrics import nss

    assert float(np.mean(nss(train.targets[:, 0].numpy(), train.fixmaps[:, 0].numpy()))) > 1.0


def test_dataset_skips_and_counts_images_without_gaze_or_file(study, tmp_path):
    import shutil

    copy = tmp_path / "s"
    shutil.copytree(study, copy)
    train_ids = [i for i, sp in read_splits(copy).items() if sp == "train"]
    (copy / "images" / train_ids[0]).unlink()  # gaze but no image file
    with open(copy / "labels.csv", "a") as fh:  # an image listed for training without gaze
        fh.write("99999999_000.png,No Finding,99999999,PA,512,512,0.7,train,0,0,0,0,0\n")
    ds = AttentionDataset(copy, input_size=32, part="train")
    assert ds.skipped == {"no_gaze": 1, "no_image": 1, "no_label": 0}
    assert len(ds) == len(train_ids) - 1 and train_ids[0] not in ds.image_ids


def test_train_writes_files_loss_falls_and_metrics(trained):
    out, m = trained
    for name in ("attention.pt", "metrics.json", "curve.png", "overlay.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["heldout"] == pytest.approx(m["heldout"])
    assert {"device", "precision", "channels_last"} <= set(saved["runtime"]), saved["runtime"]
    hist = m["history"]
    assert len(hist) == 3 and hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["heldout_loss"] < hist[0]["heldout_loss"]
    assert m["n_heldout"] > 0 and m["n_train"] > 0
    for part in ("heldout", "centre_prior"):
        for k in ("cc", "kl", "nss", "auc_judd"):
            assert np.isfinite(m[part][k]), (part, k)
    assert -1 <= m["heldout"]["cc"] <= 1 and 0 <= m["heldout"]["auc_judd"] <= 1
    # the centre prior puts its mass in the middle: it must beat chance on gaze
    assert m["centre_prior"]["auc_judd"] > 0.6 and m["centre_prior"]["nss"] > 0.3


def test_load_round_trip_gives_the_trained_model(trained, study):
    out, m = trained
    model = load_attention_model(out / "attention.pt")
    assert model.input_size == SIZE and tuple(model.features) == TINY and not model.training
    held = AttentionDataset(study, input_size=SIZE, part="heldout")
    ev = evaluate_attention(model, held)
    # metrics of the in-memory model at the end of training, recomputed from the file
    for k in ("cc", "kl", "nss", "auc_judd", "loss"):
        assert ev[k] == pytest.approx(m["heldout"][k], rel=1e-5, abs=1e-6), k
    again = load_attention_model(out)  # a folder holding attention.pt works too
    x = held.images[:2]
    with torch.no_grad():
        assert torch.equal(model.predict(x), again.predict(x))


def test_training_is_seeded_and_cli_glue(study, tmp_path, capsys):
    from gazerad.cli import build_parser

    args = build_parser().parse_args(
        [
            "train-attention",
            "--studies",
            str(study),
            "--out",
            str(tmp_path / "cli"),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--size",
            str(SIZE),
            "--seed",
            "3",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "centre prior" in text and "attention model" in text and "AUC-Judd" in text
    train_attention(study, tmp_path / "api", epochs=1, batch_size=4, input_size=SIZE, seed=3, device="cpu", progress=False)
    a = torch.load(tmp_path / "cli" / "attention.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "api" / "attention.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    train_attention(study, tmp_path / "other", epochs=1, batch_size=4, input_size=SIZE, seed=4, device="cpu", progress=False)
    c = torch.load(tmp_path / "other" / "attention.pt", weights_only=True)["state_dict"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_killed_run_resumes_to_the_uninterrupted_weights(study, tmp_path):
    from gazerad.attention import AttentionConfig

    kw = dict(data=str(study), epochs=3, batch_size=4, image_size=SIZE, features=TINY, seed=2, device="cpu", progress=False)
    train_attention(AttentionConfig(out=str(tmp_path / "full"), **kw))
    full_hist = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)["history"]
    per_epoch = full_hist[0]["steps"]
    train_attention(AttentionConfig(out=str(tmp_path / "cut"), max_steps=per_epoch, **kw))  # "killed" after epoch 1
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    res = train_attention(AttentionConfig(out=str(tmp_path / "cut"), **kw))
    assert [h["epoch"] for h in res["history"]] == [1, 2, 3]
    a = torch.load(tmp_path / "full" / "attention.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "attention.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same process, same CPU kernels: bit-identical


def test_predict_attention_any_size_sums_to_one(trained, study):
    from gazerad.io.xray import read_xray

    model = load_attention_model(trained[0])
    img, _ = read_xray(next((study / "images").glob("*.png")))
    m = predict_attention(model, img)
    assert isinstance(m, np.ndarray) and m.shape == img.shape and m.dtype == np.float32
    assert float(m.sum()) == pytest.approx(1.0, abs=1e-4) and (m >= 0).all()
    # the model sees the image at its own side: the map at that side is the softmax output
    small = predict_attention(model, torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], size=(SIZE, SIZE), mode="area"))
    assert small.shape == (1, 1, SIZE, SIZE)
    assert float(np.corrcoef(small.ravel().numpy(), m[::8, ::8].ravel())[0, 1]) > 0.9
    batch = torch.rand(3, 1, 70, 100)
    out = predict_attention(model, batch)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 1, 70, 100)
    torch.testing.assert_close(out.sum((1, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    assert predict_attention(model, img[None]).shape == (1, *img.shape)


def test_attention_cache_computes_each_map_once(trained, study, tmp_path):
    from gazerad.io.xray import read_xray

    model = load_attention_model(trained[0])
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    paths = sorted((study / "images").glob("*.png"))[:2]
    imgs = [read_xray(p)[0] for p in paths]
    cache = AttentionCache(model, cache_dir=tmp_path / "cache")
    m1 = cache.get(paths[0].name, imgs[0])
    assert len(calls) == 1 and cache.computed == 1
    m2 = cache.get(paths[0].name, imgs[0])
    assert len(calls) == 1 and cache.memory_hits == 1 and np.array_equal(m1, m2)
    np.testing.assert_allclose(m1, predict_attention(model, imgs[0]), atol=1e-7)
    calls.clear()
    half = cache.get(paths[0].name, imgs[0][::2, ::2])  # same image id at another size: resized, not recomputed
    assert len(calls) == 0 and half.shape == (256, 256) and float(half.sum()) == pytest.approx(1.0, abs=1e-4)
    cache.get(paths[1].name, imgs[1])
    assert len(calls) == 1
    files = list((tmp_path / "cache").rglob("*.npy"))
    assert len(files) == 2 and files[0].parent.name == cache.fingerprint
    # a new instance (another run or worker) reuses the disk cache
    calls.clear()
    fresh = AttentionCache(model, cache_dir=tmp_path / "cache")
    assert np.array_equal(fresh.get(paths[0].name, imgs[0]), m1)
    assert len(calls) == 0 and fresh.disk_hits == 1 and fresh.computed == 0
    # a corrupt cached file is recomputed, not trusted
    for f in files:
        f.write_bytes(b"junk")
    other = AttentionCache(model, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(other.get(paths[0].name, imgs[0]), m1)
    assert other.computed == 1 and len(calls) == 1


def test_pipeline_predicts_then_crops(trained, study):
    from monai.transforms import Compose

    from gazerad.io.xray import LoadXRayd

    cache = AttentionCache(trained[0] / "attention.pt")
    pipe = Compose(
        [
            LoadXRayd(keys="image"),
            PredictAttentiond("image", cache),
            AttentionRandResizedCropd("image", size=32, q=0.7),
        ]
    )
    pipe.set_random_state(0)
    path = next((study / "images").glob("*.png"))
    d = pipe({"image": str(path)})
    assert d["image"].shape == (1, 32, 32) and d["attention"].shape == (1, 512, 512)
    assert _box_sum(d["attention"][0], pipe.transforms[-1].last_box) >= 0.7 - 1e-6
    assert cache.computed == 1 and len(cache) == 1


def test_bad_model_files_raise_input_error_naming_them(tmp_path, trained):
    missing = tmp_path / "nope.pt"
    with pytest.raises(InputError, match="nope.pt"):
        load_attention_model(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(InputError, match="junk.pt"):
        load_attention_model(junk)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes((trained[0] / "attention.pt").read_bytes()[:2000])
    with pytest.raises(InputError, match="trunc.pt"):
        load_attention_model(trunc)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(InputError, match="other.pt.*not a GazeRad attention model"):
        load_attention_model(other)
    bad = tmp_path / "bad.pt"
    payload = torch.load(trained[0] / "attention.pt", weights_only=True)
    payload["config"]["features"] = [4, 4, 8, 16, 32, 4]
    torch.save(payload, bad)
    with pytest.raises(InputError, match="bad.pt.*do not match"):
        load_attention_model(bad)
    with pytest.raises(InputError, match="bad.pt"):
        AttentionCache(bad)
