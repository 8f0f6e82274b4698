"""One TaskConfig per model. Construction only records paths: nothing is loaded or trained.

Weights live in ``model/`` (MONAI Label's convention): ``attention.pt``, ``localization.pt``,
``classification.pt`` and ``pretrain_encoder.pt``. With ``use_pretrained_model`` (default
true) a missing trained model falls back to ``model/pretrained_<name>.pt`` when one is
shipped, until training publishes ``model/<name>.pt``.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.utils.others.generic import strtobool

from gazerad.serving.train import PUBLISHED
from lib.activelearning import HighestScore
from lib.infers import AttentionInfer, ClassificationInfer, LocalizationInfer
from lib.scoring import GazeRadScore
from lib.trainers import GazeRadTrainTask


class _GazeRadConfig(TaskConfig):
    infer_cls: Any = None

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.path = os.path.join(model_dir, PUBLISHED[name])
        # shipped weights serve until training publishes model/<name>.pt (nothing is copied here)
        pre = os.path.join(model_dir, f"pretrained_{PUBLISHED[name]}")
        self.fallback = pre if strtobool(conf.get("use_pretrained_model", "true")) else None

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        if self.name == "attention":
            return {self.name: self.infer_cls(self.path, fallback=self.fallback)}
        return {self.name: self.infer_cls(self.path, labels=self.kwargs.get("classes") or None, fallback=self.fallback)}

    def trainer(self) -> Optional[TrainTask]:
        return GazeRadTrainTask(self.name, self.model_dir)


class AttentionConfig(_GazeRadConfig):
    infer_cls = AttentionInfer

    def strategy(self) -> Union[None, Strategy, Dict[str, Strategy]]:
        scorer = GazeRadScore("gaze_novelty", self.model_dir)
        return {"gaze_novelty": HighestScore("gaze_novelty", scorer)}

    def scoring_method(self) -> Union[None, ScoringMethod, Dict[str, ScoringMethod]]:
        return {"gaze_novelty": GazeRadScore("gaze_novelty", self.model_dir)}


class LocalizationConfig(_GazeRadConfig):
    infer_cls = LocalizationInfer


class ClassificationConfig(_GazeRadConfig):
    infer_cls = ClassificationInfer

    def strategy(self) -> Union[None, Strategy, Dict[str, Strategy]]:
        return {m: HighestScore(m, GazeRadScore(m, self.model_dir)) for m in ("entropy", "mc_dropout", "diversity")}

    def scoring_method(self) -> Union[None, ScoringMethod, Dict[str, ScoringMethod]]:
        return {m: GazeRadScore(m, self.model_dir) for m in ("entropy", "mc_dropout", "diversity")}


class PretrainConfig(_GazeRadConfig):
    """Pre-training has a trainer only: its encoder initialises the classifier."""

    def infer(self) -> Union[InferTask, Dict[str, InferTask]]:
        return {}
