"""KACL's two-branch model: an image classifier and a radiomics encoder meeting in one embedding space.

- image branch: MONAI backbone (DenseNet-121 as reported, or a ResNet) -> pooled
  features ``(B, F_img)`` -> multi-label logits ``(B, C)``, and a projection head
  (LayerNorm, Linear-GELU-Linear) -> ``(B, D)``;
- radiomics branch: standardised radiomics ``(B, F_rad)`` -> MLP (Linear-GELU-Dropout-
  Linear-Dropout, width ``F_rad``) -> projection head -> ``(B, D)``.

``forward(x)`` returns the logits, so the model plugs into Grad-CAM unchanged;
:attr:`KACLModel.cam_layer` names the last convolutional block.
"""

from __future__ import annotations

from torch import Tensor, nn

from gazerad.ssl import build_backbone

__all__ = ["KACLModel", "KACLProjectionHead", "RadiomicsEncoder", "feature_layers"]


class KACLProjectionHead(nn.Sequential):
    """LayerNorm -> Linear -> GELU -> Linear: ``(B, in_dim)`` -> ``(B, out_dim)`` (KACL's
    head; :class:`gazerad.ssl.ProjectionHead` is the contrastive frameworks' MLP head, with
    ``(in_dim, hidden_dim, out_dim)`` in that order: the sizes here are keywords so the two
    cannot be mixed up)."""

    def __init__(self, in_dim: int, *, out_dim: int = 64, hidden_dim: int | None = None) -> None:
        hidden = hidden_dim or in_dim
        super().__init__(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class RadiomicsEncoder(nn.Sequential):
    """Linear -> GELU -> Dropout -> Linear -> Dropout, width = feature count: ``(B, F)`` -> ``(B, F)``."""

    def __init__(self, n_features: int, dropout: float = 0.1) -> None:
        super().__init__(nn.Linear(n_features, n_features), nn.GELU(), nn.Dropout(dropout), nn.Linear(n_features, n_features), nn.Dropout(dropout))


def feature_layers(backbone: nn.Module) -> list[str]:
    """Dotted names (``backbone.<name>``) of the backbone's layers that give spatial feature
    maps: the layers Grad-CAM may hook (pooling, flattening and linear layers excluded)."""
    skip = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear, nn.Identity)
    return [f"backbone.{n}" for n, m in backbone.named_modules() if n and not isinstance(m, skip)]


class KACLModel(nn.Module):
    """Image classifier + radiomics encoder with projection heads.

    Args:
        n_classes: finding classes (multi-label).
        n_features: radiomics features per image.
        backbone: ``densenet121``, ``resnet10``, ``resnet18`` or ``resnet50``.
        proj_dim: shared embedding size ``D``.
        dropout: radiomics encoder dropout.
        cam_layer: layer Grad-CAM hooks (default: the backbone's last block; an earlier
            block such as ``backbone.layer3`` gives a finer map on small inputs).
    """

    def __init__(
        self,
        n_classes: int,
        n_features: int,
        backbone: str = "densenet121",
        proj_dim: int = 64,
        dropout: float = 0.1,
        cam_layer: str | None = None,
    ) -> None:
        super().__init__()
        self.backbone_name = backbone
        self._cam_layer = cam_layer
        self.backbone, fdim = build_backbone(backbone)
        if cam_layer and cam_layer not in feature_layers(self.backbone):
            raise ValueError(
                f"cam_layer {cam_layer!r} is not a feature layer of {backbone}; choose one of {', '.join(feature_layers(self.backbone)[:12])}, ..."
            )
        self.classifier = nn.Linear(fdim, n_classes)
        self.image_head = KACLProjectionHead(fdim, out_dim=proj_dim, hidden_dim=min(fdim, 512))
        self.radiomics_encoder = RadiomicsEncoder(n_features, dropout)
        self.radiomics_head = KACLProjectionHead(n_features, out_dim=proj_dim)

    @property
    def cam_layer(self) -> str:
        """Dotted name of the layer Grad-CAM hooks (the backbone's last feature block)."""
        if self._cam_layer:
            return self._cam_layer
        return "backbone.features.norm5" if self.backbone_name == "densenet121" else "backbone.layer4"

    @property
    def cam_candidates(self) -> list[str]:
        """The blocks box extraction may pick a class's CAM layer from (coarse to fine
        resolution trade-off: stride 4 ... 32 on a ResNet), always with :attr:`cam_layer`."""
        names = dict(self.named_modules())
        if self.backbone_name == "densenet121":
            blocks = ["backbone.features.denseblock2", "backbone.features.denseblock3", "backbone.features.norm5"]
        else:
            blocks = [f"backbone.layer{k}" for k in (1, 2, 3, 4)]
        return [b for b in dict.fromkeys([*blocks, self.cam_layer]) if b in names]

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W)`` -> logits ``(B, C)``."""
        return self.classifier(self.backbone(x))

    def image_branch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 1, H, W)`` -> ``(logits (B, C), embedding (B, D))``."""
        f = self.backbone(x)
        return self.classifier(f), self.image_head(f)

    def radiomics_branch(self, r: Tensor) -> Tensor:
        """Standardised radiomics ``(B, F)`` -> embedding ``(B, D)``."""
        return self.radiomics_head(self.radiomics_encoder(r))
