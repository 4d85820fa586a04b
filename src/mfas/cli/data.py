"""``mfas data``: inspect, generate and check stores."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from typer.core import TyperCommand, TyperGroup

from mfas.cli.common import console, counts_table, friendly_errors, print_json

if TYPE_CHECKING:
    from mfas.data.prepare import Adapter

app = typer.Typer(help="Inspect, generate and check sample stores.", no_args_is_help=True)


def progress_bar() -> Progress:
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


def print_info(info: dict) -> None:
    console.print(f"[bold]{escape(info['path'])}[/]: {info['count']:,} samples, "
                  f"{info['image_size'][1]}x{info['image_size'][0]}, modalities {', '.join(info['modalities'])}")
    if info["skipped"]:
        console.print(f"[yellow]{info['skipped']} input(s) were skipped when the store was built:[/] "
                      + ", ".join(f"{escape(str(r))} ({n})" for r, n in info["skip_reasons"].items())
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
              per_domain: int = typer.Option(1500, "--per-domain", "-n",
                                             help="Samples per domain (1 to 1,000,000); the default scale gives "
                                                  "450 test samples per domain (docs/simfas.md)."),
              domains: str = typer.Option(None, help="Domain profiles, comma separated (default: C,P,S,W, or the "
                                                     "domains of --profiles)."),
              profiles: Path = typer.Option(None, "--profiles", help="A YAML file of domain profiles (a capture "
                                            "set-up as data; see docs/simfas.md), added to the built-in C, P, S, W."),
              size: int = typer.Option(112, help="Image size (square), 8 to 1024 pixels."),
              seed: int = typer.Option(0, help="Random seed; the store is a function of it."),
              frames: int = typer.Option(1, help="Frames per video (same scene, new sensor noise), 1 to 1000."),
              workers: int = typer.Option(0, help="Worker processes (0 = one per core, at most 8)."),
              overwrite: bool = typer.Option(False, help="Replace an existing store.")) -> None:
    """Generate a SimFAS store: procedural RGB, depth and NIR faces with bona fide and attack presentations."""
    from mfas.data.synth import generate_store
    from mfas.data.synth.domains import load_profiles

    extra = load_profiles(profiles) if profiles is not None else None
    if domains is None:
        domains = ",".join(extra) if extra else "C,P,S,W"
    doms = [d.strip() for d in domains.split(",") if d.strip()]
    with progress_bar() as bar:
        task = bar.add_task(f"SimFAS {','.join(doms)}", total=per_domain * len(doms))
        report = generate_store(out, per_domain=per_domain, domains=doms, size=size, seed=seed,
                                frames_per_video=frames, workers=workers or None, overwrite=overwrite,
                                progress=lambda k: bar.advance(task, k), profiles=extra)
    print_notes(report.notes)
    console.print(f"wrote {report.written:,} samples to [bold]{escape(str(report.path))}[/] "
                  f"({report.n_skipped} skipped)")


def print_notes(notes: list[str]) -> None:
    """What a build did besides writing samples (a stale lock taken over, a previous store put back)."""
    for note in notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


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
                size: int = typer.Option(112, help="Tile size, 8 to 1024 pixels."),
                seed: int = typer.Option(0, help="Random seed.")) -> None:
    """A picture of every PAI species SimFAS renders in one domain: rows RGB, depth, NIR."""
    from mfas.data.synth.preview import preview_grid, save_png

    save_png(out, preview_grid(domain, size=size, seed=seed))
    console.print(f"wrote {escape(str(out))}")


class _AdapterCommand(TyperCommand):
    """``mfas data prepare <adapter>``: a flag that only another adapter takes is a usage error naming it."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        tokens = list(args)  # the parser consumes ``args``
        try:
            return super().parse_args(ctx, args)
        except Exception as e:  # typer's click raises NoSuchOption (a usage error) for an unknown flag
            from mfas.data.prepare import ADAPTERS

            own = {f for p in self.params for f in getattr(p, "opts", ())}
            others = {o.cli_flag for a in ADAPTERS.values() for o in a.options} - own
            if getattr(e, "option_name", None) not in others:
                raise
            stray = [f for f in dict.fromkeys(x.split("=", 1)[0] for x in tokens) if f in others]
            takes = sorted(o.cli_flag for o in ADAPTERS[self.name].options)
            raise typer.BadParameter(f"{', '.join(stray)} does not apply to {self.name} (it takes "
                                     f"{', '.join(takes) or 'no options of its own'})", ctx=ctx,
                                     param_hint=stray[0]) from None


def _option(name: str, annotation: object, info: object) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=info)


#: The options of every ``mfas data prepare`` subcommand: before the adapter's own, and after them.
_COMMON_FIRST = [
    _option("root", Path, typer.Option(..., "--root", help="Folder of the dataset as it was downloaded.")),
    _option("out", Path, typer.Option(..., "--out", help="Folder of the new store."))]
_COMMON_LAST = [
    _option("size", int, typer.Option(224, help="Stored image size (square), 8 to 2048 pixels; every image is "
                                                 "resized to it.")),
    _option("workers", int, typer.Option(0, help="Decoding processes (0 = one per core, at most 8; at most 64).")),
    _option("strict", bool, typer.Option(False, help="Stop at the first bad input instead of skipping and "
                                                     "reporting it.")),
    _option("overwrite", bool, typer.Option(False, help="Replace an existing store.")),
    _option("detect", bool, typer.Option(False, "--detect", rich_help_panel="Face crop",
                                         help="Find the face in each capture's RGB image (YuNet) and store a crop "
                                              "around the largest one, cut the same way from depth and IR; captures "
                                              "without a face are skipped with that reason. The crop policy is "
                                              "recorded and applied again by predict.")),
    _option("crop_scale", float, typer.Option(1.5, "--crop-scale", rich_help_panel="Face crop",
                                              help="Crop side over the face box's longer side.")),
    _option("crop_align", bool, typer.Option(False, "--crop-align", rich_help_panel="Face crop",
                                             help="Rotate so that the eyes are level.")),
    _option("crop_fit", str, typer.Option("pad", "--crop-fit", rich_help_panel="Face crop",
                                          help="At the frame's edge: pad (zeros) or shift (move the crop inside).")),
    _option("min_face", int, typer.Option(32, "--min-face", rich_help_panel="Face crop",
                                          help="Ignore faces whose box is shorter than this (pixels).")),
    _option("crop_from", Path, typer.Option(None, "--crop-from", rich_help_panel="Face crop",
                                            help="Crop as this run or bundle's model expects (its recorded crop "
                                                 "policy, e.g. a MiniFASNet peer's); implies --detect."))]


def _adapter_command(adapter: Adapter) -> TyperCommand:
    """The subcommand of one adapter: the common options and the adapter's own, from its declaration."""
    from mfas.data.prepare import OMIT, REQUIRED

    own = []
    for o in adapter.options:
        default = o.cli_value
        absent = default is REQUIRED or default is OMIT  # typer's default is then None: "not given"
        own.append(_option(o.name, o.type | None if absent or default is None else o.type,
                           typer.Option(None if absent else default, o.cli_flag, help=o.help,
                                        rich_help_panel=f"{adapter.name} options")))

    def run(root: Path, out: Path, size: int, workers: int, strict: bool, overwrite: bool, detect: bool,
            crop_scale: float, crop_align: bool, crop_fit: str, min_face: int, crop_from: Path | None,
            **given) -> None:
        import os

        from mfas.data.prepare import prepare
        from mfas.errors import ConfigError

        crop = {"scale": crop_scale, "align": crop_align, "fit": crop_fit, "min_face": min_face} if detect else None
        changed = [f for f, v, d in (("--crop-scale", crop_scale, 1.5), ("--crop-align", crop_align, False),
                                     ("--crop-fit", crop_fit, "pad"), ("--min-face", min_face, 32)) if v != d]
        if crop_from is not None and changed:
            raise ConfigError(f"{', '.join(changed)}: --crop-from takes every crop setting from the model; give "
                              "one or the other")
        if crop_from is not None:
            from mfas.engine.io import read_bundle_meta

            crop = read_bundle_meta(crop_from)["preprocessing"].get("crop")
            if not crop:
                raise ConfigError(f"--crop-from {crop_from}: the model has no crop policy (it was trained on a "
                                  "store prepared without --detect)")
            detect = True
        elif not detect:
            if changed:
                raise ConfigError(f"{', '.join(changed)}: face-crop settings apply with --detect only")

        options = {}
        for o in adapter.options:
            v = given[o.name]
            if o.cli_value is OMIT and not v:
                continue
            if o.cli_value is REQUIRED and v is None:
                raise typer.BadParameter(f"{adapter.name} needs {o.cli_flag}", param_hint=o.cli_flag)
            options[o.name] = o.parse(v) if o.parse and v is not None else v
        n_workers = workers or max(1, min(os.cpu_count() or 1, 8))
        with progress_bar() as bar:
            task = bar.add_task(f"prepare {adapter.name}", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = prepare(adapter.name, root, out, size=size, workers=n_workers, strict=strict,
                             overwrite=overwrite, progress=tick, crop=crop, **options)
        print_prepare(report)

    run.__signature__ = inspect.Signature([*_COMMON_FIRST, *own, *_COMMON_LAST])
    sub = typer.Typer(add_completion=False)
    sub.command(adapter.name, cls=_AdapterCommand,
                help=f"{adapter.description}\n\nPrints counts per split, label and PAI species, and every skipped "
                     f"or broken input with its reason. See docs/datasets.md ({adapter.name}).")(friendly_errors(run))
    return typer.main.get_command(sub)


class _PrepareGroup(TyperGroup):
    """``mfas data prepare``: one subcommand per registered adapter, made when the command line is built, so an
    adapter registered by any module (or a test) is a subcommand without an edit here."""

    @property
    def commands(self) -> dict:
        from mfas.data.prepare import get_adapter, list_adapters

        made = self._commands
        self._commands = {name: made[name] if name in made else _adapter_command(get_adapter(name))
                          for name in list_adapters()}
        return self._commands

    @commands.setter
    def commands(self, value: dict) -> None:
        self._commands = dict(value)


prepare_app = typer.Typer(cls=_PrepareGroup, no_args_is_help=True, subcommand_metavar="ADAPTER [OPTIONS]...",
                          help="Build a store from a real dataset (or your own captures): one subcommand per "
                               "adapter, mfas data prepare ADAPTER --root RAW --out STORE and the adapter's options "
                               "(mfas data prepare ADAPTER --help lists them). See docs/datasets.md for each dataset.")
app.add_typer(prepare_app, name="prepare")


def print_prepare(report) -> None:
    b = report.build
    print_notes(b.notes)
    console.print(f"wrote {b.written:,} samples to [bold]{escape(str(b.path))}[/]")
    for split, c in report.counts.items():
        pai = {k.removeprefix("pai:"): v for k, v in c.items() if k.startswith("pai:")}
        console.print(f"  {split}: {c['samples']:,} samples, {c.get('bonafide', 0):,} bona fide, "
                      f"{c.get('attack', 0):,} attacks  ({', '.join(f'{k} {v:,}' for k, v in sorted(pai.items()))})")
    if b.skipped:
        listed = escape(str(b.path / "skipped.csv"))
        console.print(f"[yellow]{b.n_skipped:,} input(s) skipped[/] (all listed in {listed}):")
        for reason, n in b.skip_reasons().most_common(10):
            console.print(f"  {n:>7,}  {escape(str(reason))}", highlight=False)
        for _sid, where, reason in b.skipped[:5]:
            console.print(f"  e.g. {escape(str(where))}: {escape(str(reason))}", highlight=False)
