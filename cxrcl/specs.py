"""``NAME:KEY=VALUE[:KEY=VALUE...]`` specs for methods and backbones (CLI.md).

Values are parsed as YAML scalars (``1.0`` -> float, ``true`` -> bool, ``0.4,0.4`` stays a
string unless the target field is a tuple). Unknown keys are an error that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
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


def _coerce(value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is tuple and isinstance(value, str):
        return tuple(yaml.safe_load(v) for v in value.split(","))
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def apply_overrides(config: Any, overrides: dict[str, Any], what: str) -> Any:
    """Return a copy of dataclass ``config`` with ``overrides`` applied (keys checked, types coerced)."""
    fields = {f.name: f for f in dataclasses.fields(config)}
    check_keys(what, overrides, fields)
    hints = typing.get_type_hints(type(config))
    values = {k: _coerce(v, hints.get(k)) for k, v in overrides.items()}
    try:
        return dataclasses.replace(config, **values)
    except (TypeError, ValueError) as e:
        raise CxrclError(f"invalid {what} setting: {e}") from None
