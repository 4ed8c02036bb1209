"""The planner's vLLM memory model against real vLLM start-up logs: tests/data/gpu-logs/logs.jsonl, v*.

For every V1 entry the model (advisor/planner/vllm.py) predicts, per rank, the logged "Available KV cache memory"
from the GPU's memory, gpu_memory_utilization, the logged model-loading size (weights), tensor parallelism,
max_num_batched_tokens / max_num_seqs and the model's config (activation peak + non-torch), and the logged
"GPU KV cache size: N tokens" from that prediction (page sizes, layer groups). Target: both within 5 %.
Our own weight estimate from the config (quant_layout.checkpoint_bytes / TP) is compared too, for information.

Constants were calibrated on some entries and checked on the others (CALIBRATED); what cannot meet the target or
cannot be run is listed with its reason (MISSES, OUT_OF_SCOPE, NO_LINE) and the test checks the lists are exact.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from advisor.catalog.model import Architecture
from advisor.vllm import memory as V

GIB = 2**30
LOGS = Path(__file__).resolve().parent / "data" / "gpu-logs" / "logs.jsonl"
ENTRIES = [json.loads(line) for line in LOGS.read_text().splitlines() if line.strip()]
VLLM = [e for e in ENTRIES if e["id"].startswith("v")]
TARGET = 0.05
RULES = Path(__file__).resolve().parents[1] / "rules" / "vllm.toml"


def shipped_rules() -> dict[str, Any]:
    """Every value the catch-all vLLM rules of rules/vllm.toml set, read at test time (never copied here)."""
    out: dict[str, Any] = {}
    for rule in tomllib.loads(RULES.read_text())["rule"]:
        if not rule["when"]:
            for k, v in rule["set"].items():
                out.setdefault(k, v)
    return out


COEF = V.coefficients(shipped_rules())


def _arch(name: str, **kw: Any) -> Architecture:
    kw.setdefault("head_dim_v", kw.get("head_dim_k"))
    return Architecture(name=name, tied_embeddings=False, source="HF config.json (the entry's hparams_source)", **kw)


QWEN2_7B = _arch("qwen2", n_layer=28, n_embd=3584, n_head=28, n_head_kv=4, head_dim_k=128, n_ff=18944,
                 vocab_size=152064)
GPTOSS = dict(n_embd=2880, n_head=64, n_head_kv=8, head_dim_k=64, n_ff=2880, vocab_size=201088,
              sliding_window=128, sliding_window_pattern=2, n_expert_used=4, n_ff_expert=2880)

#: What the log does not print, from the model's config.json (hparams_source of each entry), GPU totals where the
#: log gives none, the checkpoint format for our weight estimate, and the entry's vLLM settings in effect.
#: total_gib: v06/v09/v11 print no total; A100 80GB is 79.15 GiB as torch reports it (v03 prints 79.15 for an
#: A100-SXM4-80GB); A100 40GB is 39.39 GiB (torch's total for A100-SXM4-40GB; an assumption, not in the corpus).
#: sampler: which top-k/top-p path the version runs in the profile (planner/vllm.py SAMPLER_BYTES_PER_LOGIT).
#: max_num_batched_tokens / max_num_seqs: the log's value, else EngineArgs.get_batch_defaults for `vllm serve`
#: (H100 >= 70 GiB: 8192 / 1024; A100: 2048 / 256; vllm/engine/arg_utils.py get_batch_defaults).
SETUP: dict[str, dict[str, Any]] = {
    "v06_qwen2_7b_a100_80g_u025": dict(arch=QWEN2_7B, fmt=("safetensors", "bf16"), total_gib=79.15, util=0.25,
                                       mnbt=2048, seqs=256, block=16, sampler="flashinfer"),
    "v08_qwen2_7b_2xa100_40g_tp2_diffnodes": dict(arch=QWEN2_7B, fmt=("safetensors", "bf16"), total_gib=39.39,
                                                  util=0.5, mnbt=2048, seqs=256, block=16, sampler="flashinfer"),
    "v09_qwen2_7b_2xa100_80g_tp2_u025": dict(arch=QWEN2_7B, fmt=("safetensors", "bf16"), total_gib=79.15,
                                             util=0.25, mnbt=2048, seqs=256, block=16, sampler="flashinfer"),
    "v11_gptoss120b_4xa100_80g_tp4": dict(arch=_arch("gpt-oss", n_layer=36, n_expert=128, **GPTOSS),
                                          fmt=("mxfp4", "mxfp4"), total_gib=79.15, util=0.8, mnbt=2048, seqs=256,
                                          block=16, sampler="flashinfer"),
    "v12_gptoss20b_h100_v011": dict(arch=_arch("gpt-oss", n_layer=24, n_expert=32, **GPTOSS),
                                    fmt=("mxfp4", "mxfp4"), mnbt=8192, seqs=1024, block=128, sampler="native"),
    "v14_llama33_70b_fp8_2xh100_tp2_v011": dict(
        arch=_arch("llama", n_layer=80, n_embd=8192, n_head=64, n_head_kv=8, head_dim_k=128, n_ff=28672,
                   vocab_size=128256), fmt=("fp8", "fp8"), mnbt=8192, seqs=1024, block=128, sampler="native"),
    "v15_mistralsmall32_24b_h100_v011": dict(
        arch=_arch("llama", n_layer=40, n_embd=5120, n_head=32, n_head_kv=8, head_dim_k=128, n_ff=32768,
                   vocab_size=131072), fmt=("safetensors", "bf16"), mnbt=8192, seqs=1024, block=128,
        sampler="native"),
}

#: V0 entries: out of scope, with the reason.
V0 = ("V0 engine (worker.py / executor_base.py '# GPU blocks'): a different profile (CUDA-graph and sampler "
      "handling, CPU swap blocks, '# GPU blocks' instead of 'GPU KV cache size') that the planner does not target; "
      "vLLM removed V0 in 0.11")
OUT_OF_SCOPE: dict[str, str] = {
    "v02_phi4_gptq_a100_v06": V0 + " (vLLM ~0.6.4, LLM() offline API)",
    "v03_phi4_bnb_a100_v082": V0 + " (0.8.2 falls back to V0 for bitsandbytes)",
    "v04_qwen2.5_0.5b_bnb_4090_48g_v0100": V0 + " (0.10.0 via Unsloth, bitsandbytes)",
    "v05_qwen2.5_0.5b_bnb_4090d_v085": V0 + " (0.8.5 via Unsloth, bitsandbytes)",
}

#: (entry, buffer) rows whose reported value the log does not give.
NO_LINE: dict[tuple[str, str], str] = {
    ("v12_gptoss20b_h100_v011", "kv_tokens"): "derived summary without the 'GPU KV cache size' line",
    ("v14_llama33_70b_fp8_2xh100_tp2_v011", "kv_tokens"): "derived summary without the 'GPU KV cache size' line",
}

#: The calibration set: which entries set which constant of rules/vllm.toml. A calibrated row is still tested, but
#: is not evidence for the constant it set; the evaluation set is every other entry run (EVALUATION).
CALIBRATED: dict[str, str] = {
    "v12_gptoss20b_h100_v011": "sampler_bytes_per_logit.native (activation 7.38 GiB) and non_torch_mib (0.13 GiB)",
    "v14_llama33_70b_fp8_2xh100_tp2_v011": "non_torch_tp_mib (non-torch 0.55 GiB at TP2); its activation is held out",
    "v06_qwen2_7b_a100_80g_u025": "sampler_bytes_per_logit.flashinfer (0.53 GiB of activation + non-torch)",
}
EVALUATION: tuple[str, ...] = tuple(e for e in SETUP if e not in CALIBRATED)

#: In-target rows that miss: (bound, reason). The bound is the |error| measured when the entry was listed: the row
#: must still miss (else drop it) and must not get worse than the bound.
MISSES: dict[tuple[str, str], tuple[float, str]] = {
    ("v15_mistralsmall32_24b_h100_v011", "kv_avail"): (0.096, "activation peak logged 2.12 GiB, 17 B per logit of "
    "1024 x 131072 against 38.5 (v12) and 39.6 (v14) on the same vLLM 0.11 / H100 setup; the forward pass alone "
    "(mnbt 8192) is about that size, so the sampler warm-up was smaller there (perhaps a lower max_num_seqs, not in "
    "the derived summary; multimodal Mistral3 with mistral-format loading): we predict 4.8 GiB, 2.7 GiB short"),
    ("v15_mistralsmall32_24b_h100_v011", "kv_tokens"): (0.096, "follows the available-memory miss (tokens from the "
    "logged 28.20 GiB are exact: 1444 blocks x 128)"),
    ("v08_qwen2_7b_2xa100_40g_tp2_diffnodes", "kv_avail"): (0.054, "1.54 GiB of activation + non-torch against 0.65 "
    "GiB for the same model, TP and vLLM on 80 GB A100s in one node (v09): TP across two nodes over Ray (NCCL network "
    "buffers) and an A100 40GB total the log does not print (39.39 GiB assumed)"),
    ("v08_qwen2_7b_2xa100_40g_tp2_diffnodes", "kv_tokens"): (0.054, "follows the available-memory miss"),
}


def model_of(setup: dict[str, Any]) -> Any:
    return setup["arch"]


def total_bytes(entry: dict[str, Any], setup: dict[str, Any]) -> int:
    gib = entry["device"].get("total_gpu_memory_GiB") or setup["total_gib"]
    return int(gib * GIB)


def util_of(entry: dict[str, Any], setup: dict[str, Any]) -> float:
    return float(entry["settings"].get("gpu_memory_utilization") or setup["util"])


def version_of(entry: dict[str, Any]) -> tuple[int, int]:
    """The vLLM version family the log names ("vLLM 0.10.1.1 (...)", "vLLM 0.11.0 (...)")."""
    import re

    m = re.search(r"(\d+)\.(\d+)", entry["engine"])
    assert m, entry["engine"]
    return int(m.group(1)), int(m.group(2))


def config_of(entry: dict[str, Any]) -> V.Config:
    s = SETUP[entry["id"]]
    tp = int(entry["settings"].get("tensor_parallel_size") or 1)
    return V.Config(gpu_memory_utilization=util_of(entry, s), max_model_len=16000, max_num_seqs=s["seqs"],
                    max_num_batched_tokens=s["mnbt"], tensor_parallel_size=tp, block_size=s["block"],
                    version=version_of(entry))


def predict(entry: dict[str, Any], weights: int | None = None) -> dict[str, int]:
    """Rank 0 through advisor.vllm.memory.startup (what `advisor estimate --engine vllm` runs), from the log's
    weights per rank (or ``weights``)."""
    s = SETUP[entry["id"]]
    cfg = config_of(entry)
    if weights is None:
        weights = int(entry["reported"]["model_loading_GiB"] * GIB)
    tp = cfg.tensor_parallel_size
    r0 = V.startup(s["arch"], weights * tp, [total_bytes(entry, s)] * tp, cfg, COEF)[0]
    return {"activation": r0.activation_peak_bytes, "non_torch": r0.non_torch_bytes, "kv_avail": r0.kv_cache_bytes,
            "kv_tokens": r0.kv_tokens}


def config_weights(entry: dict[str, Any]) -> int:
    from advisor.gguf import layout as quant_layout
    s = SETUP[entry["id"]]
    tp = int(entry["settings"].get("tensor_parallel_size") or 1)
    fmt, quant = s["fmt"]
    return quant_layout.checkpoint_bytes(s["arch"], fmt, quant) // tp


def rows(entry: dict[str, Any]) -> list[tuple[str, float, float, float | None]]:
    """(buffer, ours, reported, target) for one V1 entry. Sizes in bytes, tokens in tokens."""
    r = entry["reported"]
    p = predict(entry)
    out: list[tuple[str, float, float, float | None]] = [
        ("weights", float(config_weights(entry)), r["model_loading_GiB"] * GIB, None),
        ("kv_avail", float(p["kv_avail"]), r["available_kv_cache_GiB"] * GIB, TARGET),
    ]
    if "gpu_kv_cache_tokens" in r:
        out.append(("kv_tokens", float(p["kv_tokens"]), float(r["gpu_kv_cache_tokens"]), TARGET))
    return out


def device_of(entry: dict[str, Any]) -> str:
    tp = int(entry["settings"].get("tensor_parallel_size") or 1)
    return f"gpu0{'/' + str(tp) if tp > 1 else ''}"


def within(ours: float, theirs: float, tgt: float) -> bool:
    return abs(ours - theirs) <= tgt * abs(theirs)


def test_every_vllm_entry_is_run_or_listed() -> None:
    ids = {e["id"] for e in VLLM}
    assert ids == set(SETUP) | set(OUT_OF_SCOPE), ids ^ (set(SETUP) | set(OUT_OF_SCOPE))
    assert not set(SETUP) & set(OUT_OF_SCOPE)
    for e in VLLM:
        assert (e["id"] in OUT_OF_SCOPE) == ("V0" in e["engine"] or "~0.6" in e["engine"]), e["id"]


@pytest.mark.parametrize("entry", [e for e in VLLM if e["id"] in SETUP], ids=lambda e: e["id"])
def test_available_kv_and_tokens(entry: dict[str, Any]) -> None:
    seen = set()
    for buf, ours, theirs, tgt in rows(entry):
        if tgt is None:
            continue
        seen.add(buf)
        key = (entry["id"], buf)
        if key in MISSES:
            assert not within(ours, theirs, tgt), f"{key} now passes: drop it from MISSES"
            bound = MISSES[key][0]
            assert abs(ours - theirs) <= bound * theirs, \
                f"{key} got worse: {(ours - theirs) / theirs:+.2%}, bound {bound:.1%}"
        else:
            assert within(ours, theirs, tgt), (key, ours, theirs, (ours - theirs) / theirs)
    assert {"kv_avail", "kv_tokens"} - seen == {b for (eid, b) in NO_LINE if eid == entry["id"]}


@pytest.mark.parametrize("entry", [e for e in VLLM if e["id"] in SETUP and "gpu_kv_cache_tokens" in e["reported"]],
                         ids=lambda e: e["id"])
def test_tokens_from_logged_memory_are_exact(entry: dict[str, Any]) -> None:
    """The KV layout alone: the logged available memory (rounded to 0.01 GiB) gives the logged token count to
    within that rounding (page size, layer groups, blocks)."""
    r = entry["reported"]
    s = SETUP[entry["id"]]
    tp = int(entry["settings"].get("tensor_parallel_size") or 1)
    m = model_of(s)
    lo = V.kv_capacity_tokens(m, int((r["available_kv_cache_GiB"] - 0.005) * GIB), tp, s["block"])
    hi = V.kv_capacity_tokens(m, int((r["available_kv_cache_GiB"] + 0.005) * GIB), tp, s["block"])
    assert lo <= r["gpu_kv_cache_tokens"] <= hi


@pytest.mark.parametrize("eid", ["v12_gptoss20b_h100_v011", "v14_llama33_70b_fp8_2xh100_tp2_v011",
                                 "v15_mistralsmall32_24b_h100_v011"])
def test_logged_components_add_up(eid: str) -> None:
    """Where the summary gives every term, util x total - weights - activation - non-torch is the logged
    available memory (determine_available_memory), to the 0.01 GiB rounding of four terms."""
    e = next(x for x in VLLM if x["id"] == eid)
    r, s = e["reported"], SETUP[eid]
    gib = lambda k: int(r[k] * GIB)  # noqa: E731
    avail = V.available_kv_bytes(total_bytes(e, s), util_of(e, s), gib("model_loading_GiB"),
                                 gib("activation_peak_GiB"), gib("non_torch_GiB"))
    assert abs(avail / GIB - r["available_kv_cache_GiB"]) <= 0.02


def test_tp1_failure_of_v14_is_predicted() -> None:
    """v14's TP=1 attempt: 67.72 GiB of weights on one H100 leave nothing ('No available memory for the cache
    blocks'); the model must say so too."""
    e = next(x for x in VLLM if x["id"] == "v14_llama33_70b_fp8_2xh100_tp2_v011")
    s = SETUP[e["id"]]
    m = model_of(s)
    act = V.activation_peak_bytes(m, s["mnbt"], s["seqs"], 1, COEF, s["sampler"])
    avail = V.available_kv_bytes(total_bytes(e, s), 0.9, int(67.72 * GIB), act, V.non_torch_bytes(1, COEF))
    assert avail < 0
    assert abs(avail / GIB - e["reported"]["tp1_failure"]["available_kv_cache_GiB"]) < 0.3


@pytest.mark.parametrize("entry", [e for e in VLLM if e["id"] in SETUP and "max_concurrency" in e["reported"]],
                         ids=lambda e: e["id"])
def test_max_concurrency_from_logged_memory(entry: dict[str, Any]) -> None:
    """'Maximum concurrency for L tokens per request: C x' from the logged available memory: the block count over
    the blocks one request needs in every KV cache group (get_max_concurrency_for_kv_cache_config), within the
    0.01 GiB rounding of the logged memory."""
    r = entry["reported"]
    s, cfg = SETUP[entry["id"]], config_of(entry)
    length = r["max_concurrency"]["tokens_per_request"]
    got = [V.max_concurrency(s["arch"], int((r["available_kv_cache_GiB"] + d) * GIB), cfg.tensor_parallel_size,
                             length, s["mnbt"], s["block"]) for d in (-0.005, 0.005)]
    assert got[0] - 0.01 <= r["max_concurrency"]["x"] <= got[1] + 0.01, (got, r["max_concurrency"])


def test_sets_are_named_and_disjoint() -> None:
    """Calibration and evaluation sets partition the entries that are run; the evaluation set is not empty."""
    assert set(CALIBRATED) | set(EVALUATION) == set(SETUP)
    assert not set(CALIBRATED) & set(EVALUATION) and len(EVALUATION) >= 4


# --- `advisor estimate DIR --engine vllm` on the same logs: the model given as a checkpoint directory ---------------

def write_checkpoint(d: Path, arch: Architecture, *, bias: bool, tied: bool = False, dtype: str = "BF16",
                     max_pos: int = 32768) -> Path:
    """A transformers checkpoint directory without its data: config.json (LlamaConfig / Qwen2Config keys) and one
    .safetensors file holding only its header (8-byte length + JSON of name -> dtype/shape/data_offsets, the
    safetensors format), the tensor names and shapes of transformers' LlamaForCausalLM / Qwen2ForCausalLM."""
    d.mkdir(parents=True, exist_ok=True)
    a = arch
    cfg = {"model_type": "qwen2" if bias else "llama", "num_hidden_layers": a.n_layer, "hidden_size": a.n_embd,
           "num_attention_heads": a.n_head, "num_key_value_heads": a.n_head_kv, "head_dim": a.head_dim_k,
           "intermediate_size": a.n_ff, "vocab_size": a.vocab_size, "max_position_embeddings": max_pos,
           "tie_word_embeddings": tied, "torch_dtype": "bfloat16"}
    (d / "config.json").write_text(json.dumps(cfg))
    q, kv = a.n_head * a.head_dim_k, a.n_head_kv * a.head_dim_k
    shapes: dict[str, list[int]] = {"model.embed_tokens.weight": [a.vocab_size, a.n_embd]}
    for il in range(a.n_layer):
        p = f"model.layers.{il}."
        shapes.update({p + "self_attn.q_proj.weight": [q, a.n_embd], p + "self_attn.k_proj.weight": [kv, a.n_embd],
                       p + "self_attn.v_proj.weight": [kv, a.n_embd], p + "self_attn.o_proj.weight": [a.n_embd, q],
                       p + "mlp.gate_proj.weight": [a.n_ff, a.n_embd], p + "mlp.up_proj.weight": [a.n_ff, a.n_embd],
                       p + "mlp.down_proj.weight": [a.n_embd, a.n_ff], p + "input_layernorm.weight": [a.n_embd],
                       p + "post_attention_layernorm.weight": [a.n_embd]})
        if bias:
            shapes.update({p + "self_attn.q_proj.bias": [q], p + "self_attn.k_proj.bias": [kv],
                           p + "self_attn.v_proj.bias": [kv]})
    shapes["model.norm.weight"] = [a.n_embd]
    if not tied:
        shapes["lm_head.weight"] = [a.vocab_size, a.n_embd]
    header: dict[str, Any] = {}
    off = 0
    for name, shape in shapes.items():
        n = 2
        for x in shape:
            n *= x
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    (d / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw)  # the data region is absent
    return d


def _hardware(tmp: Path, n: int, total: int) -> Path:
    from advisor.probe.profile import Gpu, HardwareProfile

    gpus = [Gpu(index=i, vendor="nvidia", name="NVIDIA A100-SXM4-80GB", backend="cuda", memory_total_bytes=total)
            for i in range(n)]
    p = tmp / "hw.json"
    p.write_text(json.dumps(HardwareProfile(gpus=gpus).to_dict()))
    return p


CLI_ENTRIES = ["v06_qwen2_7b_a100_80g_u025", "v09_qwen2_7b_2xa100_80g_tp2_u025"]


@pytest.mark.parametrize("eid", CLI_ENTRIES)
def test_cli_engine_vllm_from_checkpoint_dir(eid: str, tmp_path: Path) -> None:
    """advisor estimate DIR --engine vllm --json with the log's settings: weights from the safetensors headers,
    available KV memory and KV tokens within 5 % of the log (v06 is calibration, v09 evaluation)."""
    import subprocess
    import sys

    e = next(x for x in VLLM if x["id"] == eid)
    s, cfg = SETUP[eid], config_of(e)
    d = write_checkpoint(tmp_path / "ckpt", s["arch"], bias=True)
    hw = _hardware(tmp_path, cfg.tensor_parallel_size, total_bytes(e, s))
    args = [str(d), "--engine", "vllm", "--hardware", str(hw), "--gpu-memory-utilization", str(util_of(e, s)),
            "--max-model-len", str(e["reported"]["max_concurrency"]["tokens_per_request"]),
            "--max-num-batched-tokens", str(s["mnbt"]), "--max-num-seqs", str(s["seqs"]),
            "--tensor-parallel-size", str(cfg.tensor_parallel_size), "--vllm-version", "0.10", "--json"]
    r = subprocess.run([sys.executable, "-m", "advisor", "estimate", *args], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["engine"] == "vllm" and len(doc["ranks"]) == cfg.tensor_parallel_size
    rank = doc["ranks"][0]
    assert set(rank) >= {"rank", "weights_bytes", "activation_peak_bytes", "non_torch_bytes", "kv_cache_bytes",
                         "kv_tokens"}
    rep = e["reported"]
    assert within(rank["weights_bytes"], rep["model_loading_GiB"] * GIB, 0.01)
    assert within(rank["kv_cache_bytes"], rep["available_kv_cache_GiB"] * GIB, TARGET)
    assert within(rank["kv_tokens"], rep["gpu_kv_cache_tokens"], TARGET)
    assert within(doc["max_concurrency"], rep["max_concurrency"]["x"], TARGET)


def test_cli_engine_vllm_bad_input(tmp_path: Path) -> None:
    """Bad input: one line on stderr, exit 2."""
    import subprocess
    import sys

    d = write_checkpoint(tmp_path / "ckpt", QWEN2_7B, bias=True)
    hw = _hardware(tmp_path, 1, 80 * GIB)
    for extra in (["--vllm-version", "0.6"], ["--gpu-memory-utilization", "1.5"], ["--tensor-parallel-size", "2"],
                  ["--kv-cache-dtype", "int3"]):
        r = subprocess.run([sys.executable, "-m", "advisor", "estimate", str(d), "--engine", "vllm", "--hardware",
                            str(hw), *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (extra, r.stderr)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "advisor", "estimate", str(tmp_path / "bad"), "--engine", "vllm",
                        "--hardware", str(hw)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr


from tests.fake_hub import FakeHub, fake_hub_fixture  # noqa: E402,F401 - the fake_hub fixture


def test_engine_vllm_from_hub_reads_headers_only(tmp_path: Path, fake_hub: FakeHub, monkeypatch) -> None:
    """A Hub repo: config.json and the safetensors header by range requests (no weight data), same answer as the
    local directory."""
    from advisor.app.estimate import VllmRequest, vllm_estimate

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    d = write_checkpoint(tmp_path / "ckpt", QWEN2_7B, bias=True)
    fake_hub.add("org/qwen2-7b", {"config.json": d / "config.json", "model.safetensors": d / "model.safetensors"})
    hw = _hardware(tmp_path, 1, int(79.15 * GIB))
    hub = vllm_estimate(VllmRequest(model="org/qwen2-7b", hardware=hw, gpu_memory_utilization=0.25))
    local = vllm_estimate(VllmRequest(model=str(d), hardware=hw, gpu_memory_utilization=0.25))
    assert hub.ranks == local.ranks and hub.checkpoint.weights_bytes == local.checkpoint.weights_bytes
    assert "Hub" in hub.checkpoint.source
