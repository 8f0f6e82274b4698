"""Active-learning scores for a datastore: which study should a radiologist read next?

Each score is "higher = read it sooner" and is computed for every image at once:

- ``entropy``: mean binary entropy of the classifier's calibrated class probabilities.
- ``mc_dropout``: classifier disagreement under Monte-Carlo dropout on the pooled image
  features (``T`` passes, dropout ``p``): the mean over classes of the probability's std.
- ``gaze_novelty``: 1 - the highest cosine similarity of the image's embedding to any image
  that already has gaze; images unlike everything read so far score high.
- ``diversity``: distance (1 - cosine) to the nearest image that is already labelled
  (has class labels in the training split or gaze), i.e. one k-center greedy step.

Embeddings are the classifier backbone's pooled features.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["SCORES", "embed_and_predict", "entropy_scores", "mc_dropout_scores", "novelty_scores"]

SCORES = ("entropy", "mc_dropout", "gaze_novelty", "diversity")


@torch.no_grad()
def embed_and_predict(
    model: torch.nn.Module,
    images: torch.Tensor,
    batch: int = 32,
    device: str | torch.device = "cpu",
    mc_passes: int = 0,
    p_drop: float = 0.25,
    seed: int = 0,
    temperature: float = 1.0,
) -> dict[str, np.ndarray]:
    """``(N, 1, S, S)`` -> ``{"features": (N, F), "probs": (N, C), "mc_std": (N, C) if mc_passes}``;
    probabilities are ``sigmoid(logit / temperature)`` (the model's calibration, the same
    probabilities the server answers with)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    model.eval()
    g = torch.Generator(device="cpu").manual_seed(seed)
    feats, probs, stds = [], [], []
    for i in range(0, len(images), batch):
        x = images[i : i + batch].to(device)
        f = model.backbone(x)
        feats.append(f.cpu())
        probs.append(torch.sigmoid(model.classifier(f) / temperature).cpu())
        if mc_passes:
            mc = []
            for _ in range(mc_passes):
                keep = (torch.rand(f.shape, generator=g) >= p_drop).to(f.device, f.dtype) / (1 - p_drop)
                mc.append(torch.sigmoid(model.classifier(f * keep) / temperature).cpu())
            stds.append(torch.stack(mc).std(0))
    out = {"features": torch.cat(feats).numpy(), "probs": torch.cat(probs).numpy()}
    if mc_passes:
        out["mc_std"] = torch.cat(stds).numpy()
    return out


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Mean binary entropy (bits) over classes: ``(N, C)`` -> ``(N,)`` in [0, 1]."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    return (-(p * np.log2(p) + (1 - p) * np.log2(1 - p))).mean(1)


def mc_dropout_scores(mc_std: np.ndarray) -> np.ndarray:
    """Mean over classes of the MC-dropout std: ``(N, C)`` -> ``(N,)``."""
    return mc_std.astype(np.float64).mean(1)


def novelty_scores(features: np.ndarray, reference: Sequence[int]) -> np.ndarray:
    """1 - max cosine similarity to the ``reference`` rows (1 for all when there is none)."""
    f = features.astype(np.float64)
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    ref = np.asarray(list(reference), dtype=np.int64)
    if ref.size == 0:
        return np.ones(len(f))
    sim = f @ f[ref].T
    return np.clip(1.0 - sim.max(1), 0.0, 2.0)


def _thumbnails(paths: Sequence, side: int = 16) -> np.ndarray:
    """Model-free embedding: each image as the models see it (percentile-scaled), area-resized to ``side x side``."""
    from gazerad.data.inputs import encoder_inputs

    return encoder_inputs(list(paths), side).reshape(len(paths), -1).numpy()


def score_datastore(method: str, root, model_dir, device: str | None = None, mc_passes: int = 20) -> dict[str, float]:
    """Score every image of a datastore folder with ``method`` (one of :data:`SCORES`).

    ``entropy`` and ``mc_dropout`` need a published classifier (``classification.pt``, else
    ``localization.pt``); ``gaze_novelty`` and ``diversity`` use its embedding when there is
    one, else 16 x 16 thumbnails.

    Returns:
        ``{image id: score}``.
    """
    from pathlib import Path

    from gazerad.data.inputs import encoder_inputs
    from gazerad.kacl.calibration import temperature_of
    from gazerad.kacl.trainer import load_kacl
    from gazerad.serving.data import DatastoreView
    from gazerad.serving.infer import ModelNotReady

    if method not in SCORES:
        raise ValueError(f"unknown score {method!r}; choose one of {SCORES}")
    view = DatastoreView(Path(root))
    imgs = view.images()
    ids = list(imgs)
    if not ids:
        return {}
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_file = next((Path(model_dir) / f for f in ("classification.pt", "localization.pt") if (Path(model_dir) / f).is_file()), None)
    if model_file is None and method in ("entropy", "mc_dropout"):
        raise ModelNotReady(f"score {method!r} needs a trained classifier: train 'classification' or 'localization' first")
    if model_file is not None:
        model, state = load_kacl(model_file, dev)
        x = encoder_inputs([imgs[i] for i in ids], int(state["config"]["image_size"]))
        res = embed_and_predict(model, x, device=dev, mc_passes=mc_passes if method == "mc_dropout" else 0, temperature=temperature_of(state))
        feats = res["features"]
    else:
        res, feats = {}, _thumbnails([imgs[i] for i in ids])
    if method == "entropy":
        s = entropy_scores(res["probs"])
    elif method == "mc_dropout":
        s = mc_dropout_scores(res["mc_std"])
    else:  # novelty against images with gaze; diversity against those too and the labelled ones
        have = set(view.gaze().images)
        if method == "diversity":
            have |= {i for i, sp in view.labels()["splits"].items() if sp == "train"}
        s = novelty_scores(feats, [k for k, i in enumerate(ids) if i in have])
    return {i: float(v) for i, v in zip(ids, s)}
