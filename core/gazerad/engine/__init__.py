"""The training engine shared by GazeRad's trainers.

- :mod:`gazerad.engine.runtime`: device, ``torchrun``/DDP set-up, seeding, precision
  (bf16 autocast on CPUs with native bf16, fp16 on CUDA, fp32 on request) and memory
  format (channels-last), recorded in each run's config.
- :mod:`gazerad.engine.runlog`: figures without global matplotlib state, the loss curve.
"""

from gazerad.engine.runtime import PRECISIONS, Runtime, cpu_has_bf16, fp32, seed_everything, setup_distributed

__all__ = ["PRECISIONS", "Runtime", "cpu_has_bf16", "fp32", "seed_everything", "setup_distributed"]
