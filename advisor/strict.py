"""Strict JSON -> dataclass conversion for documents users hand back to advisor (profiles, plans).

Unknown keys, wrong types and missing fields are refused with one line naming the place, so a hand-edited or
truncated file fails clearly instead of being half-read.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from advisor.errors import BadInputError


def build(tp: Any, value: Any, where: str, error: type[BadInputError] = BadInputError) -> Any:
    """Build ``tp`` (a dataclass, list, dict, optional or scalar type) from JSON data, strictly."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return build(inner, value, where, error)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise error(f"{where}: expected an object")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise error(f"{where}: unknown field {unknown[0]!r}")
        kwargs = {k: build(hints[k], v, f"{where}.{k}", error) for k, v in value.items()}
        try:
            return tp(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise error(f"{where}: {exc}") from None
    if origin is list:
        if not isinstance(value, list):
            raise error(f"{where}: expected a list")
        (inner,) = typing.get_args(tp)
        return [build(inner, v, f"{where}[{i}]", error) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise error(f"{where}: expected an object")
        _, inner = typing.get_args(tp)
        return {str(k): build(inner, v, f"{where}.{k}", error) for k, v in value.items()}
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field type is listed above
        raise TypeError(f"unsupported field type {tp!r}")
    if not ok:
        raise error(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
    return value
