"""The layers README's "Development" section draws: a module imports its own layer or lower ones, never a higher
one (at module level or inside a function), and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "advisor"

#: Floor of each top-level part of the package; a part may import its own floor and those below.
LAYERS = {
    "__init__": 0, "__main__": 6, "errors": 0, "settings": 0, "strict": 0, "system": 0,
    "probe": 1, "gguf": 1, "vllm": 1, "store": 1, "plan": 1,
    "hub": 2, "catalog": 2, "engines": 2, "rules": 2,
    "planner": 3, "runner": 3, "setup": 3,
    "app": 4, "render": 4,
    "cli": 5,
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported advisor module, at module level?) for every import in ``path``, ``if TYPE_CHECKING`` excluded."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(node)}
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        for name in names:
            if name.split(".")[0] == "advisor":
                found.append((name, id(node) in top))
    return found


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_has_a_layer() -> None:
    assert {_part(m) for m in MODULES} <= set(LAYERS), {_part(m) for m in MODULES} - set(LAYERS)


def test_no_import_reaches_a_higher_layer() -> None:
    bad = []
    for module, path in MODULES.items():
        for imported, _ in _imports(path):
            if LAYERS[_part(imported)] > LAYERS[_part(module)]:
                bad.append(f"{module} imports {imported}")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycle_at_module_level() -> None:
    graph = {m: {i for i, top in _imports(p) if top and i in MODULES and i != m} for m, p in MODULES.items()}
    # A package's __init__ runs before its submodules: importing advisor.x.y imports advisor.x too.
    for m in list(graph):
        graph[m] |= {".".join(i.split(".")[:k]) for i in graph[m] for k in range(2, len(i.split(".")))
                     if ".".join(i.split(".")[:k]) in MODULES and ".".join(i.split(".")[:k]) != m
                     and not m.startswith(".".join(i.split(".")[:k]) + ".")}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles
