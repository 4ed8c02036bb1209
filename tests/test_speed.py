"""The speed model (advisor/planner/speed.py): the physics it must respect, with its constants read from
rules/speed.toml. Expected directions come from llama.cpp's own measurements (tests/data/llama-bench: e.g. RTX 4090
7B F16 pp512 11048 t/s in PR 4766; Q4_0 14771 t/s on the 2025 CUDA scoreboard, discussion 15013), from the kernel
llama.cpp picks (ggml-cuda/mmq.cu ggml_cuda_should_use_mmq: int8 MMQ on Turing and later, dequantize + cuBLAS on
Volta) and from how llama.cpp reads memory (one token-embedding row per token, llama-graph.cpp build_inp_embd; KV
cache read at every step)."""

from __future__ import annotations

import dataclasses

import pytest

from advisor.plan import DeviceMemory, Plan, Predicted
from advisor.planner import speed
from advisor.planner.machine import build_machine
from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Memory
from advisor.rules import Subject, load_rules

GIB = 1 << 30


def gpu_machine(name: str = "NVIDIA GeForce RTX 4090"):
    profile = HardwareProfile(
        cpu=Cpu(model="Test CPU", physical_cores=8, logical_cores=16, usable_cores=16, features=["avx2", "fma"]),
        memory=Memory(total_bytes=64 * GIB, available_bytes=60 * GIB, usable_bytes=60 * GIB),
        gpus=[Gpu(index=0, vendor="nvidia", name=name, backend="cuda", memory_total_bytes=24 * GIB,
                  memory_free_bytes=23 * GIB)])
    return build_machine(profile, load_rules())


def cpu_machine():
    profile = HardwareProfile(
        cpu=Cpu(model="Test CPU", physical_cores=8, logical_cores=16, usable_cores=16, features=["avx2", "fma"]),
        memory=Memory(total_bytes=64 * GIB, available_bytes=60 * GIB, usable_bytes=60 * GIB))
    return build_machine(profile, load_rules())


def constants() -> speed.Constants:
    return speed.Constants.from_rules(load_rules().resolve(Subject()))


def full_offload(gpu_bytes: float, embd_bytes: float) -> list[DeviceMemory]:
    return [DeviceMemory("gpu0", weights_bytes=int(gpu_bytes)), DeviceMemory("cpu", weights_bytes=int(embd_bytes))]


def ms(quant: str, embd: float = 0.5 * GIB, **kw) -> speed.ModelSpeed:
    return speed.ModelSpeed(quant=quant, embd_bytes=int(embd), n_vocab=128256, n_layer=32, n_embd=4096,
                            kv_bytes_per_token=131072.0, **kw)


@pytest.mark.parametrize("name,family", [
    ("F16", "f16"), ("BF16", "f16"), ("F32", "f16"), ("Q8_0", "q8_0"), ("Q4_0", "q4_0"), ("Q4_1", "q4_0"),
    ("Q5_0", "q4_0"), ("Q5_1", "q4_0"), ("Q4_K_M", "k"), ("Q6_K", "k"), ("Q3_K_S", "k"), ("UD-Q4_K_XL", "k"),
    ("Q2_K", "k"), ("IQ4_XS", "iq"), ("IQ2_M", "iq"), ("MXFP4", "mxfp4"), (None, "f16"),
])
def test_quant_families(name: str | None, family: str) -> None:
    assert speed.quant_family(name) == family


def test_prefill_follows_the_matrix_path_not_the_file_size() -> None:
    """RTX 4090 (Ada, int8 tensor cores): quantized prefill runs MMQ at the INT8 rate, so Q4_0 is faster than F16,
    though not by the 3.6x of the file sizes (measured 14771 vs 11048 t/s); decode is memory-bound."""
    m = gpu_machine()
    f16 = speed.predict(full_offload(13.5e9, 0.26e9), m, 1.0, 6.74e9, model=ms("F16", 0.26e9))
    q4 = speed.predict(full_offload(3.7e9, 0.07e9), m, 1.0, 6.74e9, model=ms("Q4_0", 0.07e9))
    assert f16.prefill_tokens_per_s < q4.prefill_tokens_per_s < 2.5 * f16.prefill_tokens_per_s
    # decode is memory-bound: 3.6x fewer bytes read is more than twice as fast
    assert q4.decode_tokens_per_s > 2 * f16.decode_tokens_per_s


def test_volta_converts_quantized_weights_to_f16_for_prefill() -> None:
    """V100 (compute capability 7.0: FP16 tensor cores, no int8 mma): ggml_cuda_should_use_mmq sends a 512-token
    batch to cuBLAS after converting the weights to F16, so Q4_0 is no faster than F16 there."""
    m = gpu_machine("Tesla V100-SXM2-32GB")
    f16 = speed.predict(full_offload(13.5e9, 0.26e9), m, 1.0, 6.74e9, model=ms("F16", 0.26e9))
    q4 = speed.predict(full_offload(3.7e9, 0.07e9), m, 1.0, 6.74e9, model=ms("Q4_0", 0.07e9))
    assert q4.prefill_tokens_per_s < f16.prefill_tokens_per_s


def test_matrix_path_by_architecture() -> None:
    """The rates are rules/speed.toml's; the classes follow ggml-cuda's architecture checks."""
    c = constants()
    rates = c.matrix_rate
    assert speed.gpu_class("cuda", "8.9") == "turing_plus" and speed.gpu_class("cuda", "12.0") == "turing_plus"
    assert speed.gpu_class("cuda", "9.0") == "hopper" and speed.gpu_class("cuda", "7.0") == "volta"
    assert speed.gpu_class("cuda", "6.1") == "" and speed.gpu_class("rocm", "gfx1030") == "rdna2"
    assert speed.gpu_class("rocm", "gfx1100") == "" and speed.gpu_class("metal", "") == ""
    f16x, qx, dequant = speed.matrix_path("cuda", "8.6", c)
    assert (f16x, qx, dequant) == (rates["turing_plus"]["f16"], rates["turing_plus"]["quant"], False)
    assert speed.matrix_path("cuda", "7.0", c)[2] is True
    assert speed.matrix_path("metal", "", c) == (1.0, 1.0, False)
    # Hopper runs mma.sync: below its datasheet rate, unlike Ada's int8 path above it
    assert speed.matrix_path("cuda", "9.0", c)[1] < speed.matrix_path("cuda", "8.9", c)[1]


def test_h100_prefill_is_not_its_datasheet_ratio_over_a100() -> None:
    """H100's datasheet FP16 rate is 2.4x A100's, reached only with wgmma, which ggml-cuda does not issue."""
    h100 = gpu_machine("NVIDIA H100 PCIe")
    a100 = gpu_machine("NVIDIA A100 80GB PCIe")
    args = (full_offload(4.6e9, 0.26e9), 1.0, 7.5e9)
    ph = speed.predict(args[0], h100, *args[1:], model=ms("Q4_K_M", 0.26e9)).prefill_tokens_per_s
    pa = speed.predict(args[0], a100, *args[1:], model=ms("Q4_K_M", 0.26e9)).prefill_tokens_per_s
    assert ph < 2.0 * pa


def test_the_output_projection_runs_once_per_batch() -> None:
    c = constants()
    gpu = [speed.Part("cuda", 1008.0, 330.0, 4e9, 1.0)]
    body = speed.prefill_seconds(gpu, 7.5e9, ms("F16", 0.0), c)
    with_out = speed.prefill_seconds(gpu, 8.0e9, ms("F16", 0.0, output_params=0.5e9), c)
    assert with_out == pytest.approx(body, rel=0.001)


def test_the_embedding_table_costs_one_row_not_a_full_read() -> None:
    m = gpu_machine()
    small = speed.predict(full_offload(4.5e9, 0.1e9), m, 1.0, 8e9, model=ms("Q4_K_M", 0.1e9))
    big = speed.predict(full_offload(4.5e9, 2.0e9), m, 1.0, 8e9, model=ms("Q4_K_M", 2.0e9))
    assert big.decode_tokens_per_s == pytest.approx(small.decode_tokens_per_s, rel=0.01)


def test_moe_reads_only_the_active_experts() -> None:
    m = gpu_machine()
    dense = speed.predict(full_offload(17e9, 0.3e9), m, 1.0, 30e9, model=ms("Q4_K_M", 0.3e9))
    moe = speed.predict(full_offload(17e9, 0.3e9), m, 0.1, 3e9, model=ms("Q4_K_M", 0.3e9, read_fraction=0.1))
    assert moe.decode_tokens_per_s > 4 * dense.decode_tokens_per_s
    assert moe.prefill_tokens_per_s > 5 * dense.prefill_tokens_per_s


def test_partial_offload_is_the_sum_of_both_devices_times() -> None:
    c = constants()
    model = ms("Q4_K_M", 0.0)
    gpu = speed.Part("cuda", 1008.0, 330.0, 3e9, 0.6)
    cpu = speed.Part("cpu", 51.2, 0.0, 2e9, 0.4, threads=8, isa="avx2")
    both = speed.decode_seconds([gpu, cpu], model, c, depth=0)
    over = c.overhead_s("cuda", model.n_layer)
    alone = speed.decode_seconds([gpu], model, c, depth=0) + speed.decode_seconds([cpu], model, c, depth=0)
    assert both == pytest.approx(alone - c.overhead_s("cpu", model.n_layer), rel=1e-9)
    assert both > 2e9 / (51.2e9 * c.decode_eff("cpu", "k")) + over * 0.999  # the CPU's share dominates
    # prefill: llama.cpp offloads the CPU-resident weights' products to the GPU, copying each weight once per
    # ubatch (op offload): the copy at rules/speed.toml's rate plus the CPU share's FLOPs at the GPU's rate
    pre = speed.prefill_seconds([gpu, cpu], 8e9, model, c)
    copy = 2e9 / (c.op_offload_h2d_gbs * 1e9) / speed.UBATCH
    gpu_all = dataclasses.replace(gpu, layer_share=1.0)
    assert pre == pytest.approx(speed.prefill_seconds([gpu_all], 8e9, model, c) + copy, rel=1e-9)
    assert pre < speed.prefill_seconds([gpu], 8e9, model, c) + speed.prefill_seconds([cpu], 8e9, model, c)


def test_moe_prefill_pays_for_small_expert_batches() -> None:
    """An expert sees ubatch x n_used / n_expert tokens of a prompt batch: measured on an H200
    (tests/data/llama-bench/measured.csv), Qwen3-30B-A3B (3.3B active) prefills slower than the dense Llama 3 8B
    (6855 against 9435 t/s pp512, Q4_K_M both)."""
    c = constants()
    gpu = [speed.Part("cuda_hbm", 4800.0, 989.0, 17e9, 1.0, quant_tflops=989.0)]
    dense = speed.ModelSpeed(quant="Q4_K_M", n_layer=32, n_embd=4096)
    moe = speed.ModelSpeed(quant="Q4_K_M", n_layer=48, n_embd=2048, expert_params=1.8e9, expert_use=8 / 128)
    assert speed.expert_slowdown(dense, c, "cuda_hbm") == 1.0
    slow = speed.expert_slowdown(moe, c, "cuda_hbm")
    wider = speed.expert_slowdown(dataclasses.replace(moe, expert_use=4 / 32), c, "cuda_hbm")
    assert slow > wider > 1.0  # fewer tokens per expert, slower
    assert speed.prefill_seconds(gpu, 3.0e9, moe, c) > speed.prefill_seconds(gpu, 7.5e9, dense, c)


def test_tensor_parallel_ranks_work_at_once() -> None:
    c = constants()
    model = ms("F16", 0.0)
    ranks = [speed.Part("cuda", 1008.0, 330.0, 8e9, 0.5), speed.Part("cuda", 1008.0, 330.0, 8e9, 0.5)]
    seq = speed.decode_seconds(ranks, model, c, depth=0)
    tp = speed.decode_seconds(ranks, model, c, depth=0, tensor_parallel=True)
    assert tp < seq
    assert tp == pytest.approx(speed.decode_seconds(ranks[:1], model, c, depth=0), rel=1e-9)


def test_the_kv_cache_is_read_at_every_step() -> None:
    m = gpu_machine()
    near = speed.predict(full_offload(4.5e9, 0.3e9), m, 1.0, 8e9, model=ms("Q4_K_M", 0.3e9), depth=0)
    far = speed.predict(full_offload(4.5e9, 0.3e9), m, 1.0, 8e9, model=ms("Q4_K_M", 0.3e9), depth=32768)
    # 32768 tokens x 128 KiB = 4.3 GB of KV: about as much again as the weights
    assert far.decode_tokens_per_s < 0.7 * near.decode_tokens_per_s


def test_prediction_carries_its_basis_and_range() -> None:
    p = speed.predict(full_offload(4.5e9, 0.3e9), gpu_machine(), 1.0, 8e9, model=ms("Q4_K_M", 0.3e9))
    assert p.basis == speed.BASIS_MODEL
    assert p.decode_low <= p.decode_tokens_per_s <= p.decode_high
    assert p.prefill_low <= p.prefill_tokens_per_s <= p.prefill_high


def test_hbm_gpus_have_their_own_entry_and_fall_back() -> None:
    hbm = load_rules().resolve(Subject())["hbm_gpu_match"]
    assert speed.speed_backend("cuda", "nvidia", "NVIDIA H100 80GB HBM3", hbm) == "cuda_hbm"
    assert speed.speed_backend("cuda", "nvidia", "NVIDIA H100 80GB HBM3", hbm, "9.0") == "cuda_hbm_hopper"
    assert speed.speed_backend("cuda", "nvidia", "NVIDIA A100-SXM4-80GB", hbm, "8.0") == "cuda_hbm"
    assert speed.speed_backend("cuda", "nvidia", "NVIDIA GeForce RTX 4090", hbm) == "cuda"
    assert speed.speed_backend("vulkan", "nvidia", "NVIDIA GeForce RTX 3090", hbm) == "vulkan_nvidia"
    assert speed.speed_backend("cpu_x86", "none") == "cpu"
    assert speed.speed_backend("vulkan", "amd", "Radeon 8060S", hbm, "gfx1151") == "vulkan_coopmat"
    assert speed.speed_backend("vulkan", "amd", "Radeon RX 6700 XT", hbm, "gfx1031") == "vulkan"
    c = constants()
    assert c.decode_eff("sycl", "k") == c.decode_eff("vulkan", "k")  # no sycl rows: vulkan's values


def test_quick_decode_is_an_upper_bound_on_the_cpu() -> None:
    m = cpu_machine()
    size = int(4.5e9)
    p = speed.predict([DeviceMemory("cpu", weights_bytes=size)], m, 1.0, 8e9, model=ms("Q4_K_M", 0.0))
    assert speed.quick_decode(size, 1.0, m) >= p.decode_tokens_per_s


def test_plans_written_before_still_load() -> None:
    old = {"schema": 1, "backend": "llama.cpp", "model": {"id": "m", "path": "/m.gguf"}, "settings": {},
           "predicted": {"decode_tokens_per_s": 12.5, "prefill_tokens_per_s": 300.0,
                         "basis": "estimate: decode = efficiency x memory bandwidth / bytes read per token"}}
    plan = Plan.from_dict(old)
    assert plan.predicted.decode_tokens_per_s == 12.5 and plan.predicted.decode_low is None
    new = Plan.from_dict({**old, "predicted": {"decode_tokens_per_s": 12.5, "basis": "measured", "decode_low": 11.0,
                                               "decode_high": 13.0, "note": "advisor bench"}})
    assert new.predicted == Predicted(decode_tokens_per_s=12.5, basis="measured", decode_low=11.0, decode_high=13.0,
                                      note="advisor bench")


def test_vllm_plans_use_the_datasheet_fp16_rate() -> None:
    """vLLM's GEMMs are PyTorch/CUTLASS ones (wgmma on Hopper) and its quantized kernels multiply in FP16: none of
    llama.cpp's matrix-path rates apply."""
    for name in ("NVIDIA H100 PCIe", "NVIDIA GeForce RTX 4090"):
        m = gpu_machine(name)
        parts = speed.parts_of(full_offload(4.6e9, 0.0), m, llama_cpp=False)
        assert parts[0].tflops == m.gpus[0].tflops and parts[0].fp16_math and not parts[0].dequant
    # llama.cpp's F16 GEMM accumulates in FP16: twice the GeForce FP32-accumulate figure vLLM is given
    llama = speed.parts_of(full_offload(4.6e9, 0.0), m)
    assert llama[0].tflops == 2 * parts[0].tflops


def test_every_gpu_backend_has_a_moe_half_rate_point() -> None:
    """ROCm builds ggml-cuda's MMQ kernels for HIP, so it takes CUDA's fitted point; a backend with no MoE row of its
    own still pays for small expert batches (the fitted backends' median), never nothing."""
    c = constants()
    table = c.moe_half_rate_tokens
    assert speed._moe_k(table, "rocm") == table["cuda"] and speed._moe_k(table, "cuda_hbm") == table["cuda"]
    for backend in ("metal", "sycl", "vulkan", "rocm_hbm"):
        assert speed._moe_k(table, backend) > 0


def test_decode_overhead_scales_with_the_layers_kernels() -> None:
    """A layer's fixed decode cost goes with the kernels llama.cpp's graph launches for it (rules/speed.toml
    decode-graph-kernels, counted by benchmarks/graph_kernels.py): a Qwen3-MoE layer launches about twice a llama
    layer's, so at the same bytes per token it decodes slower; an unknown architecture keeps the llama figure."""
    c = constants()
    table, ref = c.graph_kernels, c.graph_kernels_reference
    dense = ms("Q4_K_M", arch="llama")
    moe = ms("Q4_K_M", arch="qwen3moe", n_expert_used=c.graph_kernels_n_used["qwen3moe"])
    assert c.kernel_ratio(dense) == pytest.approx(table["llama"] / ref)
    assert c.kernel_ratio(moe) == pytest.approx(table["qwen3moe"] / ref) and c.kernel_ratio(moe) > 1.5
    assert c.kernel_ratio(ms("Q4_K_M")) == 1.0
    gpu = [speed.Part("cuda", 1008.0, 330.0, 4 * GIB, 1.0), speed.Part("cpu", 50.0, 0.0, 0.5 * GIB, 0.0, threads=8)]
    assert speed.decode_seconds(gpu, moe, c) - speed.decode_seconds(gpu, dense, c) == pytest.approx(
        c.overhead_s("cuda", 32) * (table["qwen3moe"] - table["llama"]) / ref)


def test_another_expert_count_changes_the_aggregation_adds() -> None:
    """build_moe_ffn sums the n_used expert outputs with n_used - 1 adds: a file with more experts per token than
    the one counted has more kernels; an MoE file of a dense-counted architecture (Mixtral as "llama") gets the MoE
    layer's extra kernels."""
    c = constants()
    counted = c.graph_kernels_n_used["qwen3moe"]
    more = ms("Q4_K_M", arch="qwen3moe", n_expert_used=counted + 2)
    base = ms("Q4_K_M", arch="qwen3moe", n_expert_used=counted)
    assert (c.kernel_ratio(more) - c.kernel_ratio(base)) * c.graph_kernels_reference == pytest.approx(2.0)
    mixtral = ms("Q4_K_M", arch="llama", n_expert_used=2)
    assert c.kernel_ratio(mixtral) * c.graph_kernels_reference == pytest.approx(
        c.graph_kernels["llama"] + c.graph_kernels_moe_extra + 1)


def test_metal_moe_prefill_wastes_only_the_last_tile() -> None:
    """Metal multiplies an expert's tokens in 32-token tiles, as its dense product (mul_mm.metal kernel_mul_mm_id:
    NR1 = 32): an expert batch costs its filled tiles, so the slowdown is the empty part of the last tile under a
    uniform router (Binomial tokens per expert), not CUDA's fitted half-rate form."""
    c = constants()
    tile = c.moe_token_tile["metal"]
    assert speed.tile_waste(512, 1.0, tile) == 1.0
    qwen3 = speed.tile_waste(512, 8 / 128, tile)  # 32 tokens per expert on average
    gpt_oss = speed.tile_waste(512, 4 / 32, tile)  # 64
    assert 1.3 < qwen3 < 1.6 and 1.1 < gpt_oss < qwen3
    # every expert gets at least one tile: with two tokens per expert on average, most of each tile is empty
    assert speed.tile_waste(512, 2 / 512, tile) > 10
    moe = speed.ModelSpeed(quant="Q4_K_M", n_layer=48, n_embd=2048, expert_params=1.8e9, expert_use=8 / 128)
    assert speed.expert_slowdown(moe, c, "metal") == pytest.approx(qwen3)
    assert speed.expert_slowdown(moe, c, "cuda") != pytest.approx(qwen3)


@pytest.mark.parametrize("name,arch,bandwidth", [("NVIDIA A100-SXM4-80GB", "8.0", 2039.0),
                                                ("NVIDIA H100 PCIe", "9.0", 2000.0),
                                                ("NVIDIA H100 80GB HBM3", "9.0", 3350.0),
                                                ("NVIDIA H200", "9.0", 4800.0), ("Tesla V100-SXM2-32GB", "7.0", 900.0)])
def test_a_smaller_file_decodes_faster_on_every_hbm_gpu(name: str, arch: str, bandwidth: float) -> None:
    """Decode reads the weights once per token, so at the same shape a 4-bit file (4.6 GB) must not be predicted
    slower than Q8_0 (8.5 GB) or F16 (16 GB), whatever the efficiency of each family on the GPU."""
    c = constants()
    key = speed.speed_backend("cuda", "nvidia", name, load_rules().resolve(Subject())["hbm_gpu_match"], arch)
    rates = []
    for quant, gib in (("Q4_K_M", 4.58), ("Q8_0", 7.95), ("F16", 14.96)):
        model = ms(quant, embd=0.5 * GIB, arch="llama")
        parts = [speed.Part(key, bandwidth, 300.0, gib * GIB - 0.5 * GIB, 1.0),
                 speed.Part("cpu", 50.0, 0.0, 0.5 * GIB, 0.0, threads=8)]
        rates.append(1.0 / speed.decode_seconds(parts, model, c))
    assert rates[0] > rates[1] > rates[2], (key, rates)


@pytest.mark.parametrize("n", [512, 2048, 8192])
@pytest.mark.parametrize("p", [1 / 256, 0.125, 0.5, 0.9, 1.0])
def test_tile_waste_stays_finite_for_long_batches_and_dense_routing(n: int, p: float) -> None:
    """The Binomial pmf is taken in log space: (1 - p)^n underflows at n x p in the thousands, which would zero the
    expected tiles. Routing nearly every token to every expert wastes next to nothing; every expert costs at least
    its tokens' share."""
    w = speed.tile_waste(n, p, 32)
    assert 0.99 < w < 40
    if p >= 0.5:
        assert w < 1.1


def test_a_dense_file_of_an_moe_counted_architecture_loses_the_moe_kernels() -> None:
    c = constants()
    counted = c.graph_kernels_n_used["granitehybrid"]
    moe = ms("Q4_K_M", arch="granitehybrid", n_expert_used=counted)
    dense = ms("Q4_K_M", arch="granitehybrid")
    assert (c.kernel_ratio(moe) - c.kernel_ratio(dense)) * c.graph_kernels_reference == pytest.approx(
        c.graph_kernels_moe_extra + counted - 1)


def test_quick_decode_is_an_upper_bound_on_a_hopper_gpu() -> None:
    """quick_decode prunes variants that cannot reach the minimum speed; on a Hopper GPU, whose current-build F16
    efficiency is above the plain CUDA entry's, it must still bound the full prediction."""
    m = gpu_machine("NVIDIA H100 80GB HBM3")
    size = int(15e9)
    memory = full_offload(size - 1.0 * GIB, 1.0 * GIB)
    # one layer and no context: nothing but the weights' traffic, which the bound must cover
    model = dataclasses.replace(ms("F16", 1.0 * GIB, arch="llama"), n_layer=1, kv_bytes_per_token=0.0)
    p = speed.predict(memory, m, 1.0, 8e9, model=model)
    assert speed.device_arch(m.gpus[0]).startswith("9")
    # the planner bounds the weights without the token-embedding table (a token reads one row of it)
    assert speed.quick_decode(size - GIB, 1.0, m) >= p.decode_tokens_per_s


def test_integrated_nvidia_gpus_have_their_own_prefill_entry() -> None:
    """A Jetson or DGX Spark shares a power-limited SoC's memory: its own prefill efficiency (rules/speed.toml
    cuda_igpu), lower than a discrete card's; decode falls back to the CUDA entry."""
    c = constants()
    assert speed.speed_backend("cuda", "nvidia", "NVIDIA GB10", (), "12.1", integrated=True) == "cuda_igpu"
    # a probe that saw no unified memory still knows them by name (rules/speed.toml igpu_match)
    discrete = gpu_machine()
    assert not discrete.unified
    assert speed.integrated_gpu(discrete, "NVIDIA GB10") and speed.integrated_gpu(discrete, "Orin (nvgpu)")
    assert not speed.integrated_gpu(discrete, "NVIDIA GeForce RTX 4090")
    assert c.prefill_eff("cuda_igpu", "k") < c.prefill_eff("cuda", "k")
    assert c.decode_eff("cuda_igpu", "k") == c.decode_eff("cuda", "k")


def test_attention_runs_at_the_f16_rate_whatever_the_weights() -> None:
    """Deep in the context, prefill is attention over F16 K and V (flash attention), so a 4-bit model's extra time
    per token from more context is what an F16 model's is: the same FLOPs at the same rate."""
    c = constants()
    gpu = [speed.Part("cuda", 1008.0, 330.0, 4 * GIB, 1.0, quant_tflops=660.0)]
    def extra(quant: str) -> float:
        m = ms(quant)
        return speed.prefill_seconds(gpu, 7e9, m, c, depth=16384) - speed.prefill_seconds(gpu, 7e9, m, c, depth=256)
    assert extra("Q4_K_M") == pytest.approx(extra("F16"))


def _facts_of(tmp_path, spec):
    from advisor.gguf.facts import read_gguf_facts
    from tests import ggufgen
    return read_gguf_facts(ggufgen.write(tmp_path / f"{spec.arch}.gguf", spec, sparse=True))


def test_sliding_window_layers_read_and_multiply_their_window_only(tmp_path) -> None:
    """Gemma 3 attends over a window of 1024 on five layers of six (llama.cpp llama_model::load_hparams:
    LLM_ARCH_GEMMA3 set_swa_pattern(6), the sixth layer full), and its iSWA cache holds window + ubatch cells
    (llama-kv-cache-iswa.cpp): deep in the context a token reads, and a prompt token multiplies, the whole context on
    2 layers of 12 and the window on the other 10. The expectation is worked out here from those rules."""
    from tests.ggufgen import Spec

    spec = Spec("gemma3", n_layer=12, n_embd=256, n_head=4, n_head_kv=2, head_dim=64, n_ff=512, n_vocab=600,
                sliding_window=1024, tied=True)
    model = speed.model_speed(_facts_of(tmp_path, spec))
    cell = 2 * (64 + 64) * 2  # 2 KV heads x (K + V head size) x 2 bytes (f16)
    flops = 2 * 4 * (64 + 64)  # QK and PV of 4 query heads, 2 FLOPs per multiply-add
    depth = 32768
    assert model.kv_read_bytes(depth) == (2 * depth + 10 * 1024) * cell
    assert model.attention_flops(depth) == (2 * depth + 10 * 1024) * flops
    # within the window every layer attends to the whole context
    assert model.kv_read_bytes(512) == 12 * 512 * cell


def test_attention_multiplies_at_the_query_heads_width(tmp_path) -> None:
    """Qwen3's query heads are wider than its embedding (Qwen3-32B: 64 heads x 128 = 8192 against 5120): QK and PV
    cost 2 x n_head x (key + value head size) per cell, not 4 x n_embd."""
    from tests.ggufgen import Spec

    spec = Spec("qwen3", n_layer=3, n_embd=128, n_head=4, n_head_kv=2, head_dim=64, n_ff=256, n_vocab=600)
    model = speed.model_speed(_facts_of(tmp_path, spec))
    assert model.attention_flops(1000) == 3 * 2 * 4 * (64 + 64) * 1000
    assert model.attention_flops(1000) == 2 * speed.ModelSpeed(n_layer=3, n_embd=128).attention_flops(1000)


def test_prefill_deep_in_context_slows_as_measured_on_the_h200() -> None:
    """This repository's H200 (tests/data/llama-bench/measured.csv, Llama 3.1 8B Q4_K_M, a 2026 build): pp512 at
    9434.8 t/s from an empty context and 6906.1 t/s 16384 tokens deep, a slowdown of 1.37. The predicted slowdown,
    with flash attention at rules/speed.toml's share of the F16 path, is within 10 % of it."""
    c = constants()
    h200 = [speed.Part("cuda_hbm_hopper", 4800.0, 989.0 * c.matrix_rate["hopper"]["f16"], 4.3 * GIB, 1.0,
                       quant_tflops=989.0 * c.matrix_rate["hopper"]["quant"])]
    model = speed.ModelSpeed(quant="Q4_K_M", n_layer=32, n_embd=4096, attention=((32, 0, 4096.0, 16384.0),))
    near = speed.prefill_seconds(h200, 7.0e9, model, c, depth=256)
    deep = speed.prefill_seconds(h200, 7.0e9, model, c, depth=16384 + 256)
    assert deep / near == pytest.approx(9434.8 / 6906.1, rel=0.10)


def test_an_apple_gpu_with_fewer_cores_computes_less() -> None:
    """An M1 Max comes with 24 or 32 GPU cores at one clock (Apple: 10.4 TFLOPS for 32): the probe's count scales
    the row's figure; without a count the row's own figure stands."""
    def machine(cores):
        profile = HardwareProfile(
            cpu=Cpu(model="Apple M1 Max", physical_cores=10, logical_cores=10, usable_cores=10, features=["neon"]),
            memory=Memory(total_bytes=64 * GIB, available_bytes=60 * GIB, usable_bytes=60 * GIB),
            gpus=[Gpu(index=0, vendor="apple", name="Apple M1 Max", backend="metal", memory_total_bytes=48 * GIB,
                      memory_free_bytes=48 * GIB, cores=cores, unified_memory=True)])
        return build_machine(profile, load_rules())
    assert machine(24).gpus[0].tflops == pytest.approx(10.4 * 24 / 32)
    assert machine(32).gpus[0].tflops == pytest.approx(10.4)
    assert machine(None).gpus[0].tflops == pytest.approx(10.4)


def test_a_purely_recurrent_model_has_no_attention(tmp_path) -> None:
    """Mamba layers keep a fixed-size state, not a KV cache (llama.cpp llama_memory_recurrent): deeper context adds
    neither reads nor attention FLOPs."""
    from tests.test_llamacpp_accuracy import RECURRENT_SPECS

    model = speed.model_speed(_facts_of(tmp_path, RECURRENT_SPECS["mamba"]))
    assert model.kv_read_bytes(32768) == 0 and model.attention_flops(32768) == 0


def test_only_tensor_core_geforce_figures_are_doubled() -> None:
    """GeForce RTX figures in rules/gpus.toml are the half-rate FP32-accumulate tensor ones (NVIDIA Ampere GA102
    whitepaper: RTX 3090 71 TFLOPS, 142 with FP16 accumulate); a GTX 1660 has no tensor cores and its figure (10
    TFLOPS of packed FP16 shaders) is what it computes at."""
    acc32 = load_rules().resolve(Subject())["fp32_accumulate_figure_match"]
    assert speed.name_matches("NVIDIA GeForce RTX 3090", acc32)
    assert speed.name_matches("NVIDIA GeForce RTX 4090 Laptop GPU", acc32)
    assert not speed.name_matches("NVIDIA GeForce GTX 1660 SUPER", acc32)
    assert not speed.name_matches("NVIDIA GeForce GTX 1080 Ti", acc32)
