"""Building blocks of the gaze-similarity schemes (:mod:`gazerad.gaze.similarity`).

The measures themselves (:func:`rd`, :func:`quantise_8bit`, :func:`moment_features`,
:func:`dhash_bits`, the reference :func:`dtw_path_cost` and :func:`tima_distance`) and what
the scheme classes share: the heatmap rendering (:class:`Rendering`, the choices listed in
the :mod:`~gazerad.gaze.similarity` docstring), the rendering presets (:data:`PRESETS`,
:func:`preset_options`), grid parsing and the diagonal-block test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from gazerad.gaze.heatmap import canvas_heatmap, gaze_heatmap, record_shape, resize_area, resize_bilinear, resolve_sigma
from gazerad.gaze.record import GazeRecord

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "rd",
    "quantise_8bit",
    "moment_features",
    "dhash_bits",
    "dtw_path_cost",
    "tima_distance",
    "Rendering",
    "RenderingParams",
    "PRESETS",
    "preset_options",
]


def rd(a: Any, b: Any) -> Any:
    """Relative difference ``|a - b| / |max(a, b)|`` (METHODS), elementwise with broadcasting.

    ``rd = 0`` when ``a == b`` (this takes precedence, so ``rd(0, 0) = 0``); ``rd = 1`` when
    either is NaN or ``max(a, b) == 0``. Returns a float for scalar input.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    mx = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.abs(a - b) / np.abs(mx)
    r = np.where(np.isnan(r) | (mx == 0), 1.0, r)
    r = np.where(a == b, 0.0, r)
    r = np.where(np.isnan(a) | np.isnan(b), 1.0, r)
    return float(r) if r.ndim == 0 else r


def rd_nonneg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fast :func:`rd` for finite, non-negative inputs (then ``max == 0`` only when ``a == b == 0``)."""
    mx = np.maximum(a, b)
    r = np.abs(a - b)
    np.divide(r, mx, out=r, where=mx > 0)
    return r


def quantise_8bit(heatmap: np.ndarray, rounding: str = "round") -> np.ndarray:
    """``(..., h, w)`` -> 8-bit levels ``round(255 * h / max(h))`` (float64; an all-zero map stays 0).

    ``rounding="floor"`` gives ``floor(255 * h / max(h))`` instead, the cast to ``uint8`` of
    McGIP's code (the ``mcgip`` preset).
    """
    if rounding not in ("round", "floor"):
        raise ValueError(f"rounding must be 'round' or 'floor', got {rounding!r}")
    h = np.asarray(heatmap, dtype=np.float64)
    mx = h.max(axis=(-2, -1), keepdims=True) if h.size else np.zeros(h.shape[:-2] + (1, 1))
    rnd = np.round if rounding == "round" else np.floor
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(mx > 0, rnd(255.0 * h / np.where(mx > 0, mx, 1.0)), 0.0)
    return q


def moment_features(heatmap8bit: np.ndarray) -> tuple[Any, Any]:
    """``(M00, Hu1)`` of an (8-bit) intensity image ``I``, batched over leading axes.

    ``M00 = sum I``; centroid ``(xb, yb)`` with ``x`` the column and ``y`` the row index;
    ``mu20 = sum (x - xb)^2 I``, ``mu02 = sum (y - yb)^2 I``;
    ``eta_pq = mu_pq / M00 ** (1 + (p + q) / 2)``, so ``Hu1 = eta20 + eta02 = (mu20 + mu02) / M00^2``.
    ``Hu1`` is NaN when ``M00 == 0``. The input is used as given (quantise first with
    :func:`quantise_8bit`).
    """
    img = np.asarray(heatmap8bit, dtype=np.float64)
    h, w = img.shape[-2:]
    m00 = img.sum(axis=(-2, -1))
    x = np.arange(w, dtype=np.float64)
    y = np.arange(h, dtype=np.float64)
    col = img.sum(axis=-2)  # (..., w)
    row = img.sum(axis=-1)  # (..., h)
    with np.errstate(invalid="ignore", divide="ignore"):
        xb = (col * x).sum(-1) / m00
        yb = (row * y).sum(-1) / m00
        mu20 = (col * (x - xb[..., None]) ** 2).sum(-1)
        mu02 = (row * (y - yb[..., None]) ** 2).sum(-1)
        hu1 = np.where(m00 > 0, (mu20 + mu02) / m00**2, np.nan)
    if np.ndim(m00) == 0:
        return float(m00), float(hu1)
    return m00, hu1


def dhash_bits(heatmap: np.ndarray) -> np.ndarray:
    """64-bit difference hash of ``(..., h, w)`` heatmaps -> ``(..., 64)`` bool.

    The map is area-resized to 8 rows x 9 columns (unless already that size); bit
    ``(r, c) = p[r, c] > p[r, c + 1]`` (pixel brighter than its right neighbour), row-major.
    """
    a = np.asarray(heatmap, dtype=np.float64)
    if a.shape[-2:] != (8, 9):
        a = resize_area(a, (8, 9))
    bits = a[..., :, :-1] > a[..., :, 1:]
    return bits.reshape(*bits.shape[:-2], 64)


def dtw_path_cost(cost: np.ndarray) -> tuple[float, int]:
    """DTW over a ``(Ka, Kb)`` cost matrix: ``(D, len(path))`` of the optimal warping path.

    Steps ``(i-1, j)``, ``(i, j-1)``, ``(i-1, j-1)``; the path runs from ``(0, 0)`` to
    ``(Ka-1, Kb-1)``; ``D`` is the sum of the costs on it. Among paths of minimal ``D`` the
    shortest is taken (our tie rule; it keeps ``D / len`` symmetric in the two sequences).
    Reference implementation (pure Python) of what
    :class:`~gazerad.gaze.similarity_scanpath.TIMAScheme` batches.
    """
    c = np.asarray(cost, dtype=np.float64)
    ka, kb = c.shape
    if ka == 0 or kb == 0:
        raise ValueError("DTW needs two non-empty sequences")
    d = np.full((ka, kb), np.inf)
    n = np.zeros((ka, kb), dtype=np.int64)
    for i in range(ka):
        for j in range(kb):
            if i == 0 and j == 0:
                d[i, j], n[i, j] = c[0, 0], 1
                continue
            cands = [(d[i - 1, j - 1], n[i - 1, j - 1])] if i and j else []
            if i:
                cands.append((d[i - 1, j], n[i - 1, j]))
            if j:
                cands.append((d[i, j - 1], n[i, j - 1]))
            bd, bn = min(cands)
            d[i, j], n[i, j] = c[i, j] + bd, bn + 1
    return float(d[-1, -1]), int(n[-1, -1])


def tima_distance(seq_a: np.ndarray, seq_b: np.ndarray, w_m00: float = 0.7, w_hu1: float = 0.3) -> tuple[float, int]:
    """DTW ``(D, len(path))`` between two ``(K, 2)`` ``[M00, Hu1]`` cluster sequences with
    cluster distance ``d = w_m00 rd(M00) + w_hu1 rd(Hu1)`` (reference, one pair)."""
    a = np.asarray(seq_a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(seq_b, dtype=np.float64).reshape(-1, 2)
    cost = w_m00 * rd(a[:, None, 0], b[None, :, 0]) + w_hu1 * rd(a[:, None, 1], b[None, :, 1])
    return dtw_path_cost(np.atleast_2d(cost))


def same_chunk(fa: Any, fb: Any) -> bool:
    """Whether two feature chunks hold the same records (a diagonal block)."""
    if fa is fb:
        return True
    if isinstance(fa, list) and isinstance(fb, list) and len(fa) == len(fb):
        return all(x is y or (np.shape(x) == np.shape(y) and np.array_equal(x, y)) for x, y in zip(fa, fb))
    return False


def as_grid(grid: int | Sequence[int]) -> tuple[int, int]:
    """``(rows, cols)`` of a heatmap grid given as one side or a pair."""
    g = (int(grid), int(grid)) if np.isscalar(grid) else (int(grid[0]), int(grid[1]))
    if min(g) < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    return g


def valid_pairs(sim: np.ndarray, valid_a: np.ndarray, valid_b: np.ndarray) -> np.ndarray:
    """``sim`` where both records of a pair are non-empty, 0 elsewhere, clipped to ``[0, 1]``."""
    return np.clip(np.where(valid_a[:, None] & valid_b[None, :], sim, 0.0), 0.0, 1.0)


#: The rendering presets: preset name -> scheme name -> options (the :class:`Rendering`
#: options, and for ``tima`` the moment ``order``). ``mcgip`` draws the maps as the
#: authors' public code (zhaozh10/McGIP, ``core-code/GazeSimilarityEval/``) does; see
#: :class:`Rendering` for what each option means and the figures measured with it.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "mcgip": {
        # a point canvas of 800 x 800 (a pixel set once), Gaussian sigma 30.2 canvas px,
        # floored to 8 bit at full size, then resized: area to 32 x 32, bilinear to 9 x 8
        "moment": dict(weight="count", canvas=800, mark_once=True, canvas_sigma=30.2, quantise="before_resize", resize="area"),
        "dhash": dict(weight="count", canvas=800, mark_once=True, canvas_sigma=30.2, quantise="before_resize", resize="bilinear"),
        # each moment drawn on the image's own grid, one window of floor(H / 10) px with
        # sigma window / 6 per fixation, floored to 8 bit, area to 32 x 32; DBSCAN label order
        "tima": dict(weight="count", canvas="image", kernel_window=0.1, quantise="before_resize", resize="area", order="dbscan"),
    },
}


def preset_options(scheme: str, preset: str | None) -> dict[str, Any]:
    """The options preset ``preset`` gives scheme ``scheme`` (``{}`` for ``None``).

    Raises:
        ValueError: an unknown preset name, or a preset without settings for the scheme.
    """
    if preset is None:
        return {}
    if preset not in PRESETS:
        raise ValueError(f"unknown rendering preset {preset!r}; available: {sorted(PRESETS)}")
    if scheme not in PRESETS[preset]:
        raise ValueError(f"rendering preset {preset!r} has no settings for scheme {scheme!r}; it covers {sorted(PRESETS[preset])}")
    return dict(PRESETS[preset][scheme])


class RenderingParams(TypedDict, total=False):
    """The rendering arguments every heatmap-based scheme takes (see :class:`Rendering`)."""

    preset: str | None
    sigma: float | None
    sigma_deg: float | None
    sigma_frac: float | None
    image_size: tuple[int, int] | None
    weight: str
    canvas: int | str | None
    mark_once: bool
    canvas_sigma: float | None
    kernel_window: float | None
    quantise: str
    resize: str


#: Defaults of the rendering options; those of the canvas pipeline (after ``weight``) are left
#: out of :meth:`Rendering.params` while at their default, so cache keys made before they
#: existed still hold.
_RENDERING_DEFAULTS: dict[str, Any] = dict(
    sigma=None,
    sigma_deg=1.0,
    sigma_frac=0.05,
    image_size=None,
    weight="duration",
    canvas=None,
    mark_once=False,
    canvas_sigma=None,
    kernel_window=None,
    quantise="after_resize",
    resize="area",
)
_CANVAS_OPTIONS = ("canvas", "mark_once", "canvas_sigma", "kernel_window", "quantise", "resize")


class Rendering:
    """Heatmap rendering shared by the schemes (choices in the :mod:`~gazerad.gaze.similarity`
    docstring); a scheme class lists it before :class:`~gazerad.gaze.base.SimilarityScheme`.

    Ours (the defaults): each record's Gaussians, duration-weighted, are integrated over the
    pixels of the coarse grid directly (``"area"`` mode, no full-size map); the moment
    schemes quantise that coarse map with ``round(255 h / max h)``; dHash reads the float map.

    With ``canvas`` a full-size map is drawn first
    (:func:`~gazerad.gaze.heatmap.canvas_heatmap`) and resized to the coarse grid, as
    McGIP's code does. ``preset="mcgip"`` (:data:`PRESETS`) sets the options that reproduce
    the authors' maps; it changes rendering only (the similarity maths is the same):

    - ``moment``, ``dhash``: ``weight="count"``, ``canvas=800``, ``mark_once=True``,
      ``canvas_sigma=30.2`` (19.3 px of a 512 px image), ``quantise="before_resize"``;
      ``resize="area"`` to 32 x 32 (moment), ``"bilinear"`` to 9 x 8 (dHash, on the 8-bit
      image: empty regions are 0 and equal neighbours give bit 0);
    - ``tima``: ``weight="count"``, ``canvas="image"``, ``kernel_window=0.1`` (a 51 px window
      with sigma 8.5 px at 512), ``quantise="before_resize"``, ``resize="area"``, and the
      moments in DBSCAN's label order (``order="dbscan"``).

    The authors' bugs are not copied: ``x`` is divided by ``W`` and ``y`` by ``H``, moments are
    taken in label order 0, 1, 2, ... (not as sorted file names, 10 before 2), a record whose
    fixations are all DBSCAN noise is one moment (theirs fails), no ``uint8`` overflow.
    Measured on 20 synthetic records (``gazerad.synth``, seed 7, the first reading of each
    image; 190 pairs; ``tests/gaze/test_mcgip_preset.py``): the preset matches an independent
    re-implementation of the authors' pipeline (written from METHODS' facts) to 2.2e-16 max
    abs difference (moment, TIMA; 2e-3 required) with identical dHash bits. Our defaults vs
    the preset there: r = 0.48 (moment), 0.31 (dHash), 0.58 (TIMA); over the study seeds
    0, 1, 2, 3, 7: 0.48-0.82 (moment), 0.23-0.44 (dHash), 0.45-0.73 (TIMA). (METHODS: ours
    vs the authors' code on their 20 records, r = 0.85, 0.40, 0.54.)

    Args:
        preset: a name in :data:`PRESETS` (``"mcgip"``) or ``None`` (ours); its options are
            the defaults, explicit arguments override them.
        sigma: kernel sigma in pixels of the original image (overrides the others).
        sigma_deg: kernel sigma in degrees, times the record's ``pixels_per_degree`` (1).
        sigma_frac: fallback sigma as a fraction of the image's longer side (0.05).
        image_size: ``(H, W)`` for records without ``image_size``.
        weight: ``"duration"`` or ``"count"`` per fixation.
        canvas: where the full-size map is drawn: ``None`` (ours, none: the coarse grid
            directly), ``"image"`` (the image's ``H x W`` pixels) or ``N`` (an ``N x N``
            canvas, the image stretched to it; McGIP's is 800). On a canvas each fixation is
            snapped to the pixel holding it, fixations outside the image are dropped, and
            the kernel is sampled at pixel centres.
        mark_once: a canvas pixel holding several fixations counts once (McGIP's point
            canvas; needs ``weight="count"`` and a canvas).
        canvas_sigma: kernel sigma in canvas pixels, the same along both canvas axes
            (overrides ``sigma``, ``sigma_deg``, ``sigma_frac``); ``None``: those, in image
            pixels, scaled to the canvas per axis.
        kernel_window: cut each fixation's kernel to a square window of
            ``max(1, floor(kernel_window * Hc))`` canvas pixels (``Hc`` the canvas height)
            with sigma ``window / 6`` (McGIP's TIMA kernel; overrides the sigma options).
        quantise: ``"after_resize"`` (ours: the coarse map, ``round(255 h / max h)``, for
            the moment schemes; dHash reads it unquantised) or ``"before_resize"`` (McGIP:
            the full-size map to 8-bit ``floor(255 h / max h)``, resized, rounded half up
            to integers as an 8-bit image stays; every scheme reads those levels; needs a
            canvas).
        resize: canvas to coarse grid: ``"area"`` (box average, OpenCV ``INTER_AREA``) or
            ``"bilinear"`` (OpenCV ``INTER_LINEAR``, two taps, no antialiasing; needs a canvas).
    """

    name: str

    def __init__(self, **options: Unpack[RenderingParams]) -> None:
        preset = options.pop("preset", None)
        unknown = sorted(set(options) - set(_RENDERING_DEFAULTS))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected argument(s) {unknown}")
        from_preset = {k: v for k, v in preset_options(self.name, preset).items() if k in _RENDERING_DEFAULTS}
        o: dict[str, Any] = {**_RENDERING_DEFAULTS, **from_preset, **options}
        self.preset = preset
        self.sigma = None if o["sigma"] is None else float(o["sigma"])
        self.sigma_deg = None if o["sigma_deg"] is None else float(o["sigma_deg"])
        self.sigma_frac = None if o["sigma_frac"] is None else float(o["sigma_frac"])
        self.image_size = None if o["image_size"] is None else (int(o["image_size"][0]), int(o["image_size"][1]))
        if o["weight"] not in ("duration", "count"):
            raise ValueError(f"weight must be 'duration' or 'count', got {o['weight']!r}")
        self.weight = str(o["weight"])
        canvas = o["canvas"]
        if canvas is not None and canvas != "image":
            if isinstance(canvas, (str, bool)) or int(canvas) < 1:
                raise ValueError(f"canvas must be None, 'image' or a positive side in pixels, got {canvas!r}")
            canvas = int(canvas)
        self.canvas: int | str | None = canvas
        self.mark_once = bool(o["mark_once"])
        self.canvas_sigma = None if o["canvas_sigma"] is None else float(o["canvas_sigma"])
        self.kernel_window = None if o["kernel_window"] is None else float(o["kernel_window"])
        if self.canvas_sigma is not None and not self.canvas_sigma > 0:
            raise ValueError(f"canvas_sigma must be positive, got {self.canvas_sigma}")
        if self.kernel_window is not None and not self.kernel_window > 0:
            raise ValueError(f"kernel_window must be positive, got {self.kernel_window}")
        if o["quantise"] not in ("after_resize", "before_resize"):
            raise ValueError(f"quantise must be 'after_resize' or 'before_resize', got {o['quantise']!r}")
        self.quantise = str(o["quantise"])
        if o["resize"] not in ("area", "bilinear"):
            raise ValueError(f"resize must be 'area' or 'bilinear', got {o['resize']!r}")
        self.resize = str(o["resize"])
        if self.canvas is None:
            needs = [k for k in _CANVAS_OPTIONS[1:] if getattr(self, k) != _RENDERING_DEFAULTS[k]]
            if needs:
                raise ValueError(f"rendering option(s) {needs} need a canvas (canvas='image' or a side in pixels)")
        if self.mark_once and self.weight != "count":
            raise ValueError("mark_once counts each marked pixel once; it needs weight='count'")

    def params(self) -> dict[str, Any]:
        """Parameters that change the result (cache keys), with ``preset`` when one is set;
        the canvas options are left out while at their defaults (ours)."""
        p = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        for k in _CANVAS_OPTIONS:
            if p.get(k) == _RENDERING_DEFAULTS[k]:
                p.pop(k, None)
        if p.get("preset") is None:
            p.pop("preset", None)
        return p

    def _canvas_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        if isinstance(self.canvas, int):
            return (self.canvas, self.canvas)
        return shape

    def _coarse(self, record: GazeRecord, fixations: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, bool]:
        """``grid`` map of some of a record's fixations, and whether it has mass inside the image.

        Ours: the sum-1 ``"area"`` heatmap. On a canvas: the canvas map resized, or with
        ``quantise="before_resize"`` its 8-bit levels resized and rounded.
        """
        shape = record_shape(record, self.image_size)
        if self.canvas is None:
            s = resolve_sigma(self.sigma, self.sigma_deg, record.pixels_per_degree, shape, self.sigma_frac)
            heat = gaze_heatmap(fixations, shape, sigma=s, weight=self.weight, out_shape=grid, mode="area")
            return heat.astype(np.float64), bool(heat.sum() > 0)
        cshape = self._canvas_shape(shape)
        window = None
        if self.kernel_window is not None:
            window = max(1, int(np.floor(self.kernel_window * cshape[0] + 1e-9)))  # 1e-9: 0.1 * 510 is 51
            sig: float | tuple[float, float] = window / 6.0
        elif self.canvas_sigma is not None:
            sig = self.canvas_sigma
        else:
            s = resolve_sigma(self.sigma, self.sigma_deg, record.pixels_per_degree, shape, self.sigma_frac)
            sig = (s * cshape[0] / shape[0], s * cshape[1] / shape[1])
        heat = canvas_heatmap(fixations, shape, cshape, sigma=sig, window=window, weight=self.weight, mark_once=self.mark_once)
        mass = bool(heat.max(initial=0.0) > 0)
        before = self.quantise == "before_resize"
        if before:
            heat = quantise_8bit(heat, rounding="floor")
        coarse = resize_area(heat, grid) if self.resize == "area" else resize_bilinear(heat, grid)
        if before:  # an 8-bit image stays 8-bit: half up (1e-9: exact halves, whatever the float error)
            coarse = np.floor(coarse + 0.5 + 1e-9)
        return coarse, mass

    def _levels(self, record: GazeRecord, fixations: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """8-bit levels of :meth:`_coarse` (what the moment features are taken on)."""
        coarse, _ = self._coarse(record, fixations, grid)
        return coarse if self.quantise == "before_resize" else quantise_8bit(coarse)

    def _heatmaps(self, records: Sequence[GazeRecord], grid: tuple[int, int]) -> np.ndarray:
        """``(N, *grid)`` float32 maps of the records (:meth:`_coarse`)."""
        return self._heatmaps_mass(records, grid)[0]

    def _heatmaps_mass(self, records: Sequence[GazeRecord], grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """``(N, *grid)`` float32 maps of the records and ``(N,)`` whether each has mass in the image."""
        out = np.zeros((len(records), grid[0], grid[1]), dtype=np.float32)
        mass = np.zeros(len(records), dtype=bool)
        for i, r in enumerate(records):
            out[i], mass[i] = self._coarse(r, r.fixations, grid)
        return out, mass
