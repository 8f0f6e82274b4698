"""KACL / classifier evaluation: per-class ROC AUC and localisation accuracy at T(IoU).

``gazerad evaluate-localization --model RUN --data STUDIES [--boxes BBox_List_2017.csv]``
scores the held-out split: class probabilities -> per-class AUC; for every ground-truth
box, Grad-CAM of *that* box's class -> boxes (:func:`gazerad.localize.map_to_boxes`) ->
best IoU; accuracy at T(IoU) = 0.1 ... 0.7, beside a centred-box baseline. Overlay PNGs
(CAM, predicted boxes red, true boxes green) go to ``OUT/overlays``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from gazerad.errors import InputError
from gazerad.io.atomic import atomic_write_text
from gazerad.kacl.calibration import calibrated_probabilities, expected_calibration_error, reliability_bins, temperature_of
from gazerad.localize import DEFAULT_THRESHOLDS, Box, centred_box, localization_accuracy, make_cam, map_to_boxes

__all__ = [
    "localize_images",
    "evaluate_kacl",
    "save_overlay",
    "box_requests",
    "box_settings",
    "tune_box_extraction",
    "best_box_settings",
    "DEFAULT_BOX_SETTINGS",
]


def localize_images(
    model: torch.nn.Module,
    images: torch.Tensor,
    requests: Sequence[Sequence[int]],
    class_names: Sequence[str],
    cam_method: str = "gradcam",
    threshold: float = 0.5,
    blur: int = 5,
    batch: int = 32,
    device: str | torch.device = "cpu",
    return_maps: bool = False,
    cam_layer: str | None = None,
) -> tuple[list[list[Box]], list[dict[int, np.ndarray]]]:
    """Boxes for the requested classes of each image, one CAM per (image, class), batched.

    Args:
        model: a classifier with a ``cam_layer`` attribute (``KACLModel``).
        images: ``(N, 1, S, S)``.
        requests: per image, the class indices to localise.
        class_names: labels given to the boxes.
        cam_layer: the layer Grad-CAM hooks (default: ``model.cam_layer``).

    Returns:
        per image the boxes (all classes, best first per class) in ``S``-pixel coordinates,
        and (if ``return_maps``) per image ``{class: (S, S) map}``.
    """
    cam = make_cam(model, cam_layer or model.cam_layer, cam_method)
    pairs = [(i, c) for i, cs in enumerate(requests) for c in cs]
    boxes: list[list[Box]] = [[] for _ in range(len(requests))]
    maps: list[dict[int, np.ndarray]] = [{} for _ in range(len(requests))]
    for b0 in range(0, len(pairs), batch):
        chunk = pairs[b0 : b0 + batch]
        x = images[[i for i, _ in chunk]].to(device)
        m = cam(x, class_idx=[c for _, c in chunk])[:, 0].detach().cpu()
        for (i, c), mp in zip(chunk, m):
            boxes[i].extend(map_to_boxes(mp, threshold, blur, label=class_names[c]))
            if return_maps:
                maps[i][c] = mp.numpy()
    model.zero_grad(set_to_none=True)
    return boxes, maps


def save_overlay(image: np.ndarray, cam: np.ndarray | None, predicted: Sequence[Box], truth: Sequence[tuple[str, tuple]], path: Path, title: str = "") -> None:
    """PNG: the X-ray, the CAM (jet, 40 %), predicted boxes (red, with score) and true boxes (green)."""
    from matplotlib.patches import Rectangle

    from gazerad.engine.runlog import new_figure, save_figure

    fig = new_figure((4, 4), dpi=110)
    ax = fig.add_subplot()
    ax.imshow(image, cmap="gray")
    if cam is not None:
        ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    for lab, (x, y, w, h) in truth:
        ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="lime", lw=1.5))
        ax.text(x, y - 2, lab, color="lime", fontsize=6)
    for b in predicted:
        ax.add_patch(Rectangle((b.x, b.y), b.w, b.h, fill=False, ec="red", lw=1.2, ls="--"))
        ax.text(b.x, b.y + b.h + 8, f"{b.label} {b.score:.2f}", color="red", fontsize=6)
    ax.set_title(title, fontsize=7)
    ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def _auc(y: np.ndarray, p: np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    out = {}
    for k, c in enumerate(classes):
        out[c] = float(roc_auc_score(y[:, k], p[:, k])) if 0 < y[:, k].sum() < len(y) else float("nan")
    vals = [v for v in out.values() if np.isfinite(v)]
    out["macro"] = float(np.mean(vals)) if vals else float("nan")
    return out


def box_requests(table: Any, rows: Sequence[int], boxes_csv: str | Path, size: int) -> tuple[dict[str, list], list[list[int]], list[tuple[float, float]]]:
    """Ground truth of ``rows`` for localisation scoring.

    Returns:
        ``truth`` (image id -> ``[(label, (x, y, w, h))]`` in image pixels, boxed images only),
        per row the class indices to localise (its boxes' classes), and per row the scale
        ``(sx, sy)`` from the ``size`` model input back to image pixels.
    """
    from gazerad.data.nih import read_bbox_list
    from gazerad.io.xray import read_xray

    all_boxes = read_bbox_list(boxes_csv)
    unknown = sorted(set(all_boxes) - set(table.ids))
    if unknown:
        raise InputError(boxes_csv, f"{len(unknown)} boxed images are not in labels.csv, e.g. {unknown[:3]}")
    truth, requests, scales = {}, [], []
    for i in rows:
        gts = [(lab, box) for lab, box in all_boxes.get(table.ids[i], []) if lab in table.classes]
        if gts:
            truth[table.ids[i]] = gts
        requests.append(sorted({table.classes.index(lab) for lab, _ in gts}))
        h, w = read_xray(table.paths[i])[0].shape if gts else (size, size)
        scales.append((w / size, h / size))
    return truth, requests, scales


DEFAULT_BOX_SETTINGS = {"cam_threshold": 0.5, "blur": 5}
THRESHOLD_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
BLUR_GRID = (1, 3, 5)


def box_settings(state: dict[str, Any]) -> dict[str, Any]:
    """The CAM threshold and blur a saved model localises with: tuned on its validation split
    (``box_extraction`` in ``kacl.pt``) or :data:`DEFAULT_BOX_SETTINGS`."""
    tuned = state.get("box_extraction") or {}
    if "cam_threshold" in tuned and "skipped" not in tuned:
        return {"cam_threshold": float(tuned["cam_threshold"]), "blur": int(tuned["blur"]), "split": tuned.get("split")}
    return dict(DEFAULT_BOX_SETTINGS)


def tune_box_extraction(
    model: torch.nn.Module,
    table: Any,
    rows: Sequence[int],
    boxes_csv: str | Path,
    image_size: int,
    cam_method: str = "gradcam",
    thresholds: Sequence[float] = THRESHOLD_GRID,
    blurs: Sequence[int] = BLUR_GRID,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """The CAM threshold and blur that localise ``rows``' boxes best (T(IoU=0.3), then mean best IoU).

    One CAM per (image, boxed class); every (threshold, blur) pair re-boxes the same maps.
    Returns ``{"cam_threshold", "blur", "n_boxes", "t_iou_0.3", "mean_best_iou", "grid"}``.
    """
    from gazerad.data.inputs import encoder_inputs

    truth, requests, scales = box_requests(table, rows, boxes_csv, image_size)
    keep = [k for k, r in enumerate(requests) if r]
    if not keep:
        return {**DEFAULT_BOX_SETTINGS, "skipped": "no boxed images"}
    ids = [table.ids[rows[k]] for k in keep]
    images = encoder_inputs([table.paths[rows[k]] for k in keep], image_size)
    _, maps = localize_images(model, images, [requests[k] for k in keep], table.classes, cam_method, device=device, return_maps=True)
    return best_box_settings(dict(zip(ids, maps)), truth, table.classes, {ids[j]: scales[k] for j, k in enumerate(keep)}, thresholds, blurs)


def best_box_settings(
    maps: dict[str, dict[int, np.ndarray]],
    truth: dict[str, list],
    classes: Sequence[str],
    scales: dict[str, tuple[float, float]] | None = None,
    thresholds: Sequence[float] = THRESHOLD_GRID,
    blurs: Sequence[int] = BLUR_GRID,
) -> dict[str, Any]:
    """The (threshold, blur) whose boxes of ``maps`` (image id -> {class index: map}) best
    localise ``truth`` (T(IoU=0.3), then mean best IoU); ``scales`` map each image's map
    pixels to image pixels (default 1).

    Returns ``{"cam_threshold", "blur", "t_iou_0.3", "mean_best_iou", "n_boxes", "grid"}``.
    """
    grid = []
    for t in thresholds:
        for b in blurs:
            pred = {}
            for i, by_class in maps.items():
                sc = (scales or {}).get(i, (1.0, 1.0))
                pred[i] = [bx.scaled(*sc) for c, m in by_class.items() for bx in map_to_boxes(m, t, b, label=classes[c])]
            acc = localization_accuracy(pred, truth, (0.3,))
            grid.append({"cam_threshold": float(t), "blur": int(b), "t_iou_0.3": acc["overall"][0.3], "mean_best_iou": acc["mean_best_iou"]})
    best = max(grid, key=lambda g: (g["t_iou_0.3"], g["mean_best_iou"]))
    return {**best, "n_boxes": int(sum(len(v) for v in truth.values())), "grid": grid}


def _calibration_report(state: dict[str, Any], table: Any, rows: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
    """ECE and reliability bins of the evaluated images the temperature was *not* fitted on."""
    fit = state.get("calibration") or {}
    t = temperature_of(state)
    fitted = set(table.subset(fit["split"]).tolist()) if fit.get("split") and "skipped" not in fit else set()
    keep = np.array([k for k, i in enumerate(rows) if int(i) not in fitted], dtype=int)
    out: dict[str, Any] = {"temperature": t, "fitted_on": None if not fitted else fit["split"], "n_images": int(len(keep))}
    if len(keep):
        y = table.labels[rows][keep]
        out["ece"] = expected_calibration_error(calibrated_probabilities(logits[keep], t), y)
        out["ece_uncalibrated"] = expected_calibration_error(calibrated_probabilities(logits[keep]), y)
        out["reliability"] = reliability_bins(calibrated_probabilities(logits[keep], t), y)
    return out


def evaluate_kacl(
    model_path: str | Path,
    data: str | Path,
    splits: Sequence[str] = ("test", "validate"),
    boxes_csv: str | Path | None = None,
    out: str | Path | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    overlays: int = 8,
    cam_method: str = "gradcam",
    cam_threshold: float | None = None,
    device: str | None = None,
    blur: int | None = None,
) -> dict[str, Any]:
    """AUC and T(IoU) localisation of a trained model on held-out studies (see module docstring).

    ``cam_threshold`` and ``blur`` default to the model's own (:func:`box_settings`: tuned on
    the validation split at the end of training, else 0.5 and 5).

    Returns:
        ``{"auc": {class: auc, "macro": ...}, "calibration": {temperature, ece, ece_uncalibrated,
        reliability} (on the images the temperature was not fitted on), "localization": {...},
        "baseline_centred": {...}, "n_images": N}``; probabilities are calibrated; also written to ``OUT/metrics.json`` when ``out`` is given.
    """
    from gazerad.data.inputs import encoder_inputs
    from gazerad.kacl.trainer import load_kacl, model_logits
    from gazerad.pretrain.data import read_study_table

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, state = load_kacl(model_path, dev)
    table = read_study_table(data)
    if list(table.classes) != list(state["classes"]):
        raise InputError(Path(data) / "labels.csv", f"classes {table.classes} differ from the model's {state['classes']}")
    rows = table.subset(splits)
    if len(rows) == 0:
        raise InputError(Path(data) / "labels.csv", f"no images in splits {list(splits)}")
    size = int(state["config"]["image_size"])
    images = encoder_inputs([table.paths[i] for i in rows], size)
    logits = model_logits(model, images, dev)
    probs = calibrated_probabilities(logits, temperature_of(state))
    result: dict[str, Any] = {"n_images": int(len(rows)), "auc": _auc(table.labels[rows], probs, table.classes)}
    result["calibration"] = _calibration_report(state, table, rows, logits)

    bpath = Path(boxes_csv) if boxes_csv else Path(data) / "BBox_List_2017.csv"
    if bpath.is_file():
        ids = [table.ids[i] for i in rows]
        truth, requests, scales = box_requests(table, rows, bpath, size)
        tuned = box_settings(state)
        cam_threshold = tuned["cam_threshold"] if cam_threshold is None else cam_threshold
        blur = tuned["blur"] if blur is None else blur
        boxes, maps = localize_images(model, images, requests, table.classes, cam_method, cam_threshold, blur, device=dev, return_maps=overlays > 0)
        pred = {ids[k]: [b.scaled(*scales[k]) for b in bs] for k, bs in enumerate(boxes)}
        result["localization"] = localization_accuracy(pred, truth, thresholds)
        result["box_extraction"] = {"cam_threshold": cam_threshold, "blur": blur, "tuned_on": tuned.get("split")}
        base = {}
        for k, i in enumerate(rows):
            h_, w_ = size * scales[k][1], size * scales[k][0]
            base[ids[k]] = [centred_box((h_, w_), 0.5, lab) for lab in table.classes]
        result["baseline_centred"] = localization_accuracy(base, truth, thresholds)
        if out is not None and overlays > 0:
            od = Path(out) / "overlays"
            od.mkdir(parents=True, exist_ok=True)
            shown = [k for k in range(len(rows)) if truth.get(ids[k])][:overlays]
            for k in shown:
                sx, sy = scales[k]
                tb = [(lab, (x / sx, y / sy, w / sx, h / sy)) for lab, (x, y, w, h) in truth[ids[k]]]
                cam = maps[k][requests[k][0]] if maps[k] else None
                title = f"{ids[k]}: CAM ({table.classes[requests[k][0]]}), predicted red, truth green"
                save_overlay(images[k, 0].numpy(), cam, boxes[k], tb, od / f"{Path(ids[k]).stem}.png", title)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "metrics.json", json.dumps(result, indent=1))
    return result
