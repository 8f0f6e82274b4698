from .strategies import HighestScore, RandomUnread, unread_images

__all__ = ["HighestScore", "RandomUnread", "unread_images"]
