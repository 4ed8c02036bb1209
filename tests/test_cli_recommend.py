"""`advisor recommend` and `advisor run --auto` as a script calls them: exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ADVISOR = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ADVISOR, *args], capture_output=True, text=True, env=dict(os.environ), timeout=120)


@pytest.fixture(scope="module")
def profiles(tmp_path_factory) -> dict[str, Path]:
    """This machine's profile, and the same machine shrunk to 600 MiB of RAM (less than the OS reserve)."""
    d = tmp_path_factory.mktemp("profiles")
    done = run("probe", "--json")
    assert done.returncode == 0, done.stderr
    box = json.loads(done.stdout)
    (d / "box.json").write_text(json.dumps(box))
    for key in ("total_bytes", "available_bytes", "usable_bytes"):
        box["memory"][key] = 600 << 20
    (d / "tiny.json").write_text(json.dumps(box))
    return {"box": d / "box.json", "tiny": d / "tiny.json"}


def test_nothing_fits_is_exit_3_naming_the_closest(profiles):
    done = run("recommend", "--hardware", str(profiles["tiny"]))
    assert done.returncode == 3 and done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("advisor: error: nothing fits this machine; closest: ") and "short by" in line


def test_a_named_model_that_does_not_fit(profiles):
    done = run("recommend", "--hardware", str(profiles["tiny"]), "--model", "llama-3.1-8b-instruct")
    assert done.returncode == 3 and "llama-3.1-8b-instruct" in done.stderr and "Traceback" not in done.stderr


def test_run_auto_when_nothing_fits(profiles):
    done = run("run", "--auto", "--dry-run", "--hardware", str(profiles["tiny"]))
    assert done.returncode == 3 and len(done.stderr.strip().splitlines()) == 1


def test_why_not_explains_each_rejected_variant(profiles):
    done = run("recommend", "--hardware", str(profiles["tiny"]), "--why-not", "llama-3.1-8b-instruct")
    assert done.returncode == 0
    lines = done.stdout.strip().splitlines()
    assert lines and all(line.startswith("llama-3.1-8b-instruct ") for line in lines)
    assert any("short by" in line for line in lines)


def test_unknown_model_is_a_bad_input(profiles):
    done = run("recommend", "--hardware", str(profiles["box"]), "--model", "no-such-model-anywhere")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_recommend_json_plans_fit_their_capacity(profiles):
    done = run("recommend", "--hardware", str(profiles["box"]), "--json", "--top", "3")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["hardware"]["schema"] == 1 and 1 <= len(result["plans"]) <= 3
    for plan in result["plans"]:
        assert plan["args"] and plan["reasons"] and plan["settings"]
        for device in plan["memory"]:
            if device["capacity_bytes"] is not None:
                assert device["total_bytes"] <= device["capacity_bytes"]
