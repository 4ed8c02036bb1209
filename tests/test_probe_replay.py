"""Whole recorded machines through the installed `advisor probe --json`: sysroot + fake tools on PATH.

The detector tests cover every recording; these check that the pieces meet in the real command for one machine
per vendor, with expectations read from the recordings.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.replay import DATA, Machine

ADVISOR = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"
MIB = 1 << 20


def probe_json(machine: Machine) -> dict:
    done = subprocess.run([ADVISOR, "probe", "--json"], capture_output=True, text=True, env=machine.environ(),
                          timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return json.loads(done.stdout)


def test_nvidia_workstation(machine):
    """RTX 4080 SUPER box: an EPYC-less desktop CPU recording, the GPU from the recorded nvidia-smi."""
    prefix = DATA / "nvidia" / "linux-x86_64__nvidia-geforce-rtx-4080-super__595.71.05__"
    machine.copy("/proc/cpuinfo", DATA / "cpu" / "linux-ubuntu24.04-alderlake")
    machine.file("/proc/meminfo", "MemTotal: 65536000 kB\nMemAvailable: 60000000 kB\n")
    machine.file("/proc/driver/nvidia/version", "NVRM version: NVIDIA UNIX x86_64 Kernel Module  595.71.05\n")
    machine.tool("nvidia-smi", "nvidia_smi.py", NVSMI_QUERY_CSV=f"{prefix}query-gpu.idle.csv",
                 NVSMI_Q=f"{prefix}q.idle.txt", NVSMI_L=f"{prefix}nvidia-smi-L.txt")  # fmt: skip
    profile = probe_json(machine)
    rows = list(csv.reader(Path(f"{prefix}query-gpu.idle.csv").read_text().splitlines()[1:2], skipinitialspace=True))
    header = [h.strip() for h in Path(f"{prefix}query-gpu.idle.csv").read_text().splitlines()[0].split(",")]
    recorded = dict(zip(header, rows[0], strict=False))
    (gpu,) = profile["gpus"]
    assert gpu["name"] == recorded["name"]
    assert gpu["memory_total_bytes"] == int(recorded["memory.total [MiB]"].split()[0]) * MIB
    assert gpu["compute_capability"] == recorded["compute_cap"]
    assert gpu["backend"] == "cuda" and gpu["driver_version"] == recorded["driver_version"]
    assert profile["drivers"]["nvidia"] == recorded["driver_version"]
    assert profile["cpu"]["model"].startswith("Intel(R) Core(TM) Ultra 9 285")


def test_amd_server(machine):
    """Four-to-six MI100s known only from rocm-smi (no sysfs recorded): names and VRAM from the recording."""
    recording = DATA / "amd" / "telegraf__mi100_rocm571.json"
    machine.copy("/proc/cpuinfo", DATA / "cpu" / "linux-rhel7-zen")
    machine.file("/proc/meminfo", "MemTotal: 527000000 kB\nMemAvailable: 500000000 kB\n")
    machine.tool("rocm-smi", "rocm_smi.py", ROCM_SMI_JSON=recording)
    profile = probe_json(machine)
    cards = {k: v for k, v in json.loads(recording.read_text()).items() if k.startswith("card")}
    assert len(profile["gpus"]) == len(cards)
    for gpu, card in zip(profile["gpus"], cards.values(), strict=True):
        assert gpu["vendor"] == "amd" and gpu["backend"] == "rocm"
        assert gpu["memory_total_bytes"] == int(card["VRAM Total Memory (B)"])


def test_apple_silicon_mac(machine):
    """An M2 Mac: CPU, memory and the Metal GPU budget from one recorded sysctl dump."""
    recording = DATA / "cpu" / "darwin-monterey-m2"
    machine.os_name, machine.arch = "darwin", "aarch64"
    machine.tool("sysctl", "sysctl.py", SYSCTL_RECORDING=recording)
    profile = probe_json(machine)
    text = recording.read_text()
    memsize = int(re.search(r"^hw\.memsize: (\d+)", text, re.M).group(1))
    brand = re.search(r"^machdep\.cpu\.brand_string: (.+)$", text, re.M).group(1).strip()
    assert profile["os"] == "darwin" and profile["memory"]["total_bytes"] == memsize
    (gpu,) = profile["gpus"]
    assert gpu["vendor"] == "apple" and gpu["backend"] == "metal" and gpu["unified_memory"] is True
    assert brand in gpu["name"]
    # Without Metal to ask, the working set is 2/3 of RAM below 64 GiB (llama.cpp's printed values in
    # abetlen/llama-cpp-python#687 and ollama/ollama#434).
    assert gpu["memory_total_bytes"] == memsize * 2 // 3
    assert {"neon", "dotprod", "i8mm", "bf16"} <= set(profile["cpu"]["features"])


def test_machine_with_broken_tools_still_answers(machine):
    """Every GPU tool present and broken: the profile still comes back, with notes and no GPU."""
    machine.copy("/proc/cpuinfo", DATA / "cpu" / "own-sandbox-linux-kvm-epyc-zen2")
    machine.file("/proc/driver/nvidia/version", "NVRM version: 595.71.05\n")
    machine.tool("nvidia-smi", "nvidia_smi.py", NVSMI_BEHAVIOUR="fail")
    machine.tool("rocm-smi", "echo_args.py", FAKE_OUTPUT="{not json", FAKE_EXIT="0")
    profile = probe_json(machine)
    assert profile["gpus"] == []
    assert any("nvidia" in note.lower() for note in profile["notes"])
