"""The speed model (advisor/planner/speed.py): the physics it must respect, with its constants read from
rules/speed.toml. Expected directions come from llama.cpp's own measurements (tests/data/llama-bench: e.g. RTX 4090
7B F16 pp512 11048 vs Q4_0 7980 t/s, PR 4766) and from how llama.cpp reads memory (one token-embedding row per
token, llama-graph.cpp build_inp_embd; KV cache read at every step)."""

from __future__ import annotations

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


def test_f16_prefill_is_not_slower_than_q4_0_on_a_gpu() -> None:
    m = gpu_machine()
    f16 = speed.predict(full_offload(13.5e9, 0.26e9), m, 1.0, 6.74e9, model=ms("F16", 0.26e9))
    q4 = speed.predict(full_offload(3.7e9, 0.07e9), m, 1.0, 6.74e9, model=ms("Q4_0", 0.07e9))
    assert f16.prefill_tokens_per_s >= q4.prefill_tokens_per_s
    # decode is memory-bound: 3.6x fewer bytes read is more than twice as fast
    assert q4.decode_tokens_per_s > 2 * f16.decode_tokens_per_s


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
    pre = speed.prefill_seconds([gpu, cpu], 8e9, model, c)
    assert pre == pytest.approx(speed.prefill_seconds([gpu], 8e9, model, c)
                                + speed.prefill_seconds([cpu], 8e9, model, c), rel=1e-9)


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
    assert speed.speed_backend("cuda", "nvidia", "NVIDIA GeForce RTX 4090", hbm) == "cuda"
    assert speed.speed_backend("vulkan", "nvidia", "NVIDIA GeForce RTX 3090", hbm) == "vulkan_nvidia"
    assert speed.speed_backend("cpu_x86", "none") == "cpu"
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
