"""Train tasks: MONAI Label runs them in its training subprocess; the work is
:func:`gazerad.serving.train.run_job` (workspace from the datastore, gazerad trainer,
atomic publish to ``model/``, stats with the key metric)."""

from __future__ import annotations

from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.train import TrainTask

from gazerad.serving.train import DEFAULTS, public_stats, read_stats, run_job

_DESCRIPTIONS = {
    "attention": "Train the FocusContrast attention predictor on the gaze in the datastore (key metric: held-out CC)",
    "localization": "Train KACL: classifier + radiomics of its Grad-CAM region (key metric: held-out macro AUC; T(IoU) with boxes)",
    "classification": "Fine-tune the finding classifier, from the gaze-guided encoder when published (key metric: held-out macro AUC)",
    "pretrain": "Gaze-guided contrastive pre-training: McGIP positives from the gaze relation, FocusContrast crops (key metric: final loss)",
}


class GazeRadTrainTask(TrainTask):
    """One gazerad training job (``attention``, ``localization``, ``classification``, ``pretrain``)."""

    def __init__(self, name: str, model_dir: str, config: Dict[str, Any] | None = None) -> None:
        super().__init__(_DESCRIPTIONS[name])
        self.name = name
        self.model_dir = model_dir
        self._config = {**DEFAULTS[name], "device": "auto", "multi_gpu": False, **(config or {})}

    def config(self) -> Dict[str, Any]:
        return dict(self._config)

    def stats(self) -> Dict[str, Any]:
        s = read_stats(self.model_dir, self.name)
        return public_stats({k: v for k, v in s.items() if k != "history"})

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any]:
        params = {**self._config, **{k: v for k, v in request.items() if k not in ("model", "local_rank", "gpus")}}
        return run_job(self.name, datastore.datastore_path if hasattr(datastore, "datastore_path") else datastore._datastore_path, self.model_dir, params)
