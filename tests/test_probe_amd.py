"""AMD (ROCm) detection replayed from recordings: rocm-smi JSON (telegraf testdata), a KFD node's properties
(tinygrad mock) and small sysfs trees built around them. Sources: tests/data/amd/SOURCES.md.

Expectations are read from the recordings themselves wherever the recording holds them.
"""

from __future__ import annotations

import json
import sys
import textwrap
import types

import pytest

from advisor.probe import amd
from advisor.probe.profile import Found
from tests.replay import DATA, Machine

AMD = DATA / "amd"
RECORDINGS = sorted(p.name for p in AMD.glob("telegraf__*.json"))
KFD_GFX1100 = AMD / "tinygrad__kfd_node_properties_gfx1100.txt"
GIB = 1024**3
MIB = 1024**2

# A CPU node as the KFD topology lists it first: gfx_target_version 0 (amdkfd kfd_topology.c).
CPU_NODE = "cpu_cores_count 16\nsimd_count 0\ngfx_target_version 0\nvendor_id 0\ndevice_id 0\n"


def recording(name: str) -> dict:
    return json.loads((AMD / name).read_text())


def cards_of(doc: dict) -> list[dict]:
    return [doc[k] for k in sorted((k for k in doc if k.startswith("card")), key=lambda k: int(k[4:]))]


def series(card: dict) -> str | None:
    """The product name as the recording spells it, unless it is a bare hex id (ROCm 4.3 prints "0x1002")."""
    value = card.get("Card series") or card.get("Card Series")
    return None if value is None or value.startswith("0x") else value


def kfd_node(machine: Machine, node: int, text: str) -> None:
    machine.file(f"/sys/class/kfd/kfd/topology/nodes/{node}/properties", text)


def kfd_props(gfx_version: int, render_minor: int, device_id: int, location_id: int, unique_id: int = 0) -> str:
    """A GPU node's properties, shaped like the tinygrad gfx1100 recording, with other identifying values."""
    lines = []
    for line in KFD_GFX1100.read_text().splitlines():
        key = line.split()[0]
        value = {
            "gfx_target_version": gfx_version,
            "drm_render_minor": render_minor,
            "device_id": device_id,
            "location_id": location_id,
            "unique_id": unique_id,
        }.get(key)
        lines.append(line if value is None else f"{key} {value}")
    return "\n".join(lines) + "\n"


def amd_card(
    machine: Machine,
    card: int,
    bdf: str,
    device_id: int,
    render_minor: int,
    vram_total: int | None = None,
    vram_used: int | None = None,
    gtt_total: int | None = None,
    gtt_used: int | None = None,
    extra: dict[str, str] | None = None,
    driver: str = "amdgpu",
) -> None:
    """/sys/class/drm/cardN -> device symlink to the PCI device directory, as the kernel lays it out."""
    pci = f"/sys/devices/pci0000:00/{bdf}"
    machine.file(f"{pci}/vendor", "0x1002\n")
    machine.file(f"{pci}/device", f"0x{device_id:04x}\n")
    machine.file(f"{pci}/uevent", f"DRIVER={driver}\nPCI_SLOT_NAME={bdf}\n")
    machine.symlink(f"{pci}/driver", f"../../../bus/pci/drivers/{driver}")
    machine.file(f"{pci}/drm/card{card}/dev", f"226:{card}\n")
    machine.file(f"{pci}/drm/renderD{render_minor}/dev", f"226:{render_minor}\n")
    for name, value in {
        "mem_info_vram_total": vram_total,
        "mem_info_vram_used": vram_used,
        "mem_info_gtt_total": gtt_total,
        "mem_info_gtt_used": gtt_used,
    }.items():
        if value is not None:
            machine.file(f"{pci}/{name}", f"{value}\n")
    for name, text in (extra or {}).items():
        machine.file(f"{pci}/{name}", text)
    machine.symlink(f"/sys/class/drm/card{card}/device", f"../../../devices/pci0000:00/{bdf}")
    # A connector entry next to the card, which must be skipped.
    machine.file(f"/sys/class/drm/card{card}-DP-1/status", "disconnected\n")


def gfx1100_machine(machine: Machine) -> None:
    """The tinygrad gfx1100 node (render minor 128, location_id 34304 = bus 0x86) with a consistent DRM card."""
    kfd_node(machine, 0, CPU_NODE)
    machine.copy("/sys/class/kfd/kfd/topology/nodes/1/properties", KFD_GFX1100)
    # 24 GiB board (device 0x744c is the Navi 31 RX 7900 XTX); memory values chosen for the test.
    amd_card(machine, 0, "0000:86:00.0", 0x744C, 128, vram_total=24 * GIB, vram_used=1 * GIB, gtt_total=32 * GIB)


# -- pure parsers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "target"),
    [(90010, "gfx90a"), (110000, "gfx1100"), (110501, "gfx1151"), (90000, "gfx900"), (90402, "gfx942"),
     (100301, "gfx1031"), (80003, "gfx803"), (0, None)],
)
def test_gfx_target_from_version(version, target):
    # ollama discover/amd.go gfxTargetFromKFDVersion's examples plus the targets of the recorded cards.
    assert amd.gfx_target_from_version(version) == target
    if target:
        assert amd.gfx_version_from_target(target) == version


@pytest.mark.parametrize(("value", "target"), [("11.0.0", "gfx1100"), ("9.0.10", "gfx90a"), ("10.3.0", "gfx1030"),
                                               ("11", None), ("x.y.z", None)])
def test_hsa_override(value, target):
    assert amd.gfx_target_from_override(value) == target


def test_parse_kfd_properties_recording():
    text = KFD_GFX1100.read_text()
    props = amd.parse_kfd_properties(text)
    expected = {line.split()[0]: int(line.split()[1]) for line in text.splitlines() if line.strip()}
    assert props == expected
    assert amd.gfx_target_from_version(props["gfx_target_version"]) == "gfx1100"
    assert props["vendor_id"] == amd.AMD_PCI_VENDOR


def test_parse_kfd_properties_is_lenient():
    assert amd.parse_kfd_properties("gfx_target_version 90010\nname gfx90a extra\nmarketing N/A\n\x00\n") == {
        "gfx_target_version": 90010
    }


@pytest.mark.parametrize("name", RECORDINGS)
def test_parse_rocm_smi_recordings(name):
    doc = recording(name)
    report = amd.parse_rocm_smi_json((AMD / name).read_text())
    cards = cards_of(doc)
    assert len(report.gpus) == len(cards)
    assert report.driver_version == doc["system"]["Driver version"]
    for gpu, card in zip(report.gpus, cards):
        assert gpu.name == series(card)
        assert gpu.memory_total_bytes == int(card["VRAM Total Memory (B)"])
        assert gpu.memory_used_bytes == int(card["VRAM Total Used Memory (B)"])
        assert gpu.gtt_total_bytes == int(card["GTT Total Memory (B)"])
        assert gpu.pci_bus_id == card["PCI Bus"].lower()
        assert gpu.device_id == int(card.get("GPU ID") or card["Device ID"], 16)


def test_parse_rocm_smi_newer_spelling_and_gfx_version():
    # ROCm 6.1+ spells "Card Series" and adds "GFX Version" (influxdata/telegraf
    # plugins/inputs/amd_rocm_smi/testdata/rx6700xt_rocm612.json); built from the 6.0.2 recording.
    doc = recording("telegraf__rx6700xt_rocm602.json")
    card = doc["card0"]
    card["Card Series"] = card.pop("Card series")
    card["GFX Version"] = "gfx1031"
    report = amd.parse_rocm_smi_json("WARNING: some warning before the JSON\n" + json.dumps(doc))
    assert report.gpus[0].name == series(card)
    assert report.gpus[0].gfx_target == "gfx1031"


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"card0": "x"}', '{"card0": {"VRAM Total Memory (B)": '
                                  '"N/A"}}', "{", '{"system": []}', "\x00\xff"])
def test_parse_rocm_smi_garbage(text):
    report = amd.parse_rocm_smi_json(text)
    assert all(g.memory_total_bytes is None for g in report.gpus)


# amd-smi: no public recording exists (SOURCES.md "Not copied"); these documents are synthetic, in the two shapes
# parsed by public tools (list before ROCm 6.4, {"gpu_data": [...]} after; sizes {"value", "unit"} in MB or B).
AMD_SMI_OLD = [
    {
        "gpu": 0,
        "asic": {"market_name": "AMD Instinct MI210", "device_id": "0x740f", "target_graphics_version": "gfx90a",
                 "num_compute_units": 104},
        "bus": {"bdf": "0000:c1:00.0"},
        "vram": {"type": "HBM", "size": {"value": 65536, "unit": "MB"}},
        "driver": {"name": "amdgpu", "version": "6.7.0"},
    }
]
AMD_SMI_NEW = {
    "gpu_data": [
        {
            "gpu": 0,
            "asic": {"market_name": "AMD Radeon Graphics", "target_graphics_version": "gfx1151",
                     "num_compute_units": 40},
            "bus": {"bdf": "0000:c5:00.0"},
            "vram": {"size": {"value": 536870912, "unit": "B"}},
        }
    ]
}


def test_parse_amd_smi_both_shapes():
    old = amd.parse_amd_smi_json(json.dumps(AMD_SMI_OLD)).gpus[0]
    assert (old.name, old.gfx_target, old.memory_total_bytes, old.pci_bus_id, old.compute_units) == (
        "AMD Instinct MI210", "gfx90a", 65536 * MIB, "0000:c1:00.0", 104
    )
    new = amd.parse_amd_smi_json(json.dumps(AMD_SMI_NEW)).gpus[0]
    assert (new.gfx_target, new.memory_total_bytes) == ("gfx1151", 512 * MIB)
    assert amd.parse_amd_smi_json("garbage").gpus == []
    assert amd.parse_amd_smi_json('{"gpu_data": [1, {"vram": {"size": "lots"}}]}').gpus[0].memory_total_bytes is None


# -- rocm-smi replayed through the fake tool -------------------------------------------------------------------


@pytest.mark.parametrize("name", RECORDINGS)
def test_detect_from_rocm_smi_only(machine, name):
    """No sysfs (e.g. a container without /sys/class/drm): every recording still gives its cards."""
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=AMD / name)
    doc = recording(name)
    found = amd.detect(machine.system())
    cards = cards_of(doc)
    assert len(found.gpus) == len(cards)
    assert found.drivers["amdgpu"] == doc["system"]["Driver version"]
    for i, (gpu, card) in enumerate(zip(found.gpus, cards)):
        device_id = card.get("GPU ID") or card["Device ID"]
        assert gpu.index == i
        assert gpu.vendor == "amd" and gpu.backend == "rocm" and gpu.source == "rocm-smi"
        assert gpu.name == (series(card) or f"AMD GPU {device_id}")
        total, used = int(card["VRAM Total Memory (B)"]), int(card["VRAM Total Used Memory (B)"])
        assert (gpu.memory_total_bytes, gpu.memory_free_bytes) == (total, total - used)
        assert gpu.pci_bus_id == card["PCI Bus"].lower()
        assert gpu.unified_memory is False  # all recorded cards are discrete boards


def test_rocm_smi_old_release_without_product_name(machine):
    # ROCm 4.3 reports the vendor id as the series ("0x1002"): the name falls back to the PCI device id.
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=AMD / "telegraf__rx6700xt_rocm430.json")
    assert recording("telegraf__rx6700xt_rocm430.json")["card0"]["Card series"] == "0x1002"
    assert amd.detect(machine.system()).gpus[0].name == "AMD GPU 0x73df"


def test_rocm_smi_unique_id_becomes_uuid(machine):
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=AMD / "telegraf__vega-20-WKS-GL-XE.json")
    uid = int(recording("telegraf__vega-20-WKS-GL-XE.json")["card0"]["Unique ID"], 16)
    assert amd.detect(machine.system()).gpus[0].uuid == f"GPU-{uid:016x}"


def test_rocm_smi_missing_garbage_failing(machine, tmp_path):
    assert amd.detect(machine.system()) == Found()  # no AMD hardware, no tool: nothing, not even a note
    machine.tool("rocm-smi", "rocm_smi.py")  # no recording: exits 1 with rocm-smi's message
    assert amd.detect(machine.system()) == Found()
    garbage = tmp_path / "garbage.json"
    garbage.write_text('WARNING: AMD GPU device(s) is/are in a low-power state\n{"card0": {"VRAM Total')
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=garbage)
    assert amd.detect(machine.system()) == Found()


def test_rocm_smi_timeout(machine, monkeypatch):
    monkeypatch.setattr(amd, "TOOL_TIMEOUT_S", 0.5)
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=AMD / "telegraf__vega-10-XT.json", ROCM_SMI_SLEEP="5")
    assert amd.detect(machine.system()) == Found()


def test_amd_smi_when_rocm_smi_is_absent(machine, tmp_path):
    doc = tmp_path / "amd-smi.json"
    doc.write_text(json.dumps(AMD_SMI_OLD))
    machine.tool("amd-smi", "amd_smi.py", AMD_SMI_JSON=doc)
    (gpu,) = amd.detect(machine.system()).gpus
    assert (gpu.name, gpu.gfx_target, gpu.cores, gpu.source) == ("AMD Instinct MI210", "gfx90a", 104, "amd-smi")


# -- sysfs ----------------------------------------------------------------------------------------------------


def test_sysfs_gfx1100(machine):
    gfx1100_machine(machine)
    machine.file("/sys/class/drm/card1/device/vendor", "0x10de\n")  # an NVIDIA card beside it is not ours
    machine.file("/sys/module/amdgpu/version", "6.8.5\n")
    machine.file("/opt/rocm/.info/version", "6.2.4-120\n")
    props = amd.parse_kfd_properties(KFD_GFX1100.read_text())
    found = amd.detect(machine.system())
    (gpu,) = found.gpus
    assert gpu.gfx_target == "gfx1100"
    assert gpu.cores == props["simd_count"] // props["simd_per_cu"] == 96
    assert gpu.name == f"AMD GPU 0x{props['device_id']:04x}"  # no rocm-smi and no product_name: the PCI id
    assert (gpu.memory_total_bytes, gpu.memory_free_bytes) == (24 * GIB, 23 * GIB)
    assert gpu.pci_bus_id == "0000:86:00.0"
    assert (gpu.backend, gpu.source, gpu.unified_memory, gpu.index) == ("rocm", "sysfs", False, 0)
    assert found.drivers == {"amdgpu": "6.8.5", "rocm": "6.2.4-120"}
    assert gpu.uuid == f"GPU-{props['unique_id']:016x}"


def test_sysfs_enriched_by_rocm_smi(machine, tmp_path):
    """sysfs for memory and gfx target, rocm-smi for the name; matched by PCI address (RX 6700 XT, ROCm 5.7)."""
    name = "telegraf__rx6700xt_rocm571.json"
    card = recording(name)["card0"]
    bdf = card["PCI Bus"].lower()
    bus = int(bdf.split(":")[1], 16)
    kfd_node(machine, 0, CPU_NODE)
    kfd_node(machine, 1, kfd_props(100301, 128, 0x73DF, bus << 8))  # Navi 22 is gfx1031
    amd_card(machine, 0, bdf, 0x73DF, 128, vram_total=int(card["VRAM Total Memory (B)"]),
             vram_used=int(card["VRAM Total Used Memory (B)"]), gtt_total=int(card["GTT Total Memory (B)"]))
    log = tmp_path / "rocm-smi.log"
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=AMD / name, ROCM_SMI_LOG=log)
    found = amd.detect(machine.system())
    (gpu,) = found.gpus
    assert gpu.name == card["Card series"]
    assert gpu.gfx_target == "gfx1031"
    assert gpu.memory_total_bytes == int(card["VRAM Total Memory (B)"])
    assert gpu.source == "sysfs"
    assert found.drivers["amdgpu"] == recording(name)["system"]["Driver version"]
    assert log.read_text().count("\n") == 1


def test_rocm_smi_not_run_when_sysfs_knows_everything(machine, tmp_path):
    gfx1100_machine(machine)
    machine.file("/sys/devices/pci0000:00/0000:86:00.0/product_name", "Radeon RX 7900 XTX\n")
    machine.file("/sys/module/amdgpu/version", "6.8.5\n")
    log = tmp_path / "rocm-smi.log"
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=AMD / "telegraf__vega-10-XT.json", ROCM_SMI_LOG=log)
    assert amd.detect(machine.system()).gpus[0].name == "Radeon RX 7900 XTX"
    assert not log.exists()


def test_mi100_node_order_and_visibility(machine):
    """Six MI100s (recording's PCI addresses) in KFD order; HIP_VISIBLE_DEVICES picks and renumbers them."""
    name = "telegraf__mi100_rocm571.json"
    cards = cards_of(recording(name))
    kfd_node(machine, 0, CPU_NODE)
    for i, card in enumerate(cards):
        bdf = card["PCI Bus"].lower()
        kfd_node(machine, i + 1, kfd_props(90008, 128 + i, 0x738C, int(bdf.split(":")[1], 16) << 8, 1000 + i))
        amd_card(machine, i, bdf, 0x738C, 128 + i, vram_total=int(card["VRAM Total Memory (B)"]),
                 vram_used=int(card["VRAM Total Used Memory (B)"]), gtt_total=int(card["GTT Total Memory (B)"]))
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=AMD / name)
    found = amd.detect(machine.system())
    assert [g.pci_bus_id for g in found.gpus] == [c["PCI Bus"].lower() for c in cards]
    assert {g.name for g in found.gpus} == {series(c) for c in cards}
    assert {g.gfx_target for g in found.gpus} == {"gfx908"}
    assert found.notes == []

    machine.env["HIP_VISIBLE_DEVICES"] = "3,1"
    found = amd.detect(machine.system())
    assert [(g.index, g.pci_bus_id) for g in found.gpus] == [(0, cards[3]["PCI Bus"].lower()),
                                                             (1, cards[1]["PCI Bus"].lower())]
    assert any("HIP_VISIBLE_DEVICES" in n and "2 of 6" in n for n in found.notes)

    # ROCR_VISIBLE_DEVICES first (by index or UUID), then HIP_VISIBLE_DEVICES indexes what it left.
    machine.env["ROCR_VISIBLE_DEVICES"] = f"GPU-{1004:016x},2,5"
    machine.env["HIP_VISIBLE_DEVICES"] = "1"
    (gpu,) = amd.detect(machine.system()).gpus
    assert gpu.pci_bus_id == cards[2]["PCI Bus"].lower()


def test_apu(machine):
    """A Phoenix-class APU (gfx1103): 512 MiB carve-out, 16 GiB GTT on a 30 GiB machine (values for the test)."""
    kfd_node(machine, 0, CPU_NODE)
    kfd_node(machine, 1, kfd_props(110003, 128, 0x15BF, 0xC500))
    amd_card(machine, 0, "0000:c5:00.0", 0x15BF, 128, vram_total=512 * MIB, vram_used=100 * MIB,
             gtt_total=16 * GIB, gtt_used=1 * GIB)
    machine.file("/proc/meminfo", f"MemTotal:       {30 * 1024 * 1024} kB\nMemAvailable:   {20 * 1024 * 1024} kB\n")
    found = amd.detect(machine.system())
    (gpu,) = found.gpus
    assert gpu.unified_memory is True
    assert gpu.memory_total_bytes == 512 * MIB + 16 * GIB
    assert gpu.memory_free_bytes == (512 - 100) * MIB + 15 * GIB
    assert gpu.gfx_target == "gfx1103" and gpu.backend == "rocm"
    assert any("APU" in n for n in found.notes)


def test_apu_gtt_capped_by_system_memory(machine):
    # A GTT larger than the RAM behind it (ttm.pages_limit set before the carve-out grew) is capped at MemTotal.
    kfd_node(machine, 1, kfd_props(110501, 128, 0x1586, 0xC500))
    amd_card(machine, 0, "0000:c5:00.0", 0x1586, 128, vram_total=2 * GIB, vram_used=0, gtt_total=100 * GIB,
             gtt_used=0)
    machine.file("/proc/meminfo", f"MemTotal:       {62 * 1024 * 1024} kB\n")
    (gpu,) = amd.detect(machine.system()).gpus
    assert gpu.gfx_target == "gfx1151"
    assert gpu.memory_total_bytes == 2 * GIB + 62 * GIB


def test_discrete_board_files_defeat_apu_heuristic(machine):
    kfd_node(machine, 1, kfd_props(100300, 128, 0x73A5, 0x0300))
    amd_card(machine, 0, "0000:03:00.0", 0x73A5, 128, vram_total=4 * GIB, vram_used=0, gtt_total=32 * GIB,
             extra={"mem_info_vram_vendor": "samsung\n"})
    (gpu,) = amd.detect(machine.system()).gpus
    assert gpu.unified_memory is False and gpu.memory_total_bytes == 4 * GIB


def test_masked_node_does_not_crash(machine):
    gfx1100_machine(machine)
    # A node the device cgroup hides answers EPERM; tests run as root, so a directory stands in for the
    # unreadable file (read_text fails with an OSError either way).
    machine.file("/sys/class/kfd/kfd/topology/nodes/2/properties/x", "")
    found = amd.detect(machine.system())
    assert [g.gfx_target for g in found.gpus] == ["gfx1100"]
    assert any("could not be read" in n for n in found.notes)


def test_pre_gfx9_gets_vulkan(machine):
    kfd_node(machine, 1, kfd_props(80003, 128, 0x67DF, 0x0100))  # Polaris gfx803
    amd_card(machine, 0, "0000:01:00.0", 0x67DF, 128, vram_total=8 * GIB, vram_used=0)
    found = amd.detect(machine.system())
    assert (found.gpus[0].gfx_target, found.gpus[0].backend) == ("gfx803", "vulkan")
    assert any("older than gfx9" in n for n in found.notes)


def test_hsa_override_applies_to_a_sysfs_card(machine):
    kfd_node(machine, 1, kfd_props(110003, 128, 0x15BF, 0xC500))
    amd_card(machine, 0, "0000:c5:00.0", 0x15BF, 128, vram_total=8 * GIB, vram_used=0)
    machine.env["HSA_OVERRIDE_GFX_VERSION"] = "11.0.0"
    found = amd.detect(machine.system())
    assert found.gpus[0].gfx_target == "gfx1100"
    assert any("HSA_OVERRIDE_GFX_VERSION=11.0.0" in n and "gfx1103" in n for n in found.notes)


def test_card_without_kfd_is_vulkan_only(machine):
    amd_card(machine, 0, "0000:03:00.0", 0x73DF, 128, vram_total=12 * GIB, vram_used=0)
    found = amd.detect(machine.system())
    assert found.gpus[0].backend == "vulkan" and found.gpus[0].gfx_target is None
    assert any("KFD" in n for n in found.notes)


def test_radeon_driver_is_skipped(machine):
    amd_card(machine, 0, "0000:01:00.0", 0x6798, 128, driver="radeon")
    found = amd.detect(machine.system())
    assert found.gpus == [] and any("radeon" in n for n in found.notes)


def test_uevent_gives_pci_address_without_symlink(machine):
    machine.file("/sys/class/drm/card0/device/vendor", "0x1002\n")
    machine.file("/sys/class/drm/card0/device/device", "0x744c\n")
    machine.file("/sys/class/drm/card0/device/uevent", "DRIVER=amdgpu\nPCI_SLOT_NAME=0000:86:00.0\n")
    machine.file("/sys/class/drm/card0/device/drm/renderD128/dev", "226:128\n")
    machine.file("/sys/class/drm/card0/device/mem_info_vram_total", "garbage\n")
    machine.copy("/sys/class/kfd/kfd/topology/nodes/1/properties", KFD_GFX1100)
    (gpu,) = amd.detect(machine.system()).gpus
    assert (gpu.pci_bus_id, gpu.gfx_target, gpu.memory_total_bytes) == ("0000:86:00.0", "gfx1100", None)


# -- the amdsmi library ----------------------------------------------------------------------------------------


def test_amdsmi_import_failure_is_silent(tmp_path, monkeypatch, capsys):
    # What the PyPI amdsmi wheel does without libamd_smi.so (amdsmi_wrapper.find_smi_library): print to stdout,
    # then raise KeyError.
    (tmp_path / "amdsmi.py").write_text(textwrap.dedent("""
        print("/opt/rocm/lib/libamd_smi.so: cannot open shared object file: No such file or directory")
        print("Unable to find libamd_smi.so library try installing amd-smi-lib from your package manager")
        raise KeyError("libamd_smi.so")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    assert amd._load_amdsmi() is None
    assert capsys.readouterr() == ("", "")


def test_read_amdsmi_with_fake_library(capsys):
    calls = []
    lib = types.SimpleNamespace(
        AmdSmiInitFlags=types.SimpleNamespace(INIT_AMD_GPUS=2),
        amdsmi_init=lambda flags: calls.append(("init", flags)),
        amdsmi_shut_down=lambda: calls.append("shutdown"),
        amdsmi_get_processor_handles=lambda: ["h0"],
        amdsmi_get_gpu_asic_info=lambda h: {"market_name": "AMD Instinct MI300X", "num_compute_units": 304,
                                            "device_id": "0x74a1", "target_graphics_version": "gfx942"},
        amdsmi_get_gpu_vram_usage=lambda h: {"vram_total": 196592, "vram_used": 283},
        amdsmi_get_gpu_device_bdf=lambda h: "0000:0C:00.0",
        amdsmi_get_gpu_driver_info=lambda h: print("noise") or {"driver_version": "6.10.5"},
    )
    report = amd.read_amdsmi(lib)
    (gpu,) = report.gpus
    assert (gpu.name, gpu.gfx_target, gpu.compute_units, gpu.pci_bus_id) == (
        "AMD Instinct MI300X", "gfx942", 304, "0000:0c:00.0")
    assert (gpu.memory_total_bytes, gpu.memory_used_bytes) == (196592 * MIB, 283 * MIB)  # MB fields (amdsmi_wrapper.py)
    assert report.driver_version == "6.10.5"
    assert calls == [("init", 2), "shutdown"]
    assert capsys.readouterr().out == ""

    broken = types.SimpleNamespace(AmdSmiInitFlags=None, amdsmi_init=lambda flags: 1 / 0)
    assert amd.read_amdsmi(broken).gpus == []


def test_amdsmi_not_used_on_replays(machine, monkeypatch):
    monkeypatch.setattr(amd, "_load_amdsmi", lambda: pytest.fail("amdsmi asked during a replay"))
    machine.file("/dev/kfd", "")
    gfx1100_machine(machine)
    assert amd.detect(machine.system()).gpus
