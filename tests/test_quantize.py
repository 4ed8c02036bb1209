"""advisor quantize without a converter run: input checks (one line, exit 2), the quant choice (--quant auto) on
recorded machines, the converter's registered architectures read from its source, the requirements it installs,
and what a failing or interrupted conversion leaves behind (nothing)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from advisor.app import quantize as q
from advisor.catalog.load import load_catalog
from advisor.errors import BadInputError
from advisor.setup import converter as conv
from advisor.setup.converter import Converter
from tests.test_recommend_matrix import MACHINES, _more_memory

ADVISOR = str(Path(sys.executable).parent / "advisor")

#: Llama-3.1-8B's config.json (meta-llama/Llama-3.1-8B-Instruct on the Hub): the shapes below add up to its 8.03 B.
LLAMA_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
            "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
            "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16"}


def header_only_checkpoint(d: Path, cfg: dict) -> Path:
    """config.json plus a safetensors file holding only its header (names, dtypes, shapes): all that --quant auto
    and the disk check read. Tensor shapes follow transformers' LlamaForCausalLM."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(cfg))
    h, f, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = h // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    shapes = {"model.embed_tokens.weight": [cfg["vocab_size"], h], "lm_head.weight": [cfg["vocab_size"], h],
              "model.norm.weight": [h]}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [kv, h],
                   p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, h],
                   p + "mlp.gate_proj.weight": [f, h], p + "mlp.up_proj.weight": [f, h],
                   p + "mlp.down_proj.weight": [h, f], p + "input_layernorm.weight": [h],
                   p + "post_attention_layernorm.weight": [h]}
    header = json.dumps({k: {"dtype": "BF16", "shape": s, "data_offsets": [0, 0]} for k, s in shapes.items()}).encode()
    (d / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    return d


def run_advisor(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ADVISOR, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("advisor: error:")]
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and text in lines[0], done.stderr
    assert "Traceback" not in done.stderr


# -- bad input ---------------------------------------------------------------------------------------------------


def test_directory_without_config_is_exit_2(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_advisor(["quantize", str(tmp_path / "empty"), "--quant", "Q4_K_M"]), 2, "no config.json")


def test_missing_source_is_exit_2(tmp_path: Path) -> None:
    assert_one_line_error(run_advisor(["quantize", str(tmp_path / "nope" / "x"), "--quant", "Q4_K_M"]), 2,
                          "no such directory")


def test_unknown_quant_is_exit_2(tmp_path: Path) -> None:
    d = header_only_checkpoint(tmp_path / "m", LLAMA_8B)
    assert_one_line_error(run_advisor(["quantize", str(d), "--quant", "Q4_K_Q"]), 2, "not a quantization")


def test_imatrix_quant_without_imatrix_is_exit_2(tmp_path: Path) -> None:
    d = header_only_checkpoint(tmp_path / "m", LLAMA_8B)
    assert_one_line_error(run_advisor(["quantize", str(d), "--quant", "IQ2_XS"]), 2, "importance matrix")


def test_existing_output_needs_yes(tmp_path: Path) -> None:
    d = header_only_checkpoint(tmp_path / "m", LLAMA_8B)
    out = tmp_path / "out.gguf"
    out.write_bytes(b"mine")
    assert_one_line_error(run_advisor(["quantize", str(d), "--quant", "Q4_K_M", "--out", str(out)]), 2,
                          "already exists")
    assert out.read_bytes() == b"mine"


def test_disk_check_counts_intermediate_and_output(tmp_path: Path) -> None:
    free = __import__("shutil").disk_usage(tmp_path).free
    params = free // 3  # F16: 2 bytes each for the intermediate, up to 2 more for the output: 4/3 of free
    with pytest.raises(BadInputError, match="not enough free disk"):
        q.check_disk(tmp_path, params, "f16", "Q4_K_M", 0)
    assert q.check_disk(tmp_path, 1000, "f16", "Q4_K_M", 0) == 2 * (2000 + q.METADATA_ALLOWANCE)


# -- --quant auto ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def laptop(tmp_path_factory):
    from advisor.probe import probe

    m = MACHINES["cpu-laptop-alderlake"](tmp_path_factory.mktemp("laptop") / "root")
    return probe(m.system())


def _quality(name: str) -> float:
    found = load_catalog(overlay=False).quant(name)
    assert found is not None and found.score is not None
    return found.score


def test_auto_picks_the_best_rated_quant_that_fits_and_says_why(tmp_path: Path, laptop) -> None:
    d = header_only_checkpoint(tmp_path / "llama-8b", LLAMA_8B)
    choice = q.choose_quant(d, laptop, imatrix=False)
    assert choice.quant in q.quant_names() and choice.quant not in q.NEEDS_IMATRIX
    assert choice.reasons[0].startswith(f"chose {choice.quant}")
    # Every rated quant llama-quantize makes that is better than the choice was tried and rejected, with a reason.
    rated = {x.name: x.score for x in load_catalog(overlay=False).quants.quant if x.score is not None}
    better = [n for n in q.quant_names() if n in rated and rated[n] > _quality(choice.quant)
              and n not in q.NEEDS_IMATRIX]
    assert better, "an 8B model on a 16 GB laptop cannot take BF16"
    for n in better:
        assert any(r.startswith(f"rejected {n}:") for r in choice.reasons), (n, choice.reasons)


def test_auto_on_less_memory_picks_a_smaller_quant(tmp_path: Path, laptop) -> None:
    """Halving the memory of the machine must lower the choice: an 8B model's Q8_0 is 8.5 bits x 8.03 B = 8.5 GB
    (llama.cpp tools/quantize/README.md), more than half of the laptop's 12 GB available."""
    d = header_only_checkpoint(tmp_path / "llama-8b", LLAMA_8B)
    full = q.choose_quant(d, laptop, imatrix=False)
    half = q.choose_quant(d, _more_memory(laptop, 0.5), imatrix=False)
    assert _quality(half.quant) < _quality(full.quant)


def test_auto_offers_imatrix_quants_only_with_an_imatrix(tmp_path: Path) -> None:
    d = header_only_checkpoint(tmp_path / "llama-8b", LLAMA_8B)
    _, without = q.as_catalog_model(d, imatrix=False)
    _, with_im = q.as_catalog_model(d, imatrix=True)
    assert not set(without.gguf[0].quants) & q.NEEDS_IMATRIX
    assert q.NEEDS_IMATRIX & set(with_im.gguf[0].quants)
    assert with_im.arch.n_layer == 32 and with_im.arch.tokenizer == "gpt2"  # no tokenizer.model: BPE


def test_auto_for_an_architecture_advisor_cannot_size_names_quant(tmp_path: Path) -> None:
    d = header_only_checkpoint(tmp_path / "m", {**LLAMA_8B, "model_type": "frobnicator"})
    assert_one_line_error(run_advisor(["quantize", str(d)]), 2, "--quant auto cannot size this checkpoint")


# -- the converter's source --------------------------------------------------------------------------------------


def fake_tree(root: Path, script_body: str = "") -> Path:
    """A converter tree laid out like llama.cpp's (convert_hf_to_gguf.py, conversion/, gguf-py/, requirements/)."""
    (root / "conversion").mkdir(parents=True)
    (root / "gguf-py").mkdir()
    (root / "requirements").mkdir()
    (root / "convert_hf_to_gguf.py").write_text(script_body or "import sys\n")
    (root / "conversion" / "llama.py").write_text(textwrap.dedent("""
        from .base import ModelBase, TextModel
        @ModelBase.register("LlamaForCausalLM", "MistralForCausalLM")
        @ModelBase.example("unsloth/Llama-3.2-1B-Instruct")
        class LlamaModel(TextModel):
            pass
        @other.register("NotAModel")
        class Other:
            pass
        """))
    (root / "gguf-py" / "pyproject.toml").write_text(
        '[project]\nname = "gguf"\ndependencies = ["numpy (>=2.2.6)", "tqdm (>=4.27)", "pyyaml (>=5.1)"]\n')
    (root / "requirements" / "requirements-convert_legacy_llama.txt").write_text(
        "numpy~=2.2.6\nsentencepiece>=0.1.98,<0.3.0\n\ntransformers==4.57.6\n\ngguf>=0.1.0\nprotobuf>=4.21.0,<5.0.0\n")
    (root / "requirements" / "requirements-convert_hf_to_gguf.txt").write_text(
        "-r ./requirements-convert_legacy_llama.txt\n--extra-index-url https://download.pytorch.org/whl/cpu\n\n"
        "## a comment\ntorch==2.11.0\n")
    return root


def test_registered_architectures_are_read_from_the_decorators(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "llama.cpp")
    assert conv.supported_architectures(root) == {"LlamaForCausalLM", "MistralForCausalLM"}
    with pytest.raises(BadInputError, match="architecture FooForCausalLM is not supported"):
        q.check_architecture({"architectures": ["FooForCausalLM"]}, conv.supported_architectures(root), tmp_path, "x")
    assert q.check_architecture({"architectures": ["MistralForCausalLM"]}, frozenset({"MistralForCausalLM"}),
                                tmp_path, "x") == "MistralForCausalLM"
    # A multimodal checkpoint: the converter takes the text model's architecture (get_model_architecture).
    assert q.architecture({"architectures": ["X"], "text_config": {"architectures": ["Y"]}}) == "Y"


def test_requirements_follow_the_converters_files(tmp_path: Path) -> None:
    root = fake_tree(tmp_path / "llama.cpp")
    torch, rest = conv.requirements(root)
    assert torch == "torch==2.11.0"
    # gguf comes from the vendored gguf-py (the script puts it on sys.path), so its dependencies instead of it.
    assert rest == ["numpy~=2.2.6", "sentencepiece>=0.1.98,<0.3.0", "transformers==4.57.6",
                    "protobuf>=4.21.0,<5.0.0", "tqdm (>=4.27)", "pyyaml (>=5.1)"]
    with_index = conv.torch_step("py", torch, "https://download.pytorch.org/whl/cpu")
    assert with_index.argv[-3:] == ["torch==2.11.0", "--index-url", "https://download.pytorch.org/whl/cpu"]
    assert conv.torch_step("py", torch, "").argv[-3:] == ["--no-index", "--no-deps", "torch"]


def test_unpack_keeps_only_the_converter(tmp_path: Path) -> None:
    import tarfile

    src = fake_tree(tmp_path / "src" / "llama_cpp_python-9.9" / "vendor" / "llama.cpp")
    (src / "ggml").mkdir()
    (src / "ggml" / "big.c").write_text("int x;\n")
    sdist = tmp_path / "llama_cpp_python-9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "src" / "llama_cpp_python-9.9", arcname="llama_cpp_python-9.9")
    root = tmp_path / "venv" / "llama.cpp-9.9"
    root.parent.mkdir()
    conv.unpack(sdist, root)
    assert (root / "convert_hf_to_gguf.py").is_file() and (root / "conversion" / "llama.py").is_file()
    assert not (root / "ggml").exists()
    assert [p.name for p in root.parent.iterdir()] == ["llama.cpp-9.9"]  # no temporary left


# -- failures and interruptions leave nothing behind ----------------------------------------------------------------


def _fake_converter(tmp_path: Path, body: str, monkeypatch) -> None:
    root = fake_tree(tmp_path / "conv" / "llama.cpp-9.9", "import sys, os, time\n" + textwrap.dedent(body))
    fake = Converter("9.9", root, sys.executable)
    monkeypatch.setattr(conv, "ensure_converter", lambda **_kw: fake)
    monkeypatch.setattr(conv, "supported_architectures", lambda _root: frozenset({"LlamaForCausalLM"}))


def _tiny(tmp_path: Path) -> Path:
    return header_only_checkpoint(tmp_path / "tiny", {**LLAMA_8B, "hidden_size": 256, "intermediate_size": 512,
                                                      "num_hidden_layers": 1, "vocab_size": 512,
                                                      "num_attention_heads": 4, "num_key_value_heads": 2})


def _left(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_tokenizer_refusal_is_bad_input_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    _fake_converter(tmp_path, """
        out = sys.argv[sys.argv.index("--outfile") + 1]
        open(out, "wb").write(b"GGUF half")
        def set_vocab():
            raise NotImplementedError("BPE pre-tokenizer was not recognized - update get_vocab_base_pre()")
        set_vocab()
        """, monkeypatch)
    outdir = tmp_path / "out"
    outdir.mkdir()
    req = q.QuantizeRequest(str(_tiny(tmp_path)), "Q4_K_M", outdir / "x.gguf")
    with pytest.raises(BadInputError, match="refuses its tokenizer: NotImplementedError: BPE pre-tokenizer"):
        q.quantize(req)
    assert _left(outdir) == []


def test_converter_crash_is_a_tool_failure_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    _fake_converter(tmp_path, """
        out = sys.argv[sys.argv.index("--outfile") + 1]
        open(out, "wb").write(b"GGUF half")
        raise MemoryError("out of memory")
        """, monkeypatch)
    outdir = tmp_path / "out"
    outdir.mkdir()
    with pytest.raises(q.QuantizeError, match="MemoryError: out of memory") as info:
        q.quantize(q.QuantizeRequest(str(_tiny(tmp_path)), "Q4_K_M", outdir / "x.gguf", keep_f16=True))
    assert info.value.exit_code != 2
    assert _left(outdir) == []


def test_interrupted_conversion_leaves_nothing(tmp_path: Path, monkeypatch, request) -> None:
    """Ctrl-C (SIGINT to advisor) while the converter writes: the child is stopped and no partial file stays."""
    # Python's own Ctrl-C handler, also where the suite was started in the background (a shell starts background
    # jobs with SIGINT ignored, and Python then keeps it ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    _fake_converter(tmp_path, """
        out = sys.argv[sys.argv.index("--outfile") + 1]
        open(out, "wb").write(b"GGUF half")
        print("writing", flush=True)
        os.kill(os.getppid(), 2)
        time.sleep(30)
        """, monkeypatch)
    outdir = tmp_path / "out"
    outdir.mkdir()
    with pytest.raises(KeyboardInterrupt):
        q.quantize(q.QuantizeRequest(str(_tiny(tmp_path)), "Q4_K_M", outdir / "x.gguf"))
    assert _left(outdir) == []


def test_quantizer_failure_leaves_nothing_and_llama_quantize_gets_its_arguments(tmp_path: Path, monkeypatch) -> None:
    """llama-quantize on PATH is used as llama.cpp's README shows it: [--imatrix F] IN OUT TYPE [THREADS]."""
    _fake_converter(tmp_path, """
        out = sys.argv[sys.argv.index("--outfile") + 1]
        open(out, "wb").write(b"GGUF f16")
        """, monkeypatch)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "llama-quantize"
    tool.write_text(f"#!{sys.executable}\nimport sys, json\nopen(sys.argv[-3], 'wb').write(b'GGUF q')\n"
                    f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\nsys.exit(1)\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    imatrix = tmp_path / "imatrix.gguf"
    imatrix.write_bytes(b"GGUF")
    outdir = tmp_path / "out"
    outdir.mkdir()
    with pytest.raises(q.QuantizeError, match="quantizer failed to make Q4_K_M"):
        q.quantize(q.QuantizeRequest(str(_tiny(tmp_path)), "Q4_K_M", outdir / "x.gguf", imatrix=imatrix))
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[:2] == ["--imatrix", str(imatrix)] and argv[-2] == "Q4_K_M"
    assert argv[-4].startswith(str(outdir / ".x-F16.gguf.partial"))
    assert _left(outdir) == []



def test_hub_repo_is_downloaded_then_converted(tmp_path: Path, monkeypatch) -> None:
    """A Hub repo id goes through advisor's snapshot download (huggingface_hub's cache, progress, resume; the one
    `advisor run` uses for vLLM) before the converter runs, and the result keeps the repo id as its source. (The
    download itself is tested with the fake Hub in the run tests; tests/fake_hub.py has no tree listing for
    snapshot_download, so it stands in here.)"""
    from advisor.hub import download

    src = _tiny(tmp_path / "snapshot")
    asked = []
    monkeypatch.setattr(download, "fetch_snapshot", lambda repo, rev, info: asked.append(repo) or src)
    _fake_converter(tmp_path, """
        args = sys.argv[1:]
        assert os.path.isfile(os.path.join(args[0], "config.json")), args
        open(args[args.index("--outfile") + 1], "wb").write(b"GGUF f16")
        """, monkeypatch)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "llama-quantize"
    tool.write_text(f"#!{sys.executable}\nimport sys\nopen(sys.argv[-3], 'wb').write(b'GGUF q4')\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out" / "t.gguf"
    out.parent.mkdir()
    result = q.quantize(q.QuantizeRequest("org/tiny-ckpt", "Q4_K_M", out))
    assert asked == ["org/tiny-ckpt"]
    assert result.to_dict() == {"path": str(out), "quant": "Q4_K_M", "size_bytes": 7, "source": "org/tiny-ckpt",
                                "f16_path": None}
    assert out.read_bytes() == b"GGUF q4" and _left(out.parent) == ["t.gguf"]


def test_setup_converter_dry_run_names_the_engines_version(tmp_path: Path) -> None:
    """The converter's version is the installed llama-cpp-python's (its distribution metadata); a dry run installs
    nothing and lists the venv and the source fetch."""
    import importlib.metadata

    done = run_advisor(["setup", "--converter", "--dry-run", "--json", "--venv", str(tmp_path / "conv")])
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["version"] == importlib.metadata.version("llama_cpp_python")
    assert plan["fetch_source"] is True and plan["root"] == str(tmp_path / "conv" / f"llama.cpp-{plan['version']}")
    assert plan["steps"][0]["argv"][1:3] == ["-m", "venv"]
    assert not (tmp_path / "conv").exists()
    text = run_advisor(["setup", "--converter", "--dry-run", "--venv", str(tmp_path / "conv")])
    assert text.returncode == 0 and "pip download --no-deps --no-binary llama-cpp-python" in text.stdout
