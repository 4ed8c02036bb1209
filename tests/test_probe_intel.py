"""Intel GPU detection on small sysfs trees.

No public recording of an Intel GPU's sysfs tree or of ``vulkaninfo --summary`` on Intel hardware was found
(tests/data/amd/SOURCES.md, "Not copied"), so these trees are built by hand from the sysfs names public detectors
read (``device/vendor``, the ``device/driver`` link, xe ``tile*/physical_vram_size_bytes``, i915 ``lmem_total_bytes``:
llmfit hardware.rs ``intel_dgpu_vram_gb_from_pci_dir``) and the vulkaninfo text follows its documented
``--summary`` layout. Values are invented.
"""

from __future__ import annotations

import shutil
import textwrap

from advisor.probe import intel
from advisor.probe.profile import Found
from tests.replay import Machine

GIB = 1024**3


def intel_card(machine: Machine, card: int, bdf: str, device_id: int, driver: str) -> str:
    pci = f"/sys/devices/pci0000:00/{bdf}"
    machine.file(f"{pci}/vendor", "0x8086\n")
    machine.file(f"{pci}/device", f"0x{device_id:04x}\n")
    machine.file(f"{pci}/uevent", f"DRIVER={driver}\nPCI_SLOT_NAME={bdf}\n")
    machine.symlink(f"{pci}/driver", f"../../../bus/pci/drivers/{driver}")
    machine.file(f"{pci}/drm/card{card}/dev", f"226:{card}\n")
    machine.symlink(f"/sys/class/drm/card{card}", f"../../devices/pci0000:00/{bdf}/drm/card{card}")
    machine.symlink(f"{pci}/drm/card{card}/device", "../..")
    machine.file(f"/sys/class/drm/card{card}-HDMI-A-1/status", "connected\n")
    return pci


VULKANINFO = textwrap.dedent("""\
    ==========
    VULKANINFO
    ==========

    Vulkan Instance Version: 1.3.275

    Devices:
    ========
    GPU0:
    \tapiVersion         = 1.3.274
    \tdriverVersion      = 24.0.5
    \tvendorID           = 0x8086
    \tdeviceID           = 0x56a0
    \tdeviceType         = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
    \tdeviceName         = Intel(R) Arc(tm) A770 Graphics (DG2)
    \tdriverID           = DRIVER_ID_INTEL_OPEN_SOURCE_MESA
    \tdriverName         = Intel open-source Mesa driver
    \tdriverInfo         = Mesa 24.0.5
    GPU1:
    \tapiVersion         = 1.3.274
    \tvendorID           = 0x8086
    \tdeviceID           = 0x7d55
    \tdeviceType         = PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU
    \tdeviceName         = Intel(R) Graphics (MTL)
    \tdriverInfo         = Mesa 24.0.5
    GPU2:
    \tapiVersion         = 1.3.274
    \tvendorID           = 0x10005
    \tdeviceID           = 0x0000
    \tdeviceType         = PHYSICAL_DEVICE_TYPE_CPU
    \tdeviceName         = llvmpipe (LLVM 17.0.6, 256 bits)
    \tdriverInfo         = Mesa 24.0.5 (LLVM 17.0.6)
""")


def fake_vulkaninfo(machine: Machine, text: str, tmp_path) -> None:
    """vulkaninfo is a plain shell script here: no fake module is needed to print a fixed text. The replayed
    PATH holds only fake tools, so ``cat`` is called by its absolute path."""
    out = tmp_path / "vulkaninfo.txt"
    out.write_text(text)
    script = machine.bin / "vulkaninfo"
    script.write_text(f'#!/bin/sh\n[ "$1" = "--summary" ] || exit 2\nexec "{shutil.which("cat")}" "{out}"\n')
    script.chmod(0o755)


def test_parse_vulkaninfo_summary():
    devices = intel.parse_vulkaninfo_summary(VULKANINFO)
    assert [(d.index, d.vendor_id, d.device_id, d.software) for d in devices] == [
        (0, 0x8086, 0x56A0, False), (1, 0x8086, 0x7D55, False), (2, 0x10005, 0, True)]
    assert devices[0].name == "Intel(R) Arc(tm) A770 Graphics (DG2)"
    assert devices[0].api_version == "1.3.274" and devices[0].driver_info == "Mesa 24.0.5"
    assert intel.parse_vulkaninfo_summary("apiVersion = 4206847 (1.3.255)\nGPU0:\napiVersion = 4206847 (1.3.255)\n")[
        0].api_version == "1.3.255"
    assert intel.parse_vulkaninfo_summary("garbage\x00\nGPU0:\n= =\n") == [intel.VulkanDevice(index=0)]


def test_i915_igpu(machine):
    intel_card(machine, 0, "0000:00:02.0", 0x7D55, "i915")
    found = intel.detect(machine.system())
    (gpu,) = found.gpus
    assert (gpu.vendor, gpu.name, gpu.backend) == ("intel", "Intel GPU 0x7d55", "vulkan")
    assert gpu.unified_memory is True and gpu.memory_total_bytes is None  # RAM is not claimed as VRAM
    assert gpu.pci_bus_id == "0000:00:02.0"
    assert any("integrated" in n for n in found.notes)


def test_xe_dgpu_with_tiles(machine):
    pci = intel_card(machine, 1, "0000:03:00.0", 0x0BD5, "xe")  # a two-tile Data Center GPU
    machine.file(f"{pci}/tile0/physical_vram_size_bytes", f"{64 * GIB}\n")
    machine.file(f"{pci}/tile1/physical_vram_size_bytes", f"{64 * GIB}\n")
    found = intel.detect(machine.system())
    (gpu,) = found.gpus
    assert (gpu.memory_total_bytes, gpu.backend, gpu.unified_memory) == (128 * GIB, "sycl", False)
    assert found.notes == []


def test_i915_dgpu_lmem_and_vulkan_names(machine, tmp_path):
    intel_card(machine, 0, "0000:00:02.0", 0x7D55, "i915")
    intel_card(machine, 1, "0000:03:00.0", 0x56A0, "i915")
    machine.file("/sys/devices/pci0000:00/0000:03:00.0/drm/card1/lmem_total_bytes", f"{16 * GIB}\n")
    fake_vulkaninfo(machine, VULKANINFO, tmp_path)
    found = intel.detect(machine.system())
    igpu, dgpu = found.gpus
    assert (igpu.name, igpu.backend, igpu.unified_memory) == ("Intel(R) Graphics (MTL)", "vulkan", True)
    assert (dgpu.name, dgpu.backend, dgpu.memory_total_bytes) == ("Intel(R) Arc(tm) A770 Graphics (DG2)", "sycl",
                                                                  16 * GIB)
    assert dgpu.driver_version == "Mesa 24.0.5"
    assert [g.index for g in found.gpus] == [0, 1]


def test_vulkan_discrete_without_lmem_file(machine, tmp_path):
    intel_card(machine, 0, "0000:03:00.0", 0x56A0, "i915")
    fake_vulkaninfo(machine, VULKANINFO, tmp_path)
    found = intel.detect(machine.system())
    assert (found.gpus[0].backend, found.gpus[0].memory_total_bytes, found.gpus[0].unified_memory) == (
        "sycl", None, False)
    assert any("could not be read" in n for n in found.notes)


def test_vulkaninfo_garbage_or_failing(machine, tmp_path):
    intel_card(machine, 0, "0000:00:02.0", 0x7D55, "i915")
    fake_vulkaninfo(machine, "\x00\xff not vulkaninfo", tmp_path)
    assert intel.detect(machine.system()).gpus[0].name == "Intel GPU 0x7d55"
    (machine.bin / "vulkaninfo").write_text("#!/bin/sh\necho 'ERROR: [Loader Message] no ICD' >&2\nexit 1\n")
    assert intel.detect(machine.system()).gpus[0].name == "Intel GPU 0x7d55"


def test_no_intel_gpu(machine):
    assert intel.detect(machine.system()) == Found()
    machine.file("/sys/class/drm/card0/device/vendor", "0x1002\n")
    machine.symlink("/sys/class/drm/card0/device/driver", "../../../bus/pci/drivers/amdgpu")
    assert intel.detect(machine.system()) == Found()
    # An Intel device bound to another driver (e.g. a display-only simpledrm) is not a compute GPU.
    machine.file("/sys/class/drm/card1/device/vendor", "0x8086\n")
    assert intel.detect(machine.system()) == Found()
