"""A small seeded mutation tester for the estimator and the planner: does the suite notice when the code is wrong?

    python tests/mutate.py [--per-group 16] [--seed 18] [--budget 280] [--timeout 60] [--threshold 0.8] [--list]

For each group (``estimate``: advisor/gguf/estimate.py; ``planner``: advisor/planner/*.py) it lists every mutation
site in the chosen functions (GROUPS), draws a fixed seeded sample, and for each mutant: copies the repository to a
temporary directory, rewrites one site, and runs the group's fast tests there (pytest -x in a fork of this process,
which has the third-party packages imported but not advisor: the mutant's own ``advisor`` comes first on sys.path
and PYTHONPATH). A mutant is killed when the tests fail or run past --timeout. The
operators: a comparison flipped (< <=, > >=, == !=, in / not in, is / is not), + and - swapped, an int constant
doubled (0 -> 1), a float constant x1.08, an early ``return`` dropped. The report gives the share of mutants killed per
group and lists the survivors (file:line, the change); the exit status is 1 when a group is below --threshold.
--budget bounds the whole run in seconds, shared between the groups: mutants not started within their group's share
are reported as not run.
"""

from __future__ import annotations

import argparse
import ast
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Group -> (files and the functions mutated in each, the tests run per mutant: fast ones first, -x stops early).
GROUPS: dict[str, tuple[dict[str, tuple[str, ...]], tuple[str, ...]]] = {
    "estimate": (
        {"advisor/gguf/estimate.py": ("kv_pad", "context", "kv_layer_bytes", "recurrent_layer_bytes", "layer_devices",
                                      "compute_bytes", "gpu_compute_bytes", "estimate", "_flash_attn", "_cache_cells",
                                      "_place_weights", "_place_caches", "_gpu_compute", "_host_compute",
                                      "_cpu_attention", "_resolve_flash_attn", "gpu_has_fa_kernel", "_fa_sequence")},
        ("tests/test_estimate_properties.py", "tests/test_planner_independent.py", "tests/test_estimate.py",
         "tests/test_gpu_logs.py", "tests/test_llamacpp_accuracy.py", "tests/test_cuda_memprobe.py"),
    ),
    "planner": (
        {"advisor/planner/llamacpp.py": ("check", "_split", "ctx_ladder", "_plan_llama", "_cpu_only", "_full_offload",
                                         "_partial", "_faster"),
         "advisor/planner/vllm.py": ("dummy_run_bytes", "sampler_bytes", "activation_peak_bytes", "non_torch_bytes",
                                     "available_kv_bytes", "kv_bytes_per_token", "kv_need", "plan_vllm"),
         "advisor/planner/machine.py": ("build_machine",),
         "advisor/planner/__init__.py": ("_contexts", "_engines")},
        ("tests/test_planner_independent.py", "tests/test_planner.py", "tests/test_formats.py",
         "tests/test_gpu_logs_vllm.py",
         "tests/test_recommend_matrix.py::test_full_offload_and_vllm_check_against_independent_bounds"),
    ),
}

#: Mutants reviewed as equivalent (no input can tell them from the original), keyed by (file, function, the stripped
#: source line, change) so that the key survives line shifts; they are reported apart and left out of the share.
EQUIVALENT: dict[tuple[str, str, str, str], str] = {
    ("advisor/gguf/estimate.py", "layer_devices",
     "req = n_all + 1 if s.n_gpu_layers < 0 else s.n_gpu_layers  # llama_model_default_params: 999 = everything",
     "< -> <="): "n_gpu_layers == 0 returned earlier",
    ("advisor/gguf/estimate.py", "layer_devices",
     "split = list(s.tensor_split) if s.tensor_split else [1.0] * s.n_gpus", "1.0 -> 1.08"):
        "an even split is normalised: any equal weights give the same fractions",
    ("advisor/gguf/estimate.py", "_flash_attn", "if blck > 1 and hd % blck:", "> -> >="):
        "hd % 1 is always 0",
    ("advisor/gguf/estimate.py", "_host_compute",
     ') if (n_layers_cpu or out_dev == "cpu") else 0', "== -> !="):
        "without CPU layers or output the CPU graph has no phase: 0 either way",
    ("advisor/gguf/estimate.py", "_host_compute",
     ') if (n_layers_cpu or out_dev == "cpu") else 0', "0 -> 1"):
        "max(inputs, 1) == inputs, and op-offload backends take 0 anyway",
    ("advisor/gguf/estimate.py", "layer_devices",
     "g = next((i for i, c in enumerate(cum) if frac < c - 1e-12), s.n_gpus - 1)", "1e-12 -> 1.08e-12"):
        "a rounding guard: slot fractions (k / act) and cumulative split shares are either equal or at least "
        "1 / (act x n_gpus) apart, far above either epsilon",
    ("advisor/gguf/estimate.py", "_host_compute", "return max(inputs, 0 if rule.op_offload else cpu_layers)",
     "0 -> 1"): "the inputs are never empty (token embeddings), so max(inputs, 1) == inputs",
    ("advisor/gguf/estimate.py", "_gpu_compute",
     'facts.tensor("token_embd.weight").nbytes if facts.tensor("token_embd.weight") else 0)', "0 -> 1"):
        "only reached by a model with neither output.weight nor token_embd, which llama.cpp does not load "
        "(token_embd is required): 0 or 1 byte of a weight that cannot exist",
    ("advisor/gguf/estimate.py", "_fa_sequence", "fa_out = E + Hq + Hout", "+ -> -"):
        "a minus only lowers a term that never leads: fa_out <= q_roped whenever Hout <= E + Hq, i.e. for every "
        "non-MLA head layout llama.cpp has (K and V heads of one size, or DeepSeek-V2's unsplit 192 / 128)",
    ("advisor/gguf/estimate.py", "gpu_compute_bytes", "phases = [0.0]", "0.0 -> 1.0"):
        "every call has layers or the output on the device (_gpu_compute uses the base only then, and the expert "
        "offload term passes layers), so a phase of at least E floats per token is there and max ignores the 1",
    ("advisor/planner/machine.py", "build_machine",
     "gpu_memory_per_device_gib=min((g.memory_total_bytes or 0 for g in gpus), default=0) / GIB,", "0 -> 1"):
        "0 or 1 byte (1e-9 GiB) where there is no GPU, and GPUs of unknown memory are left out before: no rule "
        "threshold lies between",
    ("advisor/planner/machine.py", "build_machine", "mig=any(g.mig_parent_index is not None for g in gpus),",
     "is not -> is"): "no rule in rules/*.toml matches on mig: the subject field is there for rules to come",
    ("advisor/planner/llamacpp.py", "_cpu_only", 'miss = Fit(False, 0, "cpu")', "0 -> 1"):
        "every rung that does not fit replaces it with its own miss; it is only returned when the estimator refused "
        "every rung (no shortfall to report either way)",
}

FLIP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
        ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
          ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-"}


@dataclass(frozen=True)
class Site:
    path: str
    function: str
    occurrence: int  # which definition of that name in the file (methods and functions may share one)
    index: int  # the site's position in the function's walk order
    line: int
    change: str
    text: str = ""  # the stripped source line

    @property
    def equivalent(self) -> str | None:
        return EQUIVALENT.get((self.path, self.function, self.text, self.change))


def _functions(tree: ast.Module, names: tuple[str, ...]) -> list[ast.FunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in names]


def _sites_in(fn: ast.FunctionDef) -> list[tuple[ast.AST, int, str]]:
    """(node, sub-position, description) for every mutation site in the body of ``fn`` (docstring excluded)."""
    out: list[tuple[ast.AST, int, str]] = []
    body = fn.body[1:] if fn.body and isinstance(fn.body[0], ast.Expr) and isinstance(
        getattr(fn.body[0], "value", None), ast.Constant) and isinstance(fn.body[0].value.value, str) else fn.body
    last = fn.body[-1]
    for stmt in body:
        for node in ast.walk(stmt):
            if node is last and isinstance(node, ast.Return):
                continue  # dropping the final return only makes the function return None: a trivial crash
            if isinstance(node, ast.Compare):
                for i, op in enumerate(node.ops):
                    if type(op) in FLIP:
                        out.append((node, i, f"{SYMBOL[type(op)]} -> {SYMBOL[FLIP[type(op)]]}"))
            elif isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub):
                new = ast.Sub if isinstance(node.op, ast.Add) else ast.Add
                out.append((node, 0, f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}"))
            elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
                out.append((node, 0, f"{node.value!r} -> {_constant(node.value)!r}"))
            elif isinstance(node, ast.Return) and node.value is not None:
                out.append((node, 0, "return dropped"))
    return out


def _constant(value: int | float) -> int | float:
    if isinstance(value, int):
        return value * 2 if value else 1
    return value * 1.08 if value else 1.0


def sites(group: str) -> list[Site]:
    files, _ = GROUPS[group]
    out = []
    for path, names in files.items():
        source = (ROOT / path).read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        seen: dict[str, int] = {}
        for fn in _functions(tree, names):
            k = seen[fn.name] = seen.get(fn.name, -1) + 1
            for i, (node, _, change) in enumerate(_sites_in(fn)):
                line = getattr(node, "lineno", fn.lineno)
                out.append(Site(path, fn.name, k, i, line, change, lines[line - 1].strip()))
    return out


class _Apply(ast.NodeTransformer):
    def __init__(self, site: Site, sub: int) -> None:
        self.site, self.sub = site, sub

    def apply(self, tree: ast.Module) -> ast.Module:
        fn = _functions(tree, (self.site.function,))[self.site.occurrence]
        node, sub, _ = _sites_in(fn)[self.site.index]
        if isinstance(node, ast.Compare):
            node.ops[sub] = FLIP[type(node.ops[sub])]()
        elif isinstance(node, ast.BinOp):
            node.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
        elif isinstance(node, ast.Constant):
            node.value = _constant(node.value)
        elif isinstance(node, ast.Return):
            self.target = node
            tree = self.visit(tree)
        return ast.fix_missing_locations(tree)

    def visit_Return(self, node: ast.Return) -> ast.AST:
        return ast.Pass() if node is getattr(self, "target", None) else node


def mutate_source(source: str, site: Site) -> str:
    tree = _Apply(site, 0).apply(ast.parse(source))
    return ast.unparse(tree) + "\n"


def copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", ".pytest_cache", "*.gguf")
    for name in ("advisor", "tests", "catalog", "rules", "benchmarks"):
        if (ROOT / name).exists():
            shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)


PRELOAD = ("pytest", "numpy", "gguf", "typer", "rich", "psutil", "yaml", "huggingface_hub", "llama_cpp")


def preload() -> None:
    """Import the third-party packages once in this process, never advisor or the tests: each mutant's pytest runs
    in a fork of it (os.fork), so it starts in milliseconds and imports the mutant's own advisor fresh."""
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional package missing only costs its import time later
            pass


def _pytest_args(tests: tuple[str, ...]) -> list[str]:
    return ["-x", "-q", "-p", "no:cacheprovider", "--no-header", "-m", "not engine and not mutation", *tests]


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[bool, str]:
    """(passed, the first failure or the last line of pytest's output); a run past ``timeout`` counts as failed."""
    os.environ["PYTHONPATH"] = str(copy)  # for any subprocess a test starts
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
    out = copy / ".mutant-output"
    pid = os.fork()
    if pid == 0:  # the child: run pytest on the copy, report through the exit status
        code = 3
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.chdir(copy)
            sys.path.insert(0, str(copy))
            import pytest

            code = int(pytest.main(_pytest_args(tests)))
        finally:
            sys.stdout.flush()
            os._exit(code)
    end = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > end:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return False, f"past the {timeout:g} s timeout"
        time.sleep(0.05)
    text = out.read_text(errors="replace") if out.exists() else ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    failed = next((ln for ln in lines if ln.startswith("FAILED")), lines[-1] if lines else "")
    return os.waitstatus_to_exitcode(status) == 0, failed


def run_group(group: str, sample: list[Site], copy: Path, timeout: float, deadline: float) -> list[tuple]:
    _, tests = GROUPS[group]
    results = []
    for site in sample:
        if site.equivalent:
            results.append((site, None, f"equivalent: {site.equivalent}"))
            continue
        if time.monotonic() > deadline:
            results.append((site, None, "not run: budget spent"))
            continue
        target = copy / site.path
        original = target.read_text()
        target.write_text(mutate_source(original, site))
        try:
            passed, why = run_tests(copy, tests, timeout)
        finally:
            target.write_text(original)
        results.append((site, not passed, why))
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    ap.add_argument("--per-group", type=int, default=14, help="mutants drawn per group")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--budget", type=float, default=280.0, help="seconds for the whole run")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per mutant")
    ap.add_argument("--threshold", type=float, default=0.8, help="least share of mutants killed per group")
    ap.add_argument("--list", action="store_true", help="print the sample and stop")
    args = ap.parse_args(argv)
    start = time.monotonic()
    samples = {}
    for group in args.groups:
        every = sites(group)
        samples[group] = sorted(random.Random(args.seed).sample(every, min(args.per_group, len(every))),
                                key=lambda s: (s.path, s.line))
        print(f"{group}: {len(every)} sites, {len(samples[group])} drawn (seed {args.seed})")
    if args.list:
        for group, sample in samples.items():
            for s in sample:
                print(f"  {group} {s.path}:{s.line} {s.function}: {s.change}")
        return 0
    status = 0
    preload()
    with tempfile.TemporaryDirectory(prefix="advisor-mutants-") as tmp:
        copy = Path(tmp)
        copy_repo(copy)
        ok, why = run_tests(copy, tuple(t for g in args.groups for t in GROUPS[g][1]), 4 * args.timeout)
        if not ok:
            print(f"the unmutated copy fails its tests: {why}")
            return 2
        print(f"{'group':<9} {'killed':>7} {'run':>4} {'share':>6}")
        report = []
        for k, group in enumerate(args.groups):
            # each group gets its share of what is left, so that a slow machine still samples every group
            left = start + args.budget - time.monotonic()
            deadline = time.monotonic() + max(0.0, left) / (len(args.groups) - k)
            results = run_group(group, samples[group], copy, args.timeout, deadline)
            run = [r for r in results if r[1] is not None]
            killed = sum(1 for r in run if r[1])
            share = killed / len(run) if run else 0.0
            print(f"{group:<9} {killed:>7} {len(run):>4} {share:>6.0%}")
            report.append((group, results))
            status |= share < args.threshold
        for group, results in report:
            for site, killed, why in results:
                if not killed:
                    state = ("equivalent" if site.equivalent else "not run") if killed is None else "SURVIVED"
                    print(f"  {state}: {group} {site.path}:{site.line} {site.function}: {site.change}"
                          + (f" ({site.equivalent})" if site.equivalent else ""))
    print(f"total {time.monotonic() - start:.0f} s; threshold {args.threshold:.0%} per group")
    return status


if __name__ == "__main__":
    sys.exit(main())
