"""Memory and container limits: the recorded cgroup-v1-hybrid VM, v1/v2 limits, and this machine's live files."""

from __future__ import annotations

import re
from pathlib import Path

from advisor.probe import cgroup, memory
from advisor.system import System
from tests.replay import DATA, Machine

GIB = 1 << 30


def load_capture(machine: Machine, capture: Path) -> None:
    """Rebuild a sysroot from a shell capture of '## cat PATH...', '## ls DIR' and '## head -N PATH' sections."""
    sections = re.split(r"^## ", capture.read_text(), flags=re.M)[1:]
    for section in sections:
        command, _, output = section.partition("\n")
        words = command.split()
        lines = output.rstrip("\n").splitlines()
        if words[0] == "cat":
            paths = words[1:]
            if len(paths) == 1:
                machine.file(paths[0], output)
            else:  # one value per file, in order
                for path, line in zip(paths, lines, strict=True):
                    machine.file(path, line + "\n")
        elif words[0] == "head":
            machine.file(words[-1], output)
        elif words[0] == "ls":
            for name in lines:
                target = machine.root / words[1].lstrip("/") / name
                if "." in name:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text("")
                else:
                    target.mkdir(parents=True, exist_ok=True)


CAPTURE = DATA / "cgroup" / "vm-cgroup-v1-hybrid.txt"


def _meminfo_kib(key: str) -> int:
    return int(re.search(rf"^{key}:\s+(\d+) kB", CAPTURE.read_text(), re.M).group(1))


def test_recorded_hybrid_vm_has_no_limit(machine):
    load_capture(machine, CAPTURE)
    result, environment, notes = memory.detect(machine.system())
    assert result.cgroup_version == "hybrid"
    # The leaf and the root both hold v1's "unlimited" sentinel, which is above physical RAM: no limit.
    assert result.limit_bytes is None
    assert result.total_bytes == _meminfo_kib("MemTotal") * 1024
    assert result.available_bytes == _meminfo_kib("MemAvailable") * 1024
    assert result.usable_bytes == result.available_bytes
    assert "container" not in environment and notes == []


def test_recorded_hybrid_vm_with_a_leaf_limit(machine):
    """The same VM, had its job cgroup been limited: the leaf path comes from /proc/self/cgroup, not the root."""
    load_capture(machine, CAPTURE)
    leaf = "/sys/fs/cgroup/memory/job/0123456789abcdef0123456789abcdef"
    machine.file(f"{leaf}/memory.limit_in_bytes", f"{8 * GIB}\n")
    machine.file(f"{leaf}/memory.stat", f"total_inactive_file {GIB // 2}\n")
    usage = int((machine.root / leaf.lstrip("/") / "memory.usage_in_bytes").read_text())
    result, environment, notes = memory.detect(machine.system())
    assert result.limit_bytes == 8 * GIB
    assert result.usable_bytes == 8 * GIB - max(0, usage - GIB // 2)
    assert environment == ["container"] and "container limit" in notes[0]


def test_v1_hierarchical_limit_of_an_unmounted_parent(machine):
    load_capture(machine, CAPTURE)
    leaf = "/sys/fs/cgroup/memory/job/0123456789abcdef0123456789abcdef"
    machine.file(f"{leaf}/memory.stat", f"hierarchical_memory_limit {6 * GIB}\ntotal_inactive_file 0\n")
    result, _, _ = memory.detect(machine.system())
    assert result.limit_bytes == 6 * GIB


def test_v2_limit_of_an_ancestor_binds(machine):
    machine.file("/proc/meminfo", "MemTotal: 65536000 kB\nMemFree: 1000 kB\nMemAvailable: 60000000 kB\n")
    machine.file("/proc/self/cgroup", "0::/kubepods.slice/pod42/container\n")
    machine.file("/sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    machine.file("/sys/fs/cgroup/kubepods.slice/pod42/memory.max", f"{4 * GIB}\n")
    machine.file("/sys/fs/cgroup/kubepods.slice/pod42/container/memory.max", "max\n")
    machine.file("/sys/fs/cgroup/kubepods.slice/pod42/container/memory.current", f"{GIB}\n")
    machine.file("/sys/fs/cgroup/kubepods.slice/pod42/container/memory.stat", f"anon 1\ninactive_file {GIB // 4}\n")
    result, environment, _ = memory.detect(machine.system())
    assert result.cgroup_version == "v2"
    assert result.limit_bytes == 4 * GIB
    assert result.usable_bytes == 4 * GIB - (GIB - GIB // 4)
    assert environment == ["container"]


def test_v2_inside_a_cgroup_namespace(machine):
    """With cgroupns the path is "/" and the container's own limits sit at the mount root."""
    machine.file("/proc/meminfo", "MemTotal: 16384000 kB\nMemAvailable: 12000000 kB\n")
    machine.file("/proc/self/cgroup", "0::/\n")
    machine.file("/sys/fs/cgroup/cgroup.controllers", "memory\n")
    machine.file("/sys/fs/cgroup/memory.max", f"{2 * GIB}\n")
    result, _, _ = memory.detect(machine.system())
    assert result.limit_bytes == 2 * GIB
    assert result.usable_bytes == 2 * GIB


def test_missing_files_degrade(machine):
    result, environment, notes = memory.detect(machine.system())
    assert result.total_bytes is None and result.limit_bytes is None and result.cgroup_version is None


def test_old_kernel_without_memavailable():
    values = memory.parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 50 kB\n")
    assert values == {"MemTotal": 1024000, "MemFree": 102400, "Buffers": 10240, "Cached": 51200}


def test_live_machine_matches_proc_meminfo():
    live = memory.parse_meminfo(Path("/proc/meminfo").read_text())
    result, _, _ = memory.detect(System.from_env())
    assert result.total_bytes == live["MemTotal"]
    # MemAvailable moves while the test runs: the same within 5 %.
    assert abs(result.available_bytes - live["MemAvailable"]) < 0.05 * live["MemAvailable"]
    assert result.cgroup_version in ("v1", "hybrid", "v2")
    assert 0 < result.usable_bytes <= result.total_bytes


def test_live_cgroup_of_this_machine_is_resolved():
    """The container limit of this machine is read from this process's own cgroup, whatever it is."""
    system = System.from_env()
    total = memory.parse_meminfo(Path("/proc/meminfo").read_text())["MemTotal"]
    dirs = cgroup.cgroup_dirs(system, "memory")
    assert dirs, "no memory cgroup directory found"
    version = cgroup.cgroup_version(system)
    name = "memory.max" if version == "v2" else "memory.limit_in_bytes"
    raw = Path(dirs[0], name).read_text().strip()
    own = None if raw == "max" or int(raw) >= total else int(raw)
    limit, _ = memory.cgroup_memory(system, total)
    assert limit == own or (own is None and limit is not None)  # an ancestor may limit more
    if version in ("v1", "hybrid"):
        leaf = cgroup.parse_proc_cgroup(Path("/proc/self/cgroup").read_text())["memory"]
        if Path("/sys/fs/cgroup/memory", leaf.lstrip("/")).exists():
            assert dirs[0] == "/sys/fs/cgroup/memory" + leaf.rstrip("/")
