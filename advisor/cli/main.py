"""The command registry: it only wires commands. Each command group lives in its own module."""

from __future__ import annotations

import sys

import typer

from advisor import __version__
from advisor.cli import _errors
from advisor.cli import catalog as catalog_cmd
from advisor.cli import estimate as estimate_cmd
from advisor.cli import probe as probe_cmd
from advisor.cli import quantize as quantize_cmd
from advisor.cli import recommend as recommend_cmd
from advisor.cli import run as run_cmd
from advisor.cli import setup as setup_cmd

app = typer.Typer(
    name="advisor",
    help="Which LLM to run on this machine, in which quantization, on which engine, and then run it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"advisor {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """advisor: probe the machine, estimate memory, pick a model and run it."""


app.command("probe")(probe_cmd.probe)
app.add_typer(catalog_cmd.catalog_app, name="catalog")
app.command("estimate")(estimate_cmd.estimate)
app.command("recommend")(recommend_cmd.recommend)
app.command("setup")(setup_cmd.setup)
app.command("run")(run_cmd.run)
app.command("quantize")(quantize_cmd.quantize)
app.command("ps")(run_cmd.ps)
app.command("stop")(run_cmd.stop)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and maps errors to one line and an exit code."""
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        code = exc.code
        sys.exit(code if isinstance(code, int) else (0 if code is None else 1))
    except BaseException as exc:  # noqa: BLE001 - the one place errors become messages
        sys.exit(_errors.handle(exc))
