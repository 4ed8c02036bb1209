"""The one seam through which setup runs commands: installs, interpreter questions and verification.

Tests pass a fake runner that records the steps and answers from a script; the real one is ``SubprocessRunner``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Protocol

from advisor.errors import EngineSetupError
from advisor.setup.builds import Step
from advisor.system import Completed


class Runner(Protocol):
    def __call__(self, step: Step, *, capture: bool, timeout: float | None = None) -> Completed:
        """Run ``step``. ``capture``: return its output (questions, verification); otherwise its output goes to our
        stderr as it comes (installs take minutes and the user should see pip working). Never raises for a
        failing command: ``returncode`` says it (None when it could not be started or timed out)."""
        ...


class SubprocessRunner:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)

    def __call__(self, step: Step, *, capture: bool, timeout: float | None = None) -> Completed:
        env = {k: v for k, v in self.env.items() if k not in step.unset}
        env.update(step.env)
        argv = tuple(step.argv)
        try:
            if capture:
                proc = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, errors="replace",
                                      timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
                return Completed(argv, proc.returncode, proc.stdout, proc.stderr)
            # Data goes to stdout, so a command's own chatter goes to stderr with the other messages.
            try:
                sys.stderr.flush()
                err_fd = sys.stderr.fileno()
            except (AttributeError, OSError, ValueError):  # a replaced sys.stderr (test runners): copy afterwards
                proc = subprocess.run(argv, check=False, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                      errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
                sys.stderr.write(proc.stdout)
                return Completed(argv, proc.returncode, "", "")
            streamed = subprocess.run(argv, check=False, env=env, stdout=err_fd, stderr=err_fd, timeout=timeout,
                                      stdin=subprocess.DEVNULL)  # fmt: skip
            return Completed(argv, streamed.returncode, "", "")
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            return Completed(argv, None, out, err + f"\n{argv[0]}: no answer within {timeout:g} s")
        except OSError as exc:
            return Completed(argv, None, "", f"{argv[0]}: {exc.strerror or exc}")


def run_steps(steps: list[Step], runner: Runner, say: Callable[[str], None], hint: str) -> None:
    """Run each step with its output on the terminal, saying why first; the first that fails is one error line."""
    for step in steps:
        say(f"{step.why}: {step.shell()}")
        done = runner(step, capture=False)
        if not done.ok:
            why = f"exit {done.returncode}" if done.returncode is not None else done.stderr.strip() or "not started"
            raise EngineSetupError(f"'{' '.join(step.argv[:5])} ...' failed ({why}); its output is above", hint=hint)
