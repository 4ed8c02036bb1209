"""Header-only GGUFs rebuilt from real GPU start-up logs (tests/data/gpu-logs/logs.jsonl).

For one llama.cpp entry this writes a GGUF with the entry's architecture, hyper-parameters, every tensor's name and
shape, and the tensor types the model really had, with a sparse (never written) data region of the real size; then
``advisor.gguf.facts.read_gguf_facts`` reads it back, so the estimator runs on the same facts as for a real file.

Where each part comes from:

- Hyper-parameters: the entry's ``hparams`` (llama.cpp's own ``print_info`` lines). What a log does not print (tied
  embeddings, the quantization recipe, a few config values) is in ``MODELS`` below, one line of evidence each.
- Tensor names and shapes: ``advisor.gguf.layout.tensor_inventory`` (gguf-py ``MODEL_TENSORS`` and llama.cpp's
  ``create_tensor`` calls); the few tensors it does not model (ChatGLM's fused QKV and up-projection, Phi-3-128k's
  rope factors, Llama-3.1's rope_freqs, DeepSeek-V3's q-LoRA and expert bias, 2024 Mixtral's per-expert tensors) are
  added here from llama.cpp ``src/llama-model.cpp`` ``load_tensors`` (cited per case).
- Tensor types: llama-quantize's recipe (``advisor.gguf.layout.assign_types``, src/llama-quant.cpp) for the entry's
  file type. ``type_counts(entry)`` parses the log's ``llama_model_loader: - type q4_K: N tensors`` lines and
  ``build`` checks that the recipe gives exactly those counts: the types are inferred, then proven against the log.

Never writes into the repository: callers pass a temporary directory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

import gguf
from advisor.gguf import layout as ql
from tests import ggufgen
from advisor.gguf.facts import ModelFacts, read_gguf_facts

CORPUS = Path(__file__).parent / "data" / "gpu-logs" / "logs.jsonl"
TYPE_LINE = re.compile(r"llama_model_loader: - type\s+(\w+):\s+(\d+) tensors")


def load_entries() -> list[dict[str, Any]]:
    """Every entry of the corpus copy, in file order."""
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def tensor_count(entry: dict[str, Any]) -> int | None:
    """The 'loaded meta data with K key-value pairs and N tensors' count, when the excerpt has it."""
    m = re.search(r"key-value pairs and (\d+) tensors", entry.get("excerpt", ""))
    return int(m.group(1)) if m else None


def type_counts(entry: dict[str, Any]) -> dict[str, int]:
    """{"Q4_K": 169, ...} from the excerpt's ``llama_model_loader: - type`` lines; {} when the log has none."""
    return {t.upper(): int(n) for t, n in TYPE_LINE.findall(entry.get("excerpt", ""))}


@dataclasses.dataclass(frozen=True)
class Arch:
    """The ``quant_layout.ArchFacts`` protocol, filled from a log entry."""

    name: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ff: int
    vocab_size: int
    tied_embeddings: bool
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_ff_expert: int = 0
    n_layer_dense_lead: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    tokenizer: str = "gpt2"


@dataclasses.dataclass(frozen=True)
class Model:
    """What the log does not print about an entry's model, each with its evidence."""

    quant: str  # llama-quantize file type (quant_layout.FTYPE_DEFAULT name)
    tied: bool  # no output.weight (the CPU_Mapped buffer is then exactly token_embd)
    why: str  # evidence for the values here
    extra: tuple[tuple[str, Any], ...] = ()  # Arch fields that the log does not print
    kv: tuple[tuple[str, Any], ...] = ()  # extra GGUF keys ({arch}. is prefixed)
    imatrix: bool = True
    # Tensor order in the file (it decides the mmapped buffers: CPU_Mapped / Metal_Mapped are file spans, see
    # advisor.gguf.estimate.mapped_spans). "quantize": llama-quantize since llama.cpp PR #9935 (2024-10-31), which
    # writes llama_model_loader::weights_map in weight_name_comparer order (src/llama-model-loader.h: layer-less
    # tensors first, then by layer number, by name within); "convert": files quantized before it kept the
    # converter's order: token_embd first, the layers in order, the output last.
    order: str = "quantize"


# Per entry: the file type and the facts the log leaves out. Config values cite the model's config.json on the Hub.
MODELS: dict[str, Model] = {
    "l02_qwen2_7b_rtx3060_ollama": Model(
        "Q4_K_M", False, "file type printed; Qwen2.5-7B has a separate lm_head (tie_word_embeddings false)"),
    "l03_qwen2vl3b_jina_cuda": Model(
        "Q8_0", True, "quant not printed: CPU_Mapped 315.30 MiB = token_embd 151936 x 2048 at Q8_0 (8.5 bpw), and "
        "Qwen2.5-VL-3B ties embeddings; n_ff 11008, vocab 151936 from its config.json",
        extra=(("n_ff", 11008), ("vocab_size", 151936))),
    "l04_qwen3_0.6b_strixhalo_rocm": Model("Q8_0", True, "file type printed; Qwen3-0.6B ties embeddings"),
    "l06_gptoss20b_vulkan_m2pro_partial": Model(
        "MXFP4_MOE", False, "file type printed, type lines not in the excerpt: the recipe is the one l07's "
        "counts prove for gpt-oss; the tensor count (459 = 24 x 19 + 3) is printed", extra=(("n_ff", 2880),)),
    "l07_gptoss120b_metal_m4max_lmstudio": Model("MXFP4_MOE", False, "file type and type counts printed"),
    "l09_chatglm9b_metal_m4_ollama": Model("Q4_0", False, "file type and type counts printed; Ollama's glm4 file "
                                           "dates from mid-2024 (convert order)", imatrix=False, order="convert"),
    "l10_phi3mini128k_metal_m4_ollama": Model(
        "Q4_0", False, "file type and type counts printed; the GGUF carries phi3.attention.sliding_window = 262144 "
        "(excerpt), which llama.cpp ignores ('Phi SWA is currently disabled')",
        kv=(("attention.sliding_window", 262144),), imatrix=False, order="convert"),
    "l11_gemma3_1b_vulkan_intel_uhd": Model(
        "Q8_0", True, "file type and type counts printed; Gemma ties embeddings",
        kv=(("attention.sliding_window", 512),)),
    "l13_qwen3moe235b_vulkan_strixhalo_partial": Model("Q3_K_S", False, "file type and type counts printed"),
    "l18_deepseekv3_mla_4gpu_cuda_ot": Model(
        "Q2_K", False, "UD-Q2_K_XL (unsloth dynamic): per-tensor types are not printed, so weights are not "
        "checked; MLA-era GGUF (n_head_kv 1, K 576, V 512 printed)",
        extra=(("n_layer_dense_lead", 3),)),
    "l19_qwen3moe30b_2gpu_cpu_experts": Model("Q4_K_M", False, "file type and type counts printed"),
    "l20_deepseekr1_671b_8x_mi250x_rocm_ollama": Model(
        "Q4_K_M", False, "ollama deepseek-r1:671b is Q4_K_M (ollama.com library page, ~404 GB); type counts not in "
        "the excerpt; DeepSeek-R1 config: 3 dense layers, n_ff 18432, expert ff 2048, 1 shared expert, q_lora 1536, "
        "qk_nope 128, qk_rope 64, v_head 128",
        extra=(("n_ff", 18432), ("n_ff_expert", 2048), ("n_expert_shared", 1), ("n_layer_dense_lead", 3),
               ("q_lora_rank", 1536), ("qk_nope_head_dim", 128), ("qk_rope_head_dim", 64), ("v_head_dim", 128))),
    "l23_mistral7b_sycl_arc_a770_ipexllm": Model("Q4_K_M", False, "file type and type counts printed"),
    "l24_llama31_8b_rtx2060_partial_ollama": Model("Q4_0", False, "file type and type counts printed; no imatrix "
        "(Q4_0 with an imatrix would make the first n/8 ffn_down Q4_1); the file's tensor order is not known (an "
        "Ollama registry file of July 2024): the layer-sorted order is assumed", imatrix=False),
    "l25_gemma7b_vulkan_rx6900xt_ngl0": Model("Q4_K_M", True, "file type and type counts printed; Gemma ties"),
    "l26_mixtral8x7b_metal_m3max_old": Model(
        "Q5_K_M", False, "file type and type counts printed (2024 file: one tensor per expert, f16 router)",
        order="convert"),
}


def arch_of(entry: dict[str, Any]) -> Arch:
    """The entry's architecture facts: its printed hparams, then ``MODELS``' extra values."""
    h = entry["hparams"]
    m = MODELS[entry["id"]]
    name = h["arch"].split()[0]
    extra = dict(m.extra)
    n_embd, n_head = int(h["n_embd"]), int(h["n_head"])
    n_head_kv = int(h.get("n_head_kv", n_head))
    hk = int(h.get("n_embd_head_k", n_embd // n_head))
    hv = int(h.get("n_embd_head_v", hk))
    values: dict[str, Any] = dict(
        name=name, n_layer=int(h["n_layer"]), n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, head_dim_k=hk,
        head_dim_v=hv, n_ff=int(h.get("n_ff", 0) or 0), vocab_size=int(h.get("n_vocab", 0) or 0),
        tied_embeddings=m.tied, n_expert=int(h.get("n_expert", 0) or 0),
        n_expert_used=int(h.get("n_expert_used", 0) or 0), n_ff_expert=int(h.get("n_ff_exp", 0) or 0),
        n_expert_shared=int(h.get("n_expert_shared", 0) or 0), kv_lora_rank=int(h.get("n_lora_kv", 0) or 0),
        q_lora_rank=int(h.get("n_lora_q", 0) or 0))
    if name == "deepseek2":
        values.update(qk_nope_head_dim=int(h.get("n_embd_head_k_mla", 192)) - 64, qk_rope_head_dim=64,
                      v_head_dim=int(h.get("n_embd_head_v_mla", hv)))
    values.update(extra)
    return Arch(**values)


# --------------------------------------------------------------------------------------------------------------------
# Inventories quant_layout does not have (names and shapes from llama.cpp src/llama-model.cpp load_tensors)


def _chatglm(a: Arch) -> list[ql.Tensor]:
    # LLM_ARCH_CHATGLM: fused attn_qkv {E, E + 2 E_gqa} with bias, ffn_up {E, 2 F} (gate and up fused), no ffn_gate.
    e, gqa = a.n_embd, a.n_head_kv * a.head_dim_k
    out = [ql.Tensor("token_embd.weight", (e, a.vocab_size)), ql.Tensor("output_norm.weight", (e,)),
           ql.Tensor("output.weight", (e, a.vocab_size))]
    for i in range(a.n_layer):
        p = f"blk.{i}."
        out += [ql.Tensor(p + "attn_norm.weight", (e,)), ql.Tensor(p + "attn_qkv.weight", (e, e + 2 * gqa)),
                ql.Tensor(p + "attn_qkv.bias", (e + 2 * gqa,)), ql.Tensor(p + "attn_output.weight", (e, e)),
                ql.Tensor(p + "ffn_norm.weight", (e,)), ql.Tensor(p + "ffn_up.weight", (e, 2 * a.n_ff)),
                ql.Tensor(p + "ffn_down.weight", (a.n_ff, e))]
    return out


def _deepseek2_qlora(a: Arch) -> list[ql.Tensor]:
    # LLM_ARCH_DEEPSEEK2 with q_lora_rank > 0 (V3/R1): attn_q_a/attn_q_a_norm/attn_q_b replace attn_q, and MoE layers
    # carry exp_probs_b {n_expert} (expert_weights_norm / sigmoid gating bias).
    e, h, x = a.n_embd, a.n_head, a.n_expert
    qk = a.qk_nope_head_dim + a.qk_rope_head_dim
    out = [ql.Tensor("token_embd.weight", (e, a.vocab_size)), ql.Tensor("output_norm.weight", (e,)),
           ql.Tensor("output.weight", (e, a.vocab_size))]
    for i in range(a.n_layer):
        p = f"blk.{i}."
        out += [ql.Tensor(p + "attn_norm.weight", (e,)), ql.Tensor(p + "attn_q_a_norm.weight", (a.q_lora_rank,)),
                ql.Tensor(p + "attn_kv_a_norm.weight", (a.kv_lora_rank,)),
                ql.Tensor(p + "attn_q_a.weight", (e, a.q_lora_rank)),
                ql.Tensor(p + "attn_q_b.weight", (a.q_lora_rank, h * qk)),
                ql.Tensor(p + "attn_kv_a_mqa.weight", (e, a.kv_lora_rank + a.qk_rope_head_dim)),
                ql.Tensor(p + "attn_kv_b.weight", (a.kv_lora_rank, h * (a.qk_nope_head_dim + a.v_head_dim))),
                ql.Tensor(p + "attn_output.weight", (h * a.v_head_dim, e)), ql.Tensor(p + "ffn_norm.weight", (e,))]
        if i < a.n_layer_dense_lead:
            out += [ql.Tensor(p + "ffn_gate.weight", (e, a.n_ff)), ql.Tensor(p + "ffn_up.weight", (e, a.n_ff)),
                    ql.Tensor(p + "ffn_down.weight", (a.n_ff, e))]
        else:
            f, s = a.n_ff_expert, a.n_ff_expert * a.n_expert_shared
            out += [ql.Tensor(p + "ffn_gate_inp.weight", (e, x)), ql.Tensor(p + "exp_probs_b.bias", (x,)),
                    ql.Tensor(p + "ffn_gate_exps.weight", (e, f, x)), ql.Tensor(p + "ffn_up_exps.weight", (e, f, x)),
                    ql.Tensor(p + "ffn_down_exps.weight", (f, e, x)), ql.Tensor(p + "ffn_gate_shexp.weight", (e, s)),
                    ql.Tensor(p + "ffn_up_shexp.weight", (e, s)), ql.Tensor(p + "ffn_down_shexp.weight", (s, e))]
    return out


def _mixtral_2024(a: Arch) -> list[ql.Tensor]:
    # 2024 Mixtral GGUFs (convert.py before the merged *_exps tensors, llama.cpp PR #6387): one 2-D tensor per expert,
    # blk.N.ffn_{gate,up,down}.E.weight, and the router blk.N.ffn_gate_inp.weight.
    e, f = a.n_embd, a.n_ff
    out = [ql.Tensor("token_embd.weight", (e, a.vocab_size)), ql.Tensor("output_norm.weight", (e,)),
           ql.Tensor("output.weight", (e, a.vocab_size))]
    for i in range(a.n_layer):
        p = f"blk.{i}."
        out += [ql.Tensor(p + "attn_norm.weight", (e,)), ql.Tensor(p + "attn_q.weight", (e, e)),
                ql.Tensor(p + "attn_k.weight", (e, a.n_head_kv * a.head_dim_k)),
                ql.Tensor(p + "attn_v.weight", (e, a.n_head_kv * a.head_dim_v)),
                ql.Tensor(p + "attn_output.weight", (e, e)), ql.Tensor(p + "ffn_norm.weight", (e,)),
                ql.Tensor(p + "ffn_gate_inp.weight", (e, a.n_expert))]
        for x in range(a.n_expert):
            out += [ql.Tensor(f"{p}ffn_gate.{x}.weight", (e, f)), ql.Tensor(f"{p}ffn_up.{x}.weight", (e, f)),
                    ql.Tensor(f"{p}ffn_down.{x}.weight", (f, e))]
    return out


def _mixtral_2024_types(tensors: list[ql.Tensor]) -> list[tuple[ql.Tensor, str]]:
    """The 2024 Q5_K_M recipe for per-expert Mixtral, read off the log's counts (l26: q5_K 833, q8_0 64, f16 32,
    q6_K 1, f32 65): llama-quant.cpp of that time gave attn_k/attn_v Q8_0 for n_expert == 8, output Q6_K, and the
    f16 router was left as converted (convert.py wrote ffn_gate_inp in f16)."""
    out = []
    for t in tensors:
        if len(t.shape) == 1:
            ty = "F32"
        elif "ffn_gate_inp" in t.name:
            ty = "F16"
        elif t.name.endswith(("attn_k.weight", "attn_v.weight")):
            ty = "Q8_0"
        elif t.name == "output.weight":
            ty = "Q6_K"
        else:
            ty = "Q5_K"
        out.append((t, ty))
    return out


def _extras(entry_id: str, a: Arch) -> list[ql.Tensor]:
    """Optional tensors a model has that quant_layout's inventory leaves out (all F32, 1-D)."""
    if entry_id == "l10_phi3mini128k_metal_m4_ollama":
        # Phi-3-128k: rope_factors_long/short {head_dim/2} (LLM_TENSOR_ROPE_FACTORS_*, TENSOR_NOT_REQUIRED)
        return [ql.Tensor("rope_factors_long.weight", (a.head_dim_k // 2,)),
                ql.Tensor("rope_factors_short.weight", (a.head_dim_k // 2,))]
    if entry_id == "l24_llama31_8b_rtx2060_partial_ollama":
        # Llama 3.1: rope_freqs {head_dim/2} (llama3 rope scaling; the 66th f32 tensor of the log)
        return [ql.Tensor("rope_freqs.weight", (a.head_dim_k // 2,))]
    return []


def file_order(typed: list[tuple[ql.Tensor, str]], order: str) -> list[tuple[ql.Tensor, str]]:
    """The tensors in the order the entry's file has them (Model.order)."""
    def layer(name: str) -> int:
        m = re.match(r"blk\.(\d+)\.", name)
        return int(m.group(1)) if m else -1

    if order == "quantize":  # weight_name_comparer: (layer or -1, name)
        return sorted(typed, key=lambda x: (layer(x[0].name), x[0].name))
    if order == "convert":  # token_embd first, the layers in order, the rest (output_norm, output) last
        def key(x: tuple[ql.Tensor, str]) -> tuple[int, int]:
            n = x[0].name
            return (0, 0) if n.startswith("token_embd") else (1, layer(n)) if layer(n) >= 0 else (2, 0)
        return sorted(typed, key=key)
    raise ValueError(f"unknown tensor order {order!r}")


def typed_tensors(entry: dict[str, Any]) -> list[tuple[ql.Tensor, str]]:
    """(tensor, ggml type name) of every tensor of the entry's model."""
    a = arch_of(entry)
    m = MODELS[entry["id"]]
    if entry["id"] == "l26_mixtral8x7b_metal_m3max_old":
        return _mixtral_2024_types(_mixtral_2024(a))
    if a.name in ("chatglm",) or (a.name == "deepseek2" and a.q_lora_rank):
        tensors = _chatglm(a) if a.name == "chatglm" else _deepseek2_qlora(a)
        tensors.sort(key=ql._sort_key)
        typed = _recipe(a, tensors, m)
    else:
        typed = ql.assign_types(a, m.quant, imatrix=m.imatrix)
    return typed + [(t, "F32") for t in _extras(entry["id"], a)]


def _recipe(a: Arch, tensors: list[ql.Tensor], m: Model) -> list[tuple[ql.Tensor, str]]:
    """quant_layout's recipe over an inventory it does not build itself (same rules, same counters)."""
    return ql.assign_types_to(a, tensors, m.quant, imatrix=m.imatrix)


def counts_of(typed: list[tuple[ql.Tensor, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, ty in typed:
        out[ty] = out.get(ty, 0) + 1
    return out


def _write_kv(w: gguf.GGUFWriter, a: Arch, entry: dict[str, Any], m: Model) -> None:
    h = entry["hparams"]
    arch = a.name
    w.add_name(entry["id"])
    w.add_block_count(a.n_layer)
    w.add_context_length(int(h.get("n_ctx_train", 4096)))
    w.add_embedding_length(a.n_embd)
    w.add_feed_forward_length(a.n_ff)
    w.add_head_count(a.n_head)
    w.add_head_count_kv(a.n_head_kv)
    w.add_key_length(a.head_dim_k)
    w.add_value_length(a.head_dim_v)
    w.add_uint32(f"{arch}.vocab_size", a.vocab_size)  # LLM_KV_VOCAB_SIZE: no token list needed in a header
    if a.n_expert:
        w.add_expert_count(a.n_expert)
        w.add_expert_used_count(a.n_expert_used)
        if a.n_ff_expert:
            w.add_expert_feed_forward_length(a.n_ff_expert)
        if a.n_expert_shared:
            w.add_expert_shared_count(a.n_expert_shared)
    if a.kv_lora_rank:
        w.add_uint32(f"{arch}.attention.kv_lora_rank", a.kv_lora_rank)
        w.add_uint32(f"{arch}.attention.q_lora_rank", a.q_lora_rank)
    if h.get("n_embd_head_k_mla"):  # MLA-era GGUF (attn_kv_b split, llama.cpp PR #12801): print_info shows them
        w.add_uint32(f"{arch}.attention.key_length_mla", int(h["n_embd_head_k_mla"]))
        w.add_uint32(f"{arch}.attention.value_length_mla", int(h["n_embd_head_v_mla"]))
    if arch == "gpt-oss":
        w.add_uint32(f"{arch}.attention.sliding_window", int(h.get("n_swa", 128)))
    for key, value in m.kv:
        w.add_uint32(f"{arch}.{key}", int(value))


def build(entry: dict[str, Any], directory: str | os.PathLike[str]) -> tuple[ModelFacts, dict[str, int]]:
    """Write the entry's header-only GGUF into ``directory`` and read its facts back.

    Returns (facts, the recipe's type counts). Raises ValueError when the recipe's counts differ from the counts the
    log printed: the types would then be a guess, not an inference.
    """
    a = arch_of(entry)
    m = MODELS[entry["id"]]
    typed = typed_tensors(entry)
    ours = counts_of(typed)
    logged = type_counts(entry)
    if logged and ours != logged:
        raise ValueError(f"{entry['id']}: recipe {m.quant} gives {ours}, the log printed {logged}")
    path = Path(directory) / f"{entry['id']}.gguf"
    w = gguf.GGUFWriter(path, a.name)
    _write_kv(w, a, entry, m)
    total = 0
    for t, ty in file_order(typed, m.order):
        qtype = gguf.GGMLQuantizationType[ty]
        nb = ql.nbytes(ty, t.shape)
        total += gguf.GGUFWriter.ggml_pad(nb, w.data_alignment)
        w.add_tensor_info(t.name, tuple(reversed(t.shape)), np.dtype(np.float32), nb, raw_dtype=qtype)
    ggufgen.finish_sparse(w, path, total)  # the data region is a hole of the real size
    return read_gguf_facts(path), ours


# --------------------------------------------------------------------------------------------------------------------
# Settings of an entry and its reported buffers, in the estimator's terms

BACKEND_OF = {"CUDA": "cuda", "ROCm": "rocm", "Metal": "metal", "Vulkan": "vulkan", "SYCL": "sycl"}
# Representative build per log era when the excerpt prints no "build: N" line (log_format of each entry).
ERA_BUILD = {"old": 2400, "early-2025": 4700, "mid-2025": 5500, "current": None}

# Layer split per GPU. llama.cpp splits by tensor_split, or by each device's free memory at load time (llama_model::load_tensors);
# l18 printed its free memory; l19 and l20 did not (l20's Ollama passed its own split), so their split is read off
# the per-device KV lines (KV per layer is uniform there): the model-buffer lines are still an independent check.
TENSOR_SPLIT: dict[str, tuple[tuple[float, ...], str]] = {
    "l18_deepseekv3_mla_4gpu_cuda_ot": ((29249, 23633, 23698, 48280), "free MiB per device printed by the log"),
    "l19_qwen3moe30b_2gpu_cpu_experts": ((12, 37), "KV lines: CUDA0 384 MiB = 12 layers, CUDA1 36 layers + output"),
    "l20_deepseekr1_671b_8x_mi250x_rocm_ollama": (
        (8, 8, 8, 8, 8, 8, 7, 7), "KV lines: 640 MiB per layer -> 8/8/8/8/8/8/7/6 layers + output"),
}
# Expert placement the log's command line sets: --n-cpu-moe K (l06) or -ot "exps=CPU" for every layer (l19).
CPU_MOE = {"l06_gptoss20b_vulkan_m2pro_partial": 14, "l19_qwen3moe30b_2gpu_cpu_experts": -1}


# Builds of Ollama's own runner (it vendors a pinned llama.cpp): the excerpt prints none, so the era comes from the
# log's date against the llama.cpp change it decides (advisor.gguf.estimate MASK_F16_SINCE, PR #23764 of 2026-05-27).
BUILD_OF: dict[str, tuple[int, str]] = {
    # Ollama runs the llama.cpp it vendors at a pinned commit (Makefile.sync FETCH_HEAD), months behind upstream:
    # these logs' host compute buffers hold one embedding input, so that commit predates PR #18550 (January 2026,
    # estimate.EMBD_INPUT_SINCE); it postdates the mid-2025 cache changes their KV lines show.
    "l02_qwen2_7b_rtx3060_ollama": (7600, "Ollama runner, log of 2026-05-05: before PR #18550"),
    "l09_chatglm9b_metal_m4_ollama": (7600, "Ollama 0.17.0 runner, 2026-02-25: before PR #18550"),
    "l10_phi3mini128k_metal_m4_ollama": (7600, "Ollama 0.17.0 runner, 2026-02-25: before PR #18550"),
}


def build_number(entry: dict[str, Any]) -> int | None:
    if entry["id"] in BUILD_OF:
        return BUILD_OF[entry["id"]][0]
    m = re.search(r"build: (\d+)", entry.get("excerpt", "")) or re.search(r"build (\d+)", entry.get("date", ""))
    if m:
        return int(m.group(1))
    return ERA_BUILD[entry["log_format"].split(":")[0]]


def settings_of(entry: dict[str, Any]) -> Any:
    """advisor.gguf.estimate.Settings reproducing the entry's run."""
    from advisor.gguf.estimate import Settings

    st, dev = entry["settings"], entry["device"]
    fa_text = str(st.get("flash_attn_resolved", st.get("flash_attn", 0)))
    fa = "on" if fa_text in ("1", "enabled", "auto->enabled", "True") else "off"
    off = str(st.get("offloaded_layers", ""))
    if "/" in off:
        x, y = (int(v) for v in off.split("/"))
        ngl = -1 if x == y else x
    else:
        ngl = -1
    n_seq = int(st.get("n_seq_max", 1))
    backend = BACKEND_OF[re.match(r"\w+", dev["backend"]).group(0)]  # type: ignore[union-attr]
    split = TENSOR_SPLIT.get(entry["id"])
    return Settings(n_ctx=int(st["n_ctx"]), n_batch=int(st.get("n_batch", 2048)), n_ubatch=int(st.get("n_ubatch", 512)),
                    n_parallel=n_seq, kv_unified=str(st.get("kv_unified", "false")) == "true",
                    flash_attn=fa, cache_type_k=st.get("type_k", "f16"), cache_type_v=st.get("type_v", "f16"),
                    n_gpu_layers=ngl, n_gpus=int(dev.get("n_gpus", 1)), tensor_split=split[0] if split else None,
                    swa_full=bool(st.get("swa_full", False)), backend=backend,  # type: ignore[arg-type]
                    n_cpu_moe=CPU_MOE.get(entry["id"], 0), llama_build=build_number(entry),
                    tensor_overrides="override_tensor" in st)


KEY = re.compile(r"^(?P<dev>\S+) (?P<kind>model|KV|compute|output) buffer MiB")
KIND = {"model": "weights", "KV": "kv_cache", "compute": "compute", "output": "output"}


def device_of(llama_dev: str) -> str:
    """llama.cpp's buffer owner -> the estimator's device: CUDA0 -> gpu0, Metal(_Mapped) -> gpu0, CUDA_Host -> host,
    CPU/CPU_Mapped -> cpu."""
    if llama_dev.endswith("_Host"):
        return "host"
    if llama_dev.startswith("Metal"):
        return "gpu0"
    m = re.match(r"^(CUDA|ROCm|Vulkan|SYCL)(\d+)$", llama_dev)
    if m:
        return f"gpu{m.group(2)}"
    if llama_dev in ("CPU", "CPU_Mapped"):
        return "cpu"
    raise ValueError(f"unknown llama.cpp buffer owner {llama_dev!r}")


def reported(entry: dict[str, Any]) -> dict[tuple[str, str], float]:
    """{(device, buffer): bytes} summed over the entry's reported buffers (a split Metal model has one mapped
    buffer per file; an iSWA cache has one KV buffer per cache kind)."""
    out: dict[tuple[str, str], float] = {}
    for key, mib in entry["reported"].items():
        m = KEY.match(key)
        if not m:
            continue
        k = (device_of(m.group("dev")), KIND[m.group("kind")])
        out[k] = out.get(k, 0.0) + float(mib) * 2**20
    return out


# Targets: KV and model buffers 0.5 % (the arithmetic of sizes), compute 10 % or 2 MiB on a GPU, 5 % or 2 MiB on the
# host/CPU side (the graph's working set); the output buffer is printed for information.
TARGET = {"kv_cache": 0.005, "weights": 0.005, "compute": 0.10}
HOST_COMPUTE_TARGET = 0.05
COMPUTE_FLOOR = 2 * 2**20  # "or 2 MiB": small buffers are dominated by allocator granularity
LOG_ROUNDING = 0.006 * 2**20  # the log prints MiB with two decimals


def target_of(device: str, buffer: str) -> float | None:
    if buffer == "compute" and not device.startswith("gpu"):
        return HOST_COMPUTE_TARGET
    return TARGET.get(buffer)


def floor_of(buffer: str) -> float:
    return COMPUTE_FLOOR if buffer == "compute" else LOG_ROUNDING


def within(ours: float, theirs: float, tol: float, buffer: str = "") -> bool:
    return abs(ours - theirs) <= max(tol * theirs, floor_of(buffer))


def rows(entry: dict[str, Any], est: Any) -> list[tuple[str, str, float, float, float | None]]:
    """[(device, buffer, ours, reported, target)] for every buffer the entry reports."""
    by_dev = {d.device: d for d in est.devices}
    out = []
    for (dev, buf), theirs in sorted(reported(entry).items()):
        d = by_dev.get(dev)
        ours = float(getattr(d, f"{buf}_bytes")) if d is not None else 0.0
        out.append((dev, buf, ours, theirs, target_of(dev, buf)))
    return out
