"""GGML tensor types: block size and bytes per block, and the byte size of a tensor.

Source: ``type_traits[GGML_TYPE_COUNT]`` in llama.cpp ``ggml/src/ggml.c`` (blck_size, type_size), mirrored by
``GGML_QUANT_SIZES`` in ``gguf-py/gguf/constants.py``. The ids are ggml.h's enum ggml_type. The table
is kept here as data so that planning never imports gguf (which imports numpy: 80 ms of every `advisor recommend`);
tests/test_ggml_table.py checks it equals the installed gguf's, and an id it does not know is looked up in gguf
when it appears (a file of a newer type), so a new type needs only a gguf upgrade.
"""

from __future__ import annotations

from functools import cache

# Names accepted for --cache-type-k/-v: llama.cpp common/arg.cpp kv_cache_types.
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


#: name -> (ggml type id, elements per block, bytes per block), gguf 0.19's GGML_QUANT_SIZES (ggml.c type_traits).
TYPES: dict[str, tuple[int, int, int]] = {
    "F32": (0, 1, 4),
    "F16": (1, 1, 2),
    "Q4_0": (2, 32, 18),
    "Q4_1": (3, 32, 20),
    "Q5_0": (6, 32, 22),
    "Q5_1": (7, 32, 24),
    "Q8_0": (8, 32, 34),
    "Q8_1": (9, 32, 40),
    "Q2_K": (10, 256, 84),
    "Q3_K": (11, 256, 110),
    "Q4_K": (12, 256, 144),
    "Q5_K": (13, 256, 176),
    "Q6_K": (14, 256, 210),
    "Q8_K": (15, 256, 292),
    "IQ2_XXS": (16, 256, 66),
    "IQ2_XS": (17, 256, 74),
    "IQ3_XXS": (18, 256, 98),
    "IQ1_S": (19, 256, 50),
    "IQ4_NL": (20, 32, 18),
    "IQ3_S": (21, 256, 110),
    "IQ2_S": (22, 256, 82),
    "IQ4_XS": (23, 256, 136),
    "I8": (24, 1, 1),
    "I16": (25, 1, 2),
    "I32": (26, 1, 4),
    "I64": (27, 1, 8),
    "F64": (28, 1, 8),
    "IQ1_M": (29, 256, 56),
    "BF16": (30, 1, 2),
    "TQ1_0": (34, 256, 54),
    "TQ2_0": (35, 256, 66),
    "MXFP4": (39, 32, 17),
    "NVFP4": (40, 64, 36),
    "Q1_0": (41, 128, 18),
}


@cache
def _tables() -> tuple[dict[int, tuple[int, int]], dict[int, str]]:
    sizes = {tid: (blck, size) for tid, blck, size in TYPES.values()}
    names = {tid: name for name, (tid, _, _) in TYPES.items()}
    return sizes, names


def _from_gguf(type_id: int) -> bool:
    """Learn a type id the table lacks from the installed gguf (a newer type); True when found."""
    from gguf.constants import GGML_QUANT_SIZES

    sizes, names = _tables()
    for t, (blck, size) in GGML_QUANT_SIZES.items():
        if int(t) == type_id:
            sizes[type_id], names[type_id] = (int(blck), int(size)), t.name
            return True
    return False


def type_name(type_id: int) -> str:
    """``Q8_0`` for 8; ``type<N>`` for ids gguf does not know."""
    if type_id not in _tables()[1]:
        _from_gguf(type_id)
    return _tables()[1].get(type_id, f"type{type_id}")


def type_id(name: str) -> int:
    """The ggml type id for a name such as ``q8_0`` or ``F16`` (case-insensitive); KeyError if unknown."""
    wanted = name.upper()
    for tid, tname in _tables()[1].items():
        if tname == wanted:
            return tid
    raise KeyError(name)


def is_known(type_id: int) -> bool:
    return type_id in _tables()[0] or _from_gguf(type_id)


def block_size(type_id: int) -> tuple[int, int]:
    """(elements per block, bytes per block)."""
    if type_id not in _tables()[0]:
        _from_gguf(type_id)
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
