"""Mutation testing of the estimator and the planner (tests/mutate.py): a fixed seeded sample of small changes to
advisor/gguf/estimate.py and advisor/planner/*.py, each run against the fast tests of its group; at least 80 % of
each group's mutants must be killed. Bounded to about 7 minutes; marked ``mutation`` so that a quick local run can
deselect it (-m 'not engine and not mutation'); the README's full command runs it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MUTATE = Path(__file__).with_name("mutate.py")


@pytest.mark.mutation
def test_mutants_of_estimate_and_planner_are_killed():
    done = subprocess.run([sys.executable, str(MUTATE), "--budget", "400", "--timeout", "60", "--threshold", "0.8"],
                          capture_output=True, text=True, timeout=600)
    print(done.stdout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
