"""``advisor probe``: describe this machine (or a saved profile) as a table or as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from advisor.cli._options import HardwareOpt, JsonOpt
from advisor.errors import HardwareFileError


def load_profile(path: Path):
    """Read a profile written by ``advisor probe --json`` (for every command's ``--hardware FILE``)."""
    from advisor.probe.model import HardwareProfile

    try:
        text = path.read_text()
    except OSError as exc:
        raise HardwareFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HardwareFileError(f"{path} is not JSON ({exc.msg} at line {exc.lineno})") from None
    return HardwareProfile.from_dict(data, where=str(path))


def probe(json_output: JsonOpt = False, hardware: HardwareOpt = None) -> None:
    """Describe this machine: CPU and its SIMD features, memory (with container limits), disk, GPUs, engines.

    With --json, print the hardware profile that every other command takes back with --hardware FILE.
    """
    if hardware is not None:
        profile = load_profile(hardware)
    else:
        from advisor.probe import probe as run_probe

        profile = run_probe()
    if json_output:
        sys.stdout.write(json.dumps(profile.to_dict(), indent=2) + "\n")
        return
    from advisor.output import render_profile

    render_profile(profile)
