"""Intel GPUs: sysfs DRM cards with PCI vendor 0x8086 and the i915 or xe driver, named by ``vulkaninfo --summary``.

Sources:

* discrete (Arc, Data Center Flex/Max) vs integrated is told by local memory: ``xe`` exposes
  ``device/tile*/physical_vram_size_bytes`` (summed over tiles), ``i915`` exposes ``lmem_total_bytes`` on the DRM
  card (llmfit ``intel_dgpu_vram_gb_from_pci_dir``). An iGPU has none and shares system RAM; the kernel reports no
  GPU memory budget for it, so none is claimed here (memory_total_bytes stays None, with a note).
* ``vulkaninfo --summary`` (only when on PATH) gives the marketing name and the device type; software devices
  (llvmpipe, lavapipe, SwiftShader: ``PHYSICAL_DEVICE_TYPE_CPU``) are skipped.
* backend: llama.cpp's SYCL backend is built for Intel GPUs, Arc and Data Center ones first
  (ggml-org/llama.cpp:docs/backend/SYCL.md), so dGPUs get "sycl"; everything else gets "vulkan", ramalama's first
  preference for Intel on Linux (containers/ramalama llama_cpp.py ``get_gpu_backend_preferences``: Intel ->
  [vulkan, sycl, openvino]).

Non-Intel Vulkan devices are left to their own detectors. Nothing here prints or raises on bad tool output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from advisor.probe.profile import Found
from advisor.probe.profile import Gpu
from advisor.system import System

#: PCI vendor id of Intel (sysfs ``device/vendor``; Vulkan ``vendorID``).
INTEL_PCI_VENDOR = 0x8086
#: Kernel DRM drivers of Intel GPUs: i915 (Gen 2 - Xe-HPG/Arc A) and xe (Xe2 and newer, optional for Arc A).
INTEL_DRIVERS = ("i915", "xe")
DRM_DIR = "/sys/class/drm"
#: ``vulkaninfo`` answers in well under a second; 5 s like every other tool.
TOOL_TIMEOUT_S = 5.0
VULKANINFO_ARGV = ("vulkaninfo", "--summary")

_CARD_RE = re.compile(r"card(\d+)$")
_BDF_RE = re.compile(r"^[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$")
_GPU_HEADER_RE = re.compile(r"^GPU(\d+):\s*$")
_KV_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


@dataclass(frozen=True)
class VulkanDevice:
    index: int
    name: str | None = None
    device_type: str | None = None  # PHYSICAL_DEVICE_TYPE_DISCRETE_GPU | INTEGRATED_GPU | CPU | VIRTUAL_GPU
    vendor_id: int | None = None
    device_id: int | None = None
    driver_name: str | None = None
    driver_info: str | None = None
    api_version: str | None = None

    @property
    def software(self) -> bool:
        return (self.device_type or "").endswith("_CPU")


def _hex_or_int(value: str) -> int | None:
    token = value.split()[0] if value.split() else ""
    try:
        return int(token, 16) if token.lower().startswith("0x") else int(token)
    except ValueError:
        return None


def parse_vulkaninfo_summary(text: str) -> list[VulkanDevice]:
    """``vulkaninfo --summary`` -> its "GPUn:" blocks (software devices included; see ``VulkanDevice.software``)."""
    devices: list[VulkanDevice] = []
    current: dict | None = None

    def flush() -> None:
        if current is not None:
            devices.append(VulkanDevice(**current))

    for line in (text or "").splitlines():
        header = _GPU_HEADER_RE.match(line.strip())
        if header:
            flush()
            current = {"index": int(header.group(1))}
            continue
        if current is None:
            continue
        kv = _KV_RE.match(line)
        if not kv:
            continue
        key, value = kv.groups()
        if key == "deviceName":
            current["name"] = value or None
        elif key == "deviceType":
            current["device_type"] = value or None
        elif key == "vendorID":
            current["vendor_id"] = _hex_or_int(value)
        elif key == "deviceID":
            current["device_id"] = _hex_or_int(value)
        elif key == "driverName":
            current["driver_name"] = value or None
        elif key == "driverInfo":
            current["driver_info"] = value or None
        elif key == "apiVersion":
            # Newer vulkaninfo prints "1.3.255", older "4206847 (1.3.255)".
            m = re.search(r"(\d+\.\d+\.\d+)", value)
            current["api_version"] = m.group(1) if m else value or None
    flush()
    return devices


def _read_int(system: System, path: str) -> int | None:
    line = system.read_first_line(path)
    if not line:
        return None
    try:
        return int(line, 16) if line.lower().startswith("0x") else int(line)
    except ValueError:
        return None


def _vram(system: System, card: str, driver: str) -> int | None:
    """Local memory of a discrete GPU in bytes, None when there is none (an iGPU) or it cannot be read."""
    dev = f"{DRM_DIR}/{card}/device"
    if driver == "xe":
        sizes = [
            _read_int(system, f"{dev}/{tile}/physical_vram_size_bytes")
            for tile in system.listdir(dev)
            if re.match(r"tile\d+$", tile)
        ]
        total = sum(s for s in sizes if s)
        return total or None
    total = _read_int(system, f"{DRM_DIR}/{card}/lmem_total_bytes")
    if total is None:  # the same file seen from the PCI device directory, as llmfit reads it
        for name in system.listdir(f"{dev}/drm"):
            if _CARD_RE.match(name):
                total = total or _read_int(system, f"{dev}/drm/{name}/lmem_total_bytes")
    return total or None


def _vulkan_devices(system: System) -> list[VulkanDevice]:
    if not system.which("vulkaninfo"):
        return []
    done = system.run(VULKANINFO_ARGV, timeout=TOOL_TIMEOUT_S)
    if done.returncode is None:
        return []
    # vulkaninfo exits non-zero when one ICD fails but still prints the devices that work: parse regardless.
    return [
        d for d in parse_vulkaninfo_summary(done.stdout) if d.vendor_id == INTEL_PCI_VENDOR and not d.software
    ]


def detect(system: System) -> Found:
    found = Found()
    if system.os_name != "linux":
        return found
    cards = []
    for entry in system.listdir(DRM_DIR):
        if not _CARD_RE.match(entry):  # connectors (card0-DP-1) and render nodes
            continue
        dev = f"{DRM_DIR}/{entry}/device"
        if _read_int(system, f"{dev}/vendor") != INTEL_PCI_VENDOR:
            continue
        driver = system.readlink_name(f"{dev}/driver")
        if driver not in INTEL_DRIVERS:
            continue
        bdf = system.readlink_name(dev)
        if not (bdf and _BDF_RE.match(bdf)):
            bdf = None
            for line in (system.read_text(f"{dev}/uevent") or "").splitlines():
                if line.startswith("PCI_SLOT_NAME=") and _BDF_RE.match(line.split("=", 1)[1].strip()):
                    bdf = line.split("=", 1)[1].strip()
        cards.append((entry, driver, _read_int(system, f"{dev}/device"), bdf.lower() if bdf else None))
    if not cards:
        return found

    vulkan = _vulkan_devices(system)
    used: list[VulkanDevice] = []
    for index, (card, driver, device_id, bdf) in enumerate(sorted(cards, key=lambda c: int(c[0][4:]))):
        vk = next((d for d in vulkan if d.device_id == device_id and d not in used), None)
        if vk is not None:
            used.append(vk)
        vram = _vram(system, card, driver)
        discrete = vram is not None or (vk is not None and vk.device_type == "PHYSICAL_DEVICE_TYPE_DISCRETE_GPU")
        name = (vk.name if vk and vk.name else None) or (
            f"Intel GPU 0x{device_id:04x}" if device_id is not None else "Intel GPU"
        )
        if not discrete:
            found.notes.append(
                f"intel: {name} ({driver}) is integrated and shares system memory; the kernel reports no GPU memory "
                "budget for it, so none is claimed"
            )
        elif vram is None:
            found.notes.append(f"intel: {name} ({driver}) is discrete but its memory size could not be read")
        gpus_backend = "sycl" if discrete else "vulkan"
        found.gpus.append(
            Gpu(
                index=index,
                vendor="intel",
                name=name,
                backend=gpus_backend,
                memory_total_bytes=vram,
                unified_memory=not discrete,
                driver_version=vk.driver_info if vk else None,
                pci_bus_id=bdf,
                source="sysfs",
            )
        )
    return found


__all__ = ["VulkanDevice", "detect", "parse_vulkaninfo_summary"]
