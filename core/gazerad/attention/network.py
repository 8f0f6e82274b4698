"""The attention predictor network: MONAI's ``BasicUNet`` giving attention logits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from gazerad.attention.config import DEFAULT_FEATURES

__all__ = ["DEFAULT_FEATURES", "AttentionPredictor"]


class AttentionPredictor(nn.Module):
    """Image ``(B, 1, S, S)`` -> attention logits ``(B, 1, S, S)`` (MONAI ``BasicUNet``).

    Args:
        input_size: square side ``S`` the model is trained and run at (multiple of 16,
            the U-Net's four down-samplings).
        features: ``BasicUNet`` features (six numbers: five encoder levels, last decoder).
        dropout: ``BasicUNet`` dropout.
    """

    def __init__(self, input_size: int = 128, features: Sequence[int] = DEFAULT_FEATURES, dropout: float = 0.0) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet

        input_size = int(input_size)
        if input_size < 16 or input_size % 16:
            raise ValueError(f"input_size must be a positive multiple of 16, got {input_size}")
        features = tuple(int(f) for f in features)
        if len(features) != 6 or min(features) < 1:
            raise ValueError(f"features must be six positive integers, got {features}")
        self.input_size = input_size
        self.features = features
        self.dropout = float(dropout)
        self.net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=features, dropout=self.dropout)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (saved with the weights)."""
        return {"input_size": self.input_size, "features": list(self.features), "dropout": self.dropout}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` image in ``[0, 1]`` -> ``(B, 1, S, S)`` logits."""
        return self.net(x)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, S, S)`` image -> ``(B, 1, S, S)`` attention maps, each summing to 1
        (softmax over all pixels)."""
        logits = self(x).float()
        b = logits.shape[0]
        return torch.softmax(logits.reshape(b, -1), dim=1).reshape(logits.shape)


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
