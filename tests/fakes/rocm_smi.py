"""Fake ``rocm-smi``: replays a recorded ``rocm-smi --json`` output, keeping only what the asked flags cover.

Environment: ROCM_SMI_JSON  path of the recording (absent: exit 1 with rocm-smi's message when no GPU/driver);
ROCM_SMI_LOG  file to which each call's argv is appended (one line); ROCM_SMI_SLEEP  seconds to hang first.
The recordings (tests/data/amd/telegraf__*.json) were taken with every --show* flag at once, so any subset of the
flags below can be answered from them. A flag this fake does not know exits 2 like argparse does.
"""

from __future__ import annotations

import json
import os
import sys
import time

# Which keys of a card each flag prints (names as in the recordings; both spellings of the series key).
CARD_KEYS = {
    "--showproductname": (
        "Card series", "Card Series", "Card model", "Card Model", "Card vendor", "Card Vendor", "Card SKU",
        "Card SKU", "Subsystem ID", "Device Rev", "Node ID", "GUID", "GFX Version",
    ),
    "--showbus": ("PCI Bus",),
    "--showuniqueid": ("Unique ID",),
    "--showid": ("GPU ID", "Device ID", "Device Rev"),
}
MEMINFO_KEYS = {
    "vram": ("VRAM Total Memory (B)", "VRAM Total Used Memory (B)"),
    "vis_vram": ("VIS_VRAM Total Memory (B)", "VIS_VRAM Total Used Memory (B)"),
    "gtt": ("GTT Total Memory (B)", "GTT Total Used Memory (B)"),
}


def main(argv: list[str]) -> int:
    if os.environ.get("ROCM_SMI_LOG"):
        with open(os.environ["ROCM_SMI_LOG"], "a") as log:
            log.write(" ".join(argv) + "\n")
    if os.environ.get("ROCM_SMI_SLEEP"):
        time.sleep(float(os.environ["ROCM_SMI_SLEEP"]))
    keys: set[str] = set()
    driver = False
    want_json = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--json":
            want_json = True
        elif arg == "--showdriverversion":
            driver = True
        elif arg == "--showmeminfo":
            types = []
            while i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                types.append(argv[i])
            if not types:
                print("rocm-smi: error: argument --showmeminfo: expected at least one argument", file=sys.stderr)
                return 2
            for t in types:
                keys.update(k for m in (MEMINFO_KEYS.keys() if t == "all" else [t]) for k in MEMINFO_KEYS.get(m, ()))
        elif arg in CARD_KEYS:
            keys.update(CARD_KEYS[arg])
        else:
            print(f"rocm-smi: error: unrecognized arguments: {arg}", file=sys.stderr)
            return 2
        i += 1
    path = os.environ.get("ROCM_SMI_JSON")
    if not path:
        print("ERROR:root:Driver not initialized (amdgpu not found in modules)")
        return 1
    with open(path, errors="replace") as f:
        text = f.read()
    if not want_json:
        print("fake rocm-smi only replays --json output", file=sys.stderr)
        return 2
    try:
        doc = json.loads(text)
    except ValueError:
        sys.stdout.write(text)  # a garbage recording is replayed as is
        return 0
    out = {}
    for name, card in doc.items():
        if name.startswith("card"):
            picked = {k: v for k, v in card.items() if k in keys}
            if picked:
                out[name] = picked
    if driver and "Driver version" in doc.get("system", {}):
        out["system"] = {"Driver version": doc["system"]["Driver version"]}
    print(json.dumps(out, indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
