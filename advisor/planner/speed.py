"""Predicted speed, an estimate: decode is memory-bound (every weight read once per token, KV cache read for
the context), prefill compute-bound (2 FLOPs per active parameter per token). Bandwidths and TFLOPs come from
rules/gpus.toml and rules/speed.toml; the efficiencies from rules/speed.toml.
"""

from __future__ import annotations

from collections.abc import Mapping

from advisor.plan import DeviceMemory, Predicted
from advisor.planner.machine import Machine

BASIS = ("estimate: decode = efficiency x memory bandwidth / bytes read per token (weights, MoE: active experts "
         "only, plus half the KV cache); prefill = efficiency x FP16 throughput / (2 x active parameters) "
         "[rules/speed.toml, rules/gpus.toml]")


def predict(memory: list[DeviceMemory], m: Machine, active_fraction: float, active_params: float,
            tensor_parallel: bool = False, read_fraction: Mapping[str, float] | None = None) -> Predicted:
    """``read_fraction``: per device, the share of its weights read per token where it differs from
    ``active_fraction`` (--n-cpu-moe: the CPU holds only experts)."""
    r = m.rules
    read_fraction = read_fraction or {}
    bw = {d.name: d.bandwidth_gbs for d in m.gpus}
    fl = {d.name: d.tflops for d in m.gpus}
    bw["cpu"] = m.cpu.bandwidth_gbs
    fl["cpu"] = m.cpu.tflops
    # Sequential layers: the times add up; tensor parallel ranks work at once (each reads its share).
    seconds = 0.0
    gpu_bytes = 0
    for d in memory:
        read = d.weights_bytes * read_fraction.get(d.device, active_fraction) + d.kv_cache_bytes * 0.5
        if d.device != "cpu":
            gpu_bytes += d.weights_bytes
        b = bw.get(d.device, 0.0) or 1.0
        part = read / (b * 1e9 * r["decode_efficiency"])
        seconds = max(seconds, part) if tensor_parallel else seconds + part
    decode = 1.0 / seconds if seconds > 0 else None
    on_gpu = [d for d in memory if d.device != "cpu" and d.weights_bytes]
    if on_gpu:
        tflops = sum(fl.get(d.device, 0.0) for d in on_gpu) if tensor_parallel or len(on_gpu) > 1 else \
            fl.get(on_gpu[0].device, 0.0)
    else:
        tflops = fl["cpu"]
    prefill = tflops * 1e12 * r["prefill_efficiency"] / (2 * active_params) if active_params and tflops else None
    return Predicted(
        decode_tokens_per_s=round(decode, 1) if decode else None,
        prefill_tokens_per_s=round(prefill, 0) if prefill else None,
        basis=BASIS,
    )


def quick_decode(size_bytes: int, active_fraction: float, m: Machine) -> float:
    """An upper bound of the decode speed of a ``size_bytes`` model: as much of it as the GPUs' budget allows on
    the GPUs, the rest on the CPU (used to skip variants that cannot reach the minimum speed without sizing them)."""
    r = m.rules
    on_gpu = min(size_bytes, m.gpu_budget_bytes) if m.gpus else 0
    bw_gpu = max((d.bandwidth_gbs for d in m.gpus), default=0.0) * (len(m.gpus) or 1)
    seconds = (size_bytes - on_gpu) * active_fraction / (m.cpu.bandwidth_gbs * 1e9 * r["decode_efficiency"])
    if on_gpu and bw_gpu:
        seconds += on_gpu * active_fraction / (bw_gpu * 1e9 * r["decode_efficiency"])
    return 1.0 / seconds if seconds > 0 else float("inf")
