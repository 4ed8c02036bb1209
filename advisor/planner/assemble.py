"""Turning a chosen configuration into a ``Plan``: settings, the exact engine arguments, sampling defaults and the
back-off ladder the executor walks when a start fails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

from advisor.catalog.model import Model
from advisor.gguf.estimate import Estimate
from advisor.plan import LLAMA_CPP, VLLM, DeviceMemory, Fallback, LlamaCppSettings, ModelRef, Plan, VllmSettings
from advisor.planner.machine import Machine

#: The catalog's sampling fields (catalog/README.md [model.sampling]) that plans carry; each engine module maps them
#: to its own flags (advisor/engines/*.py SAMPLING_*), the one place that knows them.
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")


def sampling_of(model: Model | None) -> dict[str, float]:
    if model is None:
        return {}
    s = model.sampling
    out = {k: getattr(s, k) for k in SAMPLING_FIELDS}
    return {k: v for k, v in out.items() if v is not None}


def llama_memory(est: Estimate, m: Machine) -> list[DeviceMemory]:
    """The estimate per device; a GPU's backend context/driver overhead (rules/backends.toml) is in its other_bytes
    and total_bytes, so that every entry is what the device needs."""
    gpus = {d.name: d for d in m.gpus}
    caps = {d.name: d.capacity_bytes for d in m.gpus}
    caps["cpu"] = caps["host"] = m.cpu.capacity_bytes
    out = []
    for d in est.devices:
        overhead = gpus[d.device].overhead_bytes if d.device in gpus else 0
        if d.device != "cpu" and d.total_bytes + overhead == 0:
            continue
        # A recurrent model's state (Mamba, RWKV, hybrids) is its per-sequence cache: counted with the KV cache.
        out.append(DeviceMemory(d.device, weights_bytes=d.weights_bytes,
                                kv_cache_bytes=d.kv_cache_bytes + d.recurrent_bytes,
                                other_bytes=d.compute_bytes + d.output_bytes + overhead,
                                total_bytes=d.total_bytes + overhead, capacity_bytes=caps.get(d.device)))
    return out


def llama_args(settings: LlamaCppSettings, ref: ModelRef, sampling: Mapping[str, float]) -> list[str]:
    """llama-server's argv without host/port/key: the executor's own builder (advisor.engines.llama_server, sampling
    defaults included), with the model named by Hub repo and file (llama-server -hfr/-hff download it) unless it is
    a local path."""
    from advisor.engines.llama_server import build_args

    args = build_args(settings, ref.path or (ref.files[0] if ref.files else ref.id), sampling=sampling)
    if ref.path is None and ref.repo and ref.files:
        args = ["-hfr", ref.repo, "-hff", ref.files[0], *args[2:]]
    return args


def vllm_args(settings: VllmSettings, ref: ModelRef, sampling: Mapping[str, float]) -> list[str]:
    """vLLM's argv without host/port/key: the executor's own builder (advisor.engines.vllm; sampling defaults through
    --override-generation-config), plus the Hub revision."""
    from advisor.engines.vllm import build_args

    args = build_args(settings, ref.path or ref.repo or ref.id, sampling=sampling)
    if ref.revision:
        args += ["--revision", ref.revision]
    return args


def sampling_notes(backend: str, sampling: Mapping[str, float]) -> list[str]:
    """What the plan's reasons say about the sampling defaults: how each engine receives them, and what it cannot."""
    from advisor.engines import llama_server, vllm

    if not sampling:
        return []
    shown = ", ".join(f"{k} {v:g}" for k, v in sampling.items())
    if backend == LLAMA_CPP:
        passed = [k for k in sampling if k in llama_server.SAMPLING_FLAGS]
        left = [k for k in sampling if k not in llama_server.SAMPLING_FLAGS]
        out = [f"sampling defaults from the model card ({shown}): llama-server gets "
               f"{', '.join(llama_server.SAMPLING_FLAGS[k] for k in passed) or 'none of them'} as its defaults "
               "(a request's own values win)"]
        if left:
            out.append(f"not passed to llama-server: {', '.join(left)} ({llama_server.SAMPLING_LEFT_OUT})")
        out.append("llama-cpp-python's server (the fallback engine) has no flags for sampling defaults: there the "
                   "client must send them")
        return out
    passed = [k for k in sampling if k in vllm.SAMPLING_KEYS]
    return [f"sampling defaults from the model card ({shown}): passed to vLLM as --override-generation-config "
            f"({', '.join(passed)}), applied to requests that do not set them"]


#: llama.cpp's smallest context when it fits a model itself (common/common.h fit_params_min_ctx).
MIN_CTX = 4096


def llama_fallbacks(s: LlamaCppSettings, n_layer: int, floor: int) -> list[Fallback]:
    out = []
    if s.ctx // s.parallel > floor:
        out.append(Fallback({"ctx": max(floor, s.ctx // s.parallel // 2) * s.parallel},
                            "halve the context: the KV cache and the compute buffer shrink with it"))
    if s.cache_type_k == "f16":
        out.append(Fallback({"cache_type_k": "q8_0", "cache_type_v": "q8_0", "flash_attn": "on"},
                            "quantize the KV cache to q8_0 (half its memory; a quantized V needs flash attention)"))
    elif s.cache_type_k == "q8_0":
        out.append(Fallback({"cache_type_k": "q4_0", "cache_type_v": "q4_0", "flash_attn": "on"},
                            "quantize the KV cache further to q4_0 (half again)"))
    if s.n_cpu_moe is not None and s.n_cpu_moe < n_layer:
        out.append(Fallback({"n_cpu_moe": min(n_layer, s.n_cpu_moe + max(1, -(-n_layer // 8)))},
                            "keep the experts of more layers on the CPU: less GPU memory, slower"))
    if s.parallel > 1:
        out.append(Fallback({"parallel": s.parallel // 2, "ctx": s.ctx // s.parallel * (s.parallel // 2)},
                            "half as many slots: each keeps its context, the KV cache halves"))
    if s.n_gpu_layers > 0:
        step = max(1, -(-n_layer // 4))
        out.append(Fallback({"n_gpu_layers": max(0, min(s.n_gpu_layers, n_layer) - step)},
                            f"keep {step} more layers on the CPU: less GPU memory, slower"))
        out.append(Fallback({"n_gpu_layers": 0}, "CPU only: the last resort when the GPU cannot hold a layer"))
    if not out and s.ctx // s.parallel > MIN_CTX:
        out.append(Fallback({"ctx": max(MIN_CTX, s.ctx // s.parallel // 2) * s.parallel},
                            f"halve the context below the planned floor, not below llama.cpp's own {MIN_CTX}"))
    return out


def vllm_fallbacks(s: VllmSettings, floor: int) -> list[Fallback]:
    out = []
    if not s.enforce_eager:
        out.append(Fallback({"enforce_eager": True}, "skip CUDA graphs: their memory goes back to the system"))
    if s.max_model_len > floor:
        out.append(Fallback({"max_model_len": max(floor, s.max_model_len // 2)},
                            "halve max_model_len: vLLM's start-up check needs one full sequence in the KV cache"))
    if s.max_num_seqs > 1:
        out.append(Fallback({"max_num_seqs": max(1, s.max_num_seqs // 2)},
                            "fewer sequences at once: smaller sampler warm-up and CUDA-graph ladder"))
    out.append(Fallback({"gpu_memory_utilization": round(max(0.5, s.gpu_memory_utilization - 0.05), 2)},
                        "leave 5 % more of the GPU to others: another process may hold memory"))
    return out


def apply_learned(plan: Plan, learned: Mapping[str, Any] | None) -> Plan:
    """Settings that worked on this machine before (advisor.store.state.learned_settings) replace the planned ones for the
    same backend; the memory figures stay the planner's estimate for its own settings."""
    if not learned or learned.get("backend") != plan.backend or not isinstance(learned.get("settings"), dict):
        return plan
    kind = LlamaCppSettings if plan.backend == LLAMA_CPP else VllmSettings
    current = asdict(plan.settings)
    try:
        settings = kind(**{**current, **{k: v for k, v in learned["settings"].items() if k in current}})
    except TypeError:
        return plan
    if settings == plan.settings:
        return replace(plan, reasons=[*plan.reasons, "these settings worked on this machine before (learned)"])
    sampling = plan.sampling
    args = (llama_args(settings, plan.model, sampling) if plan.backend == LLAMA_CPP  # type: ignore[arg-type]
            else vllm_args(settings, plan.model, sampling))  # type: ignore[arg-type]
    changed = sorted(k for k in current if current[k] != asdict(settings)[k])
    key = "llama_cpp" if plan.backend == LLAMA_CPP else "vllm"
    return replace(plan, args=args, **{key: settings},
                   reasons=[*plan.reasons, f"learned on this machine: {', '.join(changed)} taken from the last run "
                            "that worked (advisor state, learned.json)"])


__all__ = ["LLAMA_CPP", "SAMPLING_FIELDS", "VLLM", "apply_learned", "llama_args", "llama_fallbacks", "llama_memory",
           "sampling_notes", "sampling_of", "vllm_args", "vllm_fallbacks"]
