"""The audit's named mutations, each applied alone to a temporary copy of the repository: which tests catch it?

    python benchmarks/audit_mutations.py [--only NAME ...] [--timeout 900]

Mutations (an audit of the suite found that these went unnoticed or were caught by one test only):
  compute-x1.08     the GPU compute buffer estimate x1.08 (advisor/gguf/estimate.py gpu_compute_bytes)
  ffn-3f-to-2f      the dense FFN term of the GPU compute buffer 3F -> 2F (gpu_compute_bytes)
  ffn-3f-to-2f-cpu  the same in the CPU compute buffer (compute_bytes)
  host-compute-x2   the CPU side's compute buffer in the host buffer type x2 (estimate: compute[host])
  vllm-constants-x2 rules/vllm.toml non_torch_mib and activation_floats_per_token x2
  never-full-offload the planner's full-offload step never succeeds (planner/llamacpp.py _full)
  error-reworded    "vLLM is not installed for ..." reworded
  error-crash       the same error path raises ZeroDivisionError instead (a traceback)

Each runs the suite subset SUBSET (with the real llama.cpp buffer checks; vLLM and mutation tests deselected) without
stopping at the first failure and prints the tests that fail; a mutation no test catches is marked MISSED and the exit
status is 1. The patches are made on the syntax tree (or the TOML text) by function name, so they survive
reformatting; one that no longer finds its target says so (exit 2) rather than reporting a pass.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.mutate import copy_repo  # noqa: E402

#: The tests that can see these mutations: the estimator's and planner's (llama.cpp's own buffer report included: the
#: engine-marked tests of test_llamacpp_accuracy.py load generated models in llama-cpp-python), the renderings, and
#: the error paths of `advisor run` that start no engine.
SUBSET = ("tests/test_estimate.py", "tests/test_estimate_properties.py", "tests/test_gpu_logs.py",
          "tests/test_gpu_logs_vllm.py", "tests/test_llamacpp_accuracy.py", "tests/test_planner.py",
          "tests/test_planner_independent.py", "tests/test_recommend_matrix.py", "tests/test_formats.py",
          "tests/test_golden_review.py", "tests/test_cli_recommend.py", "tests/test_run_engine.py::test_missing_engine",
          "tests/test_run_engine.py::test_missing_model_file", "tests/test_run_engine.py::test_port_in_use")


class NotFound(Exception):
    pass


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]  # module level, not methods
    if not found:
        raise NotFound(f"no function {name}")
    return found[0]


def _edit_tree(path: str, edit: Callable[[ast.Module], int]) -> Callable[[Path], None]:
    def apply(copy: Path) -> None:
        target = copy / path
        tree = ast.parse(target.read_text())
        if not edit(tree):
            raise NotFound(f"{path}: the mutation's target is gone")
        target.write_text(ast.unparse(ast.fix_missing_locations(tree)) + "\n")
    return apply


def _scale_returns(fn_name: str, factor: float) -> Callable[[ast.Module], int]:
    def edit(tree: ast.Module) -> int:
        n = 0
        for node in ast.walk(_function(tree, fn_name)):
            if isinstance(node, ast.Return) and node.value is not None:
                node.value = ast.parse(f"int(({ast.unparse(node.value)}) * {factor})", mode="eval").body
                n += 1
        return n
    return edit


def _ffn_3_to_2(fn_name: str) -> Callable[[ast.Module], int]:
    """The dense FFN term ``3 * max(facts.n_ff)`` (or ``(3 if fused else 2) * ...``) of ``fn_name`` becomes 2F."""
    def edit(tree: ast.Module) -> int:
        n = 0
        for node in ast.walk(_function(tree, fn_name)):
            if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)
                    and any(isinstance(a, ast.Attribute) and a.attr == "n_ff" for a in ast.walk(node.right))):
                continue
            left = node.left.body if isinstance(node.left, ast.IfExp) else node.left
            if isinstance(left, ast.Constant) and left.value == 3:
                left.value = 2
                n += 1
        return n
    return edit


def _host_compute_x2(tree: ast.Module) -> int:
    n = 0
    for node in ast.walk(_function(tree, "estimate")):
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Subscript)
                and ast.unparse(node.targets[0]) == "compute[host]"):
            node.value = ast.BinOp(node.value, ast.Mult(), ast.Constant(2))
            n += 1
    return n


def _never_full_offload(tree: ast.Module) -> int:
    """The `if est is not None and fit.ok:` of the full-offload search (planner/llamacpp.py _full, every layer on
    the GPUs at one rung) never holds: the planner never offloads fully."""
    n = 0
    for node in ast.walk(_function(tree, "_full")):
        if isinstance(node, ast.If) and "fit.ok" in ast.unparse(node.test):
            node.test = ast.Constant(False)
            n += 1
    return n


def _vllm_constants_x2(copy: Path) -> None:
    path = copy / "rules" / "vllm.toml"
    text = path.read_text()
    new = re.sub(r"(non_torch_mib\s*=\s*)(\d+)", lambda m: f"{m.group(1)}{int(m.group(2)) * 2}", text)
    new = re.sub(r"(activation_floats_per_token\s*=\s*)([\d.]+)", lambda m: f"{m.group(1)}{float(m.group(2)) * 2}",
                 new)
    found = len(re.findall(r"non_torch_mib|activation_floats", new))
    if new.count("\n") != text.count("\n") or new == text or found < 2:
        raise NotFound("rules/vllm.toml: non_torch_mib / activation_floats_per_token not found")
    path.write_text(new)


MESSAGE = "vLLM is not installed for"


def _message_file(copy: Path) -> Path:
    for path in sorted((copy / "advisor").rglob("*.py")):
        if MESSAGE in path.read_text():
            return path
    raise NotFound(f"no source file says {MESSAGE!r}")


def _reword(copy: Path) -> None:
    path = _message_file(copy)
    path.write_text(path.read_text().replace(MESSAGE, "vLLM cannot be found for"))


def _crash(copy: Path) -> None:
    path = _message_file(copy)
    text = path.read_text()
    new = re.sub(r"(f[\"']vLLM is not installed for \{)([\w.]+)\}", r"\1\2 + str(1 // 0)}", text)
    if new == text:
        raise NotFound(f"{path.name}: the message is not an f-string naming the interpreter")
    path.write_text(new)


MUTATIONS: dict[str, Callable[[Path], None]] = {
    "compute-x1.08": _edit_tree("advisor/gguf/estimate.py", _scale_returns("gpu_compute_bytes", 1.08)),
    "ffn-3f-to-2f": _edit_tree("advisor/gguf/estimate.py", _ffn_3_to_2("gpu_compute_bytes")),
    "ffn-3f-to-2f-cpu": _edit_tree("advisor/gguf/estimate.py", _ffn_3_to_2("compute_bytes")),
    "host-compute-x2": _edit_tree("advisor/gguf/estimate.py", _host_compute_x2),
    "vllm-constants-x2": _vllm_constants_x2,
    "never-full-offload": _edit_tree("advisor/planner/llamacpp.py", _never_full_offload),
    "error-reworded": _reword,
    "error-crash": _crash,
}


def failing_tests(copy: Path, timeout: float) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", "--no-header",
           "-m", "not mutation and not vllm", *SUBSET]
    try:
        done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return [f"(the subset ran past {timeout:g} s)"]
    failed = sorted({ln.split(" ", 1)[1].split(" - ")[0] for ln in done.stdout.splitlines()
                     if ln.startswith(("FAILED ", "ERROR "))})
    if done.returncode not in (0, 1) and not failed:
        return [f"(pytest exited {done.returncode}: {done.stdout.strip().splitlines()[-1:]})"]
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(MUTATIONS), default=list(MUTATIONS))
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds for one run of the subset")
    args = ap.parse_args()
    status = 0
    with tempfile.TemporaryDirectory(prefix="advisor-audit-") as tmp:
        base = Path(tmp) / "unmutated"
        base.mkdir()
        copy_repo(base)
        start = time.monotonic()
        baseline = failing_tests(base, args.timeout)
        print(f"unmutated: {len(baseline)} failing ({time.monotonic() - start:.0f} s)" + "".join(
            f"\n    {t}" for t in baseline))
        rows = []
        for name in args.only:
            copy = Path(tmp) / name
            copy.mkdir()
            copy_repo(copy)
            try:
                MUTATIONS[name](copy)
            except NotFound as e:
                rows.append((name, None, str(e)))
                status |= 2
                continue
            start = time.monotonic()
            caught = [t for t in failing_tests(copy, args.timeout) if t not in baseline]
            rows.append((name, caught, f"{time.monotonic() - start:.0f} s"))
            status |= not caught
    print(f"\n{'mutation':<20} {'caught by':>9}  tests")
    for name, caught, note in rows:
        if caught is None:
            print(f"{name:<20} {'-':>9}  NOT APPLIED: {note}")
            continue
        print(f"{name:<20} {len(caught):>9}  " + ("MISSED" if not caught else caught[0]) + f"   ({note})")
        for t in caught[1:]:
            print(f"{'':<31}{t}")
    return status


if __name__ == "__main__":
    sys.exit(main())
