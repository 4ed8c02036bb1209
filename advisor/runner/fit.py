"""llama.cpp's own fitter (``llama-fit-params``), run beside advisor's plan where it is installed: its answer is
shown next to ours, never obeyed."""

from __future__ import annotations

import re
import subprocess
from typing import Any

from advisor.engines.llama_server import fit_params_argv


def llama_fit(tool: str, model_path: str, settings: Any, timeout_s: float = 120.0) -> dict[str, Any]:
    """Run llama.cpp's own fitter beside our plan and keep what it said: its last lines, and the ``-ngl`` it settled
    on where its output names one. Its output format is not pinned down here (no build with the tool was at hand),
    so nothing depends on parsing it: it is shown, not obeyed."""
    argv = fit_params_argv(tool, model_path, settings)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              stdin=subprocess.DEVNULL)  # fmt: skip
        text, ok = done.stdout + done.stderr, done.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        text, ok = str(exc), False
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found = re.findall(r"(?:-ngl|--n-gpu-layers|n_gpu_layers\s*=)\s*(-?\d+)", text)
    return {"argv": argv, "ok": ok, "n_gpu_layers": int(found[-1]) if found else None, "output_tail": lines[-6:]}
