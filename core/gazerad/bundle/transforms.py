"""MONAI dictionary transforms of GazeRad's exported bundles (``configs/inference.json``).

Each does exactly what GazeRad's own inference does, with the same functions, so a bundle
run by ``python -m monai.bundle run`` writes what ``gazerad`` / the server answer:

* :class:`ModelInputd`: the loaded X-ray ``(H, W)`` -> the model input ``(1, S, S)``
  (``attention``: :func:`gazerad.data.inputs.attention_input`; ``encoder``:
  :func:`gazerad.data.inputs.encoder_input`); the original shape is kept under
  ``<key>_shape``.
* :class:`AttentionMapd`: attention logits ``(1, S, S)`` -> the map at the image's own size
  ``(H, W)``, summing to 1 (softmax over pixels, bilinear resize, renormalised).
* :class:`ClassProbabilitiesd`: logits ``(C,)`` -> calibrated probabilities ``(C,)``
  (``sigmoid(logits / T)``, the temperature chosen on the validation split).
* :class:`CAMBoxesd`: Grad-CAM boxes in image pixels of the classes at or above
  ``min_score`` (the model's per-class box settings), as the localisation service draws them.
* :class:`SaveOutputd`: ``OUT/<image id>.json`` (probabilities, boxes, map summary) and
  ``OUT/<image id>_attention.npy`` / ``_features.npy`` (float32), written atomically.
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["ModelInputd", "AttentionMapd", "ClassProbabilitiesd", "CAMBoxesd", "SaveOutputd"]


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


class ModelInputd(MapTransform):
    """``(H, W)`` (or ``(1, H, W)``) X-ray -> ``(1, size, size)`` float32 model input.

    Args:
        keys: image keys.
        size: the model's input side ``S``.
        kind: ``"attention"`` (min-max, bilinear antialiased) or ``"encoder"`` (0.5/99.5
            percentiles, area resize): the preprocessing the model was trained with.
    """

    def __init__(self, keys: KeysCollection, size: int, kind: str = "encoder", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if kind not in ("attention", "encoder"):
            raise ValueError(f"kind must be 'attention' or 'encoder', got {kind!r}")
        self.size, self.kind = int(size), kind

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from gazerad.data.inputs import attention_input, encoder_input

        d = dict(data)
        for key in self.key_iterator(d):
            img = _array(d[key]).astype(np.float32)
            img = img[0] if img.ndim == 3 else img
            d[f"{key}_shape"] = torch.tensor(img.shape)
            if self.kind == "attention":
                d[key] = attention_input(torch.from_numpy(img)[None, None], self.size)[0]
            else:
                d[key] = encoder_input(img, self.size)[0]
        return d


class AttentionMapd(MapTransform):
    """Attention logits ``(1, S, S)`` -> map ``(H, W)`` at ``shape_key``'s size, sum 1."""

    def __init__(self, keys: KeysCollection, shape_key: str = "image_shape", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.shape_key = shape_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from gazerad.attention.data import _resize_maps

        d = dict(data)
        h, w = (int(v) for v in _array(d[self.shape_key]).ravel()[:2])
        for key in self.key_iterator(d):
            logits = torch.as_tensor(_array(d[key]), dtype=torch.float32)[None]
            maps = torch.softmax(logits.reshape(1, -1), dim=1).reshape(logits.shape)
            d[key] = _resize_maps(maps, (h, w))[0, 0].numpy().astype(np.float32)
        return d


class ClassProbabilitiesd(MapTransform):
    """Logits ``(C,)`` -> calibrated probabilities ``(C,)`` float64 (temperature ``T``)."""

    def __init__(self, keys: KeysCollection, temperature: float = 1.0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.temperature = float(temperature)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from gazerad.kacl.calibration import calibrated_probabilities

        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = calibrated_probabilities(_array(d[key]).astype(np.float32), self.temperature)
        return d


class CAMBoxesd(MapTransform):
    """Grad-CAM boxes of the classes whose probability (``prob_key``) is >= ``min_score``,
    in the server's order (expected hit: probability x the class's validation hit rate,
    :func:`gazerad.kacl.evaluate.box_rank_key`).

    Args:
        keys: the model input key (``(1, S, S)``).
        network: the classifier (``KACLModel``).
        classes: class names.
        box_extraction: the model's box settings (:func:`gazerad.kacl.evaluate.box_settings`).
        prob_key, shape_key: where the probabilities and the original ``(H, W)`` are.
        min_score: classes at or above it get boxes.
        boxes_key: output key: ``[{"label", "x", "y", "w", "h", "score", "cam_score",
            "validation_t_iou_0.3", "expected_hit"}]`` (the last two ``None`` for an untuned model).
    """

    def __init__(
        self,
        keys: KeysCollection,
        network: torch.nn.Module,
        classes: Sequence[str],
        box_extraction: Mapping[str, Any],
        prob_key: str = "pred",
        shape_key: str = "image_shape",
        min_score: float = 0.5,
        boxes_key: str = "boxes",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.network, self.classes, self.settings = network, list(classes), dict(box_extraction)
        self.prob_key, self.shape_key, self.min_score, self.boxes_key = prob_key, shape_key, float(min_score), boxes_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from gazerad.kacl.evaluate import box_rank_key, localize_images, validation_hit_rate

        d = dict(data)
        p = _array(d[self.prob_key]).astype(np.float64)
        h, w = (int(v) for v in _array(d[self.shape_key]).ravel()[:2])
        want = [i for i in range(len(self.classes)) if p[i] >= self.min_score]
        for key in self.key_iterator(d):
            x = torch.as_tensor(_array(d[key]), dtype=torch.float32)[None]
            out = []
            if want:
                dev = next(self.network.parameters()).device
                s = self.settings
                with torch.enable_grad():
                    boxes, _ = localize_images(
                        self.network, x, [want], self.classes, threshold=s["cam_threshold"], blur=s["blur"], device=dev,
                        cam_layer=s.get("cam_layer"), per_class=s.get("per_class"),
                    )  # fmt: skip
                size = x.shape[-1]
                est = {c: validation_hit_rate(s, c, overall=True) for c in self.classes}  # what the order uses
                for b in boxes[0]:
                    bb = b.scaled(w / size, h / size)
                    prob = float(p[self.classes.index(b.label)])
                    hit, rate = validation_hit_rate(s, b.label), est[b.label]
                    out.append(
                        {"label": b.label, "x": bb.x, "y": bb.y, "w": bb.w, "h": bb.h, "score": prob, "cam_score": float(b.score),
                         "validation_t_iou_0.3": None if hit is None else hit[0], "expected_hit": None if rate is None else prob * rate[0]}
                    )  # fmt: skip
                out.sort(key=lambda o: (*box_rank_key(o["score"], est[o["label"]]), -o["cam_score"]))
            d[self.boxes_key] = out
        return d


class SaveOutputd(MapTransform):
    """Write each item's outputs under ``output_dir``, named by its image id.

    ``kind`` ``attention``: ``<id>_attention.npy`` (the map) and ``<id>.json`` (sum, peak);
    ``classifier``: ``<id>.json`` with ``{"classes", "probabilities", "boxes"}``;
    ``encoder``: ``<id>_features.npy``. The id is the file name of ``path_key`` without its
    image suffix.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | os.PathLike,
        kind: str,
        classes: Sequence[str] = (),
        path_key: str = "path",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.kind, self.classes, self.path_key = Path(output_dir), kind, list(classes), path_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from gazerad.data.study import image_id_of
        from gazerad.io.atomic import atomic_path, atomic_write_text

        d = dict(data)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = d[self.path_key]
        iid = image_id_of(Path(path[0] if isinstance(path, (list, tuple)) else str(path)).name)
        for key in self.key_iterator(d):
            v = _array(d[key])
            info: dict[str, Any] = {"image": iid, "source": str(path)}
            if self.kind in ("attention", "encoder"):
                with atomic_path(self.output_dir / f"{iid}_{self.kind if self.kind == 'attention' else 'features'}.npy", suffix=".npy") as tmp:
                    np.save(tmp, v.astype(np.float32))
                info.update(shape=list(v.shape), sum=float(v.sum()))
            else:
                info.update(classes=self.classes, probabilities=[float(x) for x in v], boxes=d.get("boxes", []))
            atomic_write_text(self.output_dir / f"{iid}.json", json.dumps(info, indent=1))
        return d
