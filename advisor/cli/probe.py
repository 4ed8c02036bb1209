"""``advisor probe``: describe this machine (or a saved profile) as a table or as JSON."""

from __future__ import annotations

import json
import sys

from advisor.cli._options import HardwareOpt, JsonOpt


def probe(json_output: JsonOpt = False, hardware: HardwareOpt = None) -> None:
    """Describe this machine: CPU and its SIMD features, memory (with container limits), disk, GPUs, engines.

    With --json, print the hardware profile that every other command takes back with --hardware FILE.
    """
    from advisor.app.advise import hardware as load_hardware

    profile = load_hardware(hardware)
    if json_output:
        sys.stdout.write(json.dumps(profile.to_dict(), indent=2) + "\n")
        return
    from advisor.render.profile import render_profile

    render_profile(profile)
