"""Run settings as dataclasses: one definition for the Python API, config files, the CLI and the server.

A trainer's settings are one ``@dataclass`` deriving from :class:`RunConfig`; each field's
``metadata["help"]`` is its one-line description (used by ``gazerad <command> --help`` and
the server's parameter schema), ``metadata["choices"]`` its allowed values when
:func:`setting` was given ``choices``. :func:`load_config` reads a MONAI-bundle-style
JSON/YAML file into such a class.

The command-line view of a settings class is :func:`field_specs`: field ``image_size`` is
flag ``--image-size``, its type comes from the annotation (``int``, ``float``, ``str``,
``X | None``, ``tuple[X, ...]`` as several values, ``bool`` as ``--x``/``--no-x``,
``bool | str`` as ``auto``/``true``/``false``). :func:`config_argv` is the reverse, a
settings object as the flags that rebuild it (the ``torchrun`` command line of the
server's multi-process jobs); :mod:`gazerad.cli` builds the parsers from the same specs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from pathlib import Path
from typing import Any, Iterable, TypeVar, Union

from gazerad.errors import InputError

__all__ = [
    "RunConfig",
    "RuntimeSettings",
    "PRECISION_HELP",
    "setting",
    "load_config",
    "FieldSpec",
    "field_specs",
    "flag_name",
    "parse_flag_value",
    "config_argv",
    "default_choices",
]

C = TypeVar("C", bound="RunConfig")

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    choices: Iterable[Any] | None = None,  # noqa: A002
    **kw: Any,
) -> Any:
    """A dataclass field with its description: ``lr: float = setting(1e-3, "learning rate")``.

    ``choices`` (optional) are the allowed values: the CLI and the server offer and check them.
    """
    if isinstance(default, (list, dict, set)):
        value = default
        kw["default_factory"] = lambda: type(value)(value)
        default = dataclasses.MISSING
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=meta, **kw)


class RunConfig:
    """Mix-in for a trainer's settings dataclass."""

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def field_names(cls) -> list[str]:
        """The settings' names in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[C], values: dict[str, Any], source: str | os.PathLike = "config") -> C:
        """``cls(**values)`` with unknown keys and invalid values reported as :class:`InputError` on ``source``."""
        known = set(cls.field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(source, f"unknown config keys {unknown}; known: {sorted(known)}")
        specs = {sp.name: sp for sp in _specs(cls)}
        for k, v in values.items():
            if k in specs and not _fits(specs[k], v):
                raise InputError(source, f"config key {k!r} must be {_describe(specs[k])}, got {v!r:.60}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise InputError(source, str(exc)) from None


PRECISION_HELP = "auto: bf16 autocast on CPUs with native bf16, fp16 on CUDA; fp32 forces float32"


@dataclasses.dataclass(kw_only=True)
class RuntimeSettings(RunConfig):
    """The settings every trainer shares (keyword-only, listed after the trainer's own):
    seeding, device and numerics (:class:`gazerad.engine.runtime.Runtime`), progress, early stop."""

    seed: int = setting(0, "seed of every random choice (initialisation, views, batch order)")
    amp: bool = setting(True, "mixed precision; --no-amp is the same as --precision fp32")
    precision: str = setting("auto", PRECISION_HELP)
    channels_last: bool | str = setting("auto", "channels-last memory format: auto, true or false")
    device: str | None = setting(None, "cpu, cuda, cuda:1 (default: cuda when present)")
    progress: bool = setting(True, "progress output")
    max_steps: int | None = setting(None, "stop after this many optimiser steps (tests, benchmarks)")


def load_config(cls: type[C], path: str | os.PathLike, section: str, overrides: dict[str, Any] | None = None) -> C:
    """A ``cls`` from a MONAI-bundle-style JSON/YAML file.

    The file holds the keys at top level or under ``section``; MONAI's
    :class:`~monai.bundle.ConfigParser` resolves ``@`` references and ``$`` expressions.
    ``overrides`` (e.g. CLI flags) win over the file.
    """
    from monai.bundle import ConfigParser

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "config file not found")
    try:
        parser = ConfigParser(ConfigParser.load_config_file(p))
        cfg = parser.get_parsed_content(section) if section in parser.get() else parser.get_parsed_content()
    except Exception as exc:  # noqa: BLE001 - yaml/json/expression errors
        raise InputError(p, f"cannot parse config: {exc}") from None
    if not isinstance(cfg, dict):
        raise InputError(p, f"config must be a mapping of {cls.__name__} keys")
    return cls.from_dict({**cfg, **(overrides or {})}, p)


# ---------------------------------------------------------------- the command-line view


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One setting as a command-line flag and a typed server parameter.

    Attributes:
        name: the field (and config-file key), e.g. ``image_size``.
        flag: its flag, e.g. ``--image-size``.
        type: the value type of one item: ``int``, ``float``, ``str`` or ``bool``.
        optional: ``None`` is allowed (``X | None``).
        nargs: ``None`` for one value, an int for a fixed-length tuple, ``"+"`` for ``tuple[X, ...]``.
        bool_or_text: ``bool | str`` (e.g. ``channels_last``: ``auto``, ``true`` or ``false``).
        default: the default, :data:`dataclasses.MISSING` for a required setting.
        help: the description from ``metadata["help"]``.
        choices: allowed values from ``metadata["choices"]``, or ``None``.
    """

    name: str
    flag: str
    type: type
    optional: bool
    nargs: int | str | None
    bool_or_text: bool
    default: Any
    help: str
    choices: tuple[Any, ...] | None

    @property
    def required(self) -> bool:
        """No default: the flag (or the config file) must give it."""
        return self.default is dataclasses.MISSING

    @property
    def is_flag(self) -> bool:
        """A plain ``bool``: ``--x``/``--no-x``."""
        return self.type is bool and not self.bool_or_text and self.nargs is None


def flag_name(name: str) -> str:
    """The flag of setting ``name``: ``image_size`` -> ``--image-size``."""
    return "--" + name.replace("_", "-")


def _parse_annotation(cls_name: str, name: str, ann: Any) -> tuple[type, bool, int | str | None, bool]:
    """``(item type, optional, nargs, bool_or_text)`` of a field annotation."""
    optional = False
    origin = typing.get_origin(ann)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        optional = len(args) < len(typing.get_args(ann))
        if set(args) == {bool, str}:
            return str, optional, None, True
        if len(args) != 1:
            raise TypeError(f"{cls_name}.{name}: unsupported settings type {ann!r}")
        ann = args[0]
        origin = typing.get_origin(ann)
    nargs: int | str | None = None
    if origin in (tuple, list):
        args = typing.get_args(ann)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            nargs, items = "+", {args[0]}
        else:
            nargs, items = len(args), set(args)
        if len(items) != 1:
            raise TypeError(f"{cls_name}.{name}: tuple settings need one item type, got {ann!r}")
        ann = items.pop()
    if ann not in (int, float, str, bool):
        raise TypeError(f"{cls_name}.{name}: unsupported settings type {ann!r}")
    return ann, optional, nargs, False


@functools.lru_cache(maxsize=None)
def _specs(cls: type) -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    # the trainer's own settings first, the shared keyword-only ones (RuntimeSettings) after them
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.kw_only):
        item, optional, nargs, bool_or_text = _parse_annotation(cls.__name__, f.name, hints[f.name])
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        choices = f.metadata.get("choices")
        out.append(
            FieldSpec(
                f.name,
                flag_name(f.name),
                item,
                optional,
                nargs,
                bool_or_text,
                default,
                str(f.metadata.get("help", "")),
                tuple(choices) if choices is not None else None,
            )
        )
    return tuple(out)


def field_specs(cls: type[RunConfig]) -> list[FieldSpec]:
    """The settings of ``cls`` (a :class:`RunConfig` dataclass) as flags, in declaration order.

    Raises:
        TypeError: a field type the command line cannot express.
    """
    return list(_specs(cls))


def _fits_one(spec: FieldSpec, v: Any) -> bool:
    if isinstance(v, bool):
        return spec.type is bool or spec.bool_or_text
    if spec.bool_or_text and isinstance(v, str):
        return True
    if spec.type is float:
        return isinstance(v, (int, float))
    return isinstance(v, spec.type)


def _fits(spec: FieldSpec, v: Any) -> bool:
    """Whether a config file's value ``v`` has the type of setting ``spec``."""
    if v is None:
        return spec.optional or spec.default is None
    if spec.nargs is None:
        return _fits_one(spec, v)
    if not isinstance(v, (list, tuple)) or (isinstance(spec.nargs, int) and len(v) != spec.nargs):
        return False
    return all(_fits_one(spec, x) for x in v)


def _describe(spec: FieldSpec) -> str:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    one = "true/false or text" if spec.bool_or_text else names.get(spec.type, spec.type.__name__)
    many = one if spec.nargs is None else f"a list of {spec.nargs if isinstance(spec.nargs, int) else 'one or more'} ({one})"
    return many + (" or null" if spec.optional else "")


def parse_flag_value(spec: FieldSpec, text: str) -> Any:
    """One command-line item of ``spec`` (``"none"`` is ``None`` where ``None`` is allowed)."""
    if spec.optional and text.strip().lower() == "none":
        return None
    if spec.bool_or_text or spec.type is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        if spec.type is bool:
            raise ValueError(f"{spec.flag} expects true or false, got {text!r}")
        return text
    return spec.type(text)


def _flag_text(spec: FieldSpec, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and spec.type is float:
        return repr(v)  # shortest text that reads back as the same float
    return str(v)


def config_argv(cfg: RunConfig, defaults: bool = False, exclude: Iterable[str] = ()) -> list[str]:
    """The flags that rebuild ``cfg`` on the command line of its ``gazerad`` command.

    ``gazerad <command> *config_argv(cfg)`` parses back into a config equal to ``cfg``.
    Settings equal to their default are left out unless ``defaults``; ``exclude`` names
    settings to leave out always.

    Raises:
        ValueError: a value the command line cannot express (``None`` for a setting whose
            default is not ``None``, an empty tuple).
    """
    skip = set(exclude)
    out: list[str] = []
    for spec in _specs(type(cfg)):
        if spec.name in skip:
            continue
        v = getattr(cfg, spec.name)
        if not defaults and v == spec.default and type(v) is type(spec.default):
            continue
        if v is None:
            if spec.default is None:
                continue
            raise ValueError(f"{spec.name}=None cannot be given on the command line (its default is {spec.default!r})")
        if spec.is_flag:
            out.append(spec.flag if v else "--no-" + spec.flag[2:])
        elif spec.nargs is not None:
            items = list(v)
            if not items:
                raise ValueError(f"{spec.name}: an empty list cannot be given on the command line")
            out += [spec.flag, *(_flag_text(spec, x) for x in items)]
        else:
            out += [spec.flag, _flag_text(spec, v)]
    return out


def default_choices() -> dict[str, tuple[str, ...]]:
    """Allowed values of settings that mean the same in every config, where a field does not
    declare its own ``choices``: ``precision`` (:data:`gazerad.engine.runtime.PRECISIONS`) and
    ``backbone`` (:data:`gazerad.ssl.backbones.BACKBONES`). Imports torch."""
    from gazerad.engine.runtime import PRECISIONS
    from gazerad.ssl.backbones import BACKBONES

    return {"precision": tuple(PRECISIONS), "backbone": tuple(BACKBONES)}
