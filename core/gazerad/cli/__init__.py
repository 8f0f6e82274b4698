"""The ``gazerad`` command line: ``gazerad --help`` lists the sub-commands.

One module per command group, each a tuple ``COMMANDS`` of :class:`~gazerad.cli._command.Command`:

- :mod:`gazerad.cli.data`: ``synth``, ``show``, ``info``, ``datasets``
- :mod:`gazerad.cli.gaze`: ``relation``, ``relation-merge``
- :mod:`gazerad.cli.pretrain`: ``pretrain``, ``evaluate``
- :mod:`gazerad.cli.attention`: ``train-attention``
- :mod:`gazerad.cli.kacl`: ``train-kacl``, ``evaluate-localization``
- :mod:`gazerad.cli.bundle`: ``export-bundle``
- ``serve``: :func:`gazerad.serving.launch.add_parser`

The training commands' flags come from their settings dataclasses
(:mod:`gazerad.cli._settings`): the same names as the Python API's and a config file's
keys, with ``--config FILE``. Common names: ``--data`` is the study folder and
``--image-size`` the model input side in every command (``--studies`` and ``--size`` are
still accepted where they were before; ``gazerad synth --size`` is the generated image's
side, a different thing).

Importing this package and ``gazerad --help`` stay fast: a sub-command's flags (which may
import torch and its settings class) are added only when that sub-command is parsed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from gazerad import __version__
from gazerad.cli import attention, bundle, data, gaze, kacl, pretrain
from gazerad.cli._command import Command
from gazerad.errors import GazeRadError

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS: tuple[Command, ...] = (
    *data.COMMANDS[:2],
    *gaze.COMMANDS,
    *pretrain.COMMANDS,
    *attention.COMMANDS,
    *kacl.COMMANDS,
    *bundle.COMMANDS,
    *data.COMMANDS[2:],
)


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The ``gazerad`` parser with every sub-command.

    Args:
        commands: sub-commands whose flags to add (default: all). The others are listed in
            ``--help`` but have no flags; :func:`main` passes the one it is about to run.
    """
    wanted = None if commands is None else set(commands)
    p = argparse.ArgumentParser(
        prog="gazerad",
        description="Gaze- and knowledge-guided contrastive learning for X-ray models (McGIP/GzPT, FocusContrast, KACL).",
    )
    p.add_argument("--version", action="version", version=f"gazerad {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for c in COMMANDS:
        s = sub.add_parser(c.name, help=c.help, description=c.help)
        if wanted is None or c.name in wanted:
            c.add_arguments(s)
        s.set_defaults(func=c.run)

    from gazerad.serving.launch import add_parser as add_serve

    add_serve(sub)
    serve = sub.choices["serve"]
    serve.add_argument("--data", dest="studies", default=None, help="the same as --studies")
    return p


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (the first item that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``gazerad`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Bad input (a :class:`~gazerad.errors.GazeRadError`, a missing, unreadable or misplaced
    file, an invalid value, a corrupt archive) is one line on stderr and status 2; any other
    error one line and status 1 (``GAZERAD_TRACEBACK=1``: the traceback). No traceback
    otherwise, and an output folder the failed command created is removed while empty.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(commands=[c] if (c := _command_of(argv)) else [])
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    out = getattr(args, "out", None)
    made = Path(out) if isinstance(out, str) and out and not Path(out).exists() else None
    try:
        return int(args.func(args) or 0)
    except (GazeRadError, OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        _drop_empty(made)
        print(f"gazerad {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or an input no check caught: one line unless asked for more
        _drop_empty(made)
        if os.environ.get("GAZERAD_TRACEBACK"):
            raise
        print(f"gazerad {args.command}: error: unexpected {type(exc).__name__}: {exc} (GAZERAD_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1


def _drop_empty(folder: Path | None) -> None:
    """Remove the output folder a failed command created, when it holds no file (a run that
    wrote something keeps it: a training run resumes from it)."""
    if folder is None or not folder.is_dir() or any(p.is_file() for p in folder.rglob("*")):
        return
    shutil.rmtree(folder, ignore_errors=True)
