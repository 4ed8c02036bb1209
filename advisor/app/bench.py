"""``advisor bench``: measure on this machine what the speed model predicts, and let plans use the measurement.

- ``bench_model``: the plan for a model (as ``advisor run MODEL`` makes it) or a plan file is run on its own engine
  and timed like llama-bench: prompt processing of ``prompt`` tokens and generation of ``gen`` tokens from an empty
  context, repeated, plus one long-context depth (a ``depth``-token prompt, then generation at that depth).
  llama-cpp-python plans run in this process; llama-server and vLLM plans start their server and are timed over its
  HTTP API (advisor.app.bench_server). The record goes to advisor.store.bench with what was predicted, under the
  plan's backend (what later plans are matched by) and the engine that ran it.
- ``bench_memory``: the CPU's memory bandwidth, from a short multi-threaded streaming read (NumPy sums over buffers
  far larger than the caches, one per thread; best of the passes within ``seconds``).
- ``apply_measurements``: plans get ``predicted.basis`` = measured (this model, quant and engine was measured on
  this machine), calibrated (scaled by what was measured here for other models, or by the measured memory
  bandwidth for the layers on the CPU) or stay ``model``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advisor.errors import BadInputError, EngineMissingError, EngineUnsupportedError
from advisor.plan import LLAMA_CPP, LLAMA_SERVER, VLLM_SERVER, Plan, PlanFileError, Predicted
from advisor.probe.profile import HardwareProfile
from advisor.store import bench as store

Progress = Callable[[str], None]
#: Engines measured through their own server (advisor.app.bench_server); llama-cpp-python runs in-process.
SERVED = (LLAMA_SERVER, VLLM_SERVER)
MIB = 1 << 20


@dataclass(frozen=True)
class BenchOptions:
    prompt: int = 512  # pp test length
    gen: int = 128  # tg test length
    reps: int = 2
    depth: int | None = None  # long-context depth; None: 4096 or what the context allows; 0: none
    long_gen: int = 32


@dataclass(frozen=True)
class BenchOutcome:
    plan: Plan
    record: store.BenchRecord
    path: Path

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {"model": r.model_id, "quant": r.quant, "engine": r.engine, "runner": r.runner,
                "n_gpu_layers": r.n_gpu_layers, "threads": r.threads, "stored": str(self.path),
                "results": [{"test": s.name, "tokens": s.tokens, "depth": s.depth, "tokens_per_s": round(s.mean, 2),
                             "samples": [round(x, 2) for x in s.tokens_per_s]} for s in r.samples],
                "predicted": {"decode_tokens_per_s": r.predicted_decode, "prefill_tokens_per_s": r.predicted_prefill}}


def machine_key(profile: HardwareProfile) -> str:
    from advisor.app.advise import machine_key as key
    return key(profile)


# -- plans ----------------------------------------------------------------------------------------------------------

def load_plan_file(path: Path) -> Plan:
    """A plan JSON: one plan, or ``advisor recommend --json`` output (its first plan)."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PlanFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    if isinstance(data, dict) and "plans" in data:
        plans = data["plans"]
        if not isinstance(plans, list) or not plans:
            raise PlanFileError(f"{path}: 'plans' holds no plan")
        return Plan.from_dict(plans[0], where=f"{path}: plans[0]")
    return Plan.from_dict(data, where=str(path))


def plan_for(profile: HardwareProfile, model: str | None, plan_file: Path | None) -> Plan:
    if (model is None) == (plan_file is None):
        raise BadInputError("give a MODEL or --plan FILE (one of them)", hint="advisor bench MODEL.gguf")
    if plan_file is not None:
        return load_plan_file(plan_file)
    assert model is not None
    if Path(model).expanduser().is_dir():  # a model directory (vLLM): the plan advisor run makes for it
        from advisor.app import serve
        return serve.plan_for(serve.Source(model=model), serve.Options(), lambda _m: None)[0]
    from advisor.app.advise import advise
    from advisor.planner import Request
    advice = advise(profile, Request(model=model, top=1), here=True, measurements=False)  # the model's own figures
    return advice.plans[0] if advice.plans else advice.recommendation.best()


# -- measuring ------------------------------------------------------------------------------------------------------

def _llama(path: Path, plan: Plan, n_ctx: int) -> Any:
    try:
        from llama_cpp import Llama  # type: ignore[import-not-found]
    except ImportError:
        raise EngineMissingError("llama-cpp-python is not installed in advisor's environment",
                                 hint="pip install 'llama-cpp-python' (or 'advisor setup')") from None
    s = plan.llama_cpp
    assert s is not None
    kwargs: dict[str, Any] = {"model_path": str(path), "n_ctx": n_ctx, "n_batch": min(512, n_ctx),
                              "n_ubatch": min(512, n_ctx), "n_gpu_layers": s.n_gpu_layers, "use_mmap": s.mmap,
                              "seed": 0, "verbose": False}
    if s.threads:
        kwargs.update(n_threads=s.threads, n_threads_batch=s.threads)
    if s.flash_attn == "on":
        kwargs["flash_attn"] = True
    return Llama(**kwargs)


def _time_eval(llm: Any, tokens: list[int], one_by_one: bool) -> float:
    t0 = time.perf_counter()
    if one_by_one:
        for t in tokens:
            llm.eval([t])
    else:
        llm.eval(tokens)
    return time.perf_counter() - t0


def _depth(opts: BenchOptions, n_ctx_train: int, plan_ctx: int) -> int:
    room = min(n_ctx_train or plan_ctx, max(plan_ctx, 4096 + opts.prompt + opts.long_gen)) - opts.long_gen - 8
    want = 4096 if opts.depth is None else opts.depth
    return max(0, min(want, room))


def _measure(llm: Any, opts: BenchOptions, depth: int, progress: Progress) -> list[store.Sample]:
    rng = random.Random(0)
    n_vocab = llm.n_vocab()
    toks = lambda n: [rng.randrange(n_vocab) for _ in range(n)]
    pp: list[float] = []
    tg: list[float] = []
    llm.reset()  # warm-up, untimed (llama-bench's own warm-up run): first-touch of the weights, kernel setup
    _time_eval(llm, toks(min(opts.prompt, 32)), one_by_one=False)
    _time_eval(llm, toks(2), one_by_one=True)
    for rep in range(opts.reps):
        llm.reset()
        dt = _time_eval(llm, toks(opts.prompt), one_by_one=False)
        pp.append(opts.prompt / dt)
        progress(f"pp{opts.prompt}: {pp[-1]:.1f} tokens/s (run {rep + 1}/{opts.reps})")
        llm.reset()
        dt = _time_eval(llm, toks(opts.gen), one_by_one=True)
        tg.append(opts.gen / dt)
        progress(f"tg{opts.gen}: {tg[-1]:.1f} tokens/s (run {rep + 1}/{opts.reps})")
    samples = [store.Sample("pp", opts.prompt, 0, pp), store.Sample("tg", opts.gen, 0, tg)]
    if depth > opts.prompt:
        llm.reset()
        progress(f"filling {depth} tokens of context ...")
        dt = _time_eval(llm, toks(depth), one_by_one=False)
        samples.append(store.Sample("pp", depth, 0, [depth / dt]))
        progress(f"pp{depth}: {depth / dt:.1f} tokens/s")
        dt = _time_eval(llm, toks(opts.long_gen), one_by_one=True)
        samples.append(store.Sample("tg", opts.long_gen, depth, [opts.long_gen / dt]))
        progress(f"tg{opts.long_gen}@d{depth}: {opts.long_gen / dt:.1f} tokens/s")
    return samples


def _check_options(opts: BenchOptions) -> None:
    if opts.prompt < 1 or opts.gen < 1 or opts.reps < 1:
        raise BadInputError("--prompt, --gen and --reps must be at least 1")
    if opts.depth is not None and opts.depth < 0:
        raise BadInputError("--depth must be 0 (none) or more")


def bench(profile: HardwareProfile, model: str | None, plan_file: Path | None, opts: BenchOptions,
          progress: Progress = lambda _m: None) -> BenchOutcome:
    """``advisor bench MODEL | --plan FILE``: the options checked, the plan made or read, then measured."""
    _check_options(opts)
    return bench_model(profile, plan_for(profile, model, plan_file), opts, progress)


def _with_engine(plan: Plan, profile: HardwareProfile) -> Plan:
    """A plan file that names no engine is measured on this machine's engine for its backend, as ``advisor run``
    would run it (advisor.app.serve.plan_for)."""
    if plan.engine is not None:
        return plan
    from advisor import engines
    from advisor.app import engines as engine_choice
    llama, vllm = engine_choice.choose(profile, here=True)
    ref = llama if plan.backend == LLAMA_CPP else vllm
    return dataclasses.replace(plan, engine=ref, args=engines.argv(ref, plan.settings, plan.model, plan.sampling))


def bench_model(profile: HardwareProfile, plan: Plan, opts: BenchOptions = BenchOptions(),
                progress: Progress = lambda _m: None, seams: Any = None) -> BenchOutcome:  # bench_server.ServedSeams
    """Measure ``plan`` on this machine, store the record and return it: through the plan's own server for
    llama-server and vLLM plans (advisor.app.bench_server; ``seams``: its process/HTTP seams for tests), in-process
    for llama-cpp-python."""
    _check_options(opts)
    plan = _with_engine(plan, profile)
    if plan.engine_ref.name in SERVED:
        from advisor.app.bench_server import bench_served
        return bench_served(profile, plan, opts, progress, seams)
    if plan.backend != LLAMA_CPP or plan.llama_cpp is None:
        raise EngineUnsupportedError(f"advisor bench runs llama.cpp and vLLM plans; this plan is for {plan.backend}")
    return _bench_in_process(profile, plan, opts, progress)


def _bench_in_process(profile: HardwareProfile, plan: Plan, opts: BenchOptions, progress: Progress) -> BenchOutcome:
    """Run ``plan``'s model in llama.cpp through llama-cpp-python in this process and time it."""
    assert plan.llama_cpp is not None
    from advisor.hub.download import resolve
    path = resolve(plan.model, progress)
    from advisor.gguf.facts import read_gguf_facts
    n_ctx_train = read_gguf_facts(str(path)).n_ctx_train
    depth = _depth(opts, n_ctx_train, plan.llama_cpp.ctx)
    n_ctx = max(opts.prompt, opts.gen, depth + opts.long_gen if depth > opts.prompt else 0) + 8
    progress(f"loading {path.name} (n_gpu_layers {plan.llama_cpp.n_gpu_layers}, context {n_ctx}) ...")
    llm = _llama(path, plan, n_ctx)
    try:
        samples = _measure(llm, opts, depth, progress)
    finally:
        close = getattr(llm, "close", None)
        if callable(close):
            close()
    import llama_cpp  # type: ignore[import-not-found]
    return save(profile, plan, samples, runner="llama-cpp-python",
                version=getattr(llama_cpp, "__version__", None), threads=plan.llama_cpp.threads)


def save(profile: HardwareProfile, plan: Plan, samples: list[store.Sample], runner: str, version: str | None,
         threads: int | None = None) -> BenchOutcome:
    """Store what was measured for ``plan`` under its backend (what later plans are matched by) and ``runner``
    (the engine that ran it), with what the speed model predicted."""
    record = store.BenchRecord(
        model_id=plan.model.id, quant=plan.model.quant, engine=plan.backend, runner=runner,
        n_gpu_layers=plan.llama_cpp.n_gpu_layers if plan.llama_cpp else None, samples=samples, threads=threads,
        predicted_decode=plan.predicted.decode_tokens_per_s, predicted_prefill=plan.predicted.prefill_tokens_per_s,
        engine_version=version)
    saved = store.save_run(machine_key(profile), record)
    return BenchOutcome(plan, record, saved)


def bench_memory(profile: HardwareProfile, seconds: float = 2.0, buffer_mib: int | None = None,
                 progress: Progress = lambda _m: None) -> store.MemoryRecord:
    """The CPU's streaming-read bandwidth (GB/s), measured once and stored for this machine."""
    import threading

    import numpy as np

    if not 0.1 <= seconds <= 60:
        raise BadInputError("--seconds must be between 0.1 and 60")
    cpu, mem = profile.cpu, profile.memory
    threads = max(1, cpu.usable_cores or cpu.physical_cores or cpu.logical_cores or 1)
    avail = mem.usable_bytes or mem.available_bytes or (1 << 30)
    total = (buffer_mib * MIB) if buffer_mib else int(min(256 * MIB, max(32 * MIB, avail // 8)))
    chunk = max(1, total // threads // 8)
    progress(f"memory: {threads} threads reading {threads * chunk * 8 >> 20} MiB, {seconds:g} s ...")
    bufs = [np.ones(chunk, dtype=np.float64) for _ in range(threads)]
    best, passes, deadline = 0.0, 0, time.monotonic() + seconds
    while passes < 2 or time.monotonic() < deadline:
        workers = [threading.Thread(target=b.sum) for b in bufs]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        dt = time.perf_counter() - t0
        best = max(best, threads * chunk * 8 / dt / 1e9)
        passes += 1
        if passes >= 200:
            break
    record = store.MemoryRecord(round(best, 2), threads, threads * chunk * 8, round(seconds, 2))
    store.save_memory(machine_key(profile), record)
    progress(f"memory: {record.bandwidth_gbs:.1f} GB/s")
    return record


# -- using measurements ---------------------------------------------------------------------------------------------

def _measured(plan: Plan, rec: store.BenchRecord) -> Predicted:
    tg, pp = rec.best("tg"), rec.best("pp")
    when = time.strftime("%Y-%m-%d", time.localtime(rec.measured_at))
    return dataclasses.replace(
        plan.predicted, basis="measured",
        decode_tokens_per_s=round(tg.mean, 1) if tg else plan.predicted.decode_tokens_per_s,
        decode_low=round(min(tg.tokens_per_s), 1) if tg else plan.predicted.decode_low,
        decode_high=round(max(tg.tokens_per_s), 1) if tg else plan.predicted.decode_high,
        prefill_tokens_per_s=round(pp.mean, 0) if pp else plan.predicted.prefill_tokens_per_s,
        prefill_low=round(min(pp.tokens_per_s), 0) if pp else plan.predicted.prefill_low,
        prefill_high=round(max(pp.tokens_per_s), 0) if pp else plan.predicted.prefill_high,
        note=f"measured by advisor bench ({rec.runner}, {when}): {', '.join(s.name for s in rec.samples)}")


def _ratio(runs: list[store.BenchRecord], test: str) -> float | None:
    rs = []
    for r in runs:
        s = r.best(test)
        pred = r.predicted_decode if test == "tg" else r.predicted_prefill
        if s and pred:
            rs.append(s.mean / pred)
    return statistics.median(rs) if rs else None


def _scaled(p: Predicted, dec: float | None, pre: float | None, why: str) -> Predicted:
    def mul(x: float | None, f: float | None, nd: int) -> float | None:
        return None if x is None or f is None else round(x * f, nd)
    return dataclasses.replace(
        p, basis="calibrated", note=why,
        decode_tokens_per_s=mul(p.decode_tokens_per_s, dec, 1) or p.decode_tokens_per_s,
        decode_low=mul(p.decode_low, dec, 1) or p.decode_low, decode_high=mul(p.decode_high, dec, 1) or p.decode_high,
        prefill_tokens_per_s=mul(p.prefill_tokens_per_s, pre, 0) or p.prefill_tokens_per_s,
        prefill_low=mul(p.prefill_low, pre, 0) or p.prefill_low,
        prefill_high=mul(p.prefill_high, pre, 0) or p.prefill_high)


def _cpu_ratio(plan: Plan, profile: HardwareProfile, gbs: float) -> float | None:
    """Decode speed with the measured CPU bandwidth over that with the rules' default, for plans whose layers
    (not just the token-embedding table) sit partly on the CPU. The default is a peak (channels x transfer rate)
    that rules/speed.toml's cpu decode efficiency scales down; a streaming read measures what the CPU reaches
    already, so it stands for peak x efficiency (decode cannot read faster than a streaming read; the CPU rows of
    tests/data/llama-bench reach about the streaming rate, e.g. a Raspberry Pi 5 decodes Qwen3-30B-A3B at ~8 GB/s
    of weights)."""
    cpu = sum(d.weights_bytes for d in plan.memory if d.device == "cpu")
    total = sum(d.weights_bytes for d in plan.memory) or 1
    if cpu / total < 0.1:
        return None
    from advisor.planner import speed
    from advisor.planner.machine import build_machine
    from advisor.rules import load_rules
    m = build_machine(profile, load_rules())
    frac = (plan.model.active_params or 1) / (plan.model.params or plan.model.active_params or 1)
    ms = speed.ModelSpeed(quant=plan.model.quant, read_fraction=min(1.0, frac))
    eff = speed.Constants.from_rules(m.rules).decode_eff("cpu", ms.family)
    measured = dataclasses.replace(m, cpu=dataclasses.replace(m.cpu, bandwidth_gbs=gbs / eff))
    a = speed.predict(plan.memory, m, frac, 0, model=ms).decode_tokens_per_s
    b = speed.predict(plan.memory, measured, frac, 0, model=ms).decode_tokens_per_s
    return b / a if a and b else None


def apply_measurements(profile: HardwareProfile, plans: list[Plan]) -> list[Plan]:
    """Each plan with the best basis this machine's measurements give (see the module's docstring)."""
    key = machine_key(profile)
    runs = store.runs(key)
    mem = store.memory(key)
    if not runs and mem is None:
        return plans
    out = []
    for plan in plans:
        same = [r for r in runs if r.key() == (plan.model.id, (plan.model.quant or "").upper(), plan.backend)]
        ngl = plan.llama_cpp.n_gpu_layers if plan.llama_cpp else None
        exact = [r for r in same if r.n_gpu_layers == ngl]
        if exact:
            # the plan's own engine first (llama-server and llama-cpp-python run the same backend), then the latest
            latest = max(exact, key=lambda r: (r.runner == plan.engine_ref.name, r.measured_at))
            out.append(dataclasses.replace(plan, predicted=_measured(plan, latest)))
            continue
        engine_runs = same or [r for r in runs if r.engine == plan.backend]
        dec, pre = _ratio(engine_runs, "tg"), _ratio(engine_runs, "pp")
        if dec or pre:
            why = (f"speed model x measured/predicted of {len(engine_runs)} advisor bench run(s) on this machine "
                   f"(decode x{dec or 1:.2f}, prefill x{pre or 1:.2f})")
            out.append(dataclasses.replace(plan, predicted=_scaled(plan.predicted, dec, pre, why)))
            continue
        ratio = _cpu_ratio(plan, profile, mem.bandwidth_gbs) if mem else None
        if ratio:
            why = ("speed model with the CPU memory bandwidth advisor bench --memory measured "
                   f"({mem.bandwidth_gbs} GB/s)")
            out.append(dataclasses.replace(plan, predicted=_scaled(plan.predicted, ratio, None, why)))
            continue
        out.append(plan)
    return out
