"""Human-readable rendering (rich). Data goes to stdout; notes and hints go to stderr."""

from __future__ import annotations

from advisor.probe.profile import HardwareProfile


def human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit in ("B", "KiB") else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def render_profile(profile: HardwareProfile) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    err = Console(stderr=True)
    cpu, mem, disk = profile.cpu, profile.memory, profile.disk

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("System", f"{profile.os} {profile.arch}" + (f" ({', '.join(profile.environment)})"
                                                               if profile.environment else ""))
    level = f", x86-64-{cpu.isa_level}" if cpu.isa_level else ""
    table.add_row("CPU", f"{cpu.model or 'unknown'} ({cpu.vendor or '?'}{level})")
    table.add_row(
        "Cores",
        f"{cpu.physical_cores or '?'} physical, {cpu.logical_cores or '?'} logical, {cpu.usable_cores or '?'} usable",
    )
    table.add_row("Features", " ".join(cpu.features) or "none found")
    limit = f", container limit {human_bytes(mem.limit_bytes)}" if mem.limit_bytes else ""
    table.add_row(
        "Memory",
        f"{human_bytes(mem.total_bytes)} total, {human_bytes(mem.available_bytes)} available{limit}, "
        f"{human_bytes(mem.usable_bytes)} usable for models",
    )
    table.add_row("Model cache", f"{disk.path} ({human_bytes(disk.free_bytes)} free)")
    link = profile.interconnect
    parts = [f"host {profile.hostname}" if profile.hostname else "",
             {True: "NVLink between GPUs", False: "GPUs over PCIe", None: ""}[link.nvlink],
             f"InfiniBand {', '.join(link.infiniband)} ({len(link.infiniband_active)} active)" if link.infiniband
             else "", f"default route via {link.default_interface}" if link.default_interface else ""]
    if any(parts):
        table.add_row("Network", ", ".join(x for x in parts if x))
    out.print(table)

    if profile.gpus:
        gpus = Table(title="GPUs", title_justify="left")
        for column in ("#", "name", "backend", "memory", "free", "arch", "driver"):
            gpus.add_column(column)
        for gpu in profile.gpus:
            arch = gpu.compute_capability and f"cc {gpu.compute_capability}" or gpu.gfx_target or ""
            memory = human_bytes(gpu.memory_total_bytes) + (" (unified)" if gpu.unified_memory else "")
            gpus.add_row(
                str(gpu.index), gpu.name, gpu.backend, memory, human_bytes(gpu.memory_free_bytes), arch,
                gpu.driver_version or "",
            )
        out.print(gpus)
    else:
        out.print("[bold]GPUs[/bold]      none found")

    engines = Table(title="Engines", title_justify="left")
    for column in ("engine", "installed", "version", "GPU offload", "backends"):
        engines.add_column(column)
    for name, rt in (
        ("llama-server", profile.runtimes.llama_server),
        ("llama-cpp-python", profile.runtimes.llama_cpp_python),
        ("vllm", profile.runtimes.vllm),
    ):
        offload = {True: "yes", False: "no", None: "?"}[rt.gpu_offload] if rt.installed else ""
        engines.add_row(name, "yes" if rt.installed else "no", rt.version or "", offload, " ".join(rt.backends))
    out.print(engines)
    for note in profile.notes:
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
