from .tasks import GazeRadTrainTask

__all__ = ["GazeRadTrainTask"]
