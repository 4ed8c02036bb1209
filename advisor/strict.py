"""Strict data -> dataclass conversion for everything advisor reads from files: hardware profiles and plans
(JSON) and the catalog and rules (TOML).

Unknown keys, wrong types, values outside a Literal and missing required keys are refused with one line naming
the place (``file: model[3].arch.n_layer: expected an integer``), so a typo or a truncated file fails clearly
instead of being half-read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import types
import typing
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from advisor.errors import BadInputError


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(tp: Any, value: Any, where: str, error: type[BadInputError] = BadInputError) -> Any:
    """Build ``tp`` (a dataclass, list, tuple, dict, optional/union, Literal or scalar type) from data."""
    return _builder(tp)(value, where, error)


Builder = Callable[[Any, str, "type[BadInputError]"], Any]


@cache
def _builder(tp: Any) -> Builder:
    """The function that builds ``tp`` from data, made once per type: the catalog builds thousands of values of a
    few dozen types, and deciding what a type is costs more than building a value of it."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return lambda value, where, error: value
    if origin in (Union, types.UnionType):
        return _union(typing.get_args(tp))
    if origin is Literal:
        return _literal(typing.get_args(tp))
    if origin in (list, tuple):
        return _sequence(typing.get_args(tp)[0], origin)
    if origin is dict:
        return _mapping(typing.get_args(tp)[1])
    if dataclasses.is_dataclass(tp):
        return lambda value, where, error: _dataclass(tp, _object(value, where, error), where, error)
    if tp in (float, int, str, bool):
        return _scalar(tp)
    raise TypeError(f"unsupported schema type {tp!r}")  # a bug in the schema, not in the data


def _union(args: tuple[Any, ...]) -> Builder:
    optional = type(None) in args
    members = [_builder(arg) for arg in args if arg is not type(None)]

    def run(value: Any, where: str, error: type[BadInputError]) -> Any:
        if value is None and optional:
            return None
        messages = []
        for member in members:
            try:
                return member(value, where, error)
            except BadInputError as exc:
                messages.append(exc.message)
        raise error(messages[0] if messages else f"{where}: unexpected value {value!r}")
    return run


def _literal(allowed: tuple[Any, ...]) -> Builder:
    def run(value: Any, where: str, error: type[BadInputError]) -> Any:
        if value not in allowed:
            raise error(f"{where}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
        return value
    return run


def _sequence(item_tp: Any, origin: type) -> Builder:
    item = _builder(item_tp)

    def run(value: Any, where: str, error: type[BadInputError]) -> Any:
        if not isinstance(value, list):
            raise error(f"{where}: expected a list, got {type(value).__name__}")
        items = [item(v, f"{where}[{i}]", error) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    return run


def _mapping(item_tp: Any) -> Builder:
    item = _builder(item_tp)

    def run(value: Any, where: str, error: type[BadInputError]) -> Any:
        return {str(k): item(v, f"{where}.{_shown(k)}", error) for k, v in _object(value, where, error).items()}
    return run


def _object(value: Any, where: str, error: type[BadInputError]) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise error(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _scalar(tp: type) -> Builder:
    def number(value: Any, where: str, error: type[BadInputError]) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise error(f"{where}: expected a number, got {value!r}")
        return float(value)

    def integer(value: Any, where: str, error: type[BadInputError]) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise error(f"{where}: expected an integer, got {value!r}")
        return value

    def exact(value: Any, where: str, error: type[BadInputError]) -> Any:
        if not isinstance(value, tp):
            raise error(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
        return value
    return number if tp is float else integer if tp is int else exact


def _shown(key: Any) -> str:
    """A key from data as it goes into a one-line message (a newline in a key must not make it two lines)."""
    text = str(key)
    return text if text.isprintable() and len(text) <= 80 else repr(text[:80])


@cache
def _fields(cls: Any) -> tuple[dict[str, Any], tuple[tuple[str, Builder, bool], ...]]:
    """A dataclass's fields by name, and per field: its builder and whether the data must give it."""
    hints = _hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    plan = tuple((name, _builder(hints[name]),
                  f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
                 for name, f in known.items())
    return known, plan


def _dataclass(cls: Any, table: dict[str, Any], where: str, error: type[BadInputError]) -> Any:
    known, plan = _fields(cls)
    if not table.keys() <= known.keys():
        unknown = sorted(set(table) - set(known))
        raise error(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(known))})")
    kwargs = {}
    for name, make, required in plan:
        if name in table:
            kwargs[name] = make(table[name], f"{where}.{name}", error)
        elif required:
            raise error(f"{where}: missing required key {name!r}")
    return cls(**kwargs)


#: Bounds for files advisor reads whole. A profile is a few KB and a plan file (``recommend --json --top N``) some
#: tens of KB per plan; anything bigger is not what advisor wrote.
MAX_PROFILE_BYTES = 1 << 20
MAX_PLAN_BYTES = 8 << 20
#: Nesting deeper than any document advisor writes (a profile nests 4 levels, a plan 5); CPython's json module
#: recurses once per level and would raise RecursionError near 1000.
MAX_JSON_DEPTH = 64


def open_regular(path: Path | str, error: type[BadInputError] = BadInputError) -> int:
    """A read-only descriptor on ``path`` when it is a regular file; a FIFO, device, socket or directory is refused
    without blocking (O_NONBLOCK: opening a FIFO for reading would wait for a writer forever)."""
    import os
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"cannot read {path}: no such file") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else \
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        raise error(f"cannot read {path}: {kind}, not a regular file")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return fd


def read_bounded(path: Path | str, limit: int, error: type[BadInputError] = BadInputError) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (more is refused after reading ``limit`` + 1)."""
    import os

    with os.fdopen(open_regular(path, error), "rb") as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{path} is larger than {limit} bytes: not a file advisor wrote")
    return data


def load_json(path: Path | str, limit: int, error: type[BadInputError] = BadInputError) -> Any:
    """A JSON document from a bounded regular file; not JSON, nested deeper than MAX_JSON_DEPTH or holding NaN or
    Infinity (not JSON by RFC 8259, though Python's json accepts them) are one line naming the file."""
    import json

    data = read_bounded(path, limit, error)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not UTF-8 text (byte {exc.start})") from None
    if _depth(text) > MAX_JSON_DEPTH:
        raise error(f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels")

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(text, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not JSON (not valid JSON at line {exc.lineno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:
        raise error(f"{path} is not JSON ({exc})") from None


def _depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings (a linear scan, before json recurses)."""
    import re

    deepest = depth = 0
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif tok in "]}":
            depth -= 1
    return deepest


def read_toml(path: Path, error: type[BadInputError] = BadInputError) -> dict[str, Any]:
    """A TOML file's table, or one line naming the file: unreadable, or not valid TOML (with tomllib's place).

    Parsed tables are kept as JSON under ADVISOR_HOME/cache, keyed by the file's path, size and modification time:
    tomllib is pure Python (about 20 ms for the shipped catalog and rules on a 2-core machine) while ``json.loads``
    reads the same data in about 1 ms, and every command that plans reads them all. A cache that cannot be read or
    written is ignored; a table JSON cannot hold (TOML dates) is not cached.
    """
    try:
        stat = Path(path).stat()
        cached = _cache_file(path, stat.st_size, stat.st_mtime_ns)
        if cached is not None:
            try:
                table = json.loads(cached.read_text())
                if isinstance(table, dict):
                    return table
            except (OSError, ValueError, RecursionError):
                pass
        with os.fdopen(open_regular(path, error), "rb") as fh:  # a FIFO or device is refused, never waited on
            data = tomllib.load(fh)
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML ({exc})") from None
    _store(path, stat.st_size, stat.st_mtime_ns, data)
    return data


def _cache_key(path: Path, size: int, mtime_ns: int) -> Path:
    from advisor.settings import home_dir

    digest = hashlib.sha256(f"{Path(path).resolve()}\0{size}\0{mtime_ns}".encode()).hexdigest()[:32]
    return home_dir() / "cache" / "toml" / f"{digest}.json"


def _cache_file(path: Path, size: int, mtime_ns: int) -> Path | None:
    found = _cache_key(path, size, mtime_ns)
    return found if found.is_file() else None


def _store(path: Path, size: int, mtime_ns: int, data: dict[str, Any]) -> None:
    try:
        text = json.dumps(data)
    except (TypeError, ValueError):
        return  # a value JSON has no type for (a TOML date): read with tomllib each time
    target = _cache_key(path, size, mtime_ns)
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # private like all of ADVISOR_HOME
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)  # whole or not at all: a reader never sees half a file
    except OSError:
        pass
