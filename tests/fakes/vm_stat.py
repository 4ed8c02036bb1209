"""Fake macOS ``vm_stat``: prints the recording named by $VM_STAT_RECORDING (one snapshot; interval args unused)."""

import os
import sys

with open(os.environ["VM_STAT_RECORDING"], encoding="utf-8") as fh:
    sys.stdout.write(fh.read())
