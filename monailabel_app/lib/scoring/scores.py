"""Scoring methods: :func:`gazerad.serving.active.score_datastore` for every image, written
into image info as ``gazerad_<method>`` (with ``gazerad_<method>_ts``) in one datastore write."""

from __future__ import annotations

import time
from typing import Any, Dict

from monailabel.interfaces.tasks.scoring import ScoringMethod

from gazerad.serving.active import score_datastore

_DESCRIPTIONS = {
    "entropy": "Mean binary entropy of the classifier's class probabilities",
    "mc_dropout": "Monte-Carlo dropout disagreement of the classifier (20 passes)",
    "gaze_novelty": "1 - highest cosine similarity to an image with gaze (classifier embedding or thumbnails)",
    "diversity": "Distance to the nearest labelled or read image (classifier embedding or thumbnails)",
}


class GazeRadScore(ScoringMethod):
    def __init__(self, method: str, model_dir: str) -> None:
        super().__init__(_DESCRIPTIONS[method])
        self.method = method
        self.model_dir = model_dir

    def __call__(self, request: Dict[str, Any], datastore: Any) -> Dict[str, Any]:
        scores = score_datastore(self.method, datastore._datastore_path, self.model_dir, device=request.get("device"))
        ts = int(time.time())
        key = f"gazerad_{self.method}"
        datastore.update_image_infos({i: {key: s, f"{key}_ts": ts} for i, s in scores.items()})
        return {"method": self.method, "n": len(scores), "max": max(scores.values()) if scores else None}
