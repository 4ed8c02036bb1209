"""shell / systemd / compose renderings against golden files (regenerate with ADVISOR_REGEN_GOLDEN=1, never by
hand)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from advisor.render import deploy as formats
from advisor.catalog.load import load_catalog
from advisor.planner import Request, plan_for_model
from advisor.probe.profile import Cpu, Gpu, HardwareProfile, Memory
from advisor.rules import load_rules

GOLDEN = Path(__file__).parent / "data" / "golden" / "recommend"
MIB, GIB = 1 << 20, 1 << 30


def _box(vendor, name, mib):
    backend = {"nvidia": "cuda", "amd": "rocm"}[vendor]
    return HardwareProfile(cpu=Cpu(physical_cores=8, logical_cores=16, usable_cores=16),
                           memory=Memory(total_bytes=64 * GIB, usable_bytes=60 * GIB),
                           gpus=[Gpu(index=0, vendor=vendor, name=name, backend=backend,
                                     memory_total_bytes=mib * MIB, memory_free_bytes=mib * MIB)])


CASES = {
    "t4-phi3-vllm": ("nvidia", "Tesla T4", 15360, "microsoft/Phi-3-mini-4k-instruct", "vllm"),
    "rtx3060-qwen-coder-llama": ("nvidia", "NVIDIA GeForce RTX 3060", 12288, "qwen2.5-coder-7b-instruct", "auto"),
    "mi100-qwen3-llama": ("amd", "Arcturus GL-XL [Instinct MI100]", 32752, "qwen3-8b", "auto"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("fmt", ["shell", "systemd", "compose"])
def test_golden(case, fmt):
    vendor, name, mib, model, backend = CASES[case]
    plan = plan_for_model(_box(vendor, name, mib), load_catalog(), load_rules(), model, Request(backend=backend))
    text = {"shell": lambda: formats.shell(plan), "systemd": lambda: formats.systemd(plan),
            "compose": lambda: formats.compose(plan, vendor)}[fmt]()
    path = GOLDEN / f"{case}.{fmt}"
    if os.environ.get("ADVISOR_REGEN_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text


def test_compose_gpu_flags():
    plan = plan_for_model(_box("nvidia", "Tesla T4", 15360), load_catalog(), load_rules(), "qwen3-4b")
    assert "driver: nvidia" in formats.compose(plan, "nvidia")
    amd = formats.compose(plan, "amd")
    assert "/dev/kfd" in amd and "/dev/dri" in amd
