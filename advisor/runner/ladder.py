"""The back-off ladder: when a start fails for lack of memory, the next rung of settings to try. A plan brings its
own rungs (advisor.planner.assemble); these are the rungs for a plan that brings none."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from advisor.plan import Fallback, LlamaCppSettings, PlanFileError, VllmSettings

Settings = LlamaCppSettings | VllmSettings


#: The shortest context a rung halves to when the plan gives no floor (below it a chat or a code session does not
#: hold its prompt; the planner passes its own floor from rules/context.toml).
CTX_FLOOR = 2048
#: llama.cpp's own smallest context when it fits a model (common/common.h fit_params_min_ctx): the last rung of a
#: CPU plan already at its floor with the most compact KV cache.
MIN_CTX = 4096


def ladder(settings: Settings, floor: int = CTX_FLOOR, n_layer: int | None = None) -> list[Fallback]:
    """The back-off rungs for ``settings``, in llama.cpp's own fitting order (docs/run.md "Back-off"): a shorter
    context, a q8_0 KV cache, one slot, fewer GPU layers (a quarter of the model's layers, or of those on the GPU
    when the layer count is unknown), CPU only; for vLLM: no CUDA graphs, a shorter context, fewer sequences, a
    lower memory share. The planner stores them in the plan; the runner uses them for a plan that has none.
    ``n_layer``: the blocks -ngl counts (NextN blocks included), without the output layer."""
    if isinstance(settings, VllmSettings):
        return _vllm_rungs(settings, floor)
    rungs = []
    slots = max(1, settings.parallel)
    if settings.ctx // slots > floor:
        rungs.append(Fallback({"ctx": max(floor, settings.ctx // slots // 2) * slots},
                              "halve the context: the KV cache and the compute buffer shrink with it"))
    if settings.cache_type_k == "f16":
        rungs.append(Fallback({"cache_type_k": "q8_0", "cache_type_v": "q8_0", "flash_attn": "on"},
                              "quantize the KV cache to q8_0 (half its memory; a quantized V needs flash attention)"))
    elif settings.cache_type_k == "q8_0":
        rungs.append(Fallback({"cache_type_k": "q4_0", "cache_type_v": "q4_0", "flash_attn": "on"},
                              "quantize the KV cache further to q4_0 (half again)"))
    if settings.n_cpu_moe is not None and n_layer and settings.n_cpu_moe < n_layer:
        rungs.append(Fallback({"n_cpu_moe": min(n_layer, settings.n_cpu_moe + max(1, -(-n_layer // 8)))},
                              "keep the experts of more layers on the CPU: less GPU memory, slower"))
    if slots > 1:
        rungs.append(Fallback({"parallel": 1, "ctx": settings.ctx // slots}, "one slot: one sequence's KV cache"))
    if settings.n_gpu_layers > 0:
        # -ngl counts the output layer too (its slot is the last): from full offload (n_layer + 1), N fewer slots
        # leave the first N repeating layers on the CPU
        on_gpu = min(settings.n_gpu_layers, n_layer + 1) if n_layer else settings.n_gpu_layers
        step = max(1, -(-(n_layer or on_gpu) // 4))
        rungs.append(Fallback({"n_gpu_layers": max(0, on_gpu - step)},
                              f"keep {step} more layers on the CPU: less GPU memory, slower"))
        rungs.append(Fallback({"n_gpu_layers": 0}, "CPU only: the last resort when the GPU cannot hold a layer"))
    if not rungs and settings.ctx // slots > MIN_CTX:
        rungs.append(Fallback({"ctx": max(MIN_CTX, settings.ctx // slots // 2) * slots},
                              f"halve the context below the planned floor, not below llama.cpp's own {MIN_CTX}"))
    return rungs


def _vllm_rungs(s: VllmSettings, floor: int) -> list[Fallback]:
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


def apply(settings: Settings, changes: Mapping[str, Any]) -> Settings:
    """``settings`` with ``changes`` applied; a rung naming an unknown setting is a bad plan."""
    names = {f.name for f in dataclasses.fields(settings)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise PlanFileError(f"fallback names an unknown setting {unknown[0]!r}")
    return dataclasses.replace(settings, **changes)


def settings_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
