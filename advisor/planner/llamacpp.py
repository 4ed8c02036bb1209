"""llama.cpp settings for one model file on one machine: layers on the GPU(s), context, slots, threads.

Memory comes from advisor.gguf.estimate (exact for weights, KV and output buffers; compute within 5 %), run for the
GPUs' own backend (Machine.llama_backend: which buffers go to the pinned host buffer type, op offload, mapped
weights). A GPU's need is its buffers plus the backend's context/driver overhead that no buffer reports
(rules/backends.toml context_overhead_bytes); it must stay within the capacity less the headroom of
rules/margins.toml. The host buffers (CUDA_Host...) and the CPU's buffers count against RAM, and with unified memory
the GPUs' need does too.

Order of choices: every layer on the GPUs, with the f16 KV cache from the wanted context down to what the task needs,
then a quantized KV cache at that context (q8_0, q4_0), then shorter contexts down to the floor (llama.cpp --fit's
own order lowers the context before the layers, common/fit.cpp). A model that fits one GPU stays on one for a single
user (-sm none -mg N). Otherwise, at the context the task needs (else the floor), the faster of two partial
placements: whole layers on the CPU (-ngl N) or, for MoE models, every layer on the GPU but the experts of the first
K layers (--n-cpu-moe K, the smallest K that fits).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from advisor.errors import BadInputError
from advisor.gguf.estimate import Estimate, Settings, estimate
from advisor.gguf.facts import ModelFacts
from advisor.planner.machine import Machine, physical_threads


#: Layer offload wins over expert offload (--n-cpu-moe) only when predicted this much faster in decode: with
#: expert offload every layer's attention and KV cache stay on the GPU, so prompt processing and long contexts run
#: there (llama.cpp common/arg.cpp --n-cpu-moe: "keep the Mixture of Experts (MoE) weights of the first N layers in
#: the CPU", an -ot override of the ffn_*_exps tensors only).
MOE_PREFERENCE = 1.1


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
    cache_type: str = "f16"  # -ctk and -ctv
    n_cpu_moe: int | None = None  # --n-cpu-moe K: experts of the first K layers on the CPU, the rest on the GPU
    main_gpu: int | None = None  # -sm none -mg N: the whole model on GPU N (one GPU is enough for one user)
    #: per estimator device, the share of its weight bytes read per generated token (MoE experts: n_used/n_expert)
    read_fraction: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Contexts:
    """Context per sequence: start from ``want``, keep at least ``need`` by quantizing the KV cache, never below
    ``floor`` (rules/context.toml); ``fixed`` when the user asked for it (then only ``want``)."""

    want: int
    need: int
    floor: int
    fixed: bool = False


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


def _settings(m: Machine, ngl: int, ctx: int, parallel: int, split: tuple[float, ...] | None,
              kv: str = "f16", n_cpu_moe: int = 0) -> Settings:
    r = m.rules
    return Settings(n_ctx=ctx, n_batch=r["batch"], n_ubatch=r["ubatch"], n_parallel=parallel, kv_unified=False,
                    flash_attn="on" if kv != "f16" else r["flash_attn"], cache_type_k=kv, cache_type_v=kv,
                    n_gpu_layers=ngl, n_gpus=len(m.gpus), tensor_split=split, backend=m.llama_backend,
                    n_cpu_moe=n_cpu_moe)


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


def rungs(cx: Contexts, kv_types: list[str]) -> list[tuple[int, str]]:
    """(context per sequence, KV cache type) to try for full offload, best first: the f16 cache from the wanted
    context down to what the task needs, then the quantized caches at that context (rules/llama.toml
    kv_cache_types), then lower contexts with the most compact cache, down to the floor."""
    if cx.fixed:
        return [(cx.want, kv) for kv in kv_types]
    need = max(min(cx.need, cx.want), min(cx.floor, cx.want))
    ladder = ctx_ladder(cx.want, min(cx.floor, cx.want), False)
    out = [(c, kv_types[0]) for c in ladder if c >= need]
    out += [(need, kv) for kv in kv_types[1:]]
    out += [(c, kv_types[-1]) for c in ladder if c < need]
    return list(dict.fromkeys(out))


def _kv_fits_heads(facts: ModelFacts, kv: str) -> bool:
    from advisor.gguf import ggml

    block = ggml.block_size(ggml.type_id(kv))[0]
    return facts.head_dim_k % block == 0 and facts.head_dim_v % block == 0


def _try(facts: ModelFacts, m: Machine, ngl: int, ctx: int, parallel: int, split: tuple[float, ...] | None,
         kv: str, n_cpu_moe: int = 0) -> tuple[Estimate | None, Fit]:
    """The estimate and its fit; (None, miss) when llama.cpp refuses the KV type for this model (head size)."""
    try:
        est = estimate(facts, _settings(m, ngl, ctx * parallel, parallel, split, kv, n_cpu_moe))
    except BadInputError:
        return None, Fit(False, 0, "gpu0")
    return est, check(est, m)


def _full(facts: ModelFacts, m: Machine, plan: list[tuple[int, str]], parallel: int,
          split: tuple[float, ...] | None) -> tuple[int, LlamaChoice] | Fit | None:
    """The first rung at which every layer fits the GPUs, with its index. The rungs need less memory one after the
    other (rungs()), so the first that fits is found by bisection."""
    every = facts.n_layer_all + 1  # -ngl counts every block (NextN ones too) and the output layer
    lo, hi = 0, len(plan) - 1
    found: tuple[int, LlamaChoice] | None = None
    miss: tuple[int, Fit] | None = None  # the failing rung that needs the least memory: the closest miss
    while lo <= hi:
        i = (lo + hi) // 2
        c, kv = plan[i]
        est, fit = _try(facts, m, every, c, parallel, split, kv)
        if est is not None and fit.ok:
            found, hi = (i, LlamaChoice(est, every, c * parallel, parallel, split, True, [], kv)), i - 1
        else:
            if fit.shortfall_bytes and (miss is None or i > miss[0]):
                miss = (i, fit)
            lo = i + 1
    if found is not None:
        return found
    return miss[1] if miss else None


def _one_gpu(m: Machine) -> tuple[Machine, int]:
    """The machine reduced to its GPU with the largest budget (named gpu0 for the estimator) and its position."""
    i = max(range(len(m.gpus)), key=lambda k: m.gpus[k].budget_bytes)
    return replace(m, gpus=(replace(m.gpus[i], name="gpu0"),)), i


def _expert_bytes(facts: ModelFacts) -> dict[int, int]:
    out: dict[int, int] = {}
    for t in facts.tensors:
        if t.layer is not None and "_exps" in t.name:
            out[t.layer] = out.get(t.layer, 0) + t.nbytes
    return out


def read_fractions(facts: ModelFacts, est: Estimate, dense_fraction: float) -> dict[str, float]:
    """Per device, the share of its weights read per generated token where it is not ``dense_fraction``: the token
    embedding stays on the CPU (llama.cpp's input layer) but a token reads one row of it (ggml_get_rows); with
    --n-cpu-moe the CPU holds only experts (n_used of n_expert read), the GPU the attention and shared tensors (all
    read) and the other layers' experts."""
    if not est.settings.n_cpu_moe or not facts.n_expert:
        embd = sum(t.nbytes for t in facts.tensors if t.name.startswith("token_embd"))
        cpu = next((d.weights_bytes for d in est.devices if d.device == "cpu"), 0)
        return {"cpu": max(0.0, (cpu - embd) * dense_fraction / cpu)} if cpu and embd else {}
    used = facts.n_expert_used / facts.n_expert
    exps = _expert_bytes(facts)
    k = facts.n_layer if est.settings.n_cpu_moe < 0 else est.settings.n_cpu_moe
    cpu_exps = sum(b for layer, b in exps.items() if layer < k)
    gpu_exps = sum(exps.values()) - cpu_exps
    out = {}
    for d in est.devices:
        if not d.weights_bytes:
            continue
        if d.device == "cpu":
            out["cpu"] = min(1.0, cpu_exps * used / d.weights_bytes)
        elif d.device.startswith("gpu"):
            share = d.weights_bytes / max(1, sum(x.weights_bytes for x in est.devices if x.device.startswith("gpu")))
            g_exps = gpu_exps * share
            out[d.device] = (d.weights_bytes - g_exps + g_exps * used) / d.weights_bytes
    return out


def _cpu_moe(facts: ModelFacts, m: Machine, c: int, kv: str, parallel: int,
             split: tuple[float, ...] | None) -> LlamaChoice | None:
    """Every layer on the GPUs but the experts of the first K layers, K the smallest that fits (binary search:
    the GPUs' need falls as K grows)."""
    n = facts.n_layer
    lo, hi, best = 1, n, None
    while lo <= hi:
        k = (lo + hi) // 2
        est, fit = _try(facts, m, facts.n_layer_all + 1, c, parallel, split, kv, k)
        if est is not None and fit.ok:
            best, hi = (k, est), k - 1
        elif est is not None and any(dev.name == fit.where for dev in m.gpus):
            lo = k + 1
        else:  # RAM overruns: more experts on the CPU cannot help
            return None
    if best is None:
        return None
    k, est = best
    why = [f"all {n} layers on the GPU{'s' if len(m.gpus) > 1 else ''} but the experts of the first {k} "
           f"(--n-cpu-moe {k}, the smallest that fits): attention, shared tensors and the KV cache stay on the GPU, "
           "and only the few active experts of those layers are read from RAM per token"]
    return LlamaChoice(est, facts.n_layer_all + 1, c * parallel, parallel, split, False, why, kv, n_cpu_moe=k)


def _layers(facts: ModelFacts, m: Machine, c: int, kv: str, parallel: int,
            split: tuple[float, ...] | None) -> LlamaChoice | Fit:
    """As many whole layers on the GPUs as fit, the rest on the CPU (binary search; memory grows with layers on
    the GPU and shrinks on the CPU, the GPU side decides)."""
    n = facts.n_layer
    lo, hi, best, last = 0, facts.n_layer_all, None, None  # -ngl slots: NextN blocks count, the output is the last
    while lo <= hi:
        mid = (lo + hi) // 2
        est, fit = _try(facts, m, mid, c, parallel, split, kv)
        if est is not None and fit.ok:
            best, lo = (mid, est), mid + 1
        else:
            last = fit
            if any(dev.name == fit.where for dev in m.gpus):
                hi = mid - 1
            else:  # RAM overruns: more layers on the GPU would help, fewer would not
                lo = mid + 1
    if best is None:
        return last or Fit(False, 0, "gpu0")
    ngl, est = best
    on_gpu = sum(d.n_layers for d in est.devices if d.device.startswith("gpu"))  # -ngl N also counts the output
    why = [f"{on_gpu} of {n} layers on the GPU, the rest on the CPU (partial offload: the whole model does not "
           "fit in GPU memory)" if ngl else "every layer on the CPU: not even one layer fits the GPU budget"]
    return LlamaChoice(est, ngl, c * parallel, parallel, split if ngl else None, False, why, kv)


def _kv_reason(choice: LlamaChoice, cx: Contexts) -> list[str]:
    if choice.cache_type == "f16":
        return []
    return [f"KV cache {choice.cache_type} (-ctk/-ctv {choice.cache_type}, flash attention on): the f16 cache does "
            f"not hold {choice.ctx // choice.parallel} tokens per slot here, and the context the task needs comes "
            "before a bigger cache type"]


def plan_llama(facts: ModelFacts, m: Machine, cx: Contexts, parallel: int, dense_fraction: float = 1.0,
               speed=None, expert_offload: bool = True) -> LlamaChoice | Fit:
    """See ``_plan_llama``; every choice carries the per-device read fractions of the speed estimate.
    ``expert_offload``: the engine can keep MoE experts on the CPU (llama-server's --n-cpu-moe)."""
    choice = _plan_llama(facts, m, cx, parallel, dense_fraction, speed, expert_offload)
    if isinstance(choice, LlamaChoice) and not choice.read_fraction:
        choice = replace(choice, read_fraction=read_fractions(facts, choice.est, dense_fraction))
    return choice


def _plan_llama(facts: ModelFacts, m: Machine, cx: Contexts, parallel: int, dense_fraction: float = 1.0,
                speed=None, expert_offload: bool = True) -> LlamaChoice | Fit:
    """The best llama.cpp settings for ``facts`` on ``m``, or the Fit that says by how much the smallest setting
    misses. ``speed(choice) -> tokens/s`` compares partial placements (layers vs experts on the CPU)."""
    # quantized KV types need a head size that is a multiple of their block (32 for q8_0 / q4_0: llama.cpp
    # ggml_row_size; the estimator refuses the others, as llama.cpp does)
    kv_types = [t for t in m.rules["kv_cache_types"] if t == "f16" or _kv_fits_heads(facts, t)]
    plan = rungs(cx, kv_types)
    if not m.gpus:
        return _cpu_only(facts, m, cx, parallel, plan)
    full = _full_offload(facts, m, cx, parallel, plan)
    if isinstance(full, LlamaChoice):
        return full
    kv = "q8_0" if "q8_0" in kv_types else kv_types[-1]
    partial = _partial(facts, m, cx, parallel, kv, dense_fraction, speed, expert_offload)
    return partial or full or Fit(False, 0, "gpu0")


def _cpu_only(facts: ModelFacts, m: Machine, cx: Contexts, parallel: int, plan: list[tuple[int, str]]
              ) -> LlamaChoice | Fit:
    """The first rung that fits in RAM, else the miss of the last (smallest) rung: by how much RAM falls short."""
    miss = Fit(False, 0, "cpu")
    for c, kv in plan:
        est, fit = _try(facts, m, 0, c, parallel, None, kv)
        if est is None or not fit.ok:
            miss = fit if fit.shortfall_bytes else miss
            continue
        why = ["CPU only: no usable GPU"]
        if c < cx.want:
            why.append(f"context lowered from {cx.want} to {c} tokens per slot to fit in RAM")
        choice = LlamaChoice(est, 0, c * parallel, parallel, None, False, why, kv)
        return replace(choice, reasons=why + _kv_reason(choice, cx))
    return miss


def _full_offload(facts: ModelFacts, m: Machine, cx: Contexts, parallel: int, plan: list[tuple[int, str]]
                  ) -> LlamaChoice | Fit | None:
    """Every layer on the GPUs at the first rung that fits: one GPU alone for one user when it holds the model
    (and no all-GPU rung before it does better), else all of them. Otherwise the Fit of the last try."""
    n = facts.n_layer
    split = _split(m)
    alone, index = None, 0
    if len(m.gpus) > 1 and parallel == 1:
        one, index = _one_gpu(m)
        alone = _full(facts, one, plan, parallel, None)
    # all GPUs: only the rungs before the one a single GPU reaches can do better
    found = _full(facts, m, plan[:alone[0]] if isinstance(alone, tuple) else plan, parallel, split)
    if isinstance(alone, tuple) and not isinstance(found, tuple):
        i, choice = alone
        why = [f"all {n} layers and the output layer on GPU {index} alone (-sm none -mg {index}): the model "
               "fits one GPU, and for one user splitting it over several only adds transfers between them"]
        if plan[i][0] < cx.want:
            why.append(f"context lowered from {cx.want} to {plan[i][0]} tokens per slot to keep full offload")
        choice = replace(choice, main_gpu=index, reasons=why)
        return replace(choice, reasons=why + _kv_reason(choice, cx))
    if isinstance(found, tuple):
        i, choice = found
        why = [f"all {n} layers and the output layer on the GPU" + ("s" if len(m.gpus) > 1 else "")
               + " (full offload: the fastest placement)"]
        if plan[i][0] < cx.want:
            why.append(f"context lowered from {cx.want} to {plan[i][0]} tokens per slot to keep full offload")
        return replace(choice, reasons=why + _kv_reason(choice, cx))
    return found


def _partial(facts: ModelFacts, m: Machine, cx: Contexts, parallel: int, kv: str, dense_fraction: float, speed,
             expert_offload: bool) -> LlamaChoice | Fit | None:
    """Partial placements at the context the task needs (the floor when that does not fit), KV cache ``kv``:
    whole layers on the CPU, or for MoE models the experts of the first K layers (the faster one wins)."""
    split = _split(m)
    targets = [cx.want] if cx.fixed else list(dict.fromkeys([max(min(cx.need, cx.want), min(cx.floor, cx.want)),
                                                             min(cx.floor, cx.want)]))
    fallback: tuple[int, LlamaChoice] | None = None  # whole layers at the first target, if experts fit nowhere
    moe_model = expert_offload and bool(facts.n_expert and facts.n_expert_used)
    last: Fit | None = None
    for c in targets:
        options: list[LlamaChoice] = []
        layers = _layers(facts, m, c, kv, parallel, split)
        if isinstance(layers, LlamaChoice):
            options.append(replace(layers, read_fraction=read_fractions(facts, layers.est, dense_fraction)))
        else:
            last = layers
        if moe_model:
            moe = _cpu_moe(facts, m, c, kv, parallel, split)
            if moe is not None:
                options.append(replace(moe, read_fraction=read_fractions(facts, moe.est, dense_fraction)))
        if not options:
            continue
        if moe_model and len(options) == 1 and c != targets[-1]:
            # the experts do not fit beside this context's KV cache: a shorter context may keep them there
            fallback = fallback or (c, options[0])
            continue
        if fallback is not None and len(options) == 1:
            c, options = fallback[0], [fallback[1]]
        choice = _faster(options, speed) if speed is not None and len(options) > 1 else options[0]
        return _lowered(choice, c, cx)
    if fallback is not None:
        return _lowered(fallback[1], fallback[0], cx)
    return last


def _faster(options: list[LlamaChoice], speed) -> LlamaChoice:
    """Layer offload or expert offload by predicted decode speed. Expert offload keeps attention and the whole KV
    cache on the GPU (prompt processing, long contexts): layer offload must be clearly faster to win."""
    rates = [speed(o) for o in options]
    moe_at = 1 if options[1].n_cpu_moe else 0
    best = 1 - moe_at if rates[1 - moe_at] > MOE_PREFERENCE * rates[moe_at] else moe_at
    other = 1 - best
    choice = options[best]
    return replace(choice, reasons=[*choice.reasons, (
        f"predicted {rates[best]:g} tokens/s, against {rates[other]:g} with "
        + ("whole layers on the CPU" if options[other].n_cpu_moe is None else "experts on the CPU"))])


def _lowered(choice: LlamaChoice, c: int, cx: Contexts) -> LlamaChoice:
    why = list(choice.reasons)
    if c < cx.want:
        why.append(f"context lowered from {cx.want} to {c} tokens per slot")
    return replace(choice, reasons=why + _kv_reason(choice, cx))


def threads_for(m: Machine, choice: LlamaChoice) -> tuple[int, str]:
    t = physical_threads(m.profile)
    cpu = m.profile.cpu
    if cpu.performance_cores and cpu.efficiency_cores:
        return t, (f"{t} threads: the performance cores this process may use, not the {cpu.efficiency_cores} "
                   "efficiency cores (llama.cpp's threads work in lockstep, so the slowest core sets the pace; its "
                   "own default counts performance cores too: common.cpp hw.perflevel0 on Apple, "
                   "cpu_count_math_cpus on Intel hybrids under Linux)")
    return t, (f"{t} threads: the physical cores this process may use (llama.cpp's own default counts physical cores, "
               "common.cpp cpu_get_num_math; hyper-threads share the FMA units)")
