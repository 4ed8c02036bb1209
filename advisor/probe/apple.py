"""Apple machines: macOS on Apple Silicon or Intel, and Apple Silicon under Asahi Linux.

On macOS everything comes from ONE ``sysctl`` call (kept per ``System`` so that the CPU, memory and GPU detectors
share it) plus ``vm_stat`` for available memory. Metal is asked for the GPU budget only on the live machine.
``system_profiler`` is slow (hundreds of ms to seconds), so it is never run by default; its
JSON shapes have pure parsers here (``parse_sp_hardware``, ``parse_sp_displays``) and ``detect(gpu_cores=True)``.

Sources are cited as owner/repo:path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from advisor.probe import cpu
from advisor.probe.profile import Found
from advisor.probe.profile import Cpu, Gpu, Memory
from advisor.system import System

MiB = 1024**2
GiB = 1024**3

#: Keys asked of ``sysctl`` in one call. A name that is a node ("hw.optional", "hw.perflevel0") makes sysctl print
#: every leaf below it, so all feature flags and both perflevels come back without listing each one.
#: Intel-only keys (machdep.cpu.features...) are unknown on Apple Silicon and vice versa; ``-i`` skips them.
SYSCTL_KEYS: tuple[str, ...] = (
    "machdep.cpu.brand_string",
    "machdep.cpu.vendor",
    "machdep.cpu.core_count",
    "machdep.cpu.thread_count",
    # Intel Macs: CPUID feature names; archspec reads the same three keys
    # (archspec/archspec:archspec/cpu/detect.py `_darwin_sysctl_data`).
    "machdep.cpu.features",
    "machdep.cpu.leaf7_features",
    "machdep.cpu.extfeatures",
    "hw.model",
    "hw.ncpu",
    "hw.activecpu",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "hw.memsize",
    # "total = 2048.00M  used = ...": apple-oss-distributions/system_cmds:sysctl/sysctl.c `S_xswusage`.
    "vm.swapusage",
    "hw.nperflevels",
    "hw.perflevel0",
    "hw.perflevel1",
    "hw.perflevel2",
    "hw.optional",
    # 0 = Metal's default GPU budget; >0 = a user override in MiB (needs sudo, lost at reboot): AlexsJones/llmfit#754.
    "iogpu.wired_limit_mb",
    # 1 when the process asking runs under Rosetta 2 (Apple, "About the Rosetta translation environment").
    "sysctl.proc_translated",
    "kern.osproductversion",
)

# -- sysctl ----------------------------------------------------------------------------------------------------

_LINE = re.compile(r"^([A-Za-z0-9_.\-]+)\s*(?::|=)\s?(.*)$")


def parse_sysctl(text: str) -> dict[str, str]:
    """``key: value`` lines (macOS ``sysctl``) or ``key = value`` / ``key=value`` (``sysctl -e``, BSD) to a dict.

    Lines that are not one of these (an error, the continuation of a multi-line value) are skipped.
    """
    data: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line.rstrip())
        if match:
            data[match.group(1)] = match.group(2).strip()
    return data


def read_sysctl(system: System, keys: Iterable[str] = SYSCTL_KEYS) -> dict[str, str]:
    """One ``sysctl -i KEY...`` call. ``-i`` skips unknown keys (archspec does the same); without it macOS's sysctl
    warns "unknown oid" on stderr for each one, carries on and exits with the number of misses
    (apple-oss-distributions/system_cmds:sysctl/sysctl.c `main`/`parse`), so stdout is read whatever the status."""
    done = system.run(["sysctl", "-i", *keys])
    return parse_sysctl(done.stdout) if done.returncode is not None else {}


def _sysctl(system: System) -> dict[str, str]:
    # One sysctl answer per System: the CPU, memory and GPU detectors share it.
    return system.once("apple.sysctl", lambda: read_sysctl(system))


def _int(data: Mapping[str, str], key: str) -> int | None:
    try:
        return int(data[key].split()[0])
    except (KeyError, ValueError, IndexError):
        return None


def is_apple_silicon(data: Mapping[str, str]) -> bool:
    """``hw.optional.arm64`` is 1 on Apple Silicon, also for an x86_64 process under Rosetta where ``uname -m`` says
    x86_64 (the check install scripts use; 1 in every Apple Silicon dump in tests/data/cpu). A dump without it
    still has an "Apple ..." brand string (archspec's `_machine()` decides on the brand string the same way)."""
    return data.get("hw.optional.arm64") == "1" or data.get("machdep.cpu.brand_string", "").startswith("Apple")


def is_rosetta(data: Mapping[str, str], arch: str | None = None) -> bool:
    """Translated by Rosetta 2: ``sysctl.proc_translated`` is 1, or an x86_64 interpreter sees an Apple chip."""
    return data.get("sysctl.proc_translated") == "1" or (arch == "x86_64" and is_apple_silicon(data))


# -- CPU -------------------------------------------------------------------------------------------------------

#: Apple Silicon ``hw.optional`` flags to the profile's names, which are Linux /proc/cpuinfo spellings
#: (advisor.probe.cpu.ARM_FEATURES). Key names from the darwin-monterey-m1/m2 and darwin-sequoia-m3 recordings
#: (tests/data/cpu). FEAT_FP16 is the FP16 arithmetic extension, Linux's fphp/asimdhp, which the profile calls ``fp16``.
ARM_FLAGS: dict[str, str] = {
    "hw.optional.neon": "neon",
    "hw.optional.AdvSIMD": "neon",
    "hw.optional.arm.AdvSIMD": "neon",  # macOS 14+ moved it under hw.optional.arm (darwin-sequoia-m3)
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_BF16": "bf16",
    "hw.optional.arm.FEAT_FP16": "fp16",
    # Big Sur has no FEAT_* keys (darwin-bigsur-m1); neon_fp16 is its name for the same FP16 arithmetic.
    "hw.optional.neon_fp16": "fp16",
    "hw.optional.arm.FEAT_FHM": "asimdfhm",
    "hw.optional.armv8_2_fhm": "asimdfhm",
    "hw.optional.arm.FEAT_SME": "sme",
    "hw.optional.arm.FEAT_SME2": "sme2",
}

#: xnu's AVX-512 names (apple/darwin-xnu:osfmk/i386/cpuid.c `leaf7_feature_map`) that advisor.probe.cpu's alias table
#: does not know, to the Linux spellings (torvalds/linux:arch/x86/include/asm/cpufeatures.h). Every other macOS
#: spelling (SSE4.2, AVX1.0, LAHF, ...) is handled by cpu.normalise_x86.
DARWIN_X86_FLAGS: dict[str, str] = {
    "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq",
    "avx512vbmi2": "avx512_vbmi2",
}


def arm_features(data: Mapping[str, str]) -> list[str]:
    """Profile names of the Apple Silicon flags that are 1. NEON is part of every ARMv8-A core, so it is added
    whenever ``hw.optional.arm64`` says this is arm64 (archspec-json's ``feature_aliases.neon`` does the same)."""
    found = {name for key, name in ARM_FLAGS.items() if data.get(key) == "1"}
    if data.get("hw.optional.arm64") == "1":
        found.add("neon")
    return sorted(cpu.normalise_arm(found))


def x86_features(data: Mapping[str, str]) -> list[str]:
    """Intel Mac CPUID names (machdep.cpu.features, leaf7_features, extfeatures; the keys archspec reads) in the
    profile's Linux spelling, through the same filter as /proc/cpuinfo flags."""
    raw = " ".join(
        data.get(k, "") for k in ("machdep.cpu.features", "machdep.cpu.leaf7_features", "machdep.cpu.extfeatures")
    )
    return sorted(cpu.normalise_x86(DARWIN_X86_FLAGS.get(flag, flag) for flag in raw.lower().split()))


def perf_cores(data: Mapping[str, str]) -> tuple[int | None, int | None]:
    """(performance, efficiency) physical cores from ``hw.perflevelN``. perflevel0 is the fastest level; levels named
    "Efficiency" are efficiency cores and any other name ("Performance", or "Super" as M5 reports) counts as
    performance. A single level (a virtual Mac says "Standard") tells nothing apart: (None, None)."""
    levels = []
    for n in range(8):
        cores = _int(data, f"hw.perflevel{n}.physicalcpu")
        if cores is None:
            break
        levels.append((cores, data.get(f"hw.perflevel{n}.name")))
    if len(levels) < 2:
        return None, None
    perf = eff = 0
    for n, (cores, name) in enumerate(levels):
        if name == "Efficiency" or (name is None and n > 0):
            eff += cores
        else:
            perf += cores
    return perf, eff


def cpu_from_sysctl(data: Mapping[str, str]) -> Cpu:
    """The ``Cpu`` of a Mac from its sysctl keys (pure)."""
    apple = is_apple_silicon(data)
    perf, eff = perf_cores(data)
    levels_total = sum(_int(data, f"hw.perflevel{n}.physicalcpu") or 0 for n in range(8))
    physical = _int(data, "hw.physicalcpu") or _int(data, "machdep.cpu.core_count") or (levels_total or None)
    logical = _int(data, "hw.logicalcpu") or _int(data, "machdep.cpu.thread_count") or _int(data, "hw.ncpu")
    if logical is None:
        logical = sum(_int(data, f"hw.perflevel{n}.logicalcpu") or 0 for n in range(8)) or physical
    # hw.activecpu: CPUs currently available to run threads (can be below hw.logicalcpu if some are disabled).
    usable = _int(data, "hw.activecpu") or logical
    if apple:
        features = arm_features(data)
        isa_level = None
        vendor = "Apple"
    else:
        features = x86_features(data)
        isa_level = cpu.x86_isa_level(features) if features else None
        vendor = data.get("machdep.cpu.vendor") or None
    return Cpu(
        model=data.get("machdep.cpu.brand_string") or None,
        vendor=vendor,
        physical_cores=physical,
        logical_cores=logical,
        usable_cores=usable,
        features=features,
        isa_level=isa_level,
        performance_cores=perf,
        efficiency_cores=eff,
    )


def detect_cpu(system: System) -> Cpu:
    """macOS CPU from the shared sysctl call; an empty ``Cpu`` elsewhere or when sysctl cannot be run."""
    if system.os_name != "darwin":
        return Cpu()
    return cpu_from_sysctl(_sysctl(system))


# -- memory ----------------------------------------------------------------------------------------------------

_VM_PAGE = re.compile(r"page size of (\d+) bytes")
_VM_LINE = re.compile(r'^"?([^:"]+)"?:\s+(\d+)\.?\s*$')


def parse_vm_stat(text: str) -> dict[str, int]:
    """``vm_stat`` output to {"page size": bytes, "Pages free": n, ...}. Format from
    apple-oss-distributions/system_cmds:vm_stat/vm_stat.c `snapshot` ("%-30s %16llu." lines after a
    "(page size of N bytes)" header)."""
    values: dict[str, int] = {}
    page = _VM_PAGE.search(text)
    if page:
        values["page size"] = int(page.group(1))
    for line in text.splitlines():
        match = _VM_LINE.match(line.strip())
        if match:
            values[match.group(1).strip()] = int(match.group(2))
    return values


def available_from_vm_stat(values: Mapping[str, int]) -> int | None:
    """Available bytes = (free + speculative + inactive) pages, psutil's macOS formula
    (giampaolo/psutil:psutil/_psosx.py `virtual_memory`: ``avail = inactive + free``, after Zabbix's
    src/libs/zbxsysinfo/osx/memory.c). psutil's ``free`` is the kernel's free_count, which includes the
    speculative pages that vm_stat prints apart ("Pages free" = free_count - speculative_count in vm_stat.c), so
    both are added back. Purgeable pages are not added: they sit on the active/inactive queues and would be counted
    twice."""
    page = values.get("page size")
    if not page or "Pages free" not in values:
        return None
    pages = values["Pages free"] + values.get("Pages speculative", 0) + values.get("Pages inactive", 0)
    return pages * page


_SWAP_TOTAL = re.compile(r"total\s*=\s*([\d.,]+)M")


def swap_total(data: Mapping[str, str]) -> int | None:
    """Bytes of swap files macOS has made so far (it grows them on demand, so this is not a fixed size)."""
    match = _SWAP_TOTAL.search(data.get("vm.swapusage", ""))
    return int(float(match.group(1).replace(",", ".")) * MiB) if match else None


def memory_from(data: Mapping[str, str], vm_stat: str | None) -> Memory:
    total = _int(data, "hw.memsize")
    available = available_from_vm_stat(parse_vm_stat(vm_stat)) if vm_stat else None
    if available is not None and total is not None:
        available = min(available, total)
    return Memory(
        total_bytes=total,
        available_bytes=available,
        usable_bytes=available,
        limit_bytes=None,
        swap_total_bytes=swap_total(data),
    )


def detect_memory(system: System) -> Memory:
    """macOS memory: total from ``hw.memsize``; available from ``vm_stat`` when it is on PATH."""
    if system.os_name != "darwin":
        return Memory()
    data = _sysctl(system)
    done = system.run(["vm_stat"]) if system.which("vm_stat") else None
    return memory_from(data, done.stdout if done is not None and done.ok else None)


# -- GPU -------------------------------------------------------------------------------------------------------

#: From 64 GiB of RAM Metal's default budget is 3/4 of it, below 2/3: values printed by llama.cpp as
#: recommendedMaxWorkingSetSize for 16 GB (10922.67 MiB; abetlen/llama-cpp-python#687), 32 GB (21845.34 MiB;
#: ollama/ollama#434), 64 GB (49152 MiB; ggml-org/llama.cpp#1870) and 96 GB (73728 MiB; ggml-org/llama.cpp#3213);
#: gpustack/gpustack#1375 quotes 75 %.
LARGE_MEMORY_BYTES = 64 * GiB


def metal_budget_heuristic(memsize: int) -> int:
    """Metal's default ``recommendedMaxWorkingSetSize`` estimated from RAM (see LARGE_MEMORY_BYTES)."""
    return memsize * 3 // 4 if memsize >= LARGE_MEMORY_BYTES else memsize * 2 // 3


def gpu_budget(data: Mapping[str, str]) -> int | None:
    """GPU memory budget without Metal: the ``iogpu.wired_limit_mb`` override when set (Metal reports exactly that,
    clamped to RAM: AlexsJones/llmfit#754), else the 2/3 - 3/4 heuristic of ``hw.memsize``."""
    memsize = _int(data, "hw.memsize")
    wired_mb = _int(data, "iogpu.wired_limit_mb")
    if wired_mb and wired_mb > 0:
        return min(wired_mb * MiB, memsize) if memsize else wired_mb * MiB
    return metal_budget_heuristic(memsize) if memsize else None


def metal_working_set() -> int | None:
    """``MTLCreateSystemDefaultDevice().recommendedMaxWorkingSetSize`` through ctypes (no pyobjc), the number
    llama.cpp uses as the Metal device's total memory (ggml-org/llama.cpp:ggml/src/ggml-metal/ggml-metal-device.m
    `ggml_metal_device_get_memory`) and ollama as its VRAM (ollama/ollama:discover/gpu_info_darwin.m). None when
    Metal or the Objective-C runtime cannot be loaded or there is no device. Only ever called on a live Mac."""
    import ctypes
    import ctypes.util

    try:
        metal = ctypes.CDLL("/System/Library/Frameworks/Metal.framework/Metal")
        objc = ctypes.CDLL(ctypes.util.find_library("objc") or "/usr/lib/libobjc.A.dylib")
    except OSError:
        return None
    metal.MTLCreateSystemDefaultDevice.restype = ctypes.c_void_p
    metal.MTLCreateSystemDefaultDevice.argtypes = []
    objc.sel_registerName.restype = ctypes.c_void_p
    objc.sel_registerName.argtypes = [ctypes.c_char_p]
    device = metal.MTLCreateSystemDefaultDevice()
    if not device:
        return None
    # objc_msgSend must be called through a prototype with the method's exact signature (arm64 ABI).
    send_u64 = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p)(
        ctypes.cast(objc.objc_msgSend, ctypes.c_void_p).value
    )
    send_void = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(
        ctypes.cast(objc.objc_msgSend, ctypes.c_void_p).value
    )
    try:
        size = send_u64(device, objc.sel_registerName(b"recommendedMaxWorkingSetSize"))
    finally:
        send_void(device, objc.sel_registerName(b"release"))  # MTLCreate... follows the Create rule
    return int(size) or None


ROSETTA_NOTE = (
    "running under Rosetta 2 (x86_64 Python on Apple Silicon): an x86_64 llama.cpp gets no Metal GPU and no NEON; "
    "install a native arm64 Python/runtime"
)


def _macos_found(system: System, gpu_cores: bool) -> Found:
    found = Found()
    data = _sysctl(system)
    if not data:
        found.notes.append("apple: sysctl gave no answer; Mac hardware unknown")
        return found
    if data.get("kern.osproductversion"):
        found.drivers["macos"] = data["kern.osproductversion"]
    if is_rosetta(data, system.arch):
        found.environment.append("rosetta")
        found.notes.append(ROSETTA_NOTE)
    if not is_apple_silicon(data):
        found.notes.append(
            "apple: Intel Mac; its AMD/Intel GPUs are not probed (system_profiler SPDisplaysDataType lists them), "
            "planning for CPU only"
        )
        return found

    name = data.get("machdep.cpu.brand_string") or "Apple Silicon"
    total = source = None
    if system.live and system.os_name == "darwin":
        try:
            total = metal_working_set()
        except Exception as exc:  # noqa: BLE001 - a broken Metal must not hide the sysctl estimate
            found.notes.append(f"apple: Metal query failed ({type(exc).__name__}: {exc})")
        source = "metal" if total else None
    if total is None:
        total = gpu_budget(data)
        source = "sysctl"
        if total is not None and not (_int(data, "iogpu.wired_limit_mb") or 0) > 0:
            found.notes.append(
                "apple: GPU budget estimated as 2/3 of RAM (3/4 from 64 GiB), Metal's default; "
                "raise it with 'sudo sysctl iogpu.wired_limit_mb=N'"
            )
    if total is None:
        found.notes.append("apple: hw.memsize missing; GPU memory unknown")
    if "(Virtual)" in name:
        found.notes.append("apple: virtual Mac; Metal may be missing or paravirtualised, the GPU budget is a guess")

    cores = None
    if gpu_cores:
        done = system.run(["system_profiler", "SPDisplaysDataType", "-json"], timeout=15.0)
        gpus = [g for g in parse_sp_displays(done.stdout) if g.vendor == "apple"] if done.ok else []
        cores = gpus[0].cores if gpus else None
    found.gpus.append(
        Gpu(
            index=0,
            vendor="apple",
            name=name,
            backend="metal",
            memory_total_bytes=total,
            memory_free_bytes=None,
            unified_memory=True,
            cores=cores,
            source=source,
        )
    )
    return found


# -- Asahi Linux -----------------------------------------------------------------------------------------------

#: SoC compatible strings of Apple Silicon device trees (torvalds/linux:arch/arm64/boot/dts/apple/t8103.dtsi "Apple
#: T8103 "M1" SoC", t600x-common.dtsi / t6000.dtsi M1 Pro, t6001 M1 Max, t6002 M1 Ultra, t8112.dtsi "M2",
#: t602x: M2 Pro/Max/Ultra).
APPLE_SOCS: dict[str, str] = {
    "apple,t8103": "Apple M1",
    "apple,t6000": "Apple M1 Pro",
    "apple,t6001": "Apple M1 Max",
    "apple,t6002": "Apple M1 Ultra",
    "apple,t8112": "Apple M2",
    "apple,t6020": "Apple M2 Pro",
    "apple,t6021": "Apple M2 Max",
    "apple,t6022": "Apple M2 Ultra",
}

#: /proc/cpuinfo "CPU part" of Apple cores (implementer 0x61) to the chip family
#: (torvalds/linux:arch/arm64/include/asm/cputype.h APPLE_CPU_PART_M1_ICESTORM 0x022 ... M2_AVALANCHE_MAX 0x039).
APPLE_CPU_PARTS: dict[int, str] = {
    0x022: "Apple M1",
    0x023: "Apple M1",
    0x024: "Apple M1 Pro",
    0x025: "Apple M1 Pro",
    0x028: "Apple M1 Max",
    0x029: "Apple M1 Max",
    0x032: "Apple M2",
    0x033: "Apple M2",
    0x034: "Apple M2 Pro",
    0x035: "Apple M2 Pro",
    0x038: "Apple M2 Max",
    0x039: "Apple M2 Max",
}


def _dt_strings(text: str | None) -> list[str]:
    """Device-tree string lists are NUL-separated."""
    return [s.strip() for s in (text or "").split("\x00") if s.strip()]


def asahi_chip(compatible: list[str], cpuinfo: str | None, model: str | None) -> str | None:
    """Chip name from the SoC compatible string, else the cpuinfo CPU part, else the machine model string."""
    for entry in compatible:
        if entry in APPLE_SOCS:
            return APPLE_SOCS[entry]
    implementer = re.search(r"^CPU implementer\s*:\s*(0x[0-9a-fA-F]+)", cpuinfo or "", re.M)
    part = re.search(r"^CPU part\s*:\s*(0x[0-9a-fA-F]+)", cpuinfo or "", re.M)
    if implementer and part and int(implementer.group(1), 16) == 0x61:
        return APPLE_CPU_PARTS.get(int(part.group(1), 16), "Apple Silicon")
    return model or None


def _asahi_found(system: System) -> Found:
    found = Found()
    compatible = _dt_strings(system.read_text("/proc/device-tree/compatible"))
    if "apple,arm-platform" not in compatible:
        return found
    model = next(iter(_dt_strings(system.read_text("/sys/firmware/devicetree/base/model"))), None)
    chip = asahi_chip(compatible, system.read_text("/proc/cpuinfo"), model) or "Apple Silicon"
    found.environment.append("asahi")
    found.notes.append(
        f"apple: Asahi Linux on {chip}; no Metal, the GPU is reached through Vulkan (Honeykrisp); "
        "its memory budget is not reported, plan from system RAM"
    )
    found.gpus.append(
        Gpu(index=0, vendor="apple", name=chip, backend="vulkan", unified_memory=True, source="devicetree")
    )
    return found


# -- entry point -----------------------------------------------------------------------------------------------


def detect(system: System, gpu_cores: bool = False) -> Found:
    """The Apple GPU (Apple Silicon Macs, Asahi Linux) with Rosetta/Intel-Mac notes. Other systems return at once.

    ``gpu_cores=True`` also runs ``system_profiler SPDisplaysDataType -json`` for the GPU core count (slow).
    """
    if system.os_name == "darwin":
        return _macos_found(system, gpu_cores)
    if system.os_name == "linux" and system.arch == "aarch64":
        # Only arm64 Linux can be Asahi; a readlink-free exists() keeps x86 machines to one stat.
        if system.exists("/proc/device-tree/compatible"):
            return _asahi_found(system)
    return Found()


# -- system_profiler JSON (pure parsers) -------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*([\d.,]+)\s*([KMGT]B)\s*$", re.I)
_UNITS = {"KB": 1024, "MB": MiB, "GB": GiB, "TB": 1024**4}


def _size(text: Any) -> int | None:
    """Bytes of a system_profiler size such as "16 GB". Its GB are GiB: "16 GB" is the 17179869184-byte hw.memsize
    of the same Mac."""
    match = _SIZE.match(str(text)) if text is not None else None
    if not match:
        return None
    return int(float(match.group(1).replace(",", ".")) * _UNITS[match.group(2).upper()])


@dataclass(frozen=True)
class SpHardware:
    chip: str | None
    machine_model: str | None
    memory_bytes: int | None
    cores: int | None
    performance_cores: int | None
    efficiency_cores: int | None
    #: Under Rosetta the report has no chip_type and cpu_type "Unknown" (tests/data/apple/*underRosetta.json).
    translated_shape: bool


def parse_sp_hardware(json_text: str) -> SpHardware | None:
    """``system_profiler SPHardwareDataType -json``. ``number_processors`` is "proc 8:4:4" (total:P:E) natively
    and a plain int on virtual Macs and under Rosetta (tirekick fixtures)."""
    try:
        items = json.loads(json_text).get("SPHardwareDataType") or []
    except (ValueError, AttributeError):
        return None
    if not items or not isinstance(items[0], dict):
        return None
    item = items[0]
    procs = item.get("number_processors")
    cores = perf = eff = None
    if isinstance(procs, int):
        cores = procs
    elif isinstance(procs, str):
        match = re.match(r"^proc\s+(\d+)(?::(\d+))?(?::(\d+))?", procs.strip())
        if match:
            cores = int(match.group(1))
            perf = int(match.group(2)) if match.group(2) else None
            eff = int(match.group(3)) if match.group(3) else None
        elif procs.strip().isdigit():
            cores = int(procs)
    chip = item.get("chip_type")
    return SpHardware(
        chip=chip,
        machine_model=item.get("machine_model"),
        memory_bytes=_size(item.get("physical_memory")),
        cores=cores,
        performance_cores=perf,
        efficiency_cores=eff,
        translated_shape=chip is None and item.get("cpu_type") == "Unknown",
    )


@dataclass(frozen=True)
class SpDisplay:
    name: str | None
    vendor: str | None  # "apple", "amd", "intel", "nvidia" or the raw value
    cores: int | None
    metal_family: str | None


def parse_sp_displays(json_text: str) -> list[SpDisplay]:
    """``system_profiler SPDisplaysDataType -json``: one entry per GPU. Apple GPUs carry ``sppci_cores`` and no VRAM
    key (tests/data/apple/tirekick__SPDisplaysDataType_*.json)."""
    try:
        items = json.loads(json_text).get("SPDisplaysDataType") or []
    except (ValueError, AttributeError):
        return []
    gpus = []
    for item in items:
        if not isinstance(item, dict):
            continue
        raw_vendor = str(item.get("spdisplays_vendor") or "")
        vendor = raw_vendor.removeprefix("sppci_vendor_").lower() or None
        try:
            cores = int(item.get("sppci_cores"))
        except (TypeError, ValueError):
            cores = None
        gpus.append(
            SpDisplay(
                name=item.get("sppci_model") or item.get("_name"),
                vendor=vendor,
                cores=cores,
                metal_family=item.get("spdisplays_metalfamily") or item.get("spdisplays_mtlgpufamilysupport"),
            )
        )
    return gpus
