"""The gaze data model: one reader's eye-tracking on one image, and collections of them.

Coordinates follow :mod:`gazerad.coords` (original-image pixels, origin top-left corner);
times are seconds from the start of the reading.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gazerad.data.study import check_image_id

__all__ = ["GazeRecord", "GazeCollection", "float_table"]


def float_table(values: Any, columns: str, where: str, what: str = "fixations") -> np.ndarray:
    """``values`` as an ``(N, k)`` float64 array of finite numbers, ``k`` the number of
    comma-separated names in ``columns`` (empty input gives ``(0, k)``).

    Raises:
        ValueError: another shape, or a NaN/infinite entry; the message starts with ``where``.
    """
    k = len(columns.split(","))
    f = np.asarray(values, dtype=np.float64)
    if f.size == 0:
        f = f.reshape(0, k)
    if f.ndim != 2 or f.shape[1] != k:
        raise ValueError(f"{where}: {what} must be an (N, {k}) array [{columns}], got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError(f"{where}: {what} contain NaN or infinite values")
    return f


@dataclass
class GazeRecord:
    """One reader's gaze on one image.

    Attributes:
        image_id: the image (e.g. ``"00000019_000.png"`` or a DICOM id).
        reader_id: the reader (``""`` when unknown).
        fixations: ``(N, 4)`` float64 ``[x, y, t_start, t_end]``, in time order.
        image_size: ``(height, width)`` of the original image, when known.
        samples: optional raw samples ``(M, 3)`` ``[t, x, y]``; x, y NaN when invalid.
        pixels_per_degree: image pixels per degree of visual angle, when known.
        screen: optional screen geometry (free-form, e.g. paddings, resolution).
        source: file the record came from.
    """

    image_id: str
    reader_id: str
    fixations: np.ndarray
    image_size: tuple[int, int] | None = None
    samples: np.ndarray | None = None
    pixels_per_degree: float | None = None
    screen: dict[str, Any] | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        f = float_table(self.fixations, "x, y, t_start, t_end", self._where())
        if (f[:, 3] < f[:, 2]).any():
            raise ValueError(f"{self._where()}: fixation {int(np.argmax(f[:, 3] < f[:, 2]))} ends before it starts")
        self.fixations = f
        if self.samples is not None:
            s = np.asarray(self.samples, dtype=np.float64)
            if s.ndim != 2 or s.shape[1] != 3:
                raise ValueError(f"{self._where()}: samples must be (M, 3) [t, x, y], got {s.shape}")
            self.samples = s
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))

    def _where(self) -> str:
        return self.source or f"gaze record {self.image_id}/{self.reader_id}"

    @property
    def xy(self) -> np.ndarray:
        """``(N, 2)`` fixation positions ``(x, y)``."""
        return self.fixations[:, :2]

    @property
    def durations(self) -> np.ndarray:
        """``(N,)`` fixation durations in seconds."""
        return self.fixations[:, 3] - self.fixations[:, 2]

    def __len__(self) -> int:
        return len(self.fixations)


@dataclass
class GazeCollection(Mapping[str, list[GazeRecord]]):
    """Gaze records keyed by image id (several readers per image allowed).

    Every reader adds through :meth:`add`, so every image id in a collection has passed the
    one confinement check (:func:`gazerad.data.study.check_image_id`).
    Also carries import diagnostics: ``dropped`` counts points dropped per reason.
    """

    _by_image: dict[str, list[GazeRecord]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_records(cls, records: Iterable[GazeRecord]) -> GazeCollection:
        c = cls()
        for r in records:
            c.add(r)
        return c

    def add(self, record: GazeRecord, source: str | os.PathLike | None = None, row: int | None = None) -> None:
        """Add ``record``.

        Raises:
            InputError: its image id is not a plain name (``../x``, a path, ...), naming
                ``source`` (default: the record's file) and ``row`` (where the id was read).
        """
        check_image_id(record.image_id, record.source if source is None else source, row)
        self._by_image.setdefault(record.image_id, []).append(record)

    def __getitem__(self, image_id: str) -> list[GazeRecord]:
        return self._by_image[image_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_image)

    def __len__(self) -> int:
        return len(self._by_image)

    @property
    def images(self) -> list[str]:
        """Image ids in insertion order."""
        return list(self._by_image)

    def records(self) -> list[GazeRecord]:
        """All records, image by image."""
        return [r for rs in self._by_image.values() for r in rs]

    @property
    def readers(self) -> list[str]:
        return sorted({r.reader_id for r in self.records()})

    def count_dropped(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n
