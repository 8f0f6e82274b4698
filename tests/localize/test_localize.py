"""Batched Grad-CAM / Grad-CAM++ with per-sample classes, CAM boxes, IoU and T(IoU) accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gazerad.localize import (
    BatchGradCAM,
    BatchGradCAMpp,
    Box,
    box_mask,
    centred_box,
    iou,
    localization_accuracy,
    map_to_boxes,
    maps_to_rois,
)

S = 32


class QuadrantNet(nn.Module):
    """Class k responds to bright pixels in quadrant k (a hand-built 'classifier').

    ``feat`` has 4 channels: channel k is the input masked to quadrant k; the logits are
    the channels' spatial means. Grad-CAM of class k must light up quadrant k only.
    """

    def __init__(self) -> None:
        super().__init__()
        q = torch.zeros(4, 1, S, S)
        h = S // 2
        q[0, :, :h, :h] = 1
        q[1, :, :h, h:] = 1
        q[2, :, h:, :h] = 1
        q[3, :, h:, h:] = 1
        self.register_buffer("quadrants", q[:, 0])
        self.conv = nn.Conv2d(1, 4, 1, bias=False)
        nn.init.ones_(self.conv.weight)
        self.feat = _Mask(self.quadrants)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feat(torch.relu(self.conv(x))).mean(dim=(2, 3))


class _Mask(nn.Module):
    def __init__(self, quadrants: torch.Tensor) -> None:
        super().__init__()
        self.q = quadrants

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f * self.q[None]


def _quadrant_of_peak(m: torch.Tensor) -> int:
    r, c = np.unravel_index(int(m.argmax()), m.shape)
    return int(r >= S // 2) * 2 + int(c >= S // 2)


def _blobs_everywhere(n: int) -> torch.Tensor:
    x = torch.zeros(n, 1, S, S)
    for r0 in (4, 20):
        for c0 in (4, 20):
            x[:, :, r0 : r0 + 8, c0 : c0 + 8] = 1.0
    return x + 0.01 * torch.rand(n, 1, S, S, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("cam_cls", [BatchGradCAM, BatchGradCAMpp])
def test_each_sample_gets_its_own_class(cam_cls) -> None:
    net = QuadrantNet()
    x = _blobs_everywhere(4)
    classes = [2, 0, 3, 1]
    maps = cam_cls(net, "feat")(x, class_idx=classes)
    assert maps.shape == (4, 1, S, S)
    assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    for i, c in enumerate(classes):
        assert _quadrant_of_peak(maps[i, 0]) == c, f"sample {i} map peaks outside quadrant {c}"
        # the map of a batch equals the map of the sample alone
        alone = cam_cls(net, "feat")(x[i : i + 1], class_idx=c)
        torch.testing.assert_close(maps[i], alone[0], atol=1e-5, rtol=1e-4)
        # almost all of the map's mass lies in the sample's quadrant
        q = net.quadrants[c]
        assert float((maps[i, 0] * q).sum() / maps[i, 0].sum()) > 0.9


@pytest.mark.parametrize("cam_cls", [BatchGradCAM, BatchGradCAMpp])
def test_one_pass_maps_of_several_layers_equal_each_layer_alone(cam_cls) -> None:
    from monai.networks.nets import resnet10

    torch.manual_seed(0)
    net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=3).eval()
    x = torch.randn(3, 1, 64, 64)
    layers = ["layer1", "layer2", "layer4"]
    together = cam_cls(net, layers).maps(x, class_idx=[2, 0, 1])
    assert len(together) == 3
    for layer, m in zip(layers, together):
        alone = cam_cls(net, layer)(x, class_idx=[2, 0, 1])
        assert m.shape == alone.shape == (3, 1, 64, 64)
        torch.testing.assert_close(m, alone, atol=1e-5, rtol=1e-4)
    # the layers do give different maps (the test would pass vacuously otherwise)
    assert float((together[0] - together[2]).abs().max()) > 0.05


def test_default_class_is_each_samples_argmax() -> None:
    net = QuadrantNet()
    x = torch.zeros(3, 1, S, S)
    x[0, :, 2:10, 2:10] = 1  # quadrant 0 wins
    x[1, :, 20:30, 20:30] = 1  # quadrant 3
    x[2, :, 20:30, 2:12] = 1  # quadrant 2
    maps = BatchGradCAM(net, "feat")(x)
    assert [_quadrant_of_peak(maps[i, 0]) for i in range(3)] == [0, 3, 2]


def test_bad_class_index_is_rejected() -> None:
    cam = BatchGradCAM(QuadrantNet(), "feat")
    with pytest.raises(ValueError, match="out of range"):
        cam(_blobs_everywhere(2), class_idx=[0, 7])
    with pytest.raises(ValueError, match="one entry per sample"):
        cam(_blobs_everywhere(2), class_idx=[0, 1, 2])


def _hooks(net: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in net.modules())


@pytest.mark.parametrize("cam_cls", [BatchGradCAM, BatchGradCAMpp])
def test_cams_leave_no_hooks_and_no_graph(cam_cls) -> None:
    """MONAI's hooks stayed on the model (two more per CAM built: a served model gathered them
    with every request); the maps carried the autograd graph; under no_grad nothing worked."""
    from monai.networks.nets import resnet10

    from gazerad.kacl.evaluate import class_cams

    net = resnet10(spatial_dims=2, n_input_channels=1, num_classes=3).eval()
    x = torch.randn(2, 1, 64, 64)
    with cam_cls(net, ["layer2", "layer3"]) as cam:
        assert _hooks(net) == 4
        ref = cam(x, class_idx=[1, 2])
        with torch.no_grad():  # how evaluation code runs
            again = cam(x, class_idx=[1, 2])
            layers = cam.maps(x, class_idx=[1, 2])
    assert _hooks(net) == 0
    assert not ref.requires_grad and all(not m.requires_grad for m in layers)
    torch.testing.assert_close(again, ref)
    masks, boxes = maps_to_rois(ref)  # the next step takes numpy: no graph in the way; (B, 1, H, W) as CAMs give
    assert masks.shape == (2, 64, 64) and len(boxes) == 2
    assert torch.equal(maps_to_rois(ref[:, 0])[0], masks)
    with pytest.raises(ValueError, match=r"maps must be a \(B, H, W\) or \(B, 1, H, W\) batch"):
        maps_to_rois(ref[0, 0])
    for _ in range(5):
        class_cams(net, x, [[0], [1, 2]], ["layer3"])
    assert _hooks(net) == 0 and all(p.grad is None for p in net.parameters())
    with pytest.raises(RuntimeError, match="hooks were removed"):
        cam(x, class_idx=[1, 2])
    with torch.inference_mode(), pytest.raises(RuntimeError, match="outside torch.inference_mode"):
        cam_cls(net, "layer3")(x, class_idx=[1, 2])


def test_an_inplace_layer_gets_its_flag_back() -> None:
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with BatchGradCAM(net, "1") as cam:
        assert net[1].inplace is False  # a full backward hook cannot follow an in-place op
        assert cam(torch.randn(2, 1, 8, 8), class_idx=[0, 2]).shape == (2, 1, 8, 8)
    assert net[1].inplace is True


def _gauss(shape, cy, cx, sigma, amp):
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))


def test_boxes_from_known_blobs() -> None:
    cam = _gauss((96, 128), 30, 40, 6, 1.0) + _gauss((96, 128), 70, 100, 5, 0.8)
    boxes = map_to_boxes(cam, threshold=0.5, blur=5, label="Mass")
    assert len(boxes) == 2
    strong, weak = boxes  # best (mean saliency inside the box) first
    assert strong.score > weak.score and strong.label == "Mass"
    cx, cy = strong.x + strong.w / 2, strong.y + strong.h / 2
    assert abs(cx - 40) <= 1.5 and abs(cy - 30) <= 1.5
    assert abs(weak.x + weak.w / 2 - 100) <= 1.5 and abs(weak.y + weak.h / 2 - 70) <= 1.5
    # the half-maximum region of a Gaussian of sigma s has radius s*sqrt(2 ln 2) ~ 1.18 s
    assert 10 <= strong.w <= 20 and 10 <= strong.h <= 20
    # threshold higher than the weak blob's normalised peak -> one box
    assert len(map_to_boxes(cam, threshold=0.85, blur=1)) == 1


def test_peak_boxes_have_the_given_size_centred_on_each_component_peak() -> None:
    # a broad blob with a sharp peak off its centre, a second blob, and a third at the border
    cam = _gauss((96, 128), 40, 50, 12, 0.6) + _gauss((96, 128), 34, 58, 2, 0.5) + _gauss((96, 128), 70, 100, 5, 0.8) + _gauss((96, 128), 2, 126, 3, 0.9)
    extent = map_to_boxes(cam, threshold=0.3, blur=1)
    peak = map_to_boxes(cam, threshold=0.3, blur=1, size=(6.0, 8.0), label="Nodule")
    assert len(peak) == len(extent) == 3  # one box per component, as before
    assert all((b.w, b.h, b.label) == (6.0, 8.0, "Nodule") for b in peak)
    centres = sorted((b.x + b.w / 2, b.y + b.h / 2) for b in peak)
    # pixel centres: the peak pixel (58, 34) -> 58.5, 34.5; the border one is moved inside the map
    assert centres[0] == pytest.approx((58.5, 34.5)) and centres[1] == pytest.approx((100.5, 70.5))
    border = max(peak, key=lambda b: b.x)
    assert (border.x, border.y) == (122.0, 0.0)
    big = next(b for b in extent if b.x < 80)
    assert big.w > 20 and iou(next(b for b in peak if abs(b.x + 3 - 58.5) < 1e-9), (55, 30, 6, 8)) > iou(big, (55, 30, 6, 8))
    # scores are the mean saliency inside each (new) box, best first
    assert [b.score for b in peak] == sorted((b.score for b in peak), reverse=True)
    assert map_to_boxes(cam, threshold=0.3, blur=1, size=(500.0, 500.0))[0].w == 128.0  # never larger than the map
    for bad in [(0.0, 5.0), (float("nan"), 3.0), (-1.0, 2.0)]:
        with pytest.raises(ValueError, match="box size"):
            map_to_boxes(cam, size=bad)


def test_rois_and_fallback() -> None:
    maps = torch.zeros(2, 40, 40)
    maps[0] = torch.from_numpy(_gauss((40, 40), 10, 28, 3, 1.0)).float()
    masks, boxes = maps_to_rois(maps)
    assert masks.dtype == torch.bool and masks.shape == (2, 40, 40)
    ys, xs = np.nonzero(masks[0].numpy())
    assert abs(ys.mean() - 10) < 1.5 and abs(xs.mean() - 28) < 1.5
    assert bool(masks[1].all()) and boxes[1].score == 0.0  # flat map: whole image, score 0


def test_box_mask_clips_and_keeps_two_pixels() -> None:
    m = box_mask(Box(-5, 30, 10, 50), (40, 40))
    assert m[30:, :5].all() and m.sum() == 10 * 5
    tiny = box_mask(Box(39.5, 39.5, 0.2, 0.2), (40, 40))
    assert tiny.sum() == 4


def test_iou_values() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == pytest.approx(1.0)
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou(Box(0, 0, 4, 4), (2, 2, 4, 4)) == pytest.approx(4 / 28)


def test_localization_accuracy_by_hand() -> None:
    truth = {"a": [("Mass", (0, 0, 10, 10)), ("Nodule", (50, 50, 4, 4))], "b": [("Mass", (20, 20, 10, 10))]}
    pred = {
        "a": [Box(0, 0, 10, 10, 0.9, "Mass"), Box(50, 50, 4, 4, 0.9, "Effusion")],  # right box, wrong label for the nodule
        "b": [Box(25, 20, 10, 10, 0.5, "Mass"), Box(100, 100, 5, 5, 0.9, "Mass")],  # best IoU 1/3
    }
    res = localization_accuracy(pred, truth, thresholds=(0.1, 0.3, 0.5))
    assert res["overall"] == {0.1: pytest.approx(2 / 3), 0.3: pytest.approx(2 / 3), 0.5: pytest.approx(1 / 3)}
    assert res["per_class"]["Mass"][0.5] == 0.5 and res["per_class"]["Nodule"][0.1] == 0.0
    assert res["n_boxes"] == {"Mass": 2, "Nodule": 1}
    base = localization_accuracy({"a": [centred_box((100, 100), 0.5, "Mass")]}, {"a": [("Mass", (25, 25, 50, 50))]})
    assert base["overall"][0.7] == 1.0
