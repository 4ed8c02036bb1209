"""The machine as the planner sees it: which GPUs one engine process can use, what each device offers after the
margins of rules/margins.toml, and the facts rules match on (a ``Subject``). Pure: reads only the profile.

A GPU's memory is split three ways: the llama.cpp buffers the estimator reports on it, the backend's
context/driver overhead that no buffer reports (rules/backends.toml ``context_overhead_bytes``: the CUDA context,
cuBLAS workspaces and the ggml pool, measured from a real log for CUDA), and the headroom of rules/margins.toml, which
keeps only what the backend facts do not explain (llama.cpp's own --fit margin; the display reserve of desktop cards
comes off the capacity). A device fits when buffers + overhead <= capacity - headroom.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import cast

from advisor.gguf.estimate import Backend, BackendRule, backend_rules
from advisor.probe.profile import Gpu, HardwareProfile
from advisor.rules import GpuSpec, Resolved, Rules, Subject

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


def build_machine(profile: HardwareProfile, rules: Rules, concurrency: int = 1, task: str = "chat",
                  assume_idle: bool = False) -> Machine:
    """``assume_idle``: plan for each GPU's total memory rather than what is free now (provisioning a box before
    its workload starts)."""
    gpus, notes = _pick_gpus(profile)
    vendor = gpus[0].vendor if gpus else "none"
    brule = gpu_backend(gpus)
    backend = brule.name if brule else cpu_backend(profile)
    specs = [rules.gpu_spec(g.name, g.vendor, g.cores) for g in gpus]
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
        physical_cores=cpu.physical_cores or cpu.logical_cores or 0, cpu_model=cpu.model or "",
        has_swap=bool(profile.memory.swap_total_bytes),
        concurrency=concurrency, task=task,
        gfx_targets=tuple((g.gfx_target or "").lower() for g in gpus if g.vendor == "amd" and g.gfx_target),
    )
    res = rules.resolve(subject)
    headroom = res["device_headroom_mib"] * MIB
    display = res["display_reserve_mib"] * MIB
    overhead = brule.context_overhead_bytes if brule else 0
    devices = []
    for i, (g, spec, cc) in enumerate(zip(gpus, specs, ccs)):
        total = g.memory_total_bytes or 0
        offered = g.memory_free_bytes if g.memory_free_bytes is not None and not assume_idle else total
        capacity = max(0, min(offered, total - display))
        if g.compute_capability is None and cc is not None and spec is not None:
            notes.append(f"GPU {g.index}: compute capability {cc:.1f} looked up by name ({spec.source.split(';')[0]})")
        bw, bw_source = gpu_bandwidth(g, spec)
        if spec is None or spec.derived:
            notes.append(f"GPU {g.index} ({g.name}): not in rules/gpus.toml; {bw_source}")
        devices.append(Device(
            name=f"gpu{i}", capacity_bytes=capacity, headroom_bytes=headroom, total_bytes=total,
            overhead_bytes=overhead,
            free_bytes=g.memory_free_bytes, gpu=g, bandwidth_gbs=bw,
            tflops=spec.tflops_for(g.cores) if spec else 0.0, compute_capability=cc, spec_source=bw_source,
        ))
    if assume_idle and gpus:
        notes.append("--assume-idle: planned for each GPU's total memory, not what is free now")
    mem = profile.memory
    ram = mem.usable_bytes or mem.available_bytes or mem.total_bytes or 0
    reserve = max(res["ram_reserve_mib"] * MIB, int(res["ram_reserve_fraction"] * (mem.total_bytes or ram)))
    threads = physical_threads(profile)  # the threads llama.cpp is given
    # a few cores cannot draw the whole platform's bandwidth (rules/speed.toml cpu-bandwidth-per-core)
    bandwidth = min(res["cpu_bandwidth_gbs"], threads * res["cpu_bandwidth_per_core_gbs"])
    cpu_dev = Device(
        name="cpu", capacity_bytes=ram, headroom_bytes=reserve + res["host_footprint_mib"] * MIB,
        total_bytes=mem.total_bytes or ram, free_bytes=ram, bandwidth_gbs=bandwidth,
        tflops=threads * res["cpu_gflops_per_core"] / 1000,
    )
    if not ram:
        notes.append("memory size unknown: planning as if no RAM were free")
    return Machine(profile=profile, gpus=tuple(devices), cpu=cpu_dev, backend=backend, vendor=vendor,
                   unified=subject.unified_memory, subject=subject, rules=res, notes=tuple(notes), backend_rule=brule)


#: Data transfers per reported memory clock cycle, by vendor and memory type, to turn what the driver reports
#: (bus width, maximum memory clock) into a peak bandwidth = bus bits / 8 x clock x this. NVIDIA (NVML
#: nvmlDeviceGetMaxClockInfo(NVML_CLOCK_MEM), nvidia-smi clocks.max.memory) reports half the data rate for every
#: memory type: A100 40GB 1215 MHz x 5120 bit x 2 = 1555 GB/s, RTX 4090 10501 MHz x 384 bit x 2 = 1008 GB/s, both as
#: the datasheets. AMD's pp_dpm_mclk / KFD mem_clk_max report HBM at half its data rate (MI100 1200 MHz x 4096 bit x 2
#: = 1229 GB/s) and GDDR6 at 1/16 of it (RX 6700 XT 1000 MHz x 192 bit x 16 = 384 GB/s).
TRANSFERS_PER_CLOCK = {("nvidia", None): 2.0, ("amd", "hbm"): 2.0, ("amd", "gddr6"): 16.0}


def derived_bandwidth(g: Gpu) -> float | None:
    """Peak memory bandwidth in GB/s from what the driver reports, or None when it does not say enough."""
    if not g.memory_bus_width_bits or not g.memory_clock_max_mhz:
        return None
    kind = None
    if g.vendor == "amd":
        mtype = (g.memory_type or "").lower()
        kind = "hbm" if mtype.startswith("hbm") or g.memory_bus_width_bits >= 1024 else \
            "gddr6" if mtype.startswith("gddr6") or (not mtype and g.memory_bus_width_bits <= 512) else None
    factor = TRANSFERS_PER_CLOCK.get((g.vendor, kind))
    if factor is None:
        return None
    return round(g.memory_bus_width_bits / 8 * g.memory_clock_max_mhz * factor / 1000, 1)


def mig_share(g: Gpu) -> float | None:
    """A MIG instance's share of its GPU's memory bandwidth: its memory slices over the GPU's (each slice has its own
    memory controllers: NVIDIA MIG user guide, 'Partitioning'), from its memory size over the GPU's named size."""
    if g.mig_profile is None and g.mig_parent_index is None:
        return None
    whole = re.search(r"(\d+)\s*GB", g.name, re.I)
    mine = re.search(r"\.(\d+)gb", g.mig_profile or g.name, re.I)
    if whole and (mine or g.memory_total_bytes):
        size = int(mine.group(1)) if mine else round((g.memory_total_bytes or 0) / GIB)
        return max(0.05, min(1.0, size / int(whole.group(1))))
    slices = re.search(r"(\d)g\.", g.mig_profile or g.name)
    return int(slices.group(1)) / 7 if slices else None


def gpu_bandwidth(g: Gpu, spec: GpuSpec | None) -> tuple[float, str]:
    """The GPU's memory bandwidth (GB/s) for the speed estimate and where it comes from: the datasheet row of
    rules/gpus.toml, else what the driver reports (bus width x maximum memory clock), else the table's catch-all
    row, said so in a note. A MIG instance gets its share of the GPU's bandwidth."""
    share = mig_share(g)
    if spec is not None and not spec.derived and share is not None:
        return round(spec.bandwidth_gbs * share, 1), f"{share:.2f} of the GPU's {spec.bandwidth_gbs:g} GB/s " \
            f"(a MIG instance has its share of the memory slices; NVIDIA MIG user guide) ({spec.source})"
    if spec is not None and not spec.derived:
        return spec.bandwidth_gbs, spec.source
    derived = derived_bandwidth(g)
    if derived:
        return derived, (f"memory bandwidth {derived:g} GB/s derived from the driver's memory bus width "
                         f"({g.memory_bus_width_bits} bit) and maximum memory clock ({g.memory_clock_max_mhz} MHz)")
    bw = spec.bandwidth_gbs if spec else 0.0
    return bw, (f"memory bandwidth unknown (the driver reported no bus width and memory clock): the speed estimate "
                f"assumes {bw:g} GB/s ({spec.source if spec else 'no table row'})")


def physical_threads(profile: HardwareProfile) -> int:
    """Threads for llama.cpp: physical cores this process may use (llama.cpp's own default is the physical core
    count, common.cpp cpu_get_num_math; hyper-threads share the FMA units and do not help)."""
    c = profile.cpu
    phys = c.performance_cores or c.physical_cores or c.logical_cores or 1
    return max(1, min(phys, c.usable_cores or phys))
