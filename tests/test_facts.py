"""GGUF header parsing: facts of generated models, split files, and one clear error for bad input."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from advisor.gguf import ggml
from advisor.errors import BadInputError
from advisor.gguf.facts import read_gguf_facts, split_files
from tests import ggufgen
from tests.ggufgen import Spec, T


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("facts")
    return {a: ggufgen.write(d / f"{a}.gguf", s) for a, s in ggufgen.TINY.items()}


def test_llama_facts(tiny):
    f = read_gguf_facts(tiny["llama"])
    spec = ggufgen.TINY["llama"]
    assert (f.architecture, f.n_layer, f.n_embd) == ("llama", spec.n_layer, spec.n_embd)
    assert f.n_head == (4,) * 3 and f.n_head_kv == (2,) * 3
    assert f.head_dim_k == f.head_dim_v == 32
    assert f.n_ff == (256,) * 3 and f.n_vocab == 1000 and f.n_ctx_train == 4096
    assert not f.tied_embeddings and f.sliding_window == 0 and f.n_expert == 0
    assert f.chat_template == ggufgen.CHAT_TEMPLATE
    embd = f.tensor("token_embd.weight")
    assert embd is not None and embd.shape == (128, 1000) and embd.type_name == "Q8_0"
    assert embd.nbytes == 1000 * 128 // 32 * 34
    norm = f.tensor("blk.0.attn_norm.weight")
    assert norm is not None and norm.type_name == "F32" and norm.nbytes == 128 * 4


def test_sizes_match_the_file(tiny):
    # tensor data = the file after the header, less the alignment padding between tensors
    for arch, path in tiny.items():
        f = read_gguf_facts(path)
        data = os.path.getsize(path) - f.data_offset
        assert f.weights_bytes <= data < f.weights_bytes + 32 * len(f.tensors), arch


def test_per_layer_grouping(tiny):
    f = read_gguf_facts(tiny["qwen3"])
    groups = f.layer_tensors()
    assert set(groups) == {None, 0, 1, 2}
    assert {t.name for t in groups[None]} == {"token_embd.weight", "output_norm.weight"}
    assert f.tied_embeddings
    assert sum(f.layer_bytes()) + sum(t.nbytes for t in groups[None]) == f.weights_bytes
    d = f.to_dict()
    assert d["tensors"]["0"][0]["name"].startswith("blk.0.") and d["weights_bytes"] == f.weights_bytes


def test_sliding_window_patterns(tiny):
    g3 = read_gguf_facts(tiny["gemma3"])  # llama.cpp gemma3: period 6 -> 5 SWA layers then 1 full
    assert g3.sliding_window == 256
    assert g3.swa_layers == (True, True, True, True, True, False, True)
    g2 = read_gguf_facts(tiny["gemma2"])  # gemma2: period 2
    assert g2.swa_layers == (True, False, True, False)


def test_explicit_swa_pattern_key(tmp_path):
    spec = Spec("gemma3", n_layer=4, n_embd=64, n_head=2, n_head_kv=1, n_ff=128, n_vocab=300, sliding_window=128,
                tied=True, extra_kv=(("gemma3.attention.sliding_window_pattern", 2),))
    f = read_gguf_facts(ggufgen.write(tmp_path / "g.gguf", spec, sparse=True))
    assert f.swa_layers == (True, False, True, False)


def test_moe_facts(tiny):
    f = read_gguf_facts(tiny["qwen3moe"])
    assert (f.n_expert, f.n_expert_used, f.n_ff_exp) == (8, 2, 64)
    exps = f.tensor("blk.0.ffn_up_exps.weight")
    assert exps is not None and exps.shape == (128, 64, 8)


def test_split_model_is_one_model(tmp_path):
    first = ggufgen.write(tmp_path / "m.gguf", ggufgen.TINY["llama"], split_max_tensors=12)
    files = split_files(str(first))
    assert len(files) == 3 and first.name == "m-00001-of-00003.gguf"
    whole = read_gguf_facts(ggufgen.write(tmp_path / "whole.gguf", ggufgen.TINY["llama"]))
    f = read_gguf_facts(tmp_path / "m-00002-of-00003.gguf")  # any shard names the model
    assert f.weights_bytes == whole.weights_bytes and len(f.tensors) == len(whole.tensors)
    assert f.n_layer == whole.n_layer and len(f.files) == 3
    os.remove(tmp_path / "m-00003-of-00003.gguf")
    with pytest.raises(BadInputError, match="missing shard"):
        read_gguf_facts(first)


def test_header_only_read_is_fast(tmp_path):
    spec = Spec("llama", n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256,
                wtype=T.Q8_0)  # Llama-3-8B shapes, ~8 GB, sparse
    path = ggufgen.write(tmp_path / "big.gguf", spec, sparse=True)
    t = time.perf_counter()
    f = read_gguf_facts(path)
    assert time.perf_counter() - t < 0.5  # benchmarks/gguf_header.py measures the 0.2 s target
    assert f.n_vocab == 128256 and f.weights_bytes > 7 * 2**30


# ---- bad input: one BadInputError naming the file and the problem ------------------------------------------


def _good(tmp_path: Path) -> bytes:
    return ggufgen.write(tmp_path / "good.gguf", ggufgen.TINY["qwen2"]).read_bytes()


@pytest.mark.parametrize("case, message", [
    ("empty", "not a GGUF file"),
    ("text", "no 'GGUF' magic"),
    ("version1", "unsupported GGUF version 1"),
    ("version9", "unsupported GGUF version 9"),
    ("cut_header", "truncated"),
    ("cut_data", "truncated"),
    ("huge_count", "corrupt header"),
    ("bad_type", "unknown value type"),
])
def test_bad_files(tmp_path, case, message):
    good = _good(tmp_path)
    data = {
        "empty": b"",
        "text": b"hello, this is not a model at all\n" * 3,
        "version1": good[:4] + struct.pack("<I", 1) + good[8:],
        "version9": good[:4] + struct.pack("<I", 9) + good[8:],
        "cut_header": good[:200],
        "cut_data": good[: len(good) - 1000],
        "huge_count": good[:8] + struct.pack("<Q", 2**60) + good[16:],
        "bad_type": good[:24] + good[24:24 + 8 + struct.unpack_from("<Q", good, 24)[0]] + struct.pack("<I", 99)
        + good[24 + 8 + struct.unpack_from("<Q", good, 24)[0] + 4:],
    }[case]
    path = tmp_path / f"{case}.gguf"
    path.write_bytes(data)
    with pytest.raises(BadInputError) as exc:
        read_gguf_facts(path)
    assert str(path) in exc.value.message and message in exc.value.message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BadInputError, match="no such file"):
        read_gguf_facts(tmp_path / "nope.gguf")
    with pytest.raises(BadInputError, match="directory"):
        read_gguf_facts(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a gguf", None])
def test_cli_bad_input_is_one_line(tmp_path, content):
    path = tmp_path / "bad.gguf"
    if content is not None:
        path.write_bytes(content)
    env = {k: v for k, v in os.environ.items() if k != "ADVISOR_DEBUG"}
    r = subprocess.run([sys.executable, "-m", "advisor", "estimate", str(path)], capture_output=True, text=True,
                       env=env, cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("advisor: error: ") and str(path) in lines[0]
    assert "Traceback" not in r.stderr


def test_ggml_table_is_llamacpp():
    # block sizes/bytes from ggml.c type_traits
    assert ggml.block_size(ggml.type_id("q8_0")) == (32, 34)
    assert ggml.block_size(ggml.type_id("q4_K")) == (256, 144)
    assert ggml.block_size(ggml.type_id("iq4_xs")) == (256, 136)
    assert ggml.nbytes(ggml.type_id("q6_k"), (4096, 128256)) == 4096 // 256 * 210 * 128256
    assert ggml.type_name(1) == "F16" and ggml.type_name(9999) == "type9999"


def test_generator_covers_many_archs():
    archs = ggufgen.supported_archs()
    assert {"llama", "qwen2", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3", "mistral3"} <= set(archs)
    assert len(archs) >= 40


@pytest.mark.parametrize("value, message", [("two", "must be an integer"), (4, "leaves no layer to run")])
def test_a_bad_nextn_layer_count_is_refused_in_one_line(tmp_path, value, message):
    """nextn_predict_layers (the MTP layers block_count includes) is read as an integer below block_count, as
    llama.cpp's loader requires (src/llama-model.cpp: GGML_ASSERT(n_layer_nextn <= n_layer_all)): anything else is
    a BadInputError, not a traceback."""
    spec = Spec(n_layer=4, n_embd=256, n_ff=512, extra_kv=(("llama.nextn_predict_layers", value),))
    path = ggufgen.write(tmp_path / "m.gguf", spec, sparse=True)
    with pytest.raises(BadInputError, match=message):
        read_gguf_facts(path)


def test_more_experts_used_than_the_model_has_is_refused_in_one_line(tmp_path):
    """llama.cpp refuses expert_used_count above expert_count (src/llama-model.cpp load_hparams:
    GGML_ASSERT(n_expert_used_max <= hparams.n_expert)); so does the reader, before any estimate builds a graph
    of that many experts."""
    spec = Spec("qwen3moe", n_layer=2, n_embd=128, n_head=4, n_head_kv=2, n_ff=256, n_vocab=700, n_expert=8,
                n_expert_used=2, n_ff_exp=64, extra_kv=(("qwen3moe.expert_used_count", 2**31),))
    path = ggufgen.write(tmp_path / "m.gguf", spec, sparse=True)
    with pytest.raises(BadInputError, match="expert_used_count = 2147483648 exceeds expert_count = 8"):
        read_gguf_facts(path)


def test_nextn_layers_are_not_part_of_the_model(tmp_path):
    """GLM-4.5's MTP block counts in block_count; llama.cpp runs n_layer_all - n_layer_nextn layers."""
    spec = Spec(n_layer=4, n_embd=256, n_ff=512, extra_kv=(("llama.nextn_predict_layers", 1),))
    facts = read_gguf_facts(ggufgen.write(tmp_path / "m.gguf", spec, sparse=True))
    assert facts.n_layer == 3 and len(facts.n_head_kv) == 3


@pytest.mark.parametrize("ngl, gpu_trunk, output_on_gpu", [(2, 0, True), (3, 1, True), (5, 3, True), (1, 0, True)])
def test_nextn_blocks_take_gpu_slots(tmp_path, ngl, gpu_trunk, output_on_gpu):
    """-ngl counts block_count + 1 slots from the end (llama_model::load_tensors: i_gpu_start = n_layer_all + 1 -
    n_gpu_layers), so a trailing NextN block takes a GPU slot although its tensors are skipped: 4 blocks with one
    NextN leave -ngl N with N - 2 trunk layers on the GPU. The H200 recording of GLM-4.5-Air (46 + 1 blocks) at
    -ngl 23 has 21 trunk layers' KV on the GPU (tests/data/llamacpp-cuda)."""
    from advisor.gguf.estimate import Settings, layer_devices
    spec = Spec(n_layer=4, n_embd=256, n_ff=512, extra_kv=(("llama.nextn_predict_layers", 1),))
    facts = read_gguf_facts(ggufgen.write(tmp_path / "m.gguf", spec, sparse=True))
    assert facts.n_layer_all == 4
    layers, output = layer_devices(facts, Settings(n_gpu_layers=ngl, n_gpus=1))
    assert layers.count("gpu0") == gpu_trunk and len(layers) == 3
    assert (output == "gpu0") == output_on_gpu
    # every block plus the output layer: the value the planner writes for full offload
    assert layer_devices(facts, Settings(n_gpu_layers=facts.n_layer_all + 1, n_gpus=1))[0] == ["gpu0"] * 3
