"""Strategies: the unread image with the highest stored score of one scoring method.

"Unread" = no gaze recording stored yet and not in the request's ``exclude`` list. Scores
are those the matching scoring method wrote into image info (``gazerad_<method>``); images
without a stored score are scored first (in-process) so the answer is never stale-empty.
"""

from __future__ import annotations

import logging
import random
from typing import Any, Dict

from monailabel.interfaces.tasks.strategy import Strategy

from gazerad.serving.data import GAZE_TAG

logger = logging.getLogger(__name__)

_DESCRIPTIONS = {
    "entropy": "Classifier uncertainty: highest mean binary entropy of the class probabilities",
    "mc_dropout": "Classifier uncertainty: highest disagreement under Monte-Carlo dropout",
    "gaze_novelty": "Gaze novelty: the image least like any image that already has gaze",
    "diversity": "Embedding diversity: the image farthest from every labelled or read image",
}


def unread_images(request: Dict[str, Any], datastore: Any) -> list:
    """Images without gaze yet and not in ``request["exclude"]``."""
    exclude = set(request.get("exclude") or [])
    has_gaze = getattr(datastore, "has_gaze", lambda i: GAZE_TAG in datastore.get_labels_by_image_id(i))
    return [i for i in datastore.list_images() if i not in exclude and not has_gaze(i)]


class RandomUnread(Strategy):
    """A random unread image (MONAI Label's ``random`` ignores gaze and ``exclude``)."""

    def __init__(self) -> None:
        super().__init__("Random: any image without gaze yet (request 'exclude' respected)")

    def __call__(self, request: Dict[str, Any], datastore: Any) -> Dict[str, Any]:
        ids = unread_images(request, datastore)
        if not ids:
            return {}
        rng = random.Random(request.get("seed"))
        return {"id": rng.choice(sorted(ids)), "method": "random"}


class HighestScore(Strategy):
    def __init__(self, method: str, scorer: Any) -> None:
        super().__init__(_DESCRIPTIONS[method])
        self.method = method
        self.key = f"gazerad_{method}"
        self.scorer = scorer

    def __call__(self, request: Dict[str, Any], datastore: Any) -> Dict[str, Any]:
        ids = unread_images(request, datastore)
        if not ids:
            return {}
        infos = {i: datastore.get_image_info(i) for i in ids}
        if any(self.key not in infos[i] for i in ids):
            logger.info(f"{self.method}: scoring images without a stored score first")
            self.scorer({}, datastore)
            infos = {i: datastore.get_image_info(i) for i in ids}
        scored = [(float(infos[i][self.key]), i) for i in ids if self.key in infos[i]]
        if not scored:
            return {}
        score, best = max(scored)
        # "method", not "strategy": MONAI Label overwrites "strategy" with its own bookkeeping
        return {"id": best, "score": score, "method": self.method}
