"""``mfas protocols``: list and show named protocols."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from mfas.cli.common import console, friendly_errors, print_json

app = typer.Typer(help="List and show evaluation protocols.", no_args_is_help=True)

FILE = typer.Option(None, "--file", "-f", help="Also load custom protocols from this YAML file.")


@app.command("list")
@friendly_errors
def list_cmd(family: str = typer.Option(None, help="Only this family: mmdg, mmfas, sim, custom."),
             file: Path = FILE) -> None:
    """Every registered protocol, one line each."""
    from mfas.protocols import list_protocols, load_protocol_file

    if file:
        load_protocol_file(file)
    t = Table(show_edge=False)
    for c in ("name", "family", "train", "tests", "description"):
        t.add_column(c, overflow="fold")
    for p in list_protocols(family):
        t.add_row(p.name, p.family, " ".join(str(r) for r in p.train),
                  "; ".join(f"{x.name}" + ("" if not x.missing else f" (no {'/'.join(x.missing)})") for x in p.tests),
                  p.description)
    console.print(t)


@app.command("show")
@friendly_errors
def show_cmd(name: str = typer.Argument(..., help="Protocol name, e.g. loo/CPS-W."), file: Path = FILE,
             as_json: bool = typer.Option(False, "--json", help="Print JSON."),
             store: list[str] = typer.Option(None, "--store", "-s",
                                             help="KEY=PATH of a store the protocol uses (repeatable): the "
                                                  "modalities shown are then those the stores hold too.")
             ) -> None:
    """Everything a protocol declares: training, selection and test data, modalities, averaging."""
    from mfas.protocols import StoreSet, get_protocol, load_protocol_file, parse_store_args

    if file:
        load_protocol_file(file)
    p = get_protocol(name)
    if store:
        stores = StoreSet(parse_store_args(store))
        held = set.intersection(*(set(stores.get(k).modalities) for k in p.stores if k in stores.paths)) \
            if any(k in stores.paths for k in p.stores) else None
        if held is not None:
            p = p.model_copy(update={
                "train_modalities": tuple(m for m in p.train_modalities if m in held),
                "tests": tuple(t.model_copy(update={"modalities": tuple(m for m in t.modalities if m in held)})
                               for t in p.tests)})
    if as_json:
        print_json(p.model_dump(mode="json"))
        return
    console.print(f"[bold]{p.name}[/] ({p.family}) - {p.description}")
    if p.reference:
        console.print(f"reference: {p.reference}")
    console.print(f"train:   {', '.join(map(str, p.train))}  modalities {'+'.join(p.train_modalities)}")
    console.print(f"select:  {', '.join(map(str, p.select)) or '(none)'}  (threshold policy val_eer and "
                  "model selection best_source_val use this)")
    t = Table(title="tests", title_justify="left", show_edge=False)
    for c in ("name", "data", "modalities"):
        t.add_column(c)
    for x in p.tests:
        t.add_row(x.name, ", ".join(map(str, x.parts)), "+".join(x.modalities))
    console.print(t)
    over = ", ".join(x.name for x in p.averaged_tests)
    console.print(f"average: {p.average}" + (f" over {over}" if p.average != "none" else ""))
    console.print(f"stores needed: {', '.join(p.stores)}")
    if p.notes:
        console.print(f"notes: {p.notes}")
