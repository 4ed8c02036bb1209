"""The machine's name and interconnect: what a plan spanning several machines needs to know about each one.

- host name: /proc/sys/kernel/hostname (Linux, kernel sysctl ``kernel.hostname``, replayable), else the live
  ``socket.gethostname()`` (uname(2) nodename).
- NVLink: the GPU-to-GPU cells of ``nvidia-smi topo -m`` ("NV#  = Connection traversing a bonded set of # NVLinks"
  in the tool's own legend; PIX/PXB/PHB/NODE/SYS are PCIe paths).
- InfiniBand (and RoCE) adapters: /sys/class/infiniband/<dev>, a port ACTIVE when ``ports/<n>/state`` reads
  "4: ACTIVE" (Linux drivers/infiniband/core/sysfs.c state_show, enum ib_port_state IB_PORT_ACTIVE = 4).
- the default route's interface: /proc/net/route, the row whose Destination and Mask are 00000000 (Linux
  net/ipv4/fib_trie.c fib_route_seq_show). NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME name it in multi-node plans.
"""

from __future__ import annotations

import re

from advisor.probe.profile import Interconnect
from advisor.system import System

IB_ROOT = "/sys/class/infiniband"
TOPO_TIMEOUT_S = 5.0


def hostname(system: System) -> str | None:
    name = system.read_first_line("/proc/sys/kernel/hostname")
    if name:
        return name
    if system.live:
        import socket

        return socket.gethostname() or None
    return None


def parse_topo(text: str) -> bool | None:
    """Whether ``nvidia-smi topo -m`` shows an NVLink between two GPUs; None when the text holds no GPU matrix."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in text.splitlines()]
    header = next((line.split() for line in lines if re.match(r"\s+GPU0\b", line)), None)
    if not header:
        return None
    gpus = [h for h in header if re.fullmatch(r"GPU\d+", h)]
    found = False
    for line in lines:
        cells = line.split()
        if not cells or not re.fullmatch(r"GPU\d+", cells[0]):
            continue
        for name, cell in zip(header, cells[1:]):
            if name in gpus and name != cells[0] and re.fullmatch(r"NV\d+", cell):
                found = True
    return found


def infiniband(system: System) -> tuple[list[str], list[str]]:
    """(adapters, adapters with an ACTIVE port)."""
    devices = system.listdir(IB_ROOT)
    active = []
    for dev in devices:
        for port in system.listdir(f"{IB_ROOT}/{dev}/ports"):
            state = system.read_first_line(f"{IB_ROOT}/{dev}/ports/{port}/state") or ""
            if state.split(":")[0].strip() == "4" or "ACTIVE" in state.upper():
                active.append(dev)
                break
    return devices, active


def default_interface(system: System) -> str | None:
    text = system.read_text("/proc/net/route") or ""
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 8 and cols[1] == "00000000" and cols[7] == "00000000":
            return cols[0]
    return None


def detect(system: System, nvidia_gpus: int = 0) -> tuple[str | None, Interconnect, list[str]]:
    """(host name, interconnect, notes). ``nvidia-smi topo -m`` is asked only with two or more NVIDIA GPUs."""
    notes: list[str] = []
    nvlink: bool | None = None
    if nvidia_gpus >= 2 and system.which("nvidia-smi"):
        done = system.run(("nvidia-smi", "topo", "-m"), timeout=TOPO_TIMEOUT_S)
        nvlink = parse_topo(done.stdout) if done.ok else None
        if nvlink is None:
            notes.append("NVLink unknown: 'nvidia-smi topo -m' gave no GPU matrix")
    devices, active = infiniband(system) if system.os_name == "linux" else ([], [])
    iface = default_interface(system) if system.os_name == "linux" else None
    return hostname(system), Interconnect(nvlink=nvlink, infiniband=devices, infiniband_active=active,
                                          default_interface=iface), notes
