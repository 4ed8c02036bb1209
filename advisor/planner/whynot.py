"""Why a candidate was not recommended: named message templates, filled from a rejection's parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TEMPLATES: dict[str, str] = {
    "task": "{model} is not made for {task} (its tasks: {tasks})",
    "license": "{model}'s licence '{license}' does not match '{wanted}'",
    "max_size": "{model} {quant}: {size} is larger than --max-size {limit}",
    "context_above_trained": "{model}: the asked context of {ctx} tokens is above its trained context of {native}",
    "too_big": "{model} {quant} on {engine}: needs {need} on {device}, which has {have} after its margins: "
               "short by {short}",
    "vllm_format": "{model} {quant} ({format}) on vllm: needs compute capability {need}, the GPU has {have}",
    "vllm_kv": "{model} {quant} on vllm: one {len}-token sequence needs {need} of KV cache, {avail} is left per GPU "
               "at gpu_memory_utilization {util} (vLLM's start-up check would fail): short by {short}",
    "vllm_tp": "{model} on vllm: tensor parallelism must divide its {heads} attention heads; {gpus} GPU(s) give no "
               "such size",
    "too_slow": "{model} {quant} on {engine}: about {speed} tokens/s{placement}, below the {floor} tokens/s "
                "minimum",
    "no_variant": "{model}: no {engine} variant in the catalog",
    "superseded": "{model} is superseded by {successor}, which also fits ({why}); ask for it with --model to get it",
    "engine_not_candidate": "{engine} is not a candidate here: {why}",
    "ranked_below": "{model} fits ({quant} on {engine}, score {score}) but ranks #{rank}, below --top {top}",
    "not_ranked": "{model} fits ({quant} on {engine}) with score {score}",
}


def human(n: int | float) -> str:
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


@dataclass(frozen=True)
class Rejection:
    model: str
    template: str
    params: dict[str, Any] = field(default_factory=dict)
    quant: str | None = None
    engine: str | None = None
    shortfall_bytes: int = 0  # for "too big" kinds: by how much the candidate misses

    @property
    def message(self) -> str:
        p = {"model": self.model, "quant": self.quant or "", "engine": self.engine or "", **self.params}
        for key in ("need", "have", "avail", "short", "size", "limit"):
            if isinstance(p.get(key), int) and not isinstance(p.get(key), bool):
                p[key] = human(p[key])
        if "short" not in p:
            p["short"] = human(self.shortfall_bytes)
        return TEMPLATES[self.template].format(**p)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "quant": self.quant, "engine": self.engine, "template": self.template,
                "shortfall_bytes": self.shortfall_bytes, "message": self.message}
