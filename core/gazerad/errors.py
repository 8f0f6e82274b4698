"""Exceptions raised by GazeRad for bad user input.

Every error raised for a file names the file and the problem, so a user reading a
log line knows what to fix without a traceback from a third-party library.
"""

from __future__ import annotations

import os

__all__ = ["GazeRadError", "InputError", "XRayReadError", "MissingDecoderError"]


class GazeRadError(Exception):
    """Base class of all GazeRad errors."""


class InputError(GazeRadError, ValueError):
    """A user-supplied file or value is invalid.

    Args:
        path: the offending file (or ``None`` when the input is not a file).
        problem: what is wrong, in words.
        row: 1-based data row of a table, when the problem is in one row.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str, row: int | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        self.row = row
        where = self.path or "<input>"
        if row is not None:
            where = f"{where} (row {row})"
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple:
        # rebuilt from its fields, so the error crosses process pools (the default pickling
        # would call __init__ with the message alone)
        return (self.__class__, (self.path, self.problem, self.row))


class XRayReadError(InputError):
    """An X-ray image file cannot be read or is not a single-channel radiograph."""


class MissingDecoderError(XRayReadError):
    """A compressed DICOM needs a decoder package that is not installed."""
