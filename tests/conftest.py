from __future__ import annotations

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
