"""Inference behind the server: attention maps, localisation and classification of one X-ray.

Each service holds a model file path and reloads the weights whenever the file changes
(size or modification time), so a training run that publishes new weights is used by the
next request without a restart. Nothing is loaded at construction. Thread-safe.

Outputs keep the input's geometry: a heatmap is written with the spacing, origin and
direction SimpleITK reads from the input file (PNG: spacing 1, origin 0), so it overlays
the image exactly in any viewer (3D Slicer included).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gazerad.data.inputs import encoder_input
from gazerad.errors import InputError
from gazerad.kacl.calibration import calibrated_probabilities, temperature_of
from gazerad.serving.params import BOX_RANKS

__all__ = [
    "BOX_RANKS",
    "ModelNotReady",
    "ModelSlot",
    "Geometry",
    "read_geometry",
    "write_heatmap",
    "load_input",
    "AttentionService",
    "LocalizationService",
    "ClassificationService",
    "attention_summary",
]


class ModelNotReady(RuntimeError):
    """The model file does not exist yet: train the model (or bundle weights) first."""


class ModelSlot:
    """A model loaded lazily from ``path`` and reloaded when the file changes.

    Where the weights come from, first found: ``path``; a MONAI bundle exported by
    ``gazerad export-bundle`` in the folder ``path`` without its suffix (``model/attention/``
    for ``model/attention.pt``; its ``models/model.pt``); ``fallback``.

    Args:
        path: the weights file (where training publishes).
        loader: ``path -> model object``.
        name: shown in errors.
        fallback: weights used while ``path`` does not exist (e.g. shipped pretrained ones).
    """

    def __init__(self, path: str | os.PathLike, loader: Callable[[Path], Any], name: str, fallback: str | os.PathLike | None = None) -> None:
        self.path = Path(path)
        self.fallback = Path(fallback) if fallback else None
        self.loader = loader
        self.name = name
        self._lock = threading.Lock()
        self._stamp: tuple[str, int, int] | None = None
        self._obj: Any = None

    def current(self) -> Path | None:
        """The file the next :meth:`get` loads from (``None`` when there is none)."""
        if self.path.is_file():
            return self.path
        bundle = self.bundle
        if bundle is not None:
            return bundle
        return self.fallback if self.fallback is not None and self.fallback.is_file() else None

    @property
    def bundle(self) -> Path | None:
        """``models/model.pt`` of a bundle at ``path`` without its suffix, when there is one."""
        from gazerad.bundle.export import bundle_model_file, is_bundle

        folder = self.path.with_suffix("")
        return bundle_model_file(folder) if is_bundle(folder) else None

    def exists(self) -> bool:
        return self.current() is not None

    def get(self) -> Any:
        """The current model; reloaded if the file changed since the last call."""
        p = self.current()
        try:
            if p is None:
                raise FileNotFoundError
            st = p.stat()
        except FileNotFoundError:
            raise ModelNotReady(
                f"model '{self.name}' has no weights yet ({self.path} is missing): train it first "
                f"(POST /train/{self.name}) or start with 'gazerad serve', which trains the sample models"
            ) from None
        stamp = (str(p), st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                self._obj = self.loader(p)
                self._stamp = stamp
            return self._obj

    @property
    def version(self) -> str | None:
        """The loaded weights' stamp (``name:mtime_ns-size``), ``None`` before the first load."""
        return None if self._stamp is None else f"{Path(self._stamp[0]).name}:{self._stamp[1]}-{self._stamp[2]}"


@dataclass
class Geometry:
    """2-D image geometry as SimpleITK reports it (LPS, mm)."""

    size: tuple[int, int]  # (W, H)
    spacing: tuple[float, float]
    origin: tuple[float, float]
    direction: tuple[float, float, float, float]
    spacing_known: bool = True  # False: the file gave no usable spacing (e.g. DICOM 0\\0); 1 mm stands in

    def to_physical(self, x: float, y: float) -> tuple[float, float]:
        """Continuous pixel coordinates (``gazerad.coords``: corner origin) -> LPS mm."""
        i, j = x - 0.5, y - 0.5  # ITK indices are pixel centres
        d = self.direction
        px = self.origin[0] + d[0] * i * self.spacing[0] + d[1] * j * self.spacing[1]
        py = self.origin[1] + d[2] * i * self.spacing[0] + d[3] * j * self.spacing[1]
        return float(px), float(py)

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
            "spacing_known": self.spacing_known,
        }


def read_geometry(path: str | os.PathLike, shape: tuple[int, int]) -> Geometry:
    """Geometry of an image file (header only); identity geometry when ITK cannot read it."""
    import SimpleITK as sitk

    try:
        r = sitk.ImageFileReader()
        r.SetFileName(str(path))
        r.ReadImageInformation()
        if r.GetDimension() >= 2:
            d = r.GetDirection()
            n = r.GetDimension()
            dir2 = (d[0], d[1], d[n], d[n + 1])
            sp = tuple(float(s) for s in r.GetSpacing()[:2])
            known = all(np.isfinite(v) and v > 0 for v in sp) and not _dicom_spacing_missing(path)
            return Geometry(
                (int(shape[1]), int(shape[0])),
                sp if known else (1.0, 1.0),
                tuple(float(o) for o in r.GetOrigin()[:2]),
                tuple(float(v) for v in dir2),
                spacing_known=known,
            )
    except RuntimeError:
        pass
    return Geometry((int(shape[1]), int(shape[0])), (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))


def _dicom_spacing_missing(path: str | os.PathLike) -> bool:
    """A DICOM file without a usable spacing (ITK then reports 1 mm, or the stored 0)."""
    if not str(path).lower().endswith(".dcm"):
        return False
    from gazerad.io.xray import dicom_spacing

    return dicom_spacing(path) is None


def write_heatmap(path: str | os.PathLike, heat: np.ndarray, geometry: Geometry, compress: bool = False) -> Path:
    """Write an ``(H, W)`` float map with the given geometry (``.nrrd`` / ``.nii.gz`` by suffix), atomically.

    Uncompressed by default: gzip of a float32 map costs more than the network saves on a
    LAN (about 0.1 s for 512 x 512, 2 s for 2048 x 2048).
    """
    import SimpleITK as sitk

    from gazerad.io.atomic import atomic_path

    img = sitk.GetImageFromArray(np.ascontiguousarray(heat, dtype=np.float32))
    img.SetSpacing(geometry.spacing)
    img.SetOrigin(geometry.origin)
    img.SetDirection(geometry.direction)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), bool(compress))
    return Path(path)


def load_input(path: str | os.PathLike) -> tuple[np.ndarray, Geometry]:
    """Read an X-ray for inference: ``(H, W)`` float32 (bright = dense) and its geometry.

    Raises:
        InputError: naming the file when it cannot be read, is empty or not finite.
    """
    from gazerad.io.xray import read_xray

    img, _ = read_xray(path)
    if img.ndim != 2 or min(img.shape) < 8:
        raise InputError(path, f"expected a 2-D X-ray of at least 8 x 8 pixels, got shape {img.shape}")
    if not np.isfinite(img).all():
        raise InputError(path, "image has NaN or infinite pixels")
    return img.astype(np.float32, copy=False), read_geometry(path, img.shape)


def attention_summary(heat: np.ndarray, n_peaks: int = 5, boxes: Sequence[Sequence[float]] | None = None) -> dict[str, Any]:
    """Peaks and attention mass per region of a map that sums to 1.

    Returns:
        ``{"peaks": [{"x", "y", "value"}...], "regions": {"upper-left": mass, ...},
        "entropy": bits, "max": value, "boxes": [mass inside each requested box]}``; regions
        are a 3 x 3 grid of the image (left/right as displayed).
    """
    from scipy import ndimage

    h, w = heat.shape
    total = float(heat.sum()) or 1.0
    p = heat / total
    mx = ndimage.maximum_filter(p, size=max(3, min(h, w) // 16))
    ys, xs = np.nonzero((p == mx) & (p > 0))
    order = np.argsort(-p[ys, xs])[:n_peaks]
    peaks = [{"x": float(xs[k]) + 0.5, "y": float(ys[k]) + 0.5, "value": float(p[ys[k], xs[k]])} for k in order]
    regions = {}
    for i, rn in enumerate(("upper", "middle", "lower")):
        for j, cn in enumerate(("left", "centre", "right")):
            regions[f"{rn}-{cn}"] = float(p[i * h // 3 : (i + 1) * h // 3, j * w // 3 : (j + 1) * w // 3].sum())
    nz = p[p > 0]
    out = {"peaks": peaks, "regions": regions, "entropy": float(-(nz * np.log2(nz)).sum()), "max": float(p.max())}
    if boxes:
        inside = []
        for b in boxes:
            x, y, bw, bh = (float(v) for v in b[:4])
            x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
            x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
            inside.append(float(p[y0:y1, x0:x1].sum()) if x1 > x0 and y1 > y0 else 0.0)
        out["boxes"] = inside
    return out


class AttentionService:
    """Predicted radiologist attention for one image (FocusContrast's predictor)."""

    def __init__(self, model_path: str | os.PathLike, device: str | None = None, fallback: str | os.PathLike | None = None) -> None:
        from gazerad.attention.checkpoint import load_attention_model

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.slot = ModelSlot(model_path, lambda p: load_attention_model(p, self.device), "attention", fallback)

    def __call__(
        self, image_path: str | os.PathLike, out_path: str | os.PathLike | None = None, boxes: Sequence[Sequence[float]] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Heatmap ``(H, W)`` (sums to 1) and its JSON summary; written to ``out_path`` if given."""
        from gazerad.attention.predict import predict_attention

        t0 = time.perf_counter()
        model = self.slot.get()
        img, geom = load_input(image_path)
        t1 = time.perf_counter()
        heat = predict_attention(model, img)
        t2 = time.perf_counter()
        info = attention_summary(heat, boxes=boxes)
        info.update(geometry=geom.to_dict(), model_version=self.slot.version, latencies={"pre": round(t1 - t0, 4), "infer": round(t2 - t1, 4)})
        if out_path is not None:
            write_heatmap(out_path, heat, geom)
        return heat, info


def _load_classifier(path: Path, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from gazerad.kacl.trainer import load_kacl

    return load_kacl(path, device)


class ClassificationService:
    """Multi-label class probabilities from a KACL or supervised classifier (``kacl.pt`` format)."""

    name = "classification"

    def __init__(self, model_path: str | os.PathLike, device: str | None = None, fallback: str | os.PathLike | None = None) -> None:
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.slot = ModelSlot(model_path, lambda p: _load_classifier(p, self.device), self.name, fallback)

    def classes(self) -> list[str]:
        return list(self.slot.get()[1]["classes"]) if self.slot.exists() else []

    def probabilities(self, image_path: str | os.PathLike) -> tuple[np.ndarray, torch.Tensor, np.ndarray, Geometry, dict]:
        model, state = self.slot.get()
        img, geom = load_input(image_path)
        x = encoder_input(img, int(state["config"]["image_size"])).to(self.device)
        with torch.no_grad():
            logits = model(x)[0].float().cpu().numpy()
        return calibrated_probabilities(logits, temperature_of(state)), x, img, geom, state

    def __call__(self, image_path: str | os.PathLike) -> dict[str, Any]:
        t0 = time.perf_counter()
        p, _, _, _, state = self.probabilities(image_path)
        pred = [{"idx": i, "label": c, "score": float(p[i])} for i, c in enumerate(state["classes"])]
        return {"prediction": pred, "model_version": self.slot.version, "latencies": {"total": round(time.perf_counter() - t0, 4)}}


class LocalizationService(ClassificationService):
    """Grad-CAM boxes per class (KACL's localisation) plus calibrated class probabilities.

    Which classes get boxes:

    - by default, every class whose (calibrated) probability is at least ``min_score``; a
      box's ``score`` is its class's probability, so no box scores below ``min_score``.
      When no class reaches it the answer has no boxes, ``finding: false`` and a
      ``message`` saying so (with the most probable class), never a guess;
    - ``classes``: the named classes, whatever their probability;
    - ``top_k``: also the ``k`` first classes by ``rank`` (:func:`gazerad.kacl.evaluate.box_rank_key`), for exploration.

    Boxes of classes below ``min_score`` (named or top-k) carry ``below_min_score: true``.

    Box sources: a model whose box extraction was tuned with an attention model (``train-kacl
    --attention``, :func:`gazerad.kacl.retune_boxes`) takes a class's boxes from the attention
    map (or a CAM gated by it) where validation chose that, as long as the served attention
    model (``attention_path``, default ``attention.pt`` beside the model; shipped
    ``pretrained_attention.pt`` beside ``fallback``) is the one it was tuned with; otherwise
    from its CAM-only settings. The answer's ``box_extraction.attention`` says which.
    """

    name = "localization"

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str | None = None,
        fallback: str | os.PathLike | None = None,
        attention_path: str | os.PathLike | None = None,
    ) -> None:
        from gazerad.serving.train import PUBLISHED

        super().__init__(model_path, device, fallback)
        att = PUBLISHED["attention"]
        self.attention = AttentionService(
            attention_path or Path(model_path).with_name(att), self.device, Path(fallback).with_name(f"pretrained_{att}") if fallback else None
        )
        self._fingerprint: tuple[str | None, str | None] = (None, None)  # (attention weights version, fingerprint)

    def attention_fingerprint(self) -> str | None:
        """The served attention model's fingerprint (``None`` without one); computed once per weights version."""
        from gazerad.kacl.evaluate import attention_fingerprint

        if not self.attention.slot.exists():
            return None
        model = self.attention.slot.get()
        if self._fingerprint[0] != self.attention.slot.version:
            self._fingerprint = (self.attention.slot.version, attention_fingerprint(model))
        return self._fingerprint[1]

    def __call__(
        self,
        image_path: str | os.PathLike,
        classes: Sequence[str] | None = None,
        min_score: float = 0.5,
        cam_threshold: float | None = None,
        max_boxes: int = 3,
        cam_out: str | os.PathLike | None = None,
        cam_layer: str | None = None,
        top_k: int = 0,
        rank: str = BOX_RANKS[0],
    ) -> dict[str, Any]:
        """Boxes (pixels and LPS mm) with scores, class probabilities, optionally the CAM.

        ``rank`` orders the boxes (the first is the top box) and picks the ``top_k``
        classes: ``expected_hit`` (default) by probability x the class's validation hit rate
        (:data:`BOX_RANKS`; the finding is there *and* its box finds it), ``probability`` by
        the probability alone. Boxes of findings at or above ``min_score`` always come first.

        ``cam_layer`` overrides the layer Grad-CAM hooks (default: the model's own, the one
        its KACL training used); ``cam_threshold`` is on the normalised, blurred map (default:
        the model's, tuned per class on its validation split; :func:`gazerad.kacl.evaluate.box_settings`);
        either, when given, applies to every class.
        """
        from gazerad.kacl.evaluate import (
            box_rank_key,
            box_settings,
            extraction_used,
            localize_images,
            needs_attention,
            overridden,
            predicted_attention,
            validation_hit_rate,
        )
        from gazerad.kacl.model import feature_layers

        t0 = time.perf_counter()
        if cam_layer and cam_layer not in feature_layers(self.slot.get()[0].backbone):
            raise InputError(None, f"cam_layer {cam_layer!r:.60} is not a feature layer of this model (e.g. backbone.layer2)")
        p, x, img, geom, state = self.probabilities(image_path)
        names = list(state["classes"])
        unknown = [c for c in classes or () if c not in names]
        if unknown:
            raise InputError(None, f"unknown classes {unknown}; the model knows {names}")
        if not 0.0 <= min_score <= 1.0 or top_k < 0:
            raise InputError(None, f"min_score must be in [0, 1] and top_k >= 0, got {min_score} and {top_k}")
        if rank not in BOX_RANKS:
            raise InputError(None, f"rank must be one of {', '.join(BOX_RANKS)}, got {rank!r:.40}")
        model, _ = self.slot.get()
        if cam_layer and cam_layer not in dict(model.named_modules()):
            raise InputError(None, f"cam_layer {cam_layer!r} is not a layer of the model (e.g. backbone.layer2, backbone.layer3)")
        if cam_threshold is not None and not 0.0 < cam_threshold < 1.0:
            raise InputError(None, f"cam_threshold must be in (0, 1), got {cam_threshold}")
        # the attention model is loaded (and fingerprinted) only for settings tuned with one
        fp = self.attention_fingerprint() if needs_attention(state.get("box_extraction") or {}) else None
        tuned = overridden(box_settings(state, fp), cam_threshold=cam_threshold, cam_layer=cam_layer)
        gaze = needs_attention(tuned)
        hits = {c: validation_hit_rate(tuned, c) for c in names}  # measured on the class's own validation boxes
        ranks = {c: validation_hit_rate(tuned, c, overall=True) for c in names}  # else the all-class figure, for the order
        above = [i for i in range(len(names)) if p[i] >= min_score]
        want = [names.index(c) for c in classes] if classes else list(above)
        ranked = sorted(range(len(names)), key=lambda i: box_rank_key(float(p[i]), ranks[names[i]], rank))
        for i in ranked[:top_k]:
            if i not in want:
                want.append(i)
        t1 = time.perf_counter()
        boxes, maps = [[]], [{}]
        if want:
            heat = predicted_attention(self.attention.slot.get(), x.cpu()) if gaze else None
            kw = dict(threshold=tuned["cam_threshold"], blur=tuned["blur"], device=self.device, return_maps=cam_out is not None, attention=heat)
            boxes, maps = localize_images(model, x.cpu(), [want], names, cam_layer=tuned["cam_layer"], per_class=tuned["per_class"], **kw)
        t2 = time.perf_counter()
        size = x.shape[-1]
        h, w = img.shape
        sx, sy = w / size, h / size
        per_class: dict[str, int] = {}
        out_boxes = []
        for b in boxes[0]:
            if per_class.get(b.label, 0) >= max_boxes:
                continue
            per_class[b.label] = per_class.get(b.label, 0) + 1
            bb = b.scaled(sx, sy)
            prob = float(p[names.index(b.label)])
            hit = hits[b.label]
            c0 = geom.to_physical(bb.x + bb.w / 2, bb.y + bb.h / 2)
            out_boxes.append(
                {
                    "label": b.label,
                    "x": bb.x,
                    "y": bb.y,
                    "w": bb.w,
                    "h": bb.h,
                    "score": prob,
                    "cam_score": float(b.score),
                    "probability": prob,
                    "below_min_score": prob < min_score,
                    # how often this class's tuned boxes hit a true box (IoU >= 0.3) on the validation split, of how many
                    "validation_t_iou_0.3": None if hit is None else hit[0],
                    "validation_boxes": None if hit is None else hit[1],
                    # the value boxes are ordered by (the all-class hit rate where the class had no validation boxes)
                    "expected_hit": None if ranks[b.label] is None else prob * ranks[b.label][0],
                    "center_mm": list(c0),
                    "size_mm": [bb.w * geom.spacing[0], bb.h * geom.spacing[1]],
                }
            )
        # the top box first: findings at or above min_score, then by rank, the CAM's own score breaking ties
        out_boxes.sort(key=lambda b: (b["below_min_score"], *box_rank_key(b["score"], ranks[b["label"]], rank), -b["cam_score"]))
        result = {
            "boxes": out_boxes,
            # MONAI Label's detection result: centre + size in physical (LPS) mm
            "box": [[b["center_mm"][0], b["center_mm"][1], 0.0, b["size_mm"][0], b["size_mm"][1], 1.0] for b in out_boxes],
            "label": [b["label"] for b in out_boxes],
            "score": [b["score"] for b in out_boxes],
            "prediction": [{"idx": i, "label": c, "score": float(p[i])} for i, c in enumerate(names)],
            "finding": bool(above),
            "min_score": min_score,
            "rank": rank,
            "calibration": {"temperature": temperature_of(state)},
            "box_extraction": {  # the settings used (each box carries its class's validation figures)
                **extraction_used(tuned),
                "attention": self.attention.slot.version if gaze else None,
            },
            "size": [w, h],
            "geometry": geom.to_dict(),
            "model_version": self.slot.version,
            "latencies": {"classify": round(t1 - t0, 4), "cam": round(t2 - t1, 4)},
        }
        if not above:
            top = int(np.argmax(p))
            result["message"] = f"no finding with probability >= {min_score:.2f} (most probable: {names[top]} {p[top]:.2f})"
        if cam_out is not None and maps[0]:
            import torch.nn.functional as F

            m = maps[0][names.index(out_boxes[0]["label"]) if out_boxes else want[0]]  # the top box's class
            up = F.interpolate(torch.from_numpy(m)[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
            write_heatmap(cam_out, up, geom)
        return result
