"""llama.cpp's Hugging Face -> GGUF converter, from the same llama.cpp as the installed engine, in a managed venv.

The converter (``convert_hf_to_gguf.py``, its ``conversion/`` package and ``gguf-py``) ships inside the
llama-cpp-python source distribution (``vendor/llama.cpp``), so the one that matches the engine is fetched from the
package index by the engine's version: ``pip download --no-deps --no-binary llama-cpp-python
llama-cpp-python==V`` (only that distribution as source: ``--no-binary :all:`` also builds the build dependencies
pip needs to read its metadata from source, minutes of work for nothing, measured here). Only those files are
unpacked, into ``<venv>/llama.cpp-<V>/``: the venv directory holds everything (one directory to cache).
The venv gets the converter's own requirements (``requirements/requirements-convert_hf_to_gguf.txt`` and the files
it includes), with two changes: torch comes from a CPU source first (the converter only reads tensors), and
``gguf`` is not installed, because the script puts its vendored ``gguf-py`` first on ``sys.path`` itself
(convert_hf_to_gguf.py: ``sys.path.insert(1, ... 'gguf-py')`` unless NO_LOCAL_GGUF), so gguf-py's own
dependencies (its pyproject.toml) are installed instead.

Every command goes through the setup runner (advisor/setup/runner.py); the result is recorded in engines.json under
"converter" like an engine.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from advisor.errors import EngineMissingError, EngineSetupError, EngineVerifyError
from advisor.plan import LLAMA_CPP
from advisor.setup import record
from advisor.setup.builds import PYTHON_LEAKS, TORCH_CPU_INDEX, TORCH_INDEX_ENV, Step, venv_python
from advisor.setup.runner import Runner, SubprocessRunner, run_steps
from advisor.setup.verify import parse_marker

CONVERTER = "converter"
#: The distribution that vendors llama.cpp, and where in its sdist (llama-cpp-python's repository layout).
DIST = "llama-cpp-python"
VENDOR = "vendor/llama.cpp/"
#: What the converter needs from the vendored tree: the script, its package (split out of the script in 2026; older
#: trees keep every model class in the script), gguf-py, the requirements files, and the licence.
KEEP = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "requirements/", "requirements.txt", "LICENSE")
SCRIPT = "convert_hf_to_gguf.py"
REQUIREMENTS = "requirements/requirements-convert_hf_to_gguf.txt"
#: Written into the venv once its requirements are installed; a changed requirement set installs again.
MARKER = ".advisor-converter.json"

#: Asks the venv what it has, without converting anything (the modules the converter imports at start).
VERIFY = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy, torch, transformers, sentencepiece, safetensors, gguf
print("ADVISOR-CONVERTER " + json.dumps({"torch": torch.__version__, "transformers": transformers.__version__,
      "numpy": numpy.__version__, "gguf": getattr(gguf, "__file__", "")}))
"""

#: The installed llama-cpp-python's version, read from its metadata (no import of the library).
VERSION = r"""
import importlib.metadata as md
try:
    print("ADVISOR-VERSION " + '"' + md.version("llama_cpp_python") + '"')
except md.PackageNotFoundError:
    print("ADVISOR-VERSION null")
"""


@dataclass(frozen=True)
class Converter:
    """A converter ready to run: ``python script MODEL_DIR --outfile F --outtype T``."""

    version: str  # llama-cpp-python version whose vendored llama.cpp it is
    root: Path  # the vendored llama.cpp subset
    python: str  # the venv's interpreter

    @property
    def script(self) -> Path:
        return self.root / SCRIPT


@dataclass(frozen=True)
class ConverterPlan:
    version: str
    venv: Path
    root: Path
    python: str
    #: Commands still to run (nothing when the venv is already complete for this version).
    steps: list[Step] = field(default_factory=list)
    fetch_source: bool = False
    requirements: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"converter": True, "version": self.version, "venv": str(self.venv), "root": str(self.root),
                "python": self.python, "fetch_source": self.fetch_source, "requirements": list(self.requirements),
                "steps": [{"argv": s.argv, "why": s.why} for s in self.steps]}  # fmt: skip

    def script(self) -> str:
        lines = [f"# llama.cpp converter from {DIST} {self.version} into {self.venv}"]
        if self.fetch_source:
            lines.append(f"# {sdist_step(self.python, Path('DIR'), self.version).shell()}, then unpack "
                         f"{VENDOR}{{{','.join(KEEP)}}} into {self.root}")  # fmt: skip
        lines += [f"# {s.why}\n{s.shell()}" for s in self.steps]
        return "\n".join(lines) + "\n"


# -- what is installed -------------------------------------------------------------------------------------------


def engine_python(env: Mapping[str, str] | None = None) -> str | None:
    """The interpreter of the installed llama.cpp engine: what ``advisor setup`` recorded, else this Python when it
    has llama-cpp-python."""
    found = record.engine_python(LLAMA_CPP, env)
    if found is not None:
        return str(found)
    import importlib.util

    return sys.executable if importlib.util.find_spec("llama_cpp") is not None else None


def engine_version(python: str, runner: Runner) -> str | None:
    done = runner(Step([python, "-c", VERSION], unset=PYTHON_LEAKS), capture=True, timeout=60)
    found = parse_marker(done.stdout, "ADVISOR-VERSION") if done.ok else None
    return found if isinstance(found, str) else None


def default_venv(env: Mapping[str, str] | None = None) -> Path:
    entry = record.entry(CONVERTER, env)
    if entry and entry.get("venv"):
        return Path(entry["venv"])
    return record.engines_dir(env) / CONVERTER


# -- requirements --------------------------------------------------------------------------------------------------


def read_requirements(path: Path) -> list[str]:
    """Requirement lines of a pip requirements file, following ``-r`` includes; options (``--extra-index-url``)
    and comments dropped."""
    out: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += read_requirements(path.parent / line.split(None, 1)[1].strip())
        elif not line.startswith("-"):
            out.append(line)
    return out


def _name(requirement: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() if m else ""


def gguf_py_dependencies(gguf_py: Path) -> list[str]:
    """gguf-py's ``[project] dependencies`` (PEP 508 strings: 'numpy (>=2.2.6)')."""
    from advisor.errors import BadInputError
    from advisor.strict import read_toml

    data = read_toml(gguf_py / "pyproject.toml", BadInputError)
    deps = data.get("project", {}).get("dependencies", [])
    return [d for d in deps if isinstance(d, str)]


def requirements(root: Path) -> tuple[str | None, list[str]]:
    """(the converter's torch requirement, every other requirement to install)."""
    reqs = read_requirements(root / REQUIREMENTS)
    torch = next((r for r in reqs if _name(r) == "torch"), None)
    rest = [r for r in reqs if _name(r) not in ("torch", "gguf")]
    rest += [d for d in gguf_py_dependencies(root / "gguf-py") if _name(d) not in {_name(r) for r in rest}]
    return torch, rest


def torch_step(python: str, torch_req: str | None, index: str) -> Step:
    """torch from a CPU-only source, before anything else can pull a CUDA build from the default index.

    With an index (PyTorch's CPU index by default): ``pip install torch --index-url .../whl/cpu``, PyTorch's own
    command for a CPU install (pytorch.org "Start Locally", pip, CPU), keeping the converter's pin. With
    ADVISOR_TORCH_INDEX set to "" (machines that reach no PyTorch index): only pip's configured ``find-links`` (a
    local CPU wheel), with ``--no-index --no-deps``; the pin is dropped, since a local wheel has its own version,
    and torch's dependencies come with the next step."""
    spec = torch_req or "torch"
    if index:
        return Step([python, "-m", "pip", "install", spec, "--index-url", index], unset=PYTHON_LEAKS,
                    why="install PyTorch's CPU build (the converter reads tensors with torch)")  # fmt: skip
    return Step([python, "-m", "pip", "install", "--no-index", "--no-deps", "torch"], unset=PYTHON_LEAKS,
                why="install torch from pip's find-links only (ADVISOR_TORCH_INDEX is empty): a local CPU wheel")


def sdist_step(python: str, dest: Path, version: str) -> Step:
    return Step([python, "-m", "pip", "download", "--no-deps", "--no-binary", DIST, f"{DIST}=={version}",
                 "-d", str(dest)], unset=PYTHON_LEAKS,
                why=f"fetch the {DIST} {version} source distribution (it vendors llama.cpp and its converter)")


# -- source ----------------------------------------------------------------------------------------------------------


def _wanted(name: str) -> str | None:
    """The path below vendor/llama.cpp/ of a sdist member the converter needs, else None."""
    parts = name.split("/", 1)
    if len(parts) < 2 or not parts[1].startswith(VENDOR):
        return None
    rel = parts[1][len(VENDOR):]
    if any(rel == k or (k.endswith("/") and rel.startswith(k)) for k in KEEP) and ".." not in rel.split("/"):
        return rel
    return None


def unpack(sdist: Path, root: Path) -> None:
    """The converter's files of ``sdist`` into ``root``, atomically (a half-unpacked tree is never left there)."""
    tmp = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                rel = _wanted(member.name)
                if rel is None or not (member.isfile() or member.isdir()):
                    continue
                target = tmp / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is not None:
                    with src, target.open("wb") as out:
                        shutil.copyfileobj(src, out)
        if not (tmp / SCRIPT).is_file():
            raise EngineSetupError(f"{sdist.name} has no {VENDOR}{SCRIPT}")
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
    except (OSError, tarfile.TarError) as exc:
        raise EngineSetupError(f"cannot unpack {sdist}: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_source(python: str, version: str, root: Path, runner: Runner, say: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="advisor-sdist-", dir=root.parent) as d:
        step = sdist_step(python, Path(d), version)
        say(f"{step.why}: {step.shell()}")
        done = runner(step, capture=False)
        if not done.ok:
            raise EngineSetupError(f"could not download {DIST}=={version}'s source from the package index",
                                   hint="check the network or pip's index configuration")  # fmt: skip
        found = sorted(Path(d).glob("*.tar.gz"))
        if not found:
            raise EngineSetupError(f"pip downloaded no source archive of {DIST}=={version}")
        unpack(found[0], root)


def supported_architectures(root: Path) -> frozenset[str]:
    """The Hugging Face ``architectures`` names the converter registers: the string arguments of every
    ``@ModelBase.register(...)`` (older trees: ``@Model.register``) in the script and its ``conversion/`` package,
    read with ``ast`` (importing them needs torch)."""
    names: set[str] = set()
    files = [root / SCRIPT, *sorted((root / "conversion").glob("*.py"))]
    for f in files:
        try:
            tree = ast.parse(f.read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                continue
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute) and dec.func.attr == "register"
                        and isinstance(dec.func.value, ast.Name) and dec.func.value.id in ("ModelBase", "Model")):
                    names.update(a.value for a in dec.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return frozenset(names)


# -- plan, install, verify -------------------------------------------------------------------------------------------


def _req_hash(torch_req: str | None, reqs: list[str]) -> str:
    """What the venv was installed for: the requirement set (not where torch came from: a venv complete for it is
    reused whatever ADVISOR_TORCH_INDEX says now)."""
    return hashlib.sha256(json.dumps([torch_req, reqs]).encode()).hexdigest()[:16]


def _marker(venv: Path) -> dict[str, object]:
    try:
        data = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def plan_converter(version: str, venv: Path, env: Mapping[str, str], base_python: str | None = None,
                   force: bool = False) -> ConverterPlan:  # fmt: skip
    """What is still to do for a converter of ``version`` in ``venv`` (the source must be there to know the
    requirements; when it is not, the plan says so and lists the venv step only)."""
    python = venv_python(str(venv), "windows" if os.name == "nt" else "linux")
    root = venv / f"llama.cpp-{version}"
    steps: list[Step] = []
    if force or not Path(python).exists():
        steps.append(Step([base_python or sys.executable, "-m", "venv", *(["--clear"] if force else []), str(venv)],
                          unset=PYTHON_LEAKS, why="create the converter's virtualenv"))  # fmt: skip
    have_source = (root / SCRIPT).is_file() and not force
    reqs: tuple[str, ...] = ()
    if have_source:
        index = env.get(TORCH_INDEX_ENV, TORCH_CPU_INDEX)
        torch_req, rest = requirements(root)
        reqs = (torch_req or "torch", *rest)
        if force or _marker(venv).get("requirements") != _req_hash(torch_req, rest):
            steps.append(torch_step(python, torch_req, index))
            steps.append(Step([python, "-m", "pip", "install", "torch", *rest], unset=PYTHON_LEAKS,
                              why=f"install the converter's requirements ({REQUIREMENTS}, gguf-py's dependencies)"))
    return ConverterPlan(version, venv, root, python, steps, not have_source, reqs)


def _run(steps: list[Step], runner: Runner, say: Callable[[str], None]) -> None:
    run_steps(steps, runner, say, hint="see 'advisor setup --converter --dry-run' for the commands")


def verify(conv: Converter, runner: Runner) -> dict[str, object]:
    done = runner(Step([conv.python, "-c", VERIFY, str(conv.root / "gguf-py")], unset=PYTHON_LEAKS), capture=True,
                  timeout=300)  # fmt: skip
    found = parse_marker(done.stdout, "ADVISOR-CONVERTER") if done.ok else None
    if not isinstance(found, dict):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no answer"]
        raise EngineVerifyError(f"the converter's virtualenv cannot import its modules: {tail[0]}",
                                hint="run 'advisor setup --converter --force'")  # fmt: skip
    return found


def resolve_version(env: Mapping[str, str], runner: Runner) -> str:
    python = engine_python(env)
    version = engine_version(python, runner) if python else None
    if not version:
        raise EngineMissingError("no llama-cpp-python engine is installed, so there is no llama.cpp version to take "
                                 "the converter from", hint="run 'advisor setup --backend llama.cpp --yes'")
    return version


def ensure_converter(
    env: Mapping[str, str] | None = None,
    *,
    venv: Path | None = None,
    base_python: str | None = None,
    force: bool = False,
    runner: Runner | None = None,
    say: Callable[[str], None] = lambda line: None,
    version: str | None = None,
) -> Converter:
    """The converter of the installed engine's llama.cpp, installed (or reused) and verified, and recorded."""
    env = dict(os.environ if env is None else env)
    runner = runner or SubprocessRunner(env)
    version = version or resolve_version(env, runner)
    venv = Path(venv) if venv is not None else default_venv(env)
    venv.parent.mkdir(parents=True, exist_ok=True)
    plan = plan_converter(version, venv, env, base_python, force)
    _run([s for s in plan.steps if s.argv[1:3] == ["-m", "venv"]], runner, say)  # --clear empties the directory
    if not (plan.root / SCRIPT).is_file():
        fetch_source(plan.python, version, plan.root, runner, say)
    plan = plan_converter(version, venv, env, base_python)
    torch_req, rest = requirements(plan.root)
    conv = Converter(version, plan.root, plan.python)
    marker = _marker(venv)
    if plan.steps or force or marker.get("verified") != version:
        # (a venv complete and verified for this version is not asked again: a run pays no torch import for it)
        _run(plan.steps, runner, say)
        found = verify(conv, runner)
        summary = f"llama.cpp converter of {DIST} {version}: torch {found.get('torch')}, " \
                  f"transformers {found.get('transformers')}"
        marker = {"version": version, "requirements": _req_hash(torch_req, rest), "verified": version,
                  "summary": summary}
        (venv / MARKER).write_text(json.dumps(marker))
    record.save(CONVERTER, {"backend": CONVERTER, "python": plan.python, "venv": str(venv), "managed": True,
                            "verified": True, "version": version, "root": str(plan.root),
                            "summary": marker.get("summary", "")}, env)
    return conv
