"""One sub-command: its name, one-line help, flags and body (``gazerad <name> ...``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command"]


@dataclass(frozen=True)
class Command:
    """A ``gazerad`` sub-command.

    Attributes:
        name: the sub-command, e.g. ``train-kacl``.
        help: one line for ``gazerad --help`` (and the sub-command's description).
        add_arguments: adds the flags to the sub-command's parser; called only when that
            sub-command is parsed (or the whole parser is built), so it may import its
            settings class and the libraries the flags need.
        run: the body; returns the exit status.
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
