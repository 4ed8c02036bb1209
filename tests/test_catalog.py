"""The model catalog: schema, strict loading, sources, derived sizes against every measured size, and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from advisor.gguf import layout as quant_layout
from advisor.catalog.load import load_catalog
from advisor.catalog.model import CatalogError, load_model_file, sized_variants
from advisor.settings import data_dir

ADVISOR = Path(sys.executable).parent / "advisor"
REPO_CATALOG = Path(__file__).resolve().parent.parent / "catalog"
TOLERANCE = 0.02  # derived sizes within 2 % of measured ones


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(REPO_CATALOG)


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(ADVISOR), *args], capture_output=True, text=True, timeout=60, **kw)


# --------------------------------------------------------------------------------------------------------------------
# Schema and content


def test_every_file_follows_the_schema():
    files = sorted((REPO_CATALOG / "models").glob("*.toml"))
    assert files
    for path in files:
        assert load_model_file(path).model, path


def test_default_catalog_dir_is_the_checkout(monkeypatch):
    monkeypatch.delenv("ADVISOR_DATA_DIR", raising=False)
    assert (data_dir() / "catalog") == REPO_CATALOG


def test_catalog_size_and_required_models(catalog):
    ids = {m.id for m in catalog.models}
    assert len(ids) == len(catalog.models) >= 44
    for required in ("phi-3-mini-4k-instruct", "codegemma-1.1-2b", "codegemma-1.1-7b-it",
                     "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-7b-instruct"):
        quants = {v.quant for v in catalog.get(required).all_variants() if v.format == "gguf"}
        assert {"Q3_K_M", "IQ4_XS", "IQ2_M", "Q5_K_L"} <= quants, required


def test_every_model_has_sourced_scores_or_says_why_not(catalog):
    for m in catalog.models:
        assert m.scores or m.scores_missing, m.id
        for s in m.scores:
            assert s.source.strip() and s.metric.strip(), (m.id, s)
        assert m.sampling.source.strip(), m.id
        assert m.arch.source.strip() and m.params_source.strip() and m.context_source.strip(), m.id


def test_every_number_in_quants_has_a_source(catalog):
    q = catalog.quants
    assert q.score_formula
    for entry in q.quant:
        assert entry.source.strip(), entry.name
        if entry.bpw is not None:
            assert entry.bpw_source.strip(), entry.name
    for s in q.speed:
        assert s.source.strip()
    for v in q.vllm:
        assert v.source.strip()
    used = {v.quant for m in catalog.models for v in m.all_variants() if v.format == "gguf"}
    assert used <= {e.name for e in q.quant}, used - {e.name for e in q.quant}


def test_architecture_matches_the_stated_parameter_count(catalog):
    """The tensor inventory built from the architecture facts must add up to the published parameter count: this
    catches a wrong n_ff, vocab or head count, including the values marked [recalled]."""
    for m in catalog.models:
        n = sum(t.n_elements for t in quant_layout.tensor_inventory(m.arch)) / 1e9
        assert n == pytest.approx(m.params_total_b, rel=0.02), m.id


def test_measured_sizes_have_a_where(catalog):
    for m in catalog.models:
        for v in m.all_variants():
            if v.size_source == "measured":
                assert v.size_bytes and v.size_where, (m.id, v.quant)
            else:
                assert v.size_bytes is None, (m.id, v.quant)


# --------------------------------------------------------------------------------------------------------------------
# Derived sizes


def test_derived_sizes_match_every_measured_size(catalog):
    errors = []
    for m in catalog.models:
        for sv in sized_variants(m):
            if sv.variant.size_source != "measured":
                continue
            err = sv.derived_bytes / sv.size_bytes - 1
            errors.append((abs(err), m.id, sv.variant.quant, sv.variant.size_measures))
    assert len(errors) >= 30
    worst = max(errors)
    print(f"\nderived vs measured: {len(errors)} sizes, max error {worst[0]:.3%} ({worst[1]} {worst[2]})")
    assert worst[0] < TOLERANCE, worst


def test_every_variant_gets_a_size(catalog):
    for m in catalog.models:
        for sv in sized_variants(m):
            assert sv.size_bytes > 0.05e9 * m.params_total_b, (m.id, sv.variant.quant)


def _arch(**kw):
    base = dict(n_expert=0, n_expert_used=0, n_expert_shared=0, n_ff_expert=0, n_layer_dense_lead=0, kv_lora_rank=0,
                q_lora_rank=0, qk_nope_head_dim=0, qk_rope_head_dim=0, v_head_dim=0, tokenizer="llama",
                tied_embeddings=False)
    base.update(kw)
    base.setdefault("head_dim_v", base["head_dim_k"])
    return SimpleNamespace(**base)


# Real llama.cpp load logs of models outside the catalog but with catalog architectures ("file size" = tensor data,
# GiB with 2 decimals). Sources: tests/data/gpu-logs/logs.jsonl entries named below, and llama.cpp's
# tools/quantize/README.md Llama-3.1-8B table (llama-quantize without imatrix).
LLAMA31_8B = _arch(name="llama", n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, head_dim_k=128, n_ff=14336,
                   vocab_size=128256, tokenizer="gpt2")
REFERENCE_LOGS = [
    # gemma-1.1-7b-it Q4_K_M (CodeGemma-7B body), gpu-logs l25_gemma7b_vulkan_rx6900xt_ngl0
    (_arch(name="gemma", n_layer=28, n_embd=3072, n_head=16, n_head_kv=16, head_dim_k=256, n_ff=24576,
           vocab_size=256000, tied_embeddings=True), "Q4_K_M", 4.96),
    # Phi-3-mini-128k Q4_0 (Phi-3-mini-4k body + 2 tiny rope-factor tensors), gpu-logs l10_phi3mini128k_metal_m4_ollama
    (_arch(name="phi3", n_layer=32, n_embd=3072, n_head=32, n_head_kv=32, head_dim_k=96, n_ff=8192,
           vocab_size=32064), "Q4_0", 2.03),
    # Qwen2.5-Coder-7B-Instruct Q4_K_M (Ollama), gpu-logs l02_qwen2_7b_rtx3060_ollama: 292.36 + 4168.09 MiB
    (_arch(name="qwen2", n_layer=28, n_embd=3584, n_head=28, n_head_kv=4, head_dim_k=128, n_ff=18944,
           vocab_size=152064, tokenizer="gpt2"), "Q4_K_M", (292.36 + 4168.09) / 1024),
    (LLAMA31_8B, "Q8_0", 7.95), (LLAMA31_8B, "Q6_K", 6.14), (LLAMA31_8B, "Q5_K_M", 5.33),
    (LLAMA31_8B, "Q4_K_M", 4.58), (LLAMA31_8B, "IQ4_XS", 4.17), (LLAMA31_8B, "IQ3_M", 3.52),
    (LLAMA31_8B, "IQ2_M", 2.74),
]


@pytest.mark.parametrize(("arch", "quant", "gib"), REFERENCE_LOGS)
def test_recipe_reproduces_logged_tensor_sizes(arch, quant, gib):
    layout = quant_layout.gguf_layout(arch, quant, imatrix=False)
    assert layout.tensor_bytes / 2**30 == pytest.approx(gib, rel=0.005)


def test_q4_k_m_recipe_details():
    """llama-quant.cpp llama_tensor_get_type: attn_v and ffn_down Q6_K on use_more_bits layers, output Q6_K,
    token_embd Q4_K."""
    types = {t.name: ty for t, ty in quant_layout.assign_types(LLAMA31_8B, "Q4_K_M")}
    more = [i for i in range(32) if i < 4 or i >= 28 or (i - 4) % 3 == 2]
    for i in range(32):
        want = "Q6_K" if i in more else "Q4_K"
        assert types[f"blk.{i}.attn_v.weight"] == want and types[f"blk.{i}.ffn_down.weight"] == want, i
        assert types[f"blk.{i}.attn_q.weight"] == "Q4_K"
        assert types[f"blk.{i}.attn_norm.weight"] == "F32"
    assert types["output.weight"] == "Q6_K" and types["token_embd.weight"] == "Q4_K"


def test_bartowski_l_variant_keeps_embeddings_at_q8_0():
    types = {t.name: ty for t, ty in quant_layout.assign_types(LLAMA31_8B, "Q5_K_L")}
    assert types["output.weight"] == types["token_embd.weight"] == "Q8_0"
    assert types["blk.10.attn_q.weight"] == "Q5_K"


def test_rows_not_a_multiple_of_the_block_fall_back():
    # Qwen2.5-0.5B: n_embd 896 is not a multiple of 256, so Q4_K rows fall back to Q5_0 (tensor_type_fallback).
    qwen05 = _arch(name="qwen2", n_layer=24, n_embd=896, n_head=14, n_head_kv=2, head_dim_k=64, n_ff=4864,
                   vocab_size=151936, tied_embeddings=True, tokenizer="gpt2")
    types = {t.name: ty for t, ty in quant_layout.assign_types(qwen05, "Q4_K_M")}
    assert types["blk.5.attn_q.weight"] == "Q5_0"
    assert types["blk.5.ffn_down.weight"] in ("Q4_K", "Q6_K")  # 4864 = 19 x 256
    assert types["token_embd.weight"] == "Q8_0"  # tied: the output rule, and 896 % 256 != 0


def test_unknown_quant_is_refused():
    with pytest.raises(ValueError, match="unknown GGUF quantization"):
        quant_layout.assign_types(LLAMA31_8B, "Q4_K_Z")


# --------------------------------------------------------------------------------------------------------------------
# Strict loading


def _copy_catalog(tmp_path: Path) -> Path:
    dst = tmp_path / "data" / "catalog"
    shutil.copytree(REPO_CATALOG, dst)
    return dst


def test_unknown_key_is_refused_with_file_and_key(tmp_path):
    d = _copy_catalog(tmp_path)
    path = d / "models" / "phi.toml"
    path.write_text(path.read_text().replace("n_head_kv = 32\n", "n_head_kv = 32\nn_heads_kv = 32\n", 1))
    with pytest.raises(CatalogError) as info:
        load_catalog(d)
    assert "phi.toml" in info.value.message and "'n_heads_kv'" in info.value.message
    assert "arch" in info.value.message


def test_wrong_type_and_missing_key_are_refused(tmp_path):
    d = _copy_catalog(tmp_path)
    path = d / "models" / "mistral.toml"
    text = path.read_text()
    path.write_text(text.replace("n_layer = 32\n", 'n_layer = "32"\n', 1))
    with pytest.raises(CatalogError, match=r"mistral\.toml.*n_layer.*expected an integer"):
        load_catalog(d)
    path.write_text(text.replace('license = "Apache-2.0"\n', "", 1))
    with pytest.raises(CatalogError, match=r"mistral\.toml.*missing required key 'license'"):
        load_catalog(d)


def test_typed_in_derived_size_is_refused(tmp_path):
    d = _copy_catalog(tmp_path)
    path = d / "models" / "llama.toml"
    text = path.read_text().replace('size_source = "derived"\n', 'size_source = "derived"\nsize_bytes = 5\n', 1)
    path.write_text(text)
    with pytest.raises(CatalogError, match="derived sizes are computed"):
        load_catalog(d)


def test_unknown_key_in_quants_is_refused(tmp_path):
    d = _copy_catalog(tmp_path)
    path = d / "quants.toml"
    path.write_text(path.read_text().replace('name = "Q8_0"\n', 'name = "Q8_0"\nspeed_score = 3\n', 1))
    with pytest.raises(CatalogError, match=r"quants\.toml.*'speed_score'"):
        load_catalog(d)


# --------------------------------------------------------------------------------------------------------------------
# CLI (the installed script, a fresh process)


def test_cli_list_json():
    r = run("catalog", "list", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert len(data["models"]) >= 44
    m = next(x for x in data["models"] if x["id"] == "qwen2.5-coder-7b-instruct")
    assert m["scores"]["code"]["metric"] == "livecodebench" and "IQ4_XS" in m["quants"]


def test_cli_list_task_filter_and_table():
    r = run("catalog", "list", "--task", "completion", "--json")
    assert r.returncode == 0, r.stderr
    ids = {m["id"] for m in json.loads(r.stdout)["models"]}
    assert "starcoder2-3b" in ids and "llama-3.1-8b-instruct" not in ids
    r = run("catalog", "list", "--task", "code")
    assert r.returncode == 0 and "qwen2.5-coder" in r.stdout
    r = run("catalog", "list", "--task", "poetry")
    assert r.returncode == 2 and "known tasks" in r.stderr


def test_cli_show_json():
    r = run("catalog", "show", "qwen2.5-coder-7b-instruct", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["architecture"]["n_layer"] == 28 and d["sampling"]["repetition_penalty"] == 1.05
    iq4 = next(v for v in d["variants"] if v["quant"] == "IQ4_XS" and v["size_source"] == "measured")
    assert iq4["size_bytes"] == 4_218_473_248
    q3 = next(v for v in d["variants"] if v["quant"] == "Q3_K_M" and v["repo"].startswith("bartowski/"))
    assert q3["size_source"] == "derived" and 3.5e9 < q3["size_bytes"] < 4.0e9
    assert all(s["source"] for s in d["scores"])


def test_cli_show_table():
    r = run("catalog", "show", "phi-3-mini-4k-instruct")
    assert r.returncode == 0, r.stderr
    assert "Variants" in r.stdout and "Q5_K_L" in r.stdout


def test_cli_show_unknown_id_is_one_line():
    r = run("catalog", "show", "no-such-model")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "advisor catalog list" in lines[0] and r.stdout == ""


def test_cli_reads_advisor_data_dir(tmp_path):
    d = _copy_catalog(tmp_path)
    for path in (d / "models").glob("*.toml"):
        if path.name != "phi.toml":
            path.unlink()
    import os

    r = run("catalog", "list", "--json", env={**os.environ, "ADVISOR_DATA_DIR": str(d.parent)})
    assert r.returncode == 0, r.stderr
    assert {m["id"] for m in json.loads(r.stdout)["models"]} == {
        "phi-3-mini-4k-instruct", "phi-3.5-mini-instruct", "phi-4-mini-instruct", "phi-4", "phi-4-reasoning",
        "phi-4-mini-reasoning"}
