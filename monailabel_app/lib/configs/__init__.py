from .tasks import AttentionConfig, ClassificationConfig, LocalizationConfig, PretrainConfig

__all__ = ["AttentionConfig", "ClassificationConfig", "LocalizationConfig", "PretrainConfig"]
