"""Model cards: what each served model is, what it was trained on and how well it did on held-out data.

A training job records :func:`training_data` and the GazeRad version in the model's
``<name>.stats.json``; :func:`model_card` turns those statistics into the card that
``/info`` shows per model (and that a bundle's README repeats). Nothing here reads weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["INTENDED_USE", "TASKS", "training_data", "heldout_metrics", "model_card"]

INTENDED_USE = "Research and teaching only. Not a medical device: not for diagnosis, triage or any clinical use."

TASKS = {
    "attention": "predicted radiologist attention (FocusContrast's predictor): a heatmap summing to 1",
    "localization": (
        "multi-label finding classifier (KACL, or its supervised baseline: see training_params.method) with boxes per finding "
        "(Grad-CAM, or the attention map where validation chose it)"
    ),
    "classification": "supervised multi-label finding classifier (fine-tuned from the gaze-guided encoder when one was published)",
    "pretrain": "self-supervised encoder (McGIP / FocusContrast pre-training): initialises the classifier",
}


def _manifest(datastore: Path) -> dict[str, Any] | None:
    for p in (datastore / "dataset.json", datastore.parent / "dataset.json"):
        try:
            m = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(m, dict) and m.get("generator") == "gazerad.synth":
            return m
    return None


def training_data(datastore: str | Path, n_images: int | None = None) -> dict[str, Any]:
    """What a model trained on ``datastore`` learnt from: a ``gazerad synth`` set (its
    ``dataset.json`` next to or above the images) or the server's own images."""
    m = _manifest(Path(datastore))
    if m is not None:
        return {
            "kind": "synthetic",
            "description": (
                f"{m.get('n_images', '?')} synthetic chest X-ray phantoms with simulated radiologist gaze "
                f"(gazerad synth, generator version {m.get('generator_version', '?')}, seed {m.get('seed', '?')}); no patient data"
            ),
            "generator_version": m.get("generator_version"),
            "seed": m.get("seed"),
            "n_images": m.get("n_images"),
            "classes": m.get("classes"),
        }
    return {"kind": "datastore", "description": "the server's datastore images" + (f" ({n_images})" if n_images is not None else ""), "n_images": n_images}


def heldout_metrics(stats: dict[str, Any]) -> dict[str, Any]:
    """The held-out figures of a job's statistics (no history)."""
    out: dict[str, Any] = {}
    if stats.get("key_metric"):
        out[stats["key_metric"]] = stats.get("best_metric")
    auc = stats.get("auc")
    if isinstance(auc, dict):
        out["auc_per_class"] = {k: v for k, v in auc.items() if k != "macro"}
    cal = stats.get("calibration")
    if isinstance(cal, dict):
        out["calibration"] = {k: cal.get(k) for k in ("temperature", "fitted_on", "ece", "ece_uncalibrated", "n_images")}
    loc = stats.get("localization")
    if isinstance(loc, dict):
        out["t_iou"] = loc.get("overall")
        out["t_iou_0.3_per_class"] = {c: v.get("0.3", v.get(0.3)) for c, v in (loc.get("per_class") or {}).items()}
        out["mean_best_iou"] = loc.get("mean_best_iou")
        base = stats.get("baseline_centred") or {}
        out["centred_box_t_iou"] = base.get("overall")
        if stats.get("box_sources"):
            out["box_sources"] = stats["box_sources"]
    if "heldout" in stats:
        out["heldout"] = stats["heldout"]
        out["centre_prior"] = stats.get("centre_prior")
    for k in ("n_train", "n_heldout"):
        if k in stats:
            out[k] = stats[k]
    return out


def model_card(name: str, stats: dict[str, Any], weights: str | None = None) -> dict[str, Any]:
    """The card of model ``name`` from its published statistics (``{}``: not trained here).

    Fields: ``model``, ``task``, ``intended_use``, ``status``, ``weights``, ``training_data``,
    ``heldout_metrics``, ``trained`` (date), ``gazerad_version`` (that trained it),
    ``training_params``; ``selection`` where the model was chosen among candidates on the
    validation split (``scripts/make_weights.py``); ``boxes_retuned`` where a localiser's boxes were re-tuned after
    training, its weights untouched: by a later attention model
    (:func:`gazerad.serving.train.retune_served_localiser`) or by ``scripts/make_weights.py
    --retune-boxes``.
    """
    import gazerad

    card: dict[str, Any] = {"model": name, "task": TASKS.get(name, name), "intended_use": INTENDED_USE, "served_by_gazerad": gazerad.__version__}
    if weights:
        card["weights"] = weights
    if not stats:
        card["status"] = "no statistics: not trained by this server (shipped weights or none yet)"
        return card
    if stats.get("uploaded"):
        card.update(status="uploaded: weights sent by a client (PUT /model), no training record", uploaded=stats["uploaded"], trained=stats.get("finished"))
        return card
    card.update(
        status="trained",
        training_data=stats.get("training_data") or {"kind": "unknown"},
        heldout_metrics=heldout_metrics(stats),
        trained=stats.get("finished"),
        gazerad_version=stats.get("gazerad_version"),
        training_params=stats.get("params"),
    )
    for key in ("selection", "boxes_retuned"):
        if stats.get(key):
            card[key] = stats[key]
    return card
