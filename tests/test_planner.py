"""The planner on hand-picked requests: the seed's settings, rules per backend, why-not, nothing fits."""

from __future__ import annotations

import dataclasses
import re

import pytest

from advisor.errors import NothingFitsError
from advisor.plan import EngineRef
from advisor.planner import Request, plan_for_model, recommend
from advisor.catalog.facts import compact, facts_from_catalog
from advisor.planner.machine import build_machine
from advisor.planner.vllm import kv_need
from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Memory

MIB, GIB = 1 << 20, 1 << 30


def box(gpu_name=None, vram_mib=0, ram_gib=32, vendor="nvidia", backend="cuda", n=1):
    gpus = [Gpu(index=i, vendor=vendor, name=gpu_name, backend=backend, memory_total_bytes=vram_mib * MIB,
                memory_free_bytes=vram_mib * MIB) for i in range(n)] if gpu_name else []
    return HardwareProfile(cpu=Cpu(physical_cores=8, logical_cores=16, usable_cores=16),
                           memory=Memory(total_bytes=ram_gib * GIB, usable_bytes=ram_gib * GIB), gpus=gpus)


def test_bridge_matches_the_full_layout(catalog):
    m = catalog.get("qwen2.5-coder-7b-instruct")
    v = next(v for v in m.all_variants() if v.quant == "Q4_K_M")
    full = facts_from_catalog(m, v)
    assert full.weights_bytes == compact(full).weights_bytes
    assert full.n_layer == m.arch.n_layer and full.n_ctx_train == m.context_native


def test_phi3_on_t4_with_vllm(catalog, rules):
    """The seed: vLLM, Phi-3-mini-4k by its Hub repo, on a 16 GB T4."""
    plan = plan_for_model(box("Tesla T4", 15360), catalog, rules, "microsoft/Phi-3-mini-4k-instruct",
                          Request(backend="vllm"))
    s = plan.vllm
    assert plan.backend == "vllm" and plan.model.id == "phi-3-mini-4k-instruct"
    assert 0.9 <= s.gpu_memory_utilization <= 0.95
    assert s.dtype == "half"  # T4 is compute capability 7.5: no bf16
    assert s.max_model_len == 4096  # the trained context
    assert not any("max_model_len lowered" in r for r in plan.reasons)  # nothing was lowered, and no reason says so
    model = catalog.get("phi-3-mini-4k-instruct")
    (mem,) = plan.memory
    assert kv_need(model, 1, s.max_model_len, s.max_num_batched_tokens, 16) <= mem.kv_cache_bytes
    # vLLM pages the KV cache: it serves as many requests as typical requests fit, not full-length ones (Phi-3-mini:
    # 32 layers x 32 KV heads x 96 x K+V x 2 bytes per token)
    per_token = 2 * 32 * 32 * 96 * 2
    typical = build_machine(box("Tesla T4", 15360), rules).rules["typical_request_tokens"]
    assert s.max_num_seqs == mem.kv_cache_bytes // per_token // 16 * 16 // typical
    assert s.max_num_seqs > mem.kv_cache_bytes // per_token // s.max_model_len  # more than full-length ones
    assert plan.args[:2] == ["--model", "microsoft/Phi-3-mini-4k-instruct"]


def _ranked_score(catalog, rules, profile, quant):
    """The quant's quality as the planner ranks it (rules/quants.toml quant_equivalent: Q5_K_L as Q5_K_M...)."""
    eq = build_machine(profile, rules).rules["quant_equivalent"].get(quant, quant)
    return catalog.quant(eq).score


def test_qwen_coder_7b_on_8gb_gpu_full_offload(catalog, rules):
    profile = box("NVIDIA GeForce RTX 2080", 8192)
    plan = plan_for_model(profile, catalog, rules, "qwen2.5-coder-7b-instruct")
    score = _ranked_score(catalog, rules, profile, plan.model.quant)
    assert score >= catalog.quant("IQ4_XS").score > catalog.quant("Q3_K_M").score
    assert plan.llama_cpp.n_gpu_layers == catalog.get("qwen2.5-coder-7b-instruct").arch.n_layer + 1
    assert "-hfr" in plan.args and "--temp" in plan.args


def test_iq4_xs_is_chosen_where_only_it_fits_on_cuda(catalog, rules):
    req = Request(model="bartowski/Qwen2.5-Coder-7B-Instruct-GGUF")
    rec = recommend(box("NVIDIA GeForce RTX 3060", 6144, ram_gib=8), catalog, rules, req)
    assert rec.plans[0].model.quant not in ("Q3_K_M", "Q3_K_S", "IQ3_M", "Q2_K")


def test_cpu_prefers_k_quants_over_low_i_quants(catalog, rules):
    rec = recommend(box(ram_gib=12), catalog, rules, Request(task="chat", top=20))
    assert rec.plans
    for p in rec.plans:
        assert not p.model.quant.startswith(("IQ1", "IQ2", "IQ3")) or "less" in " ".join(p.reasons)


def test_why_not_explains_a_rejection(catalog, rules):
    rec = recommend(box("NVIDIA GeForce RTX 2080", 8192), catalog, rules, Request(task="chat"))
    lines = rec.why_not("llama-3.3-70b-instruct")
    assert lines and any("short by" in line or "tokens/s" in line for line in lines)


def test_nothing_fits_names_the_closest(catalog, rules):
    tiny = box(ram_gib=1)
    rec = recommend(tiny, catalog, rules, Request(task="chat"))
    assert not rec.plans
    with pytest.raises(NothingFitsError, match="closest") as err:
        rec.best()
    assert err.value.exit_code == 3


def test_context_is_never_above_the_trained_one(catalog, rules):
    rec = recommend(box("NVIDIA H100 80GB HBM3", 81559, ram_gib=256), catalog, rules, Request(task="chat", top=10))
    for p in rec.plans:
        model = catalog.get(p.model.id)
        ctx = p.llama_cpp.ctx // p.llama_cpp.parallel if p.llama_cpp else p.vllm.max_model_len
        assert ctx <= model.context_native


def test_learned_settings_are_used_and_said(catalog, rules):
    learned = {"backend": "llama.cpp", "settings": {"ctx": 2048}}
    plan = plan_for_model(box("NVIDIA GeForce RTX 2080", 8192), catalog, rules, "qwen3-4b", learned=learned)
    assert plan.llama_cpp.ctx == 2048 and any("learned" in r for r in plan.reasons)


def apple(ram_gib=16):
    """An M-series Mac: Metal's budget is recommendedMaxWorkingSetSize, about 2/3 of RAM up to 36 GB
    (ggml-metal-device.m ggml_metal_device_get_memory)."""
    ws = ram_gib * GIB * 2 // 3
    gpu = Gpu(index=0, vendor="apple", name="Apple M2", backend="metal", memory_total_bytes=ws,
              memory_free_bytes=ws, unified_memory=True)
    return HardwareProfile(os="darwin", arch="arm64", cpu=Cpu(physical_cores=8, logical_cores=8, usable_cores=8),
                           memory=Memory(total_bytes=ram_gib * GIB, usable_bytes=ram_gib * GIB), gpus=[gpu])


def test_device_need_is_buffers_plus_the_backends_overhead(catalog, rules):
    """The estimator runs for the GPU's backend and each GPU's need adds rules/backends.toml's
    context_overhead_bytes, shown as other_bytes; the CUDA_Host buffers count against RAM."""
    from advisor.gguf.estimate import backend_rules

    profile = box("NVIDIA GeForce RTX 3070", 8192)
    m = build_machine(profile, rules)
    cuda = backend_rules()["cuda"]
    assert m.llama_backend == "cuda" and m.gpus[0].overhead_bytes == cuda.context_overhead_bytes
    assert m.gpus[0].budget_bytes == (8192 - 512 - 512) * MIB  # display reserve off the capacity, headroom off that
    plan = plan_for_model(profile, catalog, rules, "qwen2.5-coder-7b-instruct")
    mem = {d.device: d for d in plan.memory}
    assert set(mem) == {"cpu", "gpu0", "host"}  # host: CUDA_Host (compute of the CPU side, output)
    g = mem["gpu0"]
    assert g.other_bytes >= cuda.context_overhead_bytes
    assert g.total_bytes == g.weights_bytes + g.kv_cache_bytes + g.other_bytes
    assert g.total_bytes <= m.gpus[0].budget_bytes
    assert any("rules/backends.toml cuda" in r for r in plan.reasons)
    assert any("CUDA_Host" in r for r in plan.reasons)


def test_metal_overhead_comes_out_of_the_shared_ram(catalog, rules):
    from advisor.gguf.estimate import backend_rules

    profile = apple(16)
    m = build_machine(profile, rules)
    metal = backend_rules()["metal"]
    assert m.llama_backend == "metal" and m.unified and m.gpus[0].overhead_bytes == metal.context_overhead_bytes
    plan = plan_for_model(profile, catalog, rules, "qwen2.5-coder-7b-instruct")
    mem = {d.device: d for d in plan.memory}
    assert "host" not in mem  # Metal has no host buffer type: CPU-side compute and output are CPU buffers
    assert mem["gpu0"].other_bytes >= metal.context_overhead_bytes
    assert mem["gpu0"].total_bytes + mem["cpu"].total_bytes <= m.cpu.budget_bytes  # one memory


def test_the_probes_backend_is_the_estimators(rules):
    """An AMD card the probe reaches through Vulkan (no ROCm support) is planned with Vulkan's facts."""
    from advisor.gguf.estimate import backend_rules

    m = build_machine(box("AMD Radeon RX 5500 XT", 8192, vendor="amd", backend="vulkan"), rules)
    assert m.backend == m.llama_backend == "vulkan"
    assert m.gpus[0].overhead_bytes == backend_rules()["vulkan"].context_overhead_bytes
    assert build_machine(box(ram_gib=8), rules).llama_backend is None  # CPU only: no GPU overhead


def test_plan_args_carry_the_models_sampling_through_the_engine_builder(catalog, rules):
    from advisor.engines import llama_server

    plan = plan_for_model(box("NVIDIA GeForce RTX 2080", 8192), catalog, rules, "qwen2.5-coder-7b-instruct")
    assert plan.engine_ref.name == "llama-server"
    assert plan.args[-len(llama_server.sampling_args(plan.sampling)):] == llama_server.sampling_args(plan.sampling)
    assert any("llama-server gets --temp" in r for r in plan.reasons)
    # The same model planned for llama-cpp-python's server: no sampling flags exist there, and the plan says so.
    python_engine = Request(engines=(EngineRef("llama-cpp-python", exe="/py"),))
    plan = plan_for_model(box("NVIDIA GeForce RTX 2080", 8192), catalog, rules, "qwen2.5-coder-7b-instruct",
                          python_engine)
    assert plan.engine_ref.name == "llama-cpp-python" and "--temp" not in plan.args
    assert any("no flags for sampling" in r and "client must send them" in r for r in plan.reasons)



# -- the whole machine: expert offload, speed-aware choice, context for the task, every GPU, platforms -------------

def _machine_rules(rules, profile, **kw):
    return build_machine(profile, rules, **kw).rules


def test_moe_that_does_not_fit_keeps_its_experts_on_the_cpu_with_the_smallest_k(catalog, rules):
    """gpt-oss-20b (12 GB) on an 8 GB card: every layer on the GPU but the experts of the first K layers
    (--n-cpu-moe K), K the smallest that fits by the estimator, and faster than whole layers on the CPU."""
    from advisor.catalog.facts import compact_catalog_facts
    from advisor.gguf.layout import tensor_inventory
    from advisor.planner.llamacpp import _try

    profile = box("NVIDIA GeForce RTX 2080 SUPER", 8192, ram_gib=64)
    plan = plan_for_model(profile, catalog, rules, "gpt-oss-20b")
    s, model = plan.llama_cpp, catalog.get("gpt-oss-20b")
    assert s.n_cpu_moe and s.n_gpu_layers == model.arch.n_layer + 1
    i = plan.args.index("--n-cpu-moe")
    assert plan.args[i + 1] == str(s.n_cpu_moe)
    m = build_machine(profile, rules)
    v = next(v for v in model.all_variants() if v.quant == plan.model.quant)
    facts = compact_catalog_facts(model, v, tensor_inventory(model.arch))
    per_slot = s.ctx // s.parallel
    est, fit = _try(facts, m, s.n_gpu_layers, per_slot, s.parallel, None, s.cache_type_k, s.n_cpu_moe - 1)
    assert not fit.ok and fit.where == "gpu0"  # one fewer expert layer on the CPU does not fit: K is the smallest
    assert any("--n-cpu-moe" in r for r in plan.reasons)
    faster = next(r for r in plan.reasons if r.startswith("predicted "))
    rates = [float(x) for x in re.findall(r"([0-9.]+) (?:tokens/s|with)", faster)]
    assert rates[0] > rates[1]  # expert offload beats layer offload for this model (active experts only from RAM)


def test_moe_offload_reads_only_active_experts_from_ram(catalog, rules):
    """The speed input of an --n-cpu-moe plan: the CPU's share of bytes read per token is n_used / n_expert of its
    expert bytes (gpt-oss-20b: 4 of 32), not its whole weights."""
    plan = plan_for_model(box("NVIDIA GeForce RTX 3060", 12288, ram_gib=64), catalog, rules, "gpt-oss-20b")
    a = catalog.get("gpt-oss-20b").arch
    cpu = next(d for d in plan.memory if d.device == "cpu")
    bw = build_machine(box("NVIDIA GeForce RTX 3060", 12288), rules).cpu.bandwidth_gbs
    from advisor.planner.speed import quant_family
    table = _machine_rules(rules, box("NVIDIA GeForce RTX 3060", 12288))["decode_bandwidth_efficiency"]
    eff = table["cpu"][quant_family(plan.model.quant)]
    cpu_seconds = cpu.weights_bytes * a.n_expert_used / a.n_expert / (bw * 1e9 * eff)
    assert plan.llama_cpp.n_cpu_moe
    assert plan.predicted.decode_tokens_per_s <= 1 / cpu_seconds + 0.1  # the CPU part alone bounds it
    assert plan.predicted.decode_tokens_per_s > 1 / (cpu_seconds * a.n_expert / a.n_expert_used)


def test_slow_penalty_follows_its_rule(rules):
    from advisor.planner import slow_penalty

    for task in ("chat", "code"):
        m = build_machine(box("NVIDIA GeForce RTX 4060", 8192), rules, task=task)
        r = m.rules
        target = r["interactive_tokens_per_s"]
        assert slow_penalty(m, target) == 0 and slow_penalty(m, 2 * target) == 0
        expected = r["slow_penalty_points"] + 2 * r["slow_penalty_per_halving"]
        assert slow_penalty(m, target / 4) == pytest.approx(expected)
    assert _machine_rules(rules, box(), task="code")["interactive_tokens_per_s"] > \
        _machine_rules(rules, box(), task="chat")["interactive_tokens_per_s"]


@pytest.mark.parametrize("gpu, mib", [("NVIDIA GeForce RTX 4060", 8188), ("NVIDIA GeForce RTX 3060", 12288)])
def test_dense_32b_at_reading_speed_does_not_win_code_on_small_cards(catalog, rules, gpu, mib):
    """A 32B dense model with most layers on the CPU decodes near 5 tokens/s: a model that fits the GPU (or a fast
    MoE) wins code, and the pick reaches the interactive speed of the task (rules/interactive.toml)."""
    profile = box(gpu, mib, ram_gib=32)
    plan = recommend(profile, catalog, rules, Request(task="code")).best()
    target = _machine_rules(rules, profile, task="code")["interactive_tokens_per_s"]
    assert plan.predicted.decode_tokens_per_s >= target, plan.model.id
    assert not (catalog.get(plan.model.id).params_total_b > 30 and not catalog.get(plan.model.id).params_active_b)


def test_context_floor_and_task_context_follow_the_rules(catalog, rules):
    """>= 16k per sequence where the GPU has >= 16 GB, >= 8k elsewhere; code and thinking tasks aim at 32k."""
    big = box("NVIDIA GeForce RTX 4080 SUPER", 16376)
    small = box("NVIDIA GeForce RTX 4060", 8188)
    assert _machine_rules(rules, big)["ctx_floor"] == 16384 and _machine_rules(rules, small)["ctx_floor"] == 8192
    assert _machine_rules(rules, small, task="code")["task_ctx"] == 32768
    assert _machine_rules(rules, small, task="chat")["task_ctx"] == 16384
    for profile, floor in ((big, 16384), (small, 8192), (box(ram_gib=16), 8192)):
        for task in ("chat", "code"):
            p = recommend(profile, catalog, rules, Request(task=task)).best()
            ctx = p.llama_cpp.ctx // p.llama_cpp.parallel if p.llama_cpp else p.vllm.max_model_len
            assert ctx >= min(floor, catalog.get(p.model.id).context_native), (task, p.model.id, ctx)


def test_kv_cache_is_quantized_to_keep_the_context_before_it_is_cut(catalog, rules):
    """rules/llama.toml kv_cache_types: f16 from the wanted context down to the task's, then q8_0 and q4_0 at the
    task's context, then shorter contexts with the most compact cache."""
    from advisor.planner.llamacpp import Contexts, rungs

    types = _machine_rules(rules, box())["kv_cache_types"]
    assert types == ["f16", "q8_0", "q4_0"]
    assert rungs(Contexts(65536, 16384, 8192), types) == [
        (65536, "f16"), (32768, "f16"), (16384, "f16"), (16384, "q8_0"), (16384, "q4_0"), (8192, "q4_0")]
    assert rungs(Contexts(65536, 65536, 65536, True), types) == [(65536, t) for t in types]
    # --context 65536 on a 12 GB card: a quantized cache keeps a real model rather than the smallest one
    plan = recommend(box("NVIDIA GeForce RTX 3060", 12288), catalog, rules, Request(task="chat", context=65536)).best()
    assert plan.llama_cpp.ctx == 65536 and plan.llama_cpp.cache_type_k != "f16"
    assert plan.llama_cpp.flash_attn == "on" and "-ctv" in plan.args
    assert catalog.get(plan.model.id).params_total_b >= 3


def test_asked_context_is_honoured_or_refused_with_the_reason(catalog, rules):
    rec = recommend(box("NVIDIA GeForce RTX 3060", 12288), catalog, rules,
                    Request(task="chat", context=200000, model="phi-3-mini-4k-instruct"))
    assert not rec.plans and any("trained" in r.message for r in rec.rejections)
    plan = recommend(box("NVIDIA GeForce RTX 3060", 12288), catalog, rules, Request(task="chat", context=12000)).best()
    assert plan.llama_cpp.ctx // plan.llama_cpp.parallel == 12000 and any("as asked" in r for r in plan.reasons)


def test_a_model_that_fits_one_gpu_stays_on_one_for_one_user(catalog, rules):
    two = box("NVIDIA GeForce RTX 3090", 24576, ram_gib=64, n=2)
    plan = plan_for_model(two, catalog, rules, "qwen2.5-coder-7b-instruct")
    s = plan.llama_cpp
    assert s.split_mode == "none" and s.main_gpu == 0 and not s.tensor_split
    assert plan.args[plan.args.index("-sm") + 1] == "none"
    assert [d.device for d in plan.memory if d.device.startswith("gpu")] == ["gpu0"]
    # eight users of a model too big for one GPU: every GPU holds layers
    plan = plan_for_model(two, catalog, rules, "qwen2.5-coder-32b-instruct",
                          Request(concurrency=8, backend="llama.cpp"))
    assert plan.llama_cpp.split_mode is None and len([d for d in plan.memory if d.device.startswith("gpu")]) == 2
    assert plan.llama_cpp.n_gpu_layers == catalog.get("qwen2.5-coder-32b-instruct").arch.n_layer + 1
    assert any("output layer on the GPUs" in r for r in plan.reasons)  # full offload over both, and it says so


def test_vllm_uses_every_gpu_for_several_users(catalog, rules):
    """2x RTX 3090, 8 users: replicas when the model fits one GPU (data parallel), tensor parallel when it does
    not; never one GPU idle."""
    two = box("NVIDIA GeForce RTX 3090", 24576, ram_gib=64, n=2)
    small = plan_for_model(two, catalog, rules, "qwen2.5-coder-7b-instruct", Request(concurrency=8, backend="vllm"))
    assert small.vllm.data_parallel_size * small.vllm.tensor_parallel_size * small.vllm.pipeline_parallel_size == 2
    big = plan_for_model(two, catalog, rules, "qwen3-32b", Request(concurrency=8, backend="vllm"))
    assert big.vllm.tensor_parallel_size == 2 and "--tensor-parallel-size" in big.args
    assert len(big.memory) == 2


def test_pipeline_parallel_when_tensor_parallel_does_not_divide_the_heads(catalog):
    from advisor.planner.vllm import Layout, layouts

    model = catalog.get("qwen2.5-coder-7b-instruct")  # 28 query heads, 4 KV heads
    assert model.arch.n_head % 8 and model.arch.n_head % 4 == 0
    assert layouts(model, 8, 1)[0] == Layout(tp=4, pp=2)
    assert Layout(dp=8) == layouts(model, 8, 8)[0]


def test_vllm_fp8_kv_cache_where_the_gpu_has_fp8(rules):
    assert _machine_rules(rules, box("NVIDIA H100 80GB HBM3", 81559))["vllm_kv_cache_dtypes"] == ["auto", "fp8"]
    assert _machine_rules(rules, box("NVIDIA GeForce RTX 3090", 24576))["vllm_kv_cache_dtypes"] == ["auto"]


@pytest.mark.parametrize("profile, why", [
    (box("Arcturus GL-XL [Instinct MI100]", 32752, vendor="amd", backend="rocm"), "gfx"),
    (box("NVIDIA Tesla P40", 24576), "compute capability 7.0"),
])
def test_vllm_is_never_planned_where_it_cannot_run(catalog, rules, profile, why):
    gpus = [dataclasses.replace(g, gfx_target="gfx908") if g.vendor == "amd" else g for g in profile.gpus]
    profile = dataclasses.replace(profile, gpus=gpus)
    rec = recommend(profile, catalog, rules, Request(task="code", concurrency=8, top=20))
    assert rec.plans and all(p.backend == "llama.cpp" for p in rec.ranked)
    assert not build_machine(profile, rules, 8).rules["vllm_runs"]
    with pytest.raises(NothingFitsError):
        recommend(profile, catalog, rules, Request(task="code", backend="vllm")).best()
    assert why in build_machine(profile, rules, 8).rules.why("vllm_runs")


def test_no_vllm_on_jetson(rules):
    jetson = dataclasses.replace(box("Orin (nvgpu)", 62000), arch="aarch64")
    jetson = dataclasses.replace(jetson, gpus=[dataclasses.replace(jetson.gpus[0], unified_memory=True)])
    assert not build_machine(jetson, rules, 8).rules["vllm_runs"]
    assert build_machine(box("NVIDIA H100 80GB HBM3", 81559), rules, 8).rules["vllm_runs"]


def test_assume_idle_plans_for_the_total_and_says_so(catalog, rules):
    busy = box("NVIDIA GeForce RTX 3090", 24576)
    busy = dataclasses.replace(busy, gpus=[dataclasses.replace(busy.gpus[0], memory_free_bytes=2 * GIB)])
    now = build_machine(busy, rules)
    idle = build_machine(busy, rules, assume_idle=True)
    assert now.gpus[0].capacity_bytes == 2 * GIB
    assert idle.gpus[0].capacity_bytes == 24576 * MIB - _machine_rules(rules, busy)["display_reserve_mib"] * MIB
    plan = recommend(busy, catalog, rules, Request(task="chat", assume_idle=True)).best()
    assert any("--assume-idle" in r and "total" in r for r in plan.reasons)
    assert plan.llama_cpp.n_gpu_layers > 0 and plan.memory[0].capacity_bytes


def test_bandwidth_from_the_driver_when_the_table_does_not_know_the_gpu(rules):
    from advisor.planner.machine import derived_bandwidth

    a100 = Gpu(index=0, vendor="nvidia", name="x", backend="cuda", memory_bus_width_bits=5120,
               memory_clock_max_mhz=1215)
    assert derived_bandwidth(a100) == pytest.approx(rules.gpu_spec("NVIDIA A100-PCIE-40GB", "nvidia").bandwidth_gbs,
                                                    rel=0.01)
    mi100 = Gpu(index=0, vendor="amd", name="x", backend="rocm", memory_bus_width_bits=4096,
                memory_clock_max_mhz=1200)
    assert derived_bandwidth(mi100) == pytest.approx(rules.gpu_spec("MI100", "amd").bandwidth_gbs, rel=0.01)
    rx = Gpu(index=0, vendor="amd", name="x", backend="rocm", memory_bus_width_bits=192, memory_clock_max_mhz=1000,
             memory_type="GDDR6")
    assert derived_bandwidth(rx) == pytest.approx(rules.gpu_spec("AMD Radeon RX 6700 XT", "amd").bandwidth_gbs)
    unknown = box("NVIDIA Future GPU 9000", 16384)
    g = dataclasses.replace(unknown.gpus[0], memory_bus_width_bits=256, memory_clock_max_mhz=14001)
    m = build_machine(dataclasses.replace(unknown, gpus=[g]), rules)
    assert m.gpus[0].bandwidth_gbs == pytest.approx(256 / 8 * 14001 * 2 / 1000, rel=0.01)
    assert any("not in rules/gpus.toml" in n and "derived" in n for n in m.notes)
    m = build_machine(unknown, rules)  # neither: the catch-all, said in a note
    assert m.gpus[0].bandwidth_gbs > 0 and any("unknown" in n for n in m.notes)


def test_mig_instance_gets_its_share_of_the_bandwidth(rules):
    full = rules.gpu_spec("NVIDIA H100 80GB HBM3", "nvidia").bandwidth_gbs
    g = Gpu(index=0, vendor="nvidia", name="NVIDIA H100 80GB HBM3 MIG 3g.40gb", backend="cuda",
            memory_total_bytes=40 * GIB, memory_free_bytes=40 * GIB, mig_profile="3g.40gb", mig_parent_index=0)
    m = build_machine(HardwareProfile(cpu=Cpu(physical_cores=8), memory=Memory(total_bytes=64 * GIB), gpus=[g]), rules)
    assert m.gpus[0].bandwidth_gbs == pytest.approx(full / 2, rel=0.01)


def test_vllm_rocm_targets_agree_with_the_installer(rules):
    """The planner's vLLM-on-ROCm rule and `advisor setup`'s ROCm wheel targets name the same gfx list."""
    from advisor.setup.builds import VLLM_ROCM_TARGETS

    rule = next(r for r in rules.rules if r.id == "vllm-rocm-gfx")
    assert tuple(rule.when["gfx_target_excludes"]) == VLLM_ROCM_TARGETS


def test_a_file_too_big_for_ram_says_by_how_much(catalog, rules):
    """On a CPU-only machine a GGUF that does not fit RAM at the smallest context is refused with what it needs and
    what RAM offers: at least its weights (the file's tensor bytes, read from the layout) against less than the
    machine's RAM."""
    from advisor.planner import plan_for_gguf

    model = catalog.get("llama-3.1-8b-instruct")
    variant = next(v for v in model.all_variants() if v.quant == "Q8_0")
    facts = facts_from_catalog(model, variant)
    with pytest.raises(NothingFitsError) as info:
        plan_for_gguf(box(ram_gib=4), rules, facts, Request())
    need, have = (int(x) for x in re.findall(r"(\d+) MiB", info.value.message))
    assert "on cpu" in info.value.message
    assert need >= facts.weights_bytes >> 20 and have < 4 * 1024


def test_layer_offload_must_be_clearly_faster_than_expert_offload():
    """Expert offload keeps attention and the KV cache on the GPU; whole layers on the CPU win only when predicted
    more than MOE_PREFERENCE times faster (a tie at exactly that factor keeps the experts on the CPU)."""
    from advisor.planner import llamacpp

    layers = llamacpp.LlamaChoice(None, 20, 8192, 1, None, False)  # type: ignore[arg-type]
    experts = llamacpp.LlamaChoice(None, 99, 8192, 1, None, False, n_cpu_moe=12)  # type: ignore[arg-type]
    k = llamacpp.MOE_PREFERENCE
    rates = {id(layers): 10.0 * k, id(experts): 10.0}
    assert llamacpp._faster([layers, experts], lambda c: rates[id(c)]).n_cpu_moe == 12
    rates[id(layers)] = 10.0 * k + 0.5
    assert llamacpp._faster([layers, experts], lambda c: rates[id(c)]).n_cpu_moe is None
    assert llamacpp._faster([experts, layers], lambda c: rates[id(c)]).n_cpu_moe is None


@pytest.mark.parametrize("cores", [2, 8, 64])
def test_a_few_cores_cannot_draw_the_sockets_bandwidth(rules, cores):
    """A 2-vCPU slice of an EPYC server (this repository's test machine: 'advisor bench --memory' read 19.2 GB/s
    with 2 threads) gets what its cores stream (rules/speed.toml cpu-bandwidth-per-core), not the socket's 8
    channels; the whole socket gets the platform's figure."""
    cpu = Cpu(model="AMD EPYC 7B13", physical_cores=cores, logical_cores=cores, usable_cores=cores)
    profile = HardwareProfile(cpu=cpu, memory=Memory(total_bytes=64 * GIB, usable_bytes=60 * GIB))
    m = build_machine(profile, rules)
    r = m.rules
    assert m.cpu.bandwidth_gbs == min(r["cpu_bandwidth_gbs"], cores * r["cpu_bandwidth_per_core_gbs"])
    if cores == 2:
        assert m.cpu.bandwidth_gbs < 2 * 19.2  # within twice what was measured here, not the socket's 204.8
    if cores == 64:
        assert m.cpu.bandwidth_gbs == r["cpu_bandwidth_gbs"] > 100


def test_a_cpu_only_plan_offloads_nothing(catalog, rules):
    """Without a GPU every layer stays on the CPU: -ngl 0 in the plan and its argv, and only the CPU holds memory."""
    plan = plan_for_model(box(ram_gib=32), catalog, rules, "qwen2.5-coder-7b-instruct")
    assert plan.llama_cpp.n_gpu_layers == 0
    flag = next(a for a in ("-ngl", "--n-gpu-layers", "--n_gpu_layers") if a in plan.args)
    assert plan.args[plan.args.index(flag) + 1] == "0"
    assert {d.device for d in plan.memory if d.weights_bytes} == {"cpu"}


@pytest.mark.parametrize("model_id", ["llama-3.1-8b-instruct", "qwen3-30b-a3b"])
def test_a_local_file_is_predicted_like_the_same_catalog_variant(catalog, rules, model_id):
    """The same weights as a local GGUF or as a catalog variant take the same speed: the local file's parameter
    counts come from its tensor shapes (the compact facts the planner sizes memory with carry bytes only), the
    catalog's from its config (8.0B / 3.3B active, MoE experts from n_ff_expert x n_used)."""
    from advisor.planner import plan_for_gguf

    profile = box("NVIDIA GeForce RTX 4090", 24564)
    plan = plan_for_model(profile, catalog, rules, model_id)
    model = catalog.get(model_id)
    variant = next(v for v in model.all_variants() if v.format == "gguf" and v.files == tuple(plan.model.files))
    local = plan_for_gguf(profile, rules, facts_from_catalog(model, variant), Request()).predicted
    listed = plan.predicted
    assert local.prefill_tokens_per_s == pytest.approx(listed.prefill_tokens_per_s, rel=0.15)
    assert local.decode_tokens_per_s == pytest.approx(listed.decode_tokens_per_s, rel=0.15)


def test_full_offload_counts_the_nextn_block(catalog, rules):
    """GLM-4.5-Air has 46 trunk blocks and one NextN block; -ngl counts all 47 plus the output layer
    (llama_model::load_tensors), so full offload is -ngl 48: -ngl 47 would leave trunk layer 0 on the CPU."""
    model = catalog.get("glm-4.5-air")
    assert model.arch.n_layer_nextn == 1
    plan = plan_for_model(box("NVIDIA H200", 143771, ram_gib=256), catalog, rules, "glm-4.5-air")
    assert plan.llama_cpp.n_gpu_layers == model.arch.n_layer + 2
    # no KV cache on the CPU: -ngl 47 would keep trunk layer 0 (and its 1/46 of the cache) there
    assert not any(m.device == "cpu" and m.kv_cache_bytes for m in plan.memory)
