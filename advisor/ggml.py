"""GGML tensor types: block size and bytes per block, and the byte size of a tensor.

Source: ``type_traits[GGML_TYPE_COUNT]`` in llama.cpp ``ggml/src/ggml.c`` (blck_size, type_size), mirrored by
``GGML_QUANT_SIZES`` in ``gguf-py/gguf/constants.py``; notes/memory.md §1.1 has the full table with ids. The
table is taken from the installed ``gguf`` package at runtime (it tracks llama.cpp; gguf 0.19 knows ids up to
41, Q1_0) so a new type needs a gguf upgrade, not an edit here. ``gguf.constants`` imports only numpy.
"""

from __future__ import annotations

from functools import cache

# Names accepted for --cache-type-k/-v: llama.cpp common/arg.cpp kv_cache_types (notes/memory.md §2.1).
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


@cache
def _tables() -> tuple[dict[int, tuple[int, int]], dict[int, str]]:
    from gguf.constants import GGML_QUANT_SIZES

    sizes = {int(t): (int(b), int(s)) for t, (b, s) in GGML_QUANT_SIZES.items()}
    names = {int(t): t.name for t in GGML_QUANT_SIZES}
    return sizes, names


def type_name(type_id: int) -> str:
    """``Q8_0`` for 8; ``type<N>`` for ids gguf does not know."""
    return _tables()[1].get(type_id, f"type{type_id}")


def type_id(name: str) -> int:
    """The ggml type id for a name such as ``q8_0`` or ``F16`` (case-insensitive); KeyError if unknown."""
    wanted = name.upper()
    for tid, tname in _tables()[1].items():
        if tname == wanted:
            return tid
    raise KeyError(name)


def is_known(type_id: int) -> bool:
    return type_id in _tables()[0]


def block_size(type_id: int) -> tuple[int, int]:
    """(elements per block, bytes per block)."""
    return _tables()[0][type_id]


def row_size(type_id: int, ne0: int) -> int:
    """``ggml_row_size``: bytes of one row of ``ne0`` elements (ne0 must be a multiple of the block size)."""
    blck, size = block_size(type_id)
    return size * (ne0 // blck)


def nbytes(type_id: int, shape: tuple[int, ...] | list[int]) -> int:
    """``ggml_nbytes`` of a contiguous tensor with ggml ``shape`` (ne0 first)."""
    rows = 1
    for n in shape[1:]:
        rows *= n
    return row_size(type_id, shape[0] if shape else 1) * rows


def bytes_per_element(type_id: int) -> float:
    blck, size = block_size(type_id)
    return size / blck
