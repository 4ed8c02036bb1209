"""The estimator against llama.cpp's own memory plan, recorded on an H200 and on this project's CPU
(tests/cuda_memprobe.py): every buffer of every case within target, or a listed miss no worse than its bound.
Replayed without a GPU or an engine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from advisor.gguf.estimate import compute_bytes, estimate, gpu_compute_bytes
from advisor.gguf.facts import read_gguf_facts
from tests import cuda_memprobe as cm
from tests import ggufgen

ROWS = [r for r in cm.rows() if "buffers" in r]
MODELS = sorted({r["label"].split("|")[0] for r in ROWS})
CPU_ROWS = cm.rows(cm.DATA_CPU)
CPU_MODELS = sorted({r["label"].split("|")[0] for r in CPU_ROWS})


@pytest.fixture(scope="module")
def header_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("memprobe-models")


def test_the_recording_covers_the_settings_and_architectures() -> None:
    assert {r["label"].split("|")[2] for r in ROWS} == set(cm.MEM_SETTINGS)
    assert len(MODELS) >= 12


@pytest.mark.parametrize("model_id", MODELS)
def test_buffers_match_llamacpp(model_id: str, header_dir: Path) -> None:
    results = [(row["label"].split("|")[2], *c) for row in ROWS if row["label"].startswith(model_id + "|")
               for c in cm.compare(row, header_dir)]
    bad = []
    for setting, dev, buf, ours, theirs, ok in results:
        miss = cm.miss_of(model_id, setting, dev, buf)
        err = (ours - theirs) / theirs if theirs else float("inf")
        if not ok and (miss is None or abs(err) > miss[0]):
            bad.append(f"{setting} {dev} {buf}: ours {ours / 2**20:.2f} MiB, llama.cpp {theirs / 2**20:.2f} MiB "
                       f"({err:+.1%})" + (f", listed bound {miss[0]:.0%}" if miss else ""))
    stale = [f"{s} {dev} {buf} is within target everywhere: remove it from MISSES"
             for (m, s, dev, buf) in cm.MISSES if m == model_id
             and all(ok for setting, d, b, *_, ok in results if (d, b) == (dev, buf) and s in ("*", setting))]
    assert not bad and not stale, "; ".join(bad + stale)


def test_a_gpu_without_layers_still_gets_the_logits_matmul(header_dir: Path) -> None:
    """-ngl 0 with a CUDA GPU: llama.cpp's plan gives the GPU the output weight and the logits (op offload)."""
    row = next(r for r in ROWS if r["label"] == "llama-3.1-8b-instruct|Q4_K_M|c4096-ngl0")
    got = {(d, b): (o, t) for d, b, o, t, _ in cm.compare(row, header_dir)}
    ours, theirs = got[("gpu0", "compute")]
    assert theirs > 600 * 2**20 and abs(ours - theirs) <= 0.02 * theirs


def test_the_cpu_recording_covers_every_catalog_architecture() -> None:
    from advisor.catalog.load import load_catalog

    archs = {m.arch.name for m in load_catalog().models}
    recorded = {load_catalog().get(m).arch.name for m in CPU_MODELS}
    assert all("buffers" in r for r in CPU_ROWS)
    assert recorded == archs


@pytest.mark.parametrize("model_id", CPU_MODELS)
def test_cpu_buffers_match_llamacpp(model_id: str, header_dir: Path) -> None:
    """Weights and KV of every architecture exactly; the CPU compute buffer within 5 % or 2 MiB, or a listed miss."""
    bad = []
    for row in (r for r in CPU_ROWS if r["label"].startswith(model_id + "|")):
        setting = row["label"].split("|")[2]
        for dev, buf, ours, theirs, ok in cm.compare(row, header_dir, gpu=False):
            miss = cm.CPU_MISSES.get((model_id, setting)) or cm.CPU_MISSES.get((model_id, "*"))
            err = (ours - theirs) / theirs if theirs else float("inf")
            if not ok and (buf != "compute" or miss is None or abs(err) > miss[0]):
                bad.append(f"{setting} {dev} {buf}: ours {ours / 2**20:.2f} MiB, llama.cpp {theirs / 2**20:.2f} MiB "
                           f"({err:+.1%})")
    assert not bad, "; ".join(bad)


def test_gemma3n_output_copy_costs_memory_only_without_mmap(header_dir: Path) -> None:
    """llama-cpp-python 0.3.36 on this CPU, gemma-3n-e4b-it Q4_K_M header-only: model buffer 4614.22 MiB with mmap
    (the tied output maps the same file bytes), 5034.63 MiB without (a second copy of the Q6_K token_embd)."""
    from advisor.gguf.estimate import Settings, estimate
    from advisor.gguf.facts import read_gguf_facts
    from tests import gguf_from_catalog

    path = header_dir / "gemma-3n-e4b-it-Q4_K_M.gguf"
    if not path.exists():
        gguf_from_catalog.write_any_quant(path, "gemma-3n-e4b-it", "Q4_K_M")
    facts = read_gguf_facts(path)
    mib = {mm: estimate(facts, Settings(n_ctx=4096, n_parallel=1, mmap=mm)).weights_bytes / 2**20
           for mm in (True, False)}
    assert abs(mib[True] - 4614.22) < 0.01 and abs(mib[False] - 5034.63) < 0.01


#: Dense catalog models whose CPU compute buffer at 4096 cells is their logits phase (V + 2E, V + 3E with
#: starcoder2's LayerNorm biases): llama.cpp's plan and the estimate agree to the byte there.
LOGITS_PEAK = ("llama-3.1-8b-instruct", "gemma-3-12b-it", "gemma-2-9b-it", "phi-4-mini-instruct",
               "deepseek-r1-distill-qwen-7b", "deepseek-r1-0528-qwen3-8b", "codegemma-1.1-7b-it", "starcoder2-7b",
               "smollm3-3b")


@pytest.mark.parametrize("model_id", LOGITS_PEAK)
def test_the_cpu_logits_phase_is_exact(model_id: str, header_dir: Path) -> None:
    row = next(r for r in CPU_ROWS if r["label"].startswith(model_id + "|") and r["label"].endswith("|c4096"))
    (ours, theirs), = [(o, t) for d, b, o, t, _ in cm.compare(row, header_dir, gpu=False) if b == "compute"]
    assert abs(ours - theirs) <= 0.001 * theirs, (ours / 2**20, theirs / 2**20)


CASE_ROWS = cm.rows(cm.DATA_CASES)


def test_extra_cases_weights_and_caches_match(header_dir: Path) -> None:
    """The second H200 run's ubatch, -ngl and stream series (out of sample): weights and KV exact everywhere."""
    bad = [f"{row['label']} {dev} {buf}: {ours} vs {theirs}" for row in CASE_ROWS
           for dev, buf, ours, theirs, ok in cm.compare(row, header_dir) if buf != "compute" and not ok]
    assert len(CASE_ROWS) >= 100 and not bad, bad


#: MoE models whose GPU compute buffer the estimator gets within target once the CUDA fusions are off: the excess
#: of the default runs is the fused MoE reduction's allocation dependencies (ggml-cuda.cu graph_optimize), not a
#: phase of llama.cpp's graph.
UNFUSED_EXACT = ("qwen3-30b-a3b", "glm-4.5-air", "qwen3-next-80b-a3b-instruct", "qwen3.5-35b-a3b", "gpt-oss-20b",
                 "llama-4-scout-17b-16e-instruct")


@pytest.mark.parametrize("model_id", UNFUSED_EXACT)
def test_without_cuda_fusions_the_moe_graph_matches(model_id: str, header_dir: Path) -> None:
    rows = [r for r in CASE_ROWS if r["label"].startswith(model_id + "|") and cm.parse_label(r["label"])[3]
            == cm.NO_FUSION]
    assert len(rows) == 4
    for row in rows:
        got = {(d, b): ok for d, b, _o, _t, ok in cm.compare(row, header_dir)}
        assert got[("gpu0", "compute")], row["label"]


def test_flash_attention_without_a_cuda_kernel_holds_kv_views_on_the_host(header_dir: Path) -> None:
    """DeepSeek-V2-Lite (attn_kv_b, K 192 / V 128, GQA ratio 1) with -fa on: the FA op runs on the CPU and the
    host buffer grows by one layer's K and V views per cell (58 to 366 MiB from 4096 to 32768 cells)."""
    rows = [r for r in CASE_ROWS + cm.rows() if r["label"].startswith("deepseek-coder-v2-lite-instruct|")
            and "-fa on -ngl 999" in cm.parse_label(r["label"])[2] and not cm.parse_label(r["label"])[3]]
    assert len(rows) >= 4
    for row in rows:
        (ours, theirs), = [(o, t) for d, b, o, t, _ in cm.compare(row, header_dir) if (d, b) == ("host", "compute")]
        assert abs(ours - theirs) <= 0.01 * theirs, row["label"]


def test_flash_attention_auto_turns_off_without_a_cuda_kernel(header_dir: Path) -> None:
    """-fa auto on the same model: llama.cpp logs "Flash Attention not supported, set to disabled" and, its cache
    made before the check with V untransposed, holds only the inputs and the f32 mask on the host (16.01 and
    72.01 MiB at 4096 and 32768 cells); a model with a kernel keeps it on (DeepSeek-V3.1, one latent head)."""
    from advisor.gguf.estimate import estimate
    from advisor.gguf.facts import read_gguf_facts

    rows = [r for r in CASE_ROWS if "-fa auto -ngl 999" in cm.parse_label(r["label"])[2]]
    assert len(rows) == 4
    for row in rows:
        got = {(d, b): ok for d, b, _o, _t, ok in cm.compare(row, header_dir)}
        assert got[("host", "compute")] and got[("gpu0", "context")], row["label"]
    # without FA an untransposed V is copied transposed on the GPU: 1232 MiB against llama.cpp's 1276.40 at 32768
    # cells (1104 without that copy)
    long = next(r for r in rows if "-c 32768" in cm.parse_label(r["label"])[2])
    assert {(d, b): ok for d, b, _o, _t, ok in cm.compare(long, header_dir)}[("gpu0", "compute")]
    for row in rows:
        model_id, quant, flags, _ = cm.parse_label(row["label"])
        facts = read_gguf_facts(header_dir / f"{model_id}-{quant}.gguf")
        on = estimate(facts, cm.settings_of(flags.split())).flash_attn
        assert on == (model_id != "deepseek-coder-v2-lite-instruct"), row["label"]


def test_flash_attention_auto_looks_at_the_layers_on_the_gpu(header_dir: Path) -> None:
    """llama.cpp's auto check compares each layer's FA op with the layer's device: with -ngl 1 only the output
    layer is on the GPU and FA stays on; with -ngl 2 a layer is there and FA goes off. A quantized V cache turns
    auto into on before the check, so the FA ops run on the CPU (host 39.29 MiB with q8_0 K/V views)."""
    from advisor.gguf.estimate import estimate
    from advisor.gguf.facts import read_gguf_facts

    model = "deepseek-coder-v2-lite-instruct"
    rows = {cm.parse_label(r["label"])[2]: r for r in CASE_ROWS if r["label"].startswith(model + "|")}
    q8 = "-c 4096 -np 1 -fa auto -ctk q8_0 -ctv q8_0 -ngl 999"
    for flags, want in (("-c 4096 -np 1 -fa auto -ngl 1", True), ("-c 4096 -np 1 -fa auto -ngl 2", False),
                        (q8, True)):
        got = {(d, b): ok for d, b, _o, _t, ok in cm.compare(rows[flags], header_dir)}
        facts = read_gguf_facts(header_dir / f"{model}-Q4_K_M.gguf")
        assert estimate(facts, cm.settings_of(flags.split())).flash_attn == want, flags
        assert all(ok for (d, b), ok in got.items() if b != "compute"), flags
    assert {(d, b): ok for d, b, _o, _t, ok in cm.compare(rows[q8], header_dir)}[("host", "compute")]


@pytest.mark.parametrize("model_id", ["gpt-oss-20b", "qwen3-next-80b-a3b-instruct", "qwen3.5-35b-a3b", "qwen3.5-9b"])
def test_the_kept_hidden_state_is_live_at_the_logits(model_id: str, header_dir: Path) -> None:
    """Graphs that mark every token's final hidden state as an output (res->t_h_nextn) before taking the output
    rows hold V + 3E at the logits on the CPU: exact where no hole sits below them (131072 cells, a q8_0 cache)."""
    for setting in ("c131072", "c16384-q8"):
        row = next(r for r in CPU_ROWS if r["label"].startswith(f"{model_id}|") and r["label"].endswith(setting))
        (ours, theirs), = [(o, t) for d, b, o, t, _ in cm.compare(row, header_dir, gpu=False) if b == "compute"]
        assert abs(ours - theirs) <= 0.001 * theirs, (setting, ours, theirs)


def test_absorbed_mla_attention_is_exact_on_the_cpu(header_dir: Path) -> None:
    """DeepSeek-V3.1 (split MLA): the query chain stacks under the KQ scores, with and without flash attention;
    every recorded CPU case but one (4 unified streams without FA, 0.2 % over) within 0.1 %."""
    rows = [r for r in CPU_ROWS if r["label"].startswith("deepseek-v3.1|")]
    close = 0
    for row in rows:
        (ours, theirs), = [(o, t) for d, b, o, t, _ in cm.compare(row, header_dir, gpu=False) if b == "compute"]
        close += abs(ours - theirs) <= 0.001 * theirs
        assert abs(ours - theirs) <= 0.005 * theirs, row["label"]
    assert close >= len(rows) - 1


#: The one SPECS case out of target, with its bound: with a feed-forward width of half n_embd the GPU's FFN phase
#: (3F + mask + 4E, set on real models whose F-sized tensors cannot reuse the attention block's E-sized holes)
#: overcounts: here those tensors fit in the holes and the attention phase's mask + 4E is the peak.
SPEC_MISSES = {("gqa-h16-kv4-d64|-c_16384_-np_1_-fa_on_-ngl_999", "gpu0", "compute"): 0.13}


@pytest.mark.parametrize("data,gpu", [(cm.DATA_SPECS, True), (cm.DATA_SPECS_CPU, False)])
def test_small_vocabulary_attention_phases(data: Path, gpu: bool, header_dir: Path) -> None:
    """Shapes whose peak is the attention phase (H200 and this CPU): every buffer in target but the listed FFN
    overcount. With flash attention the GPU's phase is the live set of the attention block in graph order (MHA:
    mask + 5E, within 4 %; it was 2Hk + Hq larger)."""
    rows = cm.rows(data)
    assert len(rows) == 6
    for row in rows:
        for dev, buf, ours, theirs, ok in cm.compare_spec(row, header_dir, gpu):
            bound = SPEC_MISSES.get((row["label"], dev, buf))
            assert ok or (bound and abs(ours - theirs) <= bound * theirs), (row["label"], dev, buf, ours, theirs)
    mha = next(r for r in cm.rows(cm.DATA_SPECS) if r["label"].startswith("mha-h8-d128|-c_16384_-np_1_-fa_on"))
    (ours, theirs), = [(o, t) for d, b, o, t, _ in cm.compare_spec(mha, header_dir) if (d, b) == ("gpu0", "compute")]
    assert abs(ours - theirs) <= 0.04 * theirs


def test_a_gelu_ffn_is_the_gpu_peak_at_long_context(header_dir: Path) -> None:
    """starcoder2's GELU FFN phase (2F + mask) outgrows its logits (V + 2E, 49k vocabulary) at 131072 cells: on the
    H200, 191.01 MiB. In target although the model's listed miss (CPU layers' op offload) would allow more."""
    row = next(r for r in ROWS if r["label"].startswith("starcoder2-7b|") and r["label"].endswith("|c131072"))
    got = {(d, b): ok for d, b, _o, _t, ok in cm.compare(row, header_dir)}
    assert got[("gpu0", "compute")]


#: Gemma 4 E4B's buffers out of target on this CPU, with their bounds: at long contexts and with a q8_0 cache the
#: compute buffer's logits phase sits higher than V + 3E (the final hidden rows land in small holes above the
#: masks rather than where the masks were: an allocation trace of 32768 cells shows the logits at 27148 floats per
#: token, 4096 cells at 7692). With a q8_0 cache it is llama.cpp's Hadamard rotation of quantized caches
#: (llama-kv-cache.cpp attn_rot_k/v): the last layer's rotated tensors leave its output row higher (traced: the logits
#: at 31132 floats per token); with LLAMA_ATTN_ROT_DISABLE=1 the buffer is 527.02 MiB, ours to the 0.02.
GEMMA4_MISSES = {
    ("-c_32768_-np_1_-fa_on", "cpu", "compute"): 0.07,
    ("-c_32768_-np_1_-fa_on_--swa-full", "cpu", "compute"): 0.12,
    ("-c_4096_-np_1_-fa_on_-ctk_q8_0_-ctv_q8_0", "cpu", "compute"): 0.09,
}


def test_gemma4_outside_the_catalog_on_this_cpu(header_dir: Path) -> None:
    """Gemma 4 E4B (per-layer head sizes, KV sharing, per-layer embeddings, a tied output) against llama.cpp's own
    plan on this CPU under nine settings: weights (the tied output copied without mmap) and KV (without flash
    attention the sliding-window layers' V as wide as the full layers') exact on every case, compute within 5 % or
    2 MiB but the listed cases."""
    rows = cm.rows(cm.DATA_GEMMA4_CPU)
    assert len(rows) == 9
    for row in rows:
        flags = row["label"].split("|")[1]
        for dev, buf, ours, theirs, ok in cm.compare_gemma4(row, header_dir):
            bound = GEMMA4_MISSES.get((flags, dev, buf))
            if bound is None:
                assert ok, (flags, dev, buf, ours, theirs)
            else:
                assert abs(ours - theirs) <= bound * theirs, (flags, dev, buf, ours, theirs)


def test_each_flash_attention_term_leads_alone(header_dir: Path) -> None:
    """The attention block's live set with flash attention is the largest of its graph-order terms (estimate.py
    _fa_sequence). In each FA_ORDER_SPECS shape one term leads alone, by 8 % or more of the buffer, and llama.cpp's
    plan for the GPU's compute buffer (the oracle of tests/data/llamacpp-cuda/README.md) is within 2 %: the 6 floats
    per token of small inputs, and a 128-float hole the test models' 128-wide FFN leaves below the residual."""
    rows = cm.rows(cm.DATA_FA_ORDER)
    assert {r["label"].split("|")[0] for r in rows} == set(cm.FA_ORDER_SPECS) and len(rows) == 6
    for row in rows:
        name, flags = row["label"].split("|")
        path = header_dir / f"{name}.gguf"
        if not path.exists():
            ggufgen.write(path, cm.FA_ORDER_SPECS[name], sparse=True)
        s = cm.settings_of(flags.replace("_", " ").split(), True)
        # the phases, which serve the architectures the allocator replay does not build (these shapes are llama's)
        ours = gpu_compute_bytes(read_gguf_facts(path), n_ubatch=s.n_ubatch, kv_cells=4096, mask_cells=4096,
                                 flash_attn=True, layers=True, output=True)
        (theirs,) = [b["compute"] for b in row["buffers"]]
        assert abs(ours - theirs) <= 0.02 * theirs, (row["label"], ours, theirs)


def test_a_plain_llama_gets_llamacpps_own_allocation(header_dir: Path) -> None:
    """estimate() replays ggml-alloc on a plain llama's graph (advisor/gguf/galloc.py): the held-out random shapes
    (tests/data/llamacpp-cpu/shapes2-specs.json, drawn after the replay was written) get llama.cpp's compute buffer to
    the byte on the CPU. (As CUDA0 the oracle of tests/data/llamacpp-cuda/README.md takes the embeddings after the
    inputs, where a GPU copies them in first: tests/test_galloc.py checks the replay against it in that order.)"""
    data = cm.DATA_CPU.parent
    specs = json.loads((data / "shapes2-specs.json").read_text())
    for kind, path in (("cpu", data / "shapes2-cpu.jsonl"),):
        for row in cm.rows(path):
            name, cells, ub, fa = row["label"].split("|")
            model = header_dir / f"shapes2-{name}.gguf"
            if not model.exists():
                ggufgen.write(model, ggufgen.Spec("llama", wtype=ggufgen.T.F16, **specs[name]), sparse=True)
            s = cm.settings_of(["-c", cells[1:], "-fa", fa[2:], "-ub", ub[2:], "-b", ub[2:]], kind == "gpu0")
            got = next(d for d in estimate(read_gguf_facts(model), s).devices if d.device == kind).compute_bytes
            assert got == sum(b["compute"] for b in row["buffers"]), (kind, row["label"])


#: Catalog models whose graph the allocator replay builds (estimate.py REPLAYED), and the recorded settings outside
#: its scope (partial offload, several KV streams, a quantized cache: the phases serve them).
REPLAYED_MODELS = ("llama-3.1-8b-instruct", "deepseek-r1-distill-qwen-7b", "deepseek-r1-0528-qwen3-8b",
                   "gemma-2-9b-it", "gemma-3-12b-it", "phi-4-mini-instruct", "smollm3-3b", "starcoder2-7b",
                   "gpt-oss-20b", "gpt-oss-120b", "llama-4-scout-17b-16e-instruct", "deepseek-v3.1")
OUT_OF_REPLAY = ("half", "ngl0")
#: Replayed cases the H200 plans differently, not identified: with a q8_0 cache Phi-4-mini (head 96, so no
#: rotation) holds 16.09 MiB (its FFN width per token) and SmolLM3 4 MiB (its embedding width) more than the replay,
#: which this CPU's plans of the same cases match to the byte.
REPLAY_GPU_UNEXPLAINED = {"phi-4-mini-instruct|Q4_K_M|c16384-q8": 0.04, "smollm3-3b|Q4_K_M|c16384-q8": 0.02}


@pytest.mark.parametrize("data,gpu", [(cm.DATA, True), (cm.DATA_CPU, False)])
def test_replayed_architectures_get_llamacpps_plan_to_the_byte(data: Path, gpu: bool, header_dir: Path) -> None:
    """Llama 3.1 8B, Qwen2 7B, Qwen3 8B, Gemma 2 9B, Gemma 3 12B, Phi-4-mini, SmolLM3 3B and StarCoder2 7B (llama,
    qwen2, qwen3; gemma2 and gemma3 with their sliding-window layers on an iSWA cache; phi3, smollm3, starcoder2) on
    the H200 at full offload and on this CPU: every compute buffer of the replay's scope exactly llama.cpp's, FA on
    and off, 4096-131072 cells, ubatch 256-2048, one stream, one unified cache for 4 sequences, or a stream for
    each, f16 or q8_0 (Hadamard-rotated) caches; but two listed H200 cases. Also gpt-oss 20B and 120B (iSWA,
    biased router and experts, the chosen logits softmaxed, every token's final hidden state kept as an output),
    whose every-expert-on-the-CPU cases are single-device on this CPU, and Llama 4 Scout (chunked attention on an
    iSWA cache, every fourth layer without RoPE and its Q scaled by the temperature input, the roped Q and K
    L2-normed, one expert chosen on the raw logits and its input weighted, a shared expert), and DeepSeek-V3.1
    (absorbed MLA: Q through its LoRA, absorbed by attn_k_b and joined with its roped part, a K-only latent cache
    read as V, the output expanded by attn_v_b; 256 experts with a selection bias and a shared expert)."""
    rows = [r for r in cm.rows(data) if r["label"].split("|")[0] in REPLAYED_MODELS
            and not any(k in r["label"].split("|")[2] for k in OUT_OF_REPLAY)
            and not (gpu and "cpu-moe" in r["label"])]
    assert len(rows) == 8 * 9 + 4 * (9 if gpu else 10)
    for row in rows:
        got = {(d, b): (o, t) for d, b, o, t, _ok in cm.compare(row, header_dir, gpu)}
        ours, theirs = got[("gpu0" if gpu else "cpu", "compute")]
        bound = REPLAY_GPU_UNEXPLAINED.get(row["label"], 0) if gpu else 0
        assert ours == theirs if not bound else 0 < theirs - ours < bound * theirs, row["label"]


def test_the_phases_stay_in_target_where_the_replay_serves(header_dir: Path) -> None:
    """The closed-form phases serve every architecture the replay does not build; on Llama 3.1 8B's recorded CPU
    cases (which the replay now serves) they still hold their 5 % or 2 MiB, FA on and off."""
    rows = [r for r in cm.rows(cm.DATA_CPU) if r["label"].startswith("llama-3.1-8b-instruct|")
            and not any(k in r["label"].split("|")[2] for k in OUT_OF_REPLAY)]
    path = header_dir / "llama-3.1-8b-instruct-Q4_K_M.gguf"
    if not path.exists():
        cm.gguf_from_catalog.write_any_quant(path, "llama-3.1-8b-instruct", "Q4_K_M")
    facts = read_gguf_facts(path)
    for row in rows:
        est = estimate(facts, cm.settings_of(cm.flags_of("llama-3.1-8b-instruct", row["label"].split("|")[2],
                                                         facts.n_layer), False))
        ours = compute_bytes(facts, n_ubatch=est.n_ubatch, kv_cells=est.kv_cells, swa_cells=0,
                             flash_attn=est.flash_attn, n_layers_here=facts.n_layer, has_output=True,
                             n_stream=est.n_stream)
        theirs = sum(b["compute"] for b in row["buffers"])
        assert abs(ours - theirs) <= max(0.05 * theirs, 2 << 20), row["label"]


def test_the_phases_without_flash_attention_hold_on_random_shapes(header_dir: Path) -> None:
    """The closed-form phases without flash attention (KQ over the cells, or the FFN with the mask and 5E) on the
    first random sweep (tests/data/llamacpp-cpu/shapes-specs.json, llama.cpp's plans on this CPU): within 10 %, where
    in some shapes the FFN phase leads and in others the KQ scores."""
    data = cm.DATA_CPU.parent
    specs = json.loads((data / "shapes-specs.json").read_text())
    rows = [r for r in cm.rows(data / "shapes-cpu.jsonl") if r["label"].endswith("faoff")]
    assert len(rows) == 48
    for row in rows:
        name, cells, _fa = row["label"].split("|")
        model = header_dir / f"shapes-{name}.gguf"
        if not model.exists():
            ggufgen.write(model, ggufgen.Spec("llama", wtype=ggufgen.T.F16, **specs[name]), sparse=True)
        facts = read_gguf_facts(model)
        ours = compute_bytes(facts, n_ubatch=512, kv_cells=int(cells[1:]), swa_cells=0, flash_attn=False,
                             n_layers_here=facts.n_layer, has_output=True, n_stream=1)
        theirs = sum(b["compute"] for b in row["buffers"])
        assert abs(ours - theirs) <= 0.10 * theirs, (row["label"], ours, theirs)


@pytest.mark.parametrize("model_id", ["qwen3-30b-a3b", "glm-4.5-air", "deepseek-coder-v2-lite-instruct"])
def test_moe_with_and_without_the_cuda_fusions(model_id: str, header_dir: Path) -> None:
    """Qwen3-30B-A3B (softmax routing), GLM-4.5-Air (sigmoid routing with a selection bias, a dense first layer,
    a shared expert run after the routed sum: glm4-moe.cpp) and DeepSeek-V2-Lite (attn_kv_b whole: the compressed
    KV expanded per head, K 192 / V 128; deepseek2.cpp) with every layer on the H200, one sequence or a stream
    per sequence, with ggml-cuda's fusions (their allocation dependencies, advisor/gguf/galloc.py _moe): CUDA0's
    compute buffer within 64 KiB (the fused plans come out 4-16 KiB under the replay: a few tiny tensors placed
    apart), and this CPU's to the byte. DeepSeek's flash attention has no CUDA kernel for its heads, so with
    -fa on the op runs on the CPU and the GPU's buffer holds neither the mask nor the op, only its output copied
    back; with -fa auto it turns off after the cache was made untransposed, and V is copied transposed. With
    GGML_CUDA_DISABLE_FUSION=1 all three are exact too (GLM's once the embeddings are copied in first:
    test_a_gpu_copies_the_embeddings_in_before_the_other_inputs)."""
    cases = [(r, True) for r in ROWS + cm.rows(cm.DATA_CASES) if "buffers" in r] + [(r, False) for r in CPU_ROWS]
    checked = 0
    for row, gpu in cases:
        row_model, _q, setting, _env = cm.parse_label(row["label"])
        partial = any(k in setting for k in ("half", "ngl0", "cpu-moe")) or any(
            int(n) < 999 for n in re.findall(r"-ngl (\d+)", setting))
        # Qwen3's 4 sequences in one unified cache: the phases (estimate._replayed), exact with FA, 1.4 % without
        if row_model != model_id or partial or (model_id == "qwen3-30b-a3b" and "kvu" in setting):
            continue
        got = {(d, b): (o, t) for d, b, o, t, _ok in cm.compare(row, header_dir, gpu)}
        ours, theirs = got[("gpu0" if gpu else "cpu", "compute")]
        bound = 64 << 10 if gpu else 0
        assert abs(ours - theirs) <= bound, (row["label"], ours, theirs)
        checked += 1
    assert checked >= 12


def test_moe_streams_replay_like_one_sequence(header_dir: Path) -> None:
    """A stream per sequence (-np 4 without -kvu) splits the batch and the mask per stream and builds the same
    tensors (llama-graph.cpp build_attn_mha), so 16384 cells in 4 streams reserve what 4096 cells in one do: on
    the H200 (within the fused plans' 64 KiB) and this CPU (to the byte), for Qwen3-30B-A3B and GLM-4.5-Air (fused)
    and Llama 3.1 8B."""
    for model_id in ("qwen3-30b-a3b", "glm-4.5-air", "llama-3.1-8b-instruct"):
        for rows, gpu in ((ROWS, True), (CPU_ROWS, False)):
            by = {r["label"].split("|")[2]: r for r in rows if r["label"].startswith(model_id + "|")}
            streams = {(d, b): (o, t) for d, b, o, t, _ in cm.compare(by["c16384-np4"], header_dir, gpu)}
            one = {(d, b): t for d, b, _o, t, _ in cm.compare(by["c4096"], header_dir, gpu)}
            key = ("gpu0" if gpu else "cpu", "compute")
            ours, theirs = streams[key]
            assert theirs == one[key] and abs(ours - theirs) <= (64 << 10 if gpu else 0), (model_id, gpu, ours, theirs)


def test_a_gpu_copies_the_embeddings_in_before_the_other_inputs(header_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """At full offload the token embeddings are taken on the CPU (the weight stays there) and copied into the GPU's
    split with the graph inputs, all at the split's start in the order the graph first reads them, the embeddings
    first (ggml-backend.cpp ggml_backend_sched_split_graph). Where that order moves the plan, the H200 follows it:
    Gemma 3 12B without flash attention and GLM-4.5-Air without the CUDA fusions, each at two ubatch sizes; taking
    the embeddings after the inputs instead (embd_copied=False) gives 1.3-1.4 % more there."""
    from advisor.gguf import estimate as est

    labels = {"gemma-3-12b-it|Q4_K_M|c4096-fa-off", "gemma-3-12b-it|Q4_K_M|c8192-ub256-fa-off",
              "glm-4.5-air|Q4_K_M|GGML_CUDA_DISABLE_FUSION=1|-c_4096_-np_1_-fa_on_-ngl_999",
              "glm-4.5-air|Q4_K_M|GGML_CUDA_DISABLE_FUSION=1|-c_4096_-np_1_-ub_256_-fa_on_-ngl_999"}
    rows = [r for r in ROWS + CASE_ROWS if r["label"] in labels]
    assert len(rows) == 4
    for row in rows:
        got = {(d, b): (o, t) for d, b, o, t, _ok in cm.compare(row, header_dir)}
        ours, theirs = got[("gpu0", "compute")]
        assert ours == theirs, row["label"]
    replay = est.galloc.llama_compute_bytes
    monkeypatch.setattr(est.galloc, "llama_compute_bytes", lambda *a, **k: replay(*a, **{**k, "embd_copied": False}))
    for row in rows:  # the other order, through the same estimate
        got = {(d, b): (o, t) for d, b, o, t, _ok in cm.compare(row, header_dir)}
        ours, theirs = got[("gpu0", "compute")]
        assert 0.012 * theirs < ours - theirs < 0.015 * theirs, row["label"]


def test_a_quantized_cache_rotates_q_k_and_v(header_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a q8_0 cache llama.cpp multiplies Q and K, V, and the attention output by Hadamard matrices, each a graph
    input (llama-kv-cache.cpp attn_rot_k / attn_rot_v; llama-impl.h llama_mul_mat_hadamard): on this CPU that moves
    the plan of Llama 3.1 8B, Qwen2 7B, Qwen3 8B and DeepSeek-V2-Lite, which the replay with the rotations gets to
    the byte and without them 3-12 % under."""
    from advisor.gguf import estimate as est

    models = ("llama-3.1-8b-instruct", "deepseek-r1-distill-qwen-7b", "deepseek-r1-0528-qwen3-8b",
              "deepseek-coder-v2-lite-instruct")
    rows = [r for r in CPU_ROWS if r["label"].split("|")[0] in models and r["label"].endswith("|c16384-q8")]
    assert len(rows) == 4

    def cpu_compute(row: dict) -> tuple[int, int]:
        (got,) = [(o, t) for d, b, o, t, _ok in cm.compare(row, header_dir, gpu=False) if b == "compute"]
        return got

    for row in rows:
        ours, theirs = cpu_compute(row)
        assert ours == theirs, row["label"]
    replay = est.galloc.llama_compute_bytes
    monkeypatch.setattr(est.galloc, "llama_compute_bytes", lambda *a, **k: replay(*a, **{**k, "rot": (0, 0)}))
    for row in rows:
        ours, theirs = cpu_compute(row)
        assert 0.02 * theirs < theirs - ours < 0.13 * theirs, row["label"]


def test_moe_routing_options_real_files_carry(tmp_path: Path) -> None:
    """DeepSeek-V3's expert groups, sigmoid gating, normalised and scaled weights, and GLM-4.5's normalised weights
    (keys the published GGUFs carry and the catalog's rebuilt headers do not), on headers cut to a few layers:
    this CPU's compute buffer as llama.cpp logged it (benchmarks/record_moe_routing.py), to its 0.01 MiB."""
    from tests import moe_routing as routing

    rows = cm.rows(cm.DATA_CPU.parent / "moe-routing-cpu.jsonl")
    assert len(rows) == len(routing.VARIANTS) * len(routing.SETTINGS)
    paths = {name: routing.write(tmp_path / f"{name}.gguf", name) for name in routing.VARIANTS}
    for row in rows:
        name, setting = row["label"].split("|")
        ours = estimate(read_gguf_facts(paths[name]), routing.SETTINGS[setting]).compute_bytes / 2**20
        assert abs(ours - row["compute_mib"]) <= 0.005, (row["label"], ours)
