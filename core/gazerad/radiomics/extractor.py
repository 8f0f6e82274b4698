"""One radiomics API over two backends: ``pyradiomics`` (the reference) and ``torch`` (fast).

>>> ex = RadiomicsExtractor(backend="torch", bin_width=25)
>>> table = ex.extract(images, masks)          # lists of (H, W) arrays
>>> table.values.shape, table.names[:2]
((N, 102), ['firstorder_10Percentile', 'firstorder_90Percentile'])

Inside a training loop use :meth:`RadiomicsExtractor.extract_tensor` on a ``(B, H, W)``
batch already on the device. Both backends return the columns of
:func:`gazerad.radiomics.names.feature_names` in the same order.

NaN policy: for every ROI the input checks accept (non-empty, at least 2 x 2 pixels in
extent, finite values) both backends return finite values, including a constant ROI
(pyradiomics' conventions for degenerate matrices are reproduced). Anything a model
consumes goes through :class:`FeatureStandardizer`, which maps NaN/inf (for instance a
feature a future pyradiomics returns as NaN) to 0 after standardisation.
"""

from __future__ import annotations

import contextlib
import csv
import importlib
import multiprocessing
import os
import tempfile
import weakref
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from .discretize import discretize
from .names import FEATURE_CLASSES, feature_names
from .reference import extract_pyradiomics
from .torch_backend import CLASS_MODULES, batched_paths, cpu_fast_path, pad_batch, roi_box, single_torch_thread
from .validate import check_pair

__all__ = ["FeatureTable", "RadiomicsExtractor", "FeatureStandardizer", "torch_features"]


@dataclass
class FeatureTable:
    """A named feature matrix.

    Attributes:
        values: ``(N, F)`` float64.
        names: ``F`` column names ``<class>_<Feature>``.
        ids: ``N`` sample ids.
    """

    values: np.ndarray
    names: list[str]
    ids: list[str] = field(default_factory=list)

    def column(self, name: str) -> np.ndarray:
        """One feature over all samples."""
        return self.values[:, self.names.index(name)]

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write ``id,<features...>`` atomically (temp file, then rename)."""
        path = os.fspath(path)
        d = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", *self.names])
                for i, row in enumerate(self.values):
                    w.writerow([self.ids[i] if i < len(self.ids) else str(i), *(repr(float(v)) for v in row)])
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def channel_squeezed(x: torch.Tensor, what: str) -> torch.Tensor:
    """``(B, H, W)`` from ``(B, H, W)`` or MONAI's channel-first ``(B, 1, H, W)``."""
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim != 3:
        raise InputError(None, f"{what} must be a (B, H, W) or (B, 1, H, W) batch, got shape {tuple(x.shape)}")
    return x


def _check_batch(image: torch.Tensor, mask: torch.Tensor, names: Sequence[str] | None) -> None:
    if image.ndim != 3 or mask.shape != image.shape:
        raise InputError(None, f"expected image and mask of the same shape (B, H, W), got {tuple(image.shape)} and {tuple(mask.shape)}")
    if image.device.type == "cpu" and not image.requires_grad:
        # numpy: bool reductions over an axis are many times faster than torch's on CPU
        m = mask.numpy()
        rows, cols = m.any(axis=2).sum(axis=1), m.any(axis=1).sum(axis=1)
        x = image.numpy()
        if np.isfinite(x.min()) and np.isfinite(x.max()):  # NaN propagates: the common case in 2 passes
            finite = np.ones(len(m), bool)
        else:
            finite = np.array([np.isfinite(x[i][m[i]]).all() for i in range(len(m))], bool)
        bad = np.nonzero((rows < 2) | (cols < 2) | ~finite)[0].tolist()
    else:
        rows = mask.any(dim=2).sum(dim=1)
        cols = mask.any(dim=1).sum(dim=1)
        finite = torch.where(mask, torch.isfinite(image), torch.ones_like(mask)).flatten(1).all(dim=1)
        bad = torch.nonzero((rows < 2) | (cols < 2) | ~finite).flatten().tolist()
    for i in bad:
        name = names[i] if names is not None else f"sample {i}"
        if int(rows[i]) == 0:
            raise InputError(name, "mask is empty (no ROI pixel)")
        if int(rows[i]) < 2 or int(cols[i]) < 2:
            raise InputError(name, "ROI must span at least 2 rows and 2 columns (a single pixel or a line has no 2-D texture)")
        raise InputError(name, "image has NaN or infinite values inside the ROI")


# CPU tensors are processed in chunks of about this many pixels (before the ROI crop); 0: whole batch
CPU_CHUNK_PIXELS = 1 << 19
# CPU batches whose ROI box is smaller than this many pixels take the batched torch code (the
# per-sample fast paths' Python loops cost more there: measured crossover ~32 x 32)
CPU_FAST_MIN_PIXELS = 1024
# GLCM and NGTDM build dense (levels x levels) matrices per sample and angle: beyond this many grey
# levels in one ROI (a bin width far below the ROI's range) they would need gigabytes
MAX_DENSE_LEVELS = 4096


def _cpu_chunk(image: torch.Tensor) -> int:
    """Samples per chunk on CPU (0: no chunking, e.g. on CUDA)."""
    if image.device.type != "cpu" or CPU_CHUNK_PIXELS <= 0 or image.ndim != 3:
        return 0
    return max(1, CPU_CHUNK_PIXELS // max(1, image.shape[1] * image.shape[2]))


def torch_features(
    image: torch.Tensor,
    mask: torch.Tensor,
    bin_width: float = 25.0,
    classes: Sequence[str] = FEATURE_CLASSES,
    spacing: tuple[float, float] = (1.0, 1.0),
    names: Sequence[str] | None = None,
    check: bool = True,
) -> torch.Tensor:
    """Torch-backend features of a batch.

    Args:
        image: ``(B, H, W)`` float tensor, or MONAI's channel-first ``(B, 1, H, W)`` (any
            device; computed in float64). Intensities as pyradiomics sees them: with the
            default ``bin_width`` 25 an image scaled to ``[0, 1]`` has one grey level; scale
            it to ``0..255`` (as KACL does) or pick a bin width for its range.
        mask: ``(B, H, W)`` or ``(B, 1, H, W)`` bool/0-1 tensor.
        bin_width: fixed bin width.
        classes: feature classes, any subset of :data:`FEATURE_CLASSES` (output in that order).
        spacing: pixel spacing ``(row, col)``.
        names: sample names for error messages.
        check: validate the ROIs (one cheap reduction; disable only for pre-validated input).

    Returns:
        ``(B, F)`` float64 tensor on the input's device.
    """
    image, mask = channel_squeezed(image, "image"), channel_squeezed(mask, "mask")
    # the CPU fast paths: small torch ops, faster on one intra-op thread
    with single_torch_thread() if cpu_fast_path(image) else contextlib.nullcontext():
        return _torch_features(image, mask, bin_width, classes, spacing, names, check)


def _torch_features(
    image: torch.Tensor,
    mask: torch.Tensor,
    bin_width: float,
    classes: Sequence[str],
    spacing: tuple[float, float],
    names: Sequence[str] | None,
    check: bool,
) -> torch.Tensor:
    """:func:`torch_features` (arguments as there), after the thread setting."""
    mask = mask.to(torch.bool)
    chunk = _cpu_chunk(image)
    if chunk and image.ndim == 3 and mask.shape == image.shape and image.shape[0] > chunk:
        # CPU: a few samples at a time, so that each class's per-pixel passes stay in cache
        # (whole-batch float64 passes over ~1M pixels are memory-bound, several times slower)
        if names is None:
            names = [f"sample {i}" for i in range(image.shape[0])]
        return torch.cat(
            [
                _torch_features(image[s : s + chunk], mask[s : s + chunk], bin_width, classes, spacing, names[s : s + chunk], check)
                for s in range(0, image.shape[0], chunk)
            ]
        )
    if image.ndim == 3 and mask.shape == image.shape:
        # crop the batch to the union bounding box of its ROIs first: nothing outside it is
        # read (the checks and every class look at ROI pixels and their in-ROI neighbours)
        box = roi_box(mask)
        if box is not None:
            r0, r1, c0, c1 = box
            image = image[:, r0 : r1 + 1, c0 : c1 + 1].contiguous()
            mask = mask[:, r0 : r1 + 1, c0 : c1 + 1].contiguous()
    small = cpu_fast_path(image) and image.ndim == 3 and image.shape[1] * image.shape[2] < CPU_FAST_MIN_PIXELS
    with batched_paths() if small else contextlib.nullcontext():
        image = image.to(torch.float64)
        if check:
            _check_batch(image, mask, names)
        # the classes read the levels many times: 1 byte per pixel where they fit
        levels = discretize(image, mask, bin_width, dtype=None)
        if {"glcm", "ngtdm"} & set(classes) and levels.numel():
            top = levels.reshape(levels.shape[0], -1).amax(dim=1)
            worst = int(torch.argmax(top))
            if int(top[worst]) > MAX_DENSE_LEVELS:
                name = names[worst] if names is not None else f"sample {worst}"
                gb = int(top[worst]) ** 2 * 8 * 4 / 1e9
                raise InputError(
                    name,
                    f"bin width {bin_width:g} gives {int(top[worst])} grey levels in the ROI (more than {MAX_DENSE_LEVELS}): "
                    f"GLCM/NGTDM would need ~{gb:.0f} GB; use a larger bin width (pyradiomics recommends 16-128 bins)",
                )
        out = []
        for c in classes:
            if c not in CLASS_MODULES:
                raise ValueError(f"unknown radiomics feature class {c!r}; known: {', '.join(FEATURE_CLASSES)}")
            mod = importlib.import_module(f".torch_backend.{CLASS_MODULES[c]}", __package__)
            out.append(mod.features(image, mask, levels, spacing))
        return torch.cat(out, dim=1)


def _roi_crop(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A checked pair cropped to its ROI's bounding box (every class reads ROI pixels only)."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return np.ascontiguousarray(image[box]), np.ascontiguousarray(mask[box])


def _worker_init() -> None:
    torch.set_num_threads(1)  # one process per core: the fast paths are single-threaded anyway


def _torch_batch(args: tuple) -> np.ndarray:
    """Torch-backend features of one batch of checked pairs read from shared memory (a process-pool task).

    ``args``: shared-memory block name, ``[(image offset, mask offset, (h, w)), ...]``, ids,
    bin width, classes, spacing.
    """
    name, layout, ids, bin_width, classes, spacing = args
    shm = shared_memory.SharedMemory(name=name)
    try:
        images = [np.ndarray(hw, np.float64, buffer=shm.buf, offset=oi) for oi, _, hw in layout]
        masks = [np.ndarray(hw, np.bool_, buffer=shm.buf, offset=om) for _, om, hw in layout]
        img, msk = pad_batch(images, masks, "cpu")  # copies out of the block
        del images, masks
    finally:
        shm.close()
    return torch_features(img, msk, bin_width, classes, spacing, ids, check=False).numpy()


def _pool_extract(
    pool: ProcessPoolExecutor, pairs: list, ids: list[str], batch: int, bin_width: float, classes: Sequence[str], spacing: tuple[float, float]
) -> np.ndarray:
    """Features of checked pairs on a process pool: the ROI crops go through one shared-memory block."""
    crops = [_roi_crop(im, m) for im, m in pairs]
    layout, offset = [], 0
    for im, _ in crops:
        layout.append((offset, offset + im.nbytes, im.shape))
        offset += im.nbytes + ((im.size + 7) // 8) * 8  # float64 image, then its bool mask (8-byte aligned)
    shm = shared_memory.SharedMemory(create=True, size=max(1, offset))
    try:
        for (oi, om, hw), (im, m) in zip(layout, crops):
            np.ndarray(hw, np.float64, buffer=shm.buf, offset=oi)[...] = im
            np.ndarray(hw, np.bool_, buffer=shm.buf, offset=om)[...] = m
        jobs = [(shm.name, layout[s : s + batch], ids[s : s + batch], bin_width, tuple(classes), spacing) for s in range(0, len(crops), batch)]
        return np.concatenate(list(pool.map(_torch_batch, jobs)))
    finally:
        shm.close()
        shm.unlink()


class RadiomicsExtractor:
    """Extract 2-D radiomics from image/mask pairs.

    Args:
        backend: ``"torch"`` (batched, CPU or CUDA) or ``"pyradiomics"`` (the reference,
            a process pool of ``n_workers``).
        bin_width: fixed bin width of the grey-level discretisation.
        classes: feature classes (default all seven: 102 features).
        spacing: pixel spacing ``(row, col)`` in mm.
        device: torch device for the torch backend (default CUDA when present, else CPU).
        batch_size: pairs per torch batch (pairs of different sizes are zero-padded).
        n_workers: processes: the pyradiomics backend's pool; for the torch backend on CPU,
            :meth:`extract` runs its batches on a pool of this many single-threaded forked
            processes (kept for the extractor's life: :meth:`close` or ``with`` ends it; the
            ROI crops travel through shared memory), which is how the per-sample CPU code uses
            several cores (~1.3x on 2 cores; in-process where ``fork`` is unavailable).
            ``extract_tensor`` stays in-process.
    """

    def __init__(
        self,
        backend: str = "torch",
        bin_width: float = 25.0,
        classes: Sequence[str] = FEATURE_CLASSES,
        spacing: tuple[float, float] = (1.0, 1.0),
        device: str | torch.device | None = None,
        batch_size: int = 16,
        n_workers: int = 1,
    ) -> None:
        if backend not in ("torch", "pyradiomics"):
            raise ValueError(f"backend must be 'torch' or 'pyradiomics', got {backend!r}")
        if bin_width <= 0:
            raise ValueError(f"bin_width must be > 0, got {bin_width}")
        self.backend = backend
        self.bin_width = float(bin_width)
        self.classes = tuple(classes)
        self.names = feature_names(self.classes)
        self.spacing = (float(spacing[0]), float(spacing[1]))
        self.device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = int(batch_size)
        self.n_workers = int(n_workers)
        self._pool: ProcessPoolExecutor | None = None

    def _cpu_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # fork: the workers share this process's resource tracker, so the shared-memory
            # block a worker attaches to stays registered once, owned and unlinked by this side
            # (spawn would also re-run an unguarded __main__ script in every worker)
            ctx = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(max_workers=self.n_workers, mp_context=ctx, initializer=_worker_init)
            weakref.finalize(self, self._pool.shutdown, wait=False)
        return self._pool

    def close(self) -> None:
        """End the torch backend's CPU process pool (if any); the extractor stays usable."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> "RadiomicsExtractor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_pool": None}

    def extract(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray], ids: Sequence[str] | None = None) -> FeatureTable:
        """Features of each pair.

        Args:
            images: ``N`` arrays ``(H_i, W_i)``.
            masks: ``N`` binary arrays of the same shapes.
            ids: sample ids (used in errors and in the table).

        Returns:
            :class:`FeatureTable` with ``values`` ``(N, F)``.
        """
        if len(images) != len(masks):
            raise InputError(None, f"{len(images)} images but {len(masks)} masks")
        ids = [str(i) for i in ids] if ids is not None else [f"sample {i}" for i in range(len(images))]
        if self.backend == "pyradiomics":
            values = extract_pyradiomics(images, masks, self.bin_width, self.classes, self.spacing, self.n_workers, ids)
            return FeatureTable(values, list(self.names), ids)
        pairs = [check_pair(im, m, nm) for im, m, nm in zip(images, masks, ids)]
        if self.device.type == "cpu" and self.n_workers > 1 and len(pairs) > 1 and "fork" in multiprocessing.get_all_start_methods():
            # batches on a pool of processes; each pair travels cropped to its ROI box
            bs = max(1, min(self.batch_size, -(-len(pairs) // self.n_workers)))
            values = _pool_extract(self._cpu_pool(), pairs, ids, bs, self.bin_width, self.classes, self.spacing)
            return FeatureTable(values, list(self.names), ids)
        rows = []
        for s in range(0, len(pairs), self.batch_size):
            chunk = pairs[s : s + self.batch_size]
            img, msk = pad_batch([p[0] for p in chunk], [p[1] for p in chunk], self.device)
            rows.append(torch_features(img, msk, self.bin_width, self.classes, self.spacing, ids[s : s + len(chunk)], check=False).cpu().numpy())
        values = np.concatenate(rows) if rows else np.zeros((0, len(self.names)))
        return FeatureTable(values, list(self.names), ids)

    def extract_tensor(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Torch backend on a ``(B, H, W)`` (or ``(B, 1, H, W)``) batch already on a device:
        ``(B, F)`` float64 (``.float()`` it for a float32 network)."""
        return torch_features(image, mask, self.bin_width, self.classes, self.spacing)


class FeatureStandardizer:
    """Per-feature standardisation stored with a model; NaN/inf become 0 after scaling.

    ``fit`` ignores non-finite entries; a constant feature gets scale 1.
    """

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None, names: Sequence[str] | None = None) -> None:
        self.mean = None if mean is None else np.asarray(mean, np.float64)
        self.std = None if std is None else np.asarray(std, np.float64)
        self.names = list(names) if names is not None else None

    def fit(self, values: np.ndarray, names: Sequence[str] | None = None) -> "FeatureStandardizer":
        """Fit mean and std on ``(N, F)`` values (finite entries only)."""
        x = np.where(np.isfinite(values), values, np.nan)
        with np.errstate(invalid="ignore"):
            mean = np.nanmean(x, axis=0) if len(x) else np.zeros(x.shape[1])
            std = np.nanstd(x, axis=0) if len(x) else np.ones(x.shape[1])
        self.mean = np.nan_to_num(mean, nan=0.0)
        std = np.nan_to_num(std, nan=1.0)
        self.std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(self.mean)), std, 1.0)
        self.names = list(names) if names is not None else self.names
        return self

    def transform(self, values: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """``(x - mean) / std`` with non-finite results set to 0; keeps the input type."""
        if self.mean is None or self.std is None:
            raise RuntimeError("FeatureStandardizer is not fitted")
        if isinstance(values, torch.Tensor):
            mean = torch.as_tensor(self.mean, dtype=values.dtype, device=values.device)
            std = torch.as_tensor(self.std, dtype=values.dtype, device=values.device)
            z = (values - mean) / std
            return torch.where(torch.isfinite(z), z, torch.zeros_like(z))
        z = (np.asarray(values, np.float64) - self.mean) / self.std
        return np.where(np.isfinite(z), z, 0.0)

    def state_dict(self) -> dict:
        return {"mean": None if self.mean is None else self.mean.tolist(), "std": None if self.std is None else self.std.tolist(), "names": self.names}

    @classmethod
    def from_state_dict(cls, state: dict) -> "FeatureStandardizer":
        return cls(state.get("mean"), state.get("std"), state.get("names"))
