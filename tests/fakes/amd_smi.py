"""Fake ``amd-smi``: prints the file named by AMD_SMI_JSON for ``amd-smi static --json``.

No public, permissively licensed ``amd-smi --json`` dump was found (tests/data/amd/SOURCES.md), so the tests
write small synthetic documents in the two shapes described in the research notes (list, {"gpu_data": [...]}).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    if argv[:1] != ["static"] or "--json" not in argv:
        print(f"amd-smi: fake answers only 'static --json', not {argv}", file=sys.stderr)
        return 2
    path = os.environ.get("AMD_SMI_JSON")
    if not path:
        print("ERROR: Unable to detect any GPU devices, check amdgpu version and module status (sudo modprobe amdgpu)")
        return 1
    with open(path, errors="replace") as f:
        sys.stdout.write(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
