"""Batched Grad-CAM and Grad-CAM++ with the right class for every sample.

MONAI's :class:`monai.visualize.GradCAM` scores ``logits[:, class_idx]``: with
``class_idx=None`` it takes each sample's argmax, but indexing a ``(B, C)`` logit matrix
with a ``(B,)`` index vector gives a ``(B, B)`` block, so every sample's map is the
gradient of the *sum* of all the batch's chosen classes. :class:`BatchGradCAM` and
:class:`BatchGradCAMpp` keep MONAI's hooks, upsampling and map arithmetic but score
``logits[b, class_idx[b]]``, so each map belongs to its own sample's class, and they
normalise each map to ``[0, 1]`` (MONAI's default normaliser flips it to ``[1, 0]``).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from monai.visualize.class_activation_maps import GradCAM, GradCAMpp, ModelWithHooks
from torch import Tensor, nn

__all__ = ["BatchGradCAM", "BatchGradCAMpp", "normalize_maps", "make_cam"]


def normalize_maps(x: Tensor) -> Tensor:
    """Min-max each map of a ``(B, C, *spatial)`` tensor to ``[0, 1]`` (a constant map -> 0)."""
    flat = x.flatten(1)
    lo = flat.amin(dim=1).view(-1, *([1] * (x.ndim - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (x.ndim - 1)))
    span = hi - lo
    return torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(x))


class _PerSampleHooks(ModelWithHooks):
    """MONAI's hooked model, scoring one class per sample, with removable hooks.

    MONAI's ``ModelWithHooks`` registers its hooks without keeping the handles (and turns
    in-place activations off for good), so every CAM built on a model left two more hooks
    on it, each holding its last activations: a served model gathered hooks with every
    request. Here the handles are kept and :meth:`remove` takes the hooks off and restores
    the ``inplace`` flags.
    """

    def __init__(self, nn_module: nn.Module, target_layer_names: str | Sequence[str], register_forward: bool = True, register_backward: bool = True) -> None:
        self.model = nn_module
        self.target_layers = tuple([target_layer_names] if isinstance(target_layer_names, str) else target_layer_names)
        self.gradients: dict[str, Tensor] = {}
        self.activations: dict[str, Tensor] = {}
        self.score: Tensor | None = None
        self.class_idx = None
        self.register_backward, self.register_forward = register_backward, register_forward
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self._inplace: list[nn.Module] = []
        modules = dict(nn_module.named_modules())
        missing = [t for t in self.target_layers if t not in modules]
        if missing:
            raise ValueError(f"target layer {missing[0]!r} not found in the model")
        for name in self.target_layers:
            mod = modules[name]
            if register_backward:
                if mod.__dict__.get("inplace"):  # a full backward hook cannot follow an in-place op
                    mod.__dict__["inplace"] = False
                    self._inplace.append(mod)
                self.handles.append(mod.register_full_backward_hook(self.backward_hook(name)))
            if register_forward:
                self.handles.append(mod.register_forward_hook(self.forward_hook(name)))

    def remove(self) -> None:
        """Take this CAM's hooks off the model (and give in-place layers their flag back)."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for mod in self._inplace:
            mod.__dict__["inplace"] = True
        self._inplace.clear()
        self.activations.clear()
        self.gradients.clear()

    def class_score(self, logits: Tensor, class_idx) -> Tensor:  # type: ignore[override]
        idx = torch.as_tensor(class_idx, device=logits.device, dtype=torch.long)
        if idx.ndim == 0:
            idx = idx.expand(logits.shape[0])
        if idx.shape != (logits.shape[0],):
            raise ValueError(f"class_idx must be an int or have one entry per sample ({logits.shape[0]}), got shape {tuple(idx.shape)}")
        if int(idx.min()) < 0 or int(idx.max()) >= logits.shape[1]:
            raise ValueError(f"class_idx out of range for {logits.shape[1]} classes: {idx.tolist()}")
        return logits.gather(1, idx[:, None])[:, 0]


class _PerSample:
    """Use as a context manager (or call :meth:`remove`) so the model is left without hooks::

    with BatchGradCAM(model, "layer3") as cam:
        maps = cam(x, class_idx=labels)       # (B, 1, H, W), detached, in [0, 1]
    """

    def __init__(self, nn_module: nn.Module, target_layers: str | Sequence[str], **kwargs) -> None:
        hooked = _PerSampleHooks(nn_module, target_layers, register_forward=True, register_backward=True)
        super().__init__(hooked, target_layers, postprocessing=normalize_maps, **kwargs)  # type: ignore[call-arg]

    def remove(self) -> None:
        """Take the hooks off the model; the CAM cannot be used afterwards."""
        self.nn_module.remove()

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def _run(self, fn):  # type: ignore[no-untyped-def]
        if torch.is_inference_mode_enabled():
            raise RuntimeError("Grad-CAM needs autograd: call it outside torch.inference_mode()")
        if not self.nn_module.handles:
            raise RuntimeError("this CAM's hooks were removed: make a new one")
        with warnings.catch_warnings(), torch.enable_grad():  # under torch.no_grad() too
            # torch warns that the input needs no gradient: expected here
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            return fn()

    def __call__(self, x: Tensor, class_idx: int | Sequence[int] | Tensor | None = None, layer_idx: int = -1, retain_graph: bool = False) -> Tensor:  # type: ignore[override]
        """Maps for a batch.

        Args:
            x: ``(B, C, H, W)`` input.
            class_idx: one class for all, one per sample (``(B,)``), or ``None`` for each
                sample's own argmax.
            layer_idx: which target layer (MONAI convention).
            retain_graph: keep the autograd graph.

        Returns:
            ``(B, 1, H, W)`` maps in ``[0, 1]``.
        """
        if class_idx is not None and not isinstance(class_idx, int):
            class_idx = torch.as_tensor(class_idx, dtype=torch.long, device=x.device)
        call = super().__call__  # type: ignore[misc]
        return self._run(lambda: call(x, class_idx=class_idx, layer_idx=layer_idx, retain_graph=retain_graph)).detach()

    def maps(self, x: Tensor, class_idx: int | Sequence[int] | Tensor | None = None) -> list[Tensor]:
        """The maps of *every* target layer from one forward and one backward pass.

        Args:
            x: ``(B, C, H, W)`` input.
            class_idx: as for ``__call__``.

        Returns:
            one ``(B, 1, H, W)`` map in ``[0, 1]`` per target layer, in the layers' order.
        """
        if class_idx is not None and not isinstance(class_idx, int):
            class_idx = torch.as_tensor(class_idx, dtype=torch.long, device=x.device)
        _, actis, grads = self._run(lambda: self.nn_module(x, class_idx=class_idx))
        with torch.no_grad():
            return [self._upsample_and_post_process(self.layer_map(a, g), x).detach() for a, g in zip(actis, grads)]

    def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):  # type: ignore[no-untyped-def]
        _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        return self.layer_map(acti[layer_idx], grad[layer_idx])

    def layer_map(self, acti: Tensor, grad: Tensor) -> Tensor:
        """One layer's map ``(B, 1, *spatial)`` from its activations and gradients ``(B, K, *spatial)``."""
        raise NotImplementedError


class BatchGradCAM(_PerSample, GradCAM):
    """Grad-CAM (Selvaraju et al.) with per-sample classes; see the module docstring."""

    def layer_map(self, acti: Tensor, grad: Tensor) -> Tensor:
        b, c, *spatial = grad.shape
        weights = grad.view(b, c, -1).mean(2).view(b, c, *[1] * len(spatial))
        return F.relu((weights * acti).sum(1, keepdim=True))


class BatchGradCAMpp(_PerSample, GradCAMpp):
    """Grad-CAM++ (Chattopadhyay et al.) with per-sample classes.

    MONAI's ``GradCAMpp`` multiplies the gradient by ``exp(score)`` with ``score`` of shape
    ``(B,)``, which broadcasts along the last spatial axis for ``B > 1``; here the score is
    shaped ``(B, 1, 1, ...)`` so each sample is weighted by its own score.
    """

    def layer_map(self, acti: Tensor, grad: Tensor) -> Tensor:
        b, c, *spatial = grad.shape
        ones = [1] * len(spatial)
        g2 = grad.pow(2)
        denom = 2 * g2 + (acti * grad.pow(3)).view(b, c, -1).sum(-1).view(b, c, *ones)
        denom = torch.where(denom != 0.0, denom, torch.ones_like(denom))
        alpha = g2 / (denom + 1e-7)
        score = torch.as_tensor(self.nn_module.score).reshape(b, 1, *ones)
        weights = (alpha * F.relu(score.exp() * grad)).view(b, c, -1).sum(-1).view(b, c, *ones)
        return F.relu((weights * acti).sum(1, keepdim=True))


def make_cam(model: nn.Module, target_layer: str | Sequence[str], method: str = "gradcam") -> BatchGradCAM:
    """``"gradcam"`` or ``"gradcampp"`` on ``model``'s ``target_layer`` (a dotted module name,
    or several: :meth:`BatchGradCAM.maps` then gives each one's map from one pass). Use it in
    a ``with`` block, or call ``remove()``, to take its hooks off the model afterwards."""
    if method == "gradcam":
        return BatchGradCAM(model, target_layer)
    if method in ("gradcampp", "gradcam++"):
        return BatchGradCAMpp(model, target_layer)
    raise ValueError(f"unknown CAM method {method!r}; choose gradcam or gradcampp")
