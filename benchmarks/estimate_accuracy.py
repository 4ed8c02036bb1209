"""The estimator against llama.cpp (llama-cpp-python's build, CPU): one row per case and buffer, then a summary per
set.

Usage: python benchmarks/estimate_accuracy.py [--quick] [--record FILE].

Two sets, printed apart (tests/test_llamacpp_accuracy.py names them):
- calibration: the shapes the CPU compute coefficients were measured on (7 architectures x 7 settings, phi3, and
  3 recurrent-state models x 5 settings);
- evaluation: catalog models rebuilt header-only with their real tensor inventories (tests/gguf_from_catalog.py),
  EVAL_MODELS x EVAL_SETTINGS, never used to set a coefficient; plus Qwen2.5-0.5B shapes under realistic settings.
Error = (ours - llama.cpp's) / llama.cpp's, with llama.cpp's log rounding (two decimals of MiB) on its side;
"weights_exact" compares with llama_model_size to the byte. Targets: weights/KV/RS/output 0.5 %, compute 5 % or
2 MiB. ``--record FILE`` writes llama.cpp's measured buffers as JSON (tests/data/llamacpp-cpu/measured.json is such a
recording, replayed by tests/test_llamacpp_accuracy.py::test_recorded_measurements without the engine).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from advisor.gguf.estimate import Settings, estimate  # noqa: E402
from advisor.gguf.facts import read_gguf_facts  # noqa: E402
from tests import ggufgen  # noqa: E402
from tests.test_llamacpp_accuracy import (  # noqa: E402
    BASE, EVAL_LIVE, EVAL_MODELS, EVAL_SETTINGS, MIB, RECURRENT_SETTINGS, RECURRENT_SPECS, SETTINGS, SPECS, eval_gguf,
    measure, spec_gguf, within)

REALISTIC: dict[str, Settings] = {
    "c4096": BASE,
    "c32768": dataclasses.replace(BASE, n_ctx=32768),
    "c8192-fa-off": dataclasses.replace(BASE, n_ctx=8192, flash_attn="off"),
    "c32768-fa-off": dataclasses.replace(BASE, n_ctx=32768, flash_attn="off"),
    "c16384-q8": dataclasses.replace(BASE, n_ctx=16384, cache_type_k="q8_0", cache_type_v="q8_0"),
    "c16384-np-auto": dataclasses.replace(BASE, n_ctx=16384, n_parallel=-1),
    "c16384-np4": dataclasses.replace(BASE, n_ctx=16384, n_parallel=4),
    "c4096-ub256-fa-off": dataclasses.replace(BASE, n_ubatch=256, flash_attn="off"),
}


def cases(quick: bool, heavy: bool) -> list[tuple[str, str, str, Settings]]:
    """(set, model, setting name, settings)."""
    out: list[tuple[str, str, str, Settings]] = []
    if not quick:
        out += [("calibration", a, n, s) for a in SPECS for n, s in SETTINGS.items()]
        out += [("calibration", "phi3", n, s) for n, s in SETTINGS.items()]
        out += [("calibration", f"rs-{a}", n, s) for a in RECURRENT_SPECS for n, s in RECURRENT_SETTINGS.items()]
        models = EVAL_MODELS if heavy else EVAL_LIVE
        out += [("evaluation", m, n, s) for m in models for n, s in EVAL_SETTINGS.items()]
    out += [("evaluation", "qwen2-0.5B", n, s) for n, s in REALISTIC.items()]
    return out


def path_of(d: Path, set_name: str, model: str) -> Path:
    if model == "qwen2-0.5B":
        p = d / "qwen2-0.5B.gguf"
        return p if p.exists() else ggufgen.write(p, ggufgen.QWEN2_05B, sparse=True)
    return eval_gguf(d, model) if set_name == "evaluation" else spec_gguf(d, model)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="only the realistic-size Qwen2.5-0.5B cases")
    parser.add_argument("--record", type=Path, help="write llama.cpp's measured buffers to this JSON file (rows of "
                        "cases not measured this time are kept)")
    parser.add_argument("--heavy", action="store_true", help="also the 10-12 GB MoE evaluation models (mapping them "
                        "populates that much page cache)")
    args = parser.parse_args()
    import llama_cpp

    rows: list[tuple[str, str, str, float, float, bool]] = []
    recorded: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="advisor-acc-") as tmp:
        d = Path(tmp)
        for set_name, model, sname, s in cases(args.quick, args.heavy):
            path = path_of(d, set_name, model)
            est = estimate(read_gguf_facts(path), s)
            got = measure(path, s)
            theirs = {"weights": got["weights"], "weights_exact": got["model_size"], "kv": got["kv"],
                      "rs": got["rs"], "compute": got["compute"], "output": got["output"]}
            ours = {"weights": est.weights_bytes, "weights_exact": est.weights_bytes, "kv": est.kv_cache_bytes,
                    "rs": est.recurrent_bytes, "compute": est.compute_bytes, "output": est.output_bytes}
            for buf in theirs:
                rows.append((set_name, f"{model}/{sname}", buf, ours[buf], theirs[buf],
                             within(buf, ours[buf], theirs[buf])))
            if model != "qwen2-0.5B":
                recorded.append({"set": set_name, "model": model, "setting": sname, "buffers": theirs})
            if set_name == "evaluation" and model != "qwen2-0.5B" and sname == list(EVAL_SETTINGS)[-1]:
                path.unlink()  # the catalog models are large sparse files: one at a time
    failures = 0
    for set_name in ("calibration", "evaluation"):
        sel = [r for r in rows if r[0] == set_name]
        if not sel:
            continue
        print(f"\n{set_name.upper()} SET")
        print(f"{'case':44} {'buffer':14} {'ours MiB':>11} {'llama.cpp MiB':>14} {'error %':>8}")
        errors: dict[str, list[float]] = {}
        for _, case, buf, o, t, ok in sel:
            err = 0.0 if o == t or (abs(o - t) <= 0.005 * MIB and buf != "weights_exact") else \
                (o - t) / t * 100 if t else float("inf")
            errors.setdefault(buf, []).append(abs(err))
            failures += not ok
            print(f"{case:44} {buf:14} {o / MIB:11.2f} {t / MIB:14.2f} {err:8.2f}{'' if ok else '  OUT OF TARGET'}")
        print(f"\n{set_name} summary: {len({c.split('/')[0] for _, c, *_ in sel})} models, "
              f"{len({c for _, c, *_ in sel})} cases")
        print(f"  {'buffer':14} {'median |err| %':>15} {'max |err| %':>12} {'in target':>10}")
        for buf, errs in errors.items():
            ok = sum(1 for r in sel if r[2] == buf and r[5])
            print(f"  {buf:14} {statistics.median(errs):15.2f} {max(errs):12.2f} {ok:>6d}/{len(errs)}")
    print(f"\nout of target (weights/KV/RS/output 0.5 %, compute 5 % or 2 MiB): {failures}")
    if args.record:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        done = {(r["set"], r["model"], r["setting"]) for r in recorded}
        if args.record.exists():
            old = json.loads(args.record.read_text())["rows"]
            recorded = [r for r in old if (r["set"], r["model"], r["setting"]) not in done] + recorded
        args.record.write_text(json.dumps({"llama_cpp_python": llama_cpp.__version__, "rows": recorded},
                                          indent=1) + "\n")
        print(f"recorded {len(recorded)} cases to {args.record}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
