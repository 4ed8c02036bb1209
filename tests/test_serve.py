"""``run``'s workflow (advisor.app.serve) without starting anything: where the plan comes from, and ``--setup``
installing the engine first and planning again for the engine it installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from advisor import setup as setup_pkg
from advisor.app import advise as advice
from advisor.app import engines as engine_choice
from advisor.app import serve
from advisor.errors import EngineMissingError
from advisor.plan import LLAMA_CPP_PYTHON, EngineRef
from advisor.probe.profile import Cpu, HardwareProfile, Memory

GIB = 2**30
PROFILE = HardwareProfile(cpu=Cpu(model="test cpu", physical_cores=8, logical_cores=8, usable_cores=8),
                          memory=Memory(total_bytes=32 * GIB, available_bytes=28 * GIB, usable_bytes=28 * GIB))
MANAGED = EngineRef(LLAMA_CPP_PYTHON, exe="/managed/bin/python", source="the build advisor setup installed")
NOT_YET = EngineRef(LLAMA_CPP_PYTHON, exe="/managed/bin/python", source="not installed: advisor setup installs it")


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """This machine is PROFILE; its llama.cpp engine is missing until ensure_engine runs."""
    calls: dict[str, list[str]] = {"installed": []}
    monkeypatch.setattr(advice, "hardware", lambda path: PROFILE)
    monkeypatch.setattr(setup_pkg, "check_engine", lambda profile, backend: setup_pkg.EngineStatus(
        bool(calls["installed"]), "no llama.cpp engine is installed", "advisor setup --backend llama.cpp --yes"))
    monkeypatch.setattr(setup_pkg, "ensure_engine",
                        lambda profile, backend, say=None: calls["installed"].append(backend))
    monkeypatch.setattr(engine_choice, "choose", lambda profile, here, python=None, env=None: (
        MANAGED if calls["installed"] else NOT_YET, EngineRef("vllm", source="not installed")))
    return calls


def test_without_setup_a_missing_engine_names_the_command(machine: dict[str, list[str]]) -> None:
    with pytest.raises(EngineMissingError) as info:
        serve.plan_for(serve.Source(auto=True, backend="llama.cpp"), serve.Options(), print)
    assert "advisor setup --backend llama.cpp --yes" in (info.value.hint or "")
    assert machine["installed"] == []


def test_setup_installs_then_plans_for_the_installed_engine(machine: dict[str, list[str]]) -> None:
    said: list[str] = []
    plan, _ = serve.plan_for(serve.Source(auto=True, backend="llama.cpp"), serve.Options(setup=True), said.append)
    assert machine["installed"] == ["llama.cpp"]
    assert plan.engine == MANAGED and plan.args == serve.engines.argv(MANAGED, plan.settings, plan.model,
                                                                      plan.sampling)
    assert any("setting up llama.cpp" in line for line in said)


def test_setup_with_dry_run_installs_nothing(machine: dict[str, list[str]]) -> None:
    said: list[str] = []
    plan, _ = serve.plan_for(serve.Source(auto=True, backend="llama.cpp"), serve.Options(setup=True, dry_run=True),
                             said.append)
    assert machine["installed"] == [] and plan.engine == NOT_YET
    assert said == ["--setup would first run: advisor setup --backend llama.cpp --yes"]


def test_a_plan_for_another_machine_does_not_look_for_its_engine_here(machine: dict[str, list[str]],
                                                                      tmp_path: Path) -> None:
    source = serve.Source(auto=True, backend="llama.cpp", hardware=tmp_path / "other.json")
    plan, _ = serve.plan_for(source, serve.Options(dry_run=True), print)
    assert machine["installed"] == [] and plan.backend == "llama.cpp"
