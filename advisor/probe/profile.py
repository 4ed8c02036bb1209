"""The hardware profile: what ``advisor probe --json`` prints and ``--hardware FILE`` reads back.

Plain frozen dataclasses; bytes are integers; a field the platform cannot tell is None. ``from_dict`` refuses
unknown keys and wrong types, so a hand-edited or truncated profile fails with one clear line instead of planning
for a machine that does not exist.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from advisor.errors import HardwareFileError
from advisor.strict import build

#: Version of the JSON document. Bump when a field changes meaning or is removed; adding a field keeps it.
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Cpu:
    model: str | None = None
    vendor: str | None = None
    physical_cores: int | None = None
    logical_cores: int | None = None
    #: Cores this process may use: the smallest of the online CPUs, its affinity mask and the cgroup CPU quota.
    usable_cores: int | None = None
    #: Normalised lower-case feature names (``avx2``, ``avx512f``, ``neon``, ``sve``...), sorted.
    features: list[str] = field(default_factory=list)
    #: x86-64 micro-architecture level (v1..v4, as defined by the x86-64 psABI), None on other architectures.
    isa_level: str | None = None
    #: Performance and efficiency cores where the platform tells them apart (Apple perflevels).
    performance_cores: int | None = None
    efficiency_cores: int | None = None


@dataclass(frozen=True)
class Memory:
    total_bytes: int | None = None
    available_bytes: int | None = None
    #: Container (cgroup) memory limit, None when there is none.
    limit_bytes: int | None = None
    #: What a model may take: available memory, clamped by what the container limit leaves.
    usable_bytes: int | None = None
    swap_total_bytes: int | None = None
    #: "v1", "hybrid" (v1 controllers and a v2 tree) or "v2" where a cgroup hierarchy was found.
    cgroup_version: str | None = None


@dataclass(frozen=True)
class Disk:
    #: The model cache directory that will be used (it may not exist yet).
    path: str | None = None
    free_bytes: int | None = None
    total_bytes: int | None = None


@dataclass(frozen=True)
class Gpu:
    index: int
    vendor: str  # nvidia | amd | apple | intel
    name: str
    backend: str  # cuda | rocm | metal | vulkan | sycl
    memory_total_bytes: int | None = None
    memory_free_bytes: int | None = None
    unified_memory: bool = False
    compute_capability: str | None = None  # NVIDIA, "8.9"
    gfx_target: str | None = None  # AMD, "gfx1100"
    driver_version: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    #: MIG instance profile ("3g.40gb") when this entry is a MIG instance; its parent GPU's index.
    mig_profile: str | None = None
    mig_parent_index: int | None = None
    #: GPU cores (Apple) or compute units (AMD), where known.
    cores: int | None = None
    #: Where the facts came from: nvml, nvidia-smi, sysfs, rocm-smi, amdsmi, sysctl, metal, ...
    source: str | None = None


@dataclass(frozen=True)
class Runtime:
    """One way of running models found on this machine."""

    installed: bool = False
    version: str | None = None
    path: str | None = None
    #: llama.cpp: whether the build can offload layers to a GPU; None when unknown.
    gpu_offload: bool | None = None
    #: llama.cpp backends compiled in (cpu, cuda, metal, hip, vulkan, sycl...).
    backends: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Runtimes:
    llama_server: Runtime = field(default_factory=Runtime)
    llama_cpp_python: Runtime = field(default_factory=Runtime)
    vllm: Runtime = field(default_factory=Runtime)


@dataclass(frozen=True)
class HardwareProfile:
    schema: int = SCHEMA_VERSION
    os: str = "linux"
    arch: str = "x86_64"
    cpu: Cpu = field(default_factory=Cpu)
    memory: Memory = field(default_factory=Memory)
    disk: Disk = field(default_factory=Disk)
    gpus: list[Gpu] = field(default_factory=list)
    runtimes: Runtimes = field(default_factory=Runtimes)
    #: Driver/library versions that apply to the whole machine, e.g. {"cuda_driver": "13.1", "rocm": "6.0.2"}.
    drivers: dict[str, str] = field(default_factory=dict)
    #: In a container (cgroup limit, /.dockerenv), WSL or Rosetta; what the planner must know about the platform.
    environment: list[str] = field(default_factory=list)
    #: Why something was not found or is uncertain, one line each (a missing driver is a note, not an error).
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str = "hardware profile") -> HardwareProfile:
        if not isinstance(data, dict):
            raise HardwareFileError(f"{where}: expected a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA_VERSION:
            raise HardwareFileError(
                f"{where}: schema {schema!r} is not supported (this advisor reads schema {SCHEMA_VERSION})"
            )
        profile: HardwareProfile = build(cls, data, where, HardwareFileError)
        _check(profile, where)
        return profile


#: Largest byte count accepted in a profile (2^60 B = 1 EiB: far above any machine; a bigger value is an error).
MAX_BYTES = 1 << 60
#: Largest core or device count accepted (the Linux kernel's NR_CPUS maximum is 8192).
MAX_COUNT = 1 << 16
#: NVIDIA compute capability as nvidia-smi prints it ("8.9", "12.0"; CUDA programming guide, compute capabilities).
_CC = re.compile(r"[0-9]{1,2}\.[0-9]{1,2}")
#: An AMD LLVM target ("gfx1100", "gfx90a", "gfx942"; LLVM AMDGPU usage, processors).
_GFX = re.compile(r"gfx[0-9a-f]{1,8}")


def _check(p: HardwareProfile, where: str) -> None:
    """Values that parse but cannot describe a machine: negative or absurd sizes and counts, a compute capability
    or gfx target in another format, an unknown GPU vendor or backend."""
    def size(value: int | None, name: str) -> None:
        if value is not None and not 0 <= value <= MAX_BYTES:
            raise HardwareFileError(f"{where}: {name} = {value}: not a byte count (0 to 2^60)")

    def count(value: int | None, name: str) -> None:
        if value is not None and not 0 <= value <= MAX_COUNT:
            raise HardwareFileError(f"{where}: {name} = {value}: not a count (0 to {MAX_COUNT})")

    for f in dataclasses.fields(Memory):
        if f.name.endswith("_bytes"):
            size(getattr(p.memory, f.name), f"memory.{f.name}")
    size(p.disk.free_bytes, "disk.free_bytes")
    size(p.disk.total_bytes, "disk.total_bytes")
    for f in ("physical_cores", "logical_cores", "usable_cores", "performance_cores", "efficiency_cores"):
        count(getattr(p.cpu, f), f"cpu.{f}")
    if len(p.gpus) > MAX_GPUS:
        raise HardwareFileError(f"{where}: {len(p.gpus)} GPUs; at most {MAX_GPUS} are planned for")
    for i, g in enumerate(p.gpus):
        at = f"gpus[{i}]"
        count(g.index, f"{at}.index")
        count(g.mig_parent_index, f"{at}.mig_parent_index")
        count(g.cores, f"{at}.cores")
        size(g.memory_total_bytes, f"{at}.memory_total_bytes")
        size(g.memory_free_bytes, f"{at}.memory_free_bytes")
        if g.vendor not in GPU_VENDORS:
            raise HardwareFileError(f"{where}: {at}.vendor {g.vendor!r} is not one of {', '.join(GPU_VENDORS)}")
        if g.backend not in GPU_BACKENDS:
            raise HardwareFileError(f"{where}: {at}.backend {g.backend!r} is not one of {', '.join(GPU_BACKENDS)}")
        if g.compute_capability is not None and not _CC.fullmatch(g.compute_capability):
            raise HardwareFileError(f"{where}: {at}.compute_capability {g.compute_capability[:40]!r} is not like "
                                    "'8.9'")
        if g.gfx_target is not None and not _GFX.fullmatch(g.gfx_target):
            raise HardwareFileError(f"{where}: {at}.gfx_target {g.gfx_target[:40]!r} is not like 'gfx1100'")


GPU_VENDORS = ("nvidia", "amd", "apple", "intel")
GPU_BACKENDS = ("cuda", "rocm", "metal", "vulkan", "sycl")
#: llama.cpp's device limit (src/llama.cpp llama_max_devices() returns 16); a profile may list more (a node with
#: many GPUs), but not absurdly many.
MAX_GPUS = 1024


@dataclass
class Found:
    """What one GPU detector found: its devices, machine-wide driver versions, platform facts and notes."""

    gpus: list[Gpu] = field(default_factory=list)
    drivers: dict[str, str] = field(default_factory=dict)
    environment: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
