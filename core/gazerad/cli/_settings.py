"""A command's flags from its settings dataclass (:class:`gazerad.engine.config.RunConfig`).

:func:`add_settings` gives every field a flag (:func:`gazerad.engine.config.field_specs`:
``image_size`` -> ``--image-size``, type from the annotation, help from the field's
metadata with the default shown), ``--config FILE`` and, for a ``progress`` setting,
``--quiet``. Every flag defaults to ``None`` ("not given"), so a config file's values
stand unless a flag overrides them. :func:`settings_from_args` turns the parsed flags
(and the file) into the dataclass.

This module is imported by ``gazerad --help``: nothing heavy at import time.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gazerad.engine.config import FieldSpec, RunConfig

__all__ = ["add_settings", "settings_from_args", "describe_default"]


def describe_default(spec: FieldSpec) -> str:
    """``" (default 128)"`` for the help text; empty when there is none to show or the help
    already speaks of its default."""
    d = spec.default
    if spec.required or d is None or "default" in spec.help:
        return ""
    if isinstance(d, (tuple, list)):
        text = " ".join(map(str, d))
    elif isinstance(d, bool):
        text = "true" if d else "false"
    else:
        text = str(d)
    return f" (default {text})"


def _converter(spec: FieldSpec) -> Any:
    from gazerad.engine.config import parse_flag_value

    def convert(text: str) -> Any:
        try:
            return parse_flag_value(spec, text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {spec.type.__name__} value: {text!r}") from None

    convert.__name__ = spec.type.__name__  # argparse names the type in its messages
    return convert


def add_settings(
    parser: argparse.ArgumentParser,
    cls: type[RunConfig],
    section: str,
    aliases: Mapping[str, Iterable[str]] | None = None,
    choices: Mapping[str, Iterable[Any]] | None = None,
) -> None:
    """Add ``--config FILE`` and one flag per field of ``cls`` to ``parser``.

    Args:
        parser: the sub-command's parser.
        cls: its settings dataclass.
        section: the config file's section holding the keys (they may also be at top level).
        aliases: field -> further (old) option strings, accepted but not shown in ``--help``.
        choices: field -> allowed values, for fields that declare none themselves
            (:func:`~gazerad.engine.config.default_choices` covers ``precision`` and ``backbone``).
    """
    from gazerad.engine.config import default_choices, field_specs

    allowed = {**default_choices(), **{k: tuple(v) for k, v in (choices or {}).items()}}
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help=f"JSON/YAML config, MONAI bundle style (the keys below, at top level or under '{section}'); flags override it",
    )
    group = parser.add_argument_group(f"settings ({cls.__name__}; a config file's keys are these names: --image-size is image_size)")
    specs = field_specs(cls)
    for spec in specs:
        helptext = (spec.help + describe_default(spec)).replace("%", "%%")
        if spec.required:
            helptext += " (required unless --config gives it)"
        kw: dict[str, Any] = {"dest": spec.name, "default": None}
        if spec.is_flag:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _converter(spec)
            if spec.nargs is not None:
                kw["nargs"] = spec.nargs
            if spec.type in (int, float):
                kw["metavar"] = "N" if spec.type is int else "X"
            opts = spec.choices if spec.choices is not None else allowed.get(spec.name)
            if spec.bool_or_text:
                kw["metavar"] = "{auto,true,false}" if opts is None else "{" + ",".join(str(o).lower() for o in opts) + "}"
            elif opts is not None:
                kw["choices"] = opts
        group.add_argument(spec.flag, help=helptext, **kw)
        for alias in (aliases or {}).get(spec.name, ()):
            group.add_argument(alias, **{**kw, "help": argparse.SUPPRESS})
    unknown = set(aliases or {}) - {s.name for s in specs}
    if unknown:
        raise ValueError(f"aliases for fields {sorted(unknown)} that {cls.__name__} does not have")
    if any(s.name == "progress" and s.is_flag for s in specs):
        group.add_argument("--quiet", dest="progress", action="store_const", const=False, default=None, help="no progress output (same as --no-progress)")
    parser.set_defaults(settings_class=cls, settings_section=section)


def settings_from_args(args: argparse.Namespace) -> RunConfig:
    """The settings dataclass of a command from its flags, over ``--config FILE`` when given.

    Raises:
        ValueError: a required setting is neither a flag nor in the file, or a value is invalid
            (the dataclass's own checks).
    """
    from gazerad.engine.config import field_specs, load_config

    cls: type[RunConfig] = args.settings_class
    flags: dict[str, Any] = {}
    for spec in field_specs(cls):
        v = getattr(args, spec.name, None)
        if v is not None:
            flags[spec.name] = tuple(v) if isinstance(v, list) else v
    if args.config:
        return load_config(cls, args.config, args.settings_section, flags)
    missing = [s.flag for s in field_specs(cls) if s.required and s.name not in flags]
    if missing:
        raise ValueError(" and ".join(missing) + " required (or --config FILE)")
    return cls(**flags)  # type: ignore[call-arg]
