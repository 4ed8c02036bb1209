"""CPU: model, vendor, core counts, the SIMD features LLM runtimes select kernels by, and the x86-64 level.

Linux reads /proc/cpuinfo directly (0.1 ms; py-cpuinfo's CPUID.get_raw_hz alone sleeps 1 s per call). macOS asks
``sysctl`` (advisor.probe.apple). Windows decodes CPUID registers when a recording of them is replayed, and asks
``IsProcessorFeaturePresent`` live.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from advisor.probe.cgroup import cgroup_dirs
from advisor.probe.profile import Cpu
from advisor.system import System

# Feature names in the profile are Linux /proc/cpuinfo spellings, lower case, except where the kernel's name hides
# what it is: "pni" is SSE3 and "abm" carries LZCNT (Linux arch/x86/include/asm/cpufeatures.h). Only features that an
# LLM runtime or the x86-64 levels care about are kept: llama.cpp's x86 variant scorer
# (ggml/src/ggml-cpu/arch/x86/cpu-feats.cpp, ggml_backend_cpu_x86_score) and its ARM feature checks
# (ggml/src/ggml-cpu/arch/arm/cpu-feats.cpp), plus the x86-64 psABI level requirements.
_X86_ALIASES = {
    "pni": "sse3",
    "abm": "lzcnt",
    "avx512vbmi": "avx512_vbmi",
    "avx512ifma": "avx512_ifma",
    # macOS machdep.cpu.* spellings (archspec-json microarchitectures.json "conversions.darwin_flags")
    "sse4.1": "sse4_1",
    "sse4.2": "sse4_2",
    "avx1.0": "avx",
    "lahf": "lahf_lm",
    "fma3": "fma",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "avxvnni": "avx_vnni",
    "amxtile": "amx_tile",
    "amxint8": "amx_int8",
    "amxbf16": "amx_bf16",
}
X86_FEATURES = frozenset(
    """sse sse2 sse3 ssse3 sse4_1 sse4_2 sse4a popcnt cx16 lahf_lm movbe xsave lzcnt bmi1 bmi2 fma f16c avx avx2
    avx_vnni avx512f avx512cd avx512vl avx512dq avx512bw avx512_vbmi avx512_vbmi2 avx512_ifma avx512_vnni
    avx512_bf16 avx512_fp16 avx512_bitalg avx512_vpopcntdq amx_tile amx_int8 amx_bf16 amx_fp16 aes sha_ni
    vaes vpclmulqdq gfni""".split()
)
# aarch64 /proc/cpuinfo "Features" (Linux Documentation/arch/arm64/elf_hwcaps.rst) to the names runtimes use.
_ARM_ALIASES = {"asimd": "neon", "asimddp": "dotprod", "asimdhp": "fp16", "fphp": "fp16"}
ARM_FEATURES = frozenset("neon dotprod fp16 i8mm bf16 sve sve2 svei8mm svebf16 sme sme2 asimdfhm".split())

# x86-64 micro-architecture levels, x86-64 psABI 1.0 §3.1.1 (gitlab.com/x86-psABIs/x86-64-ABI), in profile names.
_X86_LEVELS = (
    ("v2", frozenset("cx16 lahf_lm popcnt sse3 sse4_1 sse4_2 ssse3".split())),
    ("v3", frozenset("avx avx2 bmi1 bmi2 f16c fma lzcnt movbe xsave".split())),
    ("v4", frozenset("avx512f avx512bw avx512cd avx512dq avx512vl".split())),
)


def _normalise(tokens: Iterable[str], aliases: dict[str, str], known: frozenset[str]) -> set[str]:
    names = (aliases.get(t.strip().lower(), t.strip().lower()) for t in tokens)
    return {name for name in names if name in known}


def normalise_x86(tokens: Iterable[str]) -> set[str]:
    """Kernel or macOS x86 flag spellings -> the profile's names, keeping the features that matter."""
    return _normalise(tokens, _X86_ALIASES, X86_FEATURES)


def normalise_arm(tokens: Iterable[str]) -> set[str]:
    """Linux aarch64 hwcap names (or Apple FEAT_* already lower-cased) -> the profile's names."""
    return _normalise(tokens, _ARM_ALIASES, ARM_FEATURES)


def x86_isa_level(features: Iterable[str]) -> str:
    """The highest x86-64 level whose features are all present (every x86-64 CPU is at least v1)."""
    have = set(features)
    level = "v1"
    for name, needed in _X86_LEVELS:
        if not needed <= have:
            break
        level = name
    return level


# -- Linux /proc/cpuinfo --------------------------------------------------------------------------------------


def parse_cpuinfo(text: str) -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per processor block (keys lower case)."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            current[key.strip().lower()] = value.strip()
    if current:
        blocks.append(current)
    return blocks


# ARM "CPU implementer" codes (Linux arch/arm64/include/asm/cputype.h ARM_CPU_IMP_*).
_ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x42": "Broadcom",
    "0x43": "Cavium",
    "0x46": "Fujitsu",
    "0x48": "HiSilicon",
    "0x4e": "NVIDIA",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0xc0": "Ampere",
}


# Arm Ltd server cores by "CPU part" (Linux arch/arm64/include/asm/cputype.h ARM_CPU_PART_NEOVERSE_*): arm64 kernels
# print no model name, and the part is what tells a Graviton, Grace, Altra or Axion core from a phone's.
_ARM_PARTS = {
    "0xd0c": "Neoverse-N1",
    "0xd40": "Neoverse-V1",
    "0xd49": "Neoverse-N2",
    "0xd4f": "Neoverse-V2",
    "0xd83": "Neoverse-V3AE",
    "0xd84": "Neoverse-V3",
    "0xd8e": "Neoverse-N3",
}


def _arm_model(first: dict[str, str]) -> str | None:
    if first.get("cpu implementer", "").lower() != "0x41":
        return None
    part = _ARM_PARTS.get(first.get("cpu part", "").lower())
    return f"ARM {part}" if part else None


def cpu_from_cpuinfo(text: str) -> tuple[Cpu, str | None]:
    """Model, vendor, features and core counts from /proc/cpuinfo; second value: the architecture it shows."""
    blocks = parse_cpuinfo(text)
    procs = [b for b in blocks if "processor" in b] or blocks
    first = procs[0] if procs else {}
    arch = None
    if "flags" in first:  # x86: "flags" line
        arch = "x86_64" if "lm" in first["flags"].split() else "i686"
        features = normalise_x86(first["flags"].split())
        vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD", "HygonGenuine": "Hygon"}.get(
            first.get("vendor_id", ""), first.get("vendor_id") or None
        )
        model = first.get("model name")
    elif "features" in first:  # aarch64: "Features" line
        arch = "aarch64"
        features = normalise_arm(first["features"].split())
        vendor = _ARM_IMPLEMENTERS.get(first.get("cpu implementer", "").lower())
        model = first.get("model name") or _model_from_blocks(blocks) or _arm_model(first)
    elif "isa" in first:  # RISC-V: "isa : rv64imafdcv_zicsr..."
        arch = "riscv64" if first["isa"].startswith("rv64") else "riscv32"
        base = first["isa"].split("_")[0][4:]
        features = {"rvv"} if "v" in base else set()
        vendor = None
        model = first.get("uarch") or first.get("model name")
    elif "cpu" in first:  # POWER: "cpu : POWER9, altivec supported"
        arch = "ppc64le"
        features = {"altivec"} if "altivec" in first["cpu"] else set()
        vendor = "IBM"
        model = first["cpu"].split(",")[0]
    else:
        features, vendor, model = set(), None, None

    logical = len(procs) if procs else None
    siblings = _int(first.get("siblings"))
    cores_per_pkg = _int(first.get("cpu cores"))
    packages = len({b.get("physical id") for b in procs if "physical id" in b}) or 1
    physical = None
    pairs = {(b.get("physical id"), b.get("core id")) for b in procs if "core id" in b}
    if cores_per_pkg:
        physical = max(len(pairs), cores_per_pkg * packages)
    elif pairs:
        physical = len(pairs)
    if siblings and logical is not None:
        # An excerpt (one block of several) still tells the per-package count.
        logical = max(logical, siblings * packages)
    cpu = Cpu(
        model=model,
        vendor=vendor,
        physical_cores=physical,
        logical_cores=logical,
        features=sorted(features),
        isa_level=x86_isa_level(features) if arch == "x86_64" else None,
    )
    return cpu, arch


def _model_from_blocks(blocks: list[dict[str, str]]) -> str | None:
    for block in blocks:  # some ARM kernels print "Hardware" or "Model" in a trailing block
        for key in ("model", "hardware"):
            if block.get(key):
                return block[key]
    return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_cpu_list(text: str) -> set[int]:
    """A kernel CPU list such as "0-3,8,10-11" (Documentation/admin-guide/cgroup-v2.rst, "cpuset")."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            cpus.update(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            continue
    return cpus


def _online_cpus(system: System) -> int | None:
    text = system.read_first_line("/sys/devices/system/cpu/online")
    return len(parse_cpu_list(text)) if text else None


def _affinity(system: System) -> int | None:
    status = system.read_text("/proc/self/status") or ""
    match = re.search(r"^Cpus_allowed_list:\s*(\S+)", status, re.M)
    return len(parse_cpu_list(match.group(1))) if match else None


def _physical_from_sysfs(system: System) -> int | None:
    """Distinct (package, core) pairs from sysfs topology: right on ARM, where /proc/cpuinfo has no core ids."""
    pairs = set()
    for name in system.listdir("/sys/devices/system/cpu"):
        if not re.fullmatch(r"cpu\d+", name):
            continue
        base = f"/sys/devices/system/cpu/{name}/topology"
        core = system.read_first_line(f"{base}/core_id")
        package = system.read_first_line(f"{base}/physical_package_id")
        if core is not None:
            pairs.add((package, core))
    return len(pairs) or None


def _efficiency_cpus(system: System) -> int | None:
    """E-cores of an Intel hybrid part (Alder Lake and later): Linux publishes one perf PMU per core type,
    /sys/devices/cpu_core/cpus and /sys/devices/cpu_atom/cpus (tools/perf/Documentation/intel-hybrid.txt: "0-15"
    and "16-23"). E-cores have no hyper-threads, so each listed CPU is a physical core. None on other parts."""
    atom = system.read_first_line("/sys/devices/cpu_atom/cpus")
    if not atom or not system.read_first_line("/sys/devices/cpu_core/cpus"):
        return None
    return len(parse_cpu_list(atom)) or None


def cgroup_cpu_limit(system: System) -> float | None:
    """CPUs allowed by the cgroup CPU quota, or None when unlimited (v2 cpu.max, v1 cpu.cfs_quota_us/period)."""

    for directory in cgroup_dirs(system, "cpu"):
        text = system.read_first_line(f"{directory}/cpu.max")
        if text:
            quota, _, period = text.partition(" ")
            if quota != "max" and _int(quota) and _int(period):
                return int(quota) / int(period)
            continue
        quota = _int(system.read_first_line(f"{directory}/cpu.cfs_quota_us"))
        period = _int(system.read_first_line(f"{directory}/cpu.cfs_period_us"))
        if quota and quota > 0 and period:
            return quota / period
    return None


def detect_linux(system: System) -> Cpu:
    cpu, _ = cpu_from_cpuinfo(system.read_text("/proc/cpuinfo") or "")
    logical = _online_cpus(system) or cpu.logical_cores or system.cpu_count()
    # x86 blocks carry core ids; ARM and RISC-V ones do not, and sysfs topology tells instead.
    physical = cpu.physical_cores or _physical_from_sysfs(system)
    if physical and logical:
        physical = min(physical, logical)
    efficiency = _efficiency_cpus(system)
    performance = physical - efficiency if physical and efficiency and physical > efficiency else None
    limits = [n for n in (logical, _affinity(system)) if n]
    quota = cgroup_cpu_limit(system)
    if quota:
        limits.append(max(1, math.ceil(quota)))
    return Cpu(
        model=cpu.model,
        vendor=cpu.vendor,
        physical_cores=physical or logical,
        logical_cores=logical,
        usable_cores=min(limits) if limits else None,
        features=cpu.features,
        isa_level=cpu.isa_level,
        performance_cores=performance,
        efficiency_cores=efficiency if performance else None,
    )


# -- Windows ----------------------------------------------------------------------------------------------------

# (leaf, subleaf, register index into (eax, ebx, ecx, edx), bit) -> feature, from Intel SDM Vol. 2A "CPUID" tables
# 3-8, 3-10 and 3-11 and AMD APM Vol. 3 "CPUID Fn8000_0001".
_CPUID_BITS = {
    (1, 0, 2, 0): "sse3", (1, 0, 2, 9): "ssse3", (1, 0, 2, 12): "fma", (1, 0, 2, 13): "cx16",
    (1, 0, 2, 19): "sse4_1", (1, 0, 2, 20): "sse4_2", (1, 0, 2, 22): "movbe", (1, 0, 2, 23): "popcnt",
    (1, 0, 2, 25): "aes", (1, 0, 2, 26): "xsave", (1, 0, 2, 28): "avx", (1, 0, 2, 29): "f16c",
    (1, 0, 3, 25): "sse", (1, 0, 3, 26): "sse2",
    (7, 0, 1, 3): "bmi1", (7, 0, 1, 5): "avx2", (7, 0, 1, 8): "bmi2", (7, 0, 1, 16): "avx512f",
    (7, 0, 1, 17): "avx512dq", (7, 0, 1, 21): "avx512_ifma", (7, 0, 1, 28): "avx512cd", (7, 0, 1, 29): "sha_ni",
    (7, 0, 1, 30): "avx512bw", (7, 0, 1, 31): "avx512vl",
    (7, 0, 2, 1): "avx512_vbmi", (7, 0, 2, 6): "avx512_vbmi2", (7, 0, 2, 8): "gfni", (7, 0, 2, 9): "vaes",
    (7, 0, 2, 10): "vpclmulqdq", (7, 0, 2, 11): "avx512_vnni", (7, 0, 2, 12): "avx512_bitalg",
    (7, 0, 2, 14): "avx512_vpopcntdq",
    (7, 0, 3, 22): "amx_bf16", (7, 0, 3, 23): "avx512_fp16", (7, 0, 3, 24): "amx_tile", (7, 0, 3, 25): "amx_int8",
    (7, 1, 0, 4): "avx_vnni", (7, 1, 0, 5): "avx512_bf16",
    (0x80000001, 0, 2, 0): "lahf_lm", (0x80000001, 0, 2, 5): "lzcnt", (0x80000001, 0, 2, 6): "sse4a",
}  # fmt: skip


def parse_cpuid_dump(text: str) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """archspec's CPUID dump format: one "eax_in, ecx_in, eax, ebx, ecx, edx" line per leaf."""
    leaves = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 6:
            continue
        try:
            leaf, sub, *regs = (int(p, 0) for p in parts)
        except ValueError:
            continue
        leaves[(leaf, sub)] = tuple(regs)
    return leaves


def cpu_from_cpuid(leaves: dict[tuple[int, int], tuple[int, int, int, int]]) -> Cpu:
    features = {
        name
        for (leaf, sub, reg, bit), name in _CPUID_BITS.items()
        if (leaf, sub) in leaves and leaves[(leaf, sub)][reg] >> bit & 1
    }
    vendor_regs = leaves.get((0, 0))
    vendor = None
    if vendor_regs:  # vendor string is EBX, EDX, ECX (Intel SDM "CPUID leaf 0")
        raw = b"".join(r.to_bytes(4, "little") for r in (vendor_regs[1], vendor_regs[3], vendor_regs[2]))
        vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(raw.decode("ascii", "replace"))
    brand = b"".join(
        r.to_bytes(4, "little") for leaf in (0x80000002, 0x80000003, 0x80000004) for r in leaves.get((leaf, 0), ())
    )
    model = brand.split(b"\0")[0].decode("ascii", "replace").strip() or None
    return Cpu(model=model, vendor=vendor, features=sorted(features), isa_level=x86_isa_level(features))


# IsProcessorFeaturePresent constants (winnt.h, PF_*): the subset that matters for kernel selection.
_WINDOWS_PF = {
    "sse3": 13, "ssse3": 36, "sse4_1": 37, "sse4_2": 38, "avx": 39, "avx2": 40, "avx512f": 41,
    "neon": 19, "dotprod": 43,
}  # fmt: skip


def detect_windows(system: System) -> Cpu:
    recorded = system.read_text("/cpuid")
    if recorded is not None:  # a replayed Windows machine: its CPUID registers in archspec's dump format
        cpu = cpu_from_cpuid(parse_cpuid_dump(recorded))
    else:
        features: set[str] = set()
        if system.live:
            try:
                import ctypes

                present = ctypes.windll.kernel32.IsProcessorFeaturePresent  # type: ignore[attr-defined]
                features = {name for name, pf in _WINDOWS_PF.items() if present(pf)}
            except (AttributeError, OSError):
                pass
        model = system.env.get("PROCESSOR_IDENTIFIER")
        arch_x86 = system.arch == "x86_64"
        cpu = Cpu(model=model, features=sorted(features), isa_level=x86_isa_level(features) if arch_x86 else None)
    count = system.cpu_count() or _int(system.env.get("NUMBER_OF_PROCESSORS"))
    return Cpu(**{**cpu.__dict__, "logical_cores": count, "usable_cores": count})


def detect(system: System) -> Cpu:
    if system.os_name == "windows":
        return detect_windows(system)
    return detect_linux(system)


def effective_arch(system: System, cpu: Cpu) -> str:
    """The architecture to plan for: the recorded one when replaying Linux, else what the platform says."""
    if system.os_name == "linux" and not system.live:
        _, arch = cpu_from_cpuinfo(system.read_text("/proc/cpuinfo") or "")
        if arch:
            return arch
    return system.arch
