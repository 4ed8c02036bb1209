"""The machine as the planner sees it: which GPUs one engine process can use, what each device offers after the
margins of rules/margins.toml, and the facts rules match on (a ``Subject``). Pure: reads only the profile.

A GPU's memory is split three ways: the llama.cpp buffers the estimator reports on it, the backend's
context/driver overhead that no buffer reports (rules/backends.toml ``context_overhead_bytes``: the CUDA context,
cuBLAS workspaces and the ggml pool, measured from a real log for CUDA), and the headroom of rules/margins.toml, which
keeps only what the backend facts do not explain (llama.cpp's own --fit margin; the display reserve of desktop cards
comes off the capacity). A device fits when buffers + overhead <= capacity - headroom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from advisor.gguf.estimate import Backend, BackendRule, backend_rules
from advisor.probe.profile import Gpu, HardwareProfile
from advisor.rules import Resolved, Rules, Subject

MIB = 1 << 20
GIB = 1 << 30

#: llama.cpp backend of each GPU vendor's usual build (ggml-cuda, ggml-hip, ggml-metal, ggml-sycl): used when the
#: probe's Gpu.backend names no backend of rules/backends.toml.
VENDOR_BACKEND = {"nvidia": "cuda", "amd": "rocm", "apple": "metal", "intel": "sycl"}


@dataclass(frozen=True)
class Device:
    name: str  # cpu | gpu0 | gpu1 ... (the estimator's names, in the order the engine sees the GPUs)
    capacity_bytes: int  # what the device offers: free (or total) memory, less the display reserve
    headroom_bytes: int  # kept free on top of everything the plan counts (rules/margins.toml)
    total_bytes: int = 0
    #: allocated by the backend's driver/runtime on this device and reported by no llama.cpp buffer
    #: (rules/backends.toml context_overhead_bytes); part of the device's need, shown as other_bytes in plans
    overhead_bytes: int = 0
    free_bytes: int | None = None
    gpu: Gpu | None = None
    bandwidth_gbs: float = 0.0
    tflops: float = 0.0
    compute_capability: float | None = None
    spec_source: str = ""

    @property
    def budget_bytes(self) -> int:
        """What the device's need (buffers + overhead) may reach."""
        return max(0, self.capacity_bytes - self.headroom_bytes)

    @property
    def buffer_budget_bytes(self) -> int:
        """What the estimator's buffers may reach: the budget less the backend's overhead."""
        return max(0, self.budget_bytes - self.overhead_bytes)


@dataclass(frozen=True)
class Machine:
    profile: HardwareProfile
    gpus: tuple[Device, ...]  # the GPUs one engine process uses (same vendor; one MIG instance at most)
    cpu: Device
    backend: str  # the GPUs' llama.cpp backend (cuda | rocm | metal | vulkan | sycl), or cpu_x86 / cpu_arm
    vendor: str  # nvidia | amd | apple | intel | none
    unified: bool
    subject: Subject
    rules: Resolved
    notes: tuple[str, ...] = field(default=())
    #: rules/backends.toml entry of the GPUs' backend (None: CPU only); its context_overhead_bytes is each GPU's
    #: Device.overhead_bytes
    backend_rule: BackendRule | None = None

    @property
    def llama_backend(self) -> Backend | None:
        """The estimator's Settings.backend for these GPUs (None: CPU only)."""
        return cast(Backend, self.backend_rule.name) if self.backend_rule else None

    @property
    def gpu_budget_bytes(self) -> int:
        """What llama.cpp's buffers may take on the GPUs together (margins and backend overhead taken off)."""
        return sum(d.buffer_budget_bytes for d in self.gpus)

    @property
    def ram_budget_bytes(self) -> int:
        return self.cpu.budget_bytes


def cpu_backend(profile: HardwareProfile) -> str:
    return "cpu_arm" if profile.arch in ("aarch64", "arm64") else "cpu_x86"


def _pick_gpus(profile: HardwareProfile) -> tuple[list[Gpu], list[str]]:
    """The largest group of same-vendor GPUs with known memory; of MIG instances only the largest one (CUDA
    enumerates a single MIG compute instance per process: NVIDIA MIG user guide, 'CUDA device enumeration')."""
    notes = []
    usable = [g for g in profile.gpus if g.memory_total_bytes and g.vendor in VENDOR_BACKEND]
    for g in profile.gpus:
        if g not in usable:
            notes.append(f"GPU {g.index} ({g.name}) left out: memory size or vendor unknown")
    groups: dict[str, list[Gpu]] = {}
    for g in usable:
        groups.setdefault(g.vendor, []).append(g)
    if not groups:
        return [], notes
    vendor, chosen = max(groups.items(), key=lambda kv: sum(g.memory_total_bytes or 0 for g in kv[1]))
    if len(groups) > 1:
        notes.append(f"GPUs of several vendors: planning for the {vendor} ones (one engine process uses one backend)")
    migs = [g for g in chosen if g.mig_profile is not None or g.mig_parent_index is not None]
    if migs:
        best = max(migs, key=lambda g: g.memory_total_bytes or 0)
        notes.append(f"MIG: one process sees one MIG instance; planning for the largest ({best.name})")
        chosen = [best]
    return chosen, notes


def gpu_backend(gpus: list[Gpu]) -> BackendRule | None:
    """The llama.cpp backend the chosen GPUs run on: the probe's Gpu.backend (an AMD card without ROCm support or an
    Intel iGPU is reached through Vulkan), else the vendor's usual build; its rules/backends.toml entry."""
    if not gpus:
        return None
    table = backend_rules()
    name = gpus[0].backend if gpus[0].backend in table else VENDOR_BACKEND[gpus[0].vendor]
    return table[name]


def build_machine(profile: HardwareProfile, rules: Rules, concurrency: int = 1) -> Machine:
    gpus, notes = _pick_gpus(profile)
    vendor = gpus[0].vendor if gpus else "none"
    brule = gpu_backend(gpus)
    backend = brule.name if brule else cpu_backend(profile)
    specs = [rules.gpu_spec(g.name, g.vendor) for g in gpus]
    ccs = []
    for g, spec in zip(gpus, specs):
        cc = g.compute_capability or (spec.compute_capability if spec else None)
        ccs.append(float(cc) if cc else None)
    known_cc = [c for c in ccs if c is not None]
    cpu = profile.cpu
    subject = Subject(
        os=profile.os, arch=profile.arch, gpu_vendor=vendor, backend=backend,
        gpu_names=tuple(g.name for g in gpus),
        gpu_memory_gib=sum(g.memory_total_bytes or 0 for g in gpus) / GIB,
        gpu_memory_per_device_gib=min((g.memory_total_bytes or 0 for g in gpus), default=0) / GIB,
        compute_capability=min(known_cc) if known_cc else None,
        unified_memory=any(g.unified_memory for g in gpus),
        mig=any(g.mig_parent_index is not None for g in gpus),
        physical_cores=cpu.physical_cores or cpu.logical_cores or 0,
        has_swap=bool(profile.memory.swap_total_bytes),
        concurrency=concurrency,
    )
    res = rules.resolve(subject)
    headroom = res["device_headroom_mib"] * MIB
    display = res["display_reserve_mib"] * MIB
    overhead = brule.context_overhead_bytes if brule else 0
    devices = []
    for i, (g, spec, cc) in enumerate(zip(gpus, specs, ccs)):
        total = g.memory_total_bytes or 0
        offered = g.memory_free_bytes if g.memory_free_bytes is not None else total
        capacity = max(0, min(offered, total - display))
        if g.compute_capability is None and cc is not None:
            notes.append(f"GPU {g.index}: compute capability {cc:.1f} looked up by name ({spec.source.split(';')[0]})")
        devices.append(Device(
            name=f"gpu{i}", capacity_bytes=capacity, headroom_bytes=headroom, total_bytes=total,
            overhead_bytes=overhead,
            free_bytes=g.memory_free_bytes, gpu=g, bandwidth_gbs=spec.bandwidth_gbs if spec else 0.0,
            tflops=spec.fp16_tflops if spec else 0.0, compute_capability=cc, spec_source=spec.source if spec else "",
        ))
    mem = profile.memory
    ram = mem.usable_bytes or mem.available_bytes or mem.total_bytes or 0
    reserve = max(res["ram_reserve_mib"] * MIB, int(res["ram_reserve_fraction"] * (mem.total_bytes or ram)))
    cores = cpu.usable_cores or cpu.physical_cores or cpu.logical_cores or 1
    cpu_dev = Device(
        name="cpu", capacity_bytes=ram, headroom_bytes=reserve + res["host_footprint_mib"] * MIB,
        total_bytes=mem.total_bytes or ram, free_bytes=ram, bandwidth_gbs=res["cpu_bandwidth_gbs"],
        tflops=min(cores, cpu.physical_cores or cores) * res["cpu_gflops_per_core"] / 1000,
    )
    if not ram:
        notes.append("memory size unknown: planning as if no RAM were free")
    return Machine(profile=profile, gpus=tuple(devices), cpu=cpu_dev, backend=backend, vendor=vendor,
                   unified=subject.unified_memory, subject=subject, rules=res, notes=tuple(notes), backend_rule=brule)


def physical_threads(profile: HardwareProfile) -> int:
    """Threads for llama.cpp: physical cores this process may use (llama.cpp's own default is the physical core
    count, common.cpp cpu_get_num_math; hyper-threads share the FMA units and do not help)."""
    c = profile.cpu
    phys = c.performance_cores or c.physical_cores or c.logical_cores or 1
    return max(1, min(phys, c.usable_cores or phys))
