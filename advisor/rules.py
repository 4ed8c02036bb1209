"""The planner's rules: declarative TOML under ``rules/`` (schema in rules/README.md), a closed vocabulary of
predicates and of parameters, and a tiny matcher.

A rule is ``id``, ``when`` (predicate name -> argument, all must hold), ``set`` (parameter name -> value),
``reason`` and ``source``. For each parameter the first matching rule, in file order (files sorted by name), wins;
the planner quotes that rule's reason. Predicates are registered with ``@predicate(name)`` (archspec's
``alias_predicate`` style) and read only a ``Subject``: facts about the machine, the request and the candidate, so
matching is pure. tests/test_rules.py checks that every predicate and parameter used in the data is known here, and
the reverse.

``rules/gpus.toml`` is a table, not rules: GPU name patterns with compute capability, bandwidth and TFLOPs.
``rules/backends.toml`` is the estimator's table (advisor.gguf.estimate.backend_rules) and is not read here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import BadInputError
from advisor.strict import build, read_toml

SCHEMA_VERSION = 1
#: Files under rules/ that are tables owned by other modules, not rules.
OTHER_TABLES = ("backends.toml",)


class RuleError(BadInputError):
    """A rules file does not follow the schema."""

    hint = "see rules/README.md for the schema"


@dataclass(frozen=True)
class Subject:
    """What predicates may look at. Built by the planner for one machine, request and (optionally) candidate."""

    os: str = "linux"
    arch: str = "x86_64"
    gpu_vendor: str = "none"  # vendor of the GPUs in use: nvidia | amd | apple | intel | none
    backend: str = "cpu_x86"  # cuda | rocm | metal | vulkan | sycl | cpu_x86 | cpu_arm
    gpu_names: tuple[str, ...] = ()
    gpu_memory_gib: float = 0.0  # sum over the GPUs in use
    gpu_memory_per_device_gib: float = 0.0  # the smallest of them
    compute_capability: float | None = None  # the lowest of the GPUs in use, e.g. 7.5
    unified_memory: bool = False
    mig: bool = False
    physical_cores: int = 0
    has_swap: bool = False
    concurrency: int = 1
    task: str = "chat"  # the request's --task
    gfx_targets: tuple[str, ...] = ()  # AMD GPUs' LLVM targets (gfx90a, gfx1100...), lower case
    cpu_model: str = ""  # the CPU's model name as the probe read it (/proc/cpuinfo, sysctl)


Predicate = Callable[[Subject, Any], bool]
PREDICATES: dict[str, Predicate] = {}


def predicate(name: str) -> Callable[[Predicate], Predicate]:
    """Register a predicate under ``name``; a second registration of the same name is a bug."""

    def register(fn: Predicate) -> Predicate:
        if name in PREDICATES:
            raise ValueError(f"predicate {name!r} registered twice")
        PREDICATES[name] = fn
        return fn

    return register


def _names(arg: Any) -> list[str]:
    return [str(a) for a in (arg if isinstance(arg, list) else [arg])]


@predicate("os_in")
def _os_in(s: Subject, arg: Any) -> bool:
    return s.os in _names(arg)


@predicate("arch_in")
def _arch_in(s: Subject, arg: Any) -> bool:
    return s.arch in _names(arg)


@predicate("gpu_vendor_in")
def _gpu_vendor_in(s: Subject, arg: Any) -> bool:
    return s.gpu_vendor in _names(arg)


@predicate("backend_in")
def _backend_in(s: Subject, arg: Any) -> bool:
    return s.backend in _names(arg)


@predicate("cpu_only")
def _cpu_only(s: Subject, arg: Any) -> bool:
    return (s.gpu_vendor == "none") == bool(arg)


@predicate("unified_memory")
def _unified(s: Subject, arg: Any) -> bool:
    return s.unified_memory == bool(arg)


@predicate("has_swap")
def _has_swap(s: Subject, arg: Any) -> bool:
    return s.has_swap == bool(arg)


@predicate("gpu_name_matches")
def _gpu_name_matches(s: Subject, arg: Any) -> bool:
    return any(re.search(p, n, re.I) for p in _names(arg) for n in s.gpu_names)


@predicate("cpu_model_matches")
def _cpu_model_matches(s: Subject, arg: Any) -> bool:
    return any(re.search(p, s.cpu_model, re.I) for p in _names(arg))


@predicate("gpu_name_excludes")
def _gpu_name_excludes(s: Subject, arg: Any) -> bool:
    return not _gpu_name_matches(s, arg)


@predicate("min_gpu_memory_gib")
def _min_gpu_memory(s: Subject, arg: Any) -> bool:
    return s.gpu_memory_gib >= float(arg)


@predicate("min_gpu_memory_per_device_gib")
def _min_gpu_memory_per_device(s: Subject, arg: Any) -> bool:
    return s.gpu_memory_per_device_gib >= float(arg)


@predicate("max_compute_capability")
def _max_cc(s: Subject, arg: Any) -> bool:
    return s.compute_capability is not None and s.compute_capability <= float(arg)


@predicate("min_concurrency")
def _min_concurrency(s: Subject, arg: Any) -> bool:
    return s.concurrency >= int(arg)


@predicate("task_in")
def _task_in(s: Subject, arg: Any) -> bool:
    return s.task in _names(arg)


@predicate("gfx_target_excludes")
def _gfx_target_excludes(s: Subject, arg: Any) -> bool:
    """Some AMD GPU in use has a gfx target outside ``arg`` (or none is known)."""
    allowed = {a.lower() for a in _names(arg)}
    return s.gpu_vendor == "amd" and (not s.gfx_targets or any(g not in allowed for g in s.gfx_targets))


@predicate("arch_with_integrated_nvidia")
def _arch_with_integrated_nvidia(s: Subject, arg: Any) -> bool:
    """An NVIDIA GPU sharing the host's memory on an ARM host (Jetson/Tegra), equal to ``arg``."""
    return (s.gpu_vendor == "nvidia" and s.unified_memory and s.arch in ("aarch64", "arm64")) == bool(arg)


#: Every parameter a rule may set, with its type: the closed vocabulary of ``set`` (values are checked on load).
PARAMETERS: dict[str, type | tuple[type, ...]] = {
    # margins.toml
    "device_headroom_mib": int, "display_reserve_mib": int, "ram_reserve_mib": int,
    "ram_reserve_fraction": float, "host_footprint_mib": int,
    # context.toml
    "default_ctx": int, "ctx_floor": int, "task_ctx": int, "kv_cache_types": list,
    # engines.toml
    "engines": list, "vllm_runs": bool,
    # quants.toml
    "quant_penalty": dict, "quant_equivalent": dict, "partial_offload_penalty": float,
    # vllm.toml
    "max_num_batched_tokens": int, "max_num_seqs": int, "gpu_memory_utilization": float,
    "max_gpu_memory_utilization": float, "block_size": int, "cuda_context_mib": int, "cuda_graph_mib": int,
    "non_torch_mib": int, "non_torch_tp_mib": int, "sampler_bytes_per_logit": dict, "redundancy_mib": int,
    "activation_floats_per_token": float, "vllm_dtype": str, "typical_request_tokens": int,
    "vllm_kv_cache_dtypes": list,
    # llama.toml
    "batch": int, "ubatch": int, "flash_attn": str, "mlock": bool,
    # speed.toml
    "decode_bandwidth_efficiency": dict, "decode_layer_overhead_us": dict, "prefill_compute_efficiency": dict,
    "prefill_matrix_rate": dict, "fp32_accumulate_figure_match": list, "op_offload_h2d_gbs": float,
    "moe_half_rate_tokens": dict, "graph_kernels_per_layer": dict, "graph_kernels_n_used": dict,
    "graph_kernels_reference": float, "graph_kernels_moe_extra": float, "moe_token_tile": dict, "igpu_match": list,
    "prefill_attention_rate": dict,
    "cpu_prefill_gflops_per_core": dict, "prediction_range": dict, "hbm_gpu_match": list, "cpu_bandwidth_gbs": float,
    "cpu_bandwidth_per_core_gbs": float,
    "cpu_gflops_per_core": float, "min_decode_tokens_per_s": float,
    # speed-aware ranking (interactive.toml)
    "interactive_tokens_per_s": float, "slow_penalty_points": float, "slow_penalty_per_halving": float,
}


@dataclass(frozen=True)
class Rule:
    id: str
    reason: str
    source: str
    when: dict[str, Any] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)

    def matches(self, subject: Subject) -> bool:
        return all(PREDICATES[name](subject, arg) for name, arg in self.when.items())


@dataclass(frozen=True)
class RuleFile:
    schema: int
    rule: list[Rule] = field(default_factory=list)


@dataclass(frozen=True)
class GpuSpec:
    match: str
    vendor: str
    bandwidth_gbs: float
    fp16_tflops: float
    source: str
    compute_capability: str | None = None
    #: True for a catch-all row that is no datasheet: the planner prefers what the driver reports, and notes it
    derived: bool = False
    #: the row applies only to GPUs with at least this many cores (Apple Max chips come in two configurations)
    cores_at_least: int | None = None
    #: the GPU cores fp16_tflops is given for (Apple): a chip with another core count, as the probe reads it, gets
    #: the figure scaled by its cores (one generation's cores run at one clock)
    gpu_cores: int | None = None

    def tflops_for(self, cores: int | None) -> float:
        """fp16_tflops for a GPU of ``cores`` cores (the row's own figure where either count is unknown)."""
        if self.gpu_cores and cores:
            return self.fp16_tflops * cores / self.gpu_cores
        return self.fp16_tflops


@dataclass(frozen=True)
class GpuFile:
    schema: int
    gpu: list[GpuSpec] = field(default_factory=list)


@dataclass(frozen=True)
class Resolved:
    """Parameter values for one subject, and the rule each came from."""

    values: dict[str, Any]
    rules: dict[str, Rule]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def why(self, name: str) -> str:
        rule = self.rules[name]
        return f"{rule.reason} [rule {rule.id}; {rule.source}]"


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...]
    gpus: tuple[GpuSpec, ...]
    data_dir: Path | None = None

    def resolve(self, subject: Subject) -> Resolved:
        """Every parameter's value: the first matching rule that sets it. A parameter no rule sets is a data bug."""
        values: dict[str, Any] = {}
        chosen: dict[str, Rule] = {}
        for rule in self.rules:
            if not rule.matches(subject):
                continue
            for name, value in rule.set.items():
                if name not in values:
                    values[name] = value
                    chosen[name] = rule
        missing = sorted(set(PARAMETERS) - set(values))
        if missing:
            raise RuleError(f"no rule sets {', '.join(missing)} for this machine (a catch-all rule is missing)")
        return Resolved(values, chosen)

    def gpu_spec(self, name: str, vendor: str, cores: int | None = None) -> GpuSpec | None:
        for spec in self.gpus:
            if spec.cores_at_least and (cores or 0) < spec.cores_at_least:
                continue
            if spec.vendor in (vendor, "any") and re.search(spec.match, name, re.I):
                return spec
        return None


def _check_rule(rule: Rule, where: str) -> None:
    for name in rule.when:
        if name not in PREDICATES:
            raise RuleError(f"{where}: unknown predicate {name!r} (known: {', '.join(sorted(PREDICATES))})")
    for name, value in rule.set.items():
        expected = PARAMETERS.get(name)
        if expected is None:
            raise RuleError(f"{where}: unknown parameter {name!r} (known: {', '.join(sorted(PARAMETERS))})")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise RuleError(f"{where}: parameter {name!r} must be {getattr(expected, '__name__', expected)}, "
                            f"got {value!r}")
    if not rule.reason.strip() or not rule.source.strip():
        raise RuleError(f"{where}: a rule needs a reason and a source")


def _read(path: Path) -> dict[str, Any]:
    return read_toml(path, RuleError)


def rules_dir(env: dict[str, str] | None = None) -> Path:
    """``rules/`` of the data root in use (advisor.settings.data_dir)."""
    from advisor.settings import data_dir

    return data_dir(env) / "rules"


def load_rules(directory: Path | None = None) -> Rules:
    """Load every ``rules/*.toml``; ``gpus.toml`` is the GPU table."""
    d = Path(directory) if directory is not None else rules_dir()
    files = sorted(d.glob("*.toml"))
    if not files:
        raise RuleError(f"no rules files under {d}")
    rules: list[Rule] = []
    gpus: list[GpuSpec] = []
    seen: dict[str, str] = {}
    for path in files:
        if path.name in OTHER_TABLES:
            continue
        data = _read(path)
        if path.name == "gpus.toml":
            gf: GpuFile = build(GpuFile, data, path.name, RuleError)
            if gf.schema != SCHEMA_VERSION:
                raise RuleError(f"{path.name}: schema {gf.schema}, this advisor reads schema {SCHEMA_VERSION}")
            for i, g in enumerate(gf.gpu):
                try:
                    re.compile(g.match)
                except re.error as exc:
                    raise RuleError(f"{path.name}: gpu[{i}].match: bad regular expression ({exc})") from None
            gpus += gf.gpu
            continue
        rf: RuleFile = build(RuleFile, data, path.name, RuleError)
        if rf.schema != SCHEMA_VERSION:
            raise RuleError(f"{path.name}: schema {rf.schema}, this advisor reads schema {SCHEMA_VERSION}")
        for i, rule in enumerate(rf.rule):
            where = f"{path.name}: rule[{i}] ({rule.id})"
            _check_rule(rule, where)
            if rule.id in seen:
                raise RuleError(f"{where}: rule id already used in {seen[rule.id]}")
            seen[rule.id] = path.name
            rules.append(rule)
    return Rules(tuple(rules), tuple(gpus), d)
