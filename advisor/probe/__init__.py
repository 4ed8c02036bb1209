"""``probe(system) -> HardwareProfile``: small detectors, each safe on its own, merged into one profile.

Every detector takes the ``System`` seam and returns a partial result; a detector that raises is reported as a
note and the rest of the profile still comes back (a missing or broken driver degrades, never crashes).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from advisor.probe.profile import Cpu, Disk, Found, Gpu, HardwareProfile, Interconnect, Memory, Runtimes
from advisor.system import System


#: GPU detector modules, in the order their devices are listed (each has ``detect(system) -> Found``).
GPU_DETECTORS = ("nvidia", "amd", "apple", "intel")


def _run_gpu_detector(name: str, system: System) -> Found:
    # Imported when run, so that `import advisor.probe` stays cheap; each module imports its libraries lazily.
    module = importlib.import_module(f"advisor.probe.{name}")
    return module.detect(system)


def _guard(name: str, fn: Callable, default, notes: list[str], *args):
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - one broken detector must not take the profile down
        notes.append(f"{name}: detection failed ({type(exc).__name__}: {exc})")
        return default


def probe(system: System | None = None) -> HardwareProfile:
    from advisor.probe import cpu, disk, memory, runtimes

    system = system or System.from_env()
    notes: list[str] = []
    environment: list[str] = []
    drivers: dict[str, str] = {}
    gpus: list[Gpu] = []

    if system.os_name == "darwin":  # one sysctl call answers both on macOS
        from advisor.probe import apple

        cpu_detect, mem_detect = apple.detect_cpu, lambda s: (apple.detect_memory(s), [], [])
    else:
        cpu_detect, mem_detect = cpu.detect, memory.detect
    cpu_info: Cpu = _guard("cpu", cpu_detect, Cpu(), notes, system)
    mem_found = _guard("memory", mem_detect, (Memory(), [], []), notes, system)
    mem_info, mem_env, mem_notes = mem_found
    environment += mem_env
    notes += mem_notes
    disk_info: Disk = _guard("disk", disk.detect, Disk(), notes, system)

    for name in GPU_DETECTORS:
        found: Found = _guard(name, _run_gpu_detector, Found(), notes, name, system)
        gpus += found.gpus
        drivers.update(found.drivers)
        environment += [e for e in found.environment if e not in environment]
        notes += found.notes

    runtimes_info: Runtimes = _guard("runtimes", runtimes.detect, Runtimes(), notes, system)
    from advisor.probe import network

    n_nvidia = sum(1 for g in gpus if g.vendor == "nvidia" and g.mig_parent_index is None)
    host, link, link_notes = _guard("network", network.detect, (None, Interconnect(), []), notes, system, n_nvidia)
    notes += link_notes
    return HardwareProfile(
        os=system.os_name,
        arch=cpu.effective_arch(system, cpu_info),
        cpu=cpu_info,
        memory=mem_info,
        disk=disk_info,
        gpus=gpus,
        runtimes=runtimes_info,
        drivers=drivers,
        environment=environment,
        notes=notes,
        hostname=host,
        interconnect=link,
    )
