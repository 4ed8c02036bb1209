"""The planner over recorded machines replayed through the real probe (tests/replay.py), times tasks.

Checks: every plan fits each device's budget with the rules' margins; more memory never gives a lower-scored best
plan; full offload whenever the model fits the GPU; vLLM plans pass vLLM's start-up check; quant rules per backend.
"""

from __future__ import annotations

import dataclasses

import pytest

from advisor.planner import Request, recommend
from advisor.planner.machine import build_machine
from advisor.planner.vllm import KV_DTYPE_BYTES, kv_need
from advisor.probe import probe
from tests.replay import DATA, Machine

MEMINFO = {"laptop": "MemTotal: 16318412 kB\nMemAvailable: 12000000 kB\nSwapTotal: 2097148 kB\n",
           "server": "MemTotal: 263842408 kB\nMemAvailable: 250000000 kB\nSwapTotal: 0 kB\n",
           "desktop": "MemTotal: 65536000 kB\nMemAvailable: 60000000 kB\nSwapTotal: 8388604 kB\n"}
NV = DATA / "nvidia"
CAPTURE = "linux-x86_64__nvidia-{}__"


def _linux(root, cpu, mem):
    m = Machine(root)
    m.copy("/proc/cpuinfo", DATA / "cpu" / cpu)
    m.file("/proc/meminfo", MEMINFO[mem])
    return m


def _nv_capture(m, stem):
    p = NV / CAPTURE.format(stem)
    m.tool("nvidia-smi", "nvidia_smi.py", NVSMI_QUERY_CSV=f"{p}query-gpu.idle.csv", NVSMI_Q=f"{p}q.idle.txt",
           NVSMI_L=f"{p}nvidia-smi-L.txt")


MACHINES = {
    "cpu-laptop-alderlake": lambda r: _linux(r, "linux-ubuntu24.04-alderlake", "laptop"),
    "cpu-server-zen4": lambda r: _linux(r, "linux-rocky8.5-zen4", "server"),
    "cpu-arm-neoverse": lambda r: _linux(r, "linux-rhel9-neoverse_v2", "server"),
    "rtx2080super": lambda r: (_nv_capture(m := _linux(r, "linux-ubuntu20.04-zen3", "desktop"),
                                           "geforce-rtx-2080-super__595.71.05"), m)[1],
    "rtx4080super": lambda r: (_nv_capture(m := _linux(r, "linux-ubuntu24.04-alderlake", "desktop"),
                                           "geforce-rtx-4080-super__595.71.05"), m)[1],
    "l40s": lambda r: (_nv_capture(m := _linux(r, "linux-rocky8.5-zen4", "server"), "l40s__595.80"), m)[1],
    "h100": lambda r: (_nv_capture(m := _linux(r, "linux-unknown-sapphirerapids", "server"),
                                   "h100-80gb-hbm3__590.48.01"), m)[1],
    "h100-mig": lambda r: (_nv_capture(m := _linux(r, "linux-unknown-sapphirerapids", "server"),
                                       "h100-mig__590.48.01"), m)[1],
}
for _name, _xml, _cpu, _mem in (("rtx3060", "rtx-3060-v12", "linux-ubuntu20.04-zen3", "desktop"),
                                ("rtx3090", "rtx-3090-v12", "linux-ubuntu20.04-zen3", "desktop"),
                                ("t4", "tesla-t4", "linux-rhel7-skylake_avx512", "server"),
                                ("a100-mig", "a100-sxm4-v12", "linux-rocky8.5-zen4", "server"),
                                ("dual-2080", "dual_2080-v13", "linux-ubuntu20.04-zen3", "desktop")):
    MACHINES[_name] = (lambda x, c, mm: lambda r: (
        (m := _linux(r, c, mm)).tool("nvidia-smi", "nvidia_smi.py", NVSMI_XML=NV / f"telegraf__{x}.xml"), m)[1]
    )(_xml, _cpu, _mem)
for _name, _json in (("mi100", "telegraf__mi100_rocm571.json"), ("rx6700xt", "telegraf__rx6700xt_rocm602.json")):
    MACHINES[_name] = (lambda j: lambda r: (
        (m := _linux(r, "linux-rhel7-zen", "server")).tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=DATA / "amd" / j),
        m)[1])(_json)
for _name, _rec in (("apple-m1pro", "darwin-bigsur-m1"), ("apple-m2", "darwin-monterey-m2"),
                    ("apple-m3max", "darwin-sequoia-m3")):
    MACHINES[_name] = (lambda rec: lambda r: (
        (m := Machine(r, os_name="darwin", arch="aarch64")).tool("sysctl", "sysctl.py",
                                                                 SYSCTL_RECORDING=DATA / "cpu" / rec), m)[1])(_rec)

TASKS = [Request(task="chat"), Request(task="code"), Request(task="code", concurrency=8),
         Request(task="chat", context=16384)]


@pytest.fixture(scope="module")
def profiles(tmp_path_factory):
    out = {}
    for name, make in MACHINES.items():
        m = make(tmp_path_factory.mktemp(name) / "root")
        out[name] = probe(m.system())
    return out


def test_at_least_twelve_profiles_with_gpus_where_recorded(profiles):
    assert len(profiles) >= 12
    assert profiles["t4"].gpus and profiles["mi100"].gpus and profiles["apple-m2"].gpus
    assert len(profiles["dual-2080"].gpus) == 2
    assert not profiles["cpu-laptop-alderlake"].gpus


def _check_plan(plan, machine, catalog):
    devs = {d.name: d for d in machine.gpus}
    for mem in plan.memory:
        if mem.device in devs:
            d = devs[mem.device]
            margin = 0 if plan.backend == "vllm" else d.headroom_bytes
            assert mem.total_bytes + margin <= d.capacity_bytes, (plan.model.id, mem)
    ram = sum(m.total_bytes for m in plan.memory if m.device in ("cpu", "host"))
    if machine.unified:
        ram += sum(m.total_bytes for m in plan.memory if m.device in devs)
    assert ram <= machine.cpu.budget_bytes, (plan.model.id, ram, machine.cpu.budget_bytes)
    model = catalog.get(plan.model.id)
    if plan.vllm:
        s = plan.vllm
        for mem in plan.memory:  # vLLM's own start-up check
            assert kv_need(model, s.tensor_parallel_size, s.max_model_len, s.max_num_batched_tokens, 16,
                           KV_DTYPE_BYTES[s.kv_cache_dtype], s.pipeline_parallel_size) <= mem.kv_cache_bytes
        assert model.arch.n_head % s.tensor_parallel_size == 0
    if plan.llama_cpp and machine.gpus:
        gpu_weights = sum(m.weights_bytes for m in plan.memory if m.device in devs)
        full = plan.llama_cpp.n_gpu_layers == model.arch.n_layer + model.arch.n_layer_nextn + 1
        # full offload whenever the whole model fits the GPU budget with room for its buffers
        if not full:
            assert plan.model.size_bytes is None or gpu_weights < machine.gpu_budget_bytes
    quant = plan.model.quant or ""
    if plan.llama_cpp and machine.backend in ("cpu_x86", "cpu_arm", "metal", "rocm"):
        assert not quant.startswith(("IQ1", "IQ2", "IQ3")) or any("less 10" in r for r in plan.reasons)


@pytest.mark.parametrize("name", sorted(MACHINES))
def test_matrix(profiles, catalog, rules, name):
    profile = profiles[name]
    for req in TASKS:
        rec = recommend(profile, catalog, rules, req)
        machine = build_machine(profile, rules, req.concurrency)
        assert rec.plans or rec.closest() is not None, (name, req)
        for plan in rec.plans:
            _check_plan(plan, machine, catalog)
            assert plan.args and plan.reasons and plan.fallbacks
            assert plan.predicted.decode_tokens_per_s and plan.predicted.basis == "model"


def _more_memory(profile, factor):
    gpus = [dataclasses.replace(g, memory_total_bytes=int((g.memory_total_bytes or 0) * factor),
                                memory_free_bytes=int((g.memory_free_bytes or g.memory_total_bytes or 0) * factor))
            for g in profile.gpus]
    mem = profile.memory
    mem = dataclasses.replace(mem, **{k: int(getattr(mem, k) * factor) for k in
                                      ("total_bytes", "available_bytes", "usable_bytes") if getattr(mem, k)})
    return dataclasses.replace(profile, gpus=gpus, memory=mem)


@pytest.mark.parametrize("name", ["cpu-laptop-alderlake", "rtx3060", "t4", "apple-m2", "rx6700xt", "dual-2080"])
@pytest.mark.parametrize("task, context", [("chat", 4096), ("chat", None), ("code", None)])
def test_more_memory_never_lowers_the_best_score(profiles, catalog, rules, name, task, context):
    """With the default context too: it grows with memory (Ollama's tiers), and a longer context must not push the
    best variant below the speed floor or out of memory where a smaller machine kept it (found on rtx3060 x4, code:
    Q8_0 at 32k decoded under 5 tokens/s and Q6_K was chosen instead)."""
    last = -1.0
    for factor in (1.0, 1.5, 2.0, 3.0, 4.0):
        rec = recommend(_more_memory(profiles[name], factor), catalog, rules, Request(task=task, context=context))
        best = rec.plans[0].score if rec.plans else 0.0
        assert best >= last - 1e-9, (name, factor, best, last)
        last = best


@pytest.fixture(scope="module")
def picks(profiles, catalog, rules):
    """The best plan per machine and task (as benchmarks/recommend_matrix.py prints them)."""
    out = {}
    for name, profile in profiles.items():
        for req in TASKS:
            rec = recommend(profile, catalog, rules, req)
            out[name, req] = (rec.plans[0] if rec.plans else None, build_machine(profile, rules, req.concurrency,
                                                                                req.task))
    return out


def _ctx(plan):
    return plan.llama_cpp.ctx // plan.llama_cpp.parallel if plan.llama_cpp else plan.vllm.max_model_len


def test_chat_and_code_picks_reach_an_interactive_speed(picks):
    """rules/interactive.toml: chat everywhere, code wherever there is a GPU (a CPU's 50-200 GB/s peak cannot feed a
    model worth using at 20 tokens/s)."""
    for (name, req), (plan, m) in picks.items():
        if plan is None or req.concurrency > 1 or req.context or (req.task == "code" and not m.gpus):
            continue
        assert plan.predicted.decode_tokens_per_s >= m.rules["interactive_tokens_per_s"], (name, req.task, plan.model.id)


def test_context_per_sequence_is_useful(picks, catalog):
    """>= 16k tokens per sequence where a GPU (or unified) budget has >= 16 GB, >= 8k elsewhere."""
    for (name, req), (plan, m) in picks.items():
        if plan is None:
            continue
        big = m.gpus and min(d.total_bytes for d in m.gpus) >= 15 * 2**30
        floor = min(16384 if big else 8192, catalog.get(plan.model.id).context_native)
        assert _ctx(plan) >= floor, (name, req, plan.model.id, _ctx(plan))


def test_moe_partial_offload_uses_n_cpu_moe(picks, catalog):
    """On a discrete GPU, an MoE model that does not fit keeps its experts in RAM, not whole layers. Unified memory
    (Apple) is left to the planner's speed comparison: there both placements read the same memory."""
    seen = 0
    for (name, req), (plan, m) in picks.items():
        if plan is None or not plan.llama_cpp or not m.gpus or not catalog.get(plan.model.id).arch.n_expert:
            continue
        if m.unified:
            continue
        if plan.llama_cpp.n_gpu_layers <= catalog.get(plan.model.id).arch.n_layer:  # whole layers on the CPU
            raise AssertionError((name, req, plan.model.id, plan.llama_cpp))
        seen += bool(plan.llama_cpp.n_cpu_moe)
    assert seen  # the 8-12 GB cards do run MoE models with their experts partly in RAM


def test_multi_gpu_boxes_with_eight_users_use_every_gpu(picks):
    for (name, req), (plan, m) in picks.items():
        if plan is None or len(m.gpus) < 2 or req.concurrency < 8:
            continue
        used = {d.device for d in plan.memory if d.device.startswith("gpu") and d.weights_bytes}
        assert used == {d.name for d in m.gpus}, (name, plan.model.id, used)


def test_80gb_class_machines_run_the_largest_class_for_chat(picks, catalog):
    large = [mod for mod in catalog.models if "chat" in mod.tasks and mod.params_total_b >= 60]
    for (name, req), (plan, m) in picks.items():
        if plan is None or req.task != "chat" or req.context or not m.gpus or m.gpus[0].total_bytes < 75 * 2**30:
            continue
        if large:
            assert catalog.get(plan.model.id).params_total_b >= 60, (name, plan.model.id)


def test_vllm_never_planned_where_it_cannot_run(picks):
    for (name, req), (plan, m) in picks.items():
        if plan is not None and plan.backend == "vllm":
            assert m.rules["vllm_runs"], name
    assert not picks["mi100", TASKS[2]][1].rules["vllm_runs"]  # gfx908 (from its PCI device id)


def test_full_offload_and_vllm_check_against_independent_bounds(profiles, catalog, rules):
    """The promise of this module's docstring, checked without the planner's own arithmetic: a llama.cpp plan that
    leaves layers on the CPU although weights + a full-size KV cache + an upper bound of the compute buffer surely fit
    the GPUs fails (tests/test_planner_independent.full_offload_bound); every vLLM plan holds one max_model_len
    sequence in its KV cache, counted from the model's shapes (vLLM check_enough_kv_cache_memory: ceil(len / 16)
    blocks of 16 tokens, n_layer x n_kv/tp x (head_dim_k + head_dim_v) x 2 bytes per token)."""
    from tests.test_planner_independent import check_full_offload

    applied = vllm_seen = 0
    for name in sorted(MACHINES):
        for req in TASKS:
            machine = build_machine(profiles[name], rules, req.concurrency)
            for plan in recommend(profiles[name], catalog, rules, req).plans:
                applied += check_full_offload(plan, catalog, machine)
                if plan.vllm:
                    a, s = catalog.get(plan.model.id).arch, plan.vllm
                    if a.kv_lora_rank or a.sliding_window:
                        continue  # MLA latents and sliding windows: tested on the recorded v-logs instead
                    per_token = a.n_layer * max(1, a.n_head_kv // s.tensor_parallel_size) * (a.head_dim_k + a.head_dim_v) * 2
                    need = -(-s.max_model_len // 16) * 16 * per_token
                    assert all(m.kv_cache_bytes >= need for m in plan.memory), (name, plan.model.id, need)
                    vllm_seen += 1
    print("full-offload bound applied", applied, "vLLM plans", vllm_seen)
    assert applied >= 10 and vllm_seen >= 3, (applied, vllm_seen)
