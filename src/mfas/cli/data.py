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


@app.command("prepare")
@friendly_errors
def prepare_cmd(
        dataset: str = typer.Argument(..., help="Adapter: cefa, surf, wmca, padisi, hqwmca, lists or folder."),
        root: Path = typer.Option(..., "--root", help="Folder of the dataset as it was downloaded."),
        out: Path = typer.Option(..., "--out", help="Folder of the new store."),
        lists: list[Path] = typer.Option([], "--list", help="lists / surf: a list file (repeatable); its split "
                                                             "comes from its name unless --split is given."),
        split: str = typer.Option("", help="cefa: mmfas (the shipped 6:1:13 subject split), train, val or test; "
                                           "lists / surf: the split of every --list file; folder: the split "
                                           "of a tree without split folders (default train)."),
        frames: str = typer.Option("", help="Frame policy: all, first, even:N or fixed:I,J,... "
                                            "(default even:3, hqwmca even:10)."),
        list_format: str = typer.Option("auto", "--format", help="lists: auto, mmdg or casia-fas."),
        columns: str = typer.Option("rgb,ir,depth", help="surf lists: modality of each path column when the "
                                                         "path does not name it."),
        protocol_csv: Path | None = typer.Option(None, "--protocol-csv", help="wmca / hqwmca: the protocol CSV "
                                                                            "(grandtest, LOO, grand_test ...)."),
        rgb_source: str = typer.Option("rgb-station", help="wmca: rgb-station or cdit."),
        partition: str = typer.Option("", help="padisi: partition CSV (default ..._3folds_part0.csv)."),
        ground_truth: str = typer.Option("", "--ground-truth", help="padisi: ground-truth CSV; lists: a CSV "
                                                                     "mapping P files to PAI codes."),
        rgb_stream: str = typer.Option("color", help="hqwmca: RGB stream name."),
        ir_stream: str = typer.Option("nir", help="hqwmca: the stream in the ir slot: NAME or NAME:BAND "
                                                      "(e.g. swir:1, SWIR as in the mmFAS paper)."),
        depth_backend: str = typer.Option("none", help="hqwmca: none or module:function (RGB -> depth)."),
        csv_file: Path | None = typer.Option(None, "--csv", help="folder: a CSV of paths and labels instead of "
                                                                 "a tree."),
        modalities: str = typer.Option("rgb,depth,ir", help="folder: the modalities every sample must have."),
        size: int = typer.Option(224, help="Stored image size (square); every image is resized to it."),
        workers: int = typer.Option(0, help="Decoding processes (0 = one per core, at most 8)."),
        strict: bool = typer.Option(False, help="Stop at the first bad input instead of skipping and "
                                                "reporting it."),
        overwrite: bool = typer.Option(False, help="Replace an existing store.")) -> None:
    """Build a store from a real dataset (or your own captures): counts per split, label and PAI species,
    and every skipped or broken input with its reason. See docs/datasets.md for each dataset."""
    import os

    from mfas.data.prepare import prepare

    given = {"--list": bool(lists), "--split": bool(split), "--frames": bool(frames),
             "--format": list_format != "auto", "--columns": columns != "rgb,ir,depth",
             "--protocol-csv": protocol_csv is not None, "--rgb-source": rgb_source != "rgb-station",
             "--partition": bool(partition), "--ground-truth": bool(ground_truth),
             "--rgb-stream": rgb_stream != "color", "--ir-stream": ir_stream != "nir",
             "--depth-backend": depth_backend != "none", "--csv": csv_file is not None,
             "--modalities": modalities != "rgb,depth,ir"}
    allowed = {"cefa": {"--split", "--frames"}, "surf": {"--list", "--split", "--frames", "--columns"},
               "wmca": {"--protocol-csv", "--rgb-source", "--frames"}, "padisi": {"--partition", "--ground-truth"},
               "hqwmca": {"--protocol-csv", "--rgb-stream", "--ir-stream", "--depth-backend", "--frames"},
               "lists": {"--list", "--split", "--frames", "--format", "--ground-truth"},
               "folder": {"--csv", "--modalities", "--split"}}
    if dataset in allowed:
        stray = [k for k, v in given.items() if v and k not in allowed[dataset]]
        if stray:
            raise typer.BadParameter(f"{', '.join(stray)} does not apply to {dataset} (it takes "
                                     f"{', '.join(sorted(allowed[dataset]))})", param_hint=stray[0])
    opts: dict = {}
    frame_opt = {"frames": frames} if frames else {}
    if dataset == "cefa":
        opts = {"split": split or "mmfas", **frame_opt}
    elif dataset == "surf":
        opts = {"lists": lists, "columns": columns, "split": split or None, **frame_opt}
    elif dataset == "wmca":
        opts = {"protocol_csv": protocol_csv, "rgb_source": rgb_source, **frame_opt}
    elif dataset == "padisi":
        opts = {"partition": partition, "ground_truth": ground_truth}
    elif dataset == "hqwmca":
        if protocol_csv is None:
            raise typer.BadParameter("hqwmca needs --protocol-csv", param_hint="--protocol-csv")
        opts = {"protocol_csv": protocol_csv, "rgb_stream": rgb_stream, "ir_stream": ir_stream,
                "depth_backend": depth_backend, **frame_opt}
    elif dataset == "lists":
        opts = {"lists": lists, "fmt": list_format, "split": split or None, "ground_truth": ground_truth or None,
                **frame_opt}
    elif dataset == "folder":
        opts = {"csv_file": csv_file, "modalities": tuple(m.strip() for m in modalities.split(",")),
                "split": split or "train"}
    n_workers = workers or max(1, min(os.cpu_count() or 1, 8))
    with progress_bar() as bar:
        task = bar.add_task(f"prepare {dataset}", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = prepare(dataset, root, out, size=size, workers=n_workers, strict=strict, overwrite=overwrite,
                         progress=tick, **opts)
    print_prepare(report)


def print_prepare(report) -> None:
    b = report.build
    console.print(f"wrote {b.written:,} samples to [bold]{b.path}[/]")
    for split, c in report.counts.items():
        pai = {k.removeprefix("pai:"): v for k, v in c.items() if k.startswith("pai:")}
        console.print(f"  {split}: {c['samples']:,} samples, {c.get('bonafide', 0):,} bona fide, "
                      f"{c.get('attack', 0):,} attacks  ({', '.join(f'{k} {v:,}' for k, v in sorted(pai.items()))})")
    if b.skipped:
        console.print(f"[yellow]{b.n_skipped:,} input(s) skipped[/] (all listed in {b.path / 'skipped.csv'}):")
        for reason, n in b.skip_reasons().most_common(10):
            console.print(f"  {n:>7,}  {reason}")
        for _sid, where, reason in b.skipped[:5]:
            console.print(f"  e.g. {where}: {reason}")
