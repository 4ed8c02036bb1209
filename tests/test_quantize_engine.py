"""advisor quantize for real: tiny random Llama and Phi-3 checkpoints (saved by transformers, with a SentencePiece
tokenizer trained here) through llama.cpp's own converter and quantizer, then read back with the gguf reader, loaded
by llama-cpp-python, served by `advisor run --check`, sized by `advisor estimate` and recorded by `catalog add`.

The converter venv comes from the conftest fixture (`advisor setup --converter`, cached under ~/.cache/advisor-tests).
Shapes: hidden 256 and FFN 512, so every weight row is a multiple of 256, the K-quant super-block (QK_K in
ggml-common.h); rows that are not fall back to other types in llama_tensor_get_type (src/llama-quant.cpp).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gguf
import pytest

pytestmark = pytest.mark.engine

ADVISOR = str(Path(sys.executable).parent / "advisor")

#: Runs in the converter's venv (torch, transformers, sentencepiece): argv = pairs of arch, output directory (one
#: process for every checkpoint: torch and transformers are imported once). The SentencePiece vocabulary
#: has "<|endoftext|>" as Phi-3's does: llama.cpp's vocab loader looks it up by name for a model whose general.name
#: contains "phi3" (src/llama-vocab.cpp, per-token attributes, token_to_id.at: "unordered_map::at" without it).
MAKE = r"""
import sys
from pathlib import Path
import sentencepiece as spm
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer, Phi3Config, Phi3ForCausalLM
from transformers import PreTrainedTokenizerFast


def sentencepiece_model(arch, out):
    out.mkdir(parents=True, exist_ok=True)
    text = out / "corpus.txt"
    words = "the quick brown fox jumps over the lazy dog say ok hello world advisor runs models here".split()
    text.write_text("\n".join(" ".join(words[i:] + words[:i]) for i in range(len(words))) * 20)
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(out / "tokenizer"), vocab_size=384,
        model_type="bpe", byte_fallback=True, hard_vocab_limit=False, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
        character_coverage=1.0, num_threads=1, minloglevel=2, control_symbols=["<|endoftext|>"])
    text.unlink()
    (out / "tokenizer.vocab").unlink()
    torch.manual_seed(0)
    tok = LlamaTokenizer(vocab_file=str(out / "tokenizer.model"))
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    tok.save_pretrained(str(out))
    cfg = dict(vocab_size=tok.vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1,
               eos_token_id=2)
    if arch == "llama":
        LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(str(out))
    else:
        Phi3ForCausalLM(Phi3Config(**cfg, pad_token_id=0)).save_pretrained(str(out))


def bpe_model(out):
    # a byte-level BPE tokenizer whose pre-tokenizer llama.cpp's converter does not know (get_vocab_base_pre)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world say ok"] * 10, trainers.BpeTrainer(vocab_size=512,
        special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(str(out))
    LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(str(out))


for arch, out in zip(sys.argv[1::2], sys.argv[2::2]):
    bpe_model(Path(out)) if arch == "bpe" else sentencepiece_model(arch, Path(out))
"""

ARCHES = {"llama": "LlamaForCausalLM", "phi3": "Phi3ForCausalLM"}


def env_for(engines: Path) -> dict[str, str]:
    # ADVISOR_HOME/HF_HOME come from conftest's per-test isolation; the converter from the cached engines dir.
    return {**os.environ, "ADVISOR_ENGINES_DIR": str(engines)}


def run_advisor(args: list[str], engines: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ADVISOR, *args], capture_output=True, text=True, env=env_for(engines), timeout=timeout)


@pytest.fixture(scope="module")
def checkpoints(converter_engines_dir: Path, tmp_path_factory) -> dict[str, Path]:
    python = str(converter_engines_dir / "converter" / "bin" / "python")
    root = tmp_path_factory.mktemp("checkpoints")
    out = {name: root / f"tiny-{name}" for name in (*ARCHES, "bpe")}
    subprocess.run([python, "-c", MAKE, *(str(x) for name, d in out.items() for x in (name, d))], check=True,
                   timeout=600)  # fmt: skip
    return out


def types_2d(path: Path) -> dict[str, str]:
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors if len(t.shape) == 2}


def file_type(path: Path) -> int:
    field = gguf.GGUFReader(path).fields["general.file_type"]
    return int(field.parts[field.data[0]][0])


LOAD = r"""
import json, sys
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], n_ctx=64, n_threads=2, verbose=False)
print(json.dumps({"n_vocab": m.n_vocab(), "tokens": m.tokenize(b"hello world")}))
"""


@pytest.mark.parametrize("arch", list(ARCHES))
def test_q4_k_m_converts_loads_runs_and_is_recorded(arch: str, checkpoints, converter_engines_dir: Path,
                                                    tmp_path: Path) -> None:  # fmt: skip
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / f"tiny-{arch}-Q4_K_M.gguf"
    t0 = time.monotonic()
    done = run_advisor(["quantize", str(checkpoints[arch]), "--quant", "Q4_K_M", "--out", str(out), "--keep-f16",
                        "--json"], converter_engines_dir)  # fmt: skip
    wall = time.monotonic() - t0
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout)
    assert set(result) == {"path", "quant", "size_bytes", "source", "f16_path"}
    assert result["path"] == str(out) and result["quant"] == "Q4_K_M" and result["size_bytes"] == out.stat().st_size
    f16 = Path(result["f16_path"])
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, f16.name])  # nothing half-written left
    print(f"\n{arch}: convert+quantize {wall:.1f} s wall (advisor quantize, converter venv cached)", file=sys.stderr)

    # llama-quantize's Q4_K_M recipe (llama_tensor_get_type): Q4_K by default, Q6_K for the output and for
    # attn_v / ffn_down (fused qkv in phi3) of some layers (use_more_bits); the 16-bit intermediate is all F16.
    assert file_type(out) == gguf.LlamaFileType.MOSTLY_Q4_K_M
    quant = types_2d(out)
    assert set(quant.values()) <= {"Q4_K", "Q6_K"}, quant
    assert quant["output.weight"] == "Q6_K" and quant["blk.0.ffn_up.weight"] == "Q4_K"
    assert sum(v == "Q4_K" for v in quant.values()) > sum(v == "Q6_K" for v in quant.values())
    assert set(types_2d(f16).values()) == {"F16"}

    loaded = subprocess.run([sys.executable, "-c", LOAD, str(out)], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    info = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert info["n_vocab"] == json.loads((checkpoints[arch] / "config.json").read_text())["vocab_size"]
    assert len(info["tokens"]) >= 2

    check = run_advisor(["run", str(out), "--check", "--json"], converter_engines_dir, timeout=300)
    assert check.returncode == 0, check.stderr[-4000:]
    assert json.loads(check.stdout)["check"]["completion_tokens"] > 0

    est = run_advisor(["estimate", str(out), "--json"], converter_engines_dir)
    assert est.returncode == 0, est.stderr
    assert json.loads(est.stdout)["model"]["architecture"] == arch

    added = run_advisor(["catalog", "add", str(out), "--id", f"tiny-{arch}"], converter_engines_dir)
    assert added.returncode == 0, added.stderr
    shown = run_advisor(["catalog", "show", f"tiny-{arch}", "--json"], converter_engines_dir)
    assert shown.returncode == 0 and "Q4_K_M" in shown.stdout, shown.stderr


def test_auto_picks_and_explains(checkpoints, converter_engines_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "auto.gguf"
    done = run_advisor(["quantize", str(checkpoints["llama"]), "--quant", "auto", "--out", str(out), "--json"],
                       converter_engines_dir)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    quant = json.loads(done.stdout)["quant"]
    assert f"chose {quant}: the best-rated quant whose plan fits this machine" in done.stderr
    assert "quant quality" in done.stderr  # the planner's own reason for the variant
    members = {m.name.removeprefix("MOSTLY_").removeprefix("ALL_"): m for m in gguf.LlamaFileType}
    assert file_type(out) == members[quant]


def test_imatrix_quant_with_an_importance_matrix(checkpoints, converter_engines_dir: Path, tmp_path: Path) -> None:
    """IQ2_XS needs an importance matrix (tensor_requires_imatrix): one in llama-imatrix's GGUF layout
    (common/imatrix-loader.cpp: '<tensor>.in_sum2' and '<tensor>.counts', imatrix.* metadata) makes it possible."""
    imatrix = tmp_path / "imatrix.gguf"
    w = gguf.GGUFWriter(str(imatrix), arch="llama")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["advisor-test"])
    w.add_uint32("imatrix.chunk_count", 10)
    w.add_uint32("imatrix.chunk_size", 512)
    import numpy as np

    # One entry per weight the quantizer quantizes with it: llama's GGUF tensor names (gguf TENSOR_NAMES), each
    # as long as the weight's rows (n_embd 256, ffn_down's input n_ff 512). Embeddings and output need none.
    rng = np.random.default_rng(0)
    cfg = json.loads((checkpoints["llama"] / "config.json").read_text())
    T = gguf.MODEL_TENSOR
    rows = {T.ATTN_Q: 256, T.ATTN_K: 256, T.ATTN_V: 256, T.ATTN_OUT: 256, T.FFN_GATE: 256, T.FFN_UP: 256,
            T.FFN_DOWN: 512}
    for il in range(cfg["num_hidden_layers"]):
        for tensor, n in rows.items():
            name = gguf.TENSOR_NAMES[tensor].format(bid=il) + ".weight"
            w.add_tensor(name + ".in_sum2", (rng.random(n) * 5120).astype(np.float32))
            w.add_tensor(name + ".counts", np.array([5120.0], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    out = tmp_path / "tiny-IQ2_XS.gguf"
    done = run_advisor(["quantize", str(checkpoints["llama"]), "--quant", "IQ2_XS", "--imatrix", str(imatrix),
                        "--out", str(out), "--json"], converter_engines_dir)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "importance matrix" in done.stderr
    assert "IQ2_XS" in set(types_2d(out).values())


def test_unsupported_architecture_is_named(checkpoints, converter_engines_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "frob"
    shutil.copytree(checkpoints["llama"], d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "architectures": ["FrobnicatorForCausalLM"]}))
    done = run_advisor(["quantize", str(d), "--quant", "Q4_K_M", "--out", str(tmp_path / "x.gguf")],
                       converter_engines_dir)  # fmt: skip
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("advisor: error:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert "architecture FrobnicatorForCausalLM is not supported by llama.cpp's converter" in lines[0]
    assert not (tmp_path / "x.gguf").exists()


def test_refused_tokenizer_is_bad_input(checkpoints, converter_engines_dir: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = run_advisor(["quantize", str(checkpoints["bpe"]), "--quant", "Q4_K_M", "--out", str(out_dir / "x.gguf")],
                       converter_engines_dir)  # fmt: skip
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("advisor: error:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert "refuses its tokenizer" in lines[0] and "pre-tokenizer was not recognized" in lines[0]
    assert list(out_dir.iterdir()) == []
