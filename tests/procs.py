"""Process checks the tests that start engines share."""

from __future__ import annotations

import time

import psutil


def gone(pid: int, within: float = 5.0) -> bool:
    """``pid`` exits (or is a zombie waiting for its parent) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False
