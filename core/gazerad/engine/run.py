"""What every trainer does before its first step: ranks, device, numerics, seed, run folder, data loader, DDP."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from gazerad.engine.runtime import Runtime, seed_everything, setup_distributed
from gazerad.errors import InputError

__all__ = ["RunContext", "start_run", "training_rows"]


@dataclass
class RunContext:
    """A started run: ``torchrun`` rank and world size, :class:`Runtime` and the run folder."""

    rank: int
    world: int
    runtime: Runtime
    out: Path

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def loader(self, dataset: Any, batch_size: int, seed: int, workers: int = 0) -> tuple[Any, Any]:
        """``(DataLoader, DistributedSampler)``: this rank's share of each shuffled epoch,
        ``batch_size // world`` items per step, incomplete batches dropped."""
        from torch.utils.data import DataLoader
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(dataset, num_replicas=self.world, rank=self.rank, shuffle=True, seed=seed, drop_last=True)
        loader = DataLoader(
            dataset, batch_size=batch_size // self.world, sampler=sampler, drop_last=True, num_workers=workers, pin_memory=self.device.type == "cuda"
        )
        return loader, sampler

    def ddp(self, module: torch.nn.Module, **kw: Any) -> torch.nn.Module:
        """``module`` wrapped in DistributedDataParallel under ``torchrun``, else itself."""
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, **kw)

    def barrier(self) -> None:
        if dist.is_initialized():
            dist.barrier()


def start_run(cfg: Any) -> RunContext:
    """Join ``torchrun``'s group (if any), choose the device and numerics from ``cfg``
    (``device``, ``precision``, ``amp``, ``channels_last``), check ``batch_size`` splits over
    the ranks, create ``cfg.out`` and seed every generator with ``cfg.seed``."""
    rank, world, dev = setup_distributed(cfg.device)
    rt = Runtime(dev, cfg.precision if getattr(cfg, "amp", True) else "fp32", cfg.channels_last)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by the {world} ranks")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    return RunContext(rank, world, rt, out)


def training_rows(cfg: Any, classes: bool = True, keep: Container[str] | None = None) -> tuple[Any, list[int]]:
    """The study table of ``cfg.data`` (any layout of :mod:`gazerad.data.layouts`; with
    ``classes``, at least one class) and the rows of ``cfg.splits`` whose image id is in
    ``keep`` (when given, e.g. the images with gaze); at least one batch of them."""
    from gazerad.data.study import image_id_of
    from gazerad.pretrain.data import read_study_table

    table = read_study_table(cfg.data, classes=classes)
    rows = table.subset(cfg.splits)
    what = f"{len(rows)} images in splits {list(cfg.splits)}"
    if keep is not None:
        rows = np.array([i for i in rows if image_id_of(table.ids[i]) in keep], dtype=np.int64)
        what += f", {len(rows)} of them with gaze,"
    if len(rows) < cfg.batch_size:
        raise InputError(cfg.data, f"{what} fewer than one batch of {cfg.batch_size}")
    return table, rows
