"""A fake ``nvidia-smi`` that answers from recorded outputs named by environment variables.

NVSMI_QUERY_CSV  a recorded ``--query-gpu=<fields> --format=csv`` output: header line ("memory.total [MiB]") and rows
                 with units ("8192 MiB"); any requested field list is answered from it by column name
NVSMI_XML        a recorded ``nvidia-smi -q -x``
NVSMI_Q          a recorded ``nvidia-smi -q``
NVSMI_L          a recorded ``nvidia-smi -L``
NVSMI_TOPO       a recorded ``nvidia-smi topo -m``
NVSMI_REJECT     comma-separated fields to refuse as an older driver does
NVSMI_BEHAVIOUR  "hang" (never answers), "fail" (driver not loaded), "garbage" (exit 0 with nonsense)
NVSMI_CALLS      a file to which each command line is appended

Without a recording for what is asked it exits non-zero, as the real tool does for an unknown option. Exit statuses
follow nvidia-smi(1) "RETURN VALUE": 2 invalid argument or flag, 9 NVIDIA driver not loaded.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path


def _recording(var: str) -> str | None:
    path = os.environ.get(var)
    if not path:
        return None
    text = Path(path).read_text()
    # Extracted sections start with the command that produced them ("# $ nvidia-smi -q"), which the tool never prints.
    if text.startswith("# $ "):
        text = text.split("\n", 1)[1] if "\n" in text else ""
    return text


def _column(header: str) -> tuple[str, str | None]:
    """ "memory.total [MiB]" -> ("memory.total", "MiB")."""
    match = re.fullmatch(r"(.*?)(?: \[(.*)\])?", header.strip())
    assert match is not None
    return match.group(1), match.group(2)


def _query(fields: list[str], fmt: set[str]) -> int:
    text = _recording("NVSMI_QUERY_CSV")
    if text is None:
        print("Unable to query: no recording for --query-gpu", file=sys.stderr)
        return 6
    lines = [line for line in text.splitlines() if line.strip()]
    # The recorded tool separates values with ", " (no quoting).
    columns = [_column(h) for h in lines[0].split(", ")]
    names = [name for name, _ in columns]
    rejected = set(filter(None, os.environ.get("NVSMI_REJECT", "").split(",")))
    for name in fields:
        if name not in names or name in rejected:
            print(f'Field "{name}" is not a valid field to query.\n')
            return 2
    picks = [names.index(name) for name in fields]
    out = []
    if "noheader" not in fmt:
        out.append(", ".join(lines[0].split(", ")[i] for i in picks))
    for line in lines[1:]:
        values = line.split(", ")
        row = []
        for i in picks:
            value, unit = values[i], columns[i][1]
            if "nounits" in fmt and unit and value.endswith(f" {unit}"):
                value = value[: -len(unit) - 1]
            row.append(value)
        out.append(", ".join(row))
    print("\n".join(out))
    return 0


def main(argv: list[str]) -> int:
    if calls := os.environ.get("NVSMI_CALLS"):
        with open(calls, "a") as log:
            log.write(" ".join(argv) + "\n")
    behaviour = os.environ.get("NVSMI_BEHAVIOUR", "")
    if behaviour == "hang":
        time.sleep(60)
        return 0
    if behaviour == "fail":
        print(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
            "Make sure that the latest NVIDIA driver is installed and running.\n"
        )
        return 9
    if behaviour == "garbage":
        print("\x00\x01 <<<gpu?>>> ,,,\n\ue000 index, 12 MiB ][")
        return 0

    query = next((a.split("=", 1)[1] for a in argv if a.startswith("--query-gpu=")), None)
    fmt = next((a.split("=", 1)[1] for a in argv if a.startswith("--format=")), None)
    if query is not None and fmt is not None and fmt.split(",")[0] == "csv":
        return _query(query.split(","), set(fmt.split(",")))

    options = set(argv)
    if options == {"-q", "-x"}:
        text = _recording("NVSMI_XML")
    elif options == {"-q"}:
        text = _recording("NVSMI_Q")
    elif options == {"-L"}:
        text = _recording("NVSMI_L")
    elif argv == ["topo", "-m"]:
        text = _recording("NVSMI_TOPO")
    else:
        text = None
    if text is None:
        print(f"Invalid combination of input arguments (no recording for {' '.join(argv)!r}).", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
