"""Host name and interconnect in the profile, replayed through the System seam; older profiles still load."""

from __future__ import annotations

import json

from advisor.probe import network, probe
from advisor.probe.profile import HardwareProfile, Interconnect
from tests.replay import DATA

NV = DATA / "nvidia"

# /proc/net/route as the kernel prints it (net/ipv4/fib_trie.c fib_route_seq_show: a header, then one row per route;
# Destination, Gateway and Mask in hex, the default route has Destination and Mask 00000000).
ROUTE = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "ens5\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "ens3\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
)


def _topo_rows(name: str) -> list[list[str]]:
    return [line.split() for line in (NV / name).read_text().splitlines() if line.startswith("GPU")]


def test_nvlink_from_topo_matrix():
    """NV# between two GPUs is NVLink; the expectation is read off the recording's cells."""
    for name in ("topo-m.8gpu-nvswitch.txt", "topo-m.2gpu-pcie.txt"):
        rows = _topo_rows(name)
        expected = any(c.startswith("NV") for r in rows for c in r[1:len(rows) + 1])
        assert network.parse_topo((NV / name).read_text()) is expected
    assert network.parse_topo("NVIDIA-SMI has failed") is None


def test_probe_records_hostname_interconnect(machine):
    machine.file("/proc/sys/kernel/hostname", "gpu-node-7\n")
    machine.file("/proc/net/route", ROUTE)
    machine.file("/sys/class/infiniband/mlx5_0/ports/1/state", "4: ACTIVE\n")
    machine.file("/sys/class/infiniband/mlx5_1/ports/1/state", "1: DOWN\n")
    machine.tool("nvidia-smi", "nvidia_smi.py", NVSMI_XML=NV / "telegraf__dual_2080-v13.xml",
                 NVSMI_TOPO=NV / "topo-m.8gpu-nvswitch.txt")
    profile = probe(machine.system())
    assert profile.hostname == "gpu-node-7"
    assert profile.interconnect == Interconnect(nvlink=True, infiniband=["mlx5_0", "mlx5_1"],
                                                infiniband_active=["mlx5_0"], default_interface="ens3")
    again = HardwareProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile


def test_pcie_only_and_no_tool(machine):
    machine.tool("nvidia-smi", "nvidia_smi.py", NVSMI_XML=NV / "telegraf__dual_2080-v13.xml",
                 NVSMI_TOPO=NV / "topo-m.2gpu-pcie.txt")
    profile = probe(machine.system())
    assert profile.interconnect.nvlink is False and profile.interconnect.infiniband == []
    assert profile.hostname is None  # replayed machine without the file: unknown, not this machine's name


def test_older_profile_without_the_fields_loads():
    data = HardwareProfile().to_dict()
    del data["hostname"], data["interconnect"]
    profile = HardwareProfile.from_dict(data)
    assert profile.hostname is None and profile.interconnect == Interconnect()
