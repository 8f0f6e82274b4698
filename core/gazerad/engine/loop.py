"""One training loop for every GazeRad trainer, with events named after PyTorch Ignite's.

A trainer gives :class:`TrainLoop` its *step* (a batch -> a dict of scalar tensors whose
``"loss"`` is optimised) and attaches handlers to the events; the loop owns the rest:
epochs and steps, the optimiser step (gradient scaler, scheduler), the non-finite loss
check, averaging the step outputs across ``torchrun`` ranks and over the epoch, early stop
after ``max_steps``, and the per-epoch history. The names match
``ignite.engine.Events`` so a move to MONAI's Ignite engines is mechanical.

Example::

    loop = TrainLoop(step, optimizer=opt, scheduler=sched, scaler=rt.scaler(), max_epochs=10)
    loop.on(Events.EPOCH_STARTED, lambda lp: sampler.set_epoch(lp.state.epoch))
    state = loop.run(loader)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Events", "LoopState", "TrainLoop"]


class Events(str, Enum):
    """When handlers run (Ignite's names)."""

    STARTED = "started"
    EPOCH_STARTED = "epoch_started"
    ITERATION_STARTED = "iteration_started"
    ITERATION_COMPLETED = "iteration_completed"
    EPOCH_COMPLETED = "epoch_completed"
    COMPLETED = "completed"


@dataclass
class LoopState:
    """What handlers read (and may change).

    ``epoch`` counts *completed* epochs before ``EPOCH_STARTED`` and the current epoch
    (1-based) from then on; ``iteration`` counts optimiser steps over the whole run.
    """

    max_epochs: int
    epoch: int = 0
    iteration: int = 0
    epoch_length: int | None = None
    max_steps: int | None = None
    batch: Any = None
    output: dict[str, float] = field(default_factory=dict)  # this step's values, mean over ranks
    metrics: dict[str, float] = field(default_factory=dict)  # this epoch's means
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per completed epoch
    seconds: float = 0.0  # since run() started
    epoch_seconds: float = 0.0
    should_terminate: bool = False


StepFn = Callable[[Any], dict[str, torch.Tensor]]
Handler = Callable[["TrainLoop"], None]


class TrainLoop:
    """Epochs of ``step(batch)`` -> backward -> optimiser step, with event handlers.

    Args:
        step: computes the outputs of one batch under the trainer's autocast; ``"loss"``
            (a scalar tensor) is back-propagated, every entry is logged.
        optimizer, scheduler, scaler: stepped after each backward (the scheduler per step).
        max_epochs: epochs of a full run.
        max_steps: stop once this many optimiser steps were taken (tests, benchmarks).
        world: ``torchrun`` ranks the step outputs are averaged over.
    """

    def __init__(
        self,
        step: StepFn,
        *,
        optimizer: torch.optim.Optimizer,
        scheduler: Any = None,
        scaler: torch.amp.GradScaler | None = None,
        max_epochs: int,
        max_steps: int | None = None,
        world: int = 1,
    ) -> None:
        self.step = step
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler("cpu", enabled=False)
        self.world = world
        self.state = LoopState(max_epochs=max_epochs, max_steps=max_steps)
        self._handlers: dict[Events, list[Handler]] = {e: [] for e in Events}

    # ------------------------------------------------------------------ handlers
    def on(self, event: Events, handler: Handler) -> Handler:
        """Call ``handler(loop)`` at ``event`` (in the order attached)."""
        self._handlers[Events(event)].append(handler)
        return handler

    def add(self, *handlers: Any) -> TrainLoop:
        """Attach objects with an ``attach(loop)`` method (see :mod:`gazerad.engine.handlers`)."""
        for h in handlers:
            h.attach(self)
        return self

    def fire(self, event: Events) -> None:
        for h in self._handlers[event]:
            h(self)

    def resume_from(self, epoch: int, iteration: int, history: list[dict[str, Any]]) -> None:
        """Continue a run stopped after ``epoch`` epochs and ``iteration`` steps."""
        self.state.epoch, self.state.iteration, self.state.history = int(epoch), int(iteration), list(history)

    # ------------------------------------------------------------------ loop
    def _optimise(self, loss: torch.Tensor) -> None:
        s = self.state
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {s.epoch}, step {s.iteration}; lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()

    def _reduce(self, out: dict[str, torch.Tensor]) -> dict[str, float]:
        keys = list(out)
        vals = torch.stack([out[k].detach().float().reshape(()) for k in keys])
        if self.world > 1:
            dist.all_reduce(vals)
            vals = vals / self.world
        return dict(zip(keys, vals.cpu().tolist()))

    def run(self, data: Iterable) -> LoopState:
        """Run the remaining epochs over ``data`` (iterated once per epoch); returns the state."""
        s = self.state
        t0 = time.perf_counter()
        s.epoch_length = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
        self.fire(Events.STARTED)
        while s.epoch < s.max_epochs and not s.should_terminate:
            s.epoch += 1
            te = time.perf_counter()
            sums: dict[str, float] = {}
            n = 0
            self.fire(Events.EPOCH_STARTED)
            for batch in data:
                s.batch = batch
                self.fire(Events.ITERATION_STARTED)
                out = self.step(batch)
                self._optimise(out["loss"])
                s.iteration += 1
                s.output = self._reduce(out)
                for k, v in s.output.items():
                    sums[k] = sums.get(k, 0.0) + v
                n += 1
                self.fire(Events.ITERATION_COMPLETED)
                if s.max_steps is not None and s.iteration >= s.max_steps:
                    s.should_terminate = True
                if s.should_terminate:
                    break
            s.batch = None
            s.metrics = {k: v / n for k, v in sums.items()} if n else {"loss": float("nan")}
            s.epoch_seconds = time.perf_counter() - te
            s.seconds = time.perf_counter() - t0
            s.history.append({"epoch": s.epoch, **s.metrics, "steps": s.iteration, "seconds": s.seconds})
            self.fire(Events.EPOCH_COMPLETED)
        s.seconds = time.perf_counter() - t0
        self.fire(Events.COMPLETED)
        return s
