"""Plans across several machines (node 0 is the head). Pure: profiles, catalog and rules in, plans out.

A model goes multi-node only when no plan for it fits node 0 alone; a model that fits one node keeps its one-node
plan, and the plan says so. Two ways across machines, both from the engines' own documentation:

- vLLM on a Ray cluster (docs "Parallelism and Scaling", multi-node: "the tensor parallel size is the number of GPUs
  in each node, and the pipeline parallel size is the number of nodes"; ``--distributed-executor-backend ray``).
  Pipeline stages take contiguous layers (vllm/distributed/utils.py get_pp_indices: ``num_hidden_layers //
  pp_size`` each, the remainder to the stages before the last), the first stage also the embedding, the last the
  LM head; tensor parallelism divides each stage's attention heads (and KV heads) across a node's GPUs. Each rank is
  sized with the vLLM memory model of advisor.planner.vllm (weights, activation peak, non-torch memory, KV cache).
  Tensor parallelism across nodes needs a fast interconnect (the same docs: only "with high-speed interconnect like
  InfiniBand"); the plan keeps TP inside a node and says when every node has InfiniBand.
- llama.cpp's RPC backend (tools/rpc/README.md): ``rpc-server`` on each worker exposes its devices; the head's
  ``llama-server --rpc host:port,...`` puts the RPC devices first in its device list (src/llama.cpp
  llama_model_load: "add RPC servers at the front of the list to minimize network transfers"), then its own GPUs.
  Each remote device is sized by the estimator like a local one, and ``--tensor-split`` follows each device's budget.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from advisor.catalog.model import Catalog, Model, Variant
from advisor.errors import BadInputError
from advisor.plan import (
    LLAMA_CPP,
    LLAMA_SERVER,
    VLLM,
    DeviceMemory,
    EngineRef,
    NodePart,
    NodeStep,
    Plan,
    VllmSettings,
)
from advisor.planner import (
    ENGINE_FORMATS,
    Recommendation,
    Request,
    _engines,
    _model_filter,
    _plan_model,
    _ref,
    _Run,
    _select,
    recommend,
)
from advisor.planner import assemble
from advisor.planner.machine import MIB, Device, Machine, build_machine, physical_threads
from advisor.planner.quality import model_score, quality
from advisor.planner.speed import predict
from advisor.planner.vllm import (
    activation_peak_bytes,
    available_kv_bytes,
    kv_capacity_tokens,
    kv_need,
    non_torch_bytes,
    quantization_for,
)
from advisor.planner.whynot import Rejection
from advisor.probe.profile import HardwareProfile
from advisor.rules import Rules

#: ``ray start --head`` listens here by default (Ray docs "ray start": --port default 6379; vLLM's
#: examples/online_serving/run_cluster.sh passes it explicitly).
RAY_PORT = 6379
#: ``rpc-server -p`` default (tools/rpc/rpc-server.cpp, "port to bind to (default: 50052)").
RPC_PORT = 50052
#: The binary llama.cpp's tools/rpc/CMakeLists.txt builds (``ggml-rpc-server``; older trees call it ``rpc-server``).
RPC_SERVER = "ggml-rpc-server"


@dataclass(frozen=True)
class ClusterNode:
    index: int
    profile: HardwareProfile
    host: str
    machine: Machine


def host_of(profile: HardwareProfile, index: int) -> str:
    return profile.hostname or f"node{index}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def recommend_cluster(profiles: list[HardwareProfile], catalog: Catalog, rules: Rules, request: Request = Request(),
                      learned: Mapping[str, Mapping[str, Any]] | None = None) -> Recommendation:
    """Plans for a cluster of machines, best first: one-node plans on node 0 where a model fits it, multi-node
    plans for the models that need more than one node."""
    if not profiles:
        raise BadInputError("no hardware profile given")
    single = recommend(profiles[0], catalog, rules, request, learned)
    if len(profiles) == 1:
        return single
    conc = max(1, request.concurrency)
    nodes = [ClusterNode(i, p, host_of(p, i), build_machine(p, rules, conc)) for i, p in enumerate(profiles)]
    if len({n.host for n in nodes}) < len(nodes):
        raise BadInputError("two hardware profiles name the same host: each node must be a different machine",
                            hint="set each profile's \"hostname\" to the address the other nodes reach it by")
    one = f"one node is enough: fits node 0 ({nodes[0].host}) alone, so the other {len(nodes) - 1} node(s) are " \
          "not used"
    fits_one = {p.model.id for p in single.ranked}
    models, repo, quant = _select(catalog, request)
    multi: list[Plan] = []
    rejections = list(single.rejections)
    for model in models:
        if model.id in fits_one or _model_filter(model, request):
            continue
        plan, misses = _cluster_model(nodes, catalog, model, request, repo, quant)
        rejections += misses
        if plan is not None:
            multi.append(plan)
    key = lambda p: (-p.score, -(p.predicted.decode_tokens_per_s or 0.0), p.model.id)  # noqa: E731
    ranked = sorted([*(replace(p, reasons=[one, *p.reasons]) for p in single.ranked), *multi], key=key)
    notes = [*single.notes] + [f"node {n.index} ({n.host}): {x}" for n in nodes[1:] for x in n.machine.notes]
    return Recommendation(ranked[: max(1, request.top)], rejections, ranked, notes)


def _cluster_model(nodes: list[ClusterNode], catalog: Catalog, model: Model, request: Request, repo: str | None,
                   quant: str | None) -> tuple[Plan | None, list[Rejection]]:
    head = nodes[0].machine
    engines, why, misses = _engines(head, request)
    best: tuple[tuple[float, float, int], Plan] | None = None
    for pref, engine in enumerate(engines):
        if engine == VLLM:
            plan, miss = _vllm_cluster(nodes, catalog, model, request, repo, quant)
        else:
            plan, miss = _rpc_cluster(nodes, catalog, model, request, repo, quant)
        misses += miss
        if plan is not None:
            rank = (plan.score, plan.predicted.decode_tokens_per_s or 0.0, -pref)
            if best is None or rank > best[0]:
                best = (rank, plan)
    return (best[1] if best else None), misses


# -- vLLM: TP inside a node, PP across nodes ----------------------------------------------------------------------
def _tp_for(model: Model, gpus: int) -> int:
    """The largest power of two up to the node's GPU count that divides the attention heads (vLLM checks
    ``num_attention_heads % tensor_parallel_size == 0``, config/model.py verify_with_parallel_config)."""
    tp = 0
    t = 1
    while t <= gpus:
        if model.arch.n_head % t == 0:
            tp = t
        t *= 2
    return tp


def stage_layers(n_layer: int, pp: int) -> list[int]:
    """Layers per pipeline stage as vllm/distributed/utils.py get_pp_indices splits them (no
    VLLM_PP_LAYER_PARTITION): ``n // pp`` each, one more for the stages before the last while a remainder lasts."""
    parts = [n_layer // pp] * pp
    for i in range(2, n_layer % pp + 2):
        parts[-i] += 1
    return parts


def embedding_bytes(model: Model) -> int:
    """One vocabulary x n_embd matrix in 16-bit: quantized checkpoints keep the embedding and LM head unquantized
    (llm-compressor / AutoAWQ / GPTQ leave lm_head out of their targets)."""
    return model.arch.vocab_size * model.arch.n_embd * 2


def rank_weights(model: Model, weights_total: int, tp: int, pp: int) -> int:
    """The largest rank's weights: its stage's share of the layers plus the embedding (first stage) or LM head (last
    stage), each divided across the TP ranks (VocabParallelEmbedding / ParallelLMHead split the vocabulary)."""
    emb = embedding_bytes(model)
    head = 0 if model.arch.tied_embeddings and pp == 1 else emb
    layers = max(0, weights_total - emb - head)
    most = max(stage_layers(model.arch.n_layer, pp))
    return -(-(layers * most // model.arch.n_layer + emb) // tp)


def _stage_model(model: Model, pp: int) -> Model:
    return dataclasses.replace(model, arch=dataclasses.replace(model.arch,
                                                               n_layer=max(stage_layers(model.arch.n_layer, pp))))


@dataclass(frozen=True)
class _Fit:
    settings: VllmSettings
    memory: list[DeviceMemory]
    kv_budget: int
    kv_tokens: int
    outside: int
    eager: bool


def _fit_vllm(model: Model, weights_total: int, used: list[ClusterNode], tp: int, want: int, floor: int,
              fixed: bool, concurrency: int, quantization: str | None) -> _Fit | int:
    """The settings every rank accepts (one gpu_memory_utilization and max_model_len for all), or the shortfall."""
    pp = len(used)
    r = used[0].machine.rules
    block, mnbt, seqs_default = r["block_size"], r["max_num_batched_tokens"], r["max_num_seqs"]
    devs = [(n, d) for n in used for d in n.machine.gpus[:tp]]
    total = min(d.total_bytes for _, d in devs)
    free = min(d.capacity_bytes for _, d in devs)
    w = rank_weights(model, weights_total, tp, pp)
    stage = _stage_model(model, pp)
    act = activation_peak_bytes(model, mnbt, seqs_default, tp, r["activation_floats_per_token"]) \
        + non_torch_bytes(tp * pp, r["non_torch_mib"])
    short = 1 << 62
    for eager in (False, True):
        outside = (r["cuda_context_mib"] + (0 if eager else r["cuda_graph_mib"]) + r["redundancy_mib"]) * MIB
        util = min(r["max_gpu_memory_utilization"], (total - outside) / total, (free - outside) / total)
        util = int(util * 100) / 100
        budget = available_kv_bytes(total, util, w, act, 0)
        length = want
        if not fixed:
            while length > floor and kv_need(stage, tp, length, mnbt, block) > budget:
                length = max(floor, length // 2)
        need = kv_need(stage, tp, length, mnbt, block)
        if need > budget:
            short = min(short, need - max(0, budget))
            continue
        tokens = kv_capacity_tokens(stage, budget, tp, block)
        seqs = max(1, min(seqs_default, max(concurrency, tokens // length)))
        settings = VllmSettings(max_model_len=length, max_num_seqs=seqs, gpu_memory_utilization=util,
                                tensor_parallel_size=tp, pipeline_parallel_size=pp, quantization=quantization,
                                dtype=r["vllm_dtype"], enforce_eager=eager, max_num_batched_tokens=mnbt,
                                distributed_executor_backend="ray")
        memory = [DeviceMemory(f"node{n.index}.{d.name}", weights_bytes=w, kv_cache_bytes=budget,
                               other_bytes=act + outside, total_bytes=w + budget + act + outside,
                               capacity_bytes=d.capacity_bytes) for n, d in devs]
        return _Fit(settings, memory, budget, tokens, outside, eager)
    return short


def _vllm_cluster(nodes: list[ClusterNode], catalog: Catalog, model: Model, request: Request, repo: str | None,
                  quant: str | None) -> tuple[Plan | None, list[Rejection]]:
    from advisor.gguf import layout as quant_layout

    head = nodes[0].machine
    if any(n.machine.vendor not in ("nvidia", "amd") or n.machine.vendor != head.vendor for n in nodes):
        return None, [Rejection(model.id, "engine_not_candidate", {
            "why": "vLLM across nodes needs NVIDIA or AMD GPUs of one vendor on every node"}, engine=VLLM)]
    variants = [v for v in model.all_variants() if v.format in ENGINE_FORMATS[VLLM]
                and (repo is None or v.repo == repo) and (quant is None or v.quant.upper() == quant)]
    base, model_why = model_score(catalog, model, request.task)
    qs = {id(v): quality(catalog, v, head, head.backend) for v in variants}
    variants.sort(key=lambda v: (-qs[id(v)].effective, -qs[id(v)].rating))
    misses: list[Rejection] = []
    r = head.rules
    want = request.context or min(r["default_ctx"], model.context_native)
    floor = min(r["ctx_floor"], model.context_native, want)
    for v in variants:
        q = quantization_for(catalog, v, head)
        if not isinstance(q, tuple):
            misses.append(Rejection(model.id, q.template, q.params, v.quant, VLLM, q.shortfall_bytes))
            continue
        weights = v.size_bytes or quant_layout.checkpoint_bytes(model.arch, v.format, v.quant.lower())
        for pp in range(2, len(nodes) + 1):
            used = nodes[:pp]
            tp = _tp_for(model, min(len(n.machine.gpus) for n in used))
            if not tp:
                break
            fit = _fit_vllm(model, weights, used, tp, want, floor, bool(request.context),
                            max(1, request.concurrency), q[0])
            if isinstance(fit, int):
                if pp == len(nodes):
                    misses.append(Rejection(model.id, "too_big", {
                        "need": fit, "have": 0, "device": f"the KV cache of each GPU of all {pp} nodes (TP {tp} x "
                        f"PP {pp})"}, v.quant, VLLM, fit))
                continue
            score = round(base * qs[id(v)].effective / 100, 2)
            engine = assemble.engine_for(request.engines, VLLM)
            return _vllm_plan(nodes, used, model, v, fit, score, [model_why, f"quantization: {q[1]}"],
                              engine), misses
    return None, misses


def _vllm_plan(nodes: list[ClusterNode], used: list[ClusterNode], model: Model, v: Variant, fit: _Fit,
               score: float, why: list[str], engine: EngineRef) -> Plan:
    s = fit.settings
    tp, pp = s.tensor_parallel_size, s.pipeline_parallel_size
    ref = _ref(model, v)
    sampling = assemble.sampling_of(model)
    active = (model.params_active_b or model.params_total_b) * 1e9
    frac = active / (model.params_total_b * 1e9)
    head = used[0].machine
    stage_mem = [dataclasses.replace(d, device=d.device.split(".")[1]) for d in fit.memory[:tp]]
    one = predict(stage_mem, head, frac, active / pp, tensor_parallel=True, llama_cpp=False)
    # the stages run one after the other for one token: decode time adds up over the stages
    decode = round(one.decode_tokens_per_s / pp, 1) if one.decode_tokens_per_s else None
    predicted = dataclasses.replace(one, decode_tokens_per_s=decode)
    per_gpu = fit.memory[0]
    reasons = [
        f"spans {pp} nodes: no variant of {model.id} fits node 0 ({used[0].host}) alone",
        *why,
        f"tensor_parallel_size {tp} inside each node (the {model.arch.n_head} attention heads divide by {tp}) and "
        f"pipeline_parallel_size {pp} across nodes: vLLM's documented multi-node layout (TP = GPUs per node, PP = "
        "nodes); the stages hold " + "/".join(str(x) for x in stage_layers(model.arch.n_layer, pp)) + " layers",
        f"per GPU: weights {per_gpu.weights_bytes / 2**30:.2f} GiB, KV cache {fit.kv_budget / 2**30:.2f} GiB = "
        f"{fit.kv_tokens} tokens, activations and buffers {per_gpu.other_bytes / 2**30:.2f} GiB; "
        f"{per_gpu.total_bytes / 2**30:.2f} GiB of {min(d.capacity_bytes or 0 for d in fit.memory) / 2**30:.2f} GiB",
        f"gpu_memory_utilization {s.gpu_memory_utilization:.2f} on every GPU, max_model_len {s.max_model_len}, "
        f"max_num_seqs {s.max_num_seqs}" + (", enforce_eager: no room for CUDA graphs" if s.enforce_eager else ""),
        "--distributed-executor-backend ray: vLLM reaches the other nodes' GPUs through a Ray cluster (ray start "
        "--head on node 0, ray start --address on the others, then vllm serve on node 0)",
    ]
    if all(n.profile.interconnect.infiniband_active for n in used):
        reasons.append("every node has an active InfiniBand adapter: tensor parallelism across nodes would also "
                       f"work (TP {tp * pp}); pipeline parallelism across nodes is kept (less traffic between nodes)")
    if len(nodes) > pp:
        reasons.append(f"{pp} of the {len(nodes)} nodes are enough; the others are not used")
    reasons += assemble.sampling_notes(engine, sampling)
    plan = Plan(model=ref, backend=VLLM, vllm=s, engine=engine, args=assemble.plan_args(engine, s, ref, sampling),
                memory=fit.memory,
                predicted=predicted, sampling=sampling, score=score, reasons=reasons)
    return replace(plan, nodes=ray_nodes(used, tp))


def ray_nodes(used: list[ClusterNode], gpus_per_node: int, port: int = RAY_PORT) -> list[NodePart]:
    """Per node: ``ray start`` (head first), then the engine on the head. Variables: NCCL_SOCKET_IFNAME and
    GLOO_SOCKET_IFNAME name the interface of the default route where the profile tells it (vLLM docs,
    troubleshooting multi-node: the wrong interface is the usual cause of hangs; Ray's workers inherit the
    raylet's environment, so they are set on ``ray start``), VLLM_HOST_IP the node's own address when it is one."""
    head = used[0].host
    parts = []
    for n in used:
        env: dict[str, str] = {}
        iface = n.profile.interconnect.default_interface
        if iface:
            env.update(NCCL_SOCKET_IFNAME=iface, GLOO_SOCKET_IFNAME=iface)
        if _is_ip(n.host):
            env["VLLM_HOST_IP"] = n.host
        ip = ["--node-ip-address", n.host] if _is_ip(n.host) else []
        if n.index == 0:
            steps = [NodeStep("ray-head", ["ray", "start", "--head", "--port", str(port), *ip], env, port),
                     NodeStep("engine", [], env, None)]
        else:
            steps = [NodeStep("ray-worker", ["ray", "start", "--address", f"{head}:{port}", *ip], env)]
        parts.append(NodePart(n.index, "head" if n.index == 0 else "worker", n.host, gpus_per_node, steps))
    return parts


# -- llama.cpp: the RPC backend ------------------------------------------------------------------------------------
def _remote_devices(node: ClusterNode) -> list[Device]:
    """What one worker's rpc-server offers: its GPUs, or its CPU as one device (rpc-server exposes "a single CPU
    device" when it has no accelerator, tools/rpc/README.md)."""
    m = node.machine
    if m.gpus:
        return list(m.gpus)
    c = m.cpu
    return [Device(name="cpu", capacity_bytes=c.capacity_bytes, headroom_bytes=c.headroom_bytes,
                   total_bytes=c.total_bytes, free_bytes=c.free_bytes, bandwidth_gbs=c.bandwidth_gbs,
                   tflops=c.tflops)]


def rpc_machine(nodes: list[ClusterNode]) -> Machine:
    """The head's machine as llama.cpp with ``--rpc`` sees it: the workers' devices first (in --rpc order), then
    its own GPUs, renamed gpu0, gpu1... With unified memory on the head, its GPU's share comes off its RAM here
    (each device is counted once, and remote devices never count against the head's RAM)."""
    head = nodes[0].machine
    devices = [d for n in nodes[1:] for d in _remote_devices(n)] + list(head.gpus)
    devices = [replace(d, name=f"gpu{i}") for i, d in enumerate(devices)]
    cpu = head.cpu
    if head.unified:
        cpu = replace(cpu, capacity_bytes=max(0, cpu.capacity_bytes - sum(d.capacity_bytes for d in head.gpus)))
    return replace(head, gpus=tuple(devices), unified=False, cpu=cpu)


def _rpc_cluster(nodes: list[ClusterNode], catalog: Catalog, model: Model, request: Request, repo: str | None,
                 quant: str | None) -> tuple[Plan | None, list[Rejection]]:
    head = nodes[0]
    m = rpc_machine(nodes)
    engines, why, _ = _engines(head.machine, request)
    run = _Run(head.profile, catalog, m, replace(request, model=model.id), [LLAMA_CPP],
               f"llama.cpp's RPC backend spans the {len(nodes)} nodes", {})
    run.exact = True
    plan = _plan_model(run, model, repo, quant)
    if plan is None:
        return None, [replace(r, params={**r.params, "device": f"{r.params.get('device', '?')} of the "
                                                                f"{len(nodes)} nodes together"})
                      if r.template == "too_big" else r for r in run.rejections]
    return _rpc_plan(nodes, m, plan), []


def _rpc_plan(nodes: list[ClusterNode], m: Machine, plan: Plan) -> Plan:
    endpoints = [f"{n.host}:{RPC_PORT}" for n in nodes[1:]]
    s = plan.settings
    assert s is not None and plan.llama_cpp is not None
    n_remote = sum(len(_remote_devices(n)) for n in nodes[1:])
    split = list(s.tensor_split) if s.tensor_split else [1.0] * len(m.gpus)
    settings = replace(plan.llama_cpp, rpc_servers=endpoints, tensor_split=split if len(split) > 1 else None)
    names = [f"{n.host} {d.name}" for n in nodes[1:] for d in _remote_devices(n)] + \
        [f"{nodes[0].host} {d.name}" for d in nodes[0].machine.gpus]
    reasons = [
        f"spans {len(nodes)} nodes through llama.cpp's RPC backend: the model does not fit node 0 "
        f"({nodes[0].host}) alone",
        *plan.reasons,
        f"devices in llama.cpp's order (RPC servers first, then the head's own GPUs): {', '.join(names)}; tensor "
        f"split {split} in proportion to each device's free memory after its margins",
        f"rpc-server on {', '.join(endpoints)}: the head reaches each worker's devices over TCP; every token crosses "
        "the network once per device boundary, so speeds are lower than the estimate (the RPC README: a "
        "proof of concept, never to be exposed on an open network)",
    ]
    parts = [NodePart(0, "head", nodes[0].host, len(nodes[0].machine.gpus), [NodeStep("engine")])]
    for n in nodes[1:]:
        threads = physical_threads(n.profile)
        argv = [RPC_SERVER, "-H", n.host, "-p", str(RPC_PORT)]
        if not n.machine.gpus:
            argv += ["-t", str(threads)]  # rpc-server.cpp: the CPU device uses 1 thread unless told
        parts.append(NodePart(n.index, "worker", n.host, len(n.machine.gpus), [NodeStep("rpc-server", argv,
                                                                                          {}, RPC_PORT)]))
    memory = [replace(d, device=_device_label(d.device, names)) for d in plan.memory]
    engine = plan.engine_ref
    if engine.name != LLAMA_SERVER:
        engine = EngineRef(LLAMA_SERVER, source="the RPC head runs llama-server with --rpc ('advisor setup --rpc' "
                           "builds one): llama-cpp-python's server takes rpc_servers but never hands it to llama.cpp")
        reasons.append(f"engine llama-server, not {plan.engine_ref.name}: {engine.source}")
    return replace(plan, llama_cpp=settings, engine=engine,
                   args=assemble.plan_args(engine, settings, plan.model, plan.sampling), reasons=reasons,
                   nodes=parts, memory=memory)


def _device_label(device: str, names: list[str]) -> str:
    if device.startswith("gpu") and device[3:].isdigit() and int(device[3:]) < len(names):
        return names[int(device[3:])].replace(" ", ".")
    return device


__all__ = ["recommend_cluster", "rank_weights", "stage_layers", "rpc_machine", "ray_nodes", "host_of"]


def plan_gguf_cluster(profiles: list[HardwareProfile], rules: Rules, facts: Any, request: Request = Request()) -> Plan:
    """A local GGUF file (its header's facts) across machines: on node 0 alone when it fits there, else through
    llama.cpp's RPC backend over every node. Raises NothingFitsError when even all nodes together miss."""
    from advisor.catalog.facts import compact, expert_fraction
    from advisor.errors import NothingFitsError
    from advisor.planner import Fit, _llama_plan, plan_for_gguf

    try:
        plan = plan_for_gguf(profiles[0], rules, facts, request)
        host = host_of(profiles[0], 0)
        return replace(plan, reasons=[f"one node is enough: fits node 0 ({host}) alone", *plan.reasons])
    except NothingFitsError:
        if len(profiles) == 1:
            raise
    conc = max(1, request.concurrency)
    nodes = [ClusterNode(i, p, host_of(p, i), build_machine(p, rules, conc)) for i, p in enumerate(profiles)]
    m = rpc_machine(nodes)
    run = _Run(profiles[0], None, m, request, [LLAMA_CPP],  # type: ignore[arg-type]
               "a local GGUF file runs on llama.cpp", {})
    native = facts.n_ctx_train or 4096
    plan = _llama_plan(run, None, None, compact(facts), native, 0.0, [f"local file {facts.path}"],
                       expert_fraction(facts), speed_facts=facts)
    if isinstance(plan, Fit):
        raise NothingFitsError(f"{facts.path}: needs {plan.need_bytes >> 20} MiB on {plan.where} even across the "
                               f"{len(nodes)} nodes, which has {plan.have_bytes >> 20} MiB after its margins")
    return _rpc_plan(nodes, m, plan)
