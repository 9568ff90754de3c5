"""Frozen dataclass configs to and from plain dicts (JSON files, checkpoints), and comparing them.

One way for every config of the project, nested ones included (``WorldModelConfig`` holds an
``AutoencoderConfig``, a ``BackboneConfig`` and a ``DiffusionConfig``):

    config_to_dict(cfg)                 -> plain dict, tuples as lists (what JSON and checkpoints store)
    config_from_dict(cls, data, source) -> cls, rebuilt field by field from its type hints: nested dataclass
                                           fields recursively, lists back to tuples; an unknown or missing
                                           field is a ValueError naming the field, the class and the source
    config_diff(expected, found)        -> one line per differing field
    check_config(expected, found, what) -> ValueError listing them

This module imports nothing of ours.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["check_config", "config_diff", "config_from_dict", "config_to_dict"]

T = TypeVar("T")


def _plain(obj: Any) -> Any:
    """Tuples as lists, paths as strings, recursively: the form JSON and checkpoints hold."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _plain(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return str(obj)
    return obj


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A frozen dataclass config as a plain dict (nested configs as dicts, tuples as lists)."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a dataclass config instance, got {type(cfg).__name__}")
    return _plain(cfg)


def _tuples(value: Any) -> Any:
    """Lists back to tuples, recursively (frozen configs hold tuples; JSON gives lists)."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field's type names: ``Cfg`` or ``Cfg | None`` -> Cfg; anything else -> None."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(hint) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def config_from_dict(cls: type[T], data: Mapping[str, Any], source: str | os.PathLike | None = None) -> T:
    """Rebuild the dataclass ``cls`` from a dict made by :func:`config_to_dict` (or read from JSON).

    Fields whose type is a dataclass (or ``dataclass | None``) are rebuilt recursively; lists become tuples.
    Unknown fields, missing required fields and values the config's own checks refuse raise ValueError naming
    the field (e.g. ``WorldModelConfig.backbone: unknown field(s) ['dimm']``), prefixed with ``source`` (e.g.
    the file the dict came from) when given."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config_from_dict: {cls!r} is not a dataclass")
    try:
        return _build(cls, data, cls.__name__)
    except ValueError as e:
        if source is None:
            raise
        raise ValueError(f"{source}: {e}") from e


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """config_from_dict without the source; ``where`` names the (nested) field being built."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected a dict of {cls.__name__} fields, got {type(data).__name__}")
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown} of {cls.__name__}; known fields: {names}")
    missing = [
        f.name
        for f in fields
        if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing} of {cls.__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name in names:
        if name not in data:
            continue
        value = data[name]
        sub = _dataclass_in(hints.get(name))
        nested = sub is not None and value is not None
        kwargs[name] = _build(sub, value, f"{where}.{name}") if nested else _tuples(value)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from e


def config_diff(expected: Any, found: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between a config (dataclass or dict) and a stored dict: one line per field,
    e.g. "latent_channels: expected 8, checkpoint has 16"; empty when they match."""
    exp = config_to_dict(expected) if not isinstance(expected, Mapping) else _plain(dict(expected))
    got = _plain(dict(found))
    lines = []
    for key in sorted(set(exp) | set(got)):
        if key not in got:
            lines.append(f"{key}: expected {exp[key]!r}, checkpoint lacks this field")
        elif key not in exp:
            lines.append(f"{key}: unknown field in checkpoint (value {got[key]!r})")
        elif exp[key] != got[key]:
            lines.append(f"{key}: expected {exp[key]!r}, checkpoint has {got[key]!r}")
    return lines


def check_config(expected: Any, found: Mapping[str, Any], what: str | Path = "checkpoint") -> None:
    """Raise ValueError naming every differing field when ``found`` (from a checkpoint) != ``expected``."""
    diff = config_diff(expected, found)
    if diff:
        raise ValueError(f"{what} config does not match ({len(diff)} field(s) differ):\n  " + "\n  ".join(diff))
