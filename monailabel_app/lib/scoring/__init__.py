from .scores import GazeRadScore

__all__ = ["GazeRadScore"]
