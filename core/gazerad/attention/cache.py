"""A per-image cache of predicted attention maps (memory and disk)."""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from pathlib import Path

import numpy as np
import torch

from gazerad.attention.checkpoint import load_attention_model, model_fingerprint
from gazerad.attention.data import _resize_maps
from gazerad.attention.network import AttentionPredictor
from gazerad.attention.predict import _as_batch, _model_maps

__all__ = ["AttentionCache"]

PathLike = str | os.PathLike


class AttentionCache:
    """Predicted attention per image id, computed once (memory, optionally disk).

    Maps are kept at the model's side ``S`` (``S x S`` float32; 64 KiB at 128) and resized
    to the requested image's size on each :meth:`get`, exactly as :func:`predict_attention`
    does, so a cached map equals a fresh prediction. The disk cache holds one ``.npy`` per
    image under ``cache_dir/<model fingerprint[:16]>/``: a different model never reads
    another's maps, and a new cache instance (another run, another DataLoader worker)
    reuses them. An unreadable cached file is recomputed and replaced.

    The image id is the key: the caller promises one id names one image.

    Args:
        model_or_path: an :class:`AttentionPredictor` or a path for
            :func:`load_attention_model`.
        cache_dir: folder of the disk cache (``None``: memory only).
        max_items: memory cache size (least recently used dropped; ``None``: unbounded).
        device: device to load a model from a path to (default CPU).

    Attributes:
        computed, memory_hits, disk_hits: counters.
    """

    def __init__(
        self,
        model_or_path: AttentionPredictor | PathLike,
        cache_dir: PathLike | None = None,
        max_items: int | None = None,
        device: str | torch.device | None = "cpu",
    ) -> None:
        if isinstance(model_or_path, AttentionPredictor):
            self.model = model_or_path
        else:
            self.model = load_attention_model(model_or_path, device=device)
        self.fingerprint = model_fingerprint(self.model)[:16]
        self.cache_dir = Path(cache_dir) / self.fingerprint if cache_dir is not None else None
        self.max_items = max_items
        self._mem: OrderedDict[str, np.ndarray] = OrderedDict()
        self.computed = 0
        self.memory_hits = 0
        self.disk_hits = 0

    def _file(self, image_id: str) -> Path:
        assert self.cache_dir is not None
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", image_id)[-80:]
        digest = hashlib.sha1(image_id.encode()).hexdigest()[:10]
        return self.cache_dir / f"{safe}-{digest}.npy"

    def _remember(self, key: str, m: np.ndarray) -> None:
        self._mem[key] = m
        self._mem.move_to_end(key)
        if self.max_items is not None:
            while len(self._mem) > max(self.max_items, 0):
                self._mem.popitem(last=False)

    def _lookup(self, key: str) -> np.ndarray | None:
        if key in self._mem:
            self.memory_hits += 1
            self._mem.move_to_end(key)
            return self._mem[key]
        if self.cache_dir is not None:
            f = self._file(key)
            if f.is_file():
                s = self.model.input_size
                try:
                    m = np.load(f, allow_pickle=False)
                except (OSError, ValueError, EOFError):
                    m = None
                if m is not None and m.shape == (s, s) and m.dtype == np.float32 and np.isfinite(m).all():
                    self.disk_hits += 1
                    self._remember(key, m)
                    return m
        return None

    def _store(self, key: str, m: np.ndarray) -> None:
        self.computed += 1
        self._remember(key, m)
        if self.cache_dir is not None:
            from gazerad.io.atomic import atomic_path

            with atomic_path(self._file(key), suffix=".npy") as tmp:
                np.save(tmp, m, allow_pickle=False)

    def low_res(self, image_id: Hashable, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """The ``(S, S)`` float32 map of ``image`` (computed, or from the cache)."""
        key = str(image_id)
        m = self._lookup(key)
        if m is None:
            t, _ = _as_batch(image)
            if len(t) != 1:
                raise ValueError(f"get() takes one image, got a batch of {len(t)}")
            m = _model_maps(self.model, t, 1)[0, 0].numpy().astype(np.float32)
            self._store(key, m)
        return m

    def get(self, image_id: Hashable, image: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(H, W)`` float32 attention map of ``image`` (``(H, W)`` or ``(1, H, W)``), sum 1."""
        shape = tuple(int(s) for s in image.shape[-2:])
        m = self.low_res(image_id, image)
        return _resize_maps(torch.from_numpy(m)[None, None], shape)[0, 0].numpy()

    def precompute(
        self,
        items: Iterable[tuple[Hashable, np.ndarray | torch.Tensor]],
        batch_size: int = 32,
        progress: bool = True,
    ) -> int:
        """Compute the maps of ``(image_id, image)`` pairs not cached yet, in batches of
        same-size images; returns how many were computed."""
        from tqdm.auto import tqdm

        pending: dict[tuple[int, int], list[tuple[str, torch.Tensor]]] = {}
        done = 0

        def flush(group: list[tuple[str, torch.Tensor]]) -> int:
            maps = _model_maps(self.model, torch.cat([t for _, t in group]), batch_size)
            for (k, _), m in zip(group, maps):
                self._store(k, m[0].numpy().astype(np.float32))
            return len(group)

        for image_id, image in tqdm(items, desc="attention maps", unit="image", disable=not progress):
            key = str(image_id)
            if self._lookup(key) is not None:
                continue
            t, _ = _as_batch(image)
            grp = pending.setdefault(tuple(t.shape[-2:]), [])
            grp.append((key, t))
            if len(grp) >= batch_size:
                done += flush(grp)
                grp.clear()
        for grp in pending.values():
            if grp:
                done += flush(grp)
        return done

    def __len__(self) -> int:
        return len(self._mem)
