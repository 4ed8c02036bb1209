"""``advisor quantize``: a Hugging Face checkpoint -> GGUF in the quant that fits, with llama.cpp's own tools.

1. the source: a local checkpoint directory, or a Hub repository fetched into huggingface_hub's cache;
2. the checks that need no converter run: config.json, the architecture against the converter's registered ones,
   the output (never overwritten without ``yes``), free disk for the intermediate and the output;
3. the quant: given, or ``auto``: the planner's choice for this machine with the checkpoint posing as a catalog
   model that has every quant llama-quantize makes (its reasons say why);
4. llama.cpp's converter (advisor/setup/converter.py: the engine's own llama.cpp version) writes the 16-bit GGUF;
5. llama.cpp's quantizer writes the output: ``llama-quantize`` when on PATH, else llama-cpp-python's
   ``llama_model_quantize`` in the engine's interpreter (a subprocess: an abort in llama.cpp is not ours, and
   Ctrl-C stops it).
Every file is written under a temporary name in its final directory and renamed when complete, so an interrupted or
failed run leaves no half-written GGUF behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advisor.errors import AdvisorError, BadInputError, EngineError

OUTTYPES = {"f16": 2, "bf16": 2, "f32": 4}  # bytes per weight of the converter's --outtype
#: Quants whose tensors llama.cpp refuses to make without an importance matrix: the default tensor type of these
#: ftypes (src/llama-quant.cpp llama_ftype_get_default_type) is one that tensor_requires_imatrix() lists (IQ1_S, IQ1_M,
#: IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, and Q2_K inside a Q2_K_S file).
NEEDS_IMATRIX = frozenset({"IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "IQ3_XXS", "Q2_K_S"})
#: Room for what is not tensor data (vocabulary, chat template, alignment): an allowance of our choosing, far above
#: a 256k-token vocabulary's ~10 MB in a GGUF (catalog/README.md: ~24-39 bytes per token).
METADATA_ALLOWANCE = 64 * 2**20
#: Frames of the converter's traceback that mean "the tokenizer": its vocabulary functions (set_vocab,
#: _set_vocab_gpt2, get_vocab_base, does_token_look_special ...) in conversion/base.py.
_VOCAB_FRAME = re.compile(r'File ".*", line \d+, in (\w*vocab\w*|get_vocab_base_pre)\b')
_EXC_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*)(?:Error|Exception|Exit)\b.*|^NotImplementedError.*")


class QuantizeError(EngineError):
    """The converter or the quantizer failed on an input it accepted (their output is above)."""


@dataclass(frozen=True)
class QuantizeRequest:
    source: str
    quant: str = "auto"
    out: Path | None = None
    outtype: str = "f16"
    imatrix: Path | None = None
    keep_f16: bool = False
    hardware: Path | None = None
    yes: bool = False


@dataclass(frozen=True)
class QuantChoice:
    quant: str
    reasons: list[str]


@dataclass
class QuantizeResult:
    path: str
    quant: str
    size_bytes: int
    source: str
    f16_path: str | None
    reasons: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "quant": self.quant, "size_bytes": self.size_bytes, "source": self.source,
                "f16_path": self.f16_path}  # fmt: skip


# -- quant names -----------------------------------------------------------------------------------------------------


def quant_names() -> dict[str, int]:
    """llama-quantize's target names -> llama_ftype, from gguf's LlamaFileType (llama.h's enum, gguf-py
    constants.py): MOSTLY_Q4_K_M -> Q4_K_M, ALL_F32 -> F32. GUESSED is not a target."""
    import gguf

    out = {}
    for member in gguf.LlamaFileType:
        name = member.name.removeprefix("MOSTLY_").removeprefix("ALL_")
        if name != "GUESSED":
            out[name] = int(member.value)
    return out


def normalize_quant(quant: str) -> str:
    q = quant.strip().upper()
    known = quant_names()
    if q not in known:
        raise BadInputError(f"--quant {quant!r} is not a quantization llama.cpp makes",
                            hint=f"one of: auto, {', '.join(sorted(known))}")  # fmt: skip
    return q


# -- source ----------------------------------------------------------------------------------------------------------


def resolve_source(source: str, say: Callable[[str], None]) -> Path:
    """A checkpoint directory with config.json: the local directory, else the Hub repository's snapshot."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise BadInputError(f"{source} is a file; quantize takes a Hugging Face checkpoint directory "
                                "(config.json, *.safetensors, tokenizer files)")  # fmt: skip
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", source):
        from advisor.hub.download import fetch_snapshot

        path = fetch_snapshot(source, None, say)
    else:
        raise BadInputError(f"{source}: no such directory, and not a Hub repository id (org/name)")
    if not (path / "config.json").is_file():
        raise BadInputError(f"{source}: no config.json: not a Hugging Face checkpoint directory")
    return path


def read_config(model_dir: Path) -> dict[str, Any]:
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{model_dir / 'config.json'}: not readable JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise BadInputError(f"{model_dir / 'config.json'}: not a JSON object")
    return cfg


def architecture(cfg: dict[str, Any]) -> str | None:
    """The name the converter looks up, as its get_model_architecture() takes it for a text model: the first of
    ``architectures``, or of ``text_config.architectures`` when there is one."""
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
    for arches in (text.get("architectures"), cfg.get("architectures")):
        if isinstance(arches, list) and arches and isinstance(arches[0], str):
            return arches[0]
    return None


def check_architecture(cfg: dict[str, Any], supported: frozenset[str], where: Path, version: str) -> str:
    arch = architecture(cfg)
    if arch is None:
        raise BadInputError(f"{where / 'config.json'} names no architecture ('architectures' is missing)")
    if arch not in supported:
        raise BadInputError(f"{where}: architecture {arch} is not supported by llama.cpp's converter "
                            f"(llama-cpp-python {version}, {len(supported)} architectures registered)",
                            hint="a newer llama.cpp may support it: 'advisor setup --backend llama.cpp --force'")
    return arch


def checkpoint_params(model_dir: Path) -> int:
    """Parameters in the checkpoint's safetensors headers (8-byte little-endian length, then JSON: the safetensors
    format), or 0 when it has none."""
    total = 0
    for f in sorted(model_dir.glob("*.safetensors")):
        try:
            with f.open("rb") as fh:
                header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        except (OSError, ValueError) as exc:
            raise BadInputError(f"{f}: not a safetensors file ({exc})") from None
        for name, t in header.items():
            if name != "__metadata__":
                n = 1
                for d in t.get("shape", []):
                    n *= int(d)
                total += n
    return total


# -- quant choice ----------------------------------------------------------------------------------------------------


def as_catalog_model(model_dir: Path, imatrix: bool) -> Any:
    """The checkpoint as a catalog Model (advisor.catalog.overlay.model_from_config_dir) whose variants are every
    quant llama-quantize makes and the catalog rates (catalog/quants.toml), made in place of the checkpoint."""
    from advisor.catalog.load import load_catalog
    from advisor.catalog.model import GgufGroup
    from advisor.catalog.overlay import model_from_config_dir

    catalog = load_catalog(overlay=False)
    m = model_from_config_dir(model_dir, model_id=None, tasks=["chat"], date=time.strftime("%Y-%m-%d"))
    tokenizer = "llama" if (model_dir / "tokenizer.model").is_file() else "gpt2"
    rated = {q.name for q in catalog.quants.quant}
    # MXFP4_MOE is for the experts of a MoE model (llama-quant.cpp: other tensors stay Q8_0)
    quants = tuple(q for q in quant_names() if q in rated and (imatrix or q not in NEEDS_IMATRIX)
                   and (q != "MXFP4_MOE" or m.arch.n_expert))
    group = GgufGroup(repo=str(model_dir.resolve()), file="{quant}.gguf", quants=quants, imatrix=imatrix,
                      notes="advisor quantize: every quant llama-quantize makes")
    m = dataclasses.replace(m, arch=dataclasses.replace(m.arch, tokenizer=tokenizer), variants=(), gguf=(group,))
    return dataclasses.replace(catalog, models=(m,), user_ids=frozenset({m.id})), m


def choose_quant(model_dir: Path, profile: Any, imatrix: bool) -> QuantChoice:
    """The planner's best llama.cpp plan for the checkpoint on ``profile``: its quant, its reasons, and the better
    quants it rejected and why."""
    from advisor.planner import Request, recommend
    from advisor.plan import LLAMA_CPP
    from advisor.rules import load_rules

    try:
        catalog, model = as_catalog_model(model_dir, imatrix)
    except BadInputError as exc:
        raise BadInputError(f"--quant auto cannot size this checkpoint: {exc.message}",
                            hint="give --quant, e.g. --quant Q4_K_M") from None  # fmt: skip
    rec = recommend(profile, catalog, load_rules(), Request(model=model.id, backend=LLAMA_CPP, top=1))
    plan = rec.best()
    quant = plan.model.quant or ""
    # the planner may size a variant more than once (approximate, then exact layout): its first reason stands
    first: dict[str, str] = {}
    for r in rec.rejections:
        if r.quant and r.quant != quant:
            first.setdefault(r.quant, f"rejected {r.quant}: {r.message}")
    reasons = list(first.values())
    return QuantChoice(quant, [f"chose {quant}: the best-rated quant whose plan fits this machine", *plan.reasons,
                               *reasons])  # fmt: skip


# -- files -----------------------------------------------------------------------------------------------------------


def partial_name(final: Path) -> Path:
    """A temporary name in the final file's directory (the rename at the end stays on one filesystem)."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}")


def check_outputs(out: Path, f16_final: Path | None, yes: bool) -> None:
    for p in (out, f16_final):
        if p is not None and p.exists() and not yes:
            raise BadInputError(f"{p} already exists", hint="pass --yes to overwrite it, or choose --out")
    if not out.parent.is_dir():
        raise BadInputError(f"{out.parent} is not a directory")


def check_disk(directory: Path, params: int, outtype: str, quant: str, extra: int) -> int:
    """Free space for the 16-bit intermediate and the output, both in ``directory``; the bytes needed.

    The intermediate holds every weight at the outtype's width; the output is at most that (F32 output: 4 bytes)."""
    inter = params * OUTTYPES[outtype] + METADATA_ALLOWANCE + extra
    out = params * (4 if quant == "F32" else OUTTYPES[outtype]) + METADATA_ALLOWANCE + extra
    need = inter + out
    free = shutil.disk_usage(directory).free
    if free < need:
        raise BadInputError(f"not enough free disk in {directory}: {need / 2**30:.2f} GiB needed for the "
                            f"{outtype.upper()} intermediate and the output, {free / 2**30:.2f} GiB free",
                            hint="free some space or choose --out on a larger disk")  # fmt: skip
    return need


def _remove(*paths: Path | None) -> None:
    for p in paths:
        if p is not None:
            try:
                p.unlink()
            except FileNotFoundError:
                pass


# -- running the tools -----------------------------------------------------------------------------------------------


def stream(argv: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run ``argv`` with its output forwarded to our stderr line by line (data goes to stdout); (exit code, its
    last 200 lines). Ctrl-C stops the child before it is re-raised."""
    tail: list[str] = []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, text=True, errors="replace", bufsize=1)  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            tail.append(line.rstrip("\n"))
            del tail[:-200]
        return proc.wait(), tail
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise


def converter_failure(source: str, tail: list[str], rc: int) -> AdvisorError:
    """A refusal of the input (the tokenizer, the architecture) is bad input; anything else a tool failure."""
    exc = next((line.strip() for line in reversed(tail) if _EXC_LINE.match(line.strip())), "")
    if any(_VOCAB_FRAME.search(line) for line in tail):
        return BadInputError(f"{source}: llama.cpp's converter refuses its tokenizer: {exc or 'see its output above'}")
    refused = next((line for line in tail if "is not supported" in line), None)
    if refused:
        return BadInputError(f"{source}: llama.cpp's converter says: {refused.split(':', 2)[-1].strip()}")
    return QuantizeError(f"llama.cpp's converter failed on {source} (exit {rc}): {exc or 'its output is above'}")


def tool_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def convert(conv: Any, model_dir: Path, dest: Path, outtype: str, source: str) -> None:
    argv = [conv.python, str(conv.script), str(model_dir), "--outfile", str(dest), "--outtype", outtype]
    rc, tail = stream(argv, tool_env())
    if rc != 0 or not dest.is_file():
        raise converter_failure(source, tail, rc)


#: Runs in the engine's interpreter: llama-cpp-python's ctypes binding of llama_model_quantize with
#: llama_model_quantize_default_params(), the importance matrix loaded as llama.cpp's tools/quantize does
#: (common/imatrix-loader.cpp: GGUF "<tensor>.in_sum2" / "<tensor>.counts", each expert's sums divided by its count,
#: 1 where the count is 0; the legacy .dat: entries of name, ncall, values, divided by ncall).
#: argv: input, output, llama_ftype, threads, imatrix file or "", gguf-py directory (reads a GGUF imatrix).
QUANTIZE_CHILD = r"""
import ctypes, struct, sys
import llama_cpp

def load_imatrix(path, gguf_py):
    with open(path, "rb") as fh:
        magic = fh.read(4)
    out = {}
    if magic == b"GGUF":
        sys.path.insert(0, gguf_py)
        import gguf
        sums, counts = {}, {}
        for t in gguf.GGUFReader(path).tensors:
            if t.name.endswith(".in_sum2"):
                sums[t.name[:-len(".in_sum2")]] = [float(x) for x in t.data.reshape(-1)]
            elif t.name.endswith(".counts"):
                counts[t.name[:-len(".counts")]] = [round(float(x)) for x in t.data.reshape(-1)]
        for name, s in sums.items():
            if name not in counts:
                sys.exit(f"imatrix {path}: mismatched sums and counts for {name}")
            c = counts[name]
            ne0 = len(s) // len(c)
            out[name] = [s[j * ne0 + i] / c[j] if c[j] > 0 else 1.0 for j in range(len(c)) for i in range(ne0)]
        return out
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<i", fh.read(4))
        for _ in range(n):
            (length,) = struct.unpack("<i", fh.read(4))
            name = fh.read(length).decode()
            ncall, nval = struct.unpack("<ii", fh.read(8))
            vals = struct.unpack(f"<{nval}f", fh.read(4 * nval))
            out[name] = [v / ncall for v in vals] if ncall > 0 else list(vals)
    return out

src, dst, ftype, nthread, imatrix, gguf_py = sys.argv[1:7]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(ftype)
params.nthread = int(nthread)
keep = []
if imatrix:
    data = load_imatrix(imatrix, gguf_py)
    print(f"advisor: loaded {len(data)} importance matrix entries from {imatrix}", file=sys.stderr)
    arr = (llama_cpp.llama_model_imatrix_data * (len(data) + 1))()
    for i, (name, vals) in enumerate(sorted(data.items())):
        buf = (ctypes.c_float * len(vals))(*vals)
        keep.append(buf)
        arr[i].name = name.encode()
        arr[i].data = ctypes.cast(buf, ctypes.POINTER(ctypes.c_float))
        arr[i].size = len(vals)
    keep.append(arr)
    params.imatrix = ctypes.cast(arr, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
sys.exit(0 if rc == 0 else f"llama_model_quantize returned {rc}")
"""


def quantize_file(src: Path, dest: Path, quant: str, imatrix: Path | None, gguf_py: Path, nthread: int) -> str:
    """``src`` -> ``dest`` in ``quant``; the tool used."""
    tool = shutil.which("llama-quantize")
    if tool:
        argv = [tool, *(["--imatrix", str(imatrix)] if imatrix else []), str(src), str(dest), quant, str(nthread)]
        used = tool
    else:
        from advisor.setup.converter import engine_python

        python = engine_python()
        if python is None:
            raise QuantizeError("no quantizer: neither llama-quantize on PATH nor llama-cpp-python installed",
                                hint="run 'advisor setup --backend llama.cpp --yes'")  # fmt: skip
        argv = [python, "-c", QUANTIZE_CHILD, str(src), str(dest), str(quant_names()[quant]), str(nthread),
                str(imatrix or ""), str(gguf_py)]
        used = f"llama_model_quantize in {python}"
    rc, tail = stream(argv, tool_env())
    if rc != 0 or not dest.is_file():
        last = next((line.strip() for line in reversed(tail) if line.strip()), "no output")
        raise QuantizeError(f"llama.cpp's quantizer failed to make {quant} (exit {rc}): {last}")
    return used


# -- the workflow ----------------------------------------------------------------------------------------------------


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _pick(req: QuantizeRequest, model_dir: Path, say: Callable[[str], None]) -> QuantChoice:
    if req.quant.strip().lower() != "auto":
        q = normalize_quant(req.quant)
        if q in NEEDS_IMATRIX and req.imatrix is None:
            raise BadInputError(f"llama.cpp makes {q} only with an importance matrix", hint="give --imatrix FILE")
        return QuantChoice(q, [f"asked with --quant {q}"])
    from advisor.app.advise import hardware

    choice = choose_quant(model_dir, hardware(req.hardware), req.imatrix is not None)
    for line in choice.reasons:
        say(f"  {line}")
    return choice


def quantize(req: QuantizeRequest, say: Callable[[str], None] = lambda line: None) -> QuantizeResult:
    """The whole workflow; raises BadInputError (exit 2) for an input the tools refuse or a check that fails."""
    from advisor.setup import converter as conv_setup

    if req.outtype not in OUTTYPES:
        raise BadInputError(f"--outtype {req.outtype!r} is not one of {', '.join(OUTTYPES)}")
    if req.imatrix is not None and not req.imatrix.is_file():
        raise BadInputError(f"--imatrix {req.imatrix}: no such file")
    if req.quant.strip().lower() != "auto":
        normalize_quant(req.quant)  # a typo is reported before any download or install
    model_dir = resolve_source(req.source, say)
    cfg = read_config(model_dir)
    if architecture(cfg) is None:
        raise BadInputError(f"{model_dir / 'config.json'} names no architecture ('architectures' is missing)")
    choice = _pick(req, model_dir, say)
    name = Path(req.source.rstrip("/")).name or "model"
    out = (req.out or Path.cwd() / f"{name}-{choice.quant}.gguf").expanduser().absolute()
    f16_final = out.with_name(f"{out.stem.removesuffix('-' + choice.quant)}-{req.outtype.upper()}.gguf")
    check_outputs(out, f16_final if req.keep_f16 else None, req.yes)
    tok_bytes = sum(p.stat().st_size for p in model_dir.glob("tokenizer*") if p.is_file())
    check_disk(out.parent, checkpoint_params(model_dir), req.outtype, choice.quant, tok_bytes)
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    conv = conv_setup.ensure_converter(say=say)
    timings["setup_s"] = round(time.monotonic() - t0, 2)
    check_architecture(cfg, conv_setup.supported_architectures(conv.root), model_dir, conv.version)
    # A 16/32-bit choice is the converter's own output type: written directly, not converted twice.
    direct = choice.quant.lower() in OUTTYPES
    outtype = choice.quant.lower() if direct else req.outtype
    keep = req.keep_f16 and not direct
    f16_tmp, out_tmp = partial_name(f16_final), partial_name(out)
    try:
        say(f"converting {model_dir} to {outtype.upper()} with llama.cpp's converter ({conv.version})")
        t0 = time.monotonic()
        convert(conv, model_dir, out_tmp if direct else f16_tmp, outtype, req.source)
        timings["convert_s"] = round(time.monotonic() - t0, 2)
        if not direct:
            say(f"quantizing to {choice.quant}")
            t0 = time.monotonic()
            quantize_file(f16_tmp, out_tmp, choice.quant, req.imatrix, conv.root / "gguf-py", _threads())
            timings["quantize_s"] = round(time.monotonic() - t0, 2)
        os.replace(out_tmp, out)
        if keep:
            os.replace(f16_tmp, f16_final)
    finally:
        _remove(out_tmp, f16_tmp)
    say("done: " + ", ".join(f"{k.removesuffix('_s')} {v:g} s" for k, v in timings.items()))
    return QuantizeResult(str(out), choice.quant, out.stat().st_size, req.source,
                          str(f16_final) if keep else None, choice.reasons, timings)
