"""Fake macOS ``system_profiler DATATYPE -json``: prints the recording named by $SYSTEM_PROFILER_<DATATYPE>.

Each call's argv is appended to $SYSTEM_PROFILER_LOG when set, so tests can prove it was (not) run.
"""

import os
import sys

if os.environ.get("SYSTEM_PROFILER_LOG"):
    with open(os.environ["SYSTEM_PROFILER_LOG"], "a", encoding="utf-8") as log:
        log.write(" ".join(sys.argv[1:]) + "\n")
types = [a for a in sys.argv[1:] if a.startswith("SP")]
paths = [os.environ.get(f"SYSTEM_PROFILER_{t}") for t in types]
if not types or not all(paths):
    sys.exit(1)
for path in paths:
    with open(path, encoding="utf-8") as fh:
        sys.stdout.write(fh.read())
