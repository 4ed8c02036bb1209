"""AMD GPUs (ROCm): sysfs first, then the ``amdsmi`` library, then ``rocm-smi`` / ``amd-smi`` for what sysfs lacks.

Order and pitfalls:

* sysfs needs no ROCm userspace and also works in containers that mount ``/sys`` and ``/dev/kfd``: DRM
  cards under ``/sys/class/drm/card[0-9]*/device`` give memory, the KFD topology under
  ``/sys/class/kfd/kfd/topology/nodes`` gives the gfx target, the compute units and the HIP ordinal order.
* ``amdsmi`` prints to stdout and raises ``KeyError`` (not ``ImportError``) when ``libamd_smi.so`` is missing
  (the PyPI wheel's ``amdsmi_wrapper.find_smi_library``), so it is imported lazily, only on the live machine with
  ``/dev/kfd``, with stdout captured.
* ``rocm-smi --json`` sizes are byte *strings*; "Card series" became "Card Series" in ROCm 6.1; "GFX Version"
  only exists in newer releases (influxdata/telegraf amd_rocm_smi testdata rx6700xt_rocm602/612.json).
  ``amd-smi static --json`` changed from a list to ``{"gpu_data": [...]}`` and gives sizes as ``{"value", "unit"}``
  in MB or B.

Nothing here prints or raises on bad tool output: every failure becomes a note or is skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import dataclass, field, replace

from advisor.probe.profile import Found
from advisor.probe.profile import Gpu
from advisor.system import System

#: PCI vendor id of AMD/ATI (sysfs ``device/vendor``; the KFD ``vendor_id`` line is the same number in decimal).
AMD_PCI_VENDOR = 0x1002

DRM_DIR = "/sys/class/drm"
KFD_NODES_DIR = "/sys/class/kfd/kfd/topology/nodes"

#: ROCm supports gfx9 (Vega) and newer only: ramalama skips KFD nodes with ``gfx_target_version < 90000``
#: ("pre-Vega, unsupported by ROCm", containers/ramalama:ramalama/amdkfd.py).
ROCM_MIN_GFX_VERSION = 90000

GIB = 1024**3
#: Integrated-vs-discrete heuristic of ollama (ollama/ollama:discover/amd.go): an APU has a small VRAM
#: carve-out and a large GTT window onto system RAM. Skipped when ``mem_info_vram_vendor``/``board_info`` exist,
#: which only discrete boards expose.
APU_MAX_VRAM = 4 * GIB
APU_MIN_GTT = 8 * GIB
APU_GTT_VRAM_RATIO = 4

#: Seconds rocm-smi / amd-smi may take (2-5 s per subprocess). A module constant so tests can shorten it.
TOOL_TIMEOUT_S = 5.0

ROCM_SMI_ARGV = (
    "rocm-smi",
    "--showproductname",
    "--showid",
    "--showmeminfo",
    "vram",
    "gtt",
    "--showdriverversion",
    "--showbus",
    "--showuniqueid",
    "--json",
)
#: What whichllm asks for (whichllm hardware/amd.py); retried when an older rocm-smi refuses one of the flags above.
ROCM_SMI_ARGV_MINIMAL = ("rocm-smi", "--showproductname", "--showmeminfo", "vram", "--json")
AMD_SMI_ARGV = ("amd-smi", "static", "--json")

#: PCI device id -> LLVM gfx target, for when no tool or KFD node names the target (rocm-smi 5.x JSON has only
#: "GPU ID"). Chips from the Linux kernel's amdgpu_drv.c pciidlist and libdrm data/amdgpu.ids, targets from LLVM's
#: AMDGPUUsage "Processors" table.
DEVICE_GFX = {
    0x738C: "gfx908", 0x738E: "gfx908",  # Arcturus: Instinct MI100
    0x7408: "gfx90a", 0x740C: "gfx90a", 0x740F: "gfx90a", 0x7410: "gfx90a",  # Aldebaran: MI210/MI250(X)
    # MI300A, MI300X, MI308X, MI325X
    0x74A0: "gfx942", 0x74A1: "gfx942", 0x74A2: "gfx942", 0x74A5: "gfx942", 0x74A9: "gfx942",
    0x75A0: "gfx950", 0x75A3: "gfx950",  # MI350X / MI355X
    0x66A0: "gfx906", 0x66A1: "gfx906", 0x66AF: "gfx906",  # Vega 20: MI50/MI60, Radeon VII
    0x6860: "gfx900", 0x6861: "gfx900", 0x6863: "gfx900", 0x687F: "gfx900",  # Vega 10
    0x73A5: "gfx1030", 0x73AF: "gfx1030", 0x73BF: "gfx1030",  # Navi 21: RX 6800/6900, W6800
    0x73DF: "gfx1031", 0x73FF: "gfx1032",  # Navi 22: RX 6700 (XT); Navi 23: RX 6600 (XT)
    0x744C: "gfx1100", 0x7448: "gfx1100", 0x745E: "gfx1100",  # Navi 31: RX 7900 XT(X), W7900/W7800
    0x747E: "gfx1101", 0x7480: "gfx1102",  # Navi 32: RX 7800/7700 XT; Navi 33: RX 7600
    0x7550: "gfx1201", 0x7551: "gfx1201", 0x7590: "gfx1200",  # Navi 48: RX 9070 (XT), AI PRO R9700; Navi 44
}

_CARD_RE = re.compile(r"card(\d+)$")
_BDF_RE = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])$")
_GFX_RE = re.compile(r"^gfx([0-9a-f]+)$")
_HEX_ONLY_RE = re.compile(r"^(0x)?[0-9a-fA-F]+$")


# -- pure parsing --------------------------------------------------------------------------------------------


def gfx_target_from_version(version: int) -> str | None:
    """KFD ``gfx_target_version`` (decimal MMmmss) -> LLVM target: 90010 -> gfx90a, 110000 -> gfx1100.

    major = v / 10000, minor = (v / 100) % 100, stepping = v % 100; minor and stepping are printed in hex
    (ollama ``gfxTargetFromKFDVersion``, discover/amd.go). 0 means a CPU node: None.
    """
    if not isinstance(version, int) or version <= 0:
        return None
    major, minor, stepping = version // 10000, (version // 100) % 100, version % 100
    if minor > 15 or stepping > 15:  # one hex digit each in every LLVM target name
        return None
    return f"gfx{major}{minor:x}{stepping:x}"


def gfx_target_from_override(value: str) -> str | None:
    """``HSA_OVERRIDE_GFX_VERSION`` ("11.0.0", "9.0.10") -> "gfx1100", "gfx90a"; None when malformed.

    The variable is major.minor.stepping in decimal, the same three numbers as ``gfx_target_version``.
    """
    parts = value.strip().split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    major, minor, stepping = (int(p) for p in parts)
    return gfx_target_from_version(major * 10000 + minor * 100 + stepping)


def gfx_version_from_target(target: str) -> int | None:
    """Inverse of :func:`gfx_target_from_version`: "gfx90a" -> 90010, "gfx1100" -> 110000."""
    m = _GFX_RE.match(target.strip().lower())
    if not m or len(m.group(1)) < 3:
        return None
    digits = m.group(1)
    try:
        major = int(digits[:-2])
        return major * 10000 + int(digits[-2], 16) * 100 + int(digits[-1], 16)
    except ValueError:
        return None


def parse_kfd_properties(text: str) -> dict[str, int]:
    """A KFD node's ``properties`` file ("key value" lines) -> {key: int}.

    Lenient: a line without an integer value is skipped (ramalama's parser does ``int(value)`` on every line and
    would crash on one: containers/ramalama:ramalama/amdkfd.py ``parse_props``).
    """
    props: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            props[parts[0]] = int(parts[1], 0) if parts[1].lower().startswith("0x") else int(parts[1])
        except ValueError:
            continue
    return props


@dataclass
class ToolGpu:
    """One GPU as a tool or library reports it; every field may be unknown."""

    index: int
    name: str | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    gtt_total_bytes: int | None = None
    gtt_used_bytes: int | None = None
    gfx_target: str | None = None
    pci_bus_id: str | None = None
    unique_id: int | None = None
    device_id: int | None = None
    compute_units: int | None = None
    driver_version: str | None = None
    mem_bus_width: int | None = None
    mem_type: str | None = None


@dataclass
class ToolReport:
    gpus: list[ToolGpu] = field(default_factory=list)
    driver_version: str | None = None


def _json_document(text: str):
    """The first JSON object or array in ``text``: rocm-smi prints warnings before its JSON on some systems."""
    if not isinstance(text, str):
        return None
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                value, _ = decoder.raw_decode(text[i:])
            except ValueError:
                continue
            return value
    return None


def _int(value) -> int | None:
    """An int from an int or a decimal/hex string; None for "N/A", floats, garbage."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        s = value.strip()
        try:
            return int(s, 16) if s.lower().startswith("0x") else int(s)
        except ValueError:
            return None
    return None


def _name(value) -> str | None:
    """A marketing name, or None for "N/A", empty values and bare hex ids (ROCm 4.3 prints "0x1002" as series)."""
    if not isinstance(value, str):
        return None
    s = value.strip()
    if not s or s.upper() in {"N/A", "NA", "UNKNOWN"} or _HEX_ONLY_RE.match(s):
        return None
    return s


def _gfx(value) -> str | None:
    if not isinstance(value, str):
        return None
    s = value.strip().lower()
    return s if _GFX_RE.match(s) and gfx_version_from_target(s) else None


def normalise_bdf(value) -> str | None:
    """PCI address in the canonical lower-case ``dddd:bb:dd.f`` form; None when it is not one."""
    if not isinstance(value, str):
        return None
    s = value.strip()
    if re.match(r"^[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]$", s):
        s = "0000:" + s
    m = _BDF_RE.match(s)
    return s.lower() if m else None


def parse_rocm_smi_json(text: str) -> ToolReport:
    """``rocm-smi ... --json`` -> ToolReport. Unknown shapes give an empty report, never an exception."""
    doc = _json_document(text)
    report = ToolReport()
    if not isinstance(doc, dict):
        return report
    system = doc.get("system")
    if isinstance(system, dict):
        report.driver_version = _version(system.get("Driver version"))
    cards = []
    for key, card in doc.items():
        m = _CARD_RE.match(str(key))
        if m and isinstance(card, dict):
            cards.append((int(m.group(1)), card))
    for number, card in sorted(cards):
        get = {str(k).strip().lower(): v for k, v in card.items()}.get
        name = _name(get("card series")) or _name(get("device name")) or _name(get("card model"))
        report.gpus.append(
            ToolGpu(
                index=number,
                name=name,
                memory_total_bytes=_int(get("vram total memory (b)")),
                memory_used_bytes=_int(get("vram total used memory (b)")),
                gtt_total_bytes=_int(get("gtt total memory (b)")),
                gtt_used_bytes=_int(get("gtt total used memory (b)")),
                gfx_target=_gfx(get("gfx version")),
                pci_bus_id=normalise_bdf(get("pci bus")),
                unique_id=_int(get("unique id")) or None,
                device_id=_int(get("device id")) or _int(get("gpu id")),
                driver_version=report.driver_version,
            )
        )
    return report


def _version(value) -> str | None:
    if isinstance(value, str) and value.strip() and value.strip().upper() != "N/A":
        return value.strip()
    return None


_UNITS = {"B": 1, "KB": 1024, "KIB": 1024, "MB": 1024**2, "MIB": 1024**2, "GB": 1024**3, "GIB": 1024**3}


def _size(value, default_unit: str = "MB") -> int | None:
    """amd-smi sizes: {"value": 16368, "unit": "MB"}, "16368 MB", or a bare number (MB, the CLI's usual unit).

    amd-smi's "MB" is MiB (the amdsmi library reports VRAM in MB from uint32 fields, amdsmi_wrapper.py).
    """
    if isinstance(value, dict):
        number, unit = value.get("value"), value.get("unit") or default_unit
    elif isinstance(value, str):
        parts = value.split()
        number, unit = (parts[0], parts[1]) if len(parts) == 2 else (value, default_unit)
    else:
        number, unit = value, default_unit
    n = _int(number) if not isinstance(number, float) else int(number)
    factor = _UNITS.get(str(unit).strip().upper())
    if n is None or factor is None or n < 0:
        return None
    return n * factor


def parse_amd_smi_json(text: str) -> ToolReport:
    """``amd-smi static --json``: a list of GPUs (ROCm 6.0-6.3) or ``{"gpu_data": [...]}`` (6.4+/7.x)."""
    doc = _json_document(text)
    report = ToolReport()
    if isinstance(doc, dict):
        doc = doc.get("gpu_data")
    if not isinstance(doc, list):
        return report
    for position, entry in enumerate(doc):
        if not isinstance(entry, dict):
            continue
        asic = entry.get("asic") if isinstance(entry.get("asic"), dict) else {}
        bus = entry.get("bus") if isinstance(entry.get("bus"), dict) else {}
        vram = entry.get("vram") if isinstance(entry.get("vram"), dict) else {}
        board = entry.get("board") if isinstance(entry.get("board"), dict) else {}
        driver = entry.get("driver") if isinstance(entry.get("driver"), dict) else {}
        index = _int(entry.get("gpu"))
        drv = _version(driver.get("version"))
        if drv and not report.driver_version:
            report.driver_version = drv
        report.gpus.append(
            ToolGpu(
                index=index if index is not None else position,
                name=_name(asic.get("market_name")) or _name(board.get("product_name")),
                memory_total_bytes=_size(vram.get("size")),
                gfx_target=_gfx(asic.get("target_graphics_version")),
                pci_bus_id=normalise_bdf(bus.get("bdf")),
                device_id=_int(asic.get("device_id")),
                compute_units=_int(asic.get("num_compute_units")),
                driver_version=drv,
                mem_bus_width=_int(vram.get("bit_width")) if not isinstance(vram.get("bit_width"), dict)
                else _int(vram["bit_width"].get("value")),
                mem_type=_version(vram.get("type")),
            )
        )
    return report


# -- sysfs ---------------------------------------------------------------------------------------------------


@dataclass
class _Card:
    """One AMD GPU being assembled from sysfs and tools."""

    pci_bus_id: str | None = None
    device_id: int | None = None
    name: str | None = None
    vram_total: int | None = None
    vram_used: int | None = None
    gtt_total: int | None = None
    gtt_used: int | None = None
    discrete_files: bool = False  # mem_info_vram_vendor / board_info present: a discrete board
    unique_id: int | None = None
    gfx_version: int | None = None
    gfx_target: str | None = None  # from a tool when no KFD version is known
    cores: int | None = None
    mem_bus_width: int | None = None  # bits: KFD mem_banks "width", amd-smi vram bit_width
    mem_clock_max: int | None = None  # MHz: pp_dpm_mclk top level, KFD mem_banks "mem_clk_max"
    mem_type: str | None = None  # amd-smi vram type
    render_minor: int | None = None
    kfd_node: int | None = None
    driver_version: str | None = None
    in_drm: bool = False
    source: str = "sysfs"


_DPM_RE = re.compile(r"^\s*\d+:\s*(\d+)\s*mhz", re.I | re.M)


def top_dpm_clock(text: str) -> int | None:
    """The highest level of an amdgpu ``pp_dpm_*`` file ("0: 96Mhz\n1: 1000Mhz *"), MHz (docs.kernel.org
    gpu/amdgpu/thermal "pp_dpm_sclk pp_dpm_mclk ...")."""
    levels = [int(x) for x in _DPM_RE.findall(text)]
    return max(levels) if levels else None


def _read_int(system: System, path: str) -> int | None:
    line = system.read_first_line(path)
    return _int(line) if line else None


def _drm_cards(system: System, notes: list[str]) -> list[_Card]:
    cards: list[_Card] = []
    for entry in system.listdir(DRM_DIR):
        if not _CARD_RE.match(entry):  # connectors (card0-DP-1) and renderD* nodes are not devices
            continue
        dev = f"{DRM_DIR}/{entry}/device"
        if _read_int(system, f"{dev}/vendor") != AMD_PCI_VENDOR:
            continue
        driver = system.readlink_name(f"{dev}/driver")
        if driver is not None and driver != "amdgpu":
            # The old radeon kernel driver: no KFD (ROCm) and no RADV (Vulkan) on it.
            notes.append(f"amd: {entry} is driven by '{driver}', not amdgpu; neither ROCm nor Vulkan can use it")
            continue
        card = _Card(in_drm=True, device_id=_read_int(system, f"{dev}/device"))
        card.pci_bus_id = normalise_bdf(system.readlink_name(dev))
        if card.pci_bus_id is None:
            for line in (system.read_text(f"{dev}/uevent") or "").splitlines():
                if line.startswith("PCI_SLOT_NAME="):
                    card.pci_bus_id = normalise_bdf(line.split("=", 1)[1])
        card.vram_total = _read_int(system, f"{dev}/mem_info_vram_total")
        card.vram_used = _read_int(system, f"{dev}/mem_info_vram_used")
        card.gtt_total = _read_int(system, f"{dev}/mem_info_gtt_total")
        card.gtt_used = _read_int(system, f"{dev}/mem_info_gtt_used")
        card.discrete_files = system.exists(f"{dev}/mem_info_vram_vendor") or system.exists(f"{dev}/board_info")
        card.mem_clock_max = top_dpm_clock(system.read_text(f"{dev}/pp_dpm_mclk") or "")
        # product_name is the board FRU, present on server cards only (docs.kernel.org amdgpu driver-misc).
        card.name = _name(system.read_first_line(f"{dev}/product_name"))
        # unique_id is hex in DRM sysfs, decimal in the KFD properties (ollama discover/amd_linux.go).
        uid = (system.read_first_line(f"{dev}/unique_id") or "").strip()
        try:
            card.unique_id = int(uid, 16) or None if uid else None
        except ValueError:
            card.unique_id = None
        for name in system.listdir(f"{dev}/drm"):
            if name.startswith("renderD") and name[7:].isdigit():
                card.render_minor = int(name[7:])
        cards.append(card)
    return cards


def _bdf_from_kfd(props: dict[str, int]) -> str | None:
    """KFD ``domain`` + ``location_id`` (bus << 8 | device << 3 | function) -> "dddd:bb:dd.f"."""
    loc = props.get("location_id")
    if not loc:
        return None
    domain = props.get("domain", 0)
    return f"{domain:04x}:{(loc >> 8) & 0xFF:02x}:{(loc >> 3) & 0x1F:02x}.{loc & 0x7}"


def _kfd_nodes(system: System, notes: list[str]) -> tuple[list[_Card], bool]:
    """GPU nodes of the KFD topology in node order (= HIP ordinal order); and whether the topology exists."""
    entries = system.listdir(KFD_NODES_DIR)
    if not entries:
        return [], system.exists(KFD_NODES_DIR)
    gpus: list[_Card] = []
    masked = 0
    for node in sorted((e for e in entries if e.isdigit()), key=int):
        text = system.read_text(f"{KFD_NODES_DIR}/{node}/properties")
        if text is None:
            # A node hidden from this container by the device cgroup answers EPERM (amdkfd kfd_topology.c
            # node_show). The HIP runtime cannot open it either, so it takes no ordinal.
            masked += 1
            continue
        props = parse_kfd_properties(text)
        version = props.get("gfx_target_version", 0)
        if not version:  # CPU nodes have gfx_target_version 0
            continue
        card = _Card(kfd_node=int(node), gfx_version=version)
        card.device_id = props.get("device_id") or None
        card.unique_id = props.get("unique_id") or None
        card.render_minor = props.get("drm_render_minor")
        card.pci_bus_id = _bdf_from_kfd(props)
        if props.get("cu_count"):
            card.cores = props["cu_count"]
        elif props.get("simd_count") and props.get("simd_per_cu"):
            card.cores = props["simd_count"] // props["simd_per_cu"]
        # Memory banks: heap_type 1/2 are the public/private frame buffer (amdkfd kfd_topology.h HSA_MEM_HEAP_TYPE_*);
        # used when no DRM card links.
        fb = 0
        for bank in system.listdir(f"{KFD_NODES_DIR}/{node}/mem_banks"):
            bank_props = parse_kfd_properties(
                system.read_text(f"{KFD_NODES_DIR}/{node}/mem_banks/{bank}/properties") or ""
            )
            if bank_props.get("heap_type") in (1, 2):
                fb += bank_props.get("size_in_bytes", 0)
                card.mem_bus_width = bank_props.get("width") or card.mem_bus_width
                card.mem_clock_max = bank_props.get("mem_clk_max") or card.mem_clock_max
        card.vram_total = fb or None
        gpus.append(card)
    if masked:
        notes.append(f"amd: {masked} KFD topology node(s) could not be read (masked from this container?); skipped")
    return gpus, True


def _link(kfd: _Card, drm_cards: list[_Card]) -> _Card | None:
    """The DRM card of a KFD node: by render minor, else PCI address, else device + unique id (ollama)."""
    for attr in ("render_minor", "pci_bus_id"):
        value = getattr(kfd, attr)
        if value is not None:
            for card in drm_cards:
                if getattr(card, attr) == value:
                    return card
    if kfd.device_id and kfd.unique_id:
        for card in drm_cards:
            if card.device_id == kfd.device_id and card.unique_id == kfd.unique_id:
                return card
    return None


def _merge_kfd(kfd: _Card, drm: _Card) -> _Card:
    fb = kfd.vram_total
    merged = replace(drm, kfd_node=kfd.kfd_node, gfx_version=kfd.gfx_version, cores=kfd.cores)
    merged.unique_id = drm.unique_id or kfd.unique_id
    merged.pci_bus_id = drm.pci_bus_id or kfd.pci_bus_id
    if merged.vram_total is None:
        merged.vram_total = fb
    return merged


def _sysfs(system: System, notes: list[str]) -> tuple[list[_Card], list[_Card], bool]:
    """(ROCm-visible GPUs in HIP order, AMD DRM cards without a KFD node, whether a KFD topology exists)."""
    drm_cards = _drm_cards(system, notes)
    kfd_cards, has_kfd = _kfd_nodes(system, notes)
    ordered: list[_Card] = []
    linked: list[int] = []
    for kfd in kfd_cards:
        drm = _link(kfd, drm_cards)
        if drm is not None:
            linked.append(id(drm))
            ordered.append(_merge_kfd(kfd, drm))
        else:
            ordered.append(kfd)
    rest = [c for c in drm_cards if id(c) not in linked]
    return ordered, rest, has_kfd


# -- libraries and tools -------------------------------------------------------------------------------------


def _load_amdsmi():
    """``import amdsmi`` with its stdout captured; None on any failure (it raises KeyError without the .so)."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            import amdsmi  # noqa: PLC0415 - optional dependency, imported only where it can work
    except Exception:  # noqa: BLE001 - KeyError, OSError, ImportError...
        return None
    return amdsmi


def read_amdsmi(amdsmi) -> ToolReport:
    """Devices from the ``amdsmi`` library (ROCm's Python wrapper); an empty report on any failure.

    ``amdsmi_get_gpu_vram_usage`` gives MB (uint32 fields in amdsmi_wrapper.py); ``target_graphics_version`` is
    "gfx" + hex.
    """
    report = ToolReport()
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        try:
            amdsmi.amdsmi_init(amdsmi.AmdSmiInitFlags.INIT_AMD_GPUS)
        except Exception:  # noqa: BLE001
            return report
        try:
            for i, handle in enumerate(amdsmi.amdsmi_get_processor_handles()):
                gpu = ToolGpu(index=i)
                with contextlib.suppress(Exception):
                    asic = amdsmi.amdsmi_get_gpu_asic_info(handle)
                    gpu.name = _name(asic.get("market_name"))
                    gpu.compute_units = _int(asic.get("num_compute_units"))
                    gpu.device_id = _int(asic.get("device_id"))
                    target = asic.get("target_graphics_version")
                    gpu.gfx_target = _gfx(target if isinstance(target, str) else f"gfx{target:x}")
                with contextlib.suppress(Exception):
                    usage = amdsmi.amdsmi_get_gpu_vram_usage(handle)
                    gpu.memory_total_bytes = _size(usage.get("vram_total"))
                    gpu.memory_used_bytes = _size(usage.get("vram_used"))
                with contextlib.suppress(Exception):
                    gpu.pci_bus_id = normalise_bdf(amdsmi.amdsmi_get_gpu_device_bdf(handle))
                with contextlib.suppress(Exception):
                    drv = amdsmi.amdsmi_get_gpu_driver_info(handle)
                    gpu.driver_version = _version(drv.get("driver_version"))
                    report.driver_version = report.driver_version or gpu.driver_version
                report.gpus.append(gpu)
        except Exception:  # noqa: BLE001
            pass
        finally:
            with contextlib.suppress(Exception):
                amdsmi.amdsmi_shut_down()
    return report


def _amdsmi_report() -> ToolReport:
    module = _load_amdsmi()
    return read_amdsmi(module) if module is not None else ToolReport()


def _run_rocm_smi(system: System) -> ToolReport:
    for argv in (ROCM_SMI_ARGV, ROCM_SMI_ARGV_MINIMAL):
        done = system.run(argv, timeout=TOOL_TIMEOUT_S)
        if done.returncode is None:  # missing or timed out: a retry would fail the same way
            return ToolReport()
        report = parse_rocm_smi_json(done.stdout)
        if report.gpus:
            return report
    return ToolReport()


def _run_amd_smi(system: System) -> ToolReport:
    done = system.run(AMD_SMI_ARGV, timeout=TOOL_TIMEOUT_S)
    return parse_amd_smi_json(done.stdout) if done.returncode is not None else ToolReport()


def _tool_reports(system: System):
    """Tools in order of preference, each run only when asked for (lazily)."""
    if system.live and system.exists("/dev/kfd"):
        # Only on the machine itself: during a replay the library would describe the machine running the replay.
        yield "amdsmi", _amdsmi_report
    if system.which("rocm-smi"):
        yield "rocm-smi", lambda: _run_rocm_smi(system)
    if system.which("amd-smi"):
        yield "amd-smi", lambda: _run_amd_smi(system)


def _card_from_tool(t: ToolGpu, source: str) -> _Card:
    return _Card(
        pci_bus_id=t.pci_bus_id,
        device_id=t.device_id,
        name=t.name,
        vram_total=t.memory_total_bytes,
        vram_used=t.memory_used_bytes,
        gtt_total=t.gtt_total_bytes,
        gtt_used=t.gtt_used_bytes,
        unique_id=t.unique_id,
        gfx_version=gfx_version_from_target(t.gfx_target) if t.gfx_target else None,
        gfx_target=t.gfx_target,
        cores=t.compute_units,
        driver_version=t.driver_version,
        mem_bus_width=t.mem_bus_width,
        mem_type=t.mem_type,
        source=source,
    )


def _enrich(card: _Card, t: ToolGpu) -> None:
    """Fill what sysfs could not tell from a tool; sysfs memory figures win (they are what the kernel holds)."""
    card.name = card.name or t.name
    card.vram_total = card.vram_total if card.vram_total is not None else t.memory_total_bytes
    card.vram_used = card.vram_used if card.vram_used is not None else t.memory_used_bytes
    card.gtt_total = card.gtt_total if card.gtt_total is not None else t.gtt_total_bytes
    card.gtt_used = card.gtt_used if card.gtt_used is not None else t.gtt_used_bytes
    card.unique_id = card.unique_id or t.unique_id
    card.pci_bus_id = card.pci_bus_id or t.pci_bus_id
    card.cores = card.cores or t.compute_units
    card.driver_version = card.driver_version or t.driver_version
    card.mem_bus_width = card.mem_bus_width or t.mem_bus_width
    card.mem_type = card.mem_type or t.mem_type
    if card.gfx_version is None and t.gfx_target:
        card.gfx_version = gfx_version_from_target(t.gfx_target)
        card.gfx_target = t.gfx_target


def _merge_tool(cards: list[_Card], report: ToolReport) -> None:
    """Match tool devices to sysfs cards by PCI address, else by position when the counts agree."""
    unmatched = []
    for t in report.gpus:
        match = next((c for c in cards if t.pci_bus_id and c.pci_bus_id == t.pci_bus_id), None)
        if match is not None:
            _enrich(match, t)
        else:
            unmatched.append(t)
    if unmatched and len(report.gpus) == len(cards) and not any(t.pci_bus_id for t in report.gpus):
        for card, t in zip(cards, report.gpus):
            _enrich(card, t)


# -- visibility ----------------------------------------------------------------------------------------------


def _select(cards: list[_Card], value: str) -> list[_Card]:
    """Apply one ``*_VISIBLE_DEVICES`` list: indices into ``cards`` or ``GPU-<hex unique id>`` UUIDs, in the order
    given. An unparsable or out-of-range entry ends the list (the CUDA rule, which HIP follows)."""
    chosen: list[_Card] = []
    for token in (t.strip() for t in value.split(",")):
        pick = None
        if token.isdigit() and int(token) < len(cards):
            pick = cards[int(token)]
        elif token.upper().startswith("GPU-"):
            uid = _int("0x" + token[4:].replace("-", ""))
            pick = next((c for c in cards if uid is not None and c.unique_id == uid), None)
        if pick is None:
            break
        if not any(c is pick for c in chosen):
            chosen.append(pick)
    return chosen


def _apply_visibility(system: System, cards: list[_Card], notes: list[str]) -> list[_Card]:
    """ROCR_VISIBLE_DEVICES (indices or UUIDs such as ``GPU-DEADBEEFDEADBEEF``) filters in the ROCm runtime, then
    HIP_VISIBLE_DEVICES (indices) picks from what is left (rocm.docs.amd.com "GPU isolation techniques"; ollama
    discover/amd.go honours both). The result is renumbered from 0, as the HIP ordinals the process will see."""
    for var in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        value = system.env.get(var)
        if value is None:
            continue
        if not value.strip():
            # ollama treats an empty value as unset (discover/amd_linux.go); say so rather than guess.
            notes.append(f"amd: {var} is set but empty; ignored")
            continue
        before = len(cards)
        cards = _select(cards, value)
        notes.append(f"amd: {var}={value!r} leaves {len(cards)} of {before} GPU(s) visible")
    return cards


# -- assembling ----------------------------------------------------------------------------------------------


def _is_apu(card: _Card) -> bool:
    if card.discrete_files or card.vram_total is None or card.gtt_total is None:
        return False
    return (
        card.vram_total <= APU_MAX_VRAM
        and card.gtt_total >= APU_MIN_GTT
        and card.gtt_total >= APU_GTT_VRAM_RATIO * card.vram_total
    )


def _mem_total(system: System) -> int | None:
    for line in (system.read_text("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def _rocm_version(system: System) -> str | None:
    """ROCm release from ``$ROCM_PATH/.info/version`` (the file PyTorch's cmake/public/LoadHIP.cmake reads as
    ``.info/version-dev``); /opt/rocm is the default install prefix."""
    roots = [system.env.get("ROCM_PATH"), system.env.get("ROCM_HOME"), "/opt/rocm"]
    for root in filter(None, roots):
        for name in ("version", "version-dev"):
            line = system.read_first_line(f"{root}/.info/{name}")
            if line:
                return line
    return None


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def detect(system: System) -> Found:
    found = Found()
    notes: list[str] = []
    cards: list[_Card] = []
    orphans: list[_Card] = []
    has_kfd = False
    if system.os_name == "linux":
        cards, orphans, has_kfd = _sysfs(system, notes)
    cards, driver_version = _with_tools(system, cards, orphans)
    if not cards and not orphans:
        found.notes = notes  # empty when there is no AMD hardware at all (a radeon-driven card leaves its note)
        return found
    cards = _apply_visibility(system, cards, notes)
    override = (system.env.get("HSA_OVERRIDE_GFX_VERSION") or "").strip()
    meminfo_total = _mem_total(system)
    found.gpus = [_gpu(card, position, position < len(cards), has_kfd, override, meminfo_total, driver_version,
                       notes) for position, card in enumerate(cards + orphans)]
    if driver_version:
        found.drivers["amdgpu"] = driver_version
    rocm = _rocm_version(system)
    if rocm:
        found.drivers["rocm"] = rocm
    found.notes = notes
    return found


def _with_tools(system: System, cards: list[_Card], orphans: list[_Card]) -> tuple[list[_Card], str | None]:
    """The cards completed by the first SMI tool that reports GPUs (only when sysfs found nothing or left a name
    or the driver version unknown), and the amdgpu driver version."""
    everything = cards + orphans
    driver_version = system.read_first_line("/sys/module/amdgpu/version") if everything else None
    if everything and all(c.name is not None for c in everything) and driver_version:
        return cards, driver_version
    for source, fetch in _tool_reports(system):
        report = fetch()
        if not report.gpus:
            continue
        driver_version = driver_version or report.driver_version
        if everything:
            _merge_tool(everything, report)
        else:
            cards = [_card_from_tool(t, source) for t in report.gpus]
        break
    return cards, driver_version


def _target(card: _Card, rocm_visible: bool, label: str, override: str, notes: list[str]
            ) -> tuple[str | None, int | None]:
    """The card's gfx target and version: from KFD, else the PCI device id, then HSA_OVERRIDE_GFX_VERSION."""
    target = gfx_target_from_version(card.gfx_version) if card.gfx_version else card.gfx_target
    if target is None and rocm_visible and card.device_id in DEVICE_GFX:
        target = DEVICE_GFX[card.device_id]
        note = f"amd: gfx target {target} of PCI device id 0x{card.device_id:04x} from the amdgpu device table"
        if note not in notes:
            notes.append(note)
    version = card.gfx_version or (gfx_version_from_target(target) if target else None)
    override_target = gfx_target_from_override(override) if override else None
    if override_target and rocm_visible:
        notes.append(f"amd: HSA_OVERRIDE_GFX_VERSION={override} makes ROCm treat {label} "
                     f"({target or 'unknown target'}) as {override_target}")
        target, version = override_target, gfx_version_from_target(override_target)
    return target, version


def _memory(card: _Card, label: str, meminfo_total: int | None, notes: list[str]) -> tuple[int | None, int | None]:
    """(total, free) bytes the GPU can use."""
    total, free = card.vram_total, None
    if card.vram_total is not None and card.vram_used is not None:
        free = max(card.vram_total - card.vram_used, 0)
    if not _is_apu(card):
        return total, free
    # An APU's GPU allocates from its VRAM carve-out *and* from system RAM mapped through GTT (ROCm docs
    # "AMD RDNA3.5 system optimization": memory is mapped through GART/GTT, not a separate VRAM pool), so
    # what it can use is carve-out + GTT. GTT is backed by the RAM outside the carve-out, so cap it at
    # MemTotal (which excludes the carve-out) as the kernel itself now does ("drm/amdgpu: cap GTT size
    # to physical RAM on APUs").
    gtt = card.gtt_total if meminfo_total is None else min(card.gtt_total, meminfo_total)
    total = card.vram_total + gtt
    if free is not None and card.gtt_used is not None:
        free += max(gtt - card.gtt_used, 0)
    else:
        free = None
    notes.append(f"amd: {label} is an APU sharing system memory: {_gib(card.vram_total)} carve-out + "
                 f"{_gib(gtt)} GTT; older ROCm releases only allocate from the carve-out (ROCm/ROCm#2014)")
    return total, free


def _gpu(card: _Card, position: int, rocm_visible: bool, has_kfd: bool, override: str, meminfo_total: int | None,
         driver_version: str | None, notes: list[str]) -> Gpu:
    label = card.name or (f"AMD GPU 0x{card.device_id:04x}" if card.device_id else "AMD GPU")
    target, version = _target(card, rocm_visible, label, override, notes)
    backend = "rocm"
    if not rocm_visible:
        backend = "vulkan"
        why = "there is no KFD topology (/sys/class/kfd)" if not has_kfd else "it has no KFD topology node"
        notes.append(f"amd: {label}: ROCm cannot use it because {why}; Vulkan may")
    elif version is not None and version < ROCM_MIN_GFX_VERSION:
        backend = "vulkan"
        notes.append(f"amd: {label} is {target}, older than gfx9; ROCm does not support it, Vulkan may")
    total, free = _memory(card, label, meminfo_total, notes)
    return Gpu(index=position, vendor="amd", name=label, backend=backend, memory_total_bytes=total,
               memory_free_bytes=free, unified_memory=_is_apu(card), gfx_target=target,
               driver_version=card.driver_version or driver_version,
               uuid=f"GPU-{card.unique_id:016x}" if card.unique_id else None, pci_bus_id=card.pci_bus_id,
               cores=card.cores, source=card.source, memory_bus_width_bits=card.mem_bus_width,
               memory_clock_max_mhz=card.mem_clock_max, memory_type=card.mem_type)


__all__ = [
    "ToolGpu",
    "ToolReport",
    "detect",
    "gfx_target_from_override",
    "gfx_target_from_version",
    "gfx_version_from_target",
    "normalise_bdf",
    "parse_amd_smi_json",
    "parse_kfd_properties",
    "parse_rocm_smi_json",
    "read_amdsmi",
]
