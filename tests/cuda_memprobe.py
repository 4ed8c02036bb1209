"""llama.cpp's own memory plan on a CUDA GPU (an H200), recorded, against the estimator: shared by
tests/test_cuda_memprobe.py and benchmarks/cuda_memprobe.py.

tests/data/llamacpp-cuda/h200-memprobe.jsonl was measured by benchmarks/device/measure.py on one NVIDIA H200 with
the llama.cpp llama-cpp-python 0.3.36 vendors (CUDA 13, sm_90): catalog models (MEM_MODELS there) rebuilt
header-only with their real tensor inventories (tests/gguf_from_catalog.py), under each llama-server setting of
MEM_SETTINGS, sized by llama.cpp's no_alloc dry run (the pass its --fit makes; benchmarks/device/memprobe.cpp), in
bytes per buffer type. Rows whose model this llama.cpp could not load from our header-only file carry an "error".
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from advisor.gguf.estimate import Settings, estimate
from advisor.gguf.facts import read_gguf_facts
from tests import gemma4_header, ggufgen, gguf_from_catalog
from tests.ggufgen import Spec, T
from tests.gguf_from_log import within

DATA = Path(__file__).resolve().parent / "data" / "llamacpp-cuda" / "h200-memprobe.jsonl"
#: The same cases on this project's 2-vCPU machine, no GPU (the same binary; -ngl and --n-cpu-moe have nothing to
#: offload to): every architecture's weights and KV, and the CPU compute buffer.
DATA_CPU = Path(__file__).resolve().parent / "data" / "llamacpp-cpu" / "memprobe-cpu.jsonl"
#: Extra H200 cases (benchmarks/device/cases-h200b.txt): ubatch, -ngl and stream series, and the MoE models with
#: GGML_CUDA_DISABLE_FUSION=1. Labels are model|quant|environment|flags (spaces in the flags as _).
DATA_CASES = Path(__file__).resolve().parent / "data" / "llamacpp-cuda" / "h200-cases.jsonl"
#: Small generated models (SPECS) whose attention phase is the compute buffer's peak at long contexts, on the H200
#: (benchmarks/device/spec_cases.py) and on this project's CPU (the same llama-memprobe, -ngl 0). Labels are
#: spec|flags (spaces in the flags as _).
DATA_SPECS = Path(__file__).resolve().parent / "data" / "llamacpp-cuda" / "h200-specs.jsonl"
DATA_SPECS_CPU = Path(__file__).resolve().parent / "data" / "llamacpp-cpu" / "specs-cpu.jsonl"
#: The attention block's live set with flash attention, each of its graph-order terms leading alone in one generated
#: shape (FA_ORDER_SPECS), from llama.cpp's plan with the host-side inputs left out of the buffer (README.md there).
#: Labels are spec|flags.
DATA_FA_ORDER = Path(__file__).resolve().parent / "data" / "llamacpp-cuda" / "fa-order-oracle.jsonl"
#: Gemma 4 E4B (tests/gemma4_header.py), outside the catalog, on this project's CPU. Labels are gemma4-e4b|flags.
DATA_GEMMA4_CPU = Path(__file__).resolve().parent / "data" / "llamacpp-cpu" / "gemma4-cpu.jsonl"
#: name -> spec: small vocabularies and FFNs, so that at 16384-65536 cells the attention phase with flash attention
#: (the f16 mask, Q, K, V and the output) is the peak; one with as many KV heads as query heads, one with GQA.
SPECS = {
    "mha-h8-d128": Spec("llama", n_layer=2, n_embd=1024, n_head=8, n_head_kv=8, n_ff=512, n_vocab=1000,
                        wtype=T.F16),
    "gqa-h16-kv4-d64": Spec("llama", n_layer=2, n_embd=1024, n_head=16, n_head_kv=4, n_ff=512, n_vocab=1000,
                            wtype=T.F16),
}
#: name -> spec for DATA_FA_ORDER: a 512-token vocabulary and a 128-wide FFN keep the logits and FFN phases below
#: the attention block, and the widths make one term of its live set lead (E = n_embd, Hq/Hk/Hv = heads x 128):
#: GQA with 16 query heads over 1024 (Q multiplied and roped, 2E + 2Hq), MHA with 24 heads over 4096 (V and K
#: multiplied, 2E + Hq + Hk + Hv), MHA with 8 heads over 512 (K roped, wider than E: 2E + Hq + Hv + 2Hk).
FA_ORDER_SPECS = {
    "fa-q-roped": Spec("llama", n_layer=2, n_embd=1024, n_head=16, n_head_kv=2, head_dim=128, n_ff=128, n_vocab=512,
                       wtype=T.F16),
    "fa-kv-made": Spec("llama", n_layer=2, n_embd=4096, n_head=24, n_head_kv=24, head_dim=128, n_ff=128,
                       n_vocab=512, wtype=T.F16),
    "fa-k-roped": Spec("llama", n_layer=2, n_embd=512, n_head=8, n_head_kv=8, head_dim=128, n_ff=128, n_vocab=512,
                       wtype=T.F16),
}
#: The switch that turns off the CUDA fusions (ggml-cuda.cu: GGML_CUDA_DISABLE_FUSION).
NO_FUSION = "GGML_CUDA_DISABLE_FUSION=1"

#: label -> llama-server flags; "{half}" is half the layers, "{all}" every layer (MoE models only).
MEM_SETTINGS: dict[str, str] = {
    "c4096": "-c 4096 -np 1 -fa on -ngl 999",
    "c4096-fa-off": "-c 4096 -np 1 -fa off -ngl 999",
    "c32768-np4-kvu": "-c 32768 -np 4 -kvu -fa on -ngl 999",
    "c32768-np4-kvu-fa-off": "-c 32768 -np 4 -kvu -fa off -ngl 999",
    "c16384-np4": "-c 16384 -np 4 -fa on -ngl 999",
    "c8192-ub2048": "-c 8192 -np 1 -b 2048 -ub 2048 -fa on -ngl 999",
    "c8192-half": "-c 8192 -np 1 -fa on -ngl {half}",
    "c8192-half-fa-off": "-c 8192 -np 1 -fa off -ngl {half}",
    "c8192-ub256-fa-off": "-c 8192 -np 1 -ub 256 -fa off -ngl 999",
    "c16384-q8": "-c 16384 -np 1 -ctk q8_0 -ctv q8_0 -fa on -ngl 999",
    "c131072": "-c 131072 -np 1 -fa on -ngl 999",
    "c4096-ngl0": "-c 4096 -np 1 -fa on -ngl 0",
    "c8192-cpu-moe": "-c 8192 -np 1 -fa on -ngl 999 --n-cpu-moe {all}",
}

#: Buffers out of target: (model, setting or "*", device, buffer) -> (|error| bound, reason).
MISSES: dict[tuple[str, str, str, str], tuple[float, str]] = {
    ("qwen3-30b-a3b", "c8192-half", "gpu0", "compute"): (
        0.13, "MoE on the GPU with ggml-cuda's fusions and half the layers on the CPU, where the allocator replay "
              "does not serve (two devices): the phases give V + E, 300.75 MiB, against 345.26 (the fused top-k "
              "and weighted-sum dependencies lift the logits, as the replay shows for the single-device cases)"),
    ("deepseek-coder-v2-lite-instruct", "c8192-half-fa-off", "gpu0", "compute"): (
        0.27, "DeepSeek-V2-Lite with half its layers on the CPU, without flash attention: 391.38 MiB against the "
              "phases' 288.00 (two devices: the allocator replay, exact at full offload, does not serve)"),
    ("deepseek-coder-v2-lite-instruct", "c8192-cpu-moe", "gpu0", "compute"): (
        0.15, "every expert on the CPU: 15 % over (275.12 MiB against 239.51), the op-offload term (one CPU expert "
              "tensor plus one layer's MoE activations) overcounting this shared-expert layout, as llama-4-scout"),
    ("deepseek-coder-v2-lite-instruct", "*", "host", "compute"): (
        0.51, "layers on the CPU side (half, -ngl 0): 6-12 MiB more than inputs + masks, as phi-4-mini and "
              "codegemma (the CPU layers' attention operands). With flash attention forced on, its K 192 / V 128 "
              "heads have no CUDA kernel and the host holds one layer's K and V views: modelled, exact"),
    ("phi-4-mini-instruct", "c8192-half-fa-off", "gpu0", "compute"): (
        0.11, "partial offload without flash attention: 472.31 MiB against 424.00 (10.2 %), the only phi3 case "
              "out of target; not identified"),
    ("phi-4-mini-instruct", "*", "host", "compute"): (
        0.28, "layers on the CPU side (partial or -ngl 0): 6 MiB (E floats per token) more than inputs + masks"),
    ("codegemma-1.1-7b-it", "*", "host", "compute"): (
        0.39, "layers on the CPU side (partial or -ngl 0): 10 MiB more than inputs + masks (MHA, 16 KV heads of "
              "256: the CPU layers' attention operands)"),
    ("granite-4.0-h-tiny", "*", "gpu0", "compute"): (
        0.19, "hybrid Mamba2 MoE on the GPU: 11-18 % under (241.40 MiB = 123.6k floats per token at ub 512 and "
              "2048; 205.00 MiB with GGML_CUDA_DISABLE_FUSION=1, 3 % from ours): the fused MoE reduction, as for "
              "qwen3-30b-a3b"),
    ("granite-4.0-h-tiny", "*", "host", "compute"): (
        0.75, "recurrent layers on the CPU side (partial or -ngl 0): about 12.3k floats per token more than "
              "inputs + masks, at ub 256 to 2048 and with 1 or 4 sequences (h200-cases.jsonl), so a per-token "
              "working set of the SSM ops, which stay on the CPU because the state is not a weight (no op "
              "offload); which of their tensors is not identified"),
    ("qwen3.5-9b", "*", "host", "compute"): (
        0.30, "as granite-4.0-h-tiny: gated delta-net layers on the CPU side, about 4.2k floats per token more "
              "than inputs + masks at every ubatch and sequence count"),
    ("qwen3.5-35b-a3b", "*", "host", "compute"): (
        0.51, "as granite-4.0-h-tiny: gated delta-net layers on the CPU side, about 6.2k floats per token more"),
    ("qwen3-next-80b-a3b-instruct", "*", "host", "compute"): (
        0.51, "as qwen3.5-35b-a3b (same linear-attention shapes): 12.11 MiB more"),
    ("qwen3-next-80b-a3b-instruct", "*", "gpu0", "compute"): (
        0.28, "131072 cells with flash attention: 414.75 MiB against 304.75 (26.5 %; the other contexts are in "
              "target, so an attention-phase tensor that grows with the cells is missing for this hybrid); and "
              "-ngl 0 at ub 2048, 12 % under (the op-offloaded output phase)"),
    ("llama-4-scout-17b-16e-instruct", "*", "gpu0", "compute"): (
        0.15, "experts on the CPU side (half the layers or --n-cpu-moe): 13-15 % over; the op-offload term "
              "(one CPU expert tensor plus one layer's MoE activations) overcounts this shared-expert layout"),
}


#: CPU-recording misses (compute buffer, this machine's CPU backend): (model, setting or "*") -> (bound, reason).
CPU_MISSES: dict[tuple[str, str], tuple[float, str]] = {
    ("qwen3-next-80b-a3b-instruct", "*"): (0.10, "9.4 % under with 4 unified streams of 32768 cells: the mask "
                                                 "region (16384 floats per token) stays below the logits "
                                                 "(traced V + 3E + mask + 7)"),
}


def settings_of(flags: list[str], gpu: bool = True) -> Settings:
    """advisor Settings for llama-server flags (the subset MEM_SETTINGS uses), with one CUDA GPU or none. The dry
    run loads without mmap (LLAMA_LOAD_MODE_NONE), so CPU weights are their tensors, not a file span."""
    kw: dict[str, Any] = {"backend": "cuda" if gpu else None, "n_gpus": 1 if gpu else 0, "n_parallel": 1,
                          "mmap": False, "kv_unified": False}
    it = iter(flags)
    ints = {"-c": "n_ctx", "-np": "n_parallel", "-b": "n_batch", "-ub": "n_ubatch", "--n-cpu-moe": "n_cpu_moe"}
    for f in it:
        if f in ("-kvu", "-nkvo", "--swa-full"):
            kw[{"-kvu": "kv_unified", "-nkvo": "offload_kqv", "--swa-full": "swa_full"}[f]] = f != "-nkvo"
            continue
        v = next(it)
        if f in ints:
            kw[ints[f]] = int(v)
        elif f == "-ngl":
            kw["n_gpu_layers"] = -1 if int(v) >= 999 else int(v)
        elif f == "-fa":
            kw["flash_attn"] = v
        elif f in ("-ctk", "-ctv"):
            kw["cache_type_k" if f == "-ctk" else "cache_type_v"] = v
        elif f != "-m":
            raise ValueError(f"flag {f} not handled")
    return Settings(**kw)


def flags_of(model_id: str, setting: str, n_layer: int) -> list[str]:
    return MEM_SETTINGS[setting].format(half=n_layer // 2, all=n_layer).split()


def device_of(buft: str) -> str:
    if buft.endswith("_Host"):
        return "host"
    return "gpu" + buft[4:] if buft.startswith("CUDA") else "cpu"


def measured(row: dict[str, Any]) -> dict[tuple[str, str], int]:
    """{(device, buffer): bytes}. Weights and KV in host memory count as the CPU's whatever buffer type holds them
    (without mmap CPU weights land in CUDA_Host; the estimator's "cpu" device is CPU_Mapped, CPU and CPU_REPACK)."""
    out: dict[tuple[str, str], int] = {}
    for b in row["buffers"]:
        dev = device_of(b["buft"])
        for kind, key in (("model", "weights"), ("context", "context"), ("compute", "compute")):
            where = "cpu" if dev == "host" and key != "compute" else dev
            if b[kind]:
                out[(where, key)] = out.get((where, key), 0) + b[kind]
    return out


def ours(est: Any) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for d in est.devices:
        for key, val in (("weights", d.weights_bytes), ("context", d.kv_cache_bytes + d.recurrent_bytes),
                         ("compute", d.compute_bytes)):
            if val:
                out[(d.device, key)] = val
    return out


def target(dev: str, buf: str) -> float:
    """benchmarks/gpu_logs.py's targets: weights and KV 0.5 %, compute 10 % or 2 MiB on a GPU, 5 % or 2 MiB on the
    host."""
    if buf == "compute":
        return 0.10 if dev.startswith("gpu") else 0.05
    return 0.005


def rows(data: Path = DATA) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.read_text().splitlines() if line.startswith("{")]


def miss_of(model_id: str, setting: str, dev: str, buf: str) -> tuple[float, str] | None:
    return MISSES.get((model_id, setting, dev, buf)) or MISSES.get((model_id, "*", dev, buf))


def parse_label(label: str) -> tuple[str, str, str, str]:
    """(model, quant, setting, environment): a MEM_SETTINGS name, or for the extra cases the flags themselves."""
    parts = label.split("|")
    if len(parts) == 4:
        return parts[0], parts[1], " ".join(flag_words(parts[3])), parts[2]
    return parts[0], parts[1], parts[2], ""


def flag_words(text: str) -> list[str]:
    """"-c_4096_-ctk_q8_0_-kvu" -> the flags: each starts with "-", its value (which may hold "_") follows the
    first "_"."""
    return [w for i, piece in enumerate(text.split("_-")) for w in ("-" * (i > 0) + piece).split("_", 1)]


def compare(row: dict[str, Any], model_dir: Path, gpu: bool = True) -> list[tuple[str, str, int, int, bool]]:
    """[(device, buffer, ours, llama.cpp's, within target)] for one recorded case (``gpu``: of the H200 file)."""
    model_id, quant, setting, env = parse_label(row["label"])
    path = model_dir / f"{model_id}-{quant}.gguf"
    if not path.exists():
        gguf_from_catalog.write_any_quant(path, model_id, quant)
    facts = read_gguf_facts(path)
    flags = setting.split() if setting.startswith("-") else flags_of(model_id, setting, facts.n_layer)
    s = dataclasses.replace(settings_of(flags, gpu), cuda_fusion=NO_FUSION not in env)
    return _compared(estimate(facts, s), row)


def _compared(est: Any, row: dict[str, Any]) -> list[tuple[str, str, int, int, bool]]:
    """[(device, buffer, ours, llama.cpp's, within target)] of an estimate against a recorded row."""
    mine, theirs = ours(est), measured(row)
    out = []
    for dev, buf in sorted(set(mine) | set(theirs)):
        o, t = mine.get((dev, buf), 0), theirs.get((dev, buf), 0)
        out.append((dev, buf, o, t, within(o, t, target(dev, buf), "compute" if buf == "compute" else "kv_cache")))
    return out


def compare_gemma4(row: dict[str, Any], model_dir: Path) -> list[tuple[str, str, int, int, bool]]:
    """compare() for a DATA_GEMMA4_CPU case (CPU only)."""
    path = model_dir / "gemma4-e4b.gguf"
    if not path.exists():
        gemma4_header.write(path)
    flags = flag_words(row["label"].split("|")[1])
    return _compared(estimate(read_gguf_facts(path), settings_of(flags, False)), row)


def compare_spec(row: dict[str, Any], model_dir: Path, gpu: bool = True) -> list[tuple[str, str, int, int, bool]]:
    """compare() for a SPECS case: the model is generated (header-only), not taken from the catalog."""
    name, flags = row["label"].split("|")
    path = model_dir / f"{name}.gguf"
    if not path.exists():
        ggufgen.write(path, SPECS[name], sparse=True)
    return _compared(estimate(read_gguf_facts(path), settings_of(flags.replace("_", " ").split(), gpu)), row)
