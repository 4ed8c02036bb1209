"""Installed engines: llama-server on PATH (a fake that answers --version), llama-cpp-python and vLLM here."""

from __future__ import annotations

import pytest

from importlib import metadata

from advisor.probe import runtimes
from advisor.system import System


def _fake_llama_server(machine, output: str, libs: list[str]) -> None:
    machine.tool("llama-server", "echo_args.py", FAKE_OUTPUT=output)
    for lib in libs:
        (machine.bin / lib).write_text("")


def test_llama_server_with_cuda_backend(machine):
    # The text recent builds print for --version (common/common.cpp: "version: %d (%s)" then "built with ...").
    _fake_llama_server(
        machine,
        "version: 6182 (a1b2c3d4)\nbuilt with cc (GCC) 13.2.0 for x86_64-linux-gnu\n",
        ["libggml-cuda.so", "libggml-cpu-haswell.so", "libggml-base.so", "libllama.so"],
    )
    found = runtimes.detect_llama_server(machine.system())
    assert found.installed and found.version == "b6182 (a1b2c3d4)"
    assert found.backends == ["cpu", "cuda"] and found.gpu_offload is True


def test_llama_server_cpu_only_build(machine):
    _fake_llama_server(machine, "version: 7000 (deadbeef)\n", ["libggml-cpu.so"])
    found = runtimes.detect_llama_server(machine.system())
    assert found.gpu_offload is False


def test_llama_server_that_hangs_or_fails(machine):
    machine.tool("llama-server", "echo_args.py", FAKE_OUTPUT="", FAKE_EXIT="3")
    found = runtimes.detect_llama_server(machine.system())
    assert found.installed and found.version is None and found.gpu_offload is None


def test_no_llama_server(machine):
    assert runtimes.detect_llama_server(machine.system()).installed is False


def test_backend_names():
    assert runtimes._LIB.match("libggml-vulkan.so").group(1) == "vulkan"
    assert runtimes._LIB.match("ggml-cuda.dll").group(1) == "cuda"
    assert runtimes._LIB.match("libggml-metal.dylib").group(1) == "metal"
    assert runtimes._LIB.match("libggml-cpu-alderlake.so.0.9.1").group(1) == "cpu"
    assert runtimes._LIB.match("libllama.so") is None


@pytest.mark.engine  # needs llama-cpp-python installed (its run path starts or names that engine)
def test_llama_cpp_python_installed_here():
    """The test extra installs a CPU build of llama-cpp-python: the probe must call it CPU-only."""
    found = runtimes.detect(System.from_env()).llama_cpp_python
    assert found.installed and found.version == metadata.version("llama-cpp-python")
    assert found.backends == ["cpu"] and found.gpu_offload is False
    import llama_cpp  # its own answer agrees

    assert bool(llama_cpp.llama_supports_gpu_offload()) is found.gpu_offload
