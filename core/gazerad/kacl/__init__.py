"""KACL: radiomics of the Grad-CAM region as the positive view (feedback-loop training)."""

from .config import KACLConfig
from .evaluate import evaluate_kacl, localize_images
from .model import KACLModel, ProjectionHead, RadiomicsEncoder
from .trainer import cam_classes, load_kacl, refresh_radiomics, train_kacl

__all__ = [
    "KACLConfig",
    "KACLModel",
    "ProjectionHead",
    "RadiomicsEncoder",
    "cam_classes",
    "evaluate_kacl",
    "load_kacl",
    "localize_images",
    "refresh_radiomics",
    "train_kacl",
]
