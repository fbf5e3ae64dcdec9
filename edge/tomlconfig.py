"""One TOML-to-dataclass loader for every configuration of the project: the daemon's (`edge.config`) and the
trainer's (`training.config`). A configuration is a frozen dataclass whose fields are section dataclasses;
a TOML document (or a command-line override) is a table of sections. Names are checked against the fields,
values are coerced to the field's annotation, and every error names the key: `detector.hop_ms: ...`.
"""

from __future__ import annotations

import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

__all__ = ["ConfigError", "coerce", "coerce_sections", "read_toml", "require"]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """`value` (from TOML) as the type `annotation` says, or a ConfigError naming `key`."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        if value is None and len(options) < len(get_args(annotation)):
            return None
        return coerce(value, options[0], key)
    if origin is tuple:
        require(isinstance(value, list | tuple), key, f"expected a list, got {value!r}")
        inner = get_args(annotation)[0]
        return tuple(coerce(item, inner, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        require(isinstance(value, Mapping), key, f"expected a table, got {value!r}")
        return dict(value)
    if annotation is bool:
        require(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if annotation is int:
        require(
            isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}"
        )
        return value
    if annotation is float:
        require(
            isinstance(value, int | float) and not isinstance(value, bool),
            key,
            f"expected a number, got {value!r}",
        )
        return float(value)
    if annotation is str:
        require(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {annotation}")


def coerce_sections(root: type, updates: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Check `updates` ({section: {key: value}}) against the dataclass `root` and coerce every value.

    `where` names the source in errors (a file, "command line", an override).
    """
    section_types = get_type_hints(root)
    coerced: dict[str, dict[str, Any]] = {}
    for section, values in updates.items():
        if section not in section_types:
            raise ConfigError(
                f"{section}: unknown section in {where}; expected one of {sorted(section_types)}"
            )
        require(isinstance(values, Mapping), section, f"expected a table [{section}], got {values!r}")
        hints = get_type_hints(section_types[section])
        for key, value in values.items():
            dotted = f"{section}.{key}"
            if key not in hints:
                raise ConfigError(f"{dotted}: unknown key in {where}; [{section}] takes {sorted(hints)}")
            coerced.setdefault(section, {})[key] = coerce(value, hints[key], dotted)
    return coerced


def read_toml(path: Path) -> dict[str, Any]:
    """The TOML document at `path`, or a ConfigError naming the file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from error
