"""The plan: what the planner decided and the executor runs. ``advisor recommend --json`` prints plans,
``advisor run --plan FILE`` reads one back.

Settings are typed per engine and named as the engines name them; ``args`` is the exact engine argument list
(without host, port and API key, which belong to the run, not the plan). ``fallbacks`` is the ladder the executor
walks when a start fails: each rung is a settings change with its reason.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any

from advisor.errors import BadInputError
from advisor.strict import build

PLAN_SCHEMA = 1

LLAMA_CPP = "llama.cpp"
VLLM = "vllm"
BACKENDS = (LLAMA_CPP, VLLM)

#: The engines a plan can name (advisor.engines has one argv builder each), and each one's backend.
LLAMA_SERVER = "llama-server"
LLAMA_CPP_PYTHON = "llama-cpp-python"
VLLM_SERVER = "vllm"
ENGINE_BACKEND = {LLAMA_SERVER: LLAMA_CPP, LLAMA_CPP_PYTHON: LLAMA_CPP, VLLM_SERVER: VLLM}
#: The engine a plan that names none is for (plans written before plans named their engine).
DEFAULT_ENGINE = {LLAMA_CPP: LLAMA_SERVER, VLLM: VLLM_SERVER}


class PlanFileError(BadInputError):
    hint = "write a plan with 'advisor recommend --json' and pass one of its plans"


@dataclass(frozen=True)
class ModelRef:
    """Which model and which files. ``path`` is set for a local file or directory; otherwise ``repo`` and
    ``files`` (several for a split GGUF, in order) say what to fetch from the Hub, at ``revision``."""

    id: str
    repo: str | None = None
    files: list[str] = field(default_factory=list)
    revision: str | None = None
    path: str | None = None
    format: str = "gguf"  # gguf | safetensors | awq | gptq | fp8 | mxfp4
    quant: str | None = None
    params: int | None = None
    active_params: int | None = None
    size_bytes: int | None = None


@dataclass(frozen=True)
class LlamaCppSettings:
    """llama-server settings (tools/server/README.md names in comments)."""

    n_gpu_layers: int = 0  # -ngl
    ctx: int = 4096  # -c, total over all slots
    parallel: int = 1  # -np
    batch: int = 2048  # -b
    ubatch: int = 512  # -ub
    cache_type_k: str = "f16"  # -ctk
    cache_type_v: str = "f16"  # -ctv (quantized V needs flash attention)
    flash_attn: str = "auto"  # -fa on|off|auto
    threads: int | None = None  # -t
    mlock: bool = False  # --mlock
    mmap: bool = True  # --no-mmap when False
    tensor_split: list[float] | None = None  # -ts
    main_gpu: int | None = None  # -mg
    n_cpu_moe: int | None = None  # --n-cpu-moe: experts of the first N layers stay on the CPU
    fit: bool = False  # newer llama-server fits automatically unless told "--fit off"


@dataclass(frozen=True)
class VllmSettings:
    """vLLM engine arguments (vllm/engine/arg_utils.py names)."""

    max_model_len: int = 4096
    max_num_seqs: int = 256
    gpu_memory_utilization: float = 0.9
    kv_cache_dtype: str = "auto"
    tensor_parallel_size: int = 1
    quantization: str | None = None
    dtype: str = "auto"
    enforce_eager: bool = False
    max_num_batched_tokens: int | None = None
    #: CPU build only: KV cache space in GiB (env VLLM_CPU_KVCACHE_SPACE).
    cpu_kv_cache_gib: int | None = None


@dataclass(frozen=True)
class DeviceMemory:
    device: str  # cpu, gpu0, gpu1...
    weights_bytes: int = 0
    kv_cache_bytes: int = 0
    other_bytes: int = 0
    total_bytes: int = 0
    capacity_bytes: int | None = None


@dataclass(frozen=True)
class Predicted:
    """Speeds estimated from memory bandwidth and compute: an estimate, never a measurement."""

    decode_tokens_per_s: float | None = None
    prefill_tokens_per_s: float | None = None
    basis: str | None = None


@dataclass(frozen=True)
class EngineRef:
    """The engine a plan is for, on the machine it was planned for, and what that engine's build accepts.

    ``exe`` is llama-server's path, or the interpreter of a Python engine; None when the engine is not installed
    there yet (the command then names it the conventional way: ``llama-server``, ``python3``). ``flags`` is the
    flag support decided once, from the installed build's ``--help`` or from the engine's current release
    (advisor.engines.<engine>.FLAGS names each one); ``source`` says which.
    """

    name: str
    exe: str | None = None
    version: str | None = None
    flags: dict[str, bool] = field(default_factory=dict)
    source: str = ""

    @property
    def backend(self) -> str:
        return ENGINE_BACKEND[self.name]


@dataclass(frozen=True)
class Fallback:
    """One rung of the back-off ladder: the settings to use instead, and why that rung exists."""

    settings: dict[str, Any]
    reason: str


@dataclass(frozen=True)
class Plan:
    model: ModelRef
    backend: str
    llama_cpp: LlamaCppSettings | None = None
    vllm: VllmSettings | None = None
    #: The engine's arguments as they run, without the executable, host, port and API key (advisor.engines.argv).
    args: list[str] = field(default_factory=list)
    engine: EngineRef | None = None
    memory: list[DeviceMemory] = field(default_factory=list)
    predicted: Predicted = field(default_factory=Predicted)
    sampling: dict[str, float] = field(default_factory=dict)
    score: float = 0.0
    reasons: list[str] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    schema: int = PLAN_SCHEMA

    @property
    def engine_ref(self) -> EngineRef:
        """The engine the plan names, or the backend's default engine for a plan that names none."""
        return self.engine or EngineRef(DEFAULT_ENGINE[self.backend])

    @property
    def settings(self) -> LlamaCppSettings | VllmSettings:
        chosen = self.llama_cpp if self.backend == LLAMA_CPP else self.vllm
        if chosen is None:
            raise PlanFileError(f"the plan for {self.model.id} has no {self.backend} settings")
        return chosen

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["settings"] = data.pop("llama_cpp") if self.backend == LLAMA_CPP else data.pop("vllm")
        data.pop("llama_cpp", None)
        data.pop("vllm", None)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "plan") -> Plan:
        if not isinstance(data, dict):
            raise PlanFileError(f"{where}: expected a JSON object")
        if data.get("schema") != PLAN_SCHEMA:
            raise PlanFileError(f"{where}: plan schema {data.get('schema')!r} is not supported")
        data = dict(data)
        backend = data.get("backend")
        if backend not in BACKENDS:
            raise PlanFileError(f"{where}: backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        settings = data.pop("settings", None)
        data["llama_cpp" if backend == LLAMA_CPP else "vllm"] = settings
        engine = data.get("engine")
        if isinstance(engine, dict) and (not isinstance(engine.get("name"), str)
                                         or engine["name"] not in ENGINE_BACKEND):
            raise PlanFileError(f"{where}: engine.name must be one of {', '.join(ENGINE_BACKEND)}, "
                                f"not {engine.get('name')!r}")
        if isinstance(engine, dict) and ENGINE_BACKEND[engine["name"]] != backend:
            raise PlanFileError(f"{where}: engine {engine['name']} does not run the {backend} backend")
        key = "llama_cpp" if backend == LLAMA_CPP else "vllm"
        try:
            plan: Plan = build(cls, data, where, PlanFileError)
        except PlanFileError as exc:  # name the place as the file spells it: "settings", not the field behind it
            raise PlanFileError(exc.message.replace(f"{where}.{key}", f"{where}.settings")) from None
        check_plan(plan, where)
        return plan


# -- range checks for a plan read from a file (the planner's own plans pass them by construction) -----------------

#: llama.cpp's device limit (src/llama.cpp llama_max_devices() returns 16): tensor_split has one entry per device.
MAX_DEVICES = 16
#: n_ctx, n_batch, n_ubatch and n_seq_max are uint32_t in llama_context_params (include/llama.h); vLLM's lengths
#: are Python ints but no model has a context near this.
MAX_UINT32 = 2**32 - 1
#: An engine option value from a plan: a word such as "auto", "q8_0", "fp8_e4m3", "bfloat16".
_TOKEN = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
MAX_TEXT = 4096


def _fail(where: str, name: str, value: Any, want: str) -> PlanFileError:
    return PlanFileError(f"{where}: {name} = {value!r}: {want}"[:400])


def _int_in(where: str, name: str, value: int | None, low: int, high: int = MAX_UINT32) -> None:
    if value is not None and not low <= value <= high:
        raise _fail(where, name, value, f"must be between {low} and {high}")


def _text(where: str, name: str, value: str | None) -> None:
    if value is not None and (len(value) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in value)):
        raise _fail(where, name, value[:60], f"must be at most {MAX_TEXT} characters without control characters")


def check_plan(plan: Plan, where: str) -> None:
    """Refuse a plan whose values no engine accepts or whose strings could carry more than one argument's worth:
    counts in range, fractions finite and in range, option values single words, file names inside the repo."""
    m = plan.model
    for name in ("id", "repo", "revision", "path", "quant"):
        _text(where, f"model.{name}", getattr(m, name))
    for i, f in enumerate(m.files):
        _text(where, f"model.files[{i}]", f)
        if not f or f.startswith("/") or any(part in ("", ".", "..") for part in f.split("/")):
            raise _fail(where, f"model.files[{i}]", f, "must be a path inside the repository, without '..'")
    for name in ("params", "active_params", "size_bytes"):
        _int_in(where, f"model.{name}", getattr(m, name), 0, 2**62)
    for k, v in plan.sampling.items():
        if not math.isfinite(v):
            raise _fail(where, f"sampling.{k}", v, "must be a finite number")
    if plan.backend == LLAMA_CPP and plan.llama_cpp is not None:
        _check_llama(plan.llama_cpp, f"{where}: settings")
        for i, fb in enumerate(plan.fallbacks):
            _check_llama(_apply(plan.llama_cpp, fb.settings, f"{where}: fallbacks[{i}]"), f"{where}: fallbacks[{i}]")
    if plan.backend == VLLM and plan.vllm is not None:
        _check_vllm(plan.vllm, f"{where}: settings")
        for i, fb in enumerate(plan.fallbacks):
            _check_vllm(_apply(plan.vllm, fb.settings, f"{where}: fallbacks[{i}]"), f"{where}: fallbacks[{i}]")


def checked_settings(backend: str, data: Any, where: str) -> LlamaCppSettings | VllmSettings:
    """Settings for ``backend`` from a mapping of some of their fields (the rest default), built strictly and
    range-checked like a plan file's; raises PlanFileError."""
    if backend not in BACKENDS or not isinstance(data, dict):
        raise PlanFileError(f"{where}: no {backend!r} settings")
    kind = LlamaCppSettings if backend == LLAMA_CPP else VllmSettings
    settings = build(kind, {**dataclasses.asdict(kind()), **data}, where, PlanFileError)
    (_check_llama if backend == LLAMA_CPP else _check_vllm)(settings, where)
    return settings


def _apply(settings: Any, changes: dict[str, Any], where: str) -> Any:
    """The settings a fallback rung would run with, built as strictly as the plan's own."""
    return build(type(settings), {**dataclasses.asdict(settings), **changes}, f"{where}.settings", PlanFileError)


def _check_llama(s: LlamaCppSettings, where: str) -> None:
    from advisor.gguf.ggml import KV_CACHE_TYPES

    _int_in(where, "n_gpu_layers", s.n_gpu_layers, -1)  # -1: all layers (llama.cpp common.h n_gpu_layers)
    _int_in(where, "ctx", s.ctx, 0)  # 0: the model's trained context
    _int_in(where, "parallel", s.parallel, 1)
    _int_in(where, "batch", s.batch, 1)
    _int_in(where, "ubatch", s.ubatch, 1)
    _int_in(where, "threads", s.threads, 1, 1 << 16)
    _int_in(where, "main_gpu", s.main_gpu, 0, MAX_DEVICES - 1)
    _int_in(where, "n_cpu_moe", s.n_cpu_moe, 0)
    for name in ("cache_type_k", "cache_type_v"):
        if getattr(s, name) not in KV_CACHE_TYPES:
            raise _fail(where, name, getattr(s, name), f"must be one of {', '.join(KV_CACHE_TYPES)}")
    if s.flash_attn not in ("on", "off", "auto"):
        raise _fail(where, "flash_attn", s.flash_attn, "must be on, off or auto")
    if s.tensor_split is not None and (len(s.tensor_split) > MAX_DEVICES or not all(
            math.isfinite(x) and x >= 0 for x in s.tensor_split) or not any(s.tensor_split)):
        raise _fail(where, "tensor_split", s.tensor_split,
                    f"must be at most {MAX_DEVICES} finite non-negative numbers, not all 0")


def _check_vllm(s: VllmSettings, where: str) -> None:
    _int_in(where, "max_model_len", s.max_model_len, 1)
    _int_in(where, "max_num_seqs", s.max_num_seqs, 1)
    _int_in(where, "tensor_parallel_size", s.tensor_parallel_size, 1, 1024)
    _int_in(where, "max_num_batched_tokens", s.max_num_batched_tokens, 1)
    _int_in(where, "cpu_kv_cache_gib", s.cpu_kv_cache_gib, 0, 1 << 20)
    # vLLM CacheConfig: gpu_memory_utilization is a fraction of the GPU's memory, in (0, 1]
    if not (math.isfinite(s.gpu_memory_utilization) and 0 < s.gpu_memory_utilization <= 1):
        raise _fail(where, "gpu_memory_utilization", s.gpu_memory_utilization, "must be in (0, 1]")
    for name in ("kv_cache_dtype", "dtype", "quantization"):
        value = getattr(s, name)
        if value is not None and not _TOKEN.fullmatch(value):
            raise _fail(where, name, value, "must be one word (letters, digits, _ . + -)")
