"""Handlers for :class:`gazerad.engine.loop.TrainLoop`: progress, TensorBoard, checkpoints, run summary.

Each has one job and an ``attach(loop)`` method (MONAI's handler style); a trainer
attaches the ones it wants, rank 0 only for those that write.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from gazerad.engine.checkpoint import load_checkpoint, restore_checkpoint, save_checkpoint
from gazerad.engine.loop import Events, TrainLoop

__all__ = ["RESUME_MAY_CHANGE", "ProgressBar", "EpochPrinter", "TensorBoardLogger", "CheckpointSaver", "RunSummary"]


class ProgressBar:
    """A tqdm bar per epoch with the step loss (``enabled=False``: nothing)."""

    def __init__(self, desc: Callable[[TrainLoop], str], enabled: bool = True) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def attach(self, loop: TrainLoop) -> None:
        if not self.enabled:
            return
        loop.on(Events.EPOCH_STARTED, self._open)
        loop.on(Events.ITERATION_COMPLETED, self._update)
        loop.on(Events.EPOCH_COMPLETED, self._close)

    def _open(self, loop: TrainLoop) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=loop.state.epoch_length, desc=self.desc(loop), leave=False)

    def _update(self, loop: TrainLoop) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loop.state.output['loss']:.4f}")

    def _close(self, loop: TrainLoop) -> None:
        self.bar.close()


class EpochPrinter:
    """One line per epoch: ``format(loop)`` (``enabled=False``: nothing)."""

    def __init__(self, format: Callable[[TrainLoop], str], enabled: bool = True) -> None:  # noqa: A002
        self.format, self.enabled = format, enabled

    def attach(self, loop: TrainLoop) -> None:
        if self.enabled:
            loop.on(Events.EPOCH_COMPLETED, lambda lp: print(self.format(lp), flush=True))


class TensorBoardLogger:
    """``loss/step``, ``lr`` per step and ``loss/epoch`` per epoch under ``log_dir``."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.log_dir, self.writer = str(log_dir), None

    def attach(self, loop: TrainLoop) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(self.log_dir)
        loop.on(Events.ITERATION_COMPLETED, self._step)
        loop.on(Events.EPOCH_COMPLETED, self._epoch)
        loop.on(Events.COMPLETED, lambda lp: self.writer.close())

    def _step(self, loop: TrainLoop) -> None:
        s = loop.state
        self.writer.add_scalar("loss/step", s.output["loss"], s.iteration)
        self.writer.add_scalar("lr", loop.optimizer.param_groups[0]["lr"], s.iteration)

    def _epoch(self, loop: TrainLoop) -> None:
        self.writer.add_scalar("loss/epoch", loop.state.metrics["loss"], loop.state.epoch)


#: settings a run may change when it resumes (everything else must match the checkpoint)
RESUME_MAY_CHANGE = frozenset({"data", "out", "epochs", "max_steps", "device", "progress", "workers"})


class CheckpointSaver:
    """The run's resumable state in ``path`` (:mod:`gazerad.engine.checkpoint`) after every epoch.

    Args:
        path: ``OUT/checkpoint.pt``.
        kind: the trainer's tag (``pretrain``, ``kacl``, ``attention``, ...).
        model, scaler: saved with the loop's optimiser and scheduler.
        config: the run's settings. A resumed run must agree on every setting but
            :data:`RESUME_MAY_CHANGE` (more epochs, another device, a moved folder), so a
            checkpoint of another image size, framework, learning rate ... is refused.
        extra: ``() -> dict`` of the method's own state (queues, caches, generators).
        save: ``False`` on ranks other than 0 (they still resume).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        kind: str,
        model: torch.nn.Module,
        config: Mapping[str, Any],
        extra: Callable[[], dict[str, Any]] | None = None,
        save: bool = True,
    ) -> None:
        self.path, self.kind, self.model, self.config = Path(path), kind, model, dict(config)
        self.extra, self.save = extra, save

    def resume(self, loop: TrainLoop, device: torch.device | str) -> dict[str, Any] | None:
        """Restore the loop, model, optimiser, scheduler, scaler and generators from ``path``;
        returns the method's ``extra`` state, or ``None`` when there is no checkpoint."""
        match = {k: v for k, v in self.config.items() if k not in RESUME_MAY_CHANGE}
        state = load_checkpoint(self.path, self.kind, device, match)
        if state is None:
            return None
        epoch, step, history, extra = restore_checkpoint(state, self.model, loop.optimizer, loop.scheduler, loop.scaler)
        loop.resume_from(epoch, step, history)
        return extra

    def attach(self, loop: TrainLoop) -> None:
        if self.save:
            loop.on(Events.EPOCH_COMPLETED, self._save)

    def _save(self, loop: TrainLoop) -> None:
        s = loop.state
        save_checkpoint(
            self.path,
            self.kind,
            model=self.model,
            optimizer=loop.optimizer,
            scheduler=loop.scheduler,
            scaler=loop.scaler,
            epoch=s.epoch,
            step=s.iteration,
            history=s.history,
            config=self.config,
            extra=self.extra() if self.extra else None,
        )


class RunSummary:
    """At the end: ``OUT/history.json`` (config, runtime, history) and ``OUT/loss.png``."""

    def __init__(self, out: str | os.PathLike, config: Mapping[str, Any], runtime: Mapping[str, Any], title: str) -> None:
        self.out, self.config, self.runtime, self.title = Path(out), dict(config), dict(runtime), title

    def attach(self, loop: TrainLoop) -> None:
        loop.on(Events.COMPLETED, self._write)

    def _write(self, loop: TrainLoop) -> None:
        from gazerad.engine.runlog import save_loss_curve
        from gazerad.io.atomic import atomic_write_text

        h = loop.state.history
        atomic_write_text(self.out / "history.json", json.dumps({"config": self.config, "runtime": self.runtime, "history": h}, indent=1))
        if h:
            save_loss_curve(h, self.out / "loss.png", self.title)
