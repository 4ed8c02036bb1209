"""The NVIDIA detector on recorded machines: nvidia-smi captures and ``-q -x`` XMLs replayed through a fake tool, and
NVML through a fake binding built from the same recordings.

Expectations are read from the recordings with this file's own small readers (not the module's parsers), so a
parsing mistake in advisor/probe/nvidia.py cannot agree with itself. Recordings: tests/data/nvidia/SOURCES.md.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.util
import re
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from advisor.probe import nvidia, probe
from advisor.system import System
from tests.replay import DATA, Machine

NV = DATA / "nvidia"
MIB = 1024 * 1024  # nvidia-smi prints MiB (nvidia-smi --help-query-gpu)

#: nvidia_gpu_exporter captures: (file stem, the platform they were taken on).
CAPTURES = {
    "rtx-2080-super-linux": ("linux-x86_64__nvidia-geforce-rtx-2080-super__595.71.05", "linux"),
    "rtx-2080-super-windows": ("windows-x86_64__nvidia-geforce-rtx-2080-super__610.62", "windows"),
    "rtx-4080-super": ("linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05", "linux"),
    "h100": ("linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01", "linux"),
    "h100-mig": ("linux-x86_64__nvidia-h100-mig__590.48.01", "linux"),
    "l40s": ("linux-x86_64__nvidia-l40s__595.80", "linux"),
}
XMLS = [
    "telegraf__a100-sxm4-v12.xml",
    "telegraf__dual_2080-v13.xml",
    "telegraf__gtx-1660-ti.xml",
    "telegraf__rtx-3060-v12.xml",
    "telegraf__rtx-3090-v12.xml",
    "telegraf__rtx-4000-sff-ada-v13.xml",
    "telegraf__tesla-t4.xml",
]


# -- independent readers of the recordings ------------------------------------------------------------------------
def recorded_csv(stem: str) -> dict[str, str]:
    """The one row of a recorded --query-gpu CSV, by field name without its unit."""
    header, row = (NV / f"{stem}__query-gpu.idle.csv").read_text().splitlines()[0:2]
    names = [h.split(" [")[0] for h in header.split(", ")]
    return dict(zip(names, row.split(", "), strict=True))


def mib(text: str) -> int:
    value, unit = text.split()
    assert unit == "MiB"
    return int(value) * MIB


def recorded_q(stem: str) -> dict[str, Any]:
    text = (NV / f"{stem}__q.idle.txt").read_text()
    cuda = re.search(r"^CUDA Version\s+: (\d+\.\d+)", text, re.M)
    totals = re.findall(r"Shared FB Memory Usage\n\s+Total\s+: (\d+ MiB)\n(?:.*\n){2}\s+Free\s+: (\d+ MiB)", text)
    return {"cuda": cuda.group(1) if cuda else None, "mig": [(mib(t), mib(f)) for t, f in totals]}


def recorded_list(stem: str) -> list[tuple[str, str]]:
    """(profile, UUID) of each MIG device in a recorded `nvidia-smi -L`."""
    return re.findall(
        r"MIG (\S+)\s+Device\s+\d+: \(UUID: (MIG-[0-9a-f-]+)\)", (NV / f"{stem}__nvidia-smi-L.txt").read_text()
    )


def recorded_xml(name: str) -> ET.Element:
    return ET.parse(NV / name).getroot()


# -- machines -----------------------------------------------------------------------------------------------------
def capture_machine(machine: Machine, key: str, **extra: str | Path) -> Machine:
    stem, os_name = CAPTURES[key]
    machine.os_name = os_name
    machine.tool(
        "nvidia-smi",
        "nvidia_smi.py",
        NVSMI_QUERY_CSV=NV / f"{stem}__query-gpu.idle.csv",
        NVSMI_Q=NV / f"{stem}__q.idle.txt",
        NVSMI_L=NV / f"{stem}__nvidia-smi-L.txt",
        **extra,
    )
    return machine


def xml_machine(machine: Machine, name: str, **extra: str | Path) -> Machine:
    machine.tool("nvidia-smi", "nvidia_smi.py", NVSMI_XML=NV / name, **extra)
    return machine


class LiveSystem(System):
    """A recorded machine treated as the live one, so that the NVML path runs (against a fake binding)."""

    @property
    def live(self) -> bool:
        return True


def live(machine: Machine) -> LiveSystem:
    system = machine.system()
    return LiveSystem(**{f.name: getattr(system, f.name) for f in dataclasses.fields(system)})


# -- nvidia-smi captures ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [k for k in CAPTURES if k != "h100-mig"])
def test_capture_whole_gpu(machine, key):
    stem, _ = CAPTURES[key]
    row, q = recorded_csv(stem), recorded_q(stem)
    found = nvidia.detect(capture_machine(machine, key).system())

    (gpu,) = found.gpus
    assert gpu.index == 0 and gpu.vendor == "nvidia" and gpu.backend == "cuda" and gpu.source == "nvidia-smi"
    assert gpu.name == row["name"]
    assert gpu.memory_total_bytes == mib(row["memory.total"])
    assert gpu.memory_free_bytes == mib(row["memory.free"])
    assert gpu.compute_capability == row["compute_cap"]
    assert gpu.driver_version == row["driver_version"]
    assert gpu.uuid == row["uuid"] and gpu.pci_bus_id == row["pci.bus_id"]
    assert gpu.mig_profile is None and gpu.mig_parent_index is None and not gpu.unified_memory
    assert found.drivers == {"nvidia": row["driver_version"], "cuda_driver": q["cuda"]}
    assert found.notes == [] and found.environment == []


def test_windows_capture_reads_versions_marked_deprecated(machine):
    """Driver 610 on Windows prints "Driver Version : 610.62 [Deprecated; ...]" in -q; the version is still read."""
    found = nvidia.detect(capture_machine(machine, "rtx-2080-super-windows").system())
    assert found.drivers == {"nvidia": "610.62", "cuda_driver": "13.3"}
    assert [g.name for g in found.gpus] == ["NVIDIA GeForce RTX 2080 SUPER"]


def test_h100_mig_lists_instances_not_the_parent(machine):
    stem, _ = CAPTURES["h100-mig"]
    row, q, listing = recorded_csv(stem), recorded_q(stem), recorded_list(stem)
    assert row["mig.mode.current"] == "Enabled" and len(listing) == len(q["mig"]) == 4
    # Per-instance FB totals as this capture's nvidia-smi -q prints them.
    assert [t // MIB for t, _ in q["mig"]] == [40448, 20096, 9984, 9984]

    found = nvidia.detect(capture_machine(machine, "h100-mig").system())

    assert [g.index for g in found.gpus] == [0, 1, 2, 3]
    assert [(g.mig_profile, g.uuid) for g in found.gpus] == listing
    assert [(g.memory_total_bytes, g.memory_free_bytes) for g in found.gpus] == q["mig"]
    assert [g.name for g in found.gpus] == [f"{row['name']} MIG {profile}" for profile, _ in listing]
    assert all(g.mig_parent_index == 0 and g.compute_capability == row["compute_cap"] for g in found.gpus)
    assert all(g.pci_bus_id == row["pci.bus_id"] for g in found.gpus)
    assert found.drivers == {"nvidia": row["driver_version"], "cuda_driver": q["cuda"]}
    assert any("MIG mode" in n and "4 MIG instances" in n for n in found.notes)


def test_rejected_field_is_dropped_and_asked_again(machine, tmp_path):
    """An older driver refuses a field it does not know; the query is repeated without it."""
    calls = tmp_path / "calls"
    stem, _ = CAPTURES["rtx-4080-super"]
    row = recorded_csv(stem)
    system = capture_machine(machine, "rtx-4080-super", NVSMI_REJECT="compute_cap", NVSMI_CALLS=calls).system()

    (gpu,) = nvidia.detect(system).gpus

    queries = [line for line in calls.read_text().splitlines() if line.startswith("--query-gpu")]
    assert len(queries) == 2 and "compute_cap" in queries[0] and "compute_cap" not in queries[1]
    assert gpu.name == row["name"] and gpu.memory_total_bytes == mib(row["memory.total"])
    assert gpu.compute_capability is None


def test_unnamed_refusal_falls_back_to_minimal_fields(machine, tmp_path):
    calls = tmp_path / "calls"
    # "index" is never dropped, so refusing it imitates an error that names no droppable field.
    system = capture_machine(machine, "l40s", NVSMI_REJECT="index", NVSMI_CALLS=calls).system()
    found = nvidia.detect(system)
    queries = [line for line in calls.read_text().splitlines() if line.startswith("--query-gpu")]
    assert queries[-1] == f"--query-gpu={','.join(nvidia.MINIMAL_FIELDS)} --format=csv,nounits"
    # Both queries refused: the GPU still comes from `-q`.
    assert [g.name for g in found.gpus] == [recorded_csv(CAPTURES["l40s"][0])["name"]]


# -- -q -x XMLs ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", XMLS)
def test_xml(machine, name):
    root = recorded_xml(name)
    gpus = root.findall("gpu")
    found = nvidia.detect(xml_machine(machine, name).system())

    assert found.drivers == {"nvidia": root.findtext("driver_version"), "cuda_driver": root.findtext("cuda_version")}
    expected = []
    for parent, gpu in enumerate(gpus):
        migs = gpu.findall("mig_devices/mig_device")
        if gpu.findtext("mig_mode/current_mig") == "Enabled":
            expected += [
                (parent, mib(m.findtext("fb_memory_usage/total")), mib(m.findtext("fb_memory_usage/free")))
                for m in migs
            ]
        else:
            expected.append(
                (None, mib(gpu.findtext("fb_memory_usage/total")), mib(gpu.findtext("fb_memory_usage/free")))
            )
    assert [(g.mig_parent_index, g.memory_total_bytes, g.memory_free_bytes) for g in found.gpus] == expected
    assert [g.index for g in found.gpus] == list(range(len(expected)))
    for gpu in found.gpus:
        parent = gpus[gpu.mig_parent_index or 0] if gpu.mig_parent_index is not None else None
        # The XML has no compute capability, and no guess is made from the name.
        assert gpu.compute_capability is None and gpu.source == "nvidia-smi"
        if parent is None:
            assert gpu.name in {g.findtext("product_name") for g in gpus}
            assert gpu.uuid in {g.findtext("uuid") for g in gpus}
    assert any("compute capability unknown" in n for n in found.notes)


def test_dual_2080_xml_keeps_both_gpus_apart(machine):
    """Same masked UUID on both cards: they are told apart by PCI bus id."""
    root = recorded_xml("telegraf__dual_2080-v13.xml")
    found = nvidia.detect(xml_machine(machine, "telegraf__dual_2080-v13.xml").system())
    assert [g.pci_bus_id for g in found.gpus] == [g.findtext("pci/pci_bus_id") for g in root.findall("gpu")]
    assert len(found.gpus) == 2 and found.gpus[0].pci_bus_id != found.gpus[1].pci_bus_id


def test_a100_mig_xml_without_list_output(machine):
    """No `-L` recording: the instances keep their XML memory, with no profile or UUID (the XML has neither)."""
    root = recorded_xml("telegraf__a100-sxm4-v12.xml")
    migs = root.findall("gpu/mig_devices/mig_device")
    found = nvidia.detect(xml_machine(machine, "telegraf__a100-sxm4-v12.xml").system())
    assert len(found.gpus) == len(migs) == 4
    assert [g.name for g in found.gpus] == [
        f"{root.findtext('gpu/product_name')} MIG device {m.findtext('index')}" for m in migs
    ]
    assert all(g.mig_profile is None and g.uuid is None and g.mig_parent_index == 0 for g in found.gpus)


def test_gtx_1660_ti_old_schema(machine):
    """Driver 418 XML: no reserved memory, no MIG element, and the product name the old driver printed."""
    root = recorded_xml("telegraf__gtx-1660-ti.xml")
    assert root.find("gpu/mig_mode") is None and root.find("gpu/fb_memory_usage/reserved") is None
    (gpu,) = nvidia.detect(xml_machine(machine, "telegraf__gtx-1660-ti.xml").system()).gpus
    assert gpu.name == root.findtext("gpu/product_name") == "Graphics Device"
    assert gpu.memory_total_bytes == mib(root.findtext("gpu/fb_memory_usage/total"))
    assert gpu.driver_version == "418.43"


# -- CUDA_VISIBLE_DEVICES -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "buses"),
    [
        ("1", ["00000000:02:00.0"]),
        ("1,0", ["00000000:02:00.0", "00000000:01:00.0"]),
        ("0,7,1", ["00000000:01:00.0"]),  # an invalid item hides itself and what follows it (CUDA docs)
        ("", []),
        ("-1", []),
        ("0,1", None),  # everything, in order: no filtering, no note
    ],
)
def test_cuda_visible_devices_indices(machine, value, buses):
    machine.env["CUDA_VISIBLE_DEVICES"] = value
    found = nvidia.detect(xml_machine(machine, "telegraf__dual_2080-v13.xml").system())
    notes = [n for n in found.notes if "CUDA_VISIBLE_DEVICES" in n]
    if buses is None:
        assert len(found.gpus) == 2 and notes == []
        return
    assert [g.pci_bus_id for g in found.gpus] == buses
    assert [g.index for g in found.gpus] == list(range(len(buses)))  # CUDA renumbers what it sees
    assert len(notes) == 1 and f"leaves {len(buses)} of 2" in notes[0]


def test_cuda_visible_devices_mig_uuid_prefix(machine):
    stem, _ = CAPTURES["h100-mig"]
    profile, uuid = recorded_list(stem)[2]
    machine.env["CUDA_VISIBLE_DEVICES"] = uuid[:12]
    (gpu,) = nvidia.detect(capture_machine(machine, "h100-mig").system()).gpus
    assert (gpu.index, gpu.uuid, gpu.mig_profile, gpu.mig_parent_index) == (0, uuid, profile, 0)


def test_cuda_visible_devices_gpu_uuid(machine):
    root = recorded_xml("telegraf__tesla-t4.xml")
    machine.env["CUDA_VISIBLE_DEVICES"] = root.findtext("gpu/uuid")[:8]  # "GPU-d37e"
    assert len(nvidia.detect(xml_machine(machine, "telegraf__tesla-t4.xml").system()).gpus) == 1
    machine.env["CUDA_VISIBLE_DEVICES"] = "GPU-ffff"
    assert nvidia.detect(xml_machine(machine, "telegraf__tesla-t4.xml").system()).gpus == []


# -- broken or missing tools --------------------------------------------------------------------------------------
@pytest.mark.parametrize("behaviour", ["hang", "fail", "garbage"])
def test_broken_nvidia_smi_gives_a_note_not_a_crash(machine, monkeypatch, behaviour):
    monkeypatch.setattr(nvidia, "SMI_TIMEOUT_S", 0.5)
    machine.tool("nvidia-smi", "nvidia_smi.py", NVSMI_BEHAVIOUR=behaviour)
    found = nvidia.detect(machine.system())
    assert found.gpus == [] and found.drivers == {}
    assert len(found.notes) == 1 and found.notes[0].startswith("nvidia: no usable NVIDIA GPU")


def test_hanging_nvidia_smi_is_asked_once(machine, monkeypatch, tmp_path):
    monkeypatch.setattr(nvidia, "SMI_TIMEOUT_S", 0.5)
    calls = tmp_path / "calls"
    machine.tool("nvidia-smi", "nvidia_smi.py", NVSMI_BEHAVIOUR="hang", NVSMI_CALLS=calls)
    nvidia.detect(machine.system())
    assert len(calls.read_text().splitlines()) == 1


def test_no_nvidia_at_all_is_silent(machine):
    assert nvidia.detect(machine.system()) == nvidia.Found()


def test_driver_without_tool_gives_a_note(machine):
    machine.file("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  590.48.01\n")
    (note,) = nvidia.detect(machine.system()).notes
    assert "/proc/driver/nvidia/version" in note


def test_nvidia_pci_device_without_driver_gives_a_note(machine):
    machine.file("/sys/bus/pci/devices/0000:01:00.0/vendor", "0x10de\n")
    machine.file("/sys/bus/pci/devices/0000:01:00.0/class", "0x030000\n")
    (note,) = nvidia.detect(machine.system()).notes
    assert "0000:01:00.0" in note


def test_bad_values_keep_the_gpu():
    text = (
        "index, uuid, name, memory.total [MiB], memory.free [MiB], compute_cap, mig.mode.current\n"
        "0, GPU-1, NVIDIA GB10, [N/A], [Not Supported], 12.1, [Requested functionality has been deprecated]\n"
        "1, GPU-2, short row\n"
        "2, [N/A], NVIDIA X, 12 MiB, junk, 9, Enabled\n"
    )
    first, third = nvidia.parse_query_csv(text)
    assert (first.name, first.total_bytes, first.free_bytes, first.compute_capability, first.mig_enabled) == (
        "NVIDIA GB10",
        None,
        None,
        "12.1",
        False,
    )
    assert (third.uuid, third.total_bytes, third.free_bytes, third.compute_capability, third.mig_enabled) == (
        None,
        12 * MIB,
        None,
        None,
        True,
    )
    assert nvidia.parse_xml("not xml <") is None
    assert nvidia.parse_q("garbage\x00 : :\n  ::").gpus == []
    assert nvidia.parse_list("GPU zero: nothing") == []


def test_wsl_is_reported(machine):
    machine.file("/proc/sys/kernel/osrelease", "5.15.167.4-microsoft-standard-WSL2\n")
    capture_machine(machine, "rtx-4080-super")
    found = nvidia.detect(machine.system())
    assert found.environment == ["wsl"] and len(found.gpus) == 1


# -- NVML ---------------------------------------------------------------------------------------------------------
class FakeNvml:
    """The parts of nvidia-ml-py's ``pynvml`` the detector uses, answering from recorded values."""

    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_LIBRARY_NOT_FOUND = 12
    NVML_DEVICE_MIG_ENABLE = 1
    nvmlMemory_v2 = 0x02000028

    class NVMLError(Exception):
        def __init__(self, value: int) -> None:
            super().__init__(f"NVML error {value}")
            self.value = value

    def __init__(self, gpus: list[dict], driver: str, cuda: int, init_error: int | None = None) -> None:
        self.gpus, self.driver, self.cuda, self.init_error = gpus, driver, cuda, init_error
        self.shutdown = False

    def _device(self, handle: tuple) -> dict:
        gpu = self.gpus[handle[1]]
        return gpu["mig"][handle[2]] if handle[0] == "mig" else gpu

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple:
        return ("gpu", index)

    def nvmlDeviceGetName(self, handle: tuple) -> bytes:
        return self._device(handle)["name"].encode()  # older bindings return bytes

    def nvmlDeviceGetUUID(self, handle: tuple) -> str:
        return self._device(handle)["uuid"]

    def nvmlDeviceGetPciInfo_v3(self, handle: tuple) -> SimpleNamespace:
        return SimpleNamespace(busId=self._device(handle)["bus"])

    def nvmlDeviceGetMemoryInfo(self, handle: tuple, version: int | None = None) -> SimpleNamespace:
        device = self._device(handle)
        if device.get("memory_error") is not None:
            raise self.NVMLError(device["memory_error"])
        return SimpleNamespace(total=device["total"], free=device["free"], used=0, reserved=0)

    def nvmlDeviceGetCudaComputeCapability(self, handle: tuple) -> tuple[int, int]:
        major, minor = self._device(handle)["cc"].split(".")
        return int(major), int(minor)

    def nvmlDeviceGetMigMode(self, handle: tuple) -> list[int]:
        if "mig" not in self._device(handle):
            raise self.NVMLError(self.NVML_ERROR_NOT_SUPPORTED)
        return [1, 1]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: tuple) -> int:
        return 7  # H100: up to 7 MIG devices; the empty slots raise

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: tuple, slot: int) -> tuple:
        if slot >= len(self._device(handle)["mig"]):
            raise self.NVMLError(3)
        return ("mig", handle[1], slot)


def nvml_from_xml(name: str, **kwargs: Any) -> FakeNvml:
    root = recorded_xml(name)
    gpus = [
        {
            "name": g.findtext("product_name"),
            "uuid": g.findtext("uuid"),
            "bus": g.findtext("pci/pci_bus_id"),
            "total": mib(g.findtext("fb_memory_usage/total")),
            "free": mib(g.findtext("fb_memory_usage/free")),
            "cc": "7.5",  # RTX 2080 (Turing); NVML would report it, the XML does not carry it
        }
        for g in root.findall("gpu")
    ]
    cuda_major, cuda_minor = root.findtext("cuda_version").split(".")
    return FakeNvml(gpus, root.findtext("driver_version"), int(cuda_major) * 1000 + int(cuda_minor) * 10, **kwargs)


def nvml_from_capture(key: str) -> FakeNvml:
    stem, _ = CAPTURES[key]
    row, q, listing = recorded_csv(stem), recorded_q(stem), recorded_list(stem)
    gpu = {
        "name": row["name"],
        "uuid": row["uuid"],
        "bus": row["pci.bus_id"],
        "total": mib(row["memory.total"]),
        "free": mib(row["memory.free"]),
        "cc": row["compute_cap"],
    }
    if row["mig.mode.current"] == "Enabled":
        gpu["mig"] = [
            {
                "name": f"{row['name']} MIG {profile}",
                "uuid": uuid,
                "total": total,
                "free": free,
                "cc": row["compute_cap"],
            }
            for (profile, uuid), (total, free) in zip(listing, q["mig"], strict=True)
        ]
    major, minor = q["cuda"].split(".")
    return FakeNvml([gpu], row["driver_version"], int(major) * 1000 + int(minor) * 10)


def with_driver(machine: Machine) -> Machine:
    machine.file("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module\n")
    return machine


def test_nvml_mig(machine, monkeypatch):
    fake = nvml_from_capture("h100-mig")
    monkeypatch.setattr(nvidia, "_load_nvml", lambda: fake)
    stem, _ = CAPTURES["h100-mig"]
    found = nvidia.detect(live(with_driver(machine)))

    assert [(g.mig_profile, g.uuid) for g in found.gpus] == recorded_list(stem)
    assert [(g.memory_total_bytes, g.memory_free_bytes) for g in found.gpus] == recorded_q(stem)["mig"]
    assert all(g.source == "nvml" and g.compute_capability == "9.0" and g.mig_parent_index == 0 for g in found.gpus)
    assert found.drivers == {"nvidia": "590.48.01", "cuda_driver": "13.1"}
    assert fake.shutdown


def test_nvml_memory_error_on_one_gpu_keeps_the_others(machine, monkeypatch):
    fake = nvml_from_xml("telegraf__dual_2080-v13.xml")
    fake.gpus[0]["memory_error"] = 999  # an unexpected NVML error on GPU 0 only
    monkeypatch.setattr(nvidia, "_load_nvml", lambda: fake)
    root = recorded_xml("telegraf__dual_2080-v13.xml")

    found = nvidia.detect(live(with_driver(machine)))

    first, second = found.gpus
    assert first.name == root.findtext("gpu/product_name") and first.memory_total_bytes is None
    assert second.memory_total_bytes == mib(root.findall("gpu")[1].findtext("fb_memory_usage/total"))
    assert first.compute_capability == second.compute_capability == "7.5"
    assert found.drivers == {"nvidia": "590.44.01", "cuda_driver": "13.1"}


def test_nvml_memory_not_supported_means_unified_memory(machine, monkeypatch):
    """GB10-style: memory queries NotSupported (XuehaiPan/nvitop#208)."""
    fake = nvml_from_xml("telegraf__dual_2080-v13.xml")
    fake.gpus[1]["memory_error"] = FakeNvml.NVML_ERROR_NOT_SUPPORTED
    monkeypatch.setattr(nvidia, "_load_nvml", lambda: fake)
    first, second = nvidia.detect(live(with_driver(machine))).gpus
    assert (first.unified_memory, second.unified_memory, second.memory_total_bytes) == (False, True, None)


def test_nvml_library_not_found_falls_back_to_nvidia_smi(machine, monkeypatch):
    fake = nvml_from_capture("rtx-4080-super")
    fake.init_error = FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND
    monkeypatch.setattr(nvidia, "_load_nvml", lambda: fake)
    capture_machine(with_driver(machine), "rtx-4080-super")
    (gpu,) = nvidia.detect(live(machine)).gpus
    assert gpu.source == "nvidia-smi" and gpu.name == recorded_csv(CAPTURES["rtx-4080-super"][0])["name"]


def test_nvml_library_not_found_and_no_tool_gives_a_note(machine, monkeypatch):
    fake = nvml_from_capture("rtx-4080-super")
    fake.init_error = FakeNvml.NVML_ERROR_LIBRARY_NOT_FOUND
    monkeypatch.setattr(nvidia, "_load_nvml", lambda: fake)
    (note,) = nvidia.detect(live(with_driver(machine))).notes
    assert "NVML" in note and "error 12" in note


def test_nvml_is_not_asked_without_a_driver_or_on_a_replay(machine, monkeypatch):
    def refuse() -> Any:
        raise AssertionError("NVML must not be loaded")

    monkeypatch.setattr(nvidia, "_load_nvml", refuse)
    assert nvidia.detect(live(machine)).gpus == []  # live, but no sign of a driver
    assert nvidia.detect(with_driver(machine).system()).notes  # a driver, but a replay: nvidia-smi only


class DeprecatedShimFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imitates the deprecated `pynvml` distribution's import hook, which warns on `import pynvml` (pynvml 13's
    _pynvml_redirector.pth)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(name, self) if name == "pynvml" else None

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: Any) -> None:
        warnings.warn(
            "The pynvml package is deprecated. Please install nvidia-ml-py instead.", FutureWarning, stacklevel=2
        )
        module.nvmlInit = lambda: None


def test_deprecated_shim_warning_is_silenced(monkeypatch):
    import pynvml  # noqa: F401 - so that the real module is put back after the test

    monkeypatch.delitem(sys.modules, "pynvml")
    monkeypatch.setattr(sys, "meta_path", [DeprecatedShimFinder(), *sys.meta_path])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert callable(nvidia._load_nvml().nvmlInit)


def test_real_binding_imports_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert hasattr(nvidia._load_nvml(), "nvmlInit")


# -- through the whole probe --------------------------------------------------------------------------------------
def test_probe_profile_lists_the_mig_instances(machine):
    stem, _ = CAPTURES["h100-mig"]
    profile = probe(capture_machine(machine, "h100-mig").system())
    nvidia_gpus = [g for g in profile.gpus if g.vendor == "nvidia"]
    assert [(g.mig_profile, g.uuid) for g in nvidia_gpus] == recorded_list(stem)
    assert profile.drivers["cuda_driver"] == recorded_q(stem)["cuda"]
    assert not any(n.startswith("nvidia: detection failed") for n in profile.notes)
