"""A header-only Gemma 4 E4B GGUF with its real tensor inventory, for llama.cpp's memory plan on this CPU.

Shapes from google/gemma-4-E4B-it's text config (hidden 2560, 42 layers, 8 query heads of 256 on the sliding-window
layers and 512 on the full ones (every sixth), 2 KV heads, the last 18 layers reusing earlier layers' KV, 256
per-layer input values per layer, vocabulary 262144, feed-forward 10240, window 512, tied embeddings), the tensors
llama.cpp creates for it (src/models/gemma4.cpp load_arch_tensors) and the keys its converter writes
(conversion/gemma.py Gemma4Model.set_gguf_parameters). Types: token_embd Q6_K, the other matrices Q4_K, norms F32
(not the mixed Q4_K_M recipe: only the compute buffers and the KV cache are compared, and weights by total).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as T
from tests.ggufgen import add_vocab, finish_sparse, nbytes

E, LAYERS, HEADS, KV_HEADS, HEAD_SWA, HEAD_FULL = 2560, 42, 8, 2, 256, 512
FF, VOCAB, PER_LAYER, SHARED_KV, WINDOW = 10240, 262144, 256, 18, 512
ARCH = "gemma4"


def swa(il: int) -> bool:
    """Sliding-window layers: all but every sixth (config layer_types)."""
    return il % 6 != 5


def tensors() -> list[tuple[str, tuple[int, ...], T]]:
    out = [("token_embd.weight", (E, VOCAB), T.Q6_K),
           ("per_layer_token_embd.weight", (PER_LAYER * LAYERS, VOCAB), T.Q4_K),
           ("per_layer_model_proj.weight", (E, PER_LAYER * LAYERS), T.Q4_K),
           ("per_layer_proj_norm.weight", (PER_LAYER,), T.F32), ("output_norm.weight", (E,), T.F32),
           ("rope_freqs.weight", (HEAD_FULL // 2,), T.F32)]
    for il in range(LAYERS):
        d, b = (HEAD_SWA if swa(il) else HEAD_FULL), f"blk.{il}."
        out += [(b + "attn_norm.weight", (E,), T.F32), (b + "attn_q.weight", (E, d * HEADS), T.Q4_K),
                (b + "attn_k.weight", (E, d * KV_HEADS), T.Q4_K), (b + "attn_v.weight", (E, d * KV_HEADS), T.Q4_K),
                (b + "attn_output.weight", (d * HEADS, E), T.Q4_K), (b + "attn_q_norm.weight", (d,), T.F32),
                (b + "attn_k_norm.weight", (d,), T.F32), (b + "post_attention_norm.weight", (E,), T.F32),
                (b + "layer_output_scale.weight", (1,), T.F32), (b + "ffn_norm.weight", (E,), T.F32),
                (b + "ffn_gate.weight", (E, FF), T.Q4_K), (b + "ffn_up.weight", (E, FF), T.Q4_K),
                (b + "ffn_down.weight", (FF, E), T.Q4_K), (b + "post_ffw_norm.weight", (E,), T.F32),
                (b + "inp_gate.weight", (E, PER_LAYER), T.Q4_K), (b + "proj.weight", (PER_LAYER, E), T.Q4_K),
                (b + "post_norm.weight", (E,), T.F32)]
    return out


def write(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    w = gguf.GGUFWriter(path, ARCH)
    w.add_name("gemma-4-e4b-header")
    w.add_file_type(15)  # MOSTLY_Q4_K_M
    w.add_block_count(LAYERS)
    w.add_context_length(131072)
    w.add_embedding_length(E)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_FULL)
    w.add_value_length(HEAD_FULL)
    w.add_uint32(f"{ARCH}.attention.key_length_swa", HEAD_SWA)
    w.add_uint32(f"{ARCH}.attention.value_length_swa", HEAD_SWA)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_float32(f"{ARCH}.rope.freq_base_swa", 1e4)
    w.add_uint32(f"{ARCH}.rope.dimension_count", HEAD_FULL)
    w.add_uint32(f"{ARCH}.rope.dimension_count_swa", HEAD_SWA)
    w.add_sliding_window(WINDOW)
    w.add_array(f"{ARCH}.attention.sliding_window_pattern", [swa(i) for i in range(LAYERS)])
    w.add_uint32(f"{ARCH}.attention.shared_kv_layers", SHARED_KV)
    w.add_uint32(f"{ARCH}.embedding_length_per_layer_input", PER_LAYER)
    w.add_float32(f"{ARCH}.final_logit_softcapping", 30.0)
    w.add_uint32(f"{ARCH}.vocab_size", VOCAB)
    add_vocab(w, VOCAB)
    total = 0
    for name, shape, qtype in tensors():
        size = nbytes(shape, qtype)
        total += gguf.GGUFWriter.ggml_pad(size, w.data_alignment)
        w.add_tensor_info(name, tuple(reversed(shape)), np.dtype(np.float32), size, raw_dtype=qtype)
    finish_sparse(w, path, total)
    return path
