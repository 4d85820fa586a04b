"""``mfas data``: inspect, generate and check stores."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mfas.cli.common import console, counts_table, friendly_errors, print_json

app = typer.Typer(help="Inspect, generate and check sample stores.", no_args_is_help=True)


def progress_bar() -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


def print_info(info: dict) -> None:
    console.print(f"[bold]{info['path']}[/]: {info['count']:,} samples, "
                  f"{info['image_size'][1]}x{info['image_size'][0]}, modalities {', '.join(info['modalities'])}")
    if info["skipped"]:
        console.print(f"[yellow]{info['skipped']} input(s) were skipped when the store was built:[/] "
                      + ", ".join(f"{r} ({n})" for r, n in info["skip_reasons"].items())
                      + " - see skipped.csv in the store")
    n = info["count"]
    for key, title in (("dataset", "dataset"), ("domain", "domain"), ("split", "split"), ("label", "label"),
                       ("pai", "PAI species"), ("present", "modality present")):
        console.print(counts_table(title, info[key], n))
        console.print()


@app.command("info")
@friendly_errors
def info_cmd(store: Path = typer.Argument(..., help="Store folder."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
             verify: bool = typer.Option(False, "--verify", help="Re-hash every array against store.json.")) -> None:
    """Counts per dataset, domain, split, label, PAI species and modality presence."""
    from mfas.data import open_store, store_info

    info = store_info(open_store(store, verify=verify))
    if as_json:
        print_json(info)
    else:
        print_info(info)
        if verify:
            console.print("[green]verified:[/] every array and the manifest match store.json")


@app.command("synth")
@friendly_errors
def synth_cmd(out: Path = typer.Argument(..., help="Folder of the new store."),
              per_domain: int = typer.Option(500, "--per-domain", "-n", help="Samples per domain."),
              domains: str = typer.Option("C,P,S,W", help="Domain profiles, comma separated."),
              size: int = typer.Option(112, help="Image size (square)."),
              seed: int = typer.Option(0, help="Random seed; the store is a function of it."),
              frames: int = typer.Option(1, help="Frames per video (same scene, new sensor noise)."),
              workers: int = typer.Option(0, help="Worker processes (0 = one per core, at most 8)."),
              overwrite: bool = typer.Option(False, help="Replace an existing store.")) -> None:
    """Generate a SimFAS store: procedural RGB, depth and NIR faces with bona fide and attack presentations."""
    from mfas.data.synth import generate_store

    doms = [d.strip() for d in domains.split(",") if d.strip()]
    with progress_bar() as bar:
        task = bar.add_task(f"SimFAS {','.join(doms)}", total=per_domain * len(doms))
        report = generate_store(out, per_domain=per_domain, domains=doms, size=size, seed=seed,
                                frames_per_video=frames, workers=workers or None, overwrite=overwrite,
                                progress=lambda k: bar.advance(task, k))
    console.print(f"wrote {report.written:,} samples to [bold]{report.path}[/] ({report.n_skipped} skipped)")


@app.command("sanity")
@friendly_errors
def sanity_cmd(store: Path = typer.Argument(..., help="Store folder with at least two domains."),
               as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Shortcut check: leave-one-domain-out AUC of a logistic regression on per-channel mean/std.

    Also reports, per domain, how well depth planarity alone separates each attack species.
    """
    from mfas.data import open_store
    from mfas.data.sanity import planarity_report, sanity_report

    st = open_store(store)
    rep = sanity_report(st)
    if "depth" in st.modalities:
        rep["depth_planarity_auc"] = planarity_report(st)
    if as_json:
        print_json(rep)
        return
    print_sanity(rep)


def print_sanity(rep: dict) -> None:
    from rich.table import Table

    t = Table(title="mean/std probe, leave-one-domain-out AUC (bona fide positive)", title_justify="left",
              show_edge=False)
    t.add_column("held-out domain")
    t.add_column("AUC", justify="right")
    for d, v in rep["auc_per_heldout_domain"].items():
        t.add_row(d, "n/a" if v is None else f"{v:.3f}")
    console.print(t)
    verdict = "[green]no shortcut[/]" if rep["passed"] else "[red]shortcut found[/]"
    console.print(f"max {rep['max_auc']:.3f}, mean {rep['mean_auc']:.3f} (limit {rep['limit']}): {verdict}")
    if "depth_planarity_auc" in rep:
        p = Table(title="depth planarity alone: AUC bona fide vs species, per domain", title_justify="left",
                  show_edge=False)
        species = sorted({s for row in rep["depth_planarity_auc"].values() for s in row})
        p.add_column("domain")
        for s in species:
            p.add_column(s, justify="right")
        for d, row in rep["depth_planarity_auc"].items():
            p.add_row(d, *[f"{row[s]:.2f}" if s in row else "" for s in species])
        console.print()
        console.print(p)


@app.command("preview")
@friendly_errors
def preview_cmd(out: Path = typer.Argument(..., help="PNG file to write."),
                domain: str = typer.Option("C", help="Domain profile."),
                size: int = typer.Option(112, help="Tile size."),
                seed: int = typer.Option(0, help="Random seed.")) -> None:
    """A picture of every PAI species SimFAS renders in one domain: rows RGB, depth, NIR."""
    from mfas.data.synth.preview import preview_grid, save_png

    save_png(out, preview_grid(domain, size=size, seed=seed))
    console.print(f"wrote {out}")
