"""MONAI transforms rendering gaze records as heatmaps (:func:`gazerad.gaze.heatmap.gaze_heatmaps`).

:class:`GazeHeatmap` is a :class:`monai.transforms.Transform` (record -> ``(1, h, w)``
heatmap) and :class:`GazeHeatmapd` its :class:`monai.transforms.MapTransform` dictionary
version; both work inside ``monai.transforms.Compose``. They are importable from
:mod:`gazerad.gaze.heatmap` as well; they live here so that the heatmap functions, which
the similarity schemes use, do not import MONAI.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from gazerad.gaze.heatmap import HeatmapOptions, gaze_heatmaps
from gazerad.gaze.record import GazeRecord

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["GazeHeatmap", "GazeHeatmapd"]


class GazeHeatmap(Transform):
    """Render a :class:`~gazerad.gaze.record.GazeRecord` as a channel-first heatmap.

    Input: one record, fixations ``(N, 4)`` ``[x, y, t_start, t_end]`` in original-image
    pixels. Output: ``(1, h, w)`` float32 numpy array, ``(h, w)`` being ``out_shape`` when
    given, else the image size ``(H, W)`` (``shape`` for a record without ``image_size``,
    else the fixations' extent); summing to 1 unless ``normalise=False`` (all zero without
    fixations).

    Args:
        **options: the keyword options of :func:`~gazerad.gaze.heatmap.gaze_heatmaps`
            (:class:`~gazerad.gaze.heatmap.HeatmapOptions`: ``shape``, ``out_shape``,
            ``sigma``, ``sigma_deg``, ``pixels_per_degree``, ``weight``, ``normalise``,
            ``mode``, ``sigma_frac``), with its defaults.

    Raises:
        TypeError: an unknown option.
    """

    backend = [TransformBackends.NUMPY]

    def __init__(self, **options: Unpack[HeatmapOptions]) -> None:
        known = HeatmapOptions.__optional_keys__
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"{type(self).__name__}: unknown heatmap option(s) {unknown}; expected some of {sorted(known)}")
        self.kw: dict[str, Any] = dict(options)

    def __call__(self, record: GazeRecord) -> np.ndarray:
        """``(1, h, w)`` float32 heatmap of ``record``."""
        return gaze_heatmaps([record], **self.kw)


class GazeHeatmapd(MapTransform):
    """Dictionary version of :class:`GazeHeatmap`: for each key in ``keys``, renders the
    record ``data[key]`` and stores its ``(1, h, w)`` float32 heatmap under
    ``key + postfix`` (default ``"<key>_heatmap"``); the other entries pass through.

    Args:
        keys: keys of the records to render.
        postfix: appended to a key to name its heatmap.
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.
        **options: heatmap options, as :class:`GazeHeatmap`.
    """

    backend = GazeHeatmap.backend

    def __init__(
        self,
        keys: KeysCollection,
        postfix: str = "_heatmap",
        allow_missing_keys: bool = False,
        **options: Unpack[HeatmapOptions],
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.postfix = postfix
        self.transform = GazeHeatmap(**options)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """A copy of ``data`` with a heatmap added for each record under ``keys``."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[f"{key}{self.postfix}"] = self.transform(d[key])
        return d
