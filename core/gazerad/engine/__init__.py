"""The training engine shared by GazeRad's trainers.

- :mod:`gazerad.engine.runtime`: device, ``torchrun``/DDP set-up, seeding, precision
  (bf16 autocast on CPUs with native bf16, fp16 on CUDA, fp32 on request) and memory
  format (channels-last), recorded in each run's config.
- :mod:`gazerad.engine.runlog`: figures without global matplotlib state, the loss curve.
- :mod:`gazerad.engine.config`: settings dataclasses (one source for API, files, CLI, server).
- :mod:`gazerad.engine.run`: a started run (ranks, runtime, seed, folder, loader, DDP).
- :mod:`gazerad.engine.loop`: :class:`TrainLoop` with Ignite-named :class:`Events`.
- :mod:`gazerad.engine.handlers`: progress, TensorBoard, checkpoints, run summary.
- :mod:`gazerad.engine.checkpoint`: the resumable checkpoint and the model-file format.
"""

from gazerad._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "PRECISIONS": "runtime",
        "Runtime": "runtime",
        "cpu_has_bf16": "runtime",
        "fp32": "runtime",
        "seed_everything": "runtime",
        "setup_distributed": "runtime",
        "TrainLoop": "loop",
        "Events": "loop",
        "start_run": "run",
    },
)
