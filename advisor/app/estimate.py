"""``advisor estimate`` workflows that need more than one GGUF header: vLLM's start-up memory for a checkpoint
(``--engine vllm``) and the llama.cpp build whose rules apply (``--llama-build``).

I/O lives here (config.json and safetensors headers from a directory or the Hub, the catalog, the hardware profile,
the rules); the maths is advisor.vllm.memory, pure.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import BadInputError
from advisor.vllm import config as C
from advisor.vllm import memory as M

GIB = 2**30
#: vLLM's CPU backend does not profile: its KV cache is VLLM_CPU_KVCACHE_SPACE GiB (vllm/envs.py; 0 or unset ->
#: 4 GiB, vllm/v1/worker/cpu_worker.py determine_available_memory returns cache_config.cpu_kvcache_space_bytes).
CPU_KV_SPACE_DEFAULT_GIB = 4
SAFETENSORS_HEADER_MAX = 100 * 2**20  # the safetensors format caps its JSON header at 100 MB


@dataclass(frozen=True)
class VllmRequest:
    model: str
    hardware: Path | None = None
    gpus: int = 0  # 0: every GPU of the profile
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    dtype: str = "auto"
    quantization: str | None = None
    block_size: int | None = None
    enforce_eager: bool = False
    vllm_version: str | None = None


@dataclass(frozen=True)
class Checkpoint:
    arch: M.VllmArch
    weights_bytes: int  # all ranks together, as loaded
    max_position: int
    source: str
    quantized: bool


@dataclass(frozen=True)
class VllmEstimate:
    checkpoint: Checkpoint
    config: M.Config
    device: str  # "cuda" ... or "cpu"
    ranks: list[M.Rank]
    max_concurrency: float
    cuda_graph_bytes: int  # captured after the KV cache, outside it (rules/vllm.toml cuda_graph_mib; 0 eager)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {"engine": "vllm", "vllm_version": f"{c.version[0]}.{c.version[1]}", "device": self.device,
                "model": {"source": self.checkpoint.source, "weights_bytes": self.checkpoint.weights_bytes,
                          "max_position_embeddings": self.checkpoint.max_position},
                "settings": {"gpu_memory_utilization": c.gpu_memory_utilization, "max_model_len": c.max_model_len,
                             "max_num_seqs": c.max_num_seqs, "max_num_batched_tokens": c.max_num_batched_tokens,
                             "tensor_parallel_size": c.tensor_parallel_size,
                             "pipeline_parallel_size": c.pipeline_parallel_size, "block_size": c.block_size,
                             "kv_cache_dtype_bytes": c.kv_cache_dtype_bytes, "enforce_eager": c.enforce_eager},
                "ranks": [r.to_dict() for r in self.ranks], "max_concurrency": round(self.max_concurrency, 2),
                "cuda_graph_bytes": self.cuda_graph_bytes, "notes": self.notes}


def parse_version(text: str) -> tuple[int, int]:
    m = re.match(r"^v?(\d+)\.(\d+)", text.strip())
    if not m:
        raise BadInputError(f"--vllm-version takes X.Y (e.g. 0.11), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _read_safetensors_header(f: Path) -> dict[str, Any]:
    try:
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if not 2 <= n <= SAFETENSORS_HEADER_MAX:
                raise ValueError(f"header length {n}")
            doc = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{f}: not a safetensors file ({exc})") from None
    if not isinstance(doc, dict):
        raise BadInputError(f"{f}: not a safetensors file (header is not a JSON object)")
    return doc


def _read_config(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot read a JSON config ({exc})") from None
    if not isinstance(doc, dict):
        raise BadInputError(f"{path}: not a JSON object")
    return doc


def _checkpoint(cfg: dict[str, Any], headers: list[dict[str, Any]], source: str, req: VllmRequest) -> Checkpoint:
    arch = C.arch_from_config(cfg, source)
    quantized = C.is_quantized(cfg)
    w = C.weights_bytes(headers, quantized=quantized, dtype=req.dtype,
                        online_fp8=req.quantization == "fp8" and not quantized)
    return Checkpoint(arch, w, C.max_position(cfg), source, quantized)


def checkpoint_from_dir(d: Path, req: VllmRequest) -> Checkpoint:
    cfg = _read_config(d / "config.json")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise BadInputError(f"{d}: no *.safetensors next to config.json (their headers give the weight bytes)")
    return _checkpoint(cfg, [_read_safetensors_header(f) for f in files], f"{d} (config.json, safetensors headers)",
                       req)


def checkpoint_from_hub(repo: str, req: VllmRequest) -> Checkpoint:
    """config.json and the safetensors headers only (range requests; huggingface_hub.get_safetensors_metadata)."""
    from huggingface_hub import HfApi, hf_hub_download

    from advisor.errors import DownloadError
    from advisor.hub.gguf import endpoint

    try:
        cfg = _read_config(Path(hf_hub_download(repo, "config.json", endpoint=endpoint())))
        meta = HfApi(endpoint=endpoint()).get_safetensors_metadata(repo)
    except BadInputError:
        raise
    except Exception as exc:  # huggingface_hub raises many types: one line, exit 4
        raise DownloadError(f"{repo}: cannot read config.json and safetensors headers from the Hub ({exc})") \
            from None
    headers = [{name: {"dtype": t.dtype, "shape": list(t.shape)} for name, t in fm.tensors.items()}
               for fm in meta.files_metadata.values()]
    return _checkpoint(cfg, headers, f"{repo} on the Hub (config.json, safetensors headers)", req)


def checkpoint_from_catalog(model_id: str, req: VllmRequest) -> Checkpoint:
    """A catalog model: its architecture and its vLLM variant's size (the one --quantization names, else the
    unquantized checkpoint, else the first)."""
    from advisor.catalog.load import load_catalog
    from advisor.gguf import layout as quant_layout
    from advisor.planner.vllm import CHECKPOINT_QUANT

    model = load_catalog().get(model_id)
    vs = [v for v in model.all_variants() if v.format in CHECKPOINT_QUANT]
    if not vs:
        raise BadInputError(f"{model_id}: the catalog has no vLLM checkpoint (safetensors/AWQ/GPTQ/FP8/MXFP4) of it")
    q = (req.quantization or "").replace("_marlin", "")
    v = next((x for x in vs if CHECKPOINT_QUANT[x.format] == q), None) if q else None
    v = v or next((x for x in vs if x.format == "safetensors"), vs[0])
    a = model.arch
    arch = M.VllmArch(a.n_layer, a.n_embd, a.n_head, a.n_head_kv, a.head_dim_k, a.head_dim_v, a.n_ff,
                      a.vocab_size, a.sliding_window, a.sliding_window_pattern, a.n_expert, a.n_expert_used,
                      a.n_ff_expert, a.kv_lora_rank, a.qk_rope_head_dim)
    w = v.size_bytes or quant_layout.checkpoint_bytes(a, v.format, v.quant.lower())
    return Checkpoint(arch, w, model.context_native, f"catalog {model_id} ({v.format} {v.quant}, {v.repo})",
                      v.format != "safetensors")


def resolve_checkpoint(req: VllmRequest) -> Checkpoint:
    p = Path(req.model)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise BadInputError(f"{p}: no config.json (a vLLM model directory has config.json and *.safetensors)")
        return checkpoint_from_dir(p, req)
    if p.exists():
        raise BadInputError(f"{p}: --engine vllm takes a model directory (config.json + *.safetensors), a catalog "
                            "id or a Hub repo, not a file")
    from advisor.catalog.load import load_catalog

    if any(m.id == req.model for m in load_catalog().models):
        return checkpoint_from_catalog(req.model, req)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", req.model):
        return checkpoint_from_hub(req.model, req)
    raise BadInputError(f"{req.model}: not a directory, a catalog model id or a Hub repo (org/name)")


def _version(req: VllmRequest, installed: str | None) -> tuple[tuple[int, int], str]:
    if req.vllm_version:
        v, why = parse_version(req.vllm_version), "--vllm-version"
    elif installed and re.match(r"^v?\d+\.\d+", installed):
        v, why = parse_version(installed), f"the installed vLLM {installed}"
    else:
        v, why = M.LATEST, "no vLLM installed: the newest modelled version"
    if v < M.V1_SINCE:
        raise BadInputError(f"vLLM {v[0]}.{v[1]} runs the V0 engine, which this model does not cover (V1: "
                            f"{M.V1_SINCE[0]}.{M.V1_SINCE[1]} and later)")
    return v, why


def _check(req: VllmRequest) -> None:
    if req.gpu_memory_utilization is not None and not 0 < req.gpu_memory_utilization <= 1:
        raise BadInputError(f"--gpu-memory-utilization must be in (0, 1], got {req.gpu_memory_utilization}")
    for name, v in (("--max-model-len", req.max_model_len), ("--max-num-seqs", req.max_num_seqs),
                    ("--max-num-batched-tokens", req.max_num_batched_tokens), ("--block-size", req.block_size),
                    ("--tensor-parallel-size", req.tensor_parallel_size),
                    ("--pipeline-parallel-size", req.pipeline_parallel_size)):
        if v is not None and not 1 <= v <= 2**31:
            raise BadInputError(f"{name} must be a positive integer, got {v}")
    if req.kv_cache_dtype not in C.KV_DTYPE_BYTES:
        raise BadInputError(f"--kv-cache-dtype {req.kv_cache_dtype!r}: one of {', '.join(C.KV_DTYPE_BYTES)}")
    if req.dtype not in C.DTYPE_BYTES:
        raise BadInputError(f"--dtype {req.dtype!r}: one of {', '.join(C.DTYPE_BYTES)}")


def vllm_estimate(req: VllmRequest) -> VllmEstimate:
    """vLLM's start-up memory per rank for ``req.model`` on the ``req.hardware`` profile (else this machine)."""
    from advisor.app.advise import hardware
    from advisor.planner.machine import build_machine
    from advisor.rules import load_rules

    _check(req)
    ck = resolve_checkpoint(req)
    profile = hardware(req.hardware)
    m = build_machine(profile, load_rules())
    r = m.rules
    version, why_version = _version(req, profile.runtimes.vllm.version)
    tp, pp = req.tensor_parallel_size, req.pipeline_parallel_size
    gpus = [g for g in profile.gpus if g.memory_total_bytes][: req.gpus or None]
    notes = [f"vLLM {version[0]}.{version[1]} ({why_version})"]
    kv_bytes = C.KV_DTYPE_BYTES[req.kv_cache_dtype] or (C.DTYPE_BYTES[req.dtype] or 2)
    mnbt = req.max_num_batched_tokens or r["max_num_batched_tokens"]
    cfg = M.Config(
        gpu_memory_utilization=req.gpu_memory_utilization or r["gpu_memory_utilization"],
        max_model_len=req.max_model_len or ck.max_position, max_num_seqs=req.max_num_seqs or r["max_num_seqs"],
        max_num_batched_tokens=mnbt, tensor_parallel_size=tp, pipeline_parallel_size=pp,
        block_size=req.block_size or r["block_size"], kv_cache_dtype_bytes=kv_bytes,
        enforce_eager=req.enforce_eager, version=version)
    coef = M.coefficients(r)
    if not gpus:
        space = float(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 0) or CPU_KV_SPACE_DEFAULT_GIB
        kv = int(space * GIB)
        ranks = [M.Rank(0, 0, ck.weights_bytes, 0, 0, kv,
                        M.kv_capacity_tokens(ck.arch, kv, 1, cfg.block_size, kv_bytes))]
        notes.append(f"no GPU: vLLM's CPU backend takes VLLM_CPU_KVCACHE_SPACE = {space:g} GiB for the KV cache "
                     "and does not profile")
        return VllmEstimate(ck, cfg, "cpu", ranks, M.max_concurrency(ck.arch, kv, 1, cfg.max_model_len, mnbt,
                                                                   cfg.block_size, kv_bytes), 0, notes)
    if len(gpus) < tp * pp:
        raise BadInputError(f"tensor x pipeline parallel size {tp} x {pp} needs {tp * pp} GPUs; the profile has "
                            f"{len(gpus)}")
    if ck.arch.n_head % tp:
        raise BadInputError(f"--tensor-parallel-size {tp} does not divide the {ck.arch.n_head} attention heads")
    ranks = M.startup(ck.arch, ck.weights_bytes, [g.memory_total_bytes or 0 for g in gpus[: tp * pp]], cfg, coef)
    floor = min(x.kv_cache_bytes for x in ranks)
    conc = M.max_concurrency(ck.arch, floor, tp, cfg.max_model_len, mnbt, cfg.block_size, kv_bytes)
    graphs = 0 if req.enforce_eager else r["cuda_graph_mib"] * 2**20
    if floor <= 0:
        notes.append("no memory left for the KV cache: vLLM refuses to start ('No available memory for the cache "
                     "blocks')")
    elif M.kv_need(ck.arch, tp, cfg.max_model_len, mnbt, cfg.block_size, kv_bytes) > floor:
        notes.append(f"max_model_len {cfg.max_model_len} does not fit the KV cache: vLLM refuses to start "
                     "(check_enough_kv_cache_memory); lower --max-model-len")
    return VllmEstimate(ck, cfg, gpus[0].backend, ranks, conc, graphs, notes)


def llama_build(explicit: int | None, profile: Any = None) -> tuple[int | None, str]:
    """The llama.cpp build whose rules apply, and why: --llama-build, else the installed llama-server's build
    ("version: 6182 (...)", from the --hardware profile or probed here), else None (a current build)."""
    if explicit is not None:
        if not 1 <= explicit <= 10**6:
            raise BadInputError(f"--llama-build takes a build number such as 6182, got {explicit}")
        return explicit, "--llama-build"
    if profile is not None:
        rt = profile.runtimes.llama_server
    else:
        from advisor.probe.runtimes import detect_llama_server
        from advisor.system import System

        try:
            rt = detect_llama_server(System.from_env())
        except Exception:  # a broken llama-server must not break an estimate: fall back to the current rules
            rt = None
    m = re.match(r"^b(\d+)", (rt.version or "") if rt is not None and rt.installed else "")
    if m:
        return int(m.group(1)), f"the installed llama-server (build {m.group(1)})"
    return None, "current (no llama-server build found)"
