"""CPU probe on recorded /proc/cpuinfo and CPUID dumps (tests/data/cpu, from archspec-json) and on this machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from advisor.probe import cpu
from tests.replay import DATA

CPU = DATA / "cpu"
LINUX = sorted(p.name for p in CPU.glob("linux-*")) + ["own-sandbox-linux-kvm-epyc-zen2"]

# The x86-64 level each recording's archspec target implies: archspec-json microarchitectures.json lists
# x86_64_v2/v3/v4 as ancestors of each named target (k10 has no SSSE3, so it stays at v1; piledriver and
# bulldozer lack AVX2; zen2 in the sandbox VM is v3).
X86_LEVEL = {
    "cascadelake": "v4", "skylake_avx512": "v4", "sapphirerapids": "v4", "zen4": "v4",
    "broadwell": "v3", "haswell": "v3", "x86_64_v3": "v3", "zen": "v3", "zen2": "v3", "zen3": "v3",
    "alderlake": "v3", "ivybridge": "v2", "piledriver": "v2", "bulldozer": "v2", "k10": "v1",
}  # fmt: skip


def _target(name: str) -> str:
    return name.rsplit("-", 1)[-1]


def _recorded(name: str, key: str) -> str | None:
    match = re.search(rf"^{key}\s*:\s*(.*)$", (CPU / name).read_text(), re.M)
    return match.group(1).strip() if match else None


def _replay(machine, name: str):
    machine.copy("/proc/cpuinfo", CPU / name)
    return cpu.detect(machine.system()), cpu.effective_arch(machine.system(), cpu.Cpu())


@pytest.mark.parametrize("name", LINUX)
def test_every_linux_recording_replays(machine, name):
    result, arch = _replay(machine, name)
    flags = (_recorded(name, "flags") or "").split()
    arm = (_recorded(name, "Features") or "").split()
    if flags:
        assert arch == "x86_64"
        assert result.model == _recorded(name, "model name")
        assert result.vendor == {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}[_recorded(name, "vendor_id")]
        # Every feature the kernel printed under a profile name is reported, and nothing it did not print.
        for token, feature in [("avx2", "avx2"), ("avx512f", "avx512f"), ("pni", "sse3"), ("sse4_2", "sse4_2"),
                               ("fma", "fma"), ("f16c", "f16c"), ("avx512_vnni", "avx512_vnni"),
                               ("avx512_bf16", "avx512_bf16"), ("avx_vnni", "avx_vnni"), ("amx_int8", "amx_int8"),
                               ("abm", "lzcnt"), ("avx512vbmi", "avx512_vbmi")]:  # fmt: skip
            assert (feature in result.features) == (token in flags), (token, feature)
        assert result.isa_level == X86_LEVEL[_target(name) if name.startswith("linux") else "zen2"]
        siblings, cores = _recorded(name, "siblings"), _recorded(name, "cpu cores")
        if siblings and cores:  # these excerpts hold one processor block of one package
            assert result.logical_cores == int(siblings)
            assert result.physical_cores == int(cores)
    elif arm:
        assert arch == "aarch64"
        assert result.isa_level is None
        for token, feature in [("asimd", "neon"), ("asimddp", "dotprod"), ("i8mm", "i8mm"), ("bf16", "bf16"),
                               ("sve", "sve"), ("sve2", "sve2"), ("sme", "sme")]:  # fmt: skip
            assert (feature in result.features) == (token in arm), (token, feature)
        implementer = _recorded(name, "CPU implementer")
        expected_vendor = {"0x41": "ARM", "0x43": "Cavium", "0x46": "Fujitsu", "0x61": "Apple", "0xc0": "Ampere"}
        assert result.vendor == expected_vendor[implementer]
    elif _recorded(name, "isa"):
        assert arch.startswith("riscv")
        assert ("rvv" in result.features) == ("v" in _recorded(name, "isa").split("_")[0][4:])
    else:
        assert arch == "ppc64le"
        assert result.model == _recorded(name, "cpu").split(",")[0]


def test_arm_architecture_facts():
    """Spot checks against what the vendors document for these cores (not only the recorded flags)."""
    graviton2 = cpu.cpu_from_cpuinfo((CPU / "linux-amazon-neoverse_n1").read_text())[0]
    assert "dotprod" in graviton2.features and "sve" not in graviton2.features  # Neoverse N1: Armv8.2, no SVE
    a64fx = cpu.cpu_from_cpuinfo((CPU / "linux-rocky8-a64fx").read_text())[0]
    assert "sve" in a64fx.features and "dotprod" not in a64fx.features  # A64FX: SVE-512, no SDOT in NEON
    v2 = cpu.cpu_from_cpuinfo((CPU / "linux-rhel9-neoverse_v2").read_text())[0]
    assert {"sve", "sve2", "i8mm", "bf16"} <= set(v2.features)  # Neoverse V2: Armv9.0-A


@pytest.mark.parametrize("name, level", [("windows-cpuid-broadwell", "v3"), ("windows-cpuid-icelake", "v4")])
def test_windows_cpuid_recordings(machine, name, level):
    machine.os_name = "windows"
    machine.copy("/cpuid", CPU / name)
    result = cpu.detect(machine.system())
    assert result.isa_level == level
    assert result.vendor == "Intel"
    assert "avx2" in result.features
    # Ice Lake added AVX-512 VNNI and VBMI2 (Intel ARK / SDM); Broadwell has no AVX-512 at all.
    assert ("avx512_vnni" in result.features) == (level == "v4")
    assert ("avx512_vbmi2" in result.features) == (level == "v4")
    assert result.model and ("Xeon" in result.model or "Core" in result.model)


def test_cpu_list_parsing():
    assert cpu.parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert cpu.parse_cpu_list("") == set()
    assert cpu.parse_cpu_list("garbage,2") == {2}


def test_usable_cores_follow_affinity_and_quota(machine):
    machine.copy("/proc/cpuinfo", CPU / "linux-rocky8.5-zen4")
    machine.file("/sys/devices/system/cpu/online", "0-191\n")
    machine.file("/proc/self/status", "Name:\tpython\nCpus_allowed_list:\t0-63\n")
    machine.file("/proc/self/cgroup", "0::/kubepods/pod1\n")
    machine.file("/sys/fs/cgroup/cgroup.controllers", "cpu memory\n")
    machine.file("/sys/fs/cgroup/kubepods/pod1/cpu.max", "1550000 100000\n")  # 15.5 CPUs -> 16
    result = cpu.detect(machine.system())
    assert result.logical_cores == 192
    assert result.usable_cores == 16
    machine.file("/sys/fs/cgroup/kubepods/pod1/cpu.max", "max 100000\n")
    assert cpu.detect(machine.system()).usable_cores == 64


def test_intel_hybrid_parts_count_their_performance_cores(machine):
    """The recorded Core Ultra 9 285 (24 cores, no hyper-threads: 8 P-cores and 16 E-cores, Intel ARK) with the
    kernel's per-core-type PMU lists in the format of tools/perf/Documentation/intel-hybrid.txt: 8 performance
    cores, and llama.cpp gets 8 threads with the reason why."""
    machine.copy("/proc/cpuinfo", CPU / "linux-ubuntu24.04-alderlake")
    machine.file("/sys/devices/system/cpu/online", "0-23\n")
    assert cpu.detect(machine.system()).performance_cores is None  # no PMU lists: not known to be hybrid
    machine.file("/sys/devices/cpu_core/cpus", "0-7\n")
    machine.file("/sys/devices/cpu_atom/cpus", "8-23\n")
    result = cpu.detect(machine.system())
    assert (result.physical_cores, result.performance_cores, result.efficiency_cores) == (24, 8, 16)

    from advisor.planner.llamacpp import threads_for
    from advisor.planner.machine import build_machine
    from advisor.probe.profile import HardwareProfile, Memory
    from advisor.rules import load_rules
    gib = 1 << 30
    m = build_machine(HardwareProfile(cpu=result, memory=Memory(total_bytes=64 * gib, available_bytes=60 * gib,
                                                                usable_bytes=60 * gib)), load_rules())
    threads, why = threads_for(m, None)
    assert threads == 8 and "16 efficiency cores" in why


def test_v1_cfs_quota(machine):
    machine.copy("/proc/cpuinfo", CPU / "own-sandbox-linux-kvm-epyc-zen2")
    machine.file("/proc/self/cgroup", "4:cpu,cpuacct:/docker/abc\n")
    machine.file("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "50000\n")
    machine.file("/sys/fs/cgroup/cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n")
    assert cpu.detect(machine.system()).usable_cores == 1


def test_empty_or_garbage_cpuinfo_does_not_crash(machine):
    machine.file("/proc/cpuinfo", "\x00\x01 not a cpuinfo\n:::\n")
    result = cpu.detect(machine.system())
    assert result.features == []


def test_live_machine_matches_proc_cpuinfo():
    """On this (Linux) machine the probe agrees with the live /proc/cpuinfo."""
    text = Path("/proc/cpuinfo").read_text()
    result = cpu.detect(__import__("advisor.system", fromlist=["System"]).System.from_env())
    blocks = cpu.parse_cpuinfo(text)
    assert result.logical_cores == len([b for b in blocks if "processor" in b])
    tokens = set((blocks[0].get("flags") or blocks[0].get("features") or "").split())
    assert set(result.features) == (cpu.normalise_x86(tokens) if "flags" in blocks[0] else cpu.normalise_arm(tokens))
    assert result.model == (blocks[0].get("model name") or result.model)


@pytest.mark.parametrize("path", sorted((DATA / "cpu").glob("*neoverse_*")), ids=lambda p: p.name)
def test_arm_server_cores_are_named_from_their_cpu_part(path: Path) -> None:
    """arm64 /proc/cpuinfo has no model name; the recording's file name (archspec's microarchitecture) and its
    "CPU part" line name the same Neoverse core."""
    got, _ = cpu.cpu_from_cpuinfo(path.read_text())
    core = path.name.split("neoverse_")[1]  # n1, v1, n2, v2
    assert got.model == f"ARM Neoverse-{core.upper()}"
