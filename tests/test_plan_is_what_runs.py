"""The plan's argv is the argv that runs: on every recorded machine, ``recommend --format shell`` and ``run --auto
--dry-run --json`` name the same engine with the same arguments (only where the model lives and the port differ),
and every flag given to llama-server is one the current llama.cpp accepts (tests/data/engine-args, read from the
llama.cpp tree llama-cpp-python 0.3.36 vendors: an unknown flag aborts llama-server at start-up)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from advisor.cli.main import app
from advisor.engines import get as get_engine
from advisor.plan import Plan
from advisor.probe import probe
from tests.test_recommend_matrix import MACHINES

FLAGS_FILE = Path(__file__).parent / "data" / "engine-args" / "llama-server-flags.txt"
LLAMA_SERVER_FLAGS = {line.strip() for line in FLAGS_FILE.read_text().splitlines()
                      if line.strip() and not line.startswith("#")}


def _invoke(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    exit_code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        exit_code = getattr(result.exception, "exit_code", 1)  # advisor's errors carry their exit code
    assert exit_code == code, result.output
    return result.stdout


def _without_model_and_port(plan: Plan, argv: list[str]) -> list[str]:
    """``argv`` less the model's arguments (a Hub name in the plan, a local path when it runs) and the port."""
    out, skip = [], 0
    engine = get_engine(plan.engine_ref.name)
    model = engine.model_args(plan.model, None) + engine.model_args(plan.model, "/local")
    flags = {a for a in model if a.startswith("-")} | {"--port"}
    argv = [a for a in argv if a != "--offline"]  # given when the model is on disk, as it is once run downloads it
    for a in argv:
        if skip:
            skip -= 1
            continue
        if a in flags:
            skip = 1
            continue
        out.append(a)
    return out


@pytest.mark.parametrize("name", sorted(MACHINES))
@pytest.mark.parametrize("task", ["chat", "code"])
def test_recommend_shell_is_what_run_starts(name: str, task: str, tmp_path: Path) -> None:
    profile = probe(MACHINES[name](tmp_path / "m").system())
    hw = tmp_path / "hw.json"
    hw.write_text(json.dumps(profile.to_dict()))
    if not profile.memory.total_bytes and not any(g.memory_total_bytes for g in profile.gpus):
        # A recording without memory sizes (archspec's sysctl dumps of an M1): nothing fits, and both say so.
        _invoke("recommend", "--hardware", str(hw), "--task", task, "--json", code=3)
        _invoke("run", "--auto", "--hardware", str(hw), "--task", task, "--dry-run", "--json", code=3)
        return
    out = json.loads(_invoke("recommend", "--hardware", str(hw), "--task", task, "--json"))
    plan = Plan.from_dict(out["plans"][0])
    shell = shlex.split(_invoke("recommend", "--hardware", str(hw), "--task", task, "--format", "shell"))
    dry = json.loads(_invoke("run", "--auto", "--hardware", str(hw), "--task", task, "--dry-run", "--json"))
    assert dry["engine"] == plan.engine_ref.name
    assert _without_model_and_port(plan, shell) == _without_model_and_port(plan, dry["argv"])
    # The plan's own args sit inside what runs, unchanged.
    start = shell.index(plan.args[0])
    assert shell[start:start + len(plan.args)] == plan.args
    if plan.engine_ref.name == "llama-server":
        unknown = [a for a in shell[1:] if a.startswith("-") and not a.lstrip("-").replace(".", "").isdigit()
                   and a not in LLAMA_SERVER_FLAGS]
        assert not unknown, f"flags llama-server does not accept: {unknown}"
