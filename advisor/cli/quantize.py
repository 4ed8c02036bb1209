"""``advisor quantize SOURCE``: make a GGUF from a Hugging Face checkpoint with llama.cpp's converter and quantizer,
in the quant that fits this machine (``--quant auto``) or the one asked for."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from advisor.cli._options import HardwareOpt, JsonOpt

SourceArg = Annotated[str, typer.Argument(help="A Hugging Face checkpoint directory (config.json, *.safetensors, "
                                          "tokenizer files) or a Hub repository id (org/name).", show_default=False)]
QuantOpt = Annotated[str, typer.Option("--quant", help="llama-quantize's type (Q4_K_M, Q5_K_M, Q8_0, IQ4_XS, ...), "
                                       "or auto: the best that fits this machine (or --hardware), with the reasons.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="The GGUF to write (default: ./<name>-<QUANT>.gguf).",
                                             dir_okay=False, show_default=False)]
OuttypeOpt = Annotated[str, typer.Option("--outtype", help="The converter's intermediate: f16, bf16 or f32.")]
ImatrixOpt = Annotated[Path | None, typer.Option("--imatrix", help="An importance matrix (llama-imatrix's GGUF or "
                                                 "legacy .dat) for the quantizer.", dir_okay=False,
                                                 show_default=False)]
KeepOpt = Annotated[bool, typer.Option("--keep-f16", help="Keep the 16-bit intermediate next to the output.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Overwrite an existing output.")]


def quantize(
    source: SourceArg,
    quant: QuantOpt = "auto",
    out: OutOpt = None,
    outtype: OuttypeOpt = "f16",
    imatrix: ImatrixOpt = None,
    keep_f16: KeepOpt = False,
    hardware: HardwareOpt = None,
    json_output: JsonOpt = False,
    yes: YesOpt = False,
) -> None:
    """Convert a Hugging Face checkpoint to GGUF and quantize it, with the llama.cpp of the installed engine.

    The converter (convert_hf_to_gguf.py of the engine's llama.cpp version) is installed in a virtualenv advisor
    manages the first time ('advisor setup --converter' does it ahead). Free disk is checked first; an interrupted
    run leaves no half-written file. Afterwards 'advisor run OUT' serves the result.
    """
    from advisor.app.quantize import QuantizeRequest
    from advisor.app.quantize import quantize as run_quantize

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    req = QuantizeRequest(source=source, quant=quant, out=out, outtype=outtype.lower(), imatrix=imatrix,
                          keep_f16=keep_f16, hardware=hardware, yes=yes)
    result = run_quantize(req, say)
    if json_output:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
        return
    line = f"{result.path}: {result.quant}, {result.size_bytes / 2**20:,.1f} MiB"
    if result.f16_path:
        line += f" (kept {result.f16_path})"
    sys.stdout.write(line + "\n")
