"""Size limits shared by every reader (a light module: no MONAI, no torch)."""

from __future__ import annotations

__all__ = ["MAX_PIXELS"]

# the largest image read: 2**26 pixels (an 8192 x 8192 film; detectors are at most ~4300 x
# 4300, mammograms ~4000 x 5600). Image readers check it from the header before any pixel is
# decoded, so a few hundred bytes declaring 30000 x 30000 pixels cannot make them allocate
# gigabytes; gaze readers hold the image sizes they are given to it.
MAX_PIXELS = 1 << 26
