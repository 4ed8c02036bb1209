"""What llama.cpp's RPC backend needs, built from the llama.cpp tree that matches the installed llama-cpp-python
(``advisor setup --rpc``): its source distribution carries ``vendor/llama.cpp`` with ``tools/rpc`` and
``ggml/src/ggml-rpc``.

- ``ggml-rpc-server`` for the workers: cmake with ``-DGGML_RPC=ON`` (tools/rpc/README.md), only that target.
- ``llama-server`` for the head, from the same tree, whose ``--rpc host:port,...`` registers the RPC devices
  (common/arg.cpp add_rpc_devices). llama-cpp-python's server is no head: 0.3.36's ServerSettings has
  ``rpc_servers`` and passes it to ``Llama(...)``, whose ``__init__`` takes it into ``**kwargs`` and never uses it
  (llama_cpp/llama.py; checked here: the model loaded without one RPC buffer).

Every step is skipped when its output is already there, so a second run costs seconds. Everything lives under
``$ADVISOR_ENGINES_DIR/llama.cpp-rpc`` (``src``, ``build``, ``bin``). The builds are CPU-only
unless ``gpu_args`` adds the backend's own cmake flags.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from advisor.errors import EngineMissingError, EngineSetupError
from advisor.setup.record import engines_dir

PACKAGE = "llama-cpp-python"
NAMES = ("ggml-rpc-server", "rpc-server")  # the binary's name in current and in older llama.cpp trees


def root(env: dict[str, str] | None = None) -> Path:
    return engines_dir(env) / "llama.cpp-rpc"


def rpc_server_path() -> str:
    """``ggml-rpc-server`` (or the older ``rpc-server``) on PATH, else the one ``advisor setup --rpc`` built."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return found
    built = root() / "bin" / NAMES[0]
    if built.exists():
        return str(built)
    raise EngineMissingError("no rpc-server: neither ggml-rpc-server nor rpc-server is on PATH",
                             hint="build it with 'advisor setup --rpc --yes'")


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        raise EngineMissingError(f"{PACKAGE} is not installed here: its version names the llama.cpp tree to build",
                                 hint="pip install llama-cpp-python") from None


@dataclass(frozen=True)
class Step:
    what: str
    argv: list[str]
    done: Path  # skipped when this exists
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


def steps(version: str, python: str = sys.executable, gpu_args: tuple[str, ...] = ()) -> list[Step]:
    r = root()
    sdist = r / "src" / f"llama_cpp_python-{version}.tar.gz"
    tree = r / "src" / f"llama_cpp_python-{version}"
    llama = tree / "vendor" / "llama.cpp"
    build = r / "build"
    cmake = ["cmake", "-S", str(llama), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DGGML_RPC=ON",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON",
             "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF", *gpu_args]
    if shutil.which("ninja"):
        cmake += ["-G", "Ninja"]
    jobs = str(max(1, os.cpu_count() or 1))
    return [
        Step("download the llama-cpp-python source", [python, "-m", "pip", "download", "--no-deps", "--no-binary",
             ":all:", f"{PACKAGE}=={version}", "-d", str(r / "src")], sdist),
        Step("unpack it", ["tar", "-xzf", str(sdist), "-C", str(r / "src")], llama / "tools" / "rpc"),
        Step("configure llama.cpp with GGML_RPC=ON", cmake, build / "CMakeCache.txt"),
        Step("build ggml-rpc-server and llama-server", ["cmake", "--build", str(build), "--target", "ggml-rpc-server",
             "llama-server", "-j", jobs], build / "bin" / "llama-server"),
        Step("keep them (with their ggml libraries)", ["cp", "-a", str(build / "bin") + "/.", str(r / "bin")],
             r / "bin" / "llama-server"),
    ]


def script(all_steps: list[Step]) -> str:
    import shlex

    lines = []
    for s in all_steps:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in s.env.items())
        lines.append(f"# {s.what}" + (" (done)" if s.done.exists() else ""))
        lines.append((env + " " if env else "") + shlex.join(s.argv))
    return "\n".join(lines) + "\n"


def run(all_steps: list[Step], say: Callable[[str], None]) -> None:
    """Run the steps not done yet; a failing one raises with the tail of its output."""
    for s in all_steps:
        if s.done.exists():
            say(f"rpc: {s.what}: already done")
            continue
        s.done.parent.mkdir(parents=True, exist_ok=True)
        say(f"rpc: {s.what}")
        done = subprocess.run(s.argv, capture_output=True, text=True, env={**os.environ, **s.env}, cwd=s.cwd)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
            raise EngineSetupError(f"rpc setup: '{s.what}' failed (exit {done.returncode}):\n{tail}")


def server_path() -> str:
    """llama-server for an RPC head: the one ``advisor setup --rpc`` built (it has RPC), else PATH's."""
    built = root() / "bin" / "llama-server"
    if built.exists():
        return str(built)
    found = shutil.which("llama-server")
    if found:
        return found
    raise EngineMissingError("no llama-server for the RPC head", hint="build it with 'advisor setup --rpc --yes'")


def verify(say: Callable[[str], None]) -> str:
    """Both parts answer: the rpc-server prints its usage, llama-server lists --rpc (compiled with RPC)."""
    server = rpc_server_path()
    done = subprocess.run([server, "--help"], capture_output=True, text=True, timeout=30)
    if "--port" not in done.stdout + done.stderr:
        raise EngineMissingError(f"{server} --help did not print its options")
    head = server_path()
    done = subprocess.run([head, "--help"], capture_output=True, text=True, timeout=60)
    if "--rpc" not in done.stdout + done.stderr:
        raise EngineMissingError(f"{head} has no --rpc option: it was built without GGML_RPC")
    line = f"rpc: {server} and {head} (with --rpc)"
    say(line)
    return line
