"""llama.cpp settings for one model file on one machine: layers on the GPU(s), context, slots, threads.

Memory comes from advisor.gguf.estimate (exact for weights, KV and output buffers; compute within 5 %), run for the GPUs'
own backend (Machine.llama_backend: which buffers go to the pinned host buffer type, op offload, mapped weights). A
GPU's need is its buffers plus the backend's context/driver overhead that no buffer reports (rules/backends.toml
context_overhead_bytes); it must stay within the capacity less the headroom of rules/margins.toml. The host buffers
(CUDA_Host...) and the CPU's buffers count against RAM, and with unified memory the GPUs' need does too.

Order of choices (llama.cpp --fit's own order, common/fit.cpp): every layer on the GPUs at the wanted context;
else the context lowered towards the floor; else as many layers as fit at the floor, the rest on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from advisor.gguf.estimate import Estimate, Settings, estimate
from advisor.gguf.facts import ModelFacts
from advisor.planner.machine import Machine, physical_threads


@dataclass(frozen=True)
class Fit:
    ok: bool
    shortfall_bytes: int  # the largest overrun of any budget (0 when it fits)
    where: str  # the device that overruns most
    need_bytes: int = 0
    have_bytes: int = 0


@dataclass(frozen=True)
class LlamaChoice:
    est: Estimate
    n_gpu_layers: int
    ctx: int  # total over all slots, as -c takes it
    parallel: int
    tensor_split: tuple[float, ...] | None
    full_offload: bool
    reasons: list[str] = field(default_factory=list)


def check(est: Estimate, m: Machine) -> Fit:
    """Does ``est`` fit every device's budget? A GPU needs its buffers plus its backend's context overhead (the
    driver allocates it whether or not a layer is offloaded); RAM also holds the process footprint; with unified
    memory the GPUs' need comes out of the same RAM."""
    worst = Fit(True, 0, "")
    by_name = {d.device: d for d in est.devices}
    gpu_total = 0
    for dev in m.gpus:
        d = by_name.get(dev.name)
        used = (d.total_bytes if d else 0) + dev.overhead_bytes
        gpu_total += used
        over = used - dev.budget_bytes
        if over > worst.shortfall_bytes:
            worst = Fit(False, over, dev.name, used, dev.budget_bytes)
    # "host": a GPU backend's pinned host buffers (advisor.gguf.estimate) live in RAM as well
    cpu_used = sum(d.total_bytes for d in est.devices if d.device in ("cpu", "host")) + (gpu_total if m.unified else 0)
    over = cpu_used - m.cpu.budget_bytes
    if over > worst.shortfall_bytes:
        worst = Fit(False, over, "cpu", cpu_used, m.cpu.budget_bytes)
    return worst


def _split(m: Machine) -> tuple[float, ...] | None:
    if len(m.gpus) < 2:
        return None
    budgets = [d.budget_bytes for d in m.gpus]
    total = sum(budgets) or 1
    return tuple(round(b / total, 3) for b in budgets)


def _settings(m: Machine, ngl: int, ctx: int, parallel: int, split: tuple[float, ...] | None) -> Settings:
    r = m.rules
    return Settings(n_ctx=ctx, n_batch=r["batch"], n_ubatch=r["ubatch"], n_parallel=parallel, kv_unified=False,
                    flash_attn=r["flash_attn"], n_gpu_layers=ngl, n_gpus=len(m.gpus), tensor_split=split,
                    backend=m.llama_backend)


def ctx_ladder(wanted: int, floor: int, fixed: bool) -> list[int]:
    """Contexts to try, largest first: the wanted one, then halvings down to the floor (only one when fixed)."""
    if fixed:
        return [wanted]
    out, c = [], wanted
    while c > floor:
        out.append(c)
        c //= 2
    out.append(min(floor, wanted))
    return sorted(set(out), reverse=True)


def plan_llama(facts: ModelFacts, m: Machine, ctx_per_seq: int, floor: int, fixed_ctx: bool,
               parallel: int) -> LlamaChoice | Fit:
    """The best llama.cpp settings for ``facts`` on ``m``, or the Fit that says by how much the smallest setting
    misses."""
    n = facts.n_layer
    split = _split(m)
    ctxs = ctx_ladder(ctx_per_seq, floor, fixed_ctx)
    last: Fit | None = None
    if m.gpus:
        for c in ctxs:  # 1. every layer (and the output layer) on the GPUs
            est = estimate(facts, _settings(m, n + 1, c * parallel, parallel, split))
            fit = check(est, m)
            if fit.ok:
                why = [f"all {n} layers and the output layer on the GPU" + ("s" if len(m.gpus) > 1 else "")
                       + " (full offload: the fastest placement)"]
                if c < ctx_per_seq:
                    why.append(f"context lowered from {ctx_per_seq} to {c} tokens per slot to keep full offload")
                return LlamaChoice(est, n + 1, c * parallel, parallel, split, True, why)
            last = fit
        # 2. partial offload at the smallest context: the most layers that fit (binary search; memory grows with
        # layers on the GPU and shrinks on the CPU, the GPU side decides)
        c = ctxs[-1]
        lo, hi, best = 0, n, None
        while lo <= hi:
            mid = (lo + hi) // 2
            est = estimate(facts, _settings(m, mid, c * parallel, parallel, split))
            fit = check(est, m)
            if fit.ok:
                best, lo = (mid, est), mid + 1
            else:
                last = fit
                gpu_over = any(dev.name == fit.where for dev in m.gpus)
                if gpu_over:
                    hi = mid - 1
                else:  # RAM overruns: more layers on the GPU would help, fewer would not
                    lo = mid + 1
        if best is not None:
            ngl, est = best
            why = [f"{ngl} of {n} layers on the GPU, the rest on the CPU (partial offload: the whole model does not "
                   "fit in GPU memory)" if ngl else "every layer on the CPU: not even one layer fits the GPU budget"]
            if c < ctx_per_seq:
                why.append(f"context lowered from {ctx_per_seq} to {c} tokens per slot")
            return LlamaChoice(est, ngl, c * parallel, parallel, split if ngl else None, False, why)
        return last or Fit(False, 0, "gpu0")
    for c in ctxs:  # CPU only
        est = estimate(facts, _settings(m, 0, c * parallel, parallel, None))
        fit = check(est, m)
        if fit.ok:
            why = ["CPU only: no usable GPU"]
            if c < ctx_per_seq:
                why.append(f"context lowered from {ctx_per_seq} to {c} tokens per slot to fit in RAM")
            return LlamaChoice(est, 0, c * parallel, parallel, None, False, why)
        last = fit
    return last or Fit(False, 0, "cpu")


def threads_for(m: Machine, choice: LlamaChoice) -> tuple[int, str]:
    t = physical_threads(m.profile)
    return t, (f"{t} threads: the physical cores this process may use (llama.cpp's own default counts physical cores, "
               "common.cpp cpu_get_num_math; hyper-threads share the FMA units)")
