"""Turning a chosen configuration into a ``Plan``: settings, the exact engine arguments, sampling defaults and the
back-off ladder the executor walks when a start fails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import Any

from advisor.catalog.model import Model
from advisor.gguf.estimate import Estimate
from advisor.plan import (
    DEFAULT_ENGINE,
    LLAMA_CPP,
    VLLM,
    DeviceMemory,
    EngineRef,
    Fallback,
    LlamaCppSettings,
    ModelRef,
    Plan,
    VllmSettings,
)
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


def engine_for(engines: tuple[EngineRef, ...], backend: str) -> EngineRef:
    """The engine the target machine runs for ``backend`` (advisor.app.engines chose it), else the backend's
    default engine at its current release."""
    for ref in engines:
        if ref.backend == backend:
            return ref
    return EngineRef(DEFAULT_ENGINE[backend], source="not chosen: the engine's current release")


def plan_args(engine: EngineRef, settings: LlamaCppSettings | VllmSettings, ref: ModelRef,
              sampling: Mapping[str, float]) -> list[str]:
    """The engine's arguments: the same builder the runner starts the engine with (advisor.engines.argv)."""
    from advisor.engines import argv

    return argv(engine, settings, ref, sampling)


def sampling_notes(engine: EngineRef, sampling: Mapping[str, float]) -> list[str]:
    """What the plan's reasons say about the sampling defaults: how the engine receives them, or that it cannot."""
    from advisor.engines import flags_of, llama_server, vllm

    if not sampling:
        return []
    shown = ", ".join(f"{k} {v:g}" for k, v in sampling.items())
    if engine.backend == VLLM:
        passed = [k for k in sampling if k in vllm.SAMPLING_KEYS]
        return [f"sampling defaults from the model card ({shown}): passed to vLLM as --override-generation-config "
                f"({', '.join(passed)}), applied to requests that do not set them"]
    if not flags_of(engine).get("sampling", True):
        return [f"sampling defaults from the model card ({shown}): {engine.name}'s server has no flags for sampling "
                "defaults, so the client must send them with each request"]
    passed = [k for k in sampling if k in llama_server.SAMPLING_FLAGS]
    left = [k for k in sampling if k not in llama_server.SAMPLING_FLAGS]
    out = [f"sampling defaults from the model card ({shown}): llama-server gets "
           f"{', '.join(llama_server.SAMPLING_FLAGS[k] for k in passed) or 'none of them'} as its defaults "
           "(a request's own values win)"]
    if left:
        out.append(f"not passed to llama-server: {', '.join(left)} ({llama_server.SAMPLING_LEFT_OUT})")
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
    args = plan_args(plan.engine_ref, settings, plan.model, plan.sampling)
    changed = sorted(k for k in current if current[k] != asdict(settings)[k])
    key = "llama_cpp" if plan.backend == LLAMA_CPP else "vllm"
    return replace(plan, args=args, **{key: settings},
                   reasons=[*plan.reasons, f"learned on this machine: {', '.join(changed)} taken from the last run "
                            "that worked (advisor state, learned.json)"])


__all__ = ["LLAMA_CPP", "SAMPLING_FIELDS", "VLLM", "apply_learned", "engine_for", "llama_memory",
           "plan_args", "sampling_notes", "sampling_of"]
