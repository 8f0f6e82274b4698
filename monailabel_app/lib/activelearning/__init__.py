from .strategies import HighestScore

__all__ = ["HighestScore"]
