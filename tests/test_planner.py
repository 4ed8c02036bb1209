"""The planner on hand-picked requests: the seed's settings, rules per backend, why-not, nothing fits."""

from __future__ import annotations

import pytest

from advisor.catalog.load import load_catalog
from advisor.errors import NothingFitsError
from advisor.plan import EngineRef
from advisor.planner import Request, plan_for_model, recommend
from advisor.catalog.facts import compact, facts_from_catalog
from advisor.planner.machine import build_machine
from advisor.planner.vllm import kv_need
from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Memory
from advisor.rules import load_rules

MIB, GIB = 1 << 20, 1 << 30


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


@pytest.fixture(scope="module")
def rules():
    return load_rules()


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
    model = catalog.get("phi-3-mini-4k-instruct")
    (mem,) = plan.memory
    assert kv_need(model, 1, s.max_model_len, s.max_num_batched_tokens, 16) <= mem.kv_cache_bytes
    per_token = 2 * 32 * 32 * 96 * 2
    assert 1 <= s.max_num_seqs <= max(1, mem.kv_cache_bytes // per_token // s.max_model_len)
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
    """An M-series Mac: Metal's budget is recommendedMaxWorkingSetSize, about 2/3 of RAM up to 36 GB (notes §6)."""
    ws = ram_gib * GIB * 2 // 3
    gpu = Gpu(index=0, vendor="apple", name="Apple M2", backend="metal", memory_total_bytes=ws,
              memory_free_bytes=ws, unified_memory=True)
    return HardwareProfile(os="darwin", arch="arm64", cpu=Cpu(physical_cores=8, logical_cores=8, usable_cores=8),
                           memory=Memory(total_bytes=ram_gib * GIB, usable_bytes=ram_gib * GIB), gpus=[gpu])


def test_device_need_is_buffers_plus_the_backends_overhead(catalog, rules):
    """issue 7: the estimator runs for the GPU's backend and each GPU's need adds rules/backends.toml's
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
