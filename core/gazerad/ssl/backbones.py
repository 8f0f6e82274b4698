"""2-D encoders for X-ray pre-training, from MONAI's networks, without classifier.

:func:`build_backbone` returns a module mapping ``(B, C, H, W)`` to ``(B, F)`` features
(global average pooled) and ``F``. Weights are randomly initialised; nothing is
downloaded.

Our choice for the ResNets: MONAI's default stem keeps full resolution
(``conv1_t_stride=1``); we use stride 2 (``conv1_t_stride=2``, 7x7 kernel, then max pool),
the standard ImageNet ResNet stem the authors' torchvision ResNet-50 has, so a
224 x 224 image reaches ``layer4`` at 7 x 7. Override through ``**kwargs``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["BACKBONES", "DenseNetFeatures", "build_backbone", "backbone_module"]

BACKBONES = ("resnet10", "resnet18", "resnet50", "densenet121")


class DenseNetFeatures(nn.Module):
    """A MONAI DenseNet's ``features`` then ReLU, global average pooling, flatten.

    ``(B, C, H, W)`` -> ``(B, F)``; MONAI's classifier (``class_layers.out``) is dropped.
    """

    def __init__(self, features: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.act = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.act(self.features(x))), 1)


def build_backbone(name: str, in_channels: int = 1, **kwargs: Any) -> tuple[nn.Module, int]:
    """Build a 2-D feature encoder by name.

    Args:
        name: one of :data:`BACKBONES`: ``"resnet10"`` (small, for CI), ``"resnet18"``,
            ``"resnet50"`` (MONAI ``resnet*`` with ``feed_forward=False``) or
            ``"densenet121"`` (MONAI ``DenseNet121`` features + global pooling).
        in_channels: image channels (1 for X-rays).
        **kwargs: passed to the MONAI constructor (e.g. ``conv1_t_stride=1``).

    Returns:
        ``(module, F)``: ``module(x)`` maps ``(B, in_channels, H, W)`` to ``(B, F)``;
        ``F`` is 512 (resnet10/18), 2048 (resnet50), 1024 (densenet121).
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if int(in_channels) < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    from monai.networks import nets

    if key.startswith("resnet"):
        opts: dict[str, Any] = {"conv1_t_size": 7, "conv1_t_stride": 2, **kwargs}
        model: nn.Module = getattr(nets, key)(pretrained=False, spatial_dims=2, n_input_channels=int(in_channels), feed_forward=False, **opts)
        # MONAI's ResNet tracks its output channels in ``in_planes`` (layer4's planes x expansion)
        dim = getattr(model, "in_planes", None)
    else:
        dense = nets.DenseNet121(spatial_dims=2, in_channels=int(in_channels), out_channels=1, pretrained=False, **kwargs)
        model = DenseNetFeatures(dense.features)
        dim = dense.class_layers.out.in_features
    if not isinstance(dim, int):
        dim = _feature_dim(model, int(in_channels))
    return model, dim


@torch.no_grad()
def _feature_dim(model: nn.Module, in_channels: int) -> int:
    """Output size of ``model`` from one tiny forward pass in eval mode (fallback; state unchanged)."""
    was_training = model.training
    model.eval()
    try:
        out = model(torch.zeros(1, in_channels, 64, 64))
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise RuntimeError(f"backbone returned shape {tuple(out.shape)}, expected (B, F)")
    return int(out.shape[1])


def backbone_module(name: str, in_channels: int = 1, **kwargs: Any) -> nn.Module:
    """:func:`build_backbone`'s module alone (for configs that build it by ``_target_``,
    e.g. an exported encoder bundle's ``network_def``): ``(B, C, H, W) -> (B, F)``."""
    return build_backbone(name, in_channels, **kwargs)[0]
