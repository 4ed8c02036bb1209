"""The plan: what the planner decided and the executor runs. ``advisor recommend --json`` prints plans,
``advisor run --plan FILE`` reads one back.

Settings are typed per engine and named as the engines name them; ``args`` is the exact engine argument list
(without host, port and API key, which belong to the run, not the plan). ``fallbacks`` is the ladder the executor
walks when a start fails: each rung is a settings change with its reason.
"""

from __future__ import annotations

import dataclasses
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
        if isinstance(engine, dict) and engine.get("name") not in ENGINE_BACKEND:
            raise PlanFileError(f"{where}: engine.name must be one of {', '.join(ENGINE_BACKEND)}, "
                                f"not {engine.get('name')!r}")
        if isinstance(engine, dict) and ENGINE_BACKEND[engine["name"]] != backend:
            raise PlanFileError(f"{where}: engine {engine['name']} does not run the {backend} backend")
        key = "llama_cpp" if backend == LLAMA_CPP else "vllm"
        try:
            return build(cls, data, where, PlanFileError)
        except PlanFileError as exc:  # name the place as the file spells it: "settings", not the field behind it
            raise PlanFileError(exc.message.replace(f"{where}.{key}", f"{where}.settings")) from None
