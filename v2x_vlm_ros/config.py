"""Load dataclass configs from ``config/*.yaml`` with clear errors.

Each configurable part of the system defines a dataclass whose fields are documented where
they are declared; YAML files hold overrides only. Unknown keys and wrong types are errors
naming the file and the key, because a typo that silently falls back to a default is the
worst kind of configuration bug.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

T = typing.TypeVar("T")


class ConfigError(ValueError):
    pass


def package_config_dir() -> Path:
    """``config/`` in the source tree or in the installed share folder."""
    here = Path(__file__).resolve().parent
    candidates = [here.parent / "config"]  # source checkout or editable install
    if len(here.parents) > 3:  # <prefix>/lib/pythonX.Y/site-packages/v2x_vlm_ros
        candidates.append(here.parents[3] / "share" / "v2x_vlm_ros" / "config")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


def read_yaml(path) -> dict:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _coerce(value, annotation, where: str):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {annotation}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else typing.Any
        items = [_coerce(v, inner, f"{where}[{i}]") if inner is not typing.Any and inner is not Ellipsis
                 else v for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Instantiate dataclass ``cls`` from ``data`` (missing keys keep their defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(fields)}")
    values = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_section(cls: type[T], path, section: str) -> T:
    """``cls`` from one top-level section of a YAML file (defaults if the section is absent)."""
    data = read_yaml(path)
    return from_dict(cls, data.get(section) or {}, f"{path}: {section}")
