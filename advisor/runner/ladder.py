"""The back-off ladder: when a start fails for lack of memory, the next rung of settings to try. A plan brings its
own rungs (advisor.planner.assemble); these are the rungs for a plan that brings none."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from advisor.plan import Fallback, LlamaCppSettings, PlanFileError, VllmSettings

Settings = LlamaCppSettings | VllmSettings


def default_ladder(settings: Settings) -> list[Fallback]:
    """Rungs when the plan brings none, in llama.cpp's own fitting order (context first, then KV type, slots,
    layers: notes/exec.md §0 step 5 and §1.1 "fit"), and vLLM's (sequences, CUDA graphs, context)."""
    rungs: list[Fallback] = []
    if isinstance(settings, LlamaCppSettings):
        # 2048 is the floor the notes give for halving (§0 step 5: "floor 2048-4096").
        if settings.ctx > 2048:
            rungs.append(Fallback({"ctx": max(2048, settings.ctx // 2)}, "halve the context"))
        if settings.cache_type_k != "q8_0" or settings.cache_type_v != "q8_0":
            rungs.append(
                Fallback({"cache_type_k": "q8_0", "cache_type_v": "q8_0", "flash_attn": "on"},
                         "q8_0 KV cache (quantized V needs flash attention)")  # fmt: skip
            )
        if settings.parallel > 1:
            rungs.append(Fallback({"parallel": 1}, "one sequence"))
        if settings.n_gpu_layers > 0:
            rungs.append(Fallback({"n_gpu_layers": settings.n_gpu_layers * 3 // 4}, "a quarter fewer GPU layers"))
        if settings.n_gpu_layers != 0:
            rungs.append(Fallback({"n_gpu_layers": 0}, "CPU only"))
    else:
        if settings.max_num_seqs > 1:
            rungs.append(Fallback({"max_num_seqs": max(1, settings.max_num_seqs // 2)}, "halve the sequences"))
        if not settings.enforce_eager:
            rungs.append(Fallback({"enforce_eager": True}, "no CUDA graphs (--enforce-eager)"))
        if settings.max_model_len > 2048:
            rungs.append(Fallback({"max_model_len": max(2048, settings.max_model_len // 2)}, "halve the context"))
    return rungs


def apply(settings: Settings, changes: Mapping[str, Any]) -> Settings:
    """``settings`` with ``changes`` applied; a rung naming an unknown setting is a bad plan."""
    names = {f.name for f in dataclasses.fields(settings)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise PlanFileError(f"fallback names an unknown setting {unknown[0]!r}")
    return dataclasses.replace(settings, **changes)


def settings_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
