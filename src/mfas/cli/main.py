"""Entry point of the ``mfas`` command."""

from __future__ import annotations

import typer

from mfas import __version__
from mfas.cli import data, protocols
from mfas.cli.check import check_cmd
from mfas.cli.demo import demo_cmd
from mfas.cli.engine import (
    calibrate_cmd,
    evaluate_cmd,
    export_cmd,
    models_app,
    peer_app,
    predict_cmd,
    report_cmd,
    train_cmd,
)
from mfas.cli.explain import explain_cmd, tsne_cmd
from mfas.cli.serve import serve_cmd

app = typer.Typer(
    name="mfas",
    help="Multimodal (RGB + depth + infrared) face anti-spoofing: data, protocols, metrics, models.\n\n"
         "Conventions: label 1 = bona fide, score = P(bona fide); modalities rgb, depth, ir.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.add_typer(protocols.app, name="protocols")
app.add_typer(models_app, name="models")
app.add_typer(peer_app, name="peer")
app.command("train")(train_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("report")(report_cmd)
app.command("predict")(predict_cmd)
app.command("calibrate")(calibrate_cmd)
app.command("export")(export_cmd)
app.command("explain")(explain_cmd)
app.command("tsne")(tsne_cmd)
app.command("demo")(demo_cmd)
app.command("check")(check_cmd)
app.command("serve")(serve_cmd)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mfas {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    """mfas command line."""


if __name__ == "__main__":
    app()
