"""Tensor inventories of the architectures added for the 2025 models (advisor/gguf/layout.py), against llama.cpp's
own tensor lists (src/models/{qwen3next,glm4-moe,deepseek2,granite-hybrid,gemma3n,llama4}.cpp in the llama.cpp
vendored by llama-cpp-python 0.3.36) and the publishers' parameter counts; and the estimator facts built from them
(advisor/catalog/facts.py: hybrid recurrent layers, Gemma 3n's shared KV layers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor.catalog.facts import compact_catalog_facts, facts_from_catalog
from advisor.catalog.load import load_catalog
from advisor.gguf import layout
from advisor.gguf.estimate import Settings, estimate

ROOT = Path(__file__).resolve().parent.parent

# Published parameter counts, billions (llm-stats data, JonathanChavezTamales/llm-leaderboard @24a9ccf7
# data/organizations/*/models/*/model.json param_count; Qwen and Z.ai cards), and the share they may differ by: the
# published numbers are rounded (80B, 235B) or include a vision encoder (Llama 4 Scout: 109B) or the MTP block.
PUBLISHED = {
    "gpt-oss-120b": (116.8, 0.01), "deepseek-v3.1": (671, 0.01), "glm-4.6": (357, 0.01),
    "qwen3-next-80b-a3b-instruct": (80, 0.01), "qwen3-235b-a22b-instruct-2507": (235, 0.01),
    "qwen3-coder-480b-a35b-instruct": (480, 0.01), "llama-3.1-405b-instruct": (405, 0.01),
    "mistral-small-3.2-24b-instruct-2506": (23.6, 0.01), "granite-4.0-h-tiny": (7, 0.02),
    "llama-4-scout-17b-16e-instruct": (109, 0.02), "glm-4.5-air": (106, 0.045),
}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(ROOT / "catalog", overlay=False)


def names(model) -> dict[str, tuple[int, ...]]:
    return {t.name: t.shape for t in layout.tensor_inventory(model.arch)}


@pytest.mark.parametrize("model_id", sorted(PUBLISHED))
def test_inventory_adds_up_to_the_published_count(catalog, model_id):
    n = sum(t.n_elements for t in layout.tensor_inventory(catalog.get(model_id).arch)) / 1e9
    want, tol = PUBLISHED[model_id]
    assert n == pytest.approx(want, rel=tol)


def test_qwen3next_hybrid_layers(catalog):
    m = catalog.get("qwen3-next-80b-a3b-instruct")
    t = names(m)
    # every 4th layer full attention with the output gate doubling attn_q; the others gated delta net
    assert t["blk.3.attn_q.weight"] == (2048, 2 * 16 * 256) and "blk.3.attn_qkv.weight" not in t
    assert t["blk.0.attn_qkv.weight"] == (2048, 2 * 128 * 16 + 128 * 32)
    assert t["blk.0.ssm_conv1d.weight"] == (4, 2 * 128 * 16 + 128 * 32)
    assert t["blk.0.ffn_up_exps.weight"] == (2048, 512, 512) and t["blk.0.ffn_up_shexp.weight"] == (2048, 512)
    facts = compact_catalog_facts(m, m.all_variants()[0] if m.all_variants()[0].format == "gguf" else
                                  next(v for v in m.all_variants() if v.format == "gguf"))
    assert sum(facts.recurrent_layers) == 36 and facts.n_head_kv[3] == 2 and facts.n_head_kv[0] == 0
    est = estimate(facts, Settings(n_ctx=8192))
    assert est.recurrent_bytes > 0


def test_glm4moe_keeps_the_nextn_block_outside_the_layers_llama_cpp_runs(catalog):
    m = catalog.get("glm-4.5-air")
    t = names(m)
    assert "blk.46.nextn.eh_proj.weight" in t and "blk.0.ffn_gate.weight" in t  # dense lead layer 0
    assert t["blk.1.exp_probs_b.bias"] == (128,) and t["blk.1.ffn_up_shexp.weight"] == (4096, 1408)
    v = next(v for v in m.all_variants() if v.format == "gguf")
    facts = compact_catalog_facts(m, v)
    assert facts.n_layer == 46 and not any(x.name.startswith("blk.46") for x in facts.tensors)


def test_deepseek_v3_mla_with_q_lora(catalog):
    t = names(catalog.get("deepseek-v3.1"))
    assert t["blk.0.attn_q_a.weight"] == (7168, 1536) and t["blk.0.attn_q_b.weight"] == (1536, 128 * 192)
    assert t["blk.0.attn_k_b.weight"] == (128, 512, 128) and t["blk.0.attn_v_b.weight"] == (512, 128, 128)
    assert "blk.2.ffn_gate.weight" in t and "blk.3.ffn_gate_exps.weight" in t


def test_granite_hybrid_attention_only_on_its_attention_layers(catalog):
    m = catalog.get("granite-4.0-h-tiny")
    t = names(m)
    attn = sorted(int(k.split(".")[1]) for k in t if k.endswith("attn_q.weight"))
    assert attn == list(m.arch.attention_layers) and len(attn) == 4
    assert t["blk.0.ssm_in.weight"] == (1536, 2 * 3072 + 2 * 128 + 48)
    v = next(v for v in m.all_variants() if v.format == "gguf")
    facts = compact_catalog_facts(m, v)
    assert sum(facts.recurrent_layers) == 36 and [i for i, h in enumerate(facts.n_head_kv) if h] == attn


def test_gemma3n_per_layer_embeddings_and_shared_kv(catalog):
    m = catalog.get("gemma-3n-e2b-it")
    t = names(m)
    # the converter pads the per-layer table from vocab_size_per_layer_input (262144) to the full vocabulary
    # (convert_hf_to_gguf Gemma3nModel, "pad to vocab_size"), and llama.cpp requires {.., n_vocab}
    # (src/models/gemma3n.cpp: per_layer_tok_embd), so a real file has 262400 rows
    assert t["per_layer_token_embd.weight"] == (256 * 30, 262400)
    assert t["blk.0.laurel_l.weight"] == (2048, 64) and t["altup_proj.weight"] == (2048, 2048, 3)
    types = dict((x.name, ty) for x, ty in layout.assign_types(m.arch, "Q4_K_M"))
    # left unquantized by llama-quantize (tensor_allows_quantization); convert_hf_to_gguf wrote the coefficients in
    # F32 and the projections in the checkpoint's 16-bit type
    assert types["blk.0.altup_predict_coef.weight"] == "F32" and types["per_layer_model_proj.weight"] == "BF16"
    assert types["blk.0.altup_router.weight"] == "BF16" and types["blk.0.laurel_l.weight"] == "BF16"
    v = next(v for v in m.all_variants() if v.format == "gguf")
    facts = facts_from_catalog(m, v)
    assert facts.n_head_kv[:20] == (2,) * 20 and facts.n_head_kv[20:] == (0,) * 10  # layers >= 20 reuse KV


def test_llama4_moe_every_layer_with_shared_expert(catalog):
    t = names(catalog.get("llama-4-scout-17b-16e-instruct"))
    assert t["blk.0.ffn_gate_exps.weight"] == (5120, 8192, 16) and t["blk.0.ffn_gate_shexp.weight"] == (5120, 8192)
    assert "blk.0.ffn_gate.weight" not in t
