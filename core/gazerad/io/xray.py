"""Loading 2-D radiographs as float32 single-channel images with metadata.

Supported: PNG and JPEG (8 and 16 bit), DICOM CR/DX/MG (and any single-frame grayscale
DICOM), NIfTI (``.nii``, ``.nii.gz``) and NRRD (``.nrrd``, ``.nhdr``) holding a 2-D image.

Intensity convention: higher values mean more attenuation (bone bright), whatever the
file's photometric interpretation: ``MONOCHROME1`` DICOMs are inverted over their value
range. Values stay in the file's units (stored values after the DICOM modality LUT, i.e.
rescale slope/intercept); a VOI LUT or a window is applied only when asked.

Geometry convention: see :mod:`gazerad.coords`. The returned array is ``(H, W)`` (or
``(1, H, W)`` from the transforms) with rows as displayed; nothing is transposed or
flipped. For NIfTI/NRRD the first index axis of the file (ITK's ``i``/``x``) is the column.

Metadata keys (``dict`` from :func:`read_xray`, ``MetaTensor.meta`` from the transforms):
``filename_or_obj`` (source path), ``format``, ``original_height``, ``original_width``,
``spatial_shape`` (``(H, W)``), ``spacing`` (``(row_mm, col_mm)`` or ``None``),
``photometric`` (``MONOCHROME1``/``MONOCHROME2``, ``MONOCHROME2`` for non-DICOM),
``bits_stored``, ``modality`` (DICOM only), ``voi_applied``, and MONAI's ``affine``.
In the transforms' ``MetaTensor.meta`` every key is always there and none is ``None``
(:data:`TRANSFORM_META_DEFAULTS`: spacing ``(nan, nan)`` when unknown, ``voi_applied``
``"none"``, empty ``modality`` / ``converted_from`` / ``spacing_note``), so a MONAI
``DataLoader`` batches any mix of PNG, DICOM, NIfTI and NRRD files.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from gazerad.errors import MissingDecoderError, XRayReadError
from gazerad.io.limits import MAX_PIXELS  # re-exported: gazerad.io.xray.MAX_PIXELS

__all__ = ["SUPPORTED_SUFFIXES", "MAX_PIXELS", "TRANSFORM_META_DEFAULTS", "read_xray", "detect_format", "LoadXRay", "LoadXRayd"]


SUPPORTED_SUFFIXES: dict[str, str] = {
    ".png": "png",
    ".jpg": "jpeg",
    ".jpeg": "jpeg",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
}

# Compressed DICOM transfer syntaxes -> the packages that can decode them.
_DECODERS: dict[str, tuple[str, str]] = {
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline", "pylibjpeg + pylibjpeg-libjpeg, python-gdcm or Pillow"),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended", "pylibjpeg + pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless", "pylibjpeg + pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless SV1", "pylibjpeg + pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", "pylibjpeg + pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-lossless", "pylibjpeg + pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", "pylibjpeg + pylibjpeg-openjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", "pylibjpeg + pylibjpeg-openjpeg or python-gdcm"),
    "1.2.840.10008.1.2.5": ("RLE Lossless", "numpy (built in)"),
}
_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")


def detect_format(path: str | os.PathLike) -> str:
    """Return ``png``/``jpeg``/``dicom``/``nifti``/``nrrd`` for a path, by suffix.

    A file without a suffix is accepted as DICOM when it carries the ``DICM`` preamble.

    Raises:
        XRayReadError: unknown suffix.
    """
    p = Path(path)
    name = p.name.lower()
    for sfx in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(sfx):
            return SUPPORTED_SUFFIXES[sfx]
    if p.suffix == "" and p.is_file():
        with open(p, "rb") as fh:
            head = fh.read(132)
        if head[128:132] == b"DICM":
            return "dicom"
    raise XRayReadError(p, f"unknown image file type {p.suffix or '(no suffix)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}")


def read_xray(
    path: str | os.PathLike,
    voi: str | None = None,
    window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a 2-D radiograph.

    Args:
        path: image file.
        voi: ``None`` (default) keeps modality values; ``"lut"`` applies the DICOM VOI LUT
            (VOI LUT Sequence, else Window Center/Width, else nothing) and is ignored for
            non-DICOM files.
        window: ``(center, width)`` linear window applied after the modality LUT (and
            before inversion of MONOCHROME1), mapping to ``[0, 1]``; overrides ``voi``.

    Returns:
        ``(image, meta)``: ``image`` is float32 ``(H, W)``, bright = dense; ``meta`` as in the
        module docstring.

    Raises:
        XRayReadError: the file is missing, empty, truncated, corrupt, not grayscale,
            not 2-D, or of an unknown type (the message names the file and the problem).
        MissingDecoderError: a compressed DICOM whose decoder is not installed.
    """
    p = Path(path)
    if voi not in (None, "lut"):
        raise ValueError(f"voi must be None or 'lut', got {voi!r}")
    if not p.exists():
        raise XRayReadError(p, "file does not exist")
    if p.is_dir():
        raise XRayReadError(p, "is a directory, not an image file")
    if p.stat().st_size == 0:
        raise XRayReadError(p, "file is empty (0 bytes)")
    fmt = detect_format(p)
    reader = {"png": _read_pil, "jpeg": _read_pil, "dicom": _read_dicom, "nifti": _read_itk, "nrrd": _read_itk}[fmt]
    image, meta = reader(p, voi=voi, window=window)
    if image.ndim != 2:
        raise XRayReadError(p, f"expected a 2-D image, got shape {tuple(image.shape)}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise XRayReadError(p, f"image has no pixels (shape {tuple(image.shape)})")
    image = np.ascontiguousarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        raise XRayReadError(p, "image contains NaN or infinite values")
    if window is not None and fmt != "dicom":
        image = _apply_window(image, window)
        meta["voi_applied"] = "window"
    meta.setdefault("voi_applied", None)
    meta.update(
        filename_or_obj=str(p),
        format=fmt,
        original_height=int(image.shape[0]),
        original_width=int(image.shape[1]),
        spatial_shape=(int(image.shape[0]), int(image.shape[1])),
    )
    meta.setdefault("photometric", "MONOCHROME2")
    meta.setdefault("spacing", None)
    return image, meta


def _apply_window(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    center, width = (float(v) for v in window)
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise ValueError(f"window must be a finite centre and a finite width > 0, got ({center}, {width})")
    lo = center - width / 2.0
    return np.clip((image - lo) / width, 0.0, 1.0).astype(np.float32)


def _check_pixels(p: Path, shape: tuple[int, ...]) -> None:
    """Refuse a header that declares more than :data:`MAX_PIXELS` pixels (or a negative size)."""
    n = 1
    for d in shape:
        if int(d) < 0:
            raise XRayReadError(p, f"header declares a negative size {tuple(shape)}")
        n *= int(d)
    if n > MAX_PIXELS:
        dims = " x ".join(str(int(d)) for d in shape)
        raise XRayReadError(p, f"header declares {dims} = {n} pixels, over the limit of {MAX_PIXELS} (gazerad.io.xray.MAX_PIXELS)")


def _read_pil(p: Path, voi: str | None, window: Any) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            _check_pixels(p, im.size)
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr, bits = np.array(im).astype(np.uint16), 16
            elif mode == "I":
                arr, bits = np.array(im), 16
            elif mode in ("L", "P", "1"):
                arr, bits = np.array(im.convert("L")), 8
            elif mode in ("LA", "RGB", "RGBA", "CMYK", "YCbCr"):
                # Grayscale X-rays are often stored as RGB: ITU-R 601-2 luma.
                arr, bits = np.array(im.convert("L")), 8
            elif mode == "F":
                arr, bits = np.array(im), 32
            else:
                raise XRayReadError(p, f"unsupported image mode {mode!r}")
    except XRayReadError:
        raise
    except UnidentifiedImageError:
        raise XRayReadError(p, "not a readable PNG/JPEG image (corrupt or wrong file type)") from None
    except Image.DecompressionBombError as exc:  # Pillow's own, stricter-than-ours check at open
        raise XRayReadError(p, f"header declares too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise XRayReadError(p, f"corrupt or truncated image: {exc}") from None
    meta = {"bits_stored": bits, "photometric": "MONOCHROME2"}
    if mode in ("LA", "RGB", "RGBA", "CMYK", "YCbCr", "P"):
        meta["converted_from"] = mode  # said, not hidden: colour/alpha PNGs (some of NIH's) became grey
    return arr, meta


def _read_itk(p: Path, voi: str | None, window: Any) -> tuple[np.ndarray, dict[str, Any]]:
    import SimpleITK as sitk

    try:
        header = sitk.ImageFileReader()
        header.SetFileName(str(p))
        header.ReadImageInformation()
        _check_pixels(p, header.GetSize())
        if p.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_data(p)
        img = header.Execute()  # the same reader: the header is not parsed twice
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((ln for ln in first if "ERROR" in ln or "Exception" in ln), first[-1] if first else "")
        raise XRayReadError(p, f"cannot read as {p.suffix or 'ITK'} image ({detail.strip()[:200]})") from None
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise XRayReadError(p, f"expected one channel, got {img.GetNumberOfComponentsPerPixel()} components per pixel")
    arr = sitk.GetArrayFromImage(img)  # index order reversed: [.., y, x]
    size = img.GetSize()
    spacing = img.GetSpacing()
    if arr.ndim == 3:
        if arr.shape[0] != 1:
            raise XRayReadError(p, f"expected a 2-D image, got a volume of size {size}")
        arr = arr[0]
    elif arr.ndim != 2:
        raise XRayReadError(p, f"expected a 2-D image, got size {size}")
    bits = int(arr.dtype.itemsize * 8) if arr.dtype.kind in "iu" else None
    return arr, {"spacing": (float(spacing[1]), float(spacing[0])), "bits_stored": bits}


def _check_nifti_data(p: Path) -> None:
    """ITK fills a NIfTI file's missing voxels with zeros; nibabel reads the data block and
    says when it is short (a truncated file, or an offset past its end)."""
    import nibabel as nib

    try:
        img = nib.load(str(p))
        np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises assorted errors on broken files
        raise XRayReadError(p, f"NIfTI data block is truncated or unreadable ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None


def _read_dicom(p: Path, voi: str | None, window: Any) -> tuple[np.ndarray, dict[str, Any]]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(p))
    except InvalidDicomError as exc:
        raise XRayReadError(p, f"not a valid DICOM file ({exc})") from None
    except Exception as exc:  # truncated headers raise assorted errors in pydicom
        raise XRayReadError(p, f"corrupt DICOM header ({type(exc).__name__}: {exc})") from None
    if "PixelData" not in ds:
        raise XRayReadError(p, "DICOM file has no PixelData element")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    spp = int(ds.get("SamplesPerPixel", 1))
    if photometric not in _GRAYSCALE or spp != 1:
        raise XRayReadError(
            p,
            f"unsupported photometric interpretation {photometric or '(missing)'!r} with {spp} sample(s) per pixel; "
            "radiographs must be MONOCHROME1 or MONOCHROME2",
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise XRayReadError(p, f"multi-frame DICOM ({frames} frames) is not a single radiograph")
    _check_pixels(p, (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)))
    modality = str(ds.get("Modality", "")).strip().upper() or None
    if modality not in (None, "CR", "DX", "MG", "RG", "DR", "PX", "IO", "OT"):
        warnings.warn(f"{p}: modality {modality} is not a projection radiograph; loading anyway", stacklevel=3)
    tsuid = str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    try:
        stored = ds.pixel_array
    except (RuntimeError, NotImplementedError) as exc:
        msg = str(exc)
        if tsuid in _DECODERS and ("missing" in msg.lower() or "handler" in msg.lower() or "decod" in msg.lower()):
            name, pkgs = _DECODERS[tsuid]
            raise MissingDecoderError(
                p,
                f"compressed with {name} (transfer syntax {tsuid}) and no installed decoder can read it; "
                f"install {pkgs} (e.g. pip install 'gazerad[dicom-codecs]')",
            ) from None
        raise XRayReadError(p, f"cannot decode pixel data ({msg.splitlines()[0] if msg else type(exc).__name__})") from None
    except Exception as exc:
        raise XRayReadError(p, f"corrupt or truncated pixel data ({type(exc).__name__}: {exc})") from None
    if stored.ndim != 2:
        raise XRayReadError(p, f"expected 2-D pixel data, got shape {stored.shape}")

    from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut

    bits_stored = int(ds.get("BitsStored", stored.dtype.itemsize * 8))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    lo_s, hi_s = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1) - 1) if signed else (0, 2**bits_stored - 1)
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    # the modality-value range that the stored range maps to (for MONOCHROME1 inversion)
    ends = np.asarray(apply_modality_lut(np.array([lo_s, hi_s], dtype=stored.dtype), ds), dtype=np.float64)
    lo, hi = float(ends.min()), float(ends.max())
    voi_applied = None
    if window is not None:
        values = _apply_window(values, window).astype(np.float64)
        lo, hi, voi_applied = 0.0, 1.0, "window"
    elif voi == "lut" and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        if "VOILUTSequence" in ds:
            item = ds.VOILUTSequence[0]
            nbits = int(item.LUTDescriptor[2])
            lo, hi = 0.0, float(2**nbits - 1)
        else:
            lo, hi = _voi_window_range(ds)
        # a VOI LUT Sequence indexes by value: give it integers when the modality values are integral
        lut_in = values.astype(np.int64) if np.array_equal(values, np.round(values)) else values
        values = np.asarray(apply_voi_lut(lut_in, ds), dtype=np.float64)
        voi_applied = "lut"
    if photometric == "MONOCHROME1":
        values = (lo + hi) - values
    spacing = _usable_spacing(ds)
    meta: dict[str, Any] = {
        "photometric": photometric,
        "bits_stored": bits_stored,
        "modality": modality,
        "voi_applied": voi_applied,
        "transfer_syntax": tsuid or None,
        "spacing": spacing,
    }
    if spacing is None:
        meta["spacing_note"] = "unknown: the file has no PixelSpacing / ImagerPixelSpacing above 0"
    return values, meta


def _usable_spacing(ds: Any) -> tuple[float, float] | None:
    """``(row_mm, col_mm)`` from PixelSpacing, else ImagerPixelSpacing; ``None`` when neither
    holds two finite values above 0 (real CR files carry ``0\\0``)."""
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(key)
        try:
            sp = (float(v[0]), float(v[1])) if v is not None and len(v) >= 2 else None
        except (TypeError, ValueError):
            sp = None
        if sp is not None and all(np.isfinite(x) and x > 0 for x in sp):
            return sp
    return None


def dicom_spacing(path: str | os.PathLike) -> tuple[float, float] | None:
    """The usable pixel spacing of a DICOM file (header only), ``None`` when unknown."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
    except Exception:  # noqa: BLE001 - unreadable headers mean unknown spacing here; read_xray names the error
        return None
    return _usable_spacing(ds)


def _voi_window_range(ds: Any) -> tuple[float, float]:
    """Output range of a DICOM Window Center/Width VOI (pydicom keeps the stored bit range)."""
    bits = int(ds.get("BitsStored", 16))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


# what the transforms' MetaTensor.meta holds where read_xray has None or no such key
TRANSFORM_META_DEFAULTS: dict[str, Any] = {
    "spacing": (float("nan"), float("nan")),
    "voi_applied": "none",
    "modality": "",
    "converted_from": "",
    "spacing_note": "",
}


def _to_metatensor(image: np.ndarray, meta: dict[str, Any]):
    import torch
    from monai.data import MetaTensor

    affine = np.eye(3)
    if meta.get("spacing"):
        affine[0, 0], affine[1, 1] = meta["spacing"]
    # one key set with no None in it, so that MONAI's collate batches any mix of formats
    out_meta = {**TRANSFORM_META_DEFAULTS, **{k: v for k, v in meta.items() if v is not None}}
    out_meta["original_channel_dim"] = "no_channel"
    return MetaTensor(torch.from_numpy(image[None]), affine=torch.as_tensor(affine, dtype=torch.float64), meta=out_meta)


class LoadXRay(Transform):
    """MONAI-style transform: path -> float32 ``MetaTensor`` of shape ``(1, H, W)``.

    Usable in ``monai.transforms.Compose``; metadata in ``.meta`` (see module docstring).

    Args:
        voi: ``None`` or ``"lut"`` (see :func:`read_xray`).
        window: optional ``(center, width)`` window to ``[0, 1]``.
        image_only: return only the image (default); otherwise ``(image, meta)``.
    """

    def __init__(self, voi: str | None = None, window: tuple[float, float] | None = None, image_only: bool = True):
        self.voi = voi
        self.window = window
        self.image_only = image_only

    def __call__(self, path: str | os.PathLike):
        image, meta = read_xray(path, voi=self.voi, window=self.window)
        t = _to_metatensor(image, meta)
        return t if self.image_only else (t, t.meta)


class LoadXRayd(MapTransform):
    """Dictionary variant of :class:`LoadXRay`: replaces each path under ``keys`` by its image.

    Args:
        keys: keys holding image paths.
        voi, window: see :class:`LoadXRay`.
        allow_missing_keys: skip absent keys instead of raising ``KeyError``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        voi: str | None = None,
        window: tuple[float, float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadXRay(voi=voi, window=window)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
