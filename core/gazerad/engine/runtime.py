"""Where and how a training run computes: device, DDP, seeding, precision and memory format.

:class:`Runtime` is built once per run from three switches that every trainer's config
carries (``device``, ``precision``, ``channels_last``) and recorded in the run's config
(:meth:`Runtime.describe`), so a result says how it was computed.

- ``precision="auto"``: bfloat16 autocast on a CPU with native bf16 (AVX-512 BF16 or AMX),
  float16 autocast (with a gradient scaler) on CUDA, float32 elsewhere; ``"fp32"`` forces
  float32, ``"bf16"`` / ``"fp16"`` ask for one.
- ``channels_last="auto"``: on for convolutional networks on CPU and CUDA (oneDNN and cuDNN
  run NHWC convolutions faster than NCHW for 1-channel X-rays: see
  ``benchmarks/train_throughput.py``), ``False`` forces NCHW.
- ``fused_optimizer="auto"``: Adam/AdamW's fused kernels on CPU and CUDA (one pass over all
  parameters instead of a dozen small ops per tensor: +28 % on a ResNet-10 step at 64 px).

Autocast covers the networks' forward passes only; losses, logits and softmax run in
float32 (:func:`fp32`), so the fast path changes results by rounding noise only (tested
per framework).
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from functools import lru_cache, wraps
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["Runtime", "cpu_has_bf16", "setup_distributed", "seed_everything", "fp32", "PRECISIONS"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
F = TypeVar("F", bound=Callable[..., Any])


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX-512 BF16 or AMX), per ``/proc/cpuinfo``."""
    if os.environ.get("GAZERAD_NO_BF16") == "1":
        return False
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "")
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def setup_distributed(device: str | None) -> tuple[int, int, torch.device]:
    """``(rank, world, device)``; joins the ``torchrun`` process group when there is one
    (NCCL on CUDA, gloo otherwise) and pins the local GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if device and device != "auto":
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise ValueError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available here (use auto or cpu)")
    elif torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    else:
        dev = torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return rank, world, dev


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fp32(fn: F) -> F:
    """Run ``fn`` outside autocast with its half-precision tensor arguments raised to float32
    (losses, logits, softmax); float32 and float64 arguments pass unchanged."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def up(v: Any) -> Any:
            return v.float() if isinstance(v, torch.Tensor) and v.dtype in (torch.float16, torch.bfloat16) else v

        dev = next((v.device.type for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)), "cpu")
        with torch.autocast(device_type=dev, enabled=False):
            return fn(*(up(a) for a in args), **{k: up(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


@dataclass
class Runtime:
    """The run's device and numerics.

    Args:
        device: ``torch.device`` the run computes on.
        precision: one of :data:`PRECISIONS`.
        channels_last: ``"auto"``, ``True`` or ``False``.
    """

    device: torch.device
    precision: str = "auto"
    channels_last: bool | str = "auto"
    fused_optimizer: bool | str = "auto"

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if isinstance(self.channels_last, str):
            if self.channels_last != "auto":
                raise ValueError(f"channels_last must be auto, true or false, got {self.channels_last!r}")
            self.channels_last = self.device.type in ("cpu", "cuda")
        if isinstance(self.fused_optimizer, str):
            if self.fused_optimizer != "auto":
                raise ValueError(f"fused_optimizer must be auto, true or false, got {self.fused_optimizer!r}")
            self.fused_optimizer = self.device.type in ("cpu", "cuda")
        self.dtype = self._dtype()

    def _dtype(self) -> torch.dtype | None:
        p, dev = self.precision, self.device.type
        if p == "fp32":
            return None
        if p == "auto":
            if dev == "cuda":
                return torch.float16
            return torch.bfloat16 if dev == "cpu" and cpu_has_bf16() else None
        if p == "fp16" and dev != "cuda":
            raise ValueError("precision fp16 needs CUDA; use bf16 or fp32 on the CPU")
        return torch.float16 if p == "fp16" else torch.bfloat16

    @classmethod
    def fp32_reference(cls, device: str | torch.device = "cpu") -> "Runtime":
        """Float32, NCHW: the numerics every trainer had before the engine."""
        return cls(torch.device(device), "fp32", False, False)

    # ------------------------------------------------------------------ use
    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward pass (nothing in float32 runs)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def model(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` on the device, channels-last when on (in place; returns it)."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch ``(B, C, H, W)`` on the device in the run's memory format."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def optimizer(self, name: str, params: Any, **kwargs: Any) -> torch.optim.Optimizer:
        """``torch.optim.<name>`` (``"Adam"``, ``"AdamW"``, ...), fused when on and offered."""
        cls = getattr(torch.optim, name)
        if self.fused_optimizer and name in ("Adam", "AdamW"):
            kwargs.setdefault("fused", True)
        return cls(params, **kwargs)

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for float16 only (bf16 keeps float32's range)."""
        return torch.amp.GradScaler(self.device.type if self.device.type == "cuda" else "cpu", enabled=self.dtype == torch.float16)

    def describe(self) -> dict[str, Any]:
        """What the run's config records."""
        return {
            "device": str(self.device),
            "precision": {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype],
            "precision_asked": self.precision,
            "channels_last": bool(self.channels_last),
            "fused_optimizer": bool(self.fused_optimizer),
        }
