"""NVIDIA GPUs: NVML first, ``nvidia-smi`` second; MIG instances instead of their parent; CUDA_VISIBLE_DEVICES applied.

Order: NVML through ``nvidia-ml-py`` (``import pynvml``) on a live machine that shows a sign of the driver; otherwise,
or when NVML fails, ``nvidia-smi``: ``--query-gpu`` CSV for the per-GPU facts (it is the only text output with the
compute capability), ``-q -x`` for the CUDA version and MIG instances (``-q`` text when the XML form fails), ``-L`` for
MIG profile names and UUIDs. Every value may be missing or ``[N/A]``: a bad field leaves that field None and never drops
the GPU. Nothing here prints or raises for a bad tool output.

The ``parse_*`` functions are pure (text in, records out) so that recorded outputs can be checked directly.
"""

from __future__ import annotations

import csv
import io
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from advisor.probe.profile import Found
from advisor.probe.profile import Gpu
from advisor.system import DEFAULT_TIMEOUT_S, Completed, System

#: nvidia-smi reports memory in MiB (``nvidia-smi --help-query-gpu``: "memory.total ... [MiB]"; the XML and ``-q``
#: print "8192 MiB"). NVML reports bytes.
MIB = 1024 * 1024

#: Seconds one nvidia-smi call may take (driver initialisation can take seconds when persistence mode
#: is off: NVIDIA "Driver Persistence" docs). Tests lower it to exercise a hanging tool.
SMI_TIMEOUT_S = DEFAULT_TIMEOUT_S

#: ``--query-gpu`` fields asked for (names as in ``nvidia-smi --help-query-gpu``; all present in the recorded
#: driver 590/595/610 captures, tests/data/nvidia/*query-gpu*.csv).
QUERY_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.reserved",
    "memory.used",
    "memory.free",
    "compute_cap",
    "driver_version",
    "pci.bus_id",
    "mig.mode.current",
    "clocks.max.memory",
)
#: Fields old drivers already know; asked for when an error does not say which field was refused. An unknown field
#: fails the whole command (whichllm hardware/nvidia.py _detect_nvidia_gpus_via_smi and llmfit hardware.rs retry
#: with fewer fields).
MINIMAL_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "name",
    "memory.total",
    "memory.free",
    "driver_version",
    "pci.bus_id",
)
#: Without these a row cannot be told apart from the others, so they are never dropped on a retry.
_REQUIRED_FIELDS = frozenset({"index", "uuid", "name"})

#: What nvidia-smi prints for a field it has no value for, without the brackets the CSV adds ("[N/A]",
#: "[Not Supported]", "[Requested functionality has been deprecated]" in the H100 capture,
#: tests/data/nvidia/*h100*).
_NOT_A_VALUE = frozenset(
    {
        "",
        "n/a",
        "not supported",
        "requested functionality has been deprecated",
        "unknown error",
        "insufficient permissions",
        "gpu is lost",
        "no permission",
    }
)

#: The real tool's answer to an unknown ``--query-gpu`` field (exit status 2, "invalid argument or flag").
_INVALID_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')
#: MIG device names follow ``<compute slices>g.<memory>gb``, optionally ``<n>c.`` before it when a GPU instance holds
#: several compute instances and ``+me``-style suffixes (NVIDIA MIG User Guide, "MIG Device Names").
_MIG_PROFILE = re.compile(r"\b((?:\d+c\.)?\d+g\.\d+gb(?:\+\w+)?)\b")
_LIST_GPU = re.compile(r"^GPU (\d+): (.+?) \(UUID: ([^)\s]+)\)\s*$")
_LIST_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: ([^)\s]+)\)\s*$")
_VERSION = re.compile(r"^\d+(?:\.\d+)*")
_NUMBER = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?$", re.IGNORECASE)
_UNIT_BYTES = {"b": 1, "kib": 1024, "kb": 1024, "mib": MIB, "mb": MIB, "gib": 1024 * MIB, "gb": 1024 * MIB}

#: Files that show the NVIDIA kernel driver is loaded (Linux), or that WSL exposes a GPU (``/dev/dxg``) or the
#: Windows NVIDIA driver's user-space library (only the .so.1 name exists there: rust-nvml/nvml-wrapper#51).
_DRIVER_SIGNS = ("/proc/driver/nvidia/version", "/dev/nvidiactl")
_WSL_GPU = "/dev/dxg"
_WSL_NVML = "/usr/lib/wsl/lib/libnvidia-ml.so.1"
#: PCI vendor id of NVIDIA and the display-controller class prefix (PCI class codes 0x0300 VGA, 0x0302 3D).
_PCI_VENDOR_NVIDIA = "0x10de"
_PCI_DISPLAY_CLASSES = ("0x0300", "0x0302")


# -- records: what one source says, before it becomes Gpu entries -------------------------------------------------
@dataclass
class MigRecord:
    """One MIG device (a GPU instance + compute instance) of a parent GPU."""

    #: MIG device index within its parent ("MIG Device Index" in ``-q``, "Device N" in ``-L``).
    index: int | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    profile: str | None = None
    uuid: str | None = None
    name: str | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None


@dataclass
class GpuRecord:
    """One physical GPU as one source describes it; any field may be unknown."""

    index: int | None = None
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    mig_enabled: bool = False
    #: Memory shared with the CPU (NVML memory NotSupported or addressing mode ATS: XuehaiPan/nvitop#208).
    unified_memory: bool = False
    mig: list[MigRecord] = field(default_factory=list)
    #: Maximum memory clock, MHz (clocks.max.memory, -q "Max Clocks / Memory", NVML max NVML_CLOCK_MEM).
    mem_clock_max_mhz: int | None = None
    #: Memory bus width, bits (NVML nvmlDeviceGetMemoryBusWidth; nvidia-smi does not print it).
    mem_bus_width_bits: int | None = None


@dataclass
class SmiLog:
    """What ``nvidia-smi -q`` / ``-q -x`` says: machine-wide versions and the GPUs."""

    driver_version: str | None = None
    cuda_version: str | None = None
    gpus: list[GpuRecord] = field(default_factory=list)


# -- value parsing ------------------------------------------------------------------------------------------------
def _value(raw: str | None) -> str | None:
    """The text of a field, or None for the tool's "no value" forms (with or without brackets)."""
    if raw is None:
        return None
    text = raw.strip()
    inner = text[1:-1].strip() if text.startswith("[") and text.endswith("]") else text
    return None if inner.lower() in _NOT_A_VALUE else text


def _int(raw: str | None) -> int | None:
    text = _value(raw)
    if text is None:
        return None
    try:
        return int(text, 0) if text.lower().startswith("0x") else int(text)
    except ValueError:
        return None


def _bytes(raw: str | None, default_unit: str = "mib") -> int | None:
    """A memory size as bytes; nvidia-smi prints MiB ("8192 MiB", or "8192" with ``nounits``)."""
    text = _value(raw)
    match = _NUMBER.match(text) if text else None
    if not match:
        return None
    unit = (match.group(2) or default_unit).lower()
    return int(float(match.group(1)) * _UNIT_BYTES[unit])


def _version(raw: str | None) -> str | None:
    """ "610.62 [Deprecated; ...]" (driver 610 on Windows, tests/data/nvidia/windows-*__q.idle.txt) -> "610.62"."""
    text = _value(raw)
    match = _VERSION.match(text) if text else None
    return match.group(0) if match else None


def _compute_capability(raw: str | None) -> str | None:
    text = _value(raw)
    return text if text and re.fullmatch(r"\d+\.\d+", text) else None


def _mig_profile(name: str | None) -> str | None:
    match = _MIG_PROFILE.search(name or "")
    return match.group(1) if match else None


# -- nvidia-smi outputs -------------------------------------------------------------------------------------------
def _mhz(value: object) -> int | None:
    """ "2619 MHz" / "2619" -> 2619; N/A and the like -> None."""
    match = re.match(r"^\s*(\d+)(?:\s*MHz)?\s*$", str(value or ""), re.I)
    return int(match.group(1)) if match and int(match.group(1)) > 0 else None


def parse_query_csv(text: str) -> list[GpuRecord]:
    """Rows of ``nvidia-smi --query-gpu=... --format=csv[,nounits]`` (with its header line) as records.

    The header names the columns ("memory.total [MiB]"), so any field list parses the same way. Unknown columns
    are ignored; a row with the wrong number of values is skipped.
    """
    rows = [row for row in csv.reader(io.StringIO(text), skipinitialspace=True) if row]
    if not rows:
        return []
    header = [re.sub(r"\s*\[.*\]$", "", column).strip() for column in rows[0]]
    if not _REQUIRED_FIELDS & set(header):
        return []
    records = []
    for row in rows[1:]:
        if len(row) != len(header):
            continue
        values = dict(zip(header, row, strict=True))
        records.append(
            GpuRecord(
                index=_int(values.get("index")),
                name=_value(values.get("name")),
                uuid=_value(values.get("uuid")),
                pci_bus_id=_value(values.get("pci.bus_id")),
                total_bytes=_bytes(values.get("memory.total")),
                free_bytes=_bytes(values.get("memory.free")),
                compute_capability=_compute_capability(values.get("compute_cap")),
                driver_version=_version(values.get("driver_version")),
                mig_enabled=(_value(values.get("mig.mode.current")) or "").lower() == "enabled",
                mem_clock_max_mhz=_mhz(values.get("clocks.max.memory")),
            )
        )
    return records


def parse_xml(text: str) -> SmiLog | None:
    """``nvidia-smi -q -x`` (DTD v10..v13); None when the text is not that XML."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    if root.tag != "nvidia_smi_log":
        return None
    log = SmiLog(
        driver_version=_version(root.findtext("driver_version") or root.findtext("kmd_version")),
        cuda_version=_version(root.findtext("cuda_version") or root.findtext("cuda_umd_version")),
    )
    for position, gpu in enumerate(root.findall("gpu")):
        mig = [
            MigRecord(
                index=_int(device.findtext("index")),
                gpu_instance_id=_int(device.findtext("gpu_instance_id")),
                compute_instance_id=_int(device.findtext("compute_instance_id")),
                uuid=_value(device.findtext("uuid")),
                total_bytes=_bytes(device.findtext("fb_memory_usage/total")),
                free_bytes=_bytes(device.findtext("fb_memory_usage/free")),
            )
            for device in gpu.findall("mig_devices/mig_device")
        ]
        log.gpus.append(
            GpuRecord(
                # -q lists the GPUs in nvidia-smi index order; the XML has no index element.
                index=position,
                name=_value(gpu.findtext("product_name")),
                uuid=_value(gpu.findtext("uuid")),
                pci_bus_id=_value(gpu.findtext("pci/pci_bus_id")) or _value(gpu.get("id")),
                total_bytes=_bytes(gpu.findtext("fb_memory_usage/total")),
                free_bytes=_bytes(gpu.findtext("fb_memory_usage/free")),
                mig_enabled=(_value(gpu.findtext("mig_mode/current_mig")) or "").lower() == "enabled",
                unified_memory=(_value(gpu.findtext("addressing_mode")) or "").upper() == "ATS",
                mig=mig,
                mem_clock_max_mhz=_mhz(gpu.findtext("max_clocks/mem_clock")),
            )
        )
    return log


@dataclass
class _Node:
    key: str
    value: str | None
    children: list[_Node] = field(default_factory=list)

    def child(self, key: str) -> _Node | None:
        return next((c for c in self.children if c.key == key), None)

    def text(self, *path: str) -> str | None:
        node: _Node | None = self
        for key in path:
            node = node.child(key) if node else None
        return node.value if node else None


def _q_tree(text: str) -> _Node:
    """The indented ``Key : value`` / section lines of ``nvidia-smi -q`` as a tree."""
    root = _Node("", None)
    stack: list[tuple[int, _Node]] = [(-1, root)]
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("=", "#")):
            continue
        indent = len(line) - len(line.lstrip())
        # "Key    : value"; a section line ("MIG Device", "GPU 00000000:00:09.0") has no " :".
        match = re.match(r"^(.*?)\s+:(?:\s+(.*))?$", stripped)
        node = _Node(match.group(1), match.group(2) or "") if match else _Node(stripped, None)
        while stack[-1][0] >= indent:
            stack.pop()
        stack[-1][1].children.append(node)
        stack.append((indent, node))
    return root


def parse_q(text: str) -> SmiLog:
    """``nvidia-smi -q`` (the text form of ``-q -x``), for drivers or captures where the XML is not available."""
    root = _q_tree(text)
    log = SmiLog(
        driver_version=_version(root.text("Driver Version") or root.text("KMD Version")),
        cuda_version=_version(root.text("CUDA Version") or root.text("CUDA UMD Version")),
    )
    sections = [n for n in root.children if n.value is None and n.key.startswith("GPU ")]
    for position, gpu in enumerate(sections):
        mig = []
        for device in (c for c in gpu.children if c.key == "MIG Device"):
            memory = device.child("Shared FB Memory Usage") or device.child("FB Memory Usage")
            mig.append(
                MigRecord(
                    index=_int(device.text("Index")),
                    gpu_instance_id=_int(device.text("GPU Instance ID")),
                    compute_instance_id=_int(device.text("Compute Instance ID")),
                    total_bytes=_bytes(memory.text("Total")) if memory else None,
                    free_bytes=_bytes(memory.text("Free")) if memory else None,
                )
            )
        log.gpus.append(
            GpuRecord(
                index=position,
                name=_value(gpu.text("Product Name")),
                uuid=_value(gpu.text("GPU UUID")),
                pci_bus_id=_value(gpu.text("PCI", "Bus Id")) or _value(gpu.key.removeprefix("GPU ")),
                total_bytes=_bytes(gpu.text("FB Memory Usage", "Total")),
                free_bytes=_bytes(gpu.text("FB Memory Usage", "Free")),
                mig_enabled=(_value(gpu.text("MIG Mode", "Current")) or "").lower() == "enabled",
                unified_memory=(_value(gpu.text("Addressing Mode")) or "").upper() == "ATS",
                mem_clock_max_mhz=_mhz(gpu.text("Max Clocks", "Memory")),
                mig=mig,
            )
        )
    return log


def parse_list(text: str) -> list[GpuRecord]:
    """``nvidia-smi -L``: "GPU 0: NAME (UUID: GPU-...)" and indented "MIG 3g.40gb Device 0: (UUID: MIG-...)"."""
    records: list[GpuRecord] = []
    for line in text.splitlines():
        if gpu := _LIST_GPU.match(line):
            records.append(GpuRecord(index=int(gpu.group(1)), name=gpu.group(2).strip(), uuid=gpu.group(3)))
        elif (mig := _LIST_MIG.match(line)) and records:
            records[-1].mig.append(MigRecord(index=int(mig.group(2)), profile=mig.group(1), uuid=mig.group(3)))
    return records


# -- merging what several outputs say -----------------------------------------------------------------------------
def _match(record: GpuRecord, position: int, others: Sequence[GpuRecord]) -> GpuRecord | None:
    """The same GPU in another output: by PCI bus id, else nvidia-smi index, else position.

    Not by UUID first: recordings (and cloned VMs) can show the same UUID twice (tests/data/nvidia dual 2080 XML).
    """
    if record.pci_bus_id:
        for other in others:
            if other.pci_bus_id and other.pci_bus_id.lower() == record.pci_bus_id.lower():
                return other
    if record.index is not None:
        for other in others:
            if other.index == record.index:
                return other
    return others[position] if position < len(others) else None


def _fill(record: GpuRecord, other: GpuRecord) -> None:
    """Take from ``other`` what ``record`` does not know."""
    for name in ("name", "uuid", "pci_bus_id", "total_bytes", "free_bytes", "compute_capability", "driver_version",
                 "mem_clock_max_mhz", "mem_bus_width_bits"):
        if getattr(record, name) is None:
            setattr(record, name, getattr(other, name))
    record.mig_enabled = record.mig_enabled or other.mig_enabled
    record.unified_memory = record.unified_memory or other.unified_memory
    if not record.mig:
        record.mig = [replace(m) for m in other.mig]
        return
    for position, mig in enumerate(record.mig):
        same = next((m for m in other.mig if m.index is not None and m.index == mig.index), None)
        if same is None and mig.index is None and position < len(other.mig):
            same = other.mig[position]
        if same is not None:
            for name in (
                "gpu_instance_id",
                "compute_instance_id",
                "profile",
                "uuid",
                "name",
                "total_bytes",
                "free_bytes",
            ):
                if getattr(mig, name) is None:
                    setattr(mig, name, getattr(same, name))


def merge(base: list[GpuRecord], *others: Sequence[GpuRecord]) -> list[GpuRecord]:
    """``base`` completed from ``others`` (in order of trust)."""
    merged = [replace(r, mig=[replace(m) for m in r.mig]) for r in base]
    for position, record in enumerate(merged):
        for source in others:
            if (other := _match(record, position, source)) is not None:
                _fill(record, other)
    return merged


# -- NVML ---------------------------------------------------------------------------------------------------------
def _load_nvml() -> Any:
    """Import nvidia-ml-py's ``pynvml`` module; raises ImportError when it is not installed. Tests replace this."""
    with warnings.catch_warnings():
        # The deprecated `pynvml` distribution installs an import hook that warns on `import pynvml`
        # ("The pynvml package is deprecated. Please install nvidia-ml-py instead"; pynvml 13's _pynvml_redirector.pth).
        warnings.simplefilter("ignore", FutureWarning)
        import pynvml  # noqa: PLC0415 - imported only when NVML is worth asking

    return pynvml


def _str(value: Any) -> str | None:
    """NVML strings: str in current bindings, bytes in older ones."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return _value(value) if isinstance(value, str) else None


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _try(fn: Callable[..., Any] | None, *args: Any, **kwargs: Any) -> Any:
    """One NVML query; None when the binding lacks it or the driver refuses it (one failing field must not drop
    the GPU: XuehaiPan/nvitop nvitop/api/libnvml.py nvmlQuery)."""
    if fn is None:
        return None
    try:
        return fn(*args, **kwargs)
    except Exception:  # noqa: BLE001 - NVMLError subclasses, and TypeError/AttributeError from old bindings
        return None


def _is_not_supported(nvml: Any, exc: BaseException) -> bool:
    return getattr(exc, "value", None) == getattr(nvml, "NVML_ERROR_NOT_SUPPORTED", 3)


def _nvml_memory(nvml: Any, handle: Any) -> tuple[int | None, int | None, bool]:
    """(total, free, unified). v2 first: its ``free`` matches nvidia-smi; v1 on drivers < 515 (wookayin/gpustat
    gpustat/nvml.py; rust-nvml/nvml-wrapper#57).

    NotSupported, or a total of 0, means memory shared with the CPU (GB10: XuehaiPan/nvitop#208, nvitop api/device.py
    memory_info).
    """
    get = getattr(nvml, "nvmlDeviceGetMemoryInfo", None)
    if get is None:
        return None, None, False
    try:
        info = get(handle, version=nvml.nvmlMemory_v2) if hasattr(nvml, "nvmlMemory_v2") else get(handle)
    except Exception as exc:  # noqa: BLE001
        if _is_not_supported(nvml, exc):
            return None, None, True
        try:
            info = get(handle)
        except Exception as exc_v1:  # noqa: BLE001
            return None, None, _is_not_supported(nvml, exc_v1)
    total, free = getattr(info, "total", None), getattr(info, "free", None)
    if not isinstance(total, int) or total <= 0:
        return None, None, True
    return total, free if isinstance(free, int) else None, False


def _nvml_device(nvml: Any, handle: Any) -> tuple[str | None, str | None, int | None, int | None, bool]:
    """(name, uuid, total, free, unified) of a GPU or MIG handle."""
    total, free, unified = _nvml_memory(nvml, handle)
    name = _str(_try(getattr(nvml, "nvmlDeviceGetName", None), handle))
    uuid = _str(_try(getattr(nvml, "nvmlDeviceGetUUID", None), handle))
    return name, uuid, total, free, unified


def _nvml_mig(nvml: Any, handle: Any) -> list[MigRecord]:
    count = _try(getattr(nvml, "nvmlDeviceGetMaxMigDeviceCount", None), handle)
    devices = []
    for slot in range(count if isinstance(count, int) else 0):
        # Empty slots raise an NVMLError: skip them.
        mig = _try(getattr(nvml, "nvmlDeviceGetMigDeviceHandleByIndex", None), handle, slot)
        if mig is None:
            continue
        name, uuid, total, free, _ = _nvml_device(nvml, mig)
        devices.append(
            MigRecord(
                index=slot,
                gpu_instance_id=_try(getattr(nvml, "nvmlDeviceGetGpuInstanceId", None), mig),
                compute_instance_id=_try(getattr(nvml, "nvmlDeviceGetComputeInstanceId", None), mig),
                # NVML names a MIG device after its profile ("... MIG 3g.40gb"); otherwise the profile stays None.
                profile=_mig_profile(name),
                uuid=uuid,
                name=name,
                total_bytes=total,
                free_bytes=free,
            )
        )
    return devices


def _cuda_version(value: Any) -> str | None:
    """NVML's CUDA driver version integer, 13010 -> "13.1", nvidia-smi's "CUDA Version"."""
    return f"{value // 1000}.{(value % 1000) // 10}" if isinstance(value, int) and value > 0 else None


def read_nvml(nvml: Any) -> tuple[list[GpuRecord], str | None, str | None, list[str]]:
    """(records, driver version, CUDA version, notes) from an NVML binding; raises when NVML cannot start."""
    nvml.nvmlInit()
    try:
        driver = _version(_str(_try(getattr(nvml, "nvmlSystemGetDriverVersion", None))))
        cuda = _cuda_version(_try(getattr(nvml, "nvmlSystemGetCudaDriverVersion_v2", None))) or _cuda_version(
            _try(getattr(nvml, "nvmlSystemGetCudaDriverVersion", None))
        )
        records: list[GpuRecord] = []
        notes: list[str] = []
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            except Exception as exc:  # noqa: BLE001 - one lost GPU must not hide the others
                notes.append(f"nvidia: GPU {index} could not be opened through NVML ({_describe(exc)})")
                continue
            name, uuid, total, free, unified = _nvml_device(nvml, handle)
            pci = _try(getattr(nvml, "nvmlDeviceGetPciInfo_v3", None), handle) or _try(
                getattr(nvml, "nvmlDeviceGetPciInfo", None), handle
            )
            capability = _try(getattr(nvml, "nvmlDeviceGetCudaComputeCapability", None), handle)
            mode = _try(getattr(nvml, "nvmlDeviceGetMigMode", None), handle)  # NotSupported -> not a MIG GPU
            mig_enabled = bool(mode) and mode[0] == getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)
            records.append(
                GpuRecord(
                    index=index,
                    name=name,
                    uuid=uuid,
                    pci_bus_id=_str(getattr(pci, "busId", None)),
                    total_bytes=total,
                    free_bytes=free,
                    compute_capability=(
                        f"{capability[0]}.{capability[1]}"
                        if isinstance(capability, tuple | list) and len(capability) == 2
                        else None
                    ),
                    driver_version=driver,
                    mig_enabled=mig_enabled,
                    unified_memory=unified,
                    mig=_nvml_mig(nvml, handle) if mig_enabled else [],
                    # NVML_CLOCK_MEM = 2 (nvml.h nvmlClockType_t)
                    mem_clock_max_mhz=_positive(_try(getattr(nvml, "nvmlDeviceGetMaxClockInfo", None), handle,
                                                     getattr(nvml, "NVML_CLOCK_MEM", 2))),
                    mem_bus_width_bits=_positive(_try(getattr(nvml, "nvmlDeviceGetMemoryBusWidth", None), handle)),
                )
            )
        return records, driver, cuda, notes
    finally:
        _try(getattr(nvml, "nvmlShutdown", None))


def _preload_wsl_nvml(system: System) -> None:
    """In WSL the library lives in /usr/lib/wsl/lib, which the loader may not search; loading it by path first lets
    nvidia-ml-py's ``CDLL("libnvidia-ml.so.1")`` resolve to it (rust-nvml/nvml-wrapper#51)."""
    if not system.exists(_WSL_NVML):
        return
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL(str(system.path(_WSL_NVML)))
    except OSError:
        pass


# -- nvidia-smi ---------------------------------------------------------------------------------------------------
@dataclass
class _Smi:
    """Runs nvidia-smi and remembers why it failed; after a timeout it is not asked again (each call would wait)."""

    system: System
    failure: str | None = None
    hung: bool = False

    def run(self, *args: str) -> str | None:
        if self.hung:
            return None
        done: Completed = self.system.run(("nvidia-smi", *args), timeout=SMI_TIMEOUT_S)
        if done.returncode is None:
            self.hung = True
            self.failure = done.stderr.strip() or "nvidia-smi did not answer"
            return None
        if not done.ok:
            message = _first_line(done.stdout) or _first_line(done.stderr)
            self.failure = f"nvidia-smi {' '.join(args[:1])} exited {done.returncode}" + (
                f": {message}" if message else ""
            )
            return None
        return done.stdout

    def query(self) -> list[GpuRecord]:
        fields = list(QUERY_FIELDS)
        tried_minimal = False
        for _ in range(len(QUERY_FIELDS) + 1):
            done = self.system.run(
                ("nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,nounits"), timeout=SMI_TIMEOUT_S
            )
            if done.returncode is None:
                self.hung = True
                self.failure = done.stderr.strip() or "nvidia-smi did not answer"
                return []
            if done.ok:
                return parse_query_csv(done.stdout)
            output = f"{done.stdout}\n{done.stderr}"
            refused = _INVALID_FIELD.search(output)
            self.failure = f"nvidia-smi --query-gpu exited {done.returncode}: {_first_line(output) or '(no output)'}"
            if refused and refused.group(1) in fields and refused.group(1) not in _REQUIRED_FIELDS:
                fields.remove(refused.group(1))  # an older driver: ask again without that field
            elif (refused or "not a valid field" in output) and not tried_minimal:
                fields, tried_minimal = list(MINIMAL_FIELDS), True
            else:
                return []
        return []


def read_smi(system: System) -> tuple[list[GpuRecord], str | None, str | None, str | None]:
    """(records, driver version, CUDA version, why nothing was found) from nvidia-smi on PATH."""
    if system.which("nvidia-smi") is None:
        return [], None, None, None
    smi = _Smi(system)
    table = smi.query()
    log: SmiLog | None = None
    if (xml := smi.run("-q", "-x")) is not None:
        log = parse_xml(xml)
    if log is None and (text := smi.run("-q")) is not None:
        log = parse_q(text)
    log = log or SmiLog()
    listing: list[GpuRecord] = []
    if any(r.mig_enabled for r in [*table, *log.gpus]) and (text := smi.run("-L")) is not None:
        listing = parse_list(text)
    records = merge(table or log.gpus, log.gpus, listing)
    driver = next((r.driver_version for r in records if r.driver_version), None) or log.driver_version
    why = None if records else (smi.failure or "nvidia-smi listed no GPU")
    return records, driver, log.cuda_version, why


# -- from records to Gpu entries ----------------------------------------------------------------------------------
@dataclass
class _Entry:
    gpu: Gpu
    parent_index: int
    parent_uuid: str | None
    mig: MigRecord | None = None


def _entries(records: Iterable[GpuRecord], source: str, driver: str | None) -> tuple[list[_Entry], list[str]]:
    """One entry per usable device: the GPU itself, or each of its MIG instances when MIG is on."""
    entries: list[_Entry] = []
    notes: list[str] = []
    ordered = sorted(records, key=lambda r: (r.index is None, r.index if r.index is not None else 0))
    for position, record in enumerate(ordered):
        parent_index = record.index if record.index is not None else position
        name = record.name or "NVIDIA GPU"
        whole = Gpu(
            index=parent_index,
            vendor="nvidia",
            name=name,
            backend="cuda",
            memory_total_bytes=record.total_bytes,
            memory_free_bytes=record.free_bytes,
            unified_memory=record.unified_memory and record.total_bytes is None,
            compute_capability=record.compute_capability,
            driver_version=record.driver_version or driver,
            uuid=record.uuid,
            pci_bus_id=record.pci_bus_id,
            source=source,
            memory_bus_width_bits=record.mem_bus_width_bits,
            memory_clock_max_mhz=record.mem_clock_max_mhz,
        )
        if not record.mig_enabled:
            entries.append(_Entry(whole, parent_index, record.uuid))
            continue
        if not record.mig:
            notes.append(f"nvidia: GPU {parent_index} ({name}) is in MIG mode but no MIG instance was found")
            continue
        for mig in record.mig:
            if mig.name and "MIG" in mig.name:
                mig_name = mig.name
            elif mig.profile:
                mig_name = f"{name} MIG {mig.profile}"
            else:
                mig_name = f"{name} MIG device {mig.index if mig.index is not None else '?'}"
            gpu = replace(
                whole,
                name=mig_name,
                memory_total_bytes=mig.total_bytes,
                memory_free_bytes=mig.free_bytes,
                unified_memory=False,
                uuid=mig.uuid,
                mig_profile=mig.profile,
                mig_parent_index=parent_index,
            )
            entries.append(_Entry(gpu, parent_index, record.uuid, mig))
    return entries, notes


def _select(entries: list[_Entry], token: str) -> list[_Entry] | None:
    """Entries named by one CUDA_VISIBLE_DEVICES item, or None when it names nothing (CUDA then stops reading)."""
    token = token.strip()
    if re.fullmatch(r"\d+", token):
        chosen = [e for e in entries if e.parent_index == int(token)]
    elif token.upper().startswith("MIG-GPU-") and "/" in token:
        # Pre-R470 form MIG-<GPU-UUID>/<GPU instance id>/<compute instance id> (CUDA Programming Guide, "CUDA
        # Environment Variables").
        parent, _, rest = token[4:].partition("/")
        gi, _, ci = rest.partition("/")
        chosen = [
            e
            for e in entries
            if e.mig
            and (e.parent_uuid or "").lower() == parent.lower()
            and str(e.mig.gpu_instance_id) == gi
            and (not ci or str(e.mig.compute_instance_id) == ci)
        ]
    elif token.upper().startswith("MIG-"):
        chosen = [e for e in entries if e.mig and (e.gpu.uuid or "").lower().startswith(token.lower())]
    elif token.upper().startswith("GPU-"):
        parents = {e.parent_uuid for e in entries if (e.parent_uuid or "").lower().startswith(token.lower())}
        # A UUID prefix must name exactly one GPU.
        chosen = [e for e in entries if len(parents) == 1 and e.parent_uuid in parents]
    else:
        chosen = []
    return chosen or None


def apply_visible_devices(entries: list[_Entry], value: str | None) -> tuple[list[_Entry], str | None]:
    """Keep what CUDA_VISIBLE_DEVICES lets a CUDA process see, in its order; a note when that changes the list.

    CUDA Programming Guide, "CUDA Environment Variables": a comma-separated list of indices or (prefixes of) GPU-/MIG-
    UUIDs; devices are enumerated in the list's order; an invalid item hides it and everything after it (so "" and
    "-1" hide all). NVML and nvidia-smi ignore the variable (ramalama common.py check_nvidia applies
    it itself), so it is applied here.
    """
    if value is None:
        return entries, None
    visible: list[_Entry] = []
    for token in value.split(","):
        chosen = _select(entries, token)
        if chosen is None:
            break
        visible += [e for e in chosen if all(e is not v for v in visible)]
    if [id(e) for e in visible] == [id(e) for e in entries]:
        return entries, None
    return (
        visible,
        f"nvidia: CUDA_VISIBLE_DEVICES={value!r} leaves {len(visible)} of {len(entries)} NVIDIA devices visible",
    )


def _mig_notes(entries: list[_Entry]) -> list[str]:
    """A CUDA process enumerates a single MIG device (NVIDIA MIG User Guide, "CUDA Device Enumeration")."""
    notes = []
    for parent in dict.fromkeys(e.parent_index for e in entries if e.mig):
        count = sum(1 for e in entries if e.mig and e.parent_index == parent)
        if count > 1:
            notes.append(
                f"nvidia: GPU {parent} is in MIG mode and listed as its {count} MIG instances; one CUDA process "
                "uses one of them (choose it with CUDA_VISIBLE_DEVICES=MIG-<uuid>)"
            )
    return notes


# -- signs of NVIDIA hardware ---------------------------------------------------------------------------------------
def _is_wsl(system: System) -> bool:
    """WSL kernels carry "microsoft" in their release string (llmfit hardware.rs is_running_in_wsl)."""
    return "microsoft" in (system.read_text("/proc/sys/kernel/osrelease") or "").lower()


def _driver_sign(system: System) -> str | None:
    """A file showing the NVIDIA driver (Linux) or its WSL library; None when there is none."""
    return next((p for p in (*_DRIVER_SIGNS, _WSL_NVML) if system.exists(p)), None)


def _pci_sign(system: System) -> str | None:
    """An NVIDIA display controller on the PCI bus (sysfs), found even when no driver is loaded."""
    for device in system.listdir("/sys/bus/pci/devices"):
        base = f"/sys/bus/pci/devices/{device}"
        if (system.read_first_line(f"{base}/vendor") or "").lower() == _PCI_VENDOR_NVIDIA and (
            system.read_first_line(f"{base}/class") or ""
        ).lower().startswith(_PCI_DISPLAY_CLASSES):
            return f"NVIDIA PCI device {device}"
    return None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# -- the detector -------------------------------------------------------------------------------------------------
def detect(system: System) -> Found:
    found = Found()
    wsl = system.os_name == "linux" and _is_wsl(system)
    if wsl:
        found.environment.append("wsl")

    failures: list[str] = []
    records: list[GpuRecord] = []
    driver = cuda = None
    source = "nvml"
    sign = _driver_sign(system) if system.os_name == "linux" else None
    # NVML would describe the machine running a replay, so it is asked only on the live machine, and on Linux only
    # when a driver shows (Windows: nvml.dll is found by nvidia-ml-py's _LoadNvmlLibrary).
    if system.live and (system.os_name == "windows" or sign or (wsl and system.exists(_WSL_GPU))):
        try:
            if wsl:
                _preload_wsl_nvml(system)
            records, driver, cuda, nvml_notes = read_nvml(_load_nvml())
            found.notes += nvml_notes
        except Exception as exc:  # noqa: BLE001 - ImportError, NVMLError_LibraryNotFound/DriverNotLoaded, ...
            failures.append(f"NVML: {_describe(exc)}")
            records = []

    if not records:
        source = "nvidia-smi"
        try:
            records, driver, cuda, why = read_smi(system)
        except Exception as exc:  # noqa: BLE001 - a parser bug must not take the probe down
            records, why = [], f"nvidia-smi output not understood ({_describe(exc)})"
        if why:
            failures.append(why)

    if driver:
        found.drivers["nvidia"] = driver
    if cuda:
        found.drivers["cuda_driver"] = cuda

    if not records:
        # Silence on a machine without NVIDIA hardware; a note when something NVIDIA is there but unreadable.
        evidence = sign or (_pci_sign(system) if system.os_name == "linux" else None)
        if evidence or (failures and system.which("nvidia-smi")):
            why = "; ".join(failures) or f"{evidence} but no driver answered"
            found.notes.append(f"nvidia: no usable NVIDIA GPU ({why})")
        return found

    entries, entry_notes = _entries(records, source, driver)
    found.notes += entry_notes
    entries, visible_note = apply_visible_devices(entries, system.env.get("CUDA_VISIBLE_DEVICES"))
    if visible_note:
        found.notes.append(visible_note)
    found.notes += _mig_notes(entries)
    unknown_cc = sorted({e.parent_index for e in entries if e.gpu.compute_capability is None})
    if unknown_cc:
        # Not guessed from the name: only NVML and --query-gpu=compute_cap report it, `-q`/`-q -x` do not.
        found.notes.append(f"nvidia: compute capability unknown for GPU {', '.join(map(str, unknown_cc))}")
    # `index` is the CUDA ordinal: the position among the devices a CUDA process sees.
    found.gpus = [replace(e.gpu, index=position) for position, e in enumerate(entries)]
    return found
