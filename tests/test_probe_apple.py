"""Apple detection replayed from recorded Macs: archspec's `sysctl` dumps (tests/data/cpu/darwin-*), tirekick's
GitHub-runner sysctl and system_profiler JSON (tests/data/apple/), and Asahi Linux /proc/cpuinfo. Expected values
are read from the recordings themselves wherever the recording has them; sources in each folder's SOURCES.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from advisor.probe import apple
from advisor.system import System
from tests.replay import DATA, FAKES, Machine

CPU = DATA / "cpu"
APPLE = DATA / "apple"
APPLE_SILICON = ["darwin-bigsur-m1", "darwin-monterey-m1", "darwin-monterey-m2", "darwin-sequoia-m3"]
INTEL = ["darwin-mojave-haswell", "darwin-mojave-ivybridge", "darwin-mojave-skylake"]
RUNNER_SYSCTL = APPLE / "tirekick__runner-macos-26__sysctl.stdout"
VM_STAT = APPLE / "synthetic__vm_stat_16k.txt"
GiB = 1024**3
MiB = 1024**2


def recorded(path: Path) -> dict[str, str]:
    """The recording's keys, read independently of the code under test."""
    pairs = (line.split(":", 1) for line in path.read_text().splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def mac(tmp_path: Path, recording: Path, arch: str = "aarch64", extra: str = "") -> Machine:
    """A Mac whose `sysctl` answers from ``recording`` (plus ``extra`` lines), every call logged."""
    if extra:
        tmp_path.mkdir(parents=True, exist_ok=True)
        combined = tmp_path / "sysctl.txt"
        combined.write_text(recording.read_text().rstrip("\n") + "\n" + extra)
        recording = combined
    machine = Machine(tmp_path / "mac", os_name="darwin", arch=arch)
    machine.tool("sysctl", "sysctl.py", SYSCTL_RECORDING=recording, SYSCTL_LOG=tmp_path / "sysctl.log")
    return machine


def sysctl_calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "sysctl.log"
    return log.read_text().splitlines() if log.exists() else []


# -- the fake tool and the parser --------------------------------------------------------------------------------


def run_fake_sysctl(recording: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(FAKES / "sysctl.py"), *args],
        capture_output=True,
        text=True,
        env={"SYSCTL_RECORDING": str(recording)},
    )


def test_fake_sysctl_behaves_like_macos_sysctl():
    rec = CPU / "darwin-monterey-m2"
    done = run_fake_sysctl(rec, "hw.memsize", "no.such.key", "machdep.cpu.brand_string", "also.missing")
    assert done.stdout == "hw.memsize: 17179869184\nmachdep.cpu.brand_string: Apple M2\n"
    assert done.stderr == "sysctl: unknown oid 'no.such.key'\nsysctl: unknown oid 'also.missing'\n"
    assert done.returncode == 2  # sysctl.c main() returns the number of failed names
    quiet = run_fake_sysctl(rec, "-i", "no.such.key", "hw.memsize")
    assert (quiet.stdout, quiet.stderr, quiet.returncode) == ("hw.memsize: 17179869184\n", "", 0)
    assert run_fake_sysctl(rec, "-n", "hw.ncpu").stdout == "8\n"
    node = run_fake_sysctl(rec, "hw.perflevel1").stdout.splitlines()
    assert node[0] == "hw.perflevel1.physicalcpu: 4" and len(node) == 8
    assert len(run_fake_sysctl(rec, "-a").stdout.splitlines()) == len(rec.read_text().splitlines())


def test_parse_sysctl_accepts_colon_and_equals_forms_and_skips_noise():
    text = (
        "hw.memsize: 17179869184\n"
        "hw.ncpu = 8\n"
        "iogpu.wired_limit_mb=0\n"
        "sysctl: unknown oid 'x.y'\n"
        "hw.osenvironment:\n"
        "machdep.cpu.brand_string: Apple M2\n"
        "  a continuation line without a key\n"
    )
    data = apple.parse_sysctl(text)
    assert data["hw.memsize"] == "17179869184"
    assert data["hw.ncpu"] == "8"
    assert data["iogpu.wired_limit_mb"] == "0"
    assert data["hw.osenvironment"] == ""
    assert data["machdep.cpu.brand_string"] == "Apple M2"
    assert "x.y" not in " ".join(data)


@pytest.mark.parametrize("name", APPLE_SILICON + INTEL)
def test_read_sysctl_returns_the_recorded_values_of_the_asked_keys(tmp_path, name):
    rec = CPU / name
    data = apple.read_sysctl(mac(tmp_path, rec).system())
    expected = recorded(rec)
    for key in ("machdep.cpu.brand_string", "hw.memsize", "hw.optional.neon", "machdep.cpu.features"):
        assert data.get(key) == expected.get(key)
    # node names bring every leaf below them
    assert {k for k in expected if k.startswith("hw.optional.")} <= set(data)
    assert sysctl_calls(tmp_path)[0].startswith("-i machdep.cpu.brand_string")


# -- CPU ----------------------------------------------------------------------------------------------------------

#: From each recording's hw.optional flags that are 1 (FEAT_BF16/I8MM are 0 on M1 Pro, 1 on M2 and M3 Max;
#: FEAT_SME is 0 on M3 Max; Big Sur only has neon, neon_fp16 and armv8_2_fhm).
APPLE_FEATURES = {
    "darwin-bigsur-m1": ["asimdfhm", "fp16", "neon"],
    "darwin-monterey-m1": ["asimdfhm", "dotprod", "fp16", "neon"],
    "darwin-monterey-m2": ["asimdfhm", "bf16", "dotprod", "fp16", "i8mm", "neon"],
    "darwin-sequoia-m3": ["asimdfhm", "bf16", "dotprod", "fp16", "i8mm", "neon"],
}


@pytest.mark.parametrize("name", APPLE_SILICON)
def test_apple_silicon_cpu(tmp_path, name):
    rec = recorded(CPU / name)
    cpu = apple.detect_cpu(mac(tmp_path, CPU / name).system())
    assert cpu.model == rec["machdep.cpu.brand_string"]
    assert cpu.vendor == "Apple"
    assert cpu.physical_cores == int(rec.get("hw.physicalcpu") or rec["machdep.cpu.core_count"])
    assert cpu.logical_cores == int(rec.get("hw.logicalcpu") or rec["machdep.cpu.thread_count"])
    assert cpu.usable_cores == int(rec.get("hw.activecpu") or rec["machdep.cpu.thread_count"])
    assert cpu.features == APPLE_FEATURES[name]
    assert cpu.isa_level is None
    if "hw.perflevel0.physicalcpu" in rec:
        assert cpu.performance_cores == int(rec["hw.perflevel0.physicalcpu"])
        assert cpu.efficiency_cores == int(rec["hw.perflevel1.physicalcpu"])
        assert cpu.performance_cores + cpu.efficiency_cores == cpu.physical_cores
    else:  # Big Sur had no perflevels
        assert cpu.performance_cores is None and cpu.efficiency_cores is None


def test_apple_cpu_values_spelled_out():
    """The same M3 Max numbers as literals, so a shared misreading of the recording cannot pass."""
    cpu = apple.cpu_from_sysctl(apple.parse_sysctl((CPU / "darwin-sequoia-m3").read_text()))
    assert (cpu.model, cpu.physical_cores, cpu.performance_cores, cpu.efficiency_cores) == ("Apple M3 Max", 14, 10, 4)


@pytest.mark.parametrize(
    ("name", "level", "has_avx2"),
    [
        ("darwin-mojave-haswell", "v3", True),
        ("darwin-mojave-skylake", "v3", True),
        ("darwin-mojave-ivybridge", "v2", False),
    ],
)
def test_intel_mac_cpu(tmp_path, name, level, has_avx2):
    rec = recorded(CPU / name)
    cpu = apple.detect_cpu(mac(tmp_path, CPU / name, arch="x86_64").system())
    assert cpu.model == rec["machdep.cpu.brand_string"]
    assert cpu.vendor == rec["machdep.cpu.vendor"] == "GenuineIntel"
    features = set(cpu.features)
    # Darwin spellings in the recording, Linux spellings in the profile
    assert "SSE4.2" in rec["machdep.cpu.features"] and {"sse4_2", "sse4_1"} <= features
    assert "AVX1.0" in rec["machdep.cpu.features"] and "avx" in features and "avx1.0" not in features
    assert {"f16c", "popcnt", "cx16", "sse3", "lahf_lm"} <= features
    assert ("FMA" in rec["machdep.cpu.features"].split()) == (name != "darwin-mojave-ivybridge") == ("fma" in features)
    assert ("LZCNT" in rec["machdep.cpu.extfeatures"].split()) == has_avx2 == ("lzcnt" in features)
    assert ("AVX2" in rec["machdep.cpu.leaf7_features"]) == has_avx2 == ("avx2" in features)
    assert "avx512f" not in features and "neon" not in features
    assert cpu.features == sorted(cpu.features)
    assert cpu.isa_level == level
    assert cpu.performance_cores is None and cpu.efficiency_cores is None
    if "machdep.cpu.core_count" in rec:  # only the ivybridge dump has core counts
        assert (cpu.physical_cores, cpu.logical_cores) == (2, 4)
    else:
        assert cpu.physical_cores is None and cpu.logical_cores is None


def test_intel_mac_features_use_the_linux_spelling_of_avx512_names():
    data = {"machdep.cpu.leaf7_features": "AVX512F AVX512CD AVX512BW AVX512DQ AVX512VL AVX512VNNI AVX512BITALG"}
    assert {"avx512f", "avx512vl", "avx512_vnni", "avx512_bitalg"} <= set(apple.x86_features(data))


def test_virtual_mac_runner_cpu(tmp_path):
    """GitHub's macos-26 arm64 runner: one perflevel ("Standard"), no hw.physicalcpu in the recording."""
    rec = recorded(RUNNER_SYSCTL)
    cpu = apple.detect_cpu(mac(tmp_path, RUNNER_SYSCTL).system())
    assert cpu.model == rec["machdep.cpu.brand_string"] == "Apple M1 (Virtual)"
    assert cpu.physical_cores == int(rec["hw.perflevel0.physicalcpu"]) == 3
    assert cpu.performance_cores is None and cpu.efficiency_cores is None
    # the same runner's system_profiler agrees
    hw = apple.parse_sp_hardware((APPLE / "tirekick__runner-macos-26__SPHardwareDataType.stdout").read_text())
    assert hw.cores == cpu.physical_cores and hw.chip == cpu.model


def test_not_darwin_gives_empty_cpu_and_memory(machine):
    assert apple.detect_cpu(machine.system()) == apple.Cpu()
    assert apple.detect_memory(machine.system()) == apple.Memory()


# -- memory ---------------------------------------------------------------------------------------------------------


def test_memory_total_from_memsize_and_available_from_vm_stat(tmp_path):
    rec = recorded(CPU / "darwin-monterey-m2")
    machine = mac(tmp_path, CPU / "darwin-monterey-m2")
    machine.tool("vm_stat", "vm_stat.py", VM_STAT_RECORDING=VM_STAT)
    mem = apple.detect_memory(machine.system())
    assert mem.total_bytes == int(rec["hw.memsize"]) == 16 * GiB
    # free 30000 + speculative 12000 + inactive 380000 pages of 16384 bytes (synthetic vm_stat)
    assert mem.available_bytes == (30000 + 12000 + 380000) * 16384
    assert mem.usable_bytes == mem.available_bytes
    assert mem.limit_bytes is None


def test_memory_without_vm_stat_has_total_only(tmp_path):
    mem = apple.detect_memory(mac(tmp_path, CPU / "darwin-sequoia-m3").system())
    assert mem.total_bytes == int(recorded(CPU / "darwin-sequoia-m3")["hw.memsize"])
    assert mem.available_bytes is None and mem.usable_bytes is None


def test_swap_total_from_vm_swapusage(tmp_path):
    # line format from apple-oss-distributions/system_cmds:sysctl/sysctl.c S_xswusage (no recording has the key)
    line = "vm.swapusage: total = 2048.00M  used = 1024.25M  free = 1023.75M  (encrypted)"
    mem = apple.detect_memory(mac(tmp_path, CPU / "darwin-monterey-m2", extra=line).system())
    assert mem.swap_total_bytes == 2048 * MiB
    assert apple.detect_memory(mac(tmp_path / "b", CPU / "darwin-monterey-m2").system()).swap_total_bytes is None


def test_parse_vm_stat_reads_every_line_and_the_page_size():
    values = apple.parse_vm_stat(VM_STAT.read_text())
    assert values["page size"] == 16384
    assert values["Translation faults"] == 123456789
    assert len(values) == 1 + len(VM_STAT.read_text().splitlines()) - 1
    assert apple.available_from_vm_stat({"Pages free": 5}) is None  # no page size header


def test_one_sysctl_call_serves_cpu_memory_and_gpu(tmp_path):
    system = mac(tmp_path, CPU / "darwin-monterey-m2").system()
    apple.detect_cpu(system)
    apple.detect_memory(system)
    apple.detect(system)
    assert len(sysctl_calls(tmp_path)) == 1
    apple.detect_cpu(mac(tmp_path, CPU / "darwin-monterey-m2").system())  # another System asks again
    assert len(sysctl_calls(tmp_path)) == 2


# -- GPU ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["darwin-monterey-m1", "darwin-monterey-m2", "darwin-sequoia-m3"])
def test_apple_gpu_from_sysctl(tmp_path, name, monkeypatch):
    metal_calls = []
    monkeypatch.setattr(apple, "metal_working_set", lambda: metal_calls.append(1) or 1)
    machine = mac(tmp_path, CPU / name)
    machine.tool("system_profiler", "system_profiler.py", SYSTEM_PROFILER_LOG=tmp_path / "sp.log")
    rec = recorded(CPU / name)
    found = apple.detect(machine.system())
    (gpu,) = found.gpus
    assert (gpu.index, gpu.vendor, gpu.backend, gpu.unified_memory) == (0, "apple", "metal", True)
    assert gpu.name == rec["machdep.cpu.brand_string"]
    assert gpu.memory_total_bytes == int(rec["hw.memsize"]) * 2 // 3  # all below 64 GiB
    assert gpu.memory_free_bytes is None and gpu.cores is None
    assert gpu.source == "sysctl"
    assert not metal_calls  # a replay never asks the Metal of the machine running it
    assert not (tmp_path / "sp.log").exists()  # system_profiler is slow: not run by default
    assert found.environment == []
    assert any("2/3" in note for note in found.notes)


def test_m3_max_gpu_budget_is_24_gib(tmp_path):
    (gpu,) = apple.detect(mac(tmp_path, CPU / "darwin-sequoia-m3").system()).gpus
    assert gpu.memory_total_bytes == 24 * GiB  # 36 GiB * 2/3


def test_metal_budget_heuristic_matches_values_printed_by_llama_cpp():
    # recommendedMaxWorkingSetSize printed by llama.cpp (abetlen/llama-cpp-python#687,
    # ollama/ollama#434, ggml-org/llama.cpp#1870, #3213), in MiB
    assert apple.metal_budget_heuristic(16 * GiB) / MiB == pytest.approx(10922.67, abs=0.01)
    assert apple.metal_budget_heuristic(32 * GiB) / MiB == pytest.approx(21845.34, abs=0.01)
    assert apple.metal_budget_heuristic(64 * GiB) == 49152 * MiB
    assert apple.metal_budget_heuristic(96 * GiB) == 73728 * MiB


def test_wired_limit_override_wins_and_is_clamped_to_ram(tmp_path):
    (gpu,) = apple.detect(
        mac(tmp_path / "a", CPU / "darwin-monterey-m2", extra="iogpu.wired_limit_mb: 14000").system()
    ).gpus
    assert gpu.memory_total_bytes == 14000 * MiB and gpu.source == "sysctl"
    (gpu,) = apple.detect(
        mac(tmp_path / "b", CPU / "darwin-monterey-m2", extra="iogpu.wired_limit_mb: 99999").system()
    ).gpus
    assert gpu.memory_total_bytes == 16 * GiB
    (gpu,) = apple.detect(
        mac(tmp_path / "c", CPU / "darwin-monterey-m2", extra="iogpu.wired_limit_mb: 0").system()
    ).gpus
    assert gpu.memory_total_bytes == 16 * GiB * 2 // 3  # 0 means "Metal's default", not "no GPU memory"


def test_live_mac_asks_metal(tmp_path, monkeypatch):
    machine = mac(tmp_path, CPU / "darwin-monterey-m2")
    live = System(sysroot=Path("/"), env={"PATH": str(machine.bin), **machine.env}, os_name="darwin", arch="aarch64")
    assert live.live
    monkeypatch.setattr(apple, "metal_working_set", lambda: 11453251584)
    (gpu,) = apple.detect(live).gpus
    assert (gpu.memory_total_bytes, gpu.source) == (11453251584, "metal")
    monkeypatch.setattr(apple, "metal_working_set", lambda: None)  # no Metal device: fall back to sysctl
    live2 = System(sysroot=Path("/"), env={"PATH": str(machine.bin), **machine.env}, os_name="darwin", arch="aarch64")
    (gpu,) = apple.detect(live2).gpus
    assert (gpu.memory_total_bytes, gpu.source) == (16 * GiB * 2 // 3, "sysctl")


def test_metal_failure_is_a_note_not_a_crash(tmp_path, monkeypatch):
    machine = mac(tmp_path, CPU / "darwin-monterey-m2")
    live = System(sysroot=Path("/"), env={"PATH": str(machine.bin), **machine.env}, os_name="darwin", arch="aarch64")

    def broken():
        raise OSError("no Metal here")

    monkeypatch.setattr(apple, "metal_working_set", broken)
    found = apple.detect(live)
    assert found.gpus[0].source == "sysctl"
    assert any("Metal query failed" in note for note in found.notes)


def test_gpu_cores_only_on_request_from_system_profiler(tmp_path):
    """darwin-monterey-m1 is an M1 Pro, the same chip as the SPDisplaysDataType recording (14 GPU cores)."""
    machine = mac(tmp_path, CPU / "darwin-monterey-m1")
    displays = APPLE / "tirekick__SPDisplaysDataType_AppleSilicon_M1Pro_builtinPlus2.json"
    machine.tool("system_profiler", "system_profiler.py", SYSTEM_PROFILER_SPDisplaysDataType=displays)
    (gpu,) = apple.detect(machine.system(), gpu_cores=True).gpus
    assert gpu.name == "Apple M1 Pro" and gpu.cores == 14


def test_rosetta_is_reported(tmp_path):
    found = apple.detect(mac(tmp_path / "a", CPU / "darwin-monterey-m2", extra="sysctl.proc_translated: 1").system())
    assert found.environment == ["rosetta"]
    assert any("Rosetta" in note and "Metal" in note for note in found.notes)
    assert found.gpus[0].backend == "metal"  # the hardware still has it; the note says how to reach it
    # an x86_64 interpreter seeing an Apple chip is translated even without the sysctl key
    found = apple.detect(mac(tmp_path / "b", CPU / "darwin-sequoia-m3", arch="x86_64").system())
    assert "rosetta" in found.environment
    native = apple.detect(mac(tmp_path / "c", CPU / "darwin-sequoia-m3", extra="sysctl.proc_translated: 0").system())
    assert native.environment == []


def test_macos_version_is_reported_when_known(tmp_path):
    found = apple.detect(mac(tmp_path, CPU / "darwin-monterey-m2", extra="kern.osproductversion: 12.6").system())
    assert found.drivers == {"macos": "12.6"}


@pytest.mark.parametrize("name", INTEL)
def test_intel_mac_has_no_apple_gpu(tmp_path, name):
    found = apple.detect(mac(tmp_path, CPU / name, arch="x86_64").system())
    assert found.gpus == [] and found.environment == []
    assert any("Intel Mac" in note for note in found.notes)


def test_big_sur_m1_without_memsize(tmp_path):
    (gpu,) = (found := apple.detect(mac(tmp_path, CPU / "darwin-bigsur-m1").system())).gpus
    assert gpu.name == "Apple processor"  # what that old macOS called it
    assert gpu.memory_total_bytes is None
    assert any("hw.memsize missing" in note for note in found.notes)


def test_virtual_mac_runner_gpu(tmp_path):
    rec = recorded(RUNNER_SYSCTL)
    found = apple.detect(mac(tmp_path, RUNNER_SYSCTL).system())
    (gpu,) = found.gpus
    assert gpu.name == "Apple M1 (Virtual)"
    assert gpu.memory_total_bytes == int(rec["hw.memsize"]) * 2 // 3
    assert any("virtual Mac" in note for note in found.notes)


def test_no_sysctl_on_path_is_a_note(tmp_path):
    found = apple.detect(Machine(tmp_path / "bare", os_name="darwin", arch="aarch64").system())
    assert found.gpus == [] and any("sysctl gave no answer" in n for n in found.notes)


def test_other_systems_return_at_once(machine):
    assert apple.detect(machine.system()) == apple.Found()  # linux x86_64, nothing on PATH
    windows = Machine(machine.root.parent / "win", os_name="windows", arch="x86_64")
    assert apple.detect(windows.system()) == apple.Found()


# -- Asahi Linux --------------------------------------------------------------------------------------------------

#: Device-tree strings of the MacBook Air M1 (j313) and M2 (j413), as in torvalds/linux
#: arch/arm64/boot/dts/apple/t8103-j313.dts and t8112-j413.dts (hand-written here: no recording of these files).
ASAHI = {
    "linux-asahi-m1": ("apple,j313\0apple,t8103\0apple,arm-platform\0", "Apple MacBook Air (M1, 2020)\0", "Apple M1"),
    "linux-asahi-m2": (
        "apple,j413\0apple,t8112\0apple,arm-platform\0",
        "Apple MacBook Air (13-inch, M2, 2022)\0",
        "Apple M2",
    ),
}


def asahi(tmp_path: Path, name: str, compatible: str, model: str) -> Machine:
    machine = Machine(tmp_path / name, os_name="linux", arch="aarch64")
    machine.copy("/proc/cpuinfo", CPU / name)
    machine.file("/proc/device-tree/compatible", compatible)
    machine.file("/sys/firmware/devicetree/base/model", model)
    return machine


@pytest.mark.parametrize("name", sorted(ASAHI))
def test_asahi_linux_gpu(tmp_path, name):
    compatible, model, chip = ASAHI[name]
    found = apple.detect(asahi(tmp_path, name, compatible, model).system())
    (gpu,) = found.gpus
    assert (gpu.vendor, gpu.name, gpu.backend, gpu.unified_memory) == ("apple", chip, "vulkan", True)
    assert gpu.memory_total_bytes is None and gpu.memory_free_bytes is None
    assert "asahi" in found.environment
    assert any("Vulkan" in note and "no Metal" in note for note in found.notes)


@pytest.mark.parametrize(("name", "chip"), [("linux-asahi-m1", "Apple M1"), ("linux-asahi-m2", "Apple M2")])
def test_asahi_chip_from_cpuinfo_when_the_soc_is_unknown(name, chip):
    cpuinfo = (CPU / name).read_text()
    assert "CPU implementer : 0x61" in cpuinfo  # Apple
    assert apple.asahi_chip(["apple,j999", "apple,t9999", "apple,arm-platform"], cpuinfo, "Apple Mac") == chip


def test_asahi_chip_falls_back_to_the_model_string():
    assert apple.asahi_chip(["apple,arm-platform"], None, "Apple Mac mini (M1, 2020)") == "Apple Mac mini (M1, 2020)"


def test_arm_linux_that_is_not_apple_has_no_apple_gpu(tmp_path):
    machine = Machine(tmp_path / "rpi", os_name="linux", arch="aarch64")
    machine.file("/proc/device-tree/compatible", "raspberrypi,4-model-b\0brcm,bcm2711\0")
    assert apple.detect(machine.system()) == apple.Found()


# -- system_profiler JSON -------------------------------------------------------------------------------------------


def test_parse_sp_hardware_native_m1():
    hw = apple.parse_sp_hardware((APPLE / "tirekick__SPHardwareDataType_AppleSilicon_M1_lockDisabled.json").read_text())
    assert hw.chip == "Apple M1" and hw.machine_model == "MacBookAir10,1"
    assert (hw.cores, hw.performance_cores, hw.efficiency_cores) == (8, 4, 4)  # "proc 8:4:4"
    assert hw.memory_bytes == 16 * GiB  # "16 GB" is binary: the same size as a 16 GB Mac's hw.memsize
    assert not hw.translated_shape


def test_parse_sp_hardware_under_rosetta():
    hw = apple.parse_sp_hardware((APPLE / "tirekick__SPHardwareDataType_AppleSilicon_M1_underRosetta.json").read_text())
    assert hw.chip is None and hw.translated_shape
    assert (hw.cores, hw.performance_cores, hw.efficiency_cores) == (8, None, None)
    assert hw.machine_model == "MacBookAir10,1" and hw.memory_bytes == 16 * GiB


def test_parse_sp_hardware_virtual_runner_agrees_with_its_sysctl():
    hw = apple.parse_sp_hardware((APPLE / "tirekick__runner-macos-26__SPHardwareDataType.stdout").read_text())
    rec = recorded(RUNNER_SYSCTL)
    assert hw.chip == rec["machdep.cpu.brand_string"]
    assert hw.machine_model == rec["hw.model"] == "VirtualMac2,1"
    assert hw.memory_bytes == int(rec["hw.memsize"])  # "7 GB" == 7516192768


def test_parse_sp_displays_m1_pro():
    (gpu,) = apple.parse_sp_displays(
        (APPLE / "tirekick__SPDisplaysDataType_AppleSilicon_M1Pro_builtinPlus2.json").read_text()
    )
    assert (gpu.name, gpu.vendor, gpu.cores) == ("Apple M1 Pro", "apple", 14)
    assert gpu.metal_family == "spdisplays_mtlgpufamilyapple7"


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"SPHardwareDataType": []}', '{"SPDisplaysDataType": [1]}'])
def test_system_profiler_parsers_tolerate_junk(text):
    assert apple.parse_sp_hardware(text) is None
    assert apple.parse_sp_displays(text) == []
