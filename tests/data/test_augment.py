"""Training augmentation of radiographs: seeded, bounded, mild, and the identity when switched off."""

from __future__ import annotations

import pytest
import torch

from gazerad.data.augment import RandRadiographAugment, step_generator


def _blob(b: int = 6, s: int = 64) -> torch.Tensor:
    """A bright square off centre on a grey ramp: where it moves to is measurable."""
    x = torch.linspace(0.2, 0.4, s).expand(s, s).clone()
    x[20:30, 36:46] = 0.9
    return x.expand(b, 1, s, s).clone()


def test_seeded_and_varied() -> None:
    x, aug = _blob(), RandRadiographAugment(prob=1.0)
    a, b = aug(x, step_generator(0, 1, 5)), aug(x, step_generator(0, 1, 5))
    torch.testing.assert_close(a, b)  # the same step: the same views (resume)
    c = aug(x, step_generator(0, 1, 6))
    assert (a - c).abs().max() > 0.05  # another step: other views
    assert (a[0] - a[1]).abs().max() > 0.05  # each image its own parameters
    assert a.shape == x.shape and a.dtype == x.dtype and 0.0 <= a.min() and a.max() <= 1.0


def test_mild_positioning_keeps_the_finding_near_its_place() -> None:
    """7 degrees, 8 % zoom, 5 % shift: the square's centroid moves a few px, never off the image."""
    x, aug = _blob(b=64), RandRadiographAugment(jitter=0.0, prob=1.0)
    y = aug(x, step_generator(3, 1, 0))
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    w = (y[:, 0] > 0.65).float()
    assert (w.sum((1, 2)) > 50).all()  # the 100 px square survives in every view
    cy, cx = (w * yy).sum((1, 2)) / w.sum((1, 2)), (w * xx).sum((1, 2)) / w.sum((1, 2))
    d = torch.hypot(cy - 24.5, cx - 40.5)
    assert d.max() < 10 and d.mean() > 0.5  # moved, but only a little


def test_exposure_jitter_only_and_switched_off() -> None:
    x = _blob()
    y = RandRadiographAugment(degrees=0, scale=0, translate=0, jitter=0.15, prob=1.0)(x, step_generator(1, 1, 1))
    # contrast about mid-grey and an offset: each image an affine map of its own pixels
    for i in range(len(x)):
        a = torch.stack([x[i].flatten(), torch.ones(x[i].numel())], 1)
        coef = torch.linalg.lstsq(a, y[i].flatten()[:, None]).solution
        assert (a @ coef - y[i].flatten()[:, None]).abs().max() < 1e-4
        assert 0.85 - 1e-4 <= coef[0].item() <= 1.15 + 1e-4
    z = RandRadiographAugment(prob=0.0)(x, step_generator(1, 1, 1))
    torch.testing.assert_close(z, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kw", [{"degrees": -1}, {"scale": 1.0}, {"jitter": float("nan")}, {"prob": 1.5}])
def test_bad_settings(kw: dict) -> None:
    with pytest.raises(ValueError):
        RandRadiographAugment(**kw)


def test_needs_a_batch() -> None:
    with pytest.raises(ValueError, match="batch"):
        RandRadiographAugment()(torch.rand(1, 32, 32), step_generator(0, 0, 0))
