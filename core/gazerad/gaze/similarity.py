"""Gaze-similarity schemes: ``moment``, ``dhash``, ``tima``, ``cc``, ``kl`` and ``dtw``.

One module per family, re-exported here: :mod:`~gazerad.gaze.similarity_heatmap` (``moment``,
``dhash``, ``cc``, ``kl``), :mod:`~gazerad.gaze.similarity_scanpath` (``dtw``, ``tima``) and
their building blocks, :mod:`~gazerad.gaze.similarity_core`; ``multimatch`` is
:mod:`gazerad.gaze.multimatch`.

Each scheme turns a record into compact features once (:meth:`features`), then compares
two chunks of features with vectorised array code (:meth:`block`); see
:mod:`gazerad.gaze.base` for the contract (values in ``[0, 1]``, identical non-empty
record gives 1, symmetric, ``block[i, j] == similarity(a_i, b_j)``).

Shared choices (ours, where METHODS leaves them open):

- **Image size**: ``record.image_size``; else the scheme's ``image_size`` argument; else
  the fixations' extent (:func:`gazerad.gaze.heatmap.record_shape`).
- **Kernel**: ``sigma`` (px) if given, else ``sigma_deg`` (1 degree, REFLACX) times the
  record's ``pixels_per_degree``, else ``sigma_frac`` (0.05) times the image's longer side.
- **Coarse heatmaps** (32 x 32 for moments, CC, KL; 8 x 9 for dHash) are rendered
  *directly* on the coarse grid in ``"area"`` mode (the Gaussian averaged over each coarse
  pixel, coordinates and sigma rescaled per axis), which equals rendering at full
  resolution and area-resizing, without the full-size render. Non-square images are
  stretched to the square grid, as a resize would.
- **8-bit quantisation**: ``round(255 * h / max(h))``.
- **Presets**: ``preset="mcgip"`` (``moment``, ``dhash``, ``tima``) draws the maps as
  McGIP's public code does instead (full-size canvas, each fixation or marked pixel once,
  their kernels, 8-bit before the resize, DBSCAN order for TIMA); only rendering changes.
  Options and measured figures: :class:`~gazerad.gaze.similarity_core.Rendering`,
  :data:`~gazerad.gaze.similarity_core.PRESETS`.
- **Empty records** (no fixations; for the heatmap schemes also no heatmap mass inside
  the image) are similar to nothing: every pair involving one scores 0 in every scheme
  (``matrix`` still puts 1 on the diagonal).
"""

from __future__ import annotations

from gazerad.gaze.similarity_core import dhash_bits, dtw_path_cost, moment_features, quantise_8bit, rd, tima_distance
from gazerad.gaze.similarity_heatmap import CCScheme, DHashScheme, KLScheme, MomentScheme
from gazerad.gaze.similarity_scanpath import DTWScheme, TIMAScheme

__all__ = [
    "rd",
    "quantise_8bit",
    "moment_features",
    "dhash_bits",
    "dtw_path_cost",
    "tima_distance",
    "MomentScheme",
    "DHashScheme",
    "TIMAScheme",
    "CCScheme",
    "KLScheme",
    "DTWScheme",
]
