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
from gazerad.localize import DEFAULT_THRESHOLDS, Box, centred_box, component_boxes, localization_accuracy, make_cam, map_to_boxes, smoothed

__all__ = [
    "class_cams",
    "source_maps",
    "predicted_attention",
    "gaze_sources",
    "uses_attention",
    "needs_attention",
    "ATTENTION_SOURCE",
    "class_setting",
    "choose_box_settings",
    "overridden",
    "validation_hit_rate",
    "selection_score",
    "extraction_used",
    "box_rank_key",
    "localize_images",
    "evaluate_kacl",
    "save_overlay",
    "box_requests",
    "box_settings",
    "attention_file",
    "attention_fingerprint",
    "tune_box_extraction",
    "best_box_settings",
    "box_sizes",
    "map_pixels",
    "BOX_SHAPES",
    "DEFAULT_BOX_SETTINGS",
]


def class_cams(
    model: torch.nn.Module,
    images: torch.Tensor,
    requests: Sequence[Sequence[int]],
    layers: Sequence[str],
    cam_method: str = "gradcam",
    batch: int = 32,
    device: str | torch.device = "cpu",
) -> dict[str, list[dict[int, np.ndarray]]]:
    """Grad-CAM of every requested (image, class) on every layer in ``layers``, one forward
    and backward pass per batch of pairs.

    Args:
        images: ``(N, 1, S, S)``.
        requests: per image, the class indices to map.

    Returns:
        ``{layer: per image {class: (S, S) map in [0, 1]}}``.
    """
    layers = list(dict.fromkeys(layers))
    pairs = [(i, c) for i, cs in enumerate(requests) for c in cs]
    out: dict[str, list[dict[int, np.ndarray]]] = {layer: [{} for _ in requests] for layer in layers}
    with make_cam(model, layers, cam_method) as cam:  # the hooks come off the model afterwards
        for b0 in range(0, len(pairs), batch):
            chunk = pairs[b0 : b0 + batch]
            per_layer = cam.maps(images[[i for i, _ in chunk]].to(device), class_idx=[c for _, c in chunk])
            for layer, m in zip(layers, per_layer):
                m = m[:, 0].float().cpu().numpy()
                for (i, c), mp in zip(chunk, m):
                    out[layer][i][c] = mp
    model.zero_grad(set_to_none=True)
    return out


ATTENTION_SOURCE = "attention"  # the attention predictor's map (where readers look), the same for every class
GATED = "attention*"  # "attention*backbone.layer3": that layer's class CAM times the attention map


def uses_attention(source: str | None) -> bool:
    """Whether a box source (a CAM layer, :data:`ATTENTION_SOURCE` or ``attention*<layer>``) needs the attention map."""
    return bool(source) and (source == ATTENTION_SOURCE or source.startswith(GATED))


def source_layer(source: str) -> str | None:
    """The CAM layer a box source hooks (``None`` for the attention map alone)."""
    if source == ATTENTION_SOURCE:
        return None
    return source[len(GATED) :] if source.startswith(GATED) else source


def gaze_sources(layers: Sequence[str]) -> list[str]:
    """The box sources an attention model adds to CAM ``layers``: its map alone and each layer's CAM gated by it."""
    return [ATTENTION_SOURCE] + [GATED + layer for layer in layers]


def needs_attention(settings: dict[str, Any]) -> bool:
    """Whether box ``settings`` (overall or any class) use the attention map."""
    return uses_attention(settings.get("cam_layer")) or any(uses_attention(v.get("cam_layer")) for v in (settings.get("per_class") or {}).values())


def predicted_attention(attention_model: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """The attention predictor's maps of model inputs ``(N, 1, S, S)`` -> ``(N, S, S)`` float32, each summing to 1."""
    from gazerad.attention.predict import predict_attention

    with torch.no_grad():
        return predict_attention(attention_model, images.float()).cpu().numpy()[:, 0].astype(np.float32)


def source_maps(
    model: torch.nn.Module,
    images: torch.Tensor,
    requests: Sequence[Sequence[int]],
    sources: Sequence[str],
    attention: np.ndarray | None = None,
    cam_method: str = "gradcam",
    batch: int = 32,
    device: str | torch.device = "cpu",
) -> dict[str, list[dict[int, np.ndarray]]]:
    """Maps of every requested (image, class) from every box source.

    A source is a CAM layer (:func:`class_cams`), :data:`ATTENTION_SOURCE` (the attention
    map: where radiologists look, whatever the class) or ``attention*<layer>`` (that layer's
    class CAM times the attention map scaled to a peak of 1: the class's evidence where
    readers look).

    Args:
        images: ``(N, 1, S, S)``.
        requests: per image, the class indices to map.
        attention: ``(N, S, S)`` attention maps of ``images`` (:func:`predicted_attention`);
            needed by the attention sources only.

    Returns:
        ``{source: per image {class: (S, S) map}}``.
    """
    sources = list(dict.fromkeys(sources))
    if attention is None and any(uses_attention(s) for s in sources):
        raise ValueError(f"box sources {[s for s in sources if uses_attention(s)]} need the attention map of the images")
    if attention is not None and len(attention) != len(requests):
        raise ValueError(f"{len(attention)} attention maps for {len(requests)} images")
    layers = [layer for s in sources if (layer := source_layer(s))]
    cams = class_cams(model, images, requests, layers, cam_method, batch, device) if layers else {}
    out: dict[str, list[dict[int, np.ndarray]]] = {}
    for s in sources:
        if s == ATTENTION_SOURCE:
            out[s] = [{c: attention[i] for c in cs} for i, cs in enumerate(requests)]
        elif uses_attention(s):
            gate = [a / max(float(a.max()), 1e-12) for a in attention]
            out[s] = [{c: m * gate[i] for c, m in per.items()} for i, per in enumerate(cams[source_layer(s)])]
        else:
            out[s] = cams[s]
    return out


def class_setting(settings: dict[str, Any], class_name: str) -> tuple[str | None, float, int, tuple[float, float] | None]:
    """``(cam_layer, cam_threshold, blur, box_size)`` for one class: its own entry in
    ``settings["per_class"]`` where tuned, else the settings' overall values; ``box_size``
    is ``(w, h)`` as fractions of the image's width and height for peak-centred boxes
    (:func:`gazerad.localize.map_to_boxes`), ``None`` for component extents."""
    own = (settings.get("per_class") or {}).get(class_name) or {}
    size = own.get("box_size")
    return (
        own.get("cam_layer") or settings.get("cam_layer"),
        float(own.get("cam_threshold", settings.get("cam_threshold", DEFAULT_BOX_SETTINGS["cam_threshold"]))),
        int(own.get("blur", settings.get("blur", DEFAULT_BOX_SETTINGS["blur"]))),
        None if size is None else (float(size[0]), float(size[1])),
    )


def map_pixels(box_size: tuple[float, float] | None, shape: tuple[int, ...]) -> tuple[float, float] | None:
    """A ``box_size`` (fractions of the image's width and height) in pixels of an ``(H, W)`` map."""
    return None if box_size is None else (box_size[0] * shape[-1], box_size[1] * shape[-2])


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
    per_class: dict[str, dict[str, Any]] | None = None,
    attention: np.ndarray | None = None,
) -> tuple[list[list[Box]], list[dict[int, np.ndarray]]]:
    """Boxes for the requested classes of each image, one CAM per (image, class), batched.

    Args:
        model: a classifier with a ``cam_layer`` attribute (``KACLModel``).
        images: ``(N, 1, S, S)``.
        requests: per image, the class indices to localise.
        class_names: labels given to the boxes.
        threshold, blur, cam_layer: box extraction of every class (``cam_layer`` default:
            ``model.cam_layer``) ...
        per_class: ... unless a class has its own ``{"cam_layer", "cam_threshold", "blur"}``
            (and optionally ``"box_size"``: peak-centred boxes of that size, fractions of
            the image side) here (the per-class settings :func:`tune_box_extraction`
            chooses). A ``cam_layer`` may be any box source of :func:`source_maps`.
        attention: ``(N, S, S)`` attention maps of ``images``, for the attention sources.

    Returns:
        per image the boxes (all classes, best first per class) in ``S``-pixel coordinates,
        and (if ``return_maps``) per image ``{class: (S, S) map}`` (each class's own source).
    """
    base = {"cam_layer": cam_layer or model.cam_layer, "cam_threshold": threshold, "blur": blur, "per_class": per_class or {}}
    chosen = {c: class_setting(base, class_names[c]) for cs in requests for c in cs}
    cams = source_maps(model, images, requests, [s[0] for s in chosen.values()] or [base["cam_layer"]], attention, cam_method, batch, device)
    boxes: list[list[Box]] = [[] for _ in requests]
    maps: list[dict[int, np.ndarray]] = [{} for _ in requests]
    for i, cs in enumerate(requests):
        for c in cs:
            layer, thr, bl, size = chosen[c]
            mp = cams[layer][i][c]
            boxes[i].extend(map_to_boxes(mp, thr, bl, label=class_names[c], size=map_pixels(size, mp.shape)))
            if return_maps:
                maps[i][c] = mp
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


def box_requests(
    table: Any, rows: Sequence[int], boxes_csv: str | Path, size: int, left_out: dict[str, int] | None = None
) -> tuple[dict[str, list], list[list[int]], list[tuple[float, float]]]:
    """Ground truth of ``rows`` for localisation scoring (boxes matched to images by image
    id, so ``x.png`` and ``x`` in the box list name one image). Boxes of classes that are
    not among ``table.classes`` are left out and counted per class in ``left_out``.

    Returns:
        ``truth`` (image id -> ``[(label, (x, y, w, h))]`` in image pixels, boxed images only),
        per row the class indices to localise (its boxes' classes), and per row the scale
        ``(sx, sy)`` from the ``size`` model input back to image pixels.
    """
    from gazerad.data.nih import read_bbox_list
    from gazerad.data.study import image_id_of
    from gazerad.io.xray import read_xray

    # keyed by image id, as `datasets check` reads them: "x.png" and "x" name one image
    all_boxes: dict[str, list] = {}
    for name, bs in read_bbox_list(boxes_csv).items():
        all_boxes.setdefault(image_id_of(name), []).extend(bs)
    known = {image_id_of(n) for n in (*table.ids, *getattr(table, "left_out", ()))}
    unknown = sorted(set(all_boxes) - known)
    if unknown:
        raise InputError(boxes_csv, f"{len(unknown)} boxed images are not in labels.csv, e.g. {unknown[:3]}")
    truth, requests, scales = {}, [], []
    for i in rows:
        gts = []
        for lab, box in all_boxes.get(image_id_of(table.ids[i]), []):
            if lab in table.classes:
                gts.append((lab, box))
            elif left_out is not None:  # a class the model does not predict cannot be localised
                left_out[lab] = left_out.get(lab, 0) + 1
        if gts:
            truth[table.ids[i]] = gts
        requests.append(sorted({table.classes.index(lab) for lab, _ in gts}))
        h, w = read_xray(table.paths[i])[0].shape if gts else (size, size)
        for lab, (x, y, bw, bh) in gts:  # a pixel of slack for rounding; beyond it the box is not of this image
            if x < -1 or y < -1 or x + bw > w + 1 or y + bh > h + 1:
                raise InputError(boxes_csv, f"{lab} box [{x:g}, {y:g}, {bw:g}, {bh:g}] of {table.ids[i]} lies outside its {w} x {h} image")
        scales.append((w / size, h / size))
    return truth, requests, scales


DEFAULT_BOX_SETTINGS = {"cam_threshold": 0.5, "blur": 5}
THRESHOLD_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
BLUR_GRID = (1, 3, 5, 9)
BOX_SHAPES = ("extent", "peak")  # a component's own extent; the class's median validation box centred on its peak


def box_settings(state: dict[str, Any], attention: str | None = None) -> dict[str, Any]:
    """How a saved model localises: ``{"cam_threshold", "blur", "cam_layer", "per_class",
    "split", "t_iou_0.3"}`` as tuned on its validation split (``box_extraction`` in
    ``kacl.pt``; ``t_iou_0.3`` and ``n_boxes``, overall and per class, are the tuned
    setting's validation hit rate and the boxes it was measured on, what a served box's
    ``validation_t_iou_0.3`` and ``validation_boxes`` report), else
    :data:`DEFAULT_BOX_SETTINGS` on the model's own CAM layer. Models saved before per-class
    tuning have no ``cam_layer`` / ``per_class`` entries: every class then uses the overall values.

    Settings tuned with an attention model's map as a box source are returned only when
    ``attention``, the fingerprint of the attention model the caller has
    (:func:`attention_fingerprint`), is the one they were tuned with; otherwise the best
    CAM-only settings of the same tuning (``cam_only``)."""
    tuned = state.get("box_extraction") or {}
    if needs_attention(tuned) and tuned.get("cam_only") and attention != tuned.get("attention_fingerprint"):
        tuned = {**tuned["cam_only"], "split": tuned.get("split")}
    layer = state.get("config", {}).get("cam_layer")
    if "cam_threshold" in tuned and "skipped" not in tuned:
        keep = (*EXTRACTION_KEYS, "t_iou_0.3", "n_boxes")
        per = {c: {k: v[k] for k in keep if k in v} for c, v in (tuned.get("per_class") or {}).items()}
        return {
            "cam_threshold": float(tuned["cam_threshold"]),
            **{k: tuned[k] for k in ("t_iou_0.3", "n_boxes") if k in tuned},
            "blur": int(tuned["blur"]),
            "cam_layer": tuned.get("cam_layer") or layer,
            "per_class": per,
            "split": tuned.get("split"),
        }
    return {**DEFAULT_BOX_SETTINGS, "cam_layer": layer, "per_class": {}}


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
    layers: Sequence[str] | None = None,
    attention_model: torch.nn.Module | None = None,
    shapes: Sequence[str] = BOX_SHAPES,
) -> dict[str, Any]:
    """The box source (CAM layer), threshold, blur and box shape that localise ``rows``' boxes best, overall and per class.

    One CAM per (image, boxed class) on each of ``layers`` (default: the model's
    ``cam_candidates``; a class's best layer depends on its size: coarse for the heart, fine
    for a mass); with ``attention_model`` (a FocusContrast attention predictor) its map and
    each layer's CAM gated by it are sources too (:func:`gaze_sources`). Every (threshold,
    blur) pair re-boxes the same maps, and with ``"peak"`` in ``shapes`` also as boxes of the
    class's median size on ``rows`` centred on each component's peak (:func:`box_sizes`; a
    nodule is a tenth of the blob readers' gaze leaves on it). Overall: the best (source,
    threshold, blur) of component extents by T(IoU=0.3) over all boxes, then mean best IoU
    (the setting of classes without boxes here, so without a size); per class, the best of
    every entry over that class's boxes, ties going to the overall setting.

    Returns ``{"cam_layer", "cam_threshold", "blur", "t_iou_0.3", "mean_best_iou", "n_boxes",
    "per_class": {class: {"cam_layer", "cam_threshold", "blur", ["box_size",] "t_iou_0.3",
    "mean_best_iou", "n_boxes"}}, "grid"}``; with ``attention_model`` also ``"cam_only"``: the
    same choice among the CAM layers alone (what :func:`box_settings` serves without the
    attention map).
    """
    unknown = sorted(set(shapes) - set(BOX_SHAPES))
    if unknown or "extent" not in shapes:
        raise ValueError(f"box shapes must include 'extent' and be among {BOX_SHAPES}, got {list(shapes)}")
    from gazerad.data.inputs import encoder_inputs

    truth, requests, scales = box_requests(table, rows, boxes_csv, image_size)
    keep = [k for k, r in enumerate(requests) if r]
    if not keep:
        return {**DEFAULT_BOX_SETTINGS, "skipped": "no boxed images"}
    ids = [table.ids[rows[k]] for k in keep]
    images = encoder_inputs([table.paths[rows[k]] for k in keep], image_size)
    layers = list(layers or getattr(model, "cam_candidates", [model.cam_layer]))
    heat = None if attention_model is None else predicted_attention(attention_model, images)
    sources = layers + ([] if heat is None else gaze_sources(layers))
    maps = source_maps(model, images, [requests[k] for k in keep], sources, heat, cam_method, device=device)
    sc = {ids[j]: scales[k] for j, k in enumerate(keep)}
    sizes = box_sizes(truth, sc, image_size) if "peak" in shapes else None
    by_source = {src: best_box_settings(dict(zip(ids, m)), truth, table.classes, sc, thresholds, blurs, sizes) for src, m in maps.items()}
    grid = [{"cam_layer": src, **g} for src, r in by_source.items() for g in r["grid"]]
    out = {**choose_box_settings(grid), "n_boxes": int(sum(len(v) for v in truth.values())), "grid": grid}
    if heat is not None:
        out["cam_only"] = choose_box_settings([g for g in grid if not uses_attention(g["cam_layer"])])
        out["attention_fingerprint"] = attention_fingerprint(attention_model)
    return out


def attention_fingerprint(attention_model: torch.nn.Module) -> str:
    """The short fingerprint (config and weights) that ties box settings to the attention model they were tuned with."""
    from gazerad.attention.checkpoint import model_fingerprint

    return model_fingerprint(attention_model)[:16]


def _rank(g: dict[str, Any], key: str = "") -> tuple[float, float]:
    return (g[f"t_iou_0.3{key}"], g[f"mean_best_iou{key}"])


def choose_box_settings(grid: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The overall best entry of a tuning ``grid`` (T(IoU=0.3), then mean best IoU) among
    component extents and, per class, the entry best on that class's boxes (a peak-centred
    one too, with its ``box_size``); a class keeps the overall setting unless another one is
    strictly better on it."""
    keys = ("cam_layer", "cam_threshold", "blur")
    best = max((g for g in grid if g.get("box") != "peak"), key=_rank)
    out = {**{k: best[k] for k in keys if k in best}, "t_iou_0.3": best["t_iou_0.3"], "mean_best_iou": best["mean_best_iou"], "per_class": {}}
    for c, here in best.get("per_class", {}).items():
        own = max(grid, key=lambda g: _rank(g["per_class"][c]))
        pick = own if _rank(own["per_class"][c]) > _rank(here) else best
        out["per_class"][c] = {**{k: pick[k] for k in keys if k in pick}, **pick["per_class"][c]}
    return out


def box_sizes(truth: dict[str, list], scales: dict[str, tuple[float, float]], size: int) -> dict[str, tuple[float, float]]:
    """Per class the median ``(w, h)`` of its ``truth`` boxes (image pixels) as fractions of
    their images' width and height (``scales`` map an ``size``-pixel model input back to the
    image, as in :func:`box_requests`)."""
    by: dict[str, list[tuple[float, float]]] = {}
    for i, gts in truth.items():
        sx, sy = scales.get(i, (1.0, 1.0))
        for lab, (_, _, w, h) in gts:
            by.setdefault(lab, []).append((w / (size * sx), h / (size * sy)))
    return {c: (float(np.median([v[0] for v in vs])), float(np.median([v[1] for v in vs]))) for c, vs in by.items()}


def best_box_settings(
    maps: dict[str, dict[int, np.ndarray]],
    truth: dict[str, list],
    classes: Sequence[str],
    scales: dict[str, tuple[float, float]] | None = None,
    thresholds: Sequence[float] = THRESHOLD_GRID,
    blurs: Sequence[int] = BLUR_GRID,
    sizes: dict[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """The (threshold, blur) whose boxes of ``maps`` (image id -> {class index: map}) best
    localise ``truth`` (T(IoU=0.3), then mean best IoU), overall and per class; ``scales``
    map each image's map pixels to image pixels (default 1). With ``sizes`` (class ->
    ``(w, h)`` fractions of the image, :func:`box_sizes`) every pair is also scored with
    peak-centred boxes of those sizes (grid entries with ``"box": "peak"``; their per-class
    entries carry ``box_size``), which only per-class choices take.

    Returns ``{"cam_threshold", "blur", "t_iou_0.3", "mean_best_iou", "n_boxes", "per_class",
    "grid"}``; every grid entry carries its per-class T(IoU=0.3), mean best IoU and box count.
    """
    shapes = [None] if not sizes else [None, sizes]
    entries: dict[tuple[float, int, int], dict[str, Any]] = {}
    for b in blurs:  # one blur of every map serves every threshold and shape
        ready = {i: {c: smoothed(m, b) for c, m in by_class.items()} for i, by_class in maps.items()}
        for t in thresholds:
            pred: list[dict[str, list[Box]]] = [{} for _ in shapes]
            for i, by_class in ready.items():
                sc = (scales or {}).get(i, (1.0, 1.0))
                for p in pred:
                    p[i] = []
                for c, m in by_class.items():
                    per_shape = component_boxes(m, t, classes[c], sizes=[map_pixels((shape or {}).get(classes[c]), m.shape) for shape in shapes])
                    for p, bxs in zip(pred, per_shape):
                        p[i].extend(bx.scaled(*sc) for bx in bxs)
            for k, (shape, p) in enumerate(zip(shapes, pred)):
                acc = localization_accuracy(p, truth, (0.3,))
                per = {
                    c: {
                        **({"box_size": list(shape[c])} if shape and c in shape else {}),
                        "t_iou_0.3": v[0.3],
                        "mean_best_iou": acc["mean_best_iou_per_class"][c],
                        "n_boxes": acc["n_boxes"][c],
                    }
                    for c, v in acc["per_class"].items()
                }
                entry = {"cam_threshold": float(t), "blur": int(b), **({"box": "peak"} if shape else {})}
                entries[(t, b, k)] = {**entry, "t_iou_0.3": acc["overall"][0.3], "mean_best_iou": acc["mean_best_iou"], "per_class": per}
    grid = [entries[(t, b, k)] for t in thresholds for b in blurs for k in range(len(shapes))]  # ties go to the first
    return {**choose_box_settings(grid), "n_boxes": int(sum(len(v) for v in truth.values())), "grid": grid}


def overridden(settings: dict[str, Any], cam_threshold: float | None = None, blur: int | None = None, cam_layer: str | None = None) -> dict[str, Any]:
    """``settings`` (:func:`box_settings`) with a caller's explicit threshold / blur / layer
    applied to *every* class (their per-class values dropped; a class's ``box_size``, its
    typical box, stays). Any override also drops the validation figures (``t_iou_0.3``,
    ``n_boxes``): they were measured with the tuned settings."""
    out = {**settings, "per_class": {c: dict(v) for c, v in settings.get("per_class", {}).items()}}
    changes = (("cam_threshold", cam_threshold), ("blur", blur), ("cam_layer", cam_layer))
    for key, value in changes:
        if value is not None:
            out[key] = value
            for v in out["per_class"].values():
                v.pop(key, None)
    if any(value is not None for _, value in changes):
        for v in [out, *out["per_class"].values()]:
            v.pop("t_iou_0.3", None)
            v.pop("n_boxes", None)
    return out


def box_rank_key(probability: float, hit: tuple[float, int | None] | None, rank: str = "expected_hit") -> tuple[float, float]:
    """Sort key (ascending = first) of a finding's boxes under ``rank`` (``expected_hit`` or
    ``probability``, :data:`gazerad.serving.params.BOX_RANKS`).

    ``expected_hit``: probability x the class's validation T(IoU=0.3) (``hit``, from
    :func:`validation_hit_rate` with ``overall``), the chance that the finding is there and
    its box finds it, as detectors that weigh a box's localisation quality with its class
    score rank them; without a validation figure (untuned, or overridden), the probability.
    ``probability``: the calibrated probability alone. Ties: the probability.
    ``benchmarks/box_ranking.py`` compares the two on held-out boxes."""
    value = probability * hit[0] if rank == "expected_hit" and hit is not None else probability
    return -value, -probability


EXTRACTION_KEYS = ("cam_layer", "cam_threshold", "blur", "box_size")


def extraction_used(settings: dict[str, Any]) -> dict[str, Any]:
    """The extraction part of box ``settings`` (:func:`box_settings`), overall and per class,
    without their validation figures: what an answer reports as the settings it used."""
    per = {c: {k: v[k] for k in EXTRACTION_KEYS if k in v} for c, v in (settings.get("per_class") or {}).items()}
    return {**{k: settings[k] for k in EXTRACTION_KEYS if k in settings}, "per_class": per}


def selection_score(auc: float, t_iou_03: float) -> float:
    """How GazeRad ranks candidate localisers (training settings, methods) on a validation
    split: macro AUC + T(IoU=0.3), classification and localisation weighted alike (used by
    ``benchmarks/kacl_table.py`` and ``scripts/make_weights.py``)."""
    return float(auc) + float(t_iou_03)


def validation_hit_rate(settings: dict[str, Any], class_name: str, overall: bool = False) -> tuple[float, int | None] | None:
    """``(T(IoU=0.3), boxes it was measured on)`` of ``class_name``'s tuned box extraction
    on the validation split, from ``settings`` (:func:`box_settings`): the class's own
    figures where it was tuned per class (it had validation boxes), else ``None`` (not
    measured on this class) or, with ``overall``, the figures over all classes' boxes (the
    estimate box ranking falls back on). ``None`` when untuned or overridden
    (:func:`overridden`); the box count is ``None`` for models saved without it."""
    own = (settings.get("per_class") or {}).get(class_name) or {}
    src = own if "t_iou_0.3" in own else (settings if overall else {})
    if src.get("t_iou_0.3") is None:
        return None
    n = src.get("n_boxes")
    return float(src["t_iou_0.3"]), None if n is None else int(n)


def model_study_table(state: dict[str, Any], data: str | Path) -> Any:
    """``data``'s study table, checked to have the saved model's classes (an error naming ``labels.csv`` if not)."""
    from gazerad.pretrain.data import read_study_table

    table = read_study_table(data)
    if list(table.classes) != list(state["classes"]):
        raise InputError(Path(data) / "labels.csv", f"classes {table.classes} differ from the model's {state['classes']}")
    return table


def attention_file(state: dict[str, Any], attention: str | Path | None = None, beside: str | Path | None = None) -> Path | None:
    """The attention model a saved run localises with: ``attention`` (an error if missing),
    else the run's own ``attention`` setting when that file exists, else the one a server
    would serve beside the model file in folder ``beside`` (``attention.pt``, else the
    shipped ``pretrained_attention.pt``), else ``None``. Its gaze settings are used only if
    its fingerprint matches (:func:`box_settings`)."""
    if attention is not None:
        if not Path(attention).is_file():
            raise InputError(attention, "no attention model here (run 'gazerad train-attention' first)")
        return Path(attention)
    own = state.get("config", {}).get("attention")
    if own and Path(own).is_file():
        return Path(own)
    for name in ("attention.pt", "pretrained_attention.pt") if beside is not None else ():
        if (Path(beside) / name).is_file():
            return Path(beside) / name
    return None


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
    attention: str | Path | None = None,
    use_attention: bool = True,
) -> dict[str, Any]:
    """AUC and T(IoU) localisation of a trained model on held-out studies (see module docstring).

    ``cam_threshold`` and ``blur`` default to the model's own (:func:`box_settings`: tuned on
    the validation split at the end of training, else 0.5 and 5). ``attention``: the
    attention model (``attention.pt``) the run's box extraction was tuned with (default: the
    run's ``attention`` setting when that file exists, else the served one beside the model
    file: :func:`attention_file`); without one, a model tuned with
    attention sources localises with its CAM-only settings (as it does with ``use_attention``
    false: the reference of the same weights without gaze).

    Returns:
        ``{"auc": {class: auc, "macro": ...}, "calibration": {temperature, ece, ece_uncalibrated,
        reliability} (on the images the temperature was not fitted on), "localization": {...},
        "baseline_centred": {...}, "n_images": N}`` (``"localization_skipped"``: why, instead of
        the two, when none of the images has a box); probabilities are calibrated; also written to ``OUT/metrics.json`` when ``out`` is given.
    """
    from gazerad.data.inputs import encoder_inputs
    from gazerad.kacl.trainer import load_kacl, model_logits

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, state = load_kacl(model_path, dev)
    table = model_study_table(state, data)
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
    if boxes_csv and not bpath.is_file():
        raise InputError(bpath, "box list does not exist (or is a folder)")
    truth: dict[str, list] = {}
    if bpath.is_file():
        ids = [table.ids[i] for i in rows]
        left_out: dict[str, int] = {}
        truth, requests, scales = box_requests(table, rows, bpath, size, left_out)
        if left_out:  # said, not silent: these boxes are not in any figure below
            result["boxes_left_out"] = {"reason": "class not among the model's classes", "per_class": dict(sorted(left_out.items()))}
        if not truth:  # nothing to score: no figure rather than a NaN one
            result["localization_skipped"] = f"no boxes of the {'/'.join(splits)} images in {bpath.name}"
    if truth:
        beside = Path(model_path) if Path(model_path).is_dir() else Path(model_path).parent
        att_path = attention_file(state, attention, beside) if use_attention else None
        att_model = None
        if att_path is not None:
            from gazerad.attention.checkpoint import load_attention_model

            att_model = load_attention_model(att_path, dev)
        tuned = overridden(box_settings(state, None if att_model is None else attention_fingerprint(att_model)), cam_threshold, blur)
        heat = predicted_attention(att_model, images) if needs_attention(tuned) else None
        boxes, maps = localize_images(
            model,
            images,
            requests,
            table.classes,
            cam_method,
            tuned["cam_threshold"],
            tuned["blur"],
            device=dev,
            return_maps=overlays > 0,
            cam_layer=tuned["cam_layer"],
            per_class=tuned["per_class"],
            attention=heat,
        )
        pred = {ids[k]: [b.scaled(*scales[k]) for b in bs] for k, bs in enumerate(boxes)}
        result["localization"] = localization_accuracy(pred, truth, thresholds)
        result["box_extraction"] = {
            **extraction_used(tuned),
            "tuned_on": tuned.get("split"),
            "attention": None if heat is None else str(att_path),
        }
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
