"""A GGUF header as editable data, for tests that craft hostile files: parse a file that gguf's own writer produced
(tests/ggufgen.py), change keys, values, counts and tensor infos, and write it back.

Independent of advisor's reader on purpose: the layout is gguf-py's (gguf/gguf_writer.py: magic, u32 version, u64
tensor count, u64 kv count, key/values, tensor infos, padding to general.alignment, data).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9


@dataclass
class Doc:
    kv: list[tuple[str, int, Any]]  # key, type, value (an array is (element type, [values]))
    tensors: list[tuple[str, list[int], int, int]]  # name, ne, ggml type, offset
    version: int = 3
    data: bytes = b""
    n_tensors: int | None = None  # counts to write instead of the real ones (a lying header)
    n_kv: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        return next(v for k, _, v in self.kv if k == key)

    def set(self, key: str, vtype: int, value: Any) -> Doc:
        self.kv = [(k, t, v) for k, t, v in self.kv if k != key] + [(key, vtype, value)]
        return self

    def to_bytes(self, align: int = 32) -> bytes:
        out = bytearray(b"GGUF")
        out += struct.pack("<IQQ", self.version, len(self.tensors) if self.n_tensors is None else self.n_tensors,
                           len(self.kv) if self.n_kv is None else self.n_kv)
        for key, vtype, value in self.kv:
            out += _str(key) + struct.pack("<I", vtype) + _value(vtype, value)
        for name, ne, ttype, offset in self.tensors:
            out += _str(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d & (2**64 - 1)) for d in ne)
            out += struct.pack("<IQ", ttype, offset)
        out += b"\0" * (-len(out) % align)
        return bytes(out) + self.data


def _str(s: str | bytes) -> bytes:
    raw = s.encode("utf-8", "surrogatepass") if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def _value(vtype: int, value: Any) -> bytes:
    if vtype in SCALAR:
        return struct.pack(SCALAR[vtype], value)
    if vtype == STRING:
        return _str(value)
    etype, items = value
    return struct.pack("<IQ", etype, len(items)) + b"".join(_value(etype, x) for x in items)


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> Any:
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v[0]

    def string(self) -> str:
        n = self.take("<Q")
        s = self.buf[self.pos:self.pos + n].decode()
        self.pos += n
        return s

    def value(self, vtype: int) -> Any:
        if vtype in SCALAR:
            return self.take(SCALAR[vtype])
        if vtype == STRING:
            return self.string()
        etype, n = self.take("<I"), self.take("<Q")
        return etype, [self.value(etype) for _ in range(n)]


def parse(buf: bytes) -> Doc:
    r = _Reader(buf)
    assert r.buf[:4] == b"GGUF"
    r.pos = 4
    version, n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
    kv = []
    for _ in range(n_kv):
        key = r.string()
        vtype = r.take("<I")
        kv.append((key, vtype, r.value(vtype)))
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.take("<I")
        ne = [r.take("<Q") for _ in range(n_dims)]
        tensors.append((name, ne, r.take("<I"), r.take("<Q")))
    align = next((v for k, _, v in kv if k == "general.alignment"), 32)
    start = r.pos + (-r.pos % align)
    return Doc(kv, tensors, version, buf[start:])
