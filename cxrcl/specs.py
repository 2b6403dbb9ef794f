"""``NAME:KEY=VALUE[:KEY=VALUE...]`` specs for methods and backbones (CLI.md).

Values are parsed as YAML scalars (``1.0`` -> float, ``true`` -> bool, ``0.4,0.4`` stays a
string unless the target field is a tuple). Unknown keys are an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

import yaml

from cxrcl.errors import CxrclError


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"sparsecontrast:keep_ratio=1.0"`` -> ``("sparsecontrast", {"keep_ratio": 1.0})``."""
    name, *parts = spec.split(":")
    if not name:
        raise CxrclError(f"empty name in spec {spec!r}: write NAME[:KEY=VALUE...]")
    overrides: dict[str, Any] = {}
    for part in parts:
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise CxrclError(f"spec {spec!r}: {part!r} is not KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return name, overrides


def check_keys(what: str, given: Iterable[str], valid: Iterable[str]) -> None:
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise CxrclError(f"unknown {what} key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"valid keys: {', '.join(valid)}")


def _number(text: str) -> Any:
    """A YAML scalar, with the numbers YAML 1.1 leaves as text (``1e-3``, ``inf``) read as floats."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _coerce(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, str):
        return tuple(_number(v) for v in value.split(","))
    if annotation is float and isinstance(value, str):
        return _number(value)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        return "a comma list of " + " and ".join(_type_name(a) for a in typing.get_args(annotation)
                                                 if a is not Ellipsis)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a)
                           for a in typing.get_args(annotation))
    return {int: "a whole number", float: "a number", str: "text", bool: "true or false"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def matches_type(value: Any, annotation: Any) -> bool:
    """Whether ``value`` (after coercion) is of the field type ``annotation``."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches_type(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        if not isinstance(value, tuple):
            return False
        if Ellipsis in typing.get_args(annotation):
            return all(matches_type(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches_type(v, a) for v, a in zip(value, args, strict=True))
    if origin in (dict, list):
        return isinstance(value, origin)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def apply_overrides(config: Any, overrides: dict[str, Any], what: str) -> Any:
    """Return a copy of dataclass ``config`` with ``overrides`` applied (keys checked, types
    coerced and checked: ``steps: "ten"`` is one sentence naming the key, not a later TypeError)."""
    if not isinstance(overrides, dict):
        raise CxrclError(f"{what} settings must be a mapping of KEY: VALUE, got {overrides!r}")
    fields = {f.name: f for f in dataclasses.fields(config)}
    check_keys(what, overrides, fields)
    hints = typing.get_type_hints(type(config))
    values = {k: _coerce(v, hints.get(k)) for k, v in overrides.items()}
    for k, v in values.items():
        if k in hints and not matches_type(v, hints[k]):
            raise CxrclError(f"{what} setting {k}={overrides[k]!r} must be {_type_name(hints[k])}")
    try:
        return dataclasses.replace(config, **values)
    except (TypeError, ValueError) as e:
        raise CxrclError(f"invalid {what} setting: {e}") from None
