"""The llama.cpp estimator against statements of llama.cpp's own source, worked by hand: where each layer's KV cache
and weights go for a given -ngl and -ts, what the KV cache is per token, which cache types need flash attention,
and lower bounds of the compute buffer from the tensors the graph must hold. The model is Llama-3.1-8B
(config.json: 32 layers, 32 heads, 8 KV heads, head_dim 128, vocabulary 128256) in the catalog's Q4_K_M layout.
No expectation is computed with the estimator's own helpers.
"""

from __future__ import annotations

import pytest

from advisor.catalog.facts import compact_catalog_facts
from advisor.catalog.load import load_catalog
from advisor.errors import BadInputError
from advisor.gguf import layout
from advisor.gguf.estimate import Settings, estimate

N_LAYER, N_HEAD, N_KV, HEAD_DIM, N_VOCAB = 32, 32, 8, 128, 128_256
KV_LAYER_PER_TOKEN = N_KV * HEAD_DIM * 2 * 2  # K and V rows of one layer, f16 (llama_kv_cache constructor)


@pytest.fixture(scope="module")
def facts():
    model = load_catalog().get("llama-3.1-8b-instruct")
    variant = next(v for v in model.all_variants() if v.quant == "Q4_K_M")
    return compact_catalog_facts(model, variant, layout.tensor_inventory(model.arch))


def dev(est, name):
    return next((d for d in est.devices if d.device == name), None)


def kv_on(est, name) -> int:
    d = dev(est, name)
    return d.kv_cache_bytes if d else 0


def test_the_model_is_what_its_config_says(facts):
    assert facts.n_layer == N_LAYER and facts.n_vocab == N_VOCAB and facts.head_dim_k == HEAD_DIM


@pytest.mark.parametrize("ngl", [0, 1, 2, 17, 32, 33])
def test_ngl_puts_the_output_and_the_last_layers_on_the_gpu(facts, ngl):
    """llama_model::load_tensors (current builds): n_layer + 1 slots, the last one the output layer, filled from
    the end: -ngl N puts the output layer and the last N - 1 repeating layers on the GPU, the KV cache of a layer
    lives with it (offload_kqv), the token embeddings always stay on the CPU."""
    ctx = 4096
    est = estimate(facts, Settings(n_ctx=ctx, n_parallel=1, n_gpu_layers=ngl, n_gpus=1))
    on_gpu = max(0, ngl - 1)
    assert kv_on(est, "gpu0") == on_gpu * KV_LAYER_PER_TOKEN * ctx
    assert kv_on(est, "cpu") == (N_LAYER - on_gpu) * KV_LAYER_PER_TOKEN * ctx
    gpu = dev(est, "gpu0")
    output = sum(t.nbytes for t in facts.tensors if t.name.startswith("output"))
    if ngl == 0:
        assert gpu is None or gpu.weights_bytes == 0
    else:
        assert gpu.weights_bytes >= output
    embd = facts.tensor("token_embd.weight").nbytes
    assert dev(est, "cpu").weights_bytes >= embd
    if ngl == N_LAYER + 1:
        assert dev(est, "cpu").weights_bytes == embd  # nothing but the input embeddings left on the CPU


@pytest.mark.parametrize("ngl", [33, 999, -1])
def test_even_tensor_split_over_two_gpus(facts, ngl):
    """-ts 1,1 with every layer offloaded: slot il of the 33 goes to the first GPU whose cumulative share exceeds
    il / 33 (load_tensors: std::upper_bound over the normalised split), so slots 0-16 (17 layers) on GPU 0 and
    17-32 (15 layers and the output) on GPU 1. -ngl 999 (and the default) split the same way: load_tensors clamps
    act_gpu_layers to n_layer + 1 before dividing by it."""
    ctx = 4096
    est = estimate(facts, Settings(n_ctx=ctx, n_parallel=1, n_gpu_layers=ngl, n_gpus=2, tensor_split=(1.0, 1.0)))
    assert kv_on(est, "gpu0") == 17 * KV_LAYER_PER_TOKEN * ctx
    assert kv_on(est, "gpu1") == 15 * KV_LAYER_PER_TOKEN * ctx
    assert kv_on(est, "cpu") == 0


@pytest.mark.parametrize("ngl", [33, 999])
def test_uneven_tensor_split(facts, ngl):
    """-ts 3,1: slot il goes to GPU 0 while il / act_gpu_layers < 0.75, act_gpu_layers = min(-ngl, n_layer + 1) = 33
    (load_tensors), so slots 0-24 (25 layers) on GPU 0 and 25-32 (7 layers and the output) on GPU 1."""
    ctx = 4096
    est = estimate(facts, Settings(n_ctx=ctx, n_parallel=1, n_gpu_layers=ngl, n_gpus=2, tensor_split=(3.0, 1.0)))
    assert kv_on(est, "gpu0") == 25 * KV_LAYER_PER_TOKEN * ctx
    assert kv_on(est, "gpu1") == 7 * KV_LAYER_PER_TOKEN * ctx


@pytest.mark.parametrize("parallel", [1, 2, 4])
def test_kv_cache_is_linear_in_the_context(facts, parallel):
    for ctx in (2048, 8192, 32768):
        est = estimate(facts, Settings(n_ctx=ctx, n_parallel=parallel, n_gpu_layers=0))
        assert est.kv_cache_bytes == N_LAYER * KV_LAYER_PER_TOKEN * ctx


def test_quantized_v_cache_needs_flash_attention(facts):
    """llama_context constructor: "quantized V cache was requested, but this requires Flash Attention"; an f16 V
    cache without flash attention is fine, and a q8_0 cache is half of f16 plus its scales (block_q8_0: 34 bytes per
    32 values)."""
    est = estimate(facts, Settings(n_ctx=4096, n_parallel=1, flash_attn="off"))
    assert est.kv_cache_bytes == N_LAYER * KV_LAYER_PER_TOKEN * 4096
    with pytest.raises(BadInputError):
        estimate(facts, Settings(n_ctx=4096, n_parallel=1, flash_attn="off", cache_type_v="q8_0"))
    q8 = estimate(facts, Settings(n_ctx=4096, n_parallel=1, flash_attn="on", cache_type_k="q8_0",
                                  cache_type_v="q8_0"))
    assert q8.kv_cache_bytes == N_LAYER * N_KV * HEAD_DIM * 2 * 4096 * 34 // 32


@pytest.mark.parametrize("gpus", [0, 1])
def test_compute_buffer_holds_the_attention_scores_without_flash_attention(facts, gpus):
    """Without flash attention the graph materialises KQ, f32 [n_kv, n_ubatch, n_head], next to the f32 mask
    [n_kv, n_ubatch] that the softmax reads (llama-graph.cpp build_attn_mha): the compute buffer of the device that
    runs the layers holds at least both, and doubling the cells adds at least the KQ growth."""
    ub = 512

    def compute(ctx):
        est = estimate(facts, Settings(n_ctx=ctx, n_parallel=1, flash_attn="off", n_ubatch=ub, n_gpus=gpus,
                                       n_gpu_layers=-1 if gpus else 0))
        return dev(est, "gpu0" if gpus else "cpu").compute_bytes

    for ctx in (4096, 16384):
        assert compute(ctx) >= 4 * ub * ctx * (N_HEAD + 1)
        assert compute(2 * ctx) - compute(ctx) >= 4 * ub * ctx * N_HEAD
    with_fa = estimate(facts, Settings(n_ctx=16384, n_parallel=1, flash_attn="on", n_gpus=gpus,
                                       n_gpu_layers=-1 if gpus else 0))
    assert dev(with_fa, "gpu0" if gpus else "cpu").compute_bytes < compute(16384)


def test_logits_and_output_buffer(facts):
    """The output layer's graph holds the f32 logits of a ubatch, n_vocab x n_ubatch (llama-graph.cpp build_inp_out
    / the lm_head matmul); the output buffer holds n_vocab floats per sequence (llama_context::output_reserve)."""
    for parallel in (1, 4):
        est = estimate(facts, Settings(n_ctx=4096 * parallel, n_parallel=parallel, n_gpu_layers=0))
        assert est.output_bytes == N_VOCAB * 4 * parallel
        assert est.compute_bytes >= 4 * 512 * N_VOCAB


def test_partial_offload_split_over_two_gpus(facts):
    """-ngl 17 -ts 1,1: the GPU slots are the last 17 of the 33 (i_gpu_start = 33 - 17 = 16: layers 16-31 and the
    output); slot il goes to GPU 0 while (il - 16) / 17 < 0.5, i.e. layers 16-24 (9) on GPU 0, layers 25-31 (7) and
    the output on GPU 1, layers 0-15 (16) on the CPU."""
    ctx = 4096
    est = estimate(facts, Settings(n_ctx=ctx, n_parallel=1, n_gpu_layers=17, n_gpus=2, tensor_split=(1.0, 1.0)))
    per_layer = KV_LAYER_PER_TOKEN * ctx
    assert (kv_on(est, "gpu0"), kv_on(est, "gpu1"), kv_on(est, "cpu")) == (9 * per_layer, 7 * per_layer,
                                                                           16 * per_layer)


def test_builds_before_output_first_count_the_output_slot_last(facts):
    """Before llama.cpp moved the output layer to the first offloaded slot, i_gpu_start was n_layer - N: -ngl 1
    offloaded the last repeating layer and kept the output on the CPU; from that build on (OUTPUT_FIRST_SINCE, the
    build the estimator names for the change) -ngl 1 offloads the output layer alone."""
    from advisor.gguf import estimate as est_module

    since = est_module.OUTPUT_FIRST_SINCE
    ctx = 4096
    old = estimate(facts, Settings(n_ctx=ctx, n_parallel=1, n_gpu_layers=1, n_gpus=1, llama_build=since - 1))
    new = estimate(facts, Settings(n_ctx=ctx, n_parallel=1, n_gpu_layers=1, n_gpus=1, llama_build=since))
    assert kv_on(old, "gpu0") == KV_LAYER_PER_TOKEN * ctx and kv_on(new, "gpu0") == 0
    output = sum(t.nbytes for t in facts.tensors if t.name.startswith("output"))
    assert dev(new, "gpu0").weights_bytes == output
    assert dev(new, "gpu0").compute_bytes >= 4 * 512 * N_VOCAB  # the logits are computed where the output layer is


def test_moe_ffn_holds_every_used_experts_activations():
    """Qwen3-30B-A3B (config.json: 48 layers, 128 experts, 8 used, moe_intermediate_size 768): llama.cpp's
    build_moe_ffn computes up and gate for each used expert (ggml_mul_mat_id: [768, 8, n_tokens] each) and their
    SwiGLU product, so a device that runs MoE layers holds at least 3 x 768 x 8 floats per ubatch token: the GPU with
    9 of the layers (-ngl 10). (The CPU side's big batches run on the GPU too on CUDA: ggml_backend_sched offload_op.)"""
    model = load_catalog().get("qwen3-30b-a3b")
    variant = next(v for v in model.all_variants() if v.quant == "Q4_K_M")
    facts = compact_catalog_facts(model, variant, layout.tensor_inventory(model.arch))
    est = estimate(facts, Settings(n_ctx=4096, n_parallel=1, n_gpu_layers=10, n_gpus=1, backend="cuda"))
    floor = 4 * 512 * 3 * 768 * 8
    assert dev(est, "gpu0").compute_bytes >= floor


def test_every_layer_sliding_window(facts):
    """A model whose every layer attends through a sliding window of 4096 tokens (sliding_window in its config, every
    layer local): llama_kv_cache_iswa sizes that cache at pad(n_swa + n_ubatch, 256) = 4608 cells whatever the
    context, and without flash attention the KQ scores span those cells: [4608, n_ubatch, n_head] f32."""
    import dataclasses

    swa = dataclasses.replace(facts, sliding_window=4096, swa_layers=(True,) * N_LAYER)
    est = estimate(swa, Settings(n_ctx=32768, n_parallel=1, flash_attn="off", n_gpu_layers=0))
    cells = 4608
    assert est.kv_cache_bytes == N_LAYER * KV_LAYER_PER_TOKEN * cells
    assert est.compute_bytes >= 4 * 512 * N_HEAD * cells


def test_sliding_window_cache_from_its_first_build(facts):
    """The estimator's build eras name the first build with the newer behaviour (advisor/gguf/estimate.py). A
    Gemma-3-like pattern (every sixth layer global, the others a 4096-token window): from ISWA_SINCE on,
    llama_kv_cache_iswa gives the window layers pad(n_swa + n_ubatch, 256) = 4608 cells and the global ones the
    context; the build before gave every layer the context."""
    import dataclasses

    from advisor.gguf import estimate as est_module

    since = est_module.ISWA_SINCE
    pattern = tuple(il % 6 != 5 for il in range(N_LAYER))
    swa = dataclasses.replace(facts, sliding_window=4096, swa_layers=pattern)
    at = estimate(swa, Settings(n_ctx=32768, n_parallel=1, n_gpu_layers=0, llama_build=since))
    before = estimate(swa, Settings(n_ctx=32768, n_parallel=1, n_gpu_layers=0, llama_build=since - 1))
    n_swa = sum(pattern)
    assert at.kv_cache_bytes == KV_LAYER_PER_TOKEN * (n_swa * 4608 + (N_LAYER - n_swa) * 32768)
    assert before.kv_cache_bytes == N_LAYER * KV_LAYER_PER_TOKEN * 32768


def test_batched_moe_from_its_first_build():
    """From MOE_BATCHED_SINCE on, build_moe_ffn multiplies all used experts at once (ggml_mul_mat_id), so a device
    running MoE layers holds every used expert's up/gate activations (3 x 768 x 8 floats per ubatch token for
    Qwen3-30B-A3B); the build before looped over the used experts, one at a time, and needed less. GPU 0 of two
    holds layers but not the output layer, so its compute buffer is the layers' own."""
    from advisor.gguf import estimate as est_module

    since = est_module.MOE_BATCHED_SINCE
    model = load_catalog().get("qwen3-30b-a3b")
    variant = next(v for v in model.all_variants() if v.quant == "Q4_K_M")
    facts = compact_catalog_facts(model, variant, layout.tensor_inventory(model.arch))
    on = dict(n_ctx=4096, n_parallel=1, n_gpu_layers=-1, n_gpus=2, backend="cuda", flash_attn="on")
    at = dev(estimate(facts, Settings(**on, llama_build=since)), "gpu0").compute_bytes
    before = dev(estimate(facts, Settings(**on, llama_build=since - 1)), "gpu0").compute_bytes
    assert at >= 4 * 512 * 3 * 768 * 8 and at > before


def test_a_moe_gpu_phase_holds_the_router_pair_and_not_more(tmp_path):
    """llama-graph.cpp build_moe_ffn: the router's logits (ggml_mul_mat of ffn_gate_inp, n_expert f32 per token) and
    their soft_max probabilities are live together, beside the used experts' gate/up/SwiGLU outputs (3 x F_exp x
    n_used) and a few E-wide rows. A model of many tiny experts makes the router pair most of the phase, so the
    GPU buffer lies between 2 x n_expert and that plus the expert outputs and 4E (gpu_compute_bytes, no attention,
    no output)."""
    from advisor.gguf.estimate import gpu_compute_bytes
    from advisor.gguf.facts import read_gguf_facts
    from tests import ggufgen

    spec = ggufgen.Spec("qwen3moe", n_layer=2, n_embd=64, n_head=2, n_head_kv=1, n_ff=64, n_vocab=300,
                        n_expert=1024, n_expert_used=2, n_ff_exp=16)  # 1024: llama.cpp's LLAMA_MAX_EXPERTS
    moe = read_gguf_facts(ggufgen.write(tmp_path / "moe.gguf", spec, sparse=True))
    ub = 512
    got = gpu_compute_bytes(moe, n_ubatch=ub, kv_cells=0, mask_cells=0, flash_attn=True, layers=True,
                            output=False, attention=False) / (4 * ub)
    router = 2 * 1024
    assert router <= got <= router + 3 * 16 * 2 + 4 * 64


def test_the_planners_compact_facts_size_compute_like_the_file(facts, tmp_path):
    """The planner sizes catalog variants from compact facts (one 'blk.N.all' tensor per layer); their compute
    buffer must be the header-only file's, so no rule may read a per-tensor name the compact facts do not have as
    'absent' (a gated FFN taken for a GELU one)."""
    from advisor.gguf.facts import read_gguf_facts
    from tests import gguf_from_catalog

    path = gguf_from_catalog.write(tmp_path / "llama.gguf", "llama-3.1-8b-instruct", "Q4_K_M")
    full = read_gguf_facts(path)
    for fa in ("on", "off"):
        # CPU only (the logits phase is the peak), and layers left on the CPU beside a Metal GPU, whose CPU side
        # runs its layers itself (no op offload): there the FFN phase is the CPU buffer's peak
        for s in (Settings(n_ctx=4096, n_parallel=1, flash_attn=fa),
                  Settings(n_ctx=4096, n_parallel=1, flash_attn=fa, n_gpus=1, backend="metal", n_gpu_layers=10)):
            assert [d.compute_bytes for d in estimate(facts, s).devices] == \
                [d.compute_bytes for d in estimate(full, s).devices], s


@pytest.mark.parametrize("model_id", ["starcoder2-7b", "phi-4-mini-instruct", "qwen3-30b-a3b", "gemma-3n-e4b-it",
                                      "glm-4.5-air", "deepseek-v3.1", "deepseek-coder-v2-lite-instruct", "gpt-oss-20b",
                                      "llama-4-scout-17b-16e-instruct", "gemma-3-12b-it", "smollm3-3b"])
def test_every_compact_form_sizes_compute_like_the_file(model_id, tmp_path):
    """The planner's three cheap forms of a catalog variant (compact facts of the file, compact catalog facts, and
    the average-bits facts it ranks with) keep the layer kinds the compute phases and the allocator replay read
    (starcoder2's GELU FFN, phi3's fused QKV and up, Q/K norms, routers and selection biases, DeepSeek's attention
    layout, the leading dense layers), each expert tensor apart (the one the GPU copies in with experts on the CPU),
    and the caches llama.cpp makes (starcoder2's config names a sliding window its loader ignores): compute and KV
    of every device are the header-only file's, on a CPU, on a CUDA GPU, and with 8 layers on it."""
    from advisor.catalog.facts import approx_catalog_facts, compact, compact_catalog_facts, inventory_sums
    from advisor.catalog.load import load_catalog
    from advisor.gguf.facts import read_gguf_facts
    from advisor.gguf.layout import tensor_inventory
    from tests import gguf_from_catalog

    model = load_catalog().get(model_id)
    variant = next(v for v in model.all_variants() if v.quant in ("Q4_K_M", "MXFP4_MOE"))
    full = read_gguf_facts(gguf_from_catalog.write(tmp_path / "m.gguf", model_id, variant.quant))
    sums = inventory_sums(model.arch.n_layer, tensor_inventory(model.arch, False))
    exact = [compact(full), compact_catalog_facts(model, variant)]
    approx = approx_catalog_facts(model, variant, 4.8, sums)
    partial = Settings(n_ctx=8192, n_parallel=1, n_gpus=1, backend="cuda", flash_attn="off", n_gpu_layers=8)
    for s in (Settings(n_ctx=32768, n_parallel=1), Settings(n_ctx=32768, n_parallel=1, n_gpus=1, backend="cuda"),
              partial):
        want = [(d.compute_bytes, d.kv_cache_bytes) for d in estimate(full, s).devices]
        # the average-bits form sizes every tensor alike, so with experts on the CPU the one the GPU copies in (op
        # offload) is not the file's largest; it only ranks, and plans are re-sized with the compact form
        for form in exact + ([approx] if not (s == partial and model.arch.n_expert) else []):
            assert [(d.compute_bytes, d.kv_cache_bytes) for d in estimate(form, s).devices] == want, (model_id, s)
