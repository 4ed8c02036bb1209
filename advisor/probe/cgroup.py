"""This process's cgroup: its version and the directories holding a controller's files (memory and CPU limits are
read there by advisor.probe.memory and advisor.probe.cpu)."""

from __future__ import annotations

from advisor.system import System


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}; the v2 unified entry ("0::/path") is under the key ""."""
    paths = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _ancestors(path: str) -> list[str]:
    """'/a/b' -> ['/a/b', '/a', '']: the cgroup and each parent up to the root of the mount."""
    parts = [p for p in path.split("/") if p]
    return ["/" + "/".join(parts[:i]) if i else "" for i in range(len(parts), -1, -1)]


def cgroup_version(system: System) -> str | None:
    """"v2" (unified), "hybrid" (v1 controllers plus a v2 tree at /sys/fs/cgroup/unified, systemd's default before
    v247), "v1" (legacy), or None (systemd.io/CGROUP_DELEGATION "Three Different Tree Setups")."""
    if system.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2"
    mounted = {c for name in system.listdir("/sys/fs/cgroup") for c in name.split(",")}
    if mounted & {"memory", "cpu"}:  # v1 mounts one directory per controller, some joined ("cpu,cpuacct")
        return "hybrid" if system.exists("/sys/fs/cgroup/unified") else "v1"
    return None


def cgroup_dirs(system: System, controller: str) -> list[str]:
    """Directories holding ``controller``'s files for this process, innermost first.

    v1 mounts each controller at /sys/fs/cgroup/<controller> (cpu may be mounted as "cpu,cpuacct"); v2 mounts one
    tree at /sys/fs/cgroup. Inside a cgroup namespace the path in /proc/self/cgroup is "/" and the mount root is the
    container's own cgroup; where the recorded path does not exist under the mount (a private mount of a parent),
    the mount root is still read.
    """
    paths = parse_proc_cgroup(system.read_text("/proc/self/cgroup") or "")
    version = cgroup_version(system)
    if version == "v2":
        mount, path = "/sys/fs/cgroup", paths.get("", "/")
    elif version in ("v1", "hybrid"):  # the memory and cpu controllers are v1 ones in both
        mount = next(
            (
                f"/sys/fs/cgroup/{name}"
                for name in (controller, f"{controller},cpuacct", f"cpuacct,{controller}")
                if system.exists(f"/sys/fs/cgroup/{name}")
            ),
            None,
        )
        path = next((p for c, p in paths.items() if c == controller), "/")
        if mount is None:
            return []
    else:
        return []
    dirs = [f"{mount}{p}" for p in _ancestors(path) if system.exists(f"{mount}{p}")]
    return dirs or [mount]
