from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.replay import Machine


@pytest.fixture(autouse=True)
def isolated_user_state(tmp_path, monkeypatch):
    """All user state goes to a temporary ADVISOR_HOME, and no replay setting leaks in from the developer's shell."""
    for name in ("ADVISOR_SYSROOT", "ADVISOR_PLATFORM", "ADVISOR_ARCH", "ADVISOR_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ADVISOR_HOME", str(tmp_path / "advisor-home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def machine(tmp_path) -> Machine:
    """An empty recorded machine (sysroot + fake-tool PATH) that a test fills from tests/data."""
    return Machine(tmp_path / "sysroot")


#: Where the suite keeps llama.cpp's converter between runs (outside the checkout, like pip's cache): a test engines
#: directory whose ``converter/`` venv `advisor setup --converter` fills once and later runs reuse.
TEST_ENGINES_DIR = Path(os.environ.get("ADVISOR_TEST_CONVERTER_ENGINES_DIR", Path.home() / ".cache" / "advisor-tests"))


@pytest.fixture(scope="session")
def catalog():
    """The shipped catalog, no user overlay: what the planner tests plan from."""
    from advisor.catalog.load import load_catalog

    return load_catalog(overlay=False)


@pytest.fixture(scope="session")
def rules():
    """The shipped rules."""
    from advisor.rules import load_rules

    return load_rules()


@pytest.fixture(scope="session")
def converter_engines_dir(tmp_path_factory) -> Path:
    """An ADVISOR_ENGINES_DIR whose ``converter`` venv holds llama.cpp's converter for the installed
    llama-cpp-python, made by the product's own installer (`advisor setup --converter`). torch comes from pip's
    configured sources unless ADVISOR_TORCH_INDEX says otherwise (a test machine reaches PyPI, and may hold a local
    CPU torch wheel, not necessarily PyTorch's index). Reused as it is when complete: setup then only verifies."""
    TEST_ENGINES_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ADVISOR_HOME": str(tmp_path_factory.mktemp("converter-home")),
           "ADVISOR_ENGINES_DIR": str(TEST_ENGINES_DIR),
           "ADVISOR_TORCH_INDEX": os.environ.get("ADVISOR_TORCH_INDEX", "")}
    advisor = str(Path(sys.executable).parent / "advisor")
    done = subprocess.run([advisor, "setup", "--converter", "--yes", "--json"], env=env, capture_output=True,
                          text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return TEST_ENGINES_DIR
