"""Image and file I/O: X-ray loading (MONAI transforms), DICOM writing and atomic writes.

Names are imported lazily so that light users (the study generator, the CLI's help) do
not pay for importing MONAI and torch.
"""

from gazerad._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "SUPPORTED_SUFFIXES": "xray",
        "LoadXRay": "xray",
        "LoadXRayd": "xray",
        "detect_format": "xray",
        "read_xray": "xray",
        "write_dicom_xray": "dicom",
        "atomic_path": "atomic",
        "atomic_write_bytes": "atomic",
        "atomic_write_text": "atomic",
        "atomic_write_json": "atomic",
        "json_safe": "atomic",
    },
)
