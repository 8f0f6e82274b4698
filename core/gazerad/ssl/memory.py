"""MoCo's queue of keys that also remembers each key's dataset index (McGIP).

The index buffer lets the loss find gaze positives in the queue
(:meth:`gazerad.ssl.positives.GazePositives.queue_mask`). Empty slots have index ``-1``
and are never positives; pass ``bank.valid`` to
:class:`~gazerad.ssl.losses.MoCoInfoNCELoss` to keep them out of the softmax too.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["MemoryBankWithIndices", "concat_all_gather"]


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


@torch.no_grad()
def concat_all_gather(t: Tensor) -> Tensor:
    """Concatenate ``t`` from all ranks along dim 0, in rank order.

    Not differentiable: the result is detached. Without ``torch.distributed`` (not
    initialised, or one process) it returns ``t.detach()``. Ranks may hold different
    first-dimension sizes (e.g. a short last batch): sizes are gathered first and the
    tensors padded for the collective, then trimmed.

    Args:
        t: ``(B_r, ...)`` on this rank.

    Returns:
        ``(sum_r B_r, ...)``.
    """
    t = t.detach()
    world = _world_size()
    if world == 1:
        return t
    t = t.contiguous()
    n = torch.tensor([t.shape[0]], dtype=torch.long, device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    if t.shape[0] < longest:
        pad = t.new_zeros((longest - t.shape[0], *t.shape[1:]))
        t = torch.cat([t, pad], dim=0)
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t)
    return torch.cat([p[:c] for p, c in zip(parts, counts)], dim=0)


class MemoryBankWithIndices(nn.Module):
    """A ring buffer of ``size`` keys of ``dim`` features plus their dataset indices.

    Buffers (saved in ``state_dict``):

    - ``keys``: ``(K, D)`` float, initialised to **zeros** (our choice: deterministic and
      identical on every rank; MoCo's random init only matters when empty slots are used
      as negatives, which ``valid`` avoids);
    - ``indices``: ``(K,)`` long, ``-1`` = empty slot (never random indices);
    - ``ptr``: ``()`` long, the next slot to write.

    Args:
        size: ``K``, number of slots (>= 1).
        dim: ``D``, key size.
    """

    keys: Tensor
    indices: Tensor
    ptr: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"size and dim must be >= 1, got size={size}, dim={dim}")
        self.size = int(size)
        self.dim = int(dim)
        self.register_buffer("keys", torch.zeros(self.size, self.dim))
        self.register_buffer("indices", torch.full((self.size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def valid(self) -> Tensor:
        """``(K,)`` bool: slots that hold a key (``indices >= 0``)."""
        return self.indices >= 0

    @torch.no_grad()
    def reset(self) -> None:
        """Empty the bank (keys zero, indices -1, pointer 0)."""
        self.keys.zero_()
        self.indices.fill_(-1)
        self.ptr.zero_()

    @torch.no_grad()
    def enqueue(self, keys: Tensor, indices: Tensor) -> None:
        """Write a batch of keys and their dataset indices, oldest slots first.

        Under ``torch.distributed`` (initialised, world size > 1) keys and indices of all
        ranks are gathered first (rank order), so every rank's bank stays identical. The
        result is the same as writing the ``B_total`` items one at a time at ``ptr`` with
        wrap-around: when ``B_total > K`` only the last ``K`` survive.

        Args:
            keys: ``(B, D)`` keys (detached; normalise them first for MoCo).
            indices: ``(B,)`` non-negative dataset indices.
        """
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (B, {self.dim}), got {tuple(keys.shape)}")
        if indices.ndim != 1 or indices.shape[0] != keys.shape[0]:
            raise ValueError(f"indices must be ({keys.shape[0]},), got {tuple(indices.shape)}")
        if indices.numel() and int(indices.min()) < 0:
            raise ValueError(f"dataset indices must be >= 0 (-1 marks empty slots), got min {int(indices.min())}")
        keys = concat_all_gather(keys)
        indices = concat_all_gather(indices.to(device=keys.device, dtype=torch.long))
        n_total = keys.shape[0]
        if n_total == 0:
            return
        n = min(n_total, self.size)
        keys, indices = keys[n_total - n :], indices[n_total - n :]
        ptr = int(self.ptr)
        start = (ptr + n_total - n) % self.size
        slots = (start + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[slots] = keys.to(device=self.keys.device, dtype=self.keys.dtype)
        self.indices[slots] = indices.to(self.indices.device)
        self.ptr.fill_((ptr + n_total) % self.size)

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
