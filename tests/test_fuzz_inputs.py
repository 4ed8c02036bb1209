"""A seeded mutation fuzzer for what advisor reads from users: GGUF headers (reader and estimator), hardware profiles
and plan files. Every mutated input must either be accepted or refused with a BadInputError (exit 2, one line);
any other exception, a case that runs past its time limit, or a memory blow-up fails the test and prints the seed
and case number that reproduce it.

The cases run in a child process (``python -m tests.test_fuzz_inputs KIND SEED N``) with an address-space limit
(RLIMIT_AS), so that an allocation sized from a hostile header raises MemoryError there instead of taking the
machine, and a per-case alarm (SIGALRM), so that a loop sized from a header is reported as a hang.

Mutations: structure-aware ones on data (a key/value replaced by a value of another GGUF type, NaN, infinities,
negative and huge integers, long strings and arrays; counts, tensor names, dimensions, types and offsets changed;
JSON fields replaced, removed, nested, added) and byte-level ones on the serialised file (bit flips, overwritten
64-bit fields, truncation, insertion). Reproduce one case: ``ADVISOR_FUZZ_SEED=S ADVISOR_FUZZ_CASES=N``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SEED = int(os.environ.get("ADVISOR_FUZZ_SEED", "16"))
CASES = {"gguf": 1500, "profile": 1000, "plan": 1000}
if os.environ.get("ADVISOR_FUZZ_CASES"):
    CASES = {k: int(os.environ["ADVISOR_FUZZ_CASES"]) for k in CASES}
#: Per-case wall-clock limit and the child's address-space limit.
CASE_SECONDS = 5
MEMORY_LIMIT = 3 << 30
ROOT = Path(__file__).resolve().parent.parent

# -- values a mutation may put anywhere ---------------------------------------------------------------------------

_NUMBERS = [0, 1, -1, 2, 3, 255, 256, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62, 2**63 - 1, -(2**31),
            -(2**63), 513, 1025, 65536]
_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e300, -1e300, 1e-300, 0.5, 3.0]
_STRINGS = ["", "x", "blk.x.", "../..", "a\nb", "%h$HOME", "\x00", "é" * 50, "q" * 70, "llama", "f16", "8.9", "gfx90a"]


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return rng.choice(_NUMBERS)
    if pick == 1:
        return rng.choice([0.5, 1e300, -1e300, -0.0, 1.5])
    if pick == 2:
        return rng.choice(_STRINGS)
    if pick == 3:
        return rng.choice([True, False])
    if pick == 4:
        return None
    if pick == 5:
        return rng.choice(_NUMBERS) * rng.choice([1, -1])
    if pick == 6:
        return [_random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    if pick == 7:
        return {rng.choice(_STRINGS + ["index", "name", "ctx"]): _random_json(rng, depth + 1)
                for _ in range(rng.randrange(3))}
    return [[[[]]]] if rng.random() < 0.5 else {"a": {"b": {"c": {}}}}


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def mutate_json(doc: Any, rng: random.Random) -> str:
    doc = copy.deepcopy(doc)
    for _ in range(rng.randrange(1, 4)):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = rng.randrange(5)
        if action == 0 and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == 1 and isinstance(parent, dict):
            parent[rng.choice(_STRINGS + ["extra"])] = _random_json(rng)
        elif action == 2 and isinstance(parent, list):
            parent.extend(copy.deepcopy(parent) * rng.randrange(1, 3))
        else:
            parent[path[-1]] = _random_json(rng)
    text = json.dumps(doc)
    if rng.random() < 0.15:  # byte-level damage to the text
        pos = rng.randrange(len(text))
        text = text[:pos] + rng.choice(["", "{", "]", "NaN", "Infinity", "\"", "\\", "[" * 2000, "1e999"]) + \
            text[pos + rng.randrange(3):]
    return text


# -- GGUF -----------------------------------------------------------------------------------------------------------


def _gguf_value(rng: random.Random) -> tuple[int, Any]:
    from tests.gguf_doc import ARRAY, STRING

    kind = rng.randrange(8)
    if kind == 0:
        return 12, rng.choice(_FLOATS)
    if kind == 1:
        return 6, rng.choice([math.nan, math.inf, -math.inf, 0.5, -2.0])
    if kind == 2:
        return 11, rng.choice(_NUMBERS)
    if kind == 3:
        return 10, rng.choice([n for n in _NUMBERS if n >= 0])
    if kind == 4:
        return 5, rng.choice([n for n in _NUMBERS if -(2**31) <= n < 2**31])
    if kind == 5:
        return STRING, rng.choice(_STRINGS)
    if kind == 6:
        return ARRAY, (5, [rng.choice([-1, 0, 1, 2, 4, 2**31 - 1]) for _ in range(rng.choice([0, 1, 2, 3, 600]))])
    return 7, rng.choice([True, False])


def mutate_gguf(base: bytes, rng: random.Random) -> bytes:
    from tests.gguf_doc import parse

    doc = parse(base)
    for _ in range(rng.randrange(1, 4)):
        action = rng.choices(range(10), weights=[20, 15, 15, 8, 8, 8, 5, 4, 2, 5])[0]
        if action <= 2 and doc.kv:  # a hyper-parameter (or any key) gets a value of another type
            arch = next((v for k, _, v in doc.kv if k == "general.architecture"), None)
            keys = [k for k, _, _ in doc.kv if k.startswith(f"{arch}.")] or [k for k, _, _ in doc.kv]
            key = rng.choice(keys)
            doc.set(key, *_gguf_value(rng))
        elif action == 3 and doc.kv:
            doc.kv.pop(rng.randrange(len(doc.kv)))
        elif action == 4 and doc.tensors:
            i = rng.randrange(len(doc.tensors))
            name, ne, ttype, offset = doc.tensors[i]
            name = rng.choice([name.replace("blk.0.", "blk.x."), name.replace("blk.0.", "blk.99999999999."),
                               name.replace("blk.0.", "blk.7."), name.replace("blk.0.", "blk.511."),
                               "blk.-1.x", "t" * 80, "", name + "\n"])
            doc.tensors[i] = (name, ne, ttype, offset)
        elif action == 5 and doc.tensors:
            i = rng.randrange(len(doc.tensors))
            name, ne, ttype, offset = doc.tensors[i]
            ne = [rng.choice([0, 1, 32, 2**31, 2**40, 2**63 - 1, 2**64 - 1]) for _ in range(rng.choice([0, 1, 2, 4, 5]))]
            doc.tensors[i] = (name, ne, rng.choice([ttype, 0, 1, 8, 39, 40, 2**31, 2**32 - 1]), offset)
        elif action == 6 and doc.tensors:
            i = rng.randrange(len(doc.tensors))
            name, ne, ttype, _ = doc.tensors[i]
            doc.tensors[i] = (name, ne, ttype, rng.choice([1, 2**40, 2**64 - 1, 32]))
        elif action == 7:
            if rng.random() < 0.5:
                doc.n_tensors = rng.choice([0, len(doc.tensors) + 1, 2**20, 2**63])
            else:
                doc.n_kv = rng.choice([0, len(doc.kv) + 1, 2**16, 2**63])
        elif action == 8:
            doc.version = rng.choice([1, 2, 4, 2**32 - 1])
        else:
            doc.tensors = doc.tensors + doc.tensors[: rng.randrange(1, 3)]
    data = bytearray(doc.to_bytes())
    header = min(len(data), len(base) - len(doc.data) + 64)
    for _ in range(rng.choice([0, 0, 1, 3])):  # byte-level damage in the header
        kind = rng.randrange(4)
        header = min(header, len(data))
        if header < 13:
            break
        pos = rng.randrange(4, header - 8)
        if kind == 0:
            data[pos] ^= 1 << rng.randrange(8)
        elif kind == 1:
            data[pos:pos + 8] = struct.pack("<Q", rng.choice([2**63, 2**40, 2**32, 0xFFFFFFFFFFFFFFFF]))
        elif kind == 2:
            del data[pos:]
        else:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    return bytes(data)


# -- the child: run cases, report failures ------------------------------------------------------------------------


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _bases(workdir: Path) -> list[bytes]:
    from tests import ggufgen

    specs = [ggufgen.Spec(), ggufgen.TINY["qwen3moe"], ggufgen.TINY["gemma3"]]
    return [ggufgen.write(workdir / f"base{i}.gguf", spec, sparse=True).read_bytes() for i, spec in enumerate(specs)]


def _profile_base() -> dict[str, Any]:
    from tests.test_hardening_inputs import profile_dict

    return profile_dict()


def _plan_base(workdir: Path) -> dict[str, Any]:
    return {"schema": 1, "backend": "llama.cpp",
            "model": {"id": "tiny", "path": str(workdir / "m.gguf"), "files": [], "quant": "Q8_0"},
            "settings": {"n_gpu_layers": 0, "ctx": 512, "parallel": 1, "tensor_split": [1.0, 2.0]},
            "engine": {"name": "llama-server", "exe": "/usr/local/bin/llama-server", "flags": {"offline": True}},
            "sampling": {"temperature": 0.7}, "fallbacks": [{"settings": {"ctx": 256}, "reason": "smaller"}]}


def run_cases(kind: str, seed: int, n: int, workdir: Path) -> list[dict[str, Any]]:
    import signal

    from advisor.errors import BadInputError

    rng = random.Random(f"{kind}-{seed}")
    path = workdir / ("case.gguf" if kind == "gguf" else "case.json")
    failures: list[dict[str, Any]] = []
    if kind == "gguf":
        from advisor.gguf.estimate import Settings, estimate
        from advisor.gguf.facts import read_gguf_facts

        bases = _bases(workdir)
        settings = [Settings(), Settings(n_ctx=4096, n_gpus=2, n_gpu_layers=-1, backend="cuda"),
                    Settings(n_parallel=2, flash_attn="on", cache_type_v="q8_0", n_cpu_moe=1)]

        def one(i: int) -> None:
            path.write_bytes(mutate_gguf(rng.choice(bases), rng))
            facts = read_gguf_facts(path)
            est = estimate(facts, rng.choice(settings))
            negative = [d.device for d in est.devices if min(d.weights_bytes, d.kv_cache_bytes, d.compute_bytes,
                                                             d.total_bytes) < 0]
            if negative:
                raise AssertionError(f"negative memory on {negative} for an accepted header")
    elif kind == "profile":
        from advisor.app.advise import advise, load_profile
        from advisor.errors import AdvisorError
        from advisor.planner import Request

        base = _profile_base()

        def one(i: int) -> None:
            path.write_text(mutate_json(base, rng))
            profile = load_profile(path)
            if rng.random() < 0.25:  # an accepted profile must plan (or say nothing fits), never crash the planner
                try:
                    advise(profile, Request(task=rng.choice(["chat", "code"]), concurrency=rng.choice([1, 8])))
                except AdvisorError:
                    pass
    else:
        from advisor.app.serve import load_plan as _load_plan

        base = _plan_base(workdir)

        def one(i: int) -> None:
            path.write_text(mutate_json(base, rng))
            _load_plan(path)

    signal.signal(signal.SIGALRM, _alarm)
    for i in range(n):
        signal.alarm(CASE_SECONDS)
        try:
            one(i)
        except BadInputError as exc:
            if "\n" in exc.message or not exc.message:
                failures.append({"case": i, "error": "message is not one line", "message": exc.message[:300]})
        except _Timeout:
            failures.append({"case": i, "error": f"ran past {CASE_SECONDS} s"})
        except BaseException as exc:  # noqa: BLE001 - every other exception is a finding
            failures.append({"case": i, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        finally:
            signal.alarm(0)
    return failures


def _child(kind: str, seed: int, n: int) -> None:
    import resource
    import tempfile

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    with tempfile.TemporaryDirectory() as d:
        failures = run_cases(kind, seed, n, Path(d))
    print(json.dumps(failures))


# -- the tests --------------------------------------------------------------------------------------------------------

import pytest  # noqa: E402


@pytest.mark.parametrize("kind", sorted(CASES))
def test_fuzz(kind: str) -> None:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "tests.test_fuzz_inputs", kind, str(SEED), str(CASES[kind])],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env=dict(os.environ))
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    shown = "\n".join(f"case {f['case']}: {f['error']}" for f in failures[:15])
    assert not failures, (f"{len(failures)} of {CASES[kind]} {kind} cases (seed {SEED}) failed in "
                          f"{time.monotonic() - start:.0f} s:\n{shown}")


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
