"""Estimator unit cases (pure, no engine): context padding, KV sizes, SWA, offload split, errors, CLI output."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.errors import BadInputError
from advisor.gguf.estimate import Settings, context, estimate, layer_devices
from advisor.gguf.facts import read_gguf_facts
from tests import ggufgen
from tests.ggufgen import Spec, T

MIB = 2**20
LLAMA8B = Spec("llama", n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256,
               n_ctx_train=131072, wtype=T.Q4_0)


@pytest.fixture(scope="module")
def llama8b(tmp_path_factory):
    return read_gguf_facts(ggufgen.write(tmp_path_factory.mktemp("e") / "l8b.gguf", LLAMA8B, sparse=True))


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    spec = Spec("gemma3", n_layer=12, n_embd=512, n_head=4, n_head_kv=2, head_dim=128, n_ff=2048, n_vocab=6000,
                sliding_window=1024, tied=True, n_ctx_train=32768)
    return read_gguf_facts(ggufgen.write(tmp_path_factory.mktemp("g") / "g3.gguf", spec, sparse=True))


def test_defaults_are_llama_server(llama8b):
    s = Settings()
    assert (s.n_ctx, s.n_batch, s.n_ubatch, s.flash_attn, s.cache_type_k, s.cache_type_v) == (
        0, 2048, 512, "auto", "f16", "f16")
    assert s.resolved_parallel() == (4, True)  # -np auto: 4 slots, unified KV
    e = estimate(llama8b)
    assert e.n_ctx == 131072 and e.n_seq == 4 and e.kv_unified and e.n_stream == 1


def test_llama3_8b_kv_is_128_kib_per_token(llama8b):
    # llama_kv_cache: 32 layers x 8 kv heads x 128 x 2 (K+V) x 2 B = 128 KiB/token; 512 ctx -> 64 MiB
    e = estimate(llama8b, Settings(n_ctx=512, n_parallel=1))
    assert e.kv_cache_bytes == 64 * MIB
    q8 = estimate(llama8b, Settings(n_ctx=512, n_parallel=1, cache_type_k="q8_0", cache_type_v="q8_0"))
    assert q8.kv_cache_bytes == 64 * MIB * 34 // 64  # q8_0: 34 bytes per 32 values


def test_llama3_8b_logits_compute(llama8b):
    # a CUDA start-up log of Llama-3-8B ub 512, FA off, ctx 512: compute 258.50 MiB = 4*512*(128256+4096)
    e = estimate(llama8b, Settings(n_ctx=512, n_parallel=1, flash_attn="off"))
    # a CUDA log has V + E (258.50 MiB); the CPU backend keeps one more E-wide row (llama.cpp's own CPU buffers are
    # compared in tests/test_llamacpp_accuracy.py, recorded and live): within 5 %
    assert abs(e.compute_bytes - 258.5 * MIB) / (258.5 * MIB) < 0.05
    gpu = estimate(llama8b, Settings(n_ctx=512, n_parallel=1, flash_attn="off", n_gpus=1, backend="cuda"))
    assert abs(gpu.devices[1].compute_bytes - 258.5 * MIB) <= 0.01 * MIB


@pytest.mark.parametrize("n_ctx, n_seq, unified, want", [
    (4096, 1, False, (4096, 4096, 1)),
    (1000, 1, False, (1024, 1024, 1)),  # padded to 256
    (4096, 4, True, (4096, 4096, 1)),
    (4096, 4, False, (4096, 1024, 4)),
    (4096, 10, False, (5120, 512, 10)),  # llama_context: -c 4096 -np 10 -> 512 per slot, 5120 cells
])
def test_context_padding(llama8b, n_ctx, n_seq, unified, want):
    n, n_seq_ctx, _, _, n_stream = context(llama8b, Settings(n_ctx=n_ctx, n_parallel=n_seq, kv_unified=unified))
    assert (n, n_seq_ctx, n_stream) == want


def test_batch_capped_by_context(llama8b):
    e = estimate(llama8b, Settings(n_ctx=256, n_parallel=1))
    assert (e.n_batch, e.n_ubatch) == (256, 256)


def test_sliding_window_cache(gemma3):
    s = Settings(n_ctx=8192, n_parallel=1)
    e = estimate(gemma3, s)
    assert e.kv_cells == 8192 and e.swa_cells == 1024 + 512  # pad256(n_swa + n_ubatch)
    per_cell = 2 * 128 * 2 * 2  # K+V, 2 kv heads x 128, f16
    assert e.kv_cache_bytes == per_cell * (2 * 8192 + 10 * 1536)  # 2 full layers (5 and 11), 10 SWA layers
    full = estimate(gemma3, dataclasses.replace(s, swa_full=True))
    assert full.kv_cache_bytes == per_cell * 12 * 8192
    uni = estimate(gemma3, dataclasses.replace(s, n_parallel=4, kv_unified=True))
    assert uni.swa_cells == 4 * 1024 + 512


def test_output_layer_offloaded_first(llama8b):
    devs, out = layer_devices(llama8b, Settings(n_gpus=1, n_gpu_layers=15))
    assert out == "gpu0" and devs.count("gpu0") == 14 and devs[-14:] == ["gpu0"] * 14  # llama_model::load_tensors (-ngl 15)
    devs, out = layer_devices(llama8b, Settings(n_gpus=1, n_gpu_layers=1))
    assert out == "gpu0" and "gpu0" not in devs
    devs, out = layer_devices(llama8b, Settings(n_gpus=2, n_gpu_layers=-1))
    # 33 slots (32 layers + output) split evenly by cumulative fraction: slots 0-16 on gpu0, the rest on gpu1
    assert devs[:17] == ["gpu0"] * 17 and devs[17:] == ["gpu1"] * 15 and out == "gpu1"


def test_partial_offload_split(llama8b):
    e = estimate(llama8b, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, n_gpu_layers=15, mmap=False))
    cpu, gpu = e.devices
    layer = llama8b.layer_bytes()[0]
    out = llama8b.tensor("output.weight").nbytes + llama8b.tensor("output_norm.weight").nbytes
    assert gpu.weights_bytes == 14 * layer + out
    assert cpu.weights_bytes == llama8b.weights_bytes - gpu.weights_bytes
    assert gpu.kv_cache_bytes == 14 * 4096 * 8 * 128 * 2 * 2 and cpu.kv_cache_bytes == 18 * 4096 * 8 * 128 * 4
    assert cpu.output_bytes == 128256 * 4 and gpu.output_bytes == 0
    assert e.total_bytes == sum(d.total_bytes for d in e.devices)


def test_tied_embeddings_duplicated_on_gpu(gemma3):
    e = estimate(gemma3, Settings(n_ctx=4096, n_parallel=1, n_gpus=1))
    embd = gemma3.tensor("token_embd.weight").nbytes
    assert e.devices[0].weights_bytes == embd  # the input copy stays on the CPU
    assert e.weights_bytes == gemma3.weights_bytes + embd


def test_quantized_v_needs_flash_attention(llama8b):
    with pytest.raises(BadInputError, match="flash attention"):
        estimate(llama8b, Settings(flash_attn="off", cache_type_v="q8_0"))
    estimate(llama8b, Settings(flash_attn="off", cache_type_k="q8_0"))  # quantized K alone is fine
    with pytest.raises(BadInputError, match="unknown cache type"):
        estimate(llama8b, Settings(cache_type_k="q3_k_xl"))


def test_flash_attention_off_grows_with_context(llama8b):
    small = estimate(llama8b, Settings(n_ctx=32768, n_parallel=1, flash_attn="on"))
    big = estimate(llama8b, Settings(n_ctx=32768, n_parallel=1, flash_attn="off"))
    assert big.compute_bytes - small.compute_bytes > 4 * 512 * 32 * 32768 * 0.9  # the KQ matrix


def test_cli_json(tmp_path):
    path = ggufgen.write(tmp_path / "m.gguf", ggufgen.TINY["qwen2"])
    r = subprocess.run([sys.executable, "-m", "advisor", "estimate", str(path), "--ctx", "1024", "--parallel", "1",
                        "--json", "--gpus", "1", "--gpu-layers", "2"], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for key in ("weights_bytes", "kv_cache_bytes", "compute_bytes", "output_bytes", "total_bytes"):
        assert isinstance(doc[key], int)
    assert [d["device"] for d in doc["devices"]] == ["cpu", "gpu0"]
    assert set(doc["devices"][0]) >= {"device", "weights_bytes", "kv_cache_bytes", "compute_bytes", "total_bytes"}
    assert doc["total_bytes"] == sum(d["total_bytes"] for d in doc["devices"])


def test_cli_table_and_bad_option(tmp_path):
    path = ggufgen.write(tmp_path / "m.gguf", ggufgen.TINY["llama"])
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "advisor", "estimate", str(path)], capture_output=True, text=True,
                       cwd=root, timeout=60)
    assert r.returncode == 0 and "KV cache" in r.stdout and "cpu" in r.stdout
    r = subprocess.run([sys.executable, "-m", "advisor", "estimate", str(path), "-fa", "off", "-ctv", "q4_0"],
                       capture_output=True, text=True, cwd=root, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "flash attention" in r.stderr


# Mamba-2.8B-like shapes (config.json of state-spaces/mamba-2.8b: 64 layers, d_model 2560, d_state 16, d_conv 4,
# expand 2, dt_rank ceil(2560 / 16) = 160) and a granite-4-like hybrid (Mamba2 layers with head_count_kv 0).
MAMBA = Spec("mamba", n_layer=64, n_embd=2560, n_head=0, n_head_kv=0, n_ff=0, n_vocab=50280, ssm_d_state=16,
             ssm_dt_rank=160, wtype=T.Q8_0)
HYBRID = Spec("granitehybrid", n_layer=8, n_embd=1024, n_head=8, n_head_kv=2, n_ff=2048, n_vocab=4000,
              ssm_d_state=128, ssm_dt_rank=32, ssm_n_group=1, attn_layers=(3, 7), wtype=T.Q8_0)


@pytest.fixture(scope="module")
def mamba(tmp_path_factory):
    return read_gguf_facts(ggufgen.write(tmp_path_factory.mktemp("m") / "m.gguf", MAMBA, sparse=True))


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    return read_gguf_facts(ggufgen.write(tmp_path_factory.mktemp("h") / "h.gguf", HYBRID, sparse=True))


def test_mamba_recurrent_state(mamba):
    assert mamba.recurrent_layers == (True,) * 64
    # llama_hparams::n_embd_r = (d_conv - 1) * d_inner (no groups in Mamba 1), n_embd_s = d_state * d_inner
    assert (mamba.n_embd_r, mamba.n_embd_s) == (3 * 5120, 16 * 5120)
    for n_seq in (1, 4):
        est = estimate(mamba, Settings(n_ctx=8192, n_parallel=n_seq))
        assert est.recurrent_bytes == 64 * (3 + 16) * 5120 * 4 * n_seq  # F32, one cell per sequence
        assert est.kv_cache_bytes == 0  # purely recurrent: no KV cache
    # the state does not grow with the context, and neither does the compute buffer (no KQ mask)
    a, b = (estimate(mamba, Settings(n_ctx=c, n_parallel=1)) for c in (4096, 65536))
    assert (a.recurrent_bytes, a.compute_bytes) == (b.recurrent_bytes, b.compute_bytes)
    assert (a.kv_cells, a.swa_cells) == (0, 0)  # no attention cells the graph would span


def test_hybrid_kv_on_attention_layers_only(hybrid):
    assert hybrid.recurrent_layers == tuple(il not in (3, 7) for il in range(8))
    est = estimate(hybrid, Settings(n_ctx=4096, n_parallel=1))
    assert est.kv_cache_bytes == 2 * 4096 * 2 * (2 * 128 * 2)  # 2 attention layers, K + V f16
    conv = 3 * (2048 + 2 * 128)  # (d_conv - 1) * (d_inner + 2 * n_group * d_state)
    assert est.recurrent_bytes == 6 * (conv + 128 * 2048) * 4
    assert est.total_bytes == est.weights_bytes + est.kv_cache_bytes + est.recurrent_bytes + est.compute_bytes \
        + est.output_bytes


def test_recurrent_state_follows_its_layer(hybrid):
    est = estimate(hybrid, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, n_gpu_layers=5))  # output + layers 4..7
    per = {d.device: d.recurrent_bytes for d in est.devices}
    one = est.recurrent_bytes // 6
    assert per["gpu0"] == 3 * one and per["cpu"] == 3 * one  # recurrent layers 4, 5, 6 offloaded; 0, 1, 2 not
    off = estimate(hybrid, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, offload_kqv=False))
    assert {d.device: d.recurrent_bytes for d in off.devices}["cpu"] == est.recurrent_bytes
    doc = est.to_dict()
    assert doc["recurrent_bytes"] == est.recurrent_bytes
    assert all("recurrent_bytes" in d for d in doc["devices"])


def test_mmapped_cpu_buffer_is_the_file_span(llama8b):
    """With mmap (the default) the CPU_Mapped buffer is the byte span from the first to the end of the last CPU
    tensor in the file (llama_model_loader::get_mapping_range): read here with gguf-py's own reader, not the
    estimator's header parser."""
    import gguf

    e = estimate(llama8b, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, n_gpu_layers=15))
    cpu = e.devices[0]
    r = gguf.GGUFReader(llama8b.path)
    gpu_layers = set(range(18, 32))
    spans = [(int(t.data_offset), int(t.data_offset) + int(t.n_bytes)) for t in r.tensors
             if not t.name.startswith("output") and not any(t.name.startswith(f"blk.{i}.") for i in gpu_layers)]
    assert cpu.weights_bytes == max(b for _, b in spans) - min(a for a, _ in spans)
    assert cpu.weights_bytes >= sum(b - a for a, b in spans)


def test_gemma4_per_layer_head_sizes_and_kv_sharing(tmp_path):
    """Gemma-4 E4B's KV lines (tests/data/gpu-logs l22, a 2026 build): 42 layers, the last 18 reuse earlier layers'
    KV (attention.shared_kv_layers = 18), full-attention layers (every 6th) with 512-wide heads, SWA layers with
    key_length_swa = value_length_swa = 256, 2 KV heads, 32768 cells in both caches: non-SWA 4 layers = 512 MiB,
    SWA 20 layers = 1280 MiB. The head sizes and sharing come from the header keys llama.cpp reads
    (llama_model::load_hparams, src/models/gemma4.cpp)."""
    spec = Spec("gemma3", n_layer=42, n_embd=2560, n_head=8, n_head_kv=2, head_dim=512, n_ff=10240, n_vocab=4096,
                sliding_window=512, tied=True, n_ctx_train=131072,
                extra_kv=(("gemma3.attention.key_length_swa", 256), ("gemma3.attention.value_length_swa", 256),
                          ("gemma3.attention.shared_kv_layers", 18)))
    facts = read_gguf_facts(ggufgen.write(tmp_path / "g4.gguf", spec, sparse=True))
    assert facts.n_layer_kv_from_start == 24 and facts.head_dims(0) == (256, 256) and facts.head_dims(5) == (512, 512)
    e = estimate(facts, Settings(n_ctx=32768, n_parallel=1, swa_full=True))
    assert e.kv_cache_bytes == (512 + 1280) * MIB
    # without the keys every layer would have the global head size and its own cache
    plain = read_gguf_facts(ggufgen.write(tmp_path / "g3.gguf", dataclasses.replace(spec, extra_kv=()),
                                          sparse=True))
    assert estimate(plain, Settings(n_ctx=32768, n_parallel=1, swa_full=True)).kv_cache_bytes == 42 * 128 * MIB


def test_gemma3n_kv_sharing_starts_at_layer_20(tmp_path):
    """gemma3n hard-codes n_layer_kv_from_start = 20 (src/models/gemma3n.cpp): layers 20+ own no KV."""
    import gguf

    from advisor.gguf.facts import KV_FROM_START

    assert KV_FROM_START["gemma3n"] == 20
    spec = Spec("gemma3", n_layer=30, n_embd=512, n_head=4, n_head_kv=2, head_dim=128, n_ff=1024, n_vocab=2048)
    path = ggufgen.write(tmp_path / "g.gguf", spec, sparse=True)
    facts = dataclasses.replace(read_gguf_facts(path), architecture="gemma3n", n_layer_kv_from_start=20)
    full = estimate(dataclasses.replace(facts, n_layer_kv_from_start=-1), Settings(n_ctx=4096, n_parallel=1))
    shared = estimate(facts, Settings(n_ctx=4096, n_parallel=1))
    assert shared.kv_cache_bytes * 30 == full.kv_cache_bytes * 20
    assert gguf is not None


def test_llama_build_eras_reported(llama8b):
    """--llama-build selects the era rules; era() names every rule and a current build has them all."""
    from advisor.gguf.estimate import ERA_RULES, era

    assert all(era(None).values()) and set(era(1)) == set(ERA_RULES) and not any(era(1).values())
    old = estimate(llama8b, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, n_gpu_layers=32, llama_build=5000))
    new = estimate(llama8b, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, n_gpu_layers=32))
    # b5000 offloads the output layer only past n_layer; a current build offloads it first
    assert {d.device: d.n_layers for d in old.devices}["gpu0"] == 32
    assert {d.device: d.n_layers for d in new.devices}["gpu0"] == 31


def _catalog_file(tmp_path, model_id):
    from tests import gguf_from_catalog
    path = tmp_path / f"{model_id}.gguf"
    gguf_from_catalog.write_any_quant(str(path), model_id, "Q4_K_M")
    return read_gguf_facts(str(path))


def test_cuda_flash_attention_for_512_wide_heads_needs_grouped_queries(tmp_path):
    """ggml-cuda's 512-wide head kernel runs only on its GQA-optimised path (fattn.cu ggml_cuda_get_best_fattn_kernel,
    case 512: gqa_opt_applies, which needs n_head / n_head_kv >= 2): with as many KV heads as query heads there is no
    kernel, with two query heads per KV head there is one (Gemma 4's global layers)."""
    from advisor.gguf.estimate import gpu_has_fa_kernel

    def facts(n_head_kv):
        spec = Spec("llama", n_layer=2, n_embd=1024, n_head=8, n_head_kv=n_head_kv, head_dim=512, n_ff=256,
                    n_vocab=300)
        return read_gguf_facts(ggufgen.write(tmp_path / f"h{n_head_kv}.gguf", spec, sparse=True))

    assert not gpu_has_fa_kernel(facts(8), "cuda")
    assert gpu_has_fa_kernel(facts(4), "cuda") and gpu_has_fa_kernel(facts(8), "vulkan")


def test_cuda_has_no_flash_attention_kernel_for_unsplit_deepseek_heads(tmp_path):
    """ggml-cuda's FA kernels cover K/V head sizes 192/128 only with a GQA ratio that is a multiple of 8
    (fattn.cu ggml_cuda_get_best_fattn_kernel); a DeepSeek-V2-Lite GGUF with attn_kv_b has 16 heads of 16 KV heads.
    With -fa auto llama.cpp turns flash attention off; forced on, the FA op runs on the CPU and the host holds one
    layer's K and V views (H200: 58.01 MiB at 4096 cells, 366.01 at 32768)."""
    from advisor.gguf.estimate import gpu_has_fa_kernel
    facts = _catalog_file(tmp_path, "deepseek-coder-v2-lite-instruct")
    assert (facts.head_dim_k, facts.head_dim_v, facts.n_head_kv[0]) == (192, 128, 16)
    assert not gpu_has_fa_kernel(facts, "cuda") and gpu_has_fa_kernel(facts, "vulkan")
    auto = estimate(facts, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, backend="cuda", flash_attn="auto"))
    assert not auto.flash_attn
    host = {c: next(d for d in estimate(facts, Settings(n_ctx=c, n_parallel=1, n_gpus=1, backend="cuda",
                                                        flash_attn="on")).devices if d.device == "host")
            for c in (4096, 32768)}
    # one layer's f16 K (16 x 192) and V (16 x 128) per cell more for each added cell, plus the f16 mask's growth
    per_cell = 16 * (192 + 128) * 2 + 512 * 2
    assert host[32768].compute_bytes - host[4096].compute_bytes == (32768 - 4096) * per_cell
    forced = estimate(facts, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, backend="cuda", flash_attn="on"))
    assert forced.flash_attn and forced.flash_attn_on_cpu and forced.to_dict()["flash_attn_on_cpu"] is True
    assert not auto.flash_attn_on_cpu
    cpu_only = estimate(facts, Settings(n_ctx=4096, n_parallel=1, flash_attn="auto"))
    assert cpu_only.flash_attn and not cpu_only.flash_attn_on_cpu  # the CPU backend runs FA for any head size


def test_split_mla_catalog_facts_match_the_file(tmp_path):
    """DeepSeek-V3-class catalog models are sized as the split-MLA GGUFs people run (one latent per cell): the
    catalog's facts carry the same head sizes and KV bytes as a file written as the converter writes it."""
    from advisor.catalog.facts import facts_from_catalog
    from advisor.catalog.load import load_catalog
    model = load_catalog().get("deepseek-v3.1")
    variant = next(v for v in model.all_variants() if v.quant == "Q4_K_M")
    cat, file = facts_from_catalog(model, variant), _catalog_file(tmp_path, "deepseek-v3.1")
    keys = ("head_dim_k", "head_dim_v", "key_length_mla", "value_length_mla", "kv_lora_rank", "n_head_kv")
    assert {k: getattr(cat, k) for k in keys} == {k: getattr(file, k) for k in keys}
    s = Settings(n_ctx=32768, n_parallel=1, n_gpus=1, backend="cuda")
    kv = [sum(d.kv_cache_bytes for d in estimate(f, s).devices) for f in (cat, file)]
    assert kv[0] == kv[1] == 61 * 32768 * 576 * 2  # 61 layers x (512 latent + 64 rope) f16, no V tensor


#: Small-vocabulary models whose FFN phase is the CPU compute buffer's peak, measured with llama-memprobe
#: (benchmarks/device/memprobe.cpp, no GPU) on the llama.cpp llama-cpp-python 0.3.36 vendors, -c 4096 -fa on:
#: spec -> compute buffer bytes.
FFN_PEAK_MEASURED = [
    # phi3's fused up projection (ffn_up 2F wide, split by ggml_swiglu): one E row fewer than a gated FFN
    (Spec("phi3", n_layer=3, n_embd=384, n_head=6, n_head_kv=6, n_ff=4096, n_vocab=1000, wtype=T.F16), 31733760),
    (Spec("phi3", n_layer=3, n_embd=384, n_head=6, n_head_kv=6, n_ff=4096, n_vocab=5000, wtype=T.F16), 31733760),
    (Spec("phi3", n_layer=3, n_embd=384, n_head=6, n_head_kv=6, n_ff=1024, n_vocab=1000, wtype=T.F16), 12859392),
    # a gated dense FFN (3F + mask + 4E) and a MoE one (3 F_exp n_used + 2 n_expert + mask + 4E)
    (Spec("llama", n_layer=3, n_embd=384, n_head=6, n_head_kv=2, n_ff=4096, n_vocab=1000, wtype=T.F16), 32520192),
    (Spec("qwen3moe", n_layer=3, n_embd=256, n_head=4, n_head_kv=2, n_ff=512, n_vocab=1000, n_expert=8,
          n_expert_used=4, n_ff_exp=1024, wtype=T.F16), 31471616),
]


@pytest.mark.parametrize("spec, measured", FFN_PEAK_MEASURED, ids=lambda x: getattr(x, "arch", None))
def test_the_ffn_phase_where_it_is_the_peak(tmp_path, spec, measured):
    facts = read_gguf_facts(ggufgen.write(tmp_path / "m.gguf", spec, sparse=True))
    got = estimate(facts, Settings(n_ctx=4096, n_parallel=1, flash_attn="on")).devices[0].compute_bytes
    assert abs(got - measured) <= 0.0012 * measured  # all within 0.11 %: the router's 2 n_expert is 0.1 % here


#: The gated llama spec of FFN_PEAK_MEASURED with flash attention off at short contexts, where the FFN phase is still
#: the peak (3F against kv x H): llama-memprobe on this CPU, -np 1 -fa off -ngl 0, CPU compute buffer in bytes.
FFN_PEAK_FA_OFF_MEASURED = [(512, 29108224), (1024, 30156800)]


@pytest.mark.parametrize("n_ctx, measured", FFN_PEAK_FA_OFF_MEASURED)
def test_the_ffn_phase_without_flash_attention(tmp_path, n_ctx, measured):
    """Without flash attention the mask is f32 and the FFN phase keeps one more E row; within the CPU compute target
    (5 %: ours is 3.5 % over on this shape, 507 floats per token at both contexts)."""
    spec = Spec("llama", n_layer=3, n_embd=384, n_head=6, n_head_kv=2, n_ff=4096, n_vocab=1000, wtype=T.F16)
    facts = read_gguf_facts(ggufgen.write(tmp_path / "m.gguf", spec, sparse=True))
    got = estimate(facts, Settings(n_ctx=n_ctx, n_parallel=1, flash_attn="off")).devices[0].compute_bytes
    assert abs(got - measured) <= 0.05 * measured


def test_a_gpu_with_nothing_on_it_has_no_compute_buffer(llama8b):
    """-ts 1,0: every layer and the output on the first GPU; the second holds no graph node, so ggml-alloc reserves
    nothing for it (op offload goes to the first GPU, the one with layers)."""
    est = estimate(llama8b, Settings(n_ctx=4096, n_parallel=1, n_gpus=2, tensor_split=(1.0, 0.0), backend="cuda"))
    gpu1 = next(d for d in est.devices if d.device == "gpu1")
    assert (gpu1.n_layers, gpu1.compute_bytes, gpu1.weights_bytes) == (0, 0, 0)


def test_a_one_token_window_is_still_a_sliding_window(gemma3):
    """llama.cpp honours any n_swa > 0 (llama_kv_cache_iswa: size_swa = pad(min(size_base, n_swa + n_ubatch), 256)):
    a 1-token window gives a 768-cell SWA cache at ub 512."""
    est = estimate(dataclasses.replace(gemma3, sliding_window=1), Settings(n_ctx=8192, n_parallel=1))
    assert est.swa_cells == 768 and est.kv_cells == 8192


def test_a_transposed_v_cache_costs_no_v_copy(llama8b):
    """Forced FA off makes the cache with V transposed (attn_v_trans), so the KQV product needs no transposed copy
    of V. For a plain llama the allocator replay gives llama.cpp's own plan on the H200 for Llama 3.1 8B's shape
    (tests/data/llamacpp-cuda/h200-memprobe.jsonl, c4096-fa-off: 314580992 bytes); another architecture gets exactly
    the phases without that term."""
    from advisor.gguf.estimate import gpu_compute_bytes

    def gpu0(facts):
        est = estimate(facts, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, backend="cuda", flash_attn="off"))
        return next(d for d in est.devices if d.device == "gpu0").compute_bytes

    assert gpu0(llama8b) == 314580992
    other = dataclasses.replace(llama8b, architecture="exaone")  # a dense architecture the replay does not build
    assert gpu0(other) == gpu_compute_bytes(other, n_ubatch=512, kv_cells=4096, mask_cells=4096, flash_attn=False,
                                           layers=True, output=True)


def test_two_gpus_get_the_pipeline_copies_of_the_inputs(llama8b):
    """llama.cpp turns pipeline parallelism on from two devices up (llama-context.cpp: model.n_devices() > 1, every
    layer and the KV on them) and the scheduler then keeps GGML_SCHED_MAX_COPIES = 4 copies of the graph inputs
    (ggml-backend.cpp; gpu-logs l20 logs "n_copies=4" on 8 GPUs): with two GPUs the host buffer holds three more f16
    KQ masks (ubatch x cells x 2 bytes each) than with one."""
    def host(n_gpus):
        est = estimate(llama8b, Settings(n_ctx=4096, n_parallel=1, flash_attn="on", n_gpus=n_gpus, backend="cuda"))
        return {d.device: d for d in est.devices}["host"].compute_bytes
    assert host(2) - host(1) == 3 * 512 * 4096 * 2


def test_a_dense_cpu_layer_puts_its_weights_in_the_first_gpus_buffer(tmp_path):
    """With op offload the scheduler runs a CPU layer's big-batch products on the first GPU, and every weight of that
    GPU split is an input copied in at the split's start (ggml-backend.cpp ggml_backend_sched_split_graph: "so that
    it is allocated at the start of the split"): one layer's weights sit in the GPU's compute buffer together, beside
    the residual, the normed input and the gate and up outputs of its FFN. A small vocabulary keeps the logits phase
    below that, so the copies set the buffer's size."""
    spec = Spec("llama", n_layer=4, n_embd=2048, n_head=16, n_head_kv=16, n_ff=8192, n_vocab=1000, wtype=T.F16)
    path = ggufgen.write(tmp_path / "m.gguf", spec, sparse=True)
    facts = read_gguf_facts(path)
    layer0 = sum(t.nbytes for t in facts.tensors if t.name.startswith("blk.0."))
    assert layer0 == 2 * (4 * 2048 * 2048 + 3 * 2048 * 8192) + 2 * 4 * 2048  # F16 matrices, f32 norms

    def gpu0(n_gpu_layers):
        est = estimate(facts, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, backend="cuda", flash_attn="on",
                                       n_gpu_layers=n_gpu_layers))
        return next(d for d in est.devices if d.device == "gpu0").compute_bytes

    assert gpu0(4) == layer0 + 4 * 512 * (2 * 2048 + 2 * 8192)  # layer 0 on the CPU, the output on the GPU
    assert gpu0(99) < layer0  # every layer on the GPU: no weight is copied


def test_a_small_batch_copies_no_weight_to_the_gpu(tmp_path):
    """Below 32 tokens a batch's ops of CPU-resident weights stay on the CPU (ggml-cuda.cu
    ggml_backend_cuda_device_offload_op: op_offload_min_batch_size = 32): at -ub 16 the CPU layers put none of their
    weights in the GPU's buffer, at -ub 32 they do."""
    spec = Spec("llama", n_layer=4, n_embd=2048, n_head=16, n_head_kv=16, n_ff=8192, n_vocab=1000, wtype=T.F16)
    facts = read_gguf_facts(ggufgen.write(tmp_path / "m.gguf", spec, sparse=True))
    layer0 = sum(t.nbytes for t in facts.tensors if t.name.startswith("blk.0."))

    def gpu0(n_ubatch):
        est = estimate(facts, Settings(n_ctx=4096, n_parallel=1, n_gpus=1, backend="cuda", flash_attn="on",
                                       n_gpu_layers=2, n_ubatch=n_ubatch))
        return next(d for d in est.devices if d.device == "gpu0").compute_bytes

    assert gpu0(32) >= layer0
    assert gpu0(16) < layer0 / 4
