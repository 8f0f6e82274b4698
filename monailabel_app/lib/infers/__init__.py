from .tasks import AttentionInfer, ClassificationInfer, LocalizationInfer

__all__ = ["AttentionInfer", "ClassificationInfer", "LocalizationInfer"]
