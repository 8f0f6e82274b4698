"""Settings of a KACL (or supervised baseline) run (:func:`gazerad.kacl.train_kacl`, ``gazerad train-kacl``, server jobs)."""

from __future__ import annotations

from dataclasses import dataclass

from gazerad.engine.config import RuntimeSettings, setting

__all__ = ["KACLConfig", "CAM_METHODS"]

CAM_METHODS = ("gradcam", "gradcampp")  # gazerad.localize.make_cam


@dataclass
class KACLConfig(RuntimeSettings):
    """A KACL (or supervised baseline) run; CLI flags and config keys have these names."""

    data: str = setting(help="study folder (labels.csv with split, images/)")
    out: str = setting(help="run folder: kacl.pt, checkpoint.pt (resume), history.json, loss.png, tb/")
    method: str = setting("kacl", "kacl, or supervised (the baseline: no radiomics branch)", choices=("kacl", "supervised"))
    backbone: str = setting("densenet121", "densenet121, resnet10, resnet18 or resnet50")
    image_size: int = setting(224, "input side in px")
    epochs: int = setting(10, "epochs")
    batch_size: int = setting(32, "global batch (all ranks)")
    lr: float = setting(3e-4, "AdamW learning rate (cosine decay)")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    labelled_fraction: float = setting(1.0, "fraction of training images with labels")
    temperature: float = setting(0.5, "NT-Xent temperature")
    w_cls: float = setting(0.7, "BCE weight")
    w_con: float = setting(0.3, "contrastive weight")
    proj_dim: int = setting(64, "projection size of both branches")
    dropout: float = setting(0.1, "dropout before the classifier")
    refresh_every: int | None = setting(None, "recompute CAM ROIs and radiomics every K steps (default: every epoch)")
    cam_method: str = setting("gradcam", "class activation map", choices=CAM_METHODS)
    cam_layer: str | None = setting(None, "module Grad-CAM hooks, e.g. backbone.layer3 (default: the last block)")
    cam_threshold: float = setting(0.5, "CAM threshold after normalisation and blur")
    blur: int = setting(5, "CAM blur kernel (px)")
    roi_tuning: bool = setting(
        False,
        "at every refresh, tune the ROI's CAM layer, threshold and blur per class on the validation split's boxes "
        "(BBox_List_2017.csv; else cam_layer / cam_threshold / blur)",
    )
    attention: str | None = setting(
        None,
        "attention.pt of 'gazerad train-attention': its map of where readers look, alone or gating each CAM layer, "
        "joins the CAM layers as a box source that box extraction (and the ROI, with roi_tuning) may choose per class on validation",
    )
    bin_width: float = setting(8.0, "radiomics bin width on 0..255 intensities")
    radiomics_backend: str = setting("torch", "radiomics implementation (pyradiomics: the reference, slow)", choices=("torch", "pyradiomics"))
    splits: tuple[str, ...] = setting(("train",), "labels.csv splits to train on")
    augment: bool = setting(False, "random positioning and exposure jitter of the training images (gazerad.data.augment; no flips)")
    init_encoder: str | None = setting(None, "encoder.pt of 'gazerad pretrain' to start the backbone from (fine-tuning)")

    def __post_init__(self) -> None:
        if self.method not in ("kacl", "supervised"):
            raise ValueError(f"method must be 'kacl' or 'supervised', got {self.method!r}")
        if not 0.0 < self.labelled_fraction <= 1.0:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        if self.epochs < 1 or self.batch_size < 2 or self.image_size < 32:
            raise ValueError("need epochs >= 1, batch_size >= 2, image_size >= 32")
        if self.radiomics_backend not in ("torch", "pyradiomics"):
            raise ValueError(f"radiomics_backend must be torch or pyradiomics, got {self.radiomics_backend!r}")
        if self.cam_method not in CAM_METHODS:
            raise ValueError(f"cam_method must be gradcam or gradcampp, got {self.cam_method!r}")
        self.splits = (self.splits,) if isinstance(self.splits, str) else tuple(self.splits)
