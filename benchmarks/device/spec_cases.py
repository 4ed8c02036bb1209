"""llama.cpp's memory plan for small generated models (tests/ggufgen.py specs, header-only) on the GPU machine:
shapes chosen so that one graph phase is the compute buffer's peak.

    python3 benchmarks/device/spec_cases.py --bin DIR --out DIR

Writes memprobe.jsonl; labels are ``spec-name|flags`` (spaces in the flags as _).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests import ggufgen  # noqa: E402
from tests.cuda_memprobe import SPECS  # noqa: E402

FLAGS = ("-c 16384 -np 1 -fa on -ngl 999", "-c 65536 -np 1 -fa on -ngl 999", "-c 16384 -np 1 -fa off -ngl 999")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, spec in SPECS.items():
        path = a.out / f"{name}.gguf"
        ggufgen.write(path, spec, sparse=True)
        lines += [f"{name}|{flags.replace(' ', '_')} -m {path} {flags}" for flags in FLAGS]
    with (a.out / "memprobe.jsonl").open("w") as f, (a.out / "memprobe.err").open("w") as err:
        subprocess.run([str(a.bin / "llama-memprobe")], input="\n".join(lines) + "\n", stdout=f, stderr=err,
                       text=True, timeout=120)
    for p in a.out.glob("*.gguf"):
        p.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
