"""A small NRRD reader (header + raw/gzip data) in plain numpy.

Reads what the GazeRad server writes with SimpleITK: 2-D or 3-D scalar images, ``float``
and the integer types, ``raw`` or ``gzip`` encoding, little or big endian, attached data,
with ``space directions`` / ``space origin`` (``space`` absent, as ITK writes 2-D images, or
``left-posterior-superior`` / ``right-anterior-superior``). Detached data files, ``ascii``,
``hex`` and ``bzip2`` encodings are refused with a clear error.

The result is the array in numpy order (``(H, W)`` for 2-D, ``(D, H, W)`` for 3-D, as
``SimpleITK.GetArrayFromImage`` gives it) and a :class:`Geometry` with ITK's spacing,
origin and direction (direction column *i* = the unit vector of image axis *i*).
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass
from typing import Dict, List, Tuple, Union

import numpy as np

__all__ = ["NrrdError", "Geometry", "read_nrrd", "parse_header"]

_TYPES = {
    "signed char": "i1",
    "int8": "i1",
    "int8_t": "i1",
    "uchar": "u1",
    "unsigned char": "u1",
    "uint8": "u1",
    "uint8_t": "u1",
    "short": "i2",
    "short int": "i2",
    "signed short": "i2",
    "signed short int": "i2",
    "int16": "i2",
    "int16_t": "i2",
    "ushort": "u2",
    "unsigned short": "u2",
    "unsigned short int": "u2",
    "uint16": "u2",
    "uint16_t": "u2",
    "int": "i4",
    "signed int": "i4",
    "int32": "i4",
    "int32_t": "i4",
    "uint": "u4",
    "unsigned int": "u4",
    "uint32": "u4",
    "uint32_t": "u4",
    "longlong": "i8",
    "long long": "i8",
    "long long int": "i8",
    "signed long long": "i8",
    "signed long long int": "i8",
    "int64": "i8",
    "int64_t": "i8",
    "ulonglong": "u8",
    "unsigned long long": "u8",
    "unsigned long long int": "u8",
    "uint64": "u8",
    "uint64_t": "u8",
    "float": "f4",
    "double": "f8",
}
# NRRD space names -> sign flips from that space to LPS (per axis)
_SPACES = {
    "left-posterior-superior": (1, 1, 1),
    "lps": (1, 1, 1),
    "right-anterior-superior": (-1, -1, 1),
    "ras": (-1, -1, 1),
    "left-anterior-superior": (1, -1, 1),
    "las": (1, -1, 1),
}


class NrrdError(ValueError):
    """The bytes are not an NRRD file this reader understands; the message says why."""


@dataclass
class Geometry:
    """Image geometry in ITK's terms (LPS physical space for 2-D images, as ITK writes them).

    ``spacing``, ``origin``: one value per image axis (x first); ``direction``: the
    ``dim x dim`` matrix, row-major, column *i* = unit vector of image axis *i*.
    """

    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]
    size: Tuple[int, ...]

    @property
    def dimension(self) -> int:
        return len(self.size)

    def direction_matrix(self) -> np.ndarray:
        d = self.dimension
        return np.asarray(self.direction, dtype=float).reshape(d, d)

    def ijk_to_lps(self) -> np.ndarray:
        """4x4 homogeneous matrix from voxel index ``(i, j, k)`` to LPS mm (2-D: k stays 0 mm)."""
        d = self.dimension
        m = np.eye(4)
        m[:d, :d] = self.direction_matrix() * np.asarray(self.spacing, dtype=float)[None, :]
        m[:d, 3] = self.origin
        return m

    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix from voxel index to Slicer's RAS world: LPS with x and y negated."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.ijk_to_lps()

    def as_dict(self) -> Dict[str, list]:
        """The server's ``geometry`` JSON layout: ``{size, spacing, origin, direction}``."""
        return {"size": list(self.size), "spacing": list(self.spacing), "origin": list(self.origin), "direction": list(self.direction)}

    @classmethod
    def from_dict(cls, g: Dict[str, list]) -> "Geometry":
        size = tuple(int(v) for v in g["size"])
        d = len(size)
        direction = tuple(float(v) for v in g.get("direction") or np.eye(d).ravel())
        return cls(
            spacing=tuple(float(v) for v in g.get("spacing") or [1.0] * d),
            origin=tuple(float(v) for v in g.get("origin") or [0.0] * d),
            direction=direction,
            size=size,
        )


def _vector(text: str) -> Union[List[float], None]:
    text = text.strip()
    if text == "none":
        return None
    if not (text.startswith("(") and text.endswith(")")):
        raise NrrdError(f"bad NRRD vector {text!r}")
    return [float(v) for v in text[1:-1].split(",")]


def parse_header(data: bytes) -> Tuple[Dict[str, str], int]:
    """The header fields (lower-case keys) and the offset where the data starts."""
    if not data.startswith(b"NRRD000"):
        head = data[:16]
        raise NrrdError(f"not an NRRD file (it starts with {head!r}, an NRRD file starts with b'NRRD000')")
    fields: Dict[str, str] = {}
    pos = 0
    first = True
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise NrrdError("NRRD header has no blank line before the data (truncated file?)")
        line = data[pos:end].decode("latin-1").rstrip("\r")
        pos = end + 1
        if first:
            first = False
            continue
        if line == "":
            return fields, pos
        if line.startswith("#"):
            continue
        if ":=" in line:  # key/value pairs: kept under their own key
            k, v = line.split(":=", 1)
            fields["kv:" + k] = v
            continue
        if ":" not in line:
            raise NrrdError(f"bad NRRD header line {line!r}")
        k, v = line.split(":", 1)
        fields[k.strip().lower()] = v.strip()


def read_nrrd(source: Union[bytes, bytearray, str]) -> Tuple[np.ndarray, Geometry, Dict[str, str]]:
    """Read an NRRD file (bytes or a path).

    Returns:
        ``(array, geometry, header)``: the array in numpy order (``(H, W)`` for 2-D), its
        :class:`Geometry` (ITK convention, LPS) and the raw header fields.

    Raises:
        NrrdError: with what is wrong (not NRRD, unsupported encoding, truncated data, ...).
    """
    if isinstance(source, str):
        with open(source, "rb") as fh:
            data = fh.read()
    else:
        data = bytes(source)
    h, start = parse_header(data)
    for key in ("type", "dimension", "sizes", "encoding"):
        if key not in h:
            raise NrrdError(f"NRRD header lacks the required field {key!r}")
    if "data file" in h or "datafile" in h:
        raise NrrdError("detached NRRD data files are not supported (the server sends attached data)")
    t = h["type"].lower()
    if t not in _TYPES:
        raise NrrdError(f"unsupported NRRD type {h['type']!r}")
    dim = int(h["dimension"])
    sizes = [int(v) for v in h["sizes"].split()]
    if len(sizes) != dim:
        raise NrrdError(f"NRRD sizes {sizes} do not match dimension {dim}")
    enc = h["encoding"].lower()
    payload = data[start:]
    skip = int(h.get("byte skip", h.get("byteskip", "0")))
    if enc in ("gzip", "gz"):
        try:
            payload = gzip.decompress(payload)
        except (OSError, EOFError, zlib.error) as exc:
            raise NrrdError(f"NRRD gzip data is corrupt: {exc}") from None
    elif enc != "raw":
        raise NrrdError(f"unsupported NRRD encoding {h['encoding']!r} (raw and gzip are supported)")
    endian = "<" if h.get("endian", "little").lower() == "little" else ">"
    dtype = np.dtype(endian + _TYPES[t])
    n = int(np.prod(sizes))
    need = n * dtype.itemsize
    if skip == -1:
        skip = len(payload) - need
    if len(payload) - skip < need:
        raise NrrdError(f"NRRD data is truncated: {len(payload) - skip} bytes for {sizes} x {dtype.itemsize} = {need}")
    arr = np.frombuffer(payload, dtype=dtype, count=n, offset=skip).astype(dtype.newbyteorder("="))
    arr = arr.reshape(sizes[::-1])

    # geometry: space directions (one vector per axis, "none" for non-spatial axes)
    sdim = int(h.get("space dimension", dim))
    space = h.get("space", "").lower()
    flip = np.ones(max(sdim, 3))
    if space:
        if space not in _SPACES:
            raise NrrdError(f"unsupported NRRD space {h['space']!r}")
        flip[:3] = _SPACES[space]
    flip = flip[:sdim]
    if "space directions" in h:
        vecs = re.findall(r"\([^)]*\)|none", h["space directions"])
        vecs = [_vector(v) for v in vecs]
        if len(vecs) != dim or any(v is None for v in vecs):
            raise NrrdError(f"NRRD space directions {h['space directions']!r}: one spatial vector per axis expected")
        m = np.asarray(vecs, dtype=float).T * flip[:, None]  # column i = axis i, in LPS
    elif "spacings" in h:
        m = np.diag([float(v) for v in h["spacings"].split()])
    else:
        m = np.eye(dim)
    if m.shape != (dim, dim):
        raise NrrdError(f"NRRD space dimension {sdim} differs from the image dimension {dim}: not supported")
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing == 0):
        raise NrrdError("NRRD space directions hold a zero vector")
    direction = m / spacing[None, :]
    origin = np.zeros(dim)
    if "space origin" in h:
        o = _vector(h["space origin"])
        if o is None or len(o) != dim:
            raise NrrdError(f"NRRD space origin {h['space origin']!r} does not have {dim} values")
        origin = np.asarray(o) * flip
    geom = Geometry(
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in direction.ravel()),
        size=tuple(sizes),
    )
    return arr, geom, h
