"""The planner: ``recommend(profile, catalog, rules, request) -> Recommendation``. Pure: no I/O, no clock.

For each catalog model that matches the request, each candidate engine (rules/engines.toml, or --backend) and each
variant from the best-ranked down, it sizes the configuration (advisor.gguf.estimate for llama.cpp, the vLLM model in
planner/vllm.py), chooses settings, and keeps the first variant that fits; every candidate it drops gets a
``Rejection`` from a named template (planner/whynot.py). Plans are ranked by quality (the model's task score times
the quant's quality, less the backend's quant penalty), then predicted speed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from advisor.catalog.model import Catalog, Model, Variant
from advisor.engines import flags_of
from advisor.errors import BadInputError, NothingFitsError
from advisor.gguf.facts import ModelFacts
from advisor.plan import LLAMA_CPP, VLLM, EngineRef, LlamaCppSettings, ModelRef, Plan
from advisor.planner import assemble
from advisor.catalog.facts import (
    InventorySums,
    approx_catalog_facts,
    compact,
    compact_catalog_facts,
    expert_fraction,
    inventory_sums,
)
from advisor.planner.llamacpp import Contexts, Fit, LlamaChoice, plan_llama, threads_for
from advisor.planner.machine import Machine, build_machine
from advisor.planner.quality import Quality, model_score, quality, quick_size, speed_backend, superseded
from advisor.planner.speed import active_params_of, expert_params_of, model_speed, predict, quick_decode
from advisor.planner.vllm import VllmMiss, plan_vllm, quantization_for
from advisor.planner.whynot import Rejection
from advisor.probe.profile import HardwareProfile
from advisor.runner.ladder import ladder
from advisor.rules import Rules

BACKEND_CHOICES = ("auto", LLAMA_CPP, VLLM)
ENGINE_FORMATS = {LLAMA_CPP: ("gguf",), VLLM: ("safetensors", "awq", "gptq", "fp8", "mxfp4")}


@dataclass(frozen=True)
class Request:
    """What the user asked (the CLI's options, typed)."""

    task: str = "chat"
    context: int | None = None  # tokens per sequence; None: the rules' default for this machine
    concurrency: int = 1
    backend: str = "auto"
    model: str | None = None  # catalog id or Hub repo (org/name, optionally :QUANT)
    max_size_bytes: int | None = None
    license: str | None = None  # a case-insensitive substring of the licence
    top: int = 5
    assume_idle: bool = False  # plan for each GPU's total memory, not what is free now
    #: The engines the target machine runs, one per backend (advisor.app.engines chooses them); plans are built
    #: for these, with their flags. A backend with none gets its default engine's current release.
    engines: tuple[EngineRef, ...] = ()


@dataclass(frozen=True)
class Recommendation:
    plans: list[Plan]  # best first, at most request.top
    rejections: list[Rejection]
    ranked: list[Plan] = field(default_factory=list)  # every model's plan, best first (plans is its head)
    notes: list[str] = field(default_factory=list)

    def closest(self) -> Rejection | None:
        """The rejected candidate that misses by the least memory."""
        misses = [r for r in self.rejections if r.shortfall_bytes > 0]
        return min(misses, key=lambda r: r.shortfall_bytes) if misses else None

    def best(self) -> Plan:
        if self.plans:
            return self.plans[0]
        close = self.closest()
        msg = "nothing fits this machine"
        if close is not None:
            msg += f"; closest: {close.message}"
        elif self.rejections:
            msg += f"; e.g. {self.rejections[0].message}"
        raise NothingFitsError(msg)

    def why_not(self, model_id: str) -> list[str]:
        lines = [r.message for r in self.rejections if r.model == model_id]
        for rank, p in enumerate(self.ranked, 1):
            if p.model.id == model_id:
                tmpl = "ranked_below" if rank > len(self.plans) else "not_ranked"
                lines.insert(0, Rejection(model_id, tmpl, {"score": p.score, "rank": rank, "top": len(self.plans)},
                                          p.model.quant, p.backend).message)
        return lines


@dataclass
class _Run:
    profile: HardwareProfile
    catalog: Catalog
    machine: Machine
    request: Request
    engines: list[str]
    engine_reason: str
    learned: Mapping[str, Mapping[str, Any]]
    rejections: list[Rejection] = field(default_factory=list)
    exact: bool = False  # False: rank with approximate sizes (APPROX_SCALE); shown plans are always re-sized
    facts: dict[tuple[str, str, bool, bool], ModelFacts] = field(default_factory=dict)
    inventories: dict[str, list[Any]] = field(default_factory=dict)
    sums: dict[str, InventorySums] = field(default_factory=dict)  # per model: what approximate facts scale


#: Ranking pass: every tensor at the quant's average bits per weight (catalog/quants.toml bpw, measured on
#: Llama-3.1-8B), scaled down a little so that the approximation errs towards "fits"; the exact pass over the shown
#: plans then steps down to the next variant where the exact layout does not fit.
APPROX_SCALE = 0.97
#: How many plans the exact pass re-sizes at least, whatever ``--top`` asks: an approximate size can also err the
#: other way (a quant's average bits per weight above its real layout), so a model ranked below the first exact
#: plan may rank above it once sized exactly. Sizing the same leading plans for every ``--top`` up to this number
#: keeps the best plan the same for ``recommend`` (top 5) and ``run --auto`` (top 1).
EXACT_AT_LEAST = 5


def _engines(m: Machine, request: Request) -> tuple[list[str], str, list[Rejection]]:
    auto = m.rules["engines"]
    if request.backend == "auto":
        if VLLM in auto and not m.rules["vllm_runs"]:
            return [e for e in auto if e != VLLM], f"{m.rules.why('engines')}; not vLLM: {m.rules.why('vllm_runs')}", \
                [Rejection("*", "engine_not_candidate", {"why": m.rules.why("vllm_runs")}, engine=VLLM)]
        return list(auto), m.rules.why("engines"), []
    if request.backend == VLLM and (m.vendor not in ("nvidia", "amd")):
        why = "vLLM needs an NVIDIA or AMD GPU here (" + ("no usable GPU" if not m.gpus else m.vendor) + ")"
        return [], why, [Rejection("*", "engine_not_candidate", {"why": why}, engine=VLLM)]
    if request.backend == VLLM and not m.rules["vllm_runs"]:
        why = m.rules.why("vllm_runs")
        return [], why, [Rejection("*", "engine_not_candidate", {"why": why}, engine=VLLM)]
    return [request.backend], f"asked with --backend {request.backend}", []


def _select(catalog: Catalog, request: Request) -> tuple[list[Model], str | None, str | None]:
    """Models to consider, and a repo / quant the --model reference restricts the variants to."""
    if not request.model:
        return list(catalog.models), None, None
    ref = re.sub(r"^(hf://|https?://huggingface\.co/|hf\.co/)", "", request.model.strip())
    ref, _, quant = ref.partition(":")
    for m in catalog.models:
        if m.id == ref.lower():
            return [m], None, quant.upper() or None
    for m in catalog.models:
        if m.repo.lower() == ref.lower():
            return [m], None, quant.upper() or None
    for m in catalog.models:
        for v in m.all_variants():
            if v.repo.lower() == ref.lower():
                return [m], v.repo, quant.upper() or None
    raise BadInputError(f"{request.model!r} is neither a catalog id nor a Hub repository the catalog knows",
                        hint="'advisor catalog list' shows the ids; a local .gguf path works too")


def _model_filter(model: Model, request: Request) -> Rejection | None:
    if request.model:
        return None
    if request.task and request.task not in model.tasks:
        return Rejection(model.id, "task", {"task": request.task, "tasks": ", ".join(model.tasks)})
    if request.license and request.license.lower() not in model.license.lower():
        return Rejection(model.id, "license", {"license": model.license, "wanted": request.license})
    return None


def _contexts(run: _Run, native: int) -> Contexts:
    """The context per sequence to aim for, keep and never go below (rules/context.toml), capped at the model's
    trained context; the user's --context is fixed."""
    r, req = run.machine.rules, run.request
    floor = min(r["ctx_floor"], native)
    if req.context:
        return Contexts(req.context, req.context, min(floor, req.context), True)
    need = min(max(r["task_ctx"], floor), native)
    return Contexts(min(max(r["default_ctx"], need), native), need, floor, False)


def slow_penalty(m: Machine, speed: float) -> float:
    """Quality points a plan loses for decoding below its task's interactive speed (rules/interactive.toml)."""
    target = m.rules["interactive_tokens_per_s"]
    if not speed or speed >= target:
        return 0.0
    return round(m.rules["slow_penalty_points"] + m.rules["slow_penalty_per_halving"] * math.log2(target / speed), 2)


def rank_key(p: Plan, m: Machine) -> tuple:
    """Plans best first: by score (quality less the offload and speed penalties); among equal scores (catalog
    percentiles tie at 100 across benchmarks) a plan at interactive speed first, then the model with more
    parameters (more knowledge per token at the same benchmark percentile: Kaplan et al. 2020, arXiv 2001.08361),
    then the faster."""
    speed = p.predicted.decode_tokens_per_s or 0.0
    return (-p.score, speed < m.rules["interactive_tokens_per_s"], -(p.model.params or 0), -speed, p.model.id)


def _speed_reason(m: Machine, speed: float, penalty: float) -> str:
    target = m.rules["interactive_tokens_per_s"]
    if not penalty:
        return f"predicted {speed:g} tokens/s reaches the interactive {target:g} for this task: " \
               f"{m.rules.why('interactive_tokens_per_s')}"
    return (f"score less {penalty:g}: predicted {speed:g} tokens/s is below the interactive {target:g} for this task "
            f"({m.rules.why('interactive_tokens_per_s')}); {m.rules.why('slow_penalty_points')}")


def _facts(run: _Run, model: Model, v: Variant, q: Quality) -> ModelFacts:
    from advisor.gguf import layout as quant_layout
    key = (model.id, v.quant, v.imatrix, run.exact)
    if key in run.facts:  # one layout per (model, quant): the ngl search reuses it
        return run.facts[key]
    # the file's own average bits per weight where the catalog knows its size: a quant ranked with another's
    # quality (MXFP4_MOE with Q8_0's) is not that quant's size
    bpw = v.size_bytes * 8 / (model.params_total_b * 1e9) if v.size_bytes and model.params_total_b else q.bpw
    if run.exact or not bpw:
        if model.id not in run.inventories:  # one tensor inventory per model, shared by its quants
            run.inventories[model.id] = quant_layout.tensor_inventory(model.arch)
        run.facts[key] = compact_catalog_facts(model, v, run.inventories[model.id])
    else:
        if model.id not in run.sums:  # sums need no load order
            run.sums[model.id] = inventory_sums(model.arch.n_layer, quant_layout.tensor_inventory(model.arch, False))
        run.facts[key] = approx_catalog_facts(model, v, bpw * APPROX_SCALE, run.sums[model.id])
    return run.facts[key]


def _ref(model: Model | None, v: Variant | None, facts: ModelFacts | None = None) -> ModelRef:
    if model is None or v is None:
        assert facts is not None
        # a local file: ``path`` names it; ``files`` its parts by name (beside it), as a plan file may hold them
        return ModelRef(id=facts.name or facts.path, files=[f.replace("\\", "/").rsplit("/", 1)[-1]
                                                            for f in facts.files], path=facts.path, format="gguf",
                        size_bytes=facts.file_bytes)
    return ModelRef(id=model.id, repo=v.repo, files=list(v.files) if v.format == "gguf" else [],
                    format=v.format, quant=v.quant, params=int(model.params_total_b * 1e9),
                    active_params=int(model.params_active_b * 1e9) if model.params_active_b else None,
                    size_bytes=v.size_bytes)


def memory_basis(m: Machine, req: Request) -> str:
    """Which GPU memory the plan was sized for (--assume-idle or not)."""
    if not m.gpus:
        return "sized for the RAM available now"
    if req.assume_idle:
        return "sized for each GPU's total memory (--assume-idle: the box is provisioned before its workload starts)"
    return "sized for the GPU memory free now (--assume-idle sizes for the total)"


def _margin_reasons(m: Machine) -> list[str]:
    """Where each part of a device's margin comes from: the backend's overhead (rules/backends.toml), the headroom
    and display reserve (rules/margins.toml), the RAM reserve and footprint."""
    r, out = m.rules, []
    if m.gpus and m.backend_rule is not None:
        b = m.backend_rule
        out.append(f"each GPU needs its {b.name} buffers plus {b.context_overhead_bytes >> 20} MiB that no llama.cpp "
                   f"buffer reports, shown as other_bytes ({b.reason} [rules/backends.toml {b.name}; {b.source}])")
        out.append(f"headroom {r['device_headroom_mib']} MiB per GPU kept free beyond that: "
                   f"{r.why('device_headroom_mib')}")
        if r["display_reserve_mib"]:
            out.append(f"display reserve {r['display_reserve_mib']} MiB off each GPU's capacity: "
                       f"{r.why('display_reserve_mib')}")
        if b.host_buffers:
            out.append(f"the {b.llama_name}_Host buffers (CPU-side compute, output) count against RAM")
    out.append(f"RAM reserve {m.cpu.headroom_bytes >> 20} MiB: {r['host_footprint_mib']} MiB server footprint "
               f"({r.why('host_footprint_mib')}) and {(m.cpu.headroom_bytes >> 20) - r['host_footprint_mib']} MiB "
               f"for the system ({r.why('ram_reserve_mib')})")
    return out


def _llama_memory(choice: LlamaChoice, m: Machine) -> list:
    """The estimate per device; a single-GPU choice is named after the GPU it runs on."""
    if choice.main_gpu is None:
        return assemble.llama_memory(choice.est, m)
    one = replace(m, gpus=(replace(m.gpus[choice.main_gpu], name="gpu0"),))
    return [replace(d, device=f"gpu{choice.main_gpu}") if d.device == "gpu0" else d
            for d in assemble.llama_memory(choice.est, one)]


def _llama_plan(run: _Run, model: Model | None, v: Variant | None, facts: ModelFacts, native: int,
                score: float, reasons: list[str], frac: float, base_pct: float = 100.0,
                ctx_cap: int | None = None, speed_facts: ModelFacts | None = None) -> Plan | Fit:
    """``facts`` size the memory (compact facts do); the speed model reads parameter counts from tensor shapes,
    which compact facts ("blk.N.all", bytes only) do not have: a local file passes its full facts as
    ``speed_facts``, a catalog model's come from its config."""
    m, req = run.machine, run.request
    cx = _contexts(run, native)
    if ctx_cap is not None and not cx.fixed:
        cap = max(cx.floor, min(cx.want, ctx_cap))
        cx = Contexts(cap, min(cx.need, cap), cx.floor, False)
    sf = speed_facts or facts
    active = (model.params_active_b or model.params_total_b) * 1e9 if model else active_params_of(sf)
    ms = model_speed(sf, v.quant if v else None, frac)
    if model is not None and not ms.expert_params and model.arch.n_expert:
        ms = replace(ms, expert_params=expert_params_of(model.arch),
                     expert_use=model.arch.n_expert_used / model.arch.n_expert)

    def speed(c: LlamaChoice) -> float:
        mem = _llama_memory(c, m)
        return predict(mem, m, frac, active, model=ms, read_fraction=c.read_fraction).decode_tokens_per_s or 0.0

    engine = assemble.engine_for(req.engines, LLAMA_CPP)
    one_slot = not flags_of(engine).get("parallel", True)  # llama-cpp-python serves one request at a time
    choice = plan_llama(facts, m, cx, 1 if one_slot else max(1, req.concurrency), frac, speed,
                        expert_offload=flags_of(engine).get("n_cpu_moe", True))
    if isinstance(choice, Fit):
        return choice
    threads, why_threads = threads_for(m, choice)
    r = m.rules
    mlock = bool(r["mlock"]) and not m.gpus
    settings = LlamaCppSettings(
        n_gpu_layers=choice.n_gpu_layers, ctx=choice.ctx, parallel=choice.parallel, batch=r["batch"],
        ubatch=r["ubatch"], flash_attn="on" if choice.cache_type != "f16" else r["flash_attn"], threads=threads,
        mlock=mlock, tensor_split=list(choice.tensor_split) if choice.tensor_split else None, fit=False,
        cache_type_k=choice.cache_type, cache_type_v=choice.cache_type, n_cpu_moe=choice.n_cpu_moe,
        main_gpu=choice.main_gpu, split_mode="none" if choice.main_gpu is not None else None)
    ref = _ref(model, v, facts)
    sampling = assemble.sampling_of(model)
    memory = _llama_memory(choice, m)
    predicted = predict(memory, m, frac, active, model=ms, threads=threads, read_fraction=choice.read_fraction)
    per_slot = choice.ctx // choice.parallel
    ctx_why = (f"context {per_slot} tokens per slot x {choice.parallel} slot(s)"
               + (" as asked" if cx.fixed else f": this task needs {cx.need} ({m.rules.why('task_ctx')}); start "
                  f"{cx.want} ({m.rules.why('default_ctx')}); floor {cx.floor} ({m.rules.why('ctx_floor')}); "
                  f"capped at the trained {native}"))
    why = [*reasons, *choice.reasons, ctx_why, memory_basis(m, req), why_threads,
           f"flash attention {settings.flash_attn}: {r.why('flash_attn')}",
           *_margin_reasons(m), *assemble.sampling_notes(engine, sampling)]
    if choice.cache_type != "f16":
        why.append(f"KV cache {choice.cache_type}: {r.why('kv_cache_types')}")
    if one_slot and req.concurrency > 1:
        why.append(f"one slot: {engine.name}'s server answers one request at a time (its server serialises "
                   "requests), so the other users wait")
    if mlock:
        why.append(f"--mlock: {r.why('mlock')}")
    if m.gpus and not choice.full_offload and r["partial_offload_penalty"]:
        score = round(score - base_pct * r["partial_offload_penalty"] / 100, 2)
        why.append(f"score less {r['partial_offload_penalty']:g} quality points for partial offload: "
                   f"{r.why('partial_offload_penalty')}")
    if model is not None and not req.model:
        penalty = slow_penalty(m, predicted.decode_tokens_per_s or 0.0)
        score = round(score - penalty, 2)
        why.append(_speed_reason(m, predicted.decode_tokens_per_s or 0.0, penalty))
    if settings.tensor_split:
        why.append(f"tensor split {settings.tensor_split}: layers shared in proportion to each GPU's free budget")
    return Plan(model=ref, backend=LLAMA_CPP, llama_cpp=settings, engine=engine,
                args=assemble.plan_args(engine, settings, ref, sampling), memory=memory, predicted=predicted,
                sampling=sampling, score=score, reasons=why, fallbacks=ladder(settings, cx.floor, facts.n_layer_all))


def _vllm_plan(run: _Run, model: Model, v: Variant, q: Quality, score: float,
               reasons: list[str]) -> Plan | VllmMiss:
    from advisor.gguf import layout as quant_layout
    m, req = run.machine, run.request
    quant = quantization_for(run.catalog, v, m)
    if isinstance(quant, VllmMiss):
        return quant
    weights = v.size_bytes or quant_layout.checkpoint_bytes(model.arch, v.format, v.quant.lower())
    cx = _contexts(run, model.context_native)
    choice = plan_vllm(model, v, weights, m, cx, max(1, req.concurrency), quant[0])
    if isinstance(choice, VllmMiss):
        return choice
    ref = _ref(model, v)
    sampling = assemble.sampling_of(model)
    active = (model.params_active_b or model.params_total_b) * 1e9
    frac = active / (model.params_total_b * 1e9)
    # pipeline stages run one after the other; tensor-parallel ranks and replicas at once
    predicted = predict(choice.memory, m, frac, active, tensor_parallel=choice.settings.pipeline_parallel_size == 1,
                        model=model_speed(None, v.quant, frac), llama_cpp=False)
    engine = assemble.engine_for(req.engines, VLLM)
    why = [*reasons, f"quantization: {quant[1]}", *choice.reasons, memory_basis(m, req),
           *assemble.sampling_notes(engine, sampling)]
    if not req.model:
        penalty = slow_penalty(m, predicted.decode_tokens_per_s or 0.0)
        score = round(score - penalty, 2)
        why.append(_speed_reason(m, predicted.decode_tokens_per_s or 0.0, penalty))
    return Plan(model=ref, backend=VLLM, vllm=choice.settings, engine=engine,
                args=assemble.plan_args(engine, choice.settings, ref, sampling), memory=choice.memory,
                predicted=predicted, sampling=sampling, score=score, reasons=why,
                fallbacks=ladder(choice.settings, cx.floor))


def _plan_model(run: _Run, model: Model, repo: str | None, quant: str | None) -> Plan | None:
    """The best plan of ``model`` over the machine's engines and the model's variants (None: every one rejected)."""
    req = run.request
    base, model_why = model_score(run.catalog, model, req.task)
    if req.context and req.context > model.context_native:
        run.rejections.append(Rejection(model.id, "context_above_trained",
                                        {"ctx": req.context, "native": model.context_native}))
        return None
    best: tuple[tuple[float, float, int], Plan] | None = None
    for pref, engine in enumerate(run.engines):
        for v, q, size in _ranked_variants(run, model, engine, repo, quant):
            score = round(base * q.effective / 100, 2)
            if best is not None and score <= best[0][0]:
                break  # variants are in quality order: none further down can beat the plan found
            if best is not None and _score_bound(run, model, size, score) < best[0][0]:
                continue  # even at its fastest this variant loses more to the speed penalty than it could win
            if _cheap_reject(run, model, v, size, engine):
                continue
            plan = _plan_variant(run, model, v, q, engine, score, base, model_why)
            if plan is None:
                continue
            rank = (plan.score, plan.predicted.decode_tokens_per_s or 0.0, -pref)
            if best is None or rank > best[0]:
                best = (rank, plan)
            if plan.score >= score:  # nothing below this variant can score higher
                break
    return best[1] if best else None


def _ranked_variants(run: _Run, model: Model, engine: str, repo: str | None,
                     quant: str | None) -> list[tuple[Variant, Quality, int]]:
    """The model's variants ``engine`` can run (of ``repo`` / ``quant`` when asked), best quality first, then
    smallest; each with its quality and quick size."""
    m = run.machine
    variants = [v for v in model.all_variants() if v.format in ENGINE_FORMATS[engine]
                and (repo is None or v.repo == repo) and (quant is None or v.quant.upper() == quant)]
    if not variants:
        run.rejections.append(Rejection(model.id, "no_variant", engine=engine))
        return []
    key = speed_backend(m) if engine == LLAMA_CPP else m.backend
    ranked = [(v, q, quick_size(model, v, q)) for v in variants for q in (quality(run.catalog, v, m, key),)]
    ranked.sort(key=lambda t: (-t[1].effective, -t[1].rating, t[2]))
    return ranked


def _score_bound(run: _Run, model: Model, size: int, score: float) -> float:
    """The most a variant of ``size`` bytes can score: its quality less the speed penalty at an upper bound of its
    decode speed (quick_decode over its weights without the token-embedding table, which a token reads one row of;
    the table's size is counted at 2 bytes per value, so the bound stays above any real placement)."""
    if run.request.model:
        return score  # a model asked for by name is not penalised for its speed
    a = model.arch
    read = max(1, size - 2 * a.vocab_size * a.n_embd)
    return score - slow_penalty(run.machine, quick_decode(read, _active_fraction(model), run.machine))


def _floor_speed(run: _Run) -> float:
    return 0.0 if run.request.model else run.machine.rules["min_decode_tokens_per_s"]


def _active_fraction(model: Model) -> float:
    return (model.params_active_b or model.params_total_b) / model.params_total_b


def _cheap_reject(run: _Run, model: Model, v: Variant, size: int, engine: str) -> bool:
    """Rejections that need no sizing: --max-size, weights beyond everything the machine offers, and a decode
    speed bound below the floor. Recorded in ``run.rejections``."""
    m, req = run.machine, run.request
    room = m.gpu_budget_bytes if engine == VLLM else m.gpu_budget_bytes + m.cpu.budget_bytes
    if m.unified:
        room = min(m.gpu_budget_bytes, m.cpu.budget_bytes) if engine == VLLM else m.cpu.budget_bytes
    if req.max_size_bytes and size > req.max_size_bytes:
        run.rejections.append(Rejection(model.id, "max_size", {"size": size, "limit": req.max_size_bytes},
                                        v.quant, engine))
        return True
    if size > room:
        run.rejections.append(Rejection(model.id, "too_big", {"need": size, "have": room,
                              "device": "all devices together"}, v.quant, engine, size - room))
        return True
    floor_speed = _floor_speed(run)
    bound = quick_decode(size, _active_fraction(model), m)
    if floor_speed and bound < floor_speed:
        run.rejections.append(Rejection(model.id, "too_slow", {
            "speed": f"{bound:.1f} at most", "floor": f"{floor_speed:g}", "placement": ""}, v.quant, engine))
        return True
    return False


def _plan_variant(run: _Run, model: Model, v: Variant, q: Quality, engine: str, score: float, base: float,
                  model_why: str) -> Plan | None:
    """The plan of one variant on one engine, or None (the rejection recorded)."""
    m, req = run.machine, run.request
    key = speed_backend(m) if engine == LLAMA_CPP else m.backend
    frac = _active_fraction(model)
    why = [model_why, f"{v.quant} ({v.format}): quant quality {q.score:g}"
           + (f" (ranked as {q.ranked_as})" if q.ranked_as != q.quant else "")
           + (f", less {q.penalty:g} on {key}: {m.rules.why('quant_penalty')}" if q.penalty else "")
           + "; the best-ranked variant that fits", f"engine {engine}: {run.engine_reason}"]
    if engine == LLAMA_CPP:
        plan = _llama_plan(run, model, v, _facts(run, model, v, q), model.context_native, score, why, frac, base)
    else:
        plan = _vllm_plan(run, model, v, q, score, why)
    if isinstance(plan, Fit):
        run.rejections.append(Rejection(model.id, "too_big", {"need": plan.need_bytes, "have": plan.have_bytes,
                                        "device": plan.where}, v.quant, engine, plan.shortfall_bytes))
        return None
    if isinstance(plan, VllmMiss):
        run.rejections.append(Rejection(model.id, plan.template, plan.params, v.quant, engine,
                                        plan.shortfall_bytes))
        return None
    floor_speed = _floor_speed(run)
    speed = plan.predicted.decode_tokens_per_s or 0.0
    if _partial_offload(plan, model) and not req.context and (speed < floor_speed or slow_penalty(m, speed)):
        plan = _shorter_context(run, model, v, q, plan, score, why, base)
        speed = plan.predicted.decode_tokens_per_s or 0.0
    if floor_speed and speed < floor_speed:
        placement = "" if not plan.llama_cpp else (
            f" with {plan.llama_cpp.n_gpu_layers} layers on the GPU" if m.gpus else " on the CPU")
        run.rejections.append(Rejection(model.id, "too_slow", {"speed": f"{speed:g}", "floor": f"{floor_speed:g}",
                                        "placement": placement}, v.quant, engine))
        return None
    return assemble.apply_learned(plan, run.learned.get(model.id))


def _partial_offload(plan: Plan, model: Model) -> bool:
    """Some of the model's layers or experts on the CPU beside a GPU: the only placement a shorter context (a smaller
    KV cache) can speed up, by letting more of the model onto the GPU. Decode reads the KV cache of the tokens in
    context, not of the context size (advisor.planner.speed), so on the CPU alone or with every layer offloaded the
    context does not change the speed."""
    s = plan.llama_cpp
    return s is not None and bool(plan.memory) and any(d.device != "cpu" for d in plan.memory) and (
        bool(s.n_cpu_moe) or s.n_gpu_layers <= model.arch.n_layer + model.arch.n_layer_nextn)


def _shorter_context(run: _Run, model: Model, v: Variant, q: Quality, plan: Plan, score: float, why: list[str],
                     base: float) -> Plan:
    """Each generated token reads the whole KV cache: a default context that grew with memory must not make a
    variant slower than the smaller context of a smaller machine kept it (more memory never lowers the plan).
    Retry at the context the task needs, then at the floor; keep whichever scores (then decodes) best."""
    assert plan.llama_cpp is not None
    speed = plan.predicted.decode_tokens_per_s or 0.0
    cx = _contexts(run, model.context_native)
    for cap in dict.fromkeys((cx.need, cx.floor)):
        if plan.llama_cpp.ctx // plan.llama_cpp.parallel <= cap:
            continue
        shorter = _llama_plan(run, model, v, _facts(run, model, v, q), model.context_native, score, why,
                              _active_fraction(model), base, ctx_cap=cap)
        if isinstance(shorter, Plan) and (shorter.score, shorter.predicted.decode_tokens_per_s or 0.0) \
                > (plan.score, speed):
            plan, speed = shorter, shorter.predicted.decode_tokens_per_s or 0.0
            plan.reasons.append(f"context {cap} tokens per slot, not the default for this machine: a longer one "
                                "would decode slower")
    return plan


def recommend(profile: HardwareProfile, catalog: Catalog, rules: Rules, request: Request = Request(),
              learned: Mapping[str, Mapping[str, Any]] | None = None) -> Recommendation:
    """Plans for ``profile``, best first, and why every other candidate was dropped.

    ``learned`` maps a model id to what advisor.store.state.learned_settings returned for it on this machine."""
    if request.backend not in BACKEND_CHOICES:
        raise BadInputError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, not {request.backend!r}")
    machine = build_machine(profile, rules, max(1, request.concurrency), request.task, request.assume_idle)
    engines, why, rejections = _engines(machine, request)
    run = _Run(profile, catalog, machine, request, engines, why, learned or {}, rejections)
    models, repo, quant = _select(catalog, request)
    by_id = {m.id: m for m in models}
    plans = []
    for model in models:
        drop = _model_filter(model, request)
        if drop:
            run.rejections.append(drop)
            continue
        plan = _plan_model(run, model, repo, quant)
        if plan is not None:
            plans.append(plan)
    plans, dropped = superseded(plans, catalog, bool(request.model))
    run.rejections += [Rejection(mid, "superseded", {"successor": succ, "why": why}) for mid, succ, why in dropped]
    # Exact pass: re-size the best plans with the real per-tensor layout, best first, until `top` exact plans lead.
    key = lambda p: rank_key(p, machine)  # noqa: E731
    approx_rejections = run.rejections
    run.exact, run.rejections = True, list(rejections)
    exact: list[Plan] = []
    done: set[str] = set()
    pending = sorted(plans, key=key)
    while pending and len(exact) < max(1, request.top, EXACT_AT_LEAST):
        head = pending.pop(0)
        if head.model.id in done or head.backend == VLLM:  # vLLM sizes come from the checkpoint: already exact
            exact.append(head)
            continue
        done.add(head.model.id)
        again = _plan_model(run, by_id[head.model.id], repo, quant)
        if again is not None:
            pending.append(again)
            pending.sort(key=key)
    exact_ids = done | {p.model.id for p in exact}
    # rejections: the exact ones for the re-sized models, the approximate ones for the rest
    rejected = run.rejections + [r for r in approx_rejections[len(rejections):] if r.model not in exact_ids]
    ranked = sorted(exact, key=key) + [p for p in sorted(plans, key=key) if p.model.id not in exact_ids]
    return Recommendation(ranked[: max(1, request.top)], rejected, ranked, list(machine.notes))


def plan_for_model(profile: HardwareProfile, catalog: Catalog, rules: Rules, model: str,
                   request: Request = Request(), learned: Mapping[str, Any] | None = None) -> Plan:
    """The plan for one model (``advisor run MODEL``): a catalog id or Hub repo. Raises NothingFitsError."""
    from dataclasses import replace

    req = replace(request, model=model, top=1)
    found = _select(catalog, req)[0]
    return recommend(profile, catalog, rules, req, {found[0].id: learned} if learned else None).best()


def plan_for_gguf(profile: HardwareProfile, rules: Rules, facts: ModelFacts, request: Request = Request()) -> Plan:
    """The llama.cpp plan for a local GGUF file (its facts read by the caller). Raises NothingFitsError."""
    machine = build_machine(profile, rules, max(1, request.concurrency), request.task, request.assume_idle)
    run = _Run(profile, None, machine, request, [LLAMA_CPP],  # type: ignore[arg-type]
               "a local GGUF file runs on llama.cpp", {})
    native = facts.n_ctx_train or 4096
    if request.context and request.context > native:
        raise NothingFitsError(f"{facts.path}: the asked context {request.context} is above its trained {native}")
    plan = _llama_plan(run, None, None, compact(facts), native, 0.0, [f"local file {facts.path}"],
                       expert_fraction(facts), speed_facts=facts)
    if isinstance(plan, Fit):
        raise NothingFitsError(f"{facts.path}: needs {plan.need_bytes >> 20} MiB on {plan.where}, which has "
                               f"{plan.have_bytes >> 20} MiB after its margins")
    return plan


__all__ = ["Recommendation", "Rejection", "Request", "plan_for_gguf", "plan_for_model", "recommend"]
