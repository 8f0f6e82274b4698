"""Infer tasks: MONAI Label's InferTask interface over :mod:`gazerad.serving.infer`.

All three are 2-D (``dimension: 2``) and read the image with GazeRad's X-ray loader
(PNG/JPEG 8/16-bit, DICOM CR/DX incl. MONOCHROME1, NIfTI, NRRD). Weights are loaded on the
first request and reloaded when training publishes new ones. Request params:

- ``attention``: ``boxes`` (optional list of ``[x, y, w, h]``: attention mass inside each),
  ``heatmap`` (default true; false: JSON only, no file written).
  Returns the heatmap (``.nrrd``, float32, the input's size, spacing, origin and direction,
  sums to 1) and JSON ``{peaks, regions, entropy, max, geometry, model_version}``.
- ``localization``: ``classes`` (optional list: localise these whatever their probability),
  ``min_score`` (0.5: boxes only for classes whose calibrated probability reaches it; none
  reaches it: no boxes, ``finding: false`` and a ``message``), ``top_k`` (0: also localise
  the k first classes by ``rank``, flagged ``below_min_score``), ``rank`` (``expected_hit``:
  boxes ordered by probability x their class's validation hit rate; ``probability``: by
  probability alone), ``cam_threshold`` (default: the
  model's, tuned on its validation split's boxes),
  ``max_boxes`` (3 per class), ``cam_layer`` (default: the model's), ``output`` = ``json``
  (default) or ``slicer``: MONAI Label detection JSON (also with pixel boxes and class
  probabilities) and, as the result file, a Slicer markups ROI file (what MONAI Label's
  own Slicer plugin loads as ROI nodes for a detection model; none when there is no box);
  ``cam``: the result file is the Grad-CAM heatmap.
- ``classification``: MONAI Label's classification JSON ``{"prediction": [{idx, label, score}]}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from typing import Any, Dict, Iterator, Tuple, Union

from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from gazerad.io.scratch import TEMP_SCRATCH
from gazerad.serving.infer import AttentionService, ClassificationService, LocalizationService
from gazerad.serving.markups import roi_markups
from gazerad.serving.model_card import model_card
from gazerad.serving.params import BOX_RANKS, InferParams
from gazerad.serving.train import public_stats, read_stats

# requests run in FastAPI's thread pool; a model's forward/Grad-CAM (hooks, autograd) must not
# run twice at once on the same modules (it crashed libtorch under 8 concurrent clients), and
# torch already uses every core for one request: one model call at a time
MODEL_LOCK = threading.Lock()


def _tmp(suffix: str) -> str:
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="result-", dir=TEMP_SCRATCH.path())
    os.close(fd)
    return path


@contextlib.contextmanager
def _removed_on_error(path: str | None) -> Iterator[None]:
    """A result file made before the model runs goes when the run fails (MONAI Label removes
    it only after a successful answer)."""
    try:
        yield
    except BaseException:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        raise


def _bundle_card(model_file: Any) -> Dict[str, Any]:
    """The model card a bundle carries (``configs/metadata.json``: ``gazerad.model_card``)."""
    from pathlib import Path

    meta = json.loads((Path(model_file).parents[1] / "configs" / "metadata.json").read_text())
    return {**meta.get("gazerad", {}).get("model_card", {}), "weights": f"bundle {meta.get('name', '')} {meta.get('version', '')}".strip()}


class _Task(InferTask):
    service_cls: Any = None

    def __init__(
        self, path: str, type: InferType, description: str, labels: Any = None, config: Dict[str, Any] | None = None, fallback: str | None = None
    ) -> None:
        super().__init__(type=type, labels=labels, dimension=2, description=description, config=config)
        self.path = path
        self.service = self.service_cls(path, fallback=fallback)

    def get_path(self, validate: bool = True) -> Union[str, None]:
        cur = self.service.slot.current()
        return str(cur) if cur is not None else (None if validate else self.path)

    def is_valid(self) -> bool:
        # listed even before training: a request then gets a clear "train first" answer
        return True

    def info(self) -> Dict[str, Any]:
        i = super().info()
        cur = self.service.slot.current()
        slot = self.service.slot
        bundle = cur is not None and cur == slot.bundle
        if cur is None:
            i["weights"] = "missing: train this model first"
        else:
            i["weights"] = "ready" if cur == slot.path else f"bundle ({cur.parents[1].name}/)" if bundle else f"shipped ({cur.name})"
        stats = public_stats(read_stats(slot.path.parent, slot.name)) if cur == slot.path else {}
        i["model_card"] = _bundle_card(cur) if bundle else model_card(slot.name, stats, i["weights"])
        return i


class AttentionInfer(_Task):
    service_cls = AttentionService

    def __init__(self, path: str, fallback: str | None = None) -> None:
        super().__init__(
            path,
            InferType.OTHERS,
            "Predicted radiologist attention (FocusContrast predictor): a heatmap summing to 1",
            labels=["attention"],
            config={"boxes": [], "heatmap": True},
            fallback=fallback,
        )

    def __call__(self, request: Dict[str, Any]) -> Tuple[Union[str, None], Dict]:
        # params {"heatmap": false}: JSON only (no heatmap file is written)
        p = InferParams.parse(request)
        out = _tmp(".nrrd") if p.heatmap else None
        with _removed_on_error(out), MODEL_LOCK:
            _, info = self.service(request["image"], out, boxes=list(p.boxes) or None)
        return out, info


class LocalizationInfer(_Task):
    service_cls = LocalizationService

    def __init__(self, path: str, labels: Any = None, fallback: str | None = None) -> None:
        super().__init__(
            path,
            InferType.DETECTION,
            "KACL localisation: boxes per finding (Grad-CAM, or the attention map where validation chose it) with scores, and class probabilities",
            labels=labels,
            config={"min_score": 0.5, "top_k": 0, "rank": BOX_RANKS[0], "max_boxes": 3, "output": "json"},
            fallback=fallback,
        )

    def __call__(self, request: Dict[str, Any]) -> Tuple[Union[str, None], Dict]:
        p = InferParams.parse(request)
        cam = _tmp(".nrrd") if p.output == "cam" else None
        with _removed_on_error(cam), MODEL_LOCK:
            res = self.service(
                request["image"],
                classes=list(p.classes) or None,
                min_score=p.min_score,
                cam_threshold=p.cam_threshold,
                max_boxes=p.max_boxes,
                top_k=p.top_k,
                rank=p.rank,
                cam_out=cam,
                cam_layer=p.cam_layer,
            )
        if cam is not None and not os.path.getsize(cam):  # no class was localised: no CAM to return
            os.remove(cam)
            cam = None
        if p.output == "cam":
            return cam, res
        if not res["boxes"]:  # nothing to draw: the JSON says why ("finding": false, "message")
            return None, res
        # the result file is a Slicer markups ROI file (output "json" and "slicer" alike): what
        # MONAI Label's own Slicer plugin loads for a detection model (a ".json" result ->
        # slicer.util.loadMarkups); with the request's output=json the server sends the JSON only
        path = _tmp(".json")
        with open(path, "w") as fh:
            json.dump(roi_markups(res["boxes"], res["geometry"]), fh)
        return path, res


class ClassificationInfer(_Task):
    service_cls = ClassificationService

    def __init__(self, path: str, labels: Any = None, fallback: str | None = None) -> None:
        super().__init__(
            path,
            InferType.CLASSIFICATION,
            "Multi-label finding classifier (fine-tuned from the gaze-guided encoder when one is published)",
            labels=labels,
            fallback=fallback,
        )

    def __call__(self, request: Dict[str, Any]) -> Tuple[Union[str, None], Dict]:
        with MODEL_LOCK:
            return None, self.service(request["image"])
