"""Batched, seeded training augmentation of chest radiographs (the classifier trainers).

:class:`RandRadiographAugment` jitters a whole batch ``(B, C, H, W)`` in one
``affine_grid`` / ``grid_sample`` call on the batch's device: a small rotation, scale and
shift (patient positioning) and a brightness / contrast change (exposure). No flips: the
heart and most findings have a side, so a mirrored radiograph is not a plausible one.
Each call draws its parameters from the ``torch.Generator`` it is given, so a run that seeds
the generator per step (:func:`step_generator`) sees the same views after a resume.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["RandRadiographAugment", "step_generator", "derived_seed"]


def derived_seed(*keys: int) -> int:
    """A 32-bit seed derived from ``keys`` (e.g. run seed, epoch, step or item, rank or view):
    deterministic and independent of workers, ranks and resumes."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def step_generator(seed: int, epoch: int, step: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for one training step, independent of workers and resumes."""
    return torch.Generator().manual_seed(derived_seed(seed, epoch, step, rank))


class RandRadiographAugment:
    """Random positioning and exposure jitter of a batch in ``[0, 1]``.

    Args:
        degrees: rotation drawn uniformly in ``[-degrees, degrees]``.
        scale: zoom factor drawn in ``[1 - scale, 1 + scale]``.
        translate: shift drawn in ``[-translate, translate]`` of the image side, per axis.
        jitter: contrast factor in ``[1 - jitter, 1 + jitter]`` and brightness offset in
            ``[-jitter / 2, jitter / 2]`` about mid-grey.
        prob: probability that an image is transformed at all (the others pass unchanged).

    Call: ``(B, C, H, W)`` float tensor and a generator -> the same shape, dtype and device,
    clamped to ``[0, 1]``; pixels brought in from outside the image repeat the border.
    """

    def __init__(self, degrees: float = 7.0, scale: float = 0.08, translate: float = 0.05, jitter: float = 0.15, prob: float = 0.8) -> None:
        for name, v in (("degrees", degrees), ("scale", scale), ("translate", translate), ("jitter", jitter)):
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        if scale >= 1.0:
            raise ValueError(f"scale must be below 1 (a zoom factor of 1 - scale > 0), got {scale}")
        self.degrees, self.scale, self.translate, self.jitter, self.prob = degrees, scale, translate, jitter, prob

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(x.shape)}")
        b = x.shape[0]

        def u(lo: float = -1.0, hi: float = 1.0) -> torch.Tensor:
            return (lo + (hi - lo) * torch.rand(b, generator=generator, dtype=torch.float64)).float()

        on = (u(0.0, 1.0) < self.prob).float()
        angle = u() * math.radians(self.degrees) * on
        zoom = 1.0 + u() * self.scale * on
        tx, ty = u() * 2 * self.translate * on, u() * 2 * self.translate * on  # grid units: the side is 2
        contrast, bright = 1.0 + u() * self.jitter * on, u() * self.jitter / 2 * on
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(x.device, torch.float32)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        y = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        c, br = contrast.to(x.device).view(b, 1, 1, 1), bright.to(x.device).view(b, 1, 1, 1)
        return ((y - 0.5) * c + 0.5 + br).clamp(0.0, 1.0).to(x.dtype)
