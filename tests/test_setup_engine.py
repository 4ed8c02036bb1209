"""`advisor setup` for real on this machine's CPU: a fresh managed virtualenv, llama-cpp-python installed with pip,
then verified by loading a generated model through that venv's own interpreter.

The first run compiles llama.cpp from the PyPI sdist (8-15 min on 2 cores); later runs take
seconds because pip reuses the wheel it built (a CPU build keeps pip's cache on purpose; GPU builds bypass it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from advisor.probe.profile import HardwareProfile
from advisor.setup import check_engine, engine_python

ADVISOR = shutil.which("advisor", path=str(Path(sys.executable).parent)) or "advisor"

pytestmark = pytest.mark.engine


def test_cpu_install_and_verify_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "engine-venv"
    home = tmp_path / "advisor-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADVISOR_")}
    env["ADVISOR_HOME"] = str(home)
    try:
        # --force: this Python's own CPU llama-cpp-python already fits a CPU machine and would be kept otherwise.
        done = subprocess.run(check=False, args=[ADVISOR, "setup", "--backend", "llama.cpp", "--venv", str(venv), "--force", "--yes",
                               "--json"], capture_output=True, text=True, env=env, timeout=1800)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)
        assert result["status"] == "installed"
        assert result["plan"]["build"] == "cpu"
        verification = result["verification"]
        assert verification["ok"], verification["summary"]
        assert verification["backends"] == ["cpu"] and verification["gpu_offload"] is False
        assert "CPU-only" in verification["summary"]
        details = verification["details"]
        assert details["completion_tokens"] > 0  # the generated model really ran
        assert details["offloaded_layers"] == 0 and details["gpu_buffers_mib"] == {}
        assert any(name.startswith("CPU") for name in details["model_buffers_mib"])
        assert "CPU" in details["registries"]
        python = venv / "bin" / "python"
        assert Path(details["lib_dir"]).resolve().is_relative_to(venv.resolve())  # the venv's own library

        # Recorded for `advisor run`, and check_engine agrees for a CPU profile.
        assert engine_python("llama.cpp", env) == python
        assert check_engine(HardwareProfile(), "llama.cpp", env).ok

        # Run again: the managed venv fits, so nothing is installed and it is verified again.
        again = subprocess.run(check=False, args=[ADVISOR, "setup", "--venv", str(venv), "--yes", "--json"], capture_output=True,
                               text=True, env=env, timeout=600)  # fmt: skip
        assert again.returncode == 0, again.stderr[-3000:]
        kept = json.loads(again.stdout)
        assert kept["status"] == "kept" and kept["verification"]["ok"]
    finally:
        shutil.rmtree(venv, ignore_errors=True)
    assert not venv.exists()
