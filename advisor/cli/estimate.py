"""``advisor estimate MODEL``: the memory llama.cpp will allocate for a GGUF, per device.

Imports stay light at module level (every CLI start imports this module): facts/estimate/rich load inside the
command.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated

import typer

from advisor.cli._options import HardwareOpt, JsonOpt, model_name


class BackendChoice(str, Enum):
    cpu = "cpu"
    cuda = "cuda"
    rocm = "rocm"
    metal = "metal"
    vulkan = "vulkan"
    sycl = "sycl"


class FlashAttnChoice(str, Enum):
    on = "on"
    off = "off"
    auto = "auto"


ModelArg = Annotated[str, typer.Argument(help="A local .gguf file (for a split model, any of its shards), or a "
                                         "Hub GGUF: org/repo with --file or --quant, org/repo:QUANT, or "
                                         "org/repo/file.gguf (only its header is read, by range requests).",
                                         show_default=False, parser=model_name)]
FileOpt = Annotated[str | None, typer.Option("--file", help="The .gguf file in the Hub repository (any shard of a "
                                             "split model).", show_default=False)]
QuantOpt = Annotated[str | None, typer.Option("--quant", help="Pick the repository's .gguf of this quantization, "
                                              "e.g. Q4_K_M.", show_default=False)]
RevisionOpt = Annotated[str | None, typer.Option("--revision", help="Hub branch, tag or commit (default main).",
                                                 show_default=False)]
CtxOpt = Annotated[int, typer.Option("--ctx", "-c", help="Context size; 0 = the model's trained context "
                                     "(llama.cpp default).")]
GpuLayersOpt = Annotated[int, typer.Option("--gpu-layers", "-ngl", help="Layers to offload; -1 = all "
                                           "(llama.cpp default). The output layer is offloaded first.")]
GpusOpt = Annotated[int, typer.Option("--gpus", help="GPUs to split the offloaded layers over; 0 = CPU only.")]
ParallelOpt = Annotated[int, typer.Option("--parallel", "-np", help="Server slots; -1 = auto: 4 slots sharing a "
                                          "unified KV cache (llama-server default).")]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", help="Logical batch size (llama.cpp default 2048).")]
UbatchOpt = Annotated[int, typer.Option("--ubatch", "-ub", help="Physical batch size (llama.cpp default 512).")]
CacheKOpt = Annotated[str, typer.Option("--cache-type-k", "-ctk", help="K cache type: f32, f16, bf16, q8_0, "
                                        "q4_0, q4_1, iq4_nl, q5_0, q5_1 (default f16).")]
CacheVOpt = Annotated[str, typer.Option("--cache-type-v", "-ctv", help="V cache type (default f16); quantized "
                                        "types need flash attention.")]
FlashOpt = Annotated[FlashAttnChoice, typer.Option("--flash-attn", "-fa", help="Flash attention (default auto).")]
BackendOpt = Annotated[BackendChoice | None, typer.Option(
    "--backend", help="llama.cpp GPU backend: buffers are named per device as llama.cpp allocates them (gpu0.., host "
    "for the pinned host buffer, cpu). Default: the --hardware profile's first GPU, else cpu (or an unnamed GPU "
    "with --gpus).", show_default=False)]
TensorSplitOpt = Annotated[str | None, typer.Option(
    "--tensor-split", "-ts", help="Fraction of the offloaded layers per GPU, e.g. 3,1 (llama.cpp -ts). Default: "
    "each GPU's free memory from --hardware, else even.", show_default=False)]
CpuMoeOpt = Annotated[int, typer.Option("--n-cpu-moe", "-ncmoe", help="Keep the experts of the first K layers on "
                                        "the CPU (llama.cpp --n-cpu-moe); -1 = all (--cpu-moe).")]
class EngineChoice(str, Enum):
    llama_cpp = "llama.cpp"
    vllm = "vllm"


EngineOpt = Annotated[EngineChoice, typer.Option("--engine", help="llama.cpp (MODEL is a GGUF) or vllm (MODEL is a "
                                                 "directory with config.json and *.safetensors, a catalog id or a "
                                                 "Hub repo).")]
LlamaBuildOpt = Annotated[int | None, typer.Option(
    "--llama-build", help="llama.cpp build number (bNNNN) whose placement rules apply (output layer, SWA cache, "
    "KV streams, MoE graph). Default: the installed llama-server's build, else the current one.",
    show_default=False)]
GmuOpt = Annotated[float | None, typer.Option("--gpu-memory-utilization", help="vLLM: share of each GPU vLLM "
                                              "claims (default 0.9).", show_default=False)]
MaxLenOpt = Annotated[int | None, typer.Option("--max-model-len", help="vLLM: context length (default the "
                                               "config's max_position_embeddings).", show_default=False)]
MaxSeqsOpt = Annotated[int | None, typer.Option("--max-num-seqs", help="vLLM: concurrent sequences (default "
                                                "vLLM's for the GPU: 256 or 1024).", show_default=False)]
MnbtOpt = Annotated[int | None, typer.Option("--max-num-batched-tokens", help="vLLM: tokens per step (default "
                                             "vLLM's for the GPU: 2048 or 8192).", show_default=False)]
TpOpt = Annotated[int, typer.Option("--tensor-parallel-size", "-tp", help="vLLM: tensor parallel ranks.")]
PpOpt = Annotated[int, typer.Option("--pipeline-parallel-size", "-pp", help="vLLM: pipeline stages.")]
KvDtypeOpt = Annotated[str, typer.Option("--kv-cache-dtype", help="vLLM: auto, bfloat16, fp8, fp8_e4m3, "
                                         "fp8_e5m2.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="vLLM: auto, half, float16, bfloat16, float, float32.")]
QuantizationOpt = Annotated[str | None, typer.Option("--quantization", "-q", help="vLLM: the quantization method "
                                                     "(fp8 on a 16-bit checkpoint quantizes it at load).",
                                                     show_default=False)]
BlockOpt = Annotated[int | None, typer.Option("--block-size", help="vLLM: KV cache block size in tokens (default "
                                              "16).", show_default=False)]
EagerOpt = Annotated[bool, typer.Option("--enforce-eager", help="vLLM: no CUDA graphs.")]
VllmVersionOpt = Annotated[str | None, typer.Option("--vllm-version", help="vLLM version X.Y whose profile run "
                                                    "applies (default: the installed vLLM's, else the newest "
                                                    "modelled).", show_default=False)]
SwaFullOpt = Annotated[bool, typer.Option("--swa-full", help="Full-size cache for sliding-window layers "
                                          "(llama.cpp default off).")]


def estimate(
    model: ModelArg,
    ctx: CtxOpt = 0,
    gpu_layers: GpuLayersOpt = -1,
    gpus: GpusOpt = 0,
    parallel: ParallelOpt = -1,
    batch: BatchOpt = 2048,
    ubatch: UbatchOpt = 512,
    cache_type_k: CacheKOpt = "f16",
    cache_type_v: CacheVOpt = "f16",
    flash_attn: FlashOpt = FlashAttnChoice.auto,
    swa_full: SwaFullOpt = False,
    backend: BackendOpt = None,
    tensor_split: TensorSplitOpt = None,
    n_cpu_moe: CpuMoeOpt = 0,
    hardware: HardwareOpt = None,
    file: FileOpt = None,
    quant: QuantOpt = None,
    revision: RevisionOpt = None,
    llama_build: LlamaBuildOpt = None,
    engine: EngineOpt = EngineChoice.llama_cpp,
    gpu_memory_utilization: GmuOpt = None,
    max_model_len: MaxLenOpt = None,
    max_num_seqs: MaxSeqsOpt = None,
    max_num_batched_tokens: MnbtOpt = None,
    tensor_parallel_size: TpOpt = 1,
    pipeline_parallel_size: PpOpt = 1,
    kv_cache_dtype: KvDtypeOpt = "auto",
    dtype: DtypeOpt = "auto",
    quantization: QuantizationOpt = None,
    block_size: BlockOpt = None,
    enforce_eager: EagerOpt = False,
    vllm_version: VllmVersionOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Estimate an engine's memory for MODEL, per device.

    llama.cpp (default): weights, KV cache, compute and output buffers from the GGUF header alone; defaults are
    llama-server's. GPU context memory that no llama.cpp buffer reports (CUDA context, cuBLAS, pools) is shown as
    the backend's overhead (rules/backends.toml), not in the totals. vLLM (--engine vllm): its start-up memory per
    rank as its profile run computes it: weights, activation peak, non-torch memory, and the KV cache that is left.
    """
    if engine is EngineChoice.vllm:
        from advisor.app.estimate import VllmRequest, vllm_estimate

        est = vllm_estimate(VllmRequest(
            model=model, hardware=hardware, gpus=gpus, gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
            tensor_parallel_size=tensor_parallel_size, pipeline_parallel_size=pipeline_parallel_size,
            kv_cache_dtype=kv_cache_dtype.lower(), dtype=dtype.lower(), quantization=quantization,
            block_size=block_size, enforce_eager=enforce_eager, vllm_version=vllm_version))
        if json_output:
            sys.stdout.write(json.dumps(est.to_dict(), indent=2) + "\n")
        else:
            _render_vllm(est)
        return
    from advisor.app.estimate_llama import LlamaRequest, llama_estimate

    found = llama_estimate(LlamaRequest(
        model=model, ctx=ctx, gpu_layers=gpu_layers, gpus=gpus, parallel=parallel, batch=batch, ubatch=ubatch,
        cache_type_k=cache_type_k, cache_type_v=cache_type_v, flash_attn=flash_attn.value, swa_full=swa_full,
        backend=backend.value if backend is not None else None, tensor_split=tensor_split, n_cpu_moe=n_cpu_moe,
        hardware=hardware, file=file, quant=quant, revision=revision, llama_build=llama_build))
    if json_output:
        sys.stdout.write(json.dumps(found.to_dict(), indent=2) + "\n")
        return
    _render(found)


def _render(found) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    def mib(n: int) -> str:
        return f"{n / 2**20:,.1f} MiB"

    facts, est = found.facts, found.estimate
    from advisor.render.text import shown  # the name comes from the file's metadata: text, never markup or escapes

    title = (f"{shown(facts.name or facts.architecture)} ({shown(facts.architecture)}, {facts.n_layer} layers): "
             f"ctx {est.n_ctx}"
             f" ({est.n_seq} seq, {'unified' if est.kv_unified else 'per-slot'} KV), ubatch {est.n_ubatch}, "
             f"flash attention {'on' if est.flash_attn else 'off'}"
             + (" (its ops on the CPU: the GPU backend has no kernel for these head sizes)"
                if est.flash_attn_on_cpu else ""))
    table = Table(title=title)
    # the recurrent-state column (llama.cpp's "RS buffer") only for models that have one (Mamba, RWKV, hybrids)
    rs = est.recurrent_bytes > 0
    cols = ("device", "layers", "weights", "KV cache") + (("RS state",) if rs else ()) + (
        "compute", "output", "total")
    for col in cols:
        table.add_column(col, justify="left" if col == "device" else "right")
    for d in est.devices:
        table.add_row(d.device, str(d.n_layers), mib(d.weights_bytes), mib(d.kv_cache_bytes),
                      *([mib(d.recurrent_bytes)] if rs else []), mib(d.compute_bytes), mib(d.output_bytes),
                      mib(d.total_bytes))
    if len(est.devices) > 1:
        table.add_row("all", str(facts.n_layer), mib(est.weights_bytes), mib(est.kv_cache_bytes),
                      *([mib(est.recurrent_bytes)] if rs else []), mib(est.compute_bytes), mib(est.output_bytes),
                      mib(est.total_bytes), style="bold")
    console = Console()
    console.print(table)
    over = found.overhead_bytes
    if over and any(d.device.startswith("gpu") for d in est.devices):
        console.print(f"plus about {mib(over)} per GPU that no llama.cpp buffer reports ({est.settings.backend} "
                      "context, workspaces, pools: rules/backends.toml)")


def _render_vllm(est) -> None:  # type: ignore[no-untyped-def]
    from rich.console import Console
    from rich.table import Table

    def gib(n: int) -> str:
        return f"{n / 2**30:,.2f} GiB"

    c = est.config
    table = Table(title=f"vLLM {c.version[0]}.{c.version[1]}: {est.checkpoint.source}; util "
                        f"{c.gpu_memory_utilization:g}, max_model_len {c.max_model_len}, max_num_seqs "
                        f"{c.max_num_seqs}, max_num_batched_tokens {c.max_num_batched_tokens}, TP "
                        f"{c.tensor_parallel_size} x PP {c.pipeline_parallel_size}")
    for col in ("rank", "total", "weights", "activation peak", "non-torch", "KV cache", "KV tokens"):
        table.add_column(col, justify="left" if col == "rank" else "right")
    for r in est.ranks:
        table.add_row(str(r.rank), gib(r.total_bytes), gib(r.weights_bytes), gib(r.activation_peak_bytes),
                      gib(r.non_torch_bytes), gib(r.kv_cache_bytes), f"{r.kv_tokens:,}")
    console = Console()
    console.print(table)
    console.print(f"maximum concurrency at {c.max_model_len} tokens per request: {est.max_concurrency:.2f}x")
    if est.cuda_graph_bytes:
        console.print(f"plus CUDA graphs, captured after the KV cache (outside it): about {gib(est.cuda_graph_bytes)}")
    for n in est.notes:
        console.print(n, style="dim")
