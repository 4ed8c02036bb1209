"""Model facts read from a GGUF header: hyper-parameters and every tensor's type and byte size.

Only the header is read (key/values and tensor infos), through ``mmap`` so the pages of tensor data are never
touched: reading the facts of a multi-GB file costs what its header costs. We parse the header ourselves instead of
using ``gguf.GGUFReader`` because the reader builds numpy views for every array element (150k-token vocabularies
take seconds) and maps every tensor.

Format: gguf-py/gguf/gguf_reader.py and llama.cpp ggml/src/gguf.cpp (``gguf_init_from_file_impl``): magic
``GGUF``, u32 version (2 and 3 use 64-bit counts; version 1 used 32-bit ones and is refused), u64 tensor count,
u64 kv count, the key/values, the tensor infos (name, n_dims, ne[n_dims], type, offset), then the data at the next
multiple of ``general.alignment`` (default 32, ``GGUF_DEFAULT_ALIGNMENT``).

Hyper-parameter keys are ``{arch}.<name>`` as in llama.cpp src/llama-arch.cpp (``LLM_KV_NAMES``) and gguf-py's
``Keys``; defaults follow ``llama_model::load_hparams`` (src/llama-model.cpp): n_head_kv = n_head,
key/value length = n_embd / n_head.
"""

from __future__ import annotations

import dataclasses
import functools
import mmap
import os
import re
import struct
from pathlib import Path
from typing import Any

from advisor.gguf import ggml
from advisor.errors import BadInputError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # gguf.cpp: version 1 is rejected ("GGUFv1 is no longer supported")
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT, ggml/include/gguf.h
GGML_MAX_DIMS = 4  # ggml.h
# Arrays longer than this (vocabularies, merges, scores) are skipped, only their length is kept.
_MAX_DECODED_ARRAY = 4096

# Sanity limits, checked before anything is allocated or looped over, so that a hostile header costs neither memory
# nor minutes (a header that passes them is still bounded by the file's own size):
GGML_MAX_NAME = 64  # ggml/include/ggml.h; gguf.cpp refuses a tensor name of this length or more
LLAMA_MAX_LAYERS = 512  # llama.cpp src/llama-hparams.h: the per-layer hparams arrays have this many entries
LLAMA_MAX_EXPERTS = 1024  # llama.cpp src/llama-hparams.h
UINT32_MAX = 2**32 - 1  # llama_hparams' dimensions are uint32_t (src/llama-hparams.h)
INT64_MAX = 2**63 - 1  # gguf.cpp: every ne[j] is an int64_t >= 0 and their product stays below INT64_MAX
MAX_KEYS = 1 << 16  # key/value pairs: real models carry 20-60
MAX_TENSORS = 1 << 20  # real models carry up to a few tens of thousands (MoE with one tensor per expert)
MAX_KEY_BYTES = 1 << 16
MAX_STRING_BYTES = 1 << 20  # longer strings (an embedded tokenizer.json) are skipped like long arrays
MAX_STRING_ARRAY = 1 << 24  # string elements walked one by one: vocabularies are <= 262,144 tokens, merges < 1M
MAX_ARRAY = 1 << 40  # scalar arrays are skipped without a loop; the file's size bounds them further

# Split files: gguf-split names shards "<prefix>-00001-of-00003.gguf" (llama.cpp src/llama.cpp llama_split_path).
SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<idx>\d{5})-of-(?P<count>\d{5})\.gguf$")

# Sliding-window layer pattern when the file has no {arch}.attention.sliding_window_pattern: the period passed to
# hparams.set_swa_pattern() in llama.cpp's per-arch load_hparams (src/llama-model.cpp / src/models/<arch>.cpp);
# layer il is SWA iff il % period < period - 1 (llama_hparams::set_swa_pattern, src/llama-hparams.cpp).
SWA_PERIOD_DEFAULT = {"gemma2": 2, "gemma3": 6, "gemma-embedding": 6, "cohere2": 4, "gpt-oss": 2, "exaone4": 4,
                      "llama4": 4, "smallthinker": 4, "afmoe": 4}

# Recurrent-state layers (llama_hparams::recurrent_layer_arr / is_recurrent(il)), which get a slot in
# llama_memory_recurrent instead of (or, for falcon-h1, besides) the KV cache:
# - every layer of the purely recurrent architectures (llm_arch_is_recurrent, src/llama-arch.cpp);
RECURRENT_ARCHS = frozenset({"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"})
# - hybrids whose load_hparams marks a layer recurrent iff its head_count_kv is 0 (src/models/<arch>.cpp:
#   "A layer is recurrent IFF the n_head_kv value is set to 0"; jamba, granite-hybrid, nemotron-h, lfm2, plamo2);
HYBRID_BY_KV0 = frozenset({"jamba", "granitehybrid", "nemotron_h", "nemotron_h_moe", "lfm2", "lfm2moe", "plamo2"})
# - hybrids whose every (il + 1) % full_attention_interval != 0 layer is a gated-delta-net layer, interval 4 when the
#   key is absent (qwen3next / qwen35 / qwen35moe load_arch_hparams);
HYBRID_BY_INTERVAL = frozenset({"qwen3next", "qwen35", "qwen35moe"})
FULL_ATTN_INTERVAL_DEFAULT = 4
# - falcon-h1 runs attention and SSM side by side in every layer: all layers recurrent and all have KV
#   (falcon-h1 load_hparams: std::fill(recurrent_layer_arr, true)).
HYBRID_ALL_LAYERS = frozenset({"falcon-h1"})
# Architectures whose KV sharing starts at a fixed layer (llama_hparams::n_layer_kv_from_start set in load_hparams).
KV_FROM_START = {"gemma3n": 20}
# llama_hparams default when {arch}.token_shift_count is absent (src/llama-hparams.h: token_shift_count = 2).
TOKEN_SHIFT_COUNT_DEFAULT = 2


_LAYER = re.compile(r"blk\.([0-9]+)\.")  # ASCII digits only, as llama.cpp's "blk.%d." names


@dataclasses.dataclass(frozen=True)
class TensorFacts:
    name: str
    shape: tuple[int, ...]  # ggml order, ne0 first
    type_id: int
    nbytes: int  # ggml_nbytes
    file_index: int = 0  # which shard holds it
    offset: int = -1  # byte offset of its data in its shard (data section start + tensor info offset); -1: unknown

    @property
    def type_name(self) -> str:
        return ggml.type_name(self.type_id)

    @functools.cached_property
    def layer(self) -> int | None:
        """The repeating-layer index for ``blk.N.*`` tensors, else None (parsed once: the planner asks for every
        tensor of every candidate many times)."""
        m = _LAYER.match(self.name)
        return int(m.group(1)) if m else None


@dataclasses.dataclass(frozen=True)
class ModelFacts:
    """What a GGUF header says about a model. Per-layer values are tuples of length ``n_layer``."""

    path: str
    files: tuple[str, ...]
    gguf_version: int
    architecture: str
    name: str | None
    file_type: int | None
    n_layer: int
    n_embd: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    head_dim_k: int
    head_dim_v: int
    n_ff: tuple[int, ...]
    n_vocab: int
    n_ctx_train: int
    sliding_window: int  # 0: none
    swa_layers: tuple[bool, ...]  # True where the layer uses the sliding window
    n_expert: int
    n_expert_used: int
    n_ff_exp: int
    n_expert_shared: int
    kv_lora_rank: int  # MLA (DeepSeek-V2/V3 ...): 0 when absent
    key_length_mla: int
    value_length_mla: int
    tied_embeddings: bool  # no output.weight: the output reuses token_embd
    tensors: tuple[TensorFacts, ...]
    data_offset: int  # first shard
    file_bytes: int  # sum over shards
    chat_template: str | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    # Recurrent state (Mamba/Mamba2 SSM, RWKV wkv, LFM2 short conv): {arch}.ssm.*, {arch}.wkv.head_size,
    # {arch}.token_shift_count, {arch}.shortconv.l_cache (gguf Keys.SSM / WKV / LLM / ShortConv); 0 when absent.
    ssm_d_conv: int = 0
    ssm_d_inner: int = 0
    ssm_d_state: int = 0
    ssm_dt_rank: int = 0
    ssm_n_group: int = 0
    wkv_head_size: int = 0
    token_shift_count: int = 0
    shortconv_l_cache: int = 0
    recurrent_layers: tuple[bool, ...] = ()  # True where the layer keeps a recurrent state; () = none
    # Head sizes of the sliding-window layers ({arch}.attention.key_length_swa / value_length_swa; llama_hparams
    # n_embd_head_{k,v}_swa, default the full layers' sizes: llama_model::load_hparams); 0 = same as head_dim_k/v.
    head_dim_k_swa: int = 0
    head_dim_v_swa: int = 0
    # KV sharing (Gemma 3n / Gemma 4): layers from this index on reuse an earlier layer's KV cache and own none
    # (llama_hparams::n_layer_kv_from_start; create_memory's reuse callback); -1 = every layer has its own.
    n_layer_kv_from_start: int = -1
    # NextN/MTP blocks after the trunk (block_count - n_layer): not run, but they count in the -ngl slots
    # (llama_model::load_tensors: i_gpu_start = n_layer_all + 1 - n_gpu_layers)
    n_layer_nextn: int = 0

    @property
    def is_mla(self) -> bool:
        """An MLA file with attn_kv_b split (llama_hparams::is_mla: both *_mla head sizes set): its cache holds one
        latent per token (head_dim_k = kv_lora_rank + rope, one KV head) and the per-head sizes are the *_mla keys."""
        return bool(self.key_length_mla and self.value_length_mla)

    @property
    def n_layer_all(self) -> int:
        """Blocks in the file (block_count), NextN/MTP blocks included: llama.cpp's -ngl counts these + 1."""
        return self.n_layer + self.n_layer_nextn

    def head_dims(self, il: int) -> tuple[int, int]:
        """(key, value) head size of layer ``il`` (llama_hparams::n_embd_head_k(il) / n_embd_head_v(il))."""
        if il < len(self.swa_layers) and self.swa_layers[il] and self.sliding_window:
            return self.head_dim_k_swa or self.head_dim_k, self.head_dim_v_swa or self.head_dim_v
        return self.head_dim_k, self.head_dim_v

    @property
    def n_embd_r(self) -> int:
        """Elements of one sequence's rolling (conv / token-shift) state per recurrent layer: llama_hparams::n_embd_r
        (src/llama-hparams.cpp)."""
        if self.wkv_head_size:  # RWKV: the shifted previous token(s)
            return self.token_shift_count * self.n_embd
        if self.shortconv_l_cache:  # LFM2 short convolution
            return self.n_embd * (self.shortconv_l_cache - 1)
        # Mamba's conv state; the first column is shifted out each step, hence d_conv - 1
        return max(self.ssm_d_conv - 1, 0) * (self.ssm_d_inner + 2 * self.ssm_n_group * self.ssm_d_state)

    @property
    def n_embd_s(self) -> int:
        """Elements of one sequence's SSM / wkv state per recurrent layer: llama_hparams::n_embd_s."""
        if self.wkv_head_size:
            return self.n_embd * self.wkv_head_size
        return self.ssm_d_state * self.ssm_d_inner

    @property
    def is_recurrent(self) -> bool:
        """Some layer keeps a recurrent state (a purely recurrent or a hybrid model)."""
        return any(self.recurrent_layers)

    @property
    def weights_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    def layer_tensors(self) -> dict[int | None, list[TensorFacts]]:
        """Tensors grouped per repeating layer; key None holds the non-layer ones (token_embd, output ...)."""
        groups: dict[int | None, list[TensorFacts]] = {}
        for t in self.tensors:
            groups.setdefault(t.layer, []).append(t)
        return groups

    def layer_bytes(self) -> list[int]:
        """Bytes of each repeating layer's tensors."""
        out = [0] * self.n_layer
        for t in self.tensors:
            if t.layer is not None and t.layer < self.n_layer:
                out[t.layer] += t.nbytes
        return out

    def tensor(self, name: str) -> TensorFacts | None:
        for t in self.tensors:
            if t.name == name:
                return t
        return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                             if f.name not in ("tensors", "metadata")}
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["weights_bytes"] = self.weights_bytes
        d["tensor_count"] = len(self.tensors)
        layers: dict[str, list[dict[str, Any]]] = {}
        for key, ts in self.layer_tensors().items():
            layers["global" if key is None else str(key)] = [
                {"name": t.name, "shape": list(t.shape), "type": t.type_name, "bytes": t.nbytes} for t in ts]
        d["tensors"] = layers
        return d


class HeaderIncomplete(BadInputError):
    """The buffer holds only the first bytes of a larger file and the header goes on past them: fetch more (a Hub
    file read by range requests, advisor.hub.gguf). Never raised for a whole local file."""

    def __init__(self, path: str, have: int) -> None:
        super().__init__(f"{path}: the header goes on past the first {have} bytes")
        self.have = have


class _Header:
    """Sequential reader over a mapped header that turns every overrun into a BadInputError.

    ``file_size`` is the size of the whole file when ``buf`` holds only its first bytes (a range request): an
    overrun then raises HeaderIncomplete instead of calling the file truncated."""

    def __init__(self, buf: mmap.mmap | bytes, path: str, file_size: int | None = None) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path
        self.size = len(buf)
        self.file_size = self.size if file_size is None else file_size

    def fail(self, what: str) -> BadInputError:
        return BadInputError(f"{self.path}: not a valid GGUF file ({what} at byte {self.pos})")

    def overrun(self, what: str, end: int = 0) -> BadInputError:
        """The error for a read that would end at ``end`` (> the buffer): past the whole file it is a truncated or
        corrupt file, within it only the buffer is short."""
        if self.size < self.file_size and end <= self.file_size:
            return HeaderIncomplete(self.path, self.size)
        return self.fail(what)

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            raise self.overrun("file ends inside the header: truncated")
        v = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return v[0] if len(v) == 1 else v

    def string(self, decode: bool = True, limit: int = MAX_STRING_BYTES) -> Any:
        """The next string; one longer than ``limit`` bytes is skipped and comes back as a LongString."""
        n = self.unpack("<Q")
        if n > self.size - self.pos:
            raise self.overrun(f"string of {n} bytes runs past the end of the file: truncated or corrupt",
                               self.pos + n)
        if n > limit:
            self.pos += n
            return LongString(8, n)
        raw = self.buf[self.pos:self.pos + n] if decode else b""
        self.pos += n
        return raw.decode("utf-8", "replace") if decode else ""

    def name(self, what: str, limit: int) -> str:
        """A key or tensor name: at most ``limit`` bytes (longer ones make the file invalid)."""
        start = self.pos
        value = self.string(limit=limit)
        if not isinstance(value, str):
            self.pos = start
            raise self.fail(f"{what} of {value.count} bytes (the limit is {limit})")
        return value


# GGUF value types (gguf.h enum gguf_type) -> struct format; 8 string, 9 array.
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclasses.dataclass(frozen=True)
class ArrayLen:
    """A long array in the header that was skipped: only its element type and length are kept."""

    vtype: int
    count: int


class LongString(ArrayLen):
    """A string value longer than MAX_STRING_BYTES that was skipped: only its length is kept (``count``)."""


def _value(h: _Header, vtype: int, key: str) -> Any:
    if vtype in _SCALAR:
        return h.unpack(_SCALAR[vtype])
    if vtype == 8:
        return h.string()
    if vtype == 9:
        etype = h.unpack("<I")
        count = h.unpack("<Q")
        if etype == 9:
            raise h.fail(f"nested array in {key!r}")
        if count > (MAX_STRING_ARRAY if etype == 8 else MAX_ARRAY):
            raise h.fail(f"array {key!r} claims {count} elements")
        if etype in _SCALAR:
            size = struct.calcsize(_SCALAR[etype])
            if count * size > h.size - h.pos:
                raise h.overrun(f"array {key!r} runs past the end of the file: truncated or corrupt",
                                h.pos + count * size)
            if count > _MAX_DECODED_ARRAY:
                h.pos += count * size
                return ArrayLen(etype, count)
            fmt = "<" + _SCALAR[etype][1] * count
            vals = struct.unpack_from(fmt, h.buf, h.pos)
            h.pos += count * size
            return list(vals)
        if etype == 8:
            if count > _MAX_DECODED_ARRAY:
                buf, pos, size = h.buf, h.pos, h.size
                unpack = struct.Struct("<Q").unpack_from
                for _ in range(count):  # skip: each element is u64 length + bytes
                    if pos + 8 > size:
                        h.pos = pos
                        raise h.overrun(f"array {key!r} runs past the end of the file: truncated", pos + 8)
                    pos += 8 + unpack(buf, pos)[0]
                if pos > size:
                    raise h.overrun(f"array {key!r} runs past the end of the file: truncated", pos)
                h.pos = pos
                return ArrayLen(etype, count)
            return [h.string(limit=MAX_KEY_BYTES) for _ in range(count)]
        raise h.fail(f"unknown array element type {etype} in {key!r}")
    raise h.fail(f"unknown value type {vtype} for key {key!r}")


@dataclasses.dataclass
class _RawFile:
    version: int
    kv: dict[str, Any]
    tensors: list[tuple[str, tuple[int, ...], int, int]]  # name, shape, type, offset
    data_offset: int
    file_size: int


def _read_raw(path: str) -> _RawFile:
    from advisor.strict import open_regular

    fd = open_regular(path)  # a FIFO or device is refused without blocking; "cannot read PATH: ..." otherwise
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(fd).st_size
        if size < 24:
            head = f.read(4)
            if head != GGUF_MAGIC:
                raise BadInputError(f"{path}: not a GGUF file (no 'GGUF' magic)")
            raise BadInputError(f"{path}: not a valid GGUF file (only {size} bytes: truncated)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(mm, path, size)


def parse_header(buf: bytes, path: str, file_size: int) -> _RawFile:
    """Parse the header from the first bytes ``buf`` of a file of ``file_size`` bytes (a range request's answer).
    Raises HeaderIncomplete when the header goes on past ``buf``, BadInputError when it is not a valid GGUF."""
    if len(buf) < 4 or buf[:4] != GGUF_MAGIC:
        raise BadInputError(f"{path}: not a GGUF file (no 'GGUF' magic)")
    if file_size < 24:
        raise BadInputError(f"{path}: not a valid GGUF file (only {file_size} bytes: truncated)")
    return _parse(buf, path, file_size)


def _parse(mm: mmap.mmap | bytes, path: str, size: int) -> _RawFile:
    h = _Header(mm, path, size)
    if mm[:4] != GGUF_MAGIC:
        raise BadInputError(f"{path}: not a GGUF file (no 'GGUF' magic)")
    h.pos = 4
    version = h.unpack("<I")
    if version not in SUPPORTED_VERSIONS:
        raise BadInputError(f"{path}: unsupported GGUF version {version} (supported: 2 and 3)")
    n_tensors, n_kv = h.unpack("<QQ")
    # Every kv and tensor info takes at least 8+4 bytes: larger counts mean a corrupt header.
    if n_tensors > size // 12 or n_kv > size // 12:
        raise BadInputError(f"{path}: not a valid GGUF file (header claims {n_tensors} tensors and {n_kv} keys "
                            f"in {size} bytes: truncated or corrupt header)")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KEYS:
        raise BadInputError(f"{path}: not a valid GGUF file (header claims {n_tensors} tensors and {n_kv} keys; "
                            f"the limits are {MAX_TENSORS} and {MAX_KEYS})")
    kv: dict[str, Any] = {}
    for _ in range(n_kv):
        key = h.name("key", MAX_KEY_BYTES)
        if key in kv:  # gguf.cpp: "duplicate key"
            raise h.fail(f"duplicate key {key!r}")
        vtype = h.unpack("<I")
        kv[key] = _value(h, vtype, key)
    tensors = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = h.name("tensor name", GGML_MAX_NAME - 1)
        if name in names:  # gguf.cpp: "duplicate tensor name"
            raise h.fail(f"duplicate tensor name {name!r}")
        names.add(name)
        n_dims = h.unpack("<I")
        if not 1 <= n_dims <= GGML_MAX_DIMS:
            raise h.fail(f"tensor {name!r} has {n_dims} dimensions")
        shape = tuple(h.unpack("<" + "Q" * n_dims)) if n_dims > 1 else (h.unpack("<Q"),)
        if any(d > INT64_MAX for d in shape) or _product(shape) > INT64_MAX:
            raise h.fail(f"tensor {name!r} has shape {list(shape)}: more than INT64_MAX elements")
        ttype = h.unpack("<I")
        offset = h.unpack("<Q")
        if not ggml.is_known(ttype):
            raise BadInputError(f"{path}: tensor {name!r} has unknown ggml type {ttype} (newer than this gguf "
                                "package? upgrade gguf)")
        blck, _ = ggml.block_size(ttype)
        if shape[0] % blck:
            raise h.fail(f"tensor {name!r} row of {shape[0]} is not a multiple of the block size {blck}")
        tensors.append((name, shape, ttype, offset))
    align = kv.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or isinstance(align, bool) or align <= 0 or align & (align - 1):
        raise BadInputError(f"{path}: not a valid GGUF file (general.alignment = {align!r})")
    for name, _, _, offset in tensors:
        if offset % align:  # gguf.cpp gguf_tensor_info: "offset ... must be a multiple of ALIGNMENT"
            raise BadInputError(f"{path}: not a valid GGUF file (tensor {name!r} at offset {offset}, not a multiple "
                                f"of the alignment {align})")
    data_offset = (h.pos + align - 1) // align * align
    return _RawFile(version, kv, tensors, data_offset, size)


def _product(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def check_split(name: str, m: re.Match[str]) -> tuple[int, int]:
    """(index, count) of a split name; gguf-split numbers shards 1..count (llama_split_path: "%s-%05d-of-%05d.gguf"
    with split_no + 1), so 0 or an index past the count is no shard of a split model."""
    index, count = int(m.group("idx")), int(m.group("count"))
    if not 1 <= index <= count:
        raise BadInputError(f"{name}: not a split-model shard name (shard {index} of {count}: shards are numbered "
                            "from 1 to the count)")
    return index, count


def split_files(path: str) -> list[str]:
    """All shards of a split model given any one of them, in order; ``[path]`` for a single file."""
    p = Path(path)
    m = SPLIT_RE.match(p.name)
    if not m:
        return [str(p)]
    index, count = check_split(path, m)
    files = [p.with_name(f"{m.group('prefix')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise BadInputError(f"{path}: split model is missing shard(s) {', '.join(missing)}")
    return [str(f) for f in files]


def read_gguf_facts(path: str | os.PathLike[str]) -> ModelFacts:
    """Read a local GGUF (or every shard of a split one) and return its facts. Raises BadInputError."""
    files = split_files(os.fspath(path))
    return facts_from_raw(os.fspath(path), files, [_read_raw(f) for f in files])


def facts_from_raw(path: str, files: list[str], raws: list[_RawFile]) -> ModelFacts:
    """Facts of a model from its shards' parsed headers (``raws[i]`` is ``files[i]``'s); each raw's ``file_size``
    is the whole file's, so a tensor that ends past it means a truncated file."""
    kv = {k: v for k, v in raws[0].kv.items() if not isinstance(v, LongString)}  # skipped strings: as if absent
    tensors: list[TensorFacts] = []
    for i, (f, raw) in enumerate(zip(files, raws)):
        for name, shape, ttype, offset in raw.tensors:
            nb = ggml.nbytes(ttype, shape)
            end = raw.data_offset + offset + nb
            if end > raw.file_size:
                raise BadInputError(f"{f}: truncated: tensor {name!r} ends at byte {end} but the file has "
                                    f"{raw.file_size} bytes")
            tensors.append(TensorFacts(name, shape, ttype, nb, i, raw.data_offset + offset))
    _check_values(path, kv, tensors)
    try:
        return _facts(path, files, raws[0].version, kv, tensors, raws[0].data_offset,
                      sum(r.file_size for r in raws))
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:  # a value of a type llama.cpp refuses
        raise BadInputError(f"{path}: not a usable GGUF model (a header value has the wrong type: {exc})") from None


#: ``{arch}.<key>`` values read as integers (llama_model::load_hparams reads them with get_key into uint32_t
#: fields; llama_model_loader refuses a value of another GGUF type: "key has wrong type").
INT_KEYS = ("block_count", "embedding_length", "attention.head_count", "attention.head_count_kv",
            "attention.key_length", "attention.value_length", "feed_forward_length", "vocab_size",
            "attention.sliding_window", "context_length", "expert_count", "expert_used_count",
            "expert_feed_forward_length", "expert_shared_count", "attention.kv_lora_rank", "attention.key_length_mla",
            "attention.value_length_mla", "ssm.conv_kernel", "ssm.inner_size", "ssm.state_size",
            "ssm.time_step_rank", "ssm.group_count", "wkv.head_size", "token_shift_count", "shortconv.l_cache",
            "full_attention_interval", "nextn_predict_layers")


def _check_values(path: str, kv: dict[str, Any], tensors: list[TensorFacts]) -> None:
    """Refuse what llama.cpp would refuse or what would make the estimates nonsense, before anything is sized from
    it: the model's integer hyper-parameters must be integers in [0, UINT32_MAX], its floats finite, the layer count
    within LLAMA_MAX_LAYERS, the experts within LLAMA_MAX_EXPERTS and every ``blk.N.`` tensor named with a number
    below LLAMA_MAX_LAYERS."""
    import math

    arch = kv.get("general.architecture")
    if not isinstance(arch, str):
        return  # _facts names the missing architecture
    prefix = f"{arch}."
    n_layer = kv.get(prefix + "block_count")
    if isinstance(n_layer, int) and n_layer > LLAMA_MAX_LAYERS:
        raise BadInputError(f"{path}: {prefix}block_count = {n_layer} layers; llama.cpp supports at most "
                            f"{LLAMA_MAX_LAYERS}")
    n_expert = kv.get(prefix + "expert_count")
    if isinstance(n_expert, int) and n_expert > LLAMA_MAX_EXPERTS:
        raise BadInputError(f"{path}: {n_expert} experts; llama.cpp supports at most {LLAMA_MAX_EXPERTS}")
    used = kv.get(prefix + "expert_used_count")
    used_max = max((u for u in (used if isinstance(used, list) else [used]) if isinstance(u, int)), default=0)
    if used_max > (n_expert if isinstance(n_expert, int) else 0):
        # llama-model.cpp load_hparams: GGML_ASSERT(n_expert_used_max <= hparams.n_expert)
        raise BadInputError(f"{path}: {prefix}expert_used_count = {used_max} exceeds expert_count = "
                            f"{n_expert if isinstance(n_expert, int) else 0}; llama.cpp refuses such a model")
    for key, value in kv.items():
        if not key.startswith(prefix):
            continue
        items = value if isinstance(value, list) else [value]
        for v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise BadInputError(f"{path}: {key} = {v}: not a finite number")
            if isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= UINT32_MAX and key[len(prefix):] \
                    in INT_KEYS:
                raise BadInputError(f"{path}: {key} = {v}: outside 0..{UINT32_MAX}")
        if key[len(prefix):] in INT_KEYS and not all(isinstance(v, int) for v in items):
            raise BadInputError(f"{path}: {key} must be an integer (or one per layer), not {_kind(value)}")
    for t in tensors:  # "blk.%d." with a layer llama.cpp can have (a NextN layer may follow block_count's)
        if t.name.startswith("blk.") and (t.layer is None or t.layer >= LLAMA_MAX_LAYERS):
            raise BadInputError(f"{path}: tensor {t.name!r} names no layer a llama.cpp model can have (blk.N. with "
                                f"N below {LLAMA_MAX_LAYERS})")


def _kind(value: Any) -> str:
    if isinstance(value, ArrayLen):
        return f"an array of {value.count} elements"
    return f"{type(value).__name__} {value!r}"[:80]


def _per_layer(v: Any, n_layer: int, what: str, path: str) -> tuple[int, ...]:
    if isinstance(v, list):
        if len(v) != n_layer:
            raise BadInputError(f"{path}: {what} has {len(v)} entries for {n_layer} layers")
        return tuple(int(x) for x in v)
    return (int(v),) * n_layer


def _dim(v: Any) -> int:
    """A head size key: a non-negative int below 2**16 (anything else is ignored: 0)."""
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**16 else 0


def _facts(path: str, files: list[str], version: int, kv: dict[str, Any], tensors: list[TensorFacts],
           data_offset: int, file_bytes: int) -> ModelFacts:
    arch = kv.get("general.architecture")
    if not isinstance(arch, str):
        raise BadInputError(f"{path}: GGUF has no general.architecture: not a model file")

    def get(key: str, default: Any = None) -> Any:
        return kv.get(f"{arch}.{key}", default)

    def need(key: str) -> Any:
        v = get(key)
        if v is None:
            raise BadInputError(f"{path}: GGUF has no {arch}.{key}: unsupported or incomplete model file")
        return v

    n_all = int(need("block_count"))
    # NextN/MTP layers count in block_count but are not part of the model llama.cpp runs: hparams.n_layer() is
    # n_layer_all - n_layer_nextn, their tensors load TENSOR_SKIP (unless an MTP context asks for them) and the
    # KV cache leaves them out (src/llama-hparams.cpp, src/models/glm4-moe.cpp load_arch_tensors,
    # src/llama-model.cpp create_memory layer filters)
    n_nextn = int(get("nextn_predict_layers", 0) or 0)
    if n_nextn >= n_all:
        raise BadInputError(f"{path}: {arch}.nextn_predict_layers = {n_nextn} of {n_all} blocks leaves no layer to "
                            "run: not a model llama.cpp can load")
    n_layer = n_all - n_nextn
    n_embd = int(need("embedding_length"))
    heads = _per_layer(get("attention.head_count", 0), n_all, "head_count", path)
    n_head_kv = _per_layer(get("attention.head_count_kv", list(heads)), n_all, "head_count_kv", path)[:n_layer]
    n_head = heads[:n_layer]
    head0 = max(n_head) if n_head else 0
    default_hd = n_embd // head0 if head0 else 0
    head_k = int(get("attention.key_length", default_hd))
    head_v = int(get("attention.value_length", default_hd))
    n_ff = _per_layer(get("feed_forward_length", 0), n_all, "feed_forward_length", path)[:n_layer]

    n_vocab = _n_vocab(kv, tensors, get)
    n_swa = int(get("attention.sliding_window", 0) or 0)
    swa_layers = _swa_layers(arch, n_layer, n_swa, get)
    recurrent = _recurrent_layers(arch, n_layer, n_head_kv, get)
    kv_from = _kv_from_start(arch, n_layer, get)
    shift = int(get("token_shift_count", TOKEN_SHIFT_COUNT_DEFAULT) or 0) if get("wkv.head_size") else 0

    names = {t.name for t in tensors}
    template = kv.get("tokenizer.chat_template")
    small_meta = {k: v for k, v in kv.items() if not isinstance(v, (ArrayLen, list)) or
                  (isinstance(v, list) and len(v) <= 256)}
    return ModelFacts(
        path=path, files=tuple(files), gguf_version=version, architecture=arch,
        name=kv.get("general.name"), file_type=kv.get("general.file_type"),
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim_k=head_k, head_dim_v=head_v,
        n_ff=n_ff, n_vocab=n_vocab, n_ctx_train=int(get("context_length", 0) or 0),
        sliding_window=n_swa, swa_layers=swa_layers,
        n_expert=int(get("expert_count", 0) or 0), n_expert_used=int(get("expert_used_count", 0) or 0),
        n_ff_exp=int(get("expert_feed_forward_length", 0) or 0),
        n_expert_shared=int(get("expert_shared_count", 0) or 0),
        kv_lora_rank=int(get("attention.kv_lora_rank", 0) or 0),
        key_length_mla=int(get("attention.key_length_mla", 0) or 0),
        value_length_mla=int(get("attention.value_length_mla", 0) or 0),
        tied_embeddings="output.weight" not in names,
        tensors=tuple(tensors), data_offset=data_offset, file_bytes=file_bytes,
        chat_template=template if isinstance(template, str) else None, metadata=small_meta,
        ssm_d_conv=int(get("ssm.conv_kernel", 0) or 0), ssm_d_inner=int(get("ssm.inner_size", 0) or 0),
        ssm_d_state=int(get("ssm.state_size", 0) or 0), ssm_dt_rank=int(get("ssm.time_step_rank", 0) or 0),
        ssm_n_group=int(get("ssm.group_count", 0) or 0), wkv_head_size=int(get("wkv.head_size", 0) or 0),
        head_dim_k_swa=_dim(get("attention.key_length_swa", 0)),
        head_dim_v_swa=_dim(get("attention.value_length_swa", 0)),
        n_layer_kv_from_start=kv_from if 0 < kv_from < n_layer else -1,
        token_shift_count=shift, shortconv_l_cache=int(get("shortconv.l_cache", 0) or 0),
        recurrent_layers=recurrent, n_layer_nextn=n_nextn,
    )


def _n_vocab(kv: dict[str, Any], tensors: list[TensorFacts], get: Any) -> int:
    """The vocabulary size: {arch}.vocab_size, else the token list's length, else token_embd's second dimension."""
    tok = kv.get("tokenizer.ggml.tokens")
    embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
    if get("vocab_size") is not None:
        return int(get("vocab_size"))
    if isinstance(tok, ArrayLen):
        return tok.count
    if isinstance(tok, list):
        return len(tok)
    if embd is not None and len(embd.shape) > 1:
        return embd.shape[1]
    return 0


def _swa_layers(arch: str, n_layer: int, n_swa: int, get: Any) -> tuple[bool, ...]:
    """Which layers use the sliding window of ``n_swa`` tokens (all False without one)."""
    pattern = get("attention.sliding_window_pattern")
    if n_swa == 0:
        return (False,) * n_layer
    if isinstance(pattern, list):  # per-layer flags (get_key_or_arr)
        return tuple(bool(x) for x in pattern[:n_layer]) + (False,) * max(0, n_layer - len(pattern))
    period = int(pattern) if pattern is not None else SWA_PERIOD_DEFAULT.get(arch, 0)
    # period 0: every layer is SWA (set_swa_pattern: n == 0 || il % n < n - 1)
    return tuple(period == 0 or il % period < period - 1 for il in range(n_layer))


def _kv_from_start(arch: str, n_layer: int, get: Any) -> int:
    """The first layer that reuses an earlier layer's KV cache (-1 if none is known; ModelFacts keeps it only in
    0 < kv_from < n_layer)."""
    # KV sharing: gemma3n hard-codes n_layer_kv_from_start = 20 (src/models/gemma3n.cpp); gemma4 shares the last
    # {arch}.attention.shared_kv_layers layers (src/models/gemma4.cpp)
    kv_from = KV_FROM_START.get(arch, -1)
    shared = get("attention.shared_kv_layers")
    if isinstance(shared, int) and 0 < shared < n_layer:
        kv_from = n_layer - shared
    return kv_from


def _recurrent_layers(arch: str, n_layer: int, n_head_kv: tuple[int, ...], get: Any) -> tuple[bool, ...]:
    """Which layers llama.cpp gives a recurrent-state slot (see RECURRENT_ARCHS and the HYBRID_* sets); () if none."""
    if arch in RECURRENT_ARCHS or arch in HYBRID_ALL_LAYERS:
        return (True,) * n_layer
    if arch in HYBRID_BY_KV0:
        return tuple(h == 0 for h in n_head_kv)
    if arch in HYBRID_BY_INTERVAL:
        interval = int(get("full_attention_interval", FULL_ATTN_INTERVAL_DEFAULT) or FULL_ATTN_INTERVAL_DEFAULT)
        return tuple((il + 1) % interval != 0 for il in range(n_layer))
    return ()
