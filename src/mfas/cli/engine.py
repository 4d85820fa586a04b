"""``mfas train | evaluate | report | predict`` and ``mfas models``."""

from __future__ import annotations

import csv
from pathlib import Path

import typer
from rich.table import Table

from mfas.cli.common import console, friendly_errors

STORE = typer.Option(None, "--store", "-s", help="Store key mapping KEY=PATH (repeatable); overrides the config.")


@friendly_errors
def train_cmd(config: Path = typer.Argument(None, help="Experiment YAML (not needed with --resume)."),
              set_: list[str] = typer.Option(None, "--set", help="Override a key: --set optim.lr=1e-4 (repeatable)."),
              resume: Path = typer.Option(None, "--resume", help="Continue the interrupted run in this folder."),
              store: list[str] = STORE) -> None:
    """Train a model on a protocol and write runs/<name>/ (checkpoint, bundle, scores, metrics, report)."""
    from mfas.engine.config import load_config
    from mfas.engine.train import train
    from mfas.errors import ConfigError
    from mfas.protocols import parse_store_args

    if resume is not None:
        if config is not None or set_:
            raise ConfigError("--resume takes the run's own config.yaml; do not pass a config or --set")
        cfg = load_config(resume / "config.yaml")
        cfg = cfg.model_copy(update={"output_dir": str(resume.parent)})
    elif config is None:
        raise ConfigError("give a config file, or --resume RUN")
    else:
        cfg = load_config(config, set_ or [])
    run = train(cfg, resume=resume is not None, stores=parse_store_args(store))
    console.print(f"run written to [bold]{run}[/]: report {run / 'report.md'}")
    _print_summary(run / "metrics.json")


def _print_summary(path: Path) -> None:
    import json

    from mfas.engine.layouts import summary_table

    if not path.exists():
        return
    m = json.loads(path.read_text())
    cols, rows = summary_table(m)
    t = Table(title=f"{m['protocol']} (%)", title_justify="left", show_edge=False)
    for c in cols:
        t.add_column(c, justify="right" if c != "target" else "left")
    for r in rows:
        t.add_row(*r)
    console.print(t)


@friendly_errors
def evaluate_cmd(run: Path = typer.Argument(..., help="A trained run folder."),
                 protocol: str = typer.Option(None, "--protocol", "-p", help="Protocol (default: the run's)."),
                 modalities: str = typer.Option(None, "--modalities", "-m",
                                                help="Test-time modalities, e.g. rgb,depth."),
                 store: list[str] = STORE,
                 devices: str = typer.Option(None, help="Devices (e.g. 2 for two processes)."),
                 strategy: str = typer.Option(None, help="Lightning strategy, e.g. ddp."),
                 out: Path = typer.Option(None, help="Output folder (default: RUN/eval/<protocol>\\[@modalities]).")
                 ) -> None:
    """Score a protocol's targets with a trained run; writes score files, metrics.json and report.md."""
    from mfas.conventions import parse_modalities
    from mfas.engine.run_eval import evaluate_run
    from mfas.protocols import parse_store_args

    mods = parse_modalities(modalities) if modalities else None
    dev = int(devices) if devices and devices.isdigit() else devices
    path = evaluate_run(run, protocol, mods, parse_store_args(store), dev, strategy, out)
    console.print(f"evaluation written to [bold]{path}[/]")
    _print_summary(path / "metrics.json")


@friendly_errors
def report_cmd(runs: list[Path] = typer.Argument(..., help="One or more runs."),
               out: Path = typer.Option(None, help="Folder for report.md and plots (default: the single run)."),
               bootstrap: int = typer.Option(None, "--bootstrap", min=0,
                                             help="Resamples per bootstrap 95% interval (default 1000; 0: none).")
               ) -> None:
    """Write report.md: threshold-free and per-policy tables (paper-compatible and deployable) with bootstrap
    95% intervals, per-PAI APCER, video-level scores when videos have several frames, the papers' layouts,
    plots."""
    from mfas.engine.report import write_report
    from mfas.errors import ConfigError

    if out is None:
        if len(runs) > 1:
            raise ConfigError("several runs need --out DIR for the comparison report")
        out = runs[0]
    path = write_report(runs, out, **({} if bootstrap is None else {"n_boot": bootstrap}))
    console.print(f"wrote [bold]{path}[/] (plots in {path.parent / 'plots'})")


@friendly_errors
def predict_cmd(bundle: Path = typer.Argument(..., help="Run folder or bundle (model.json + model.safetensors)."),
                rgb: Path = typer.Option(None, help="RGB image."),
                depth: Path = typer.Option(None, help="Depth image."),
                ir: Path = typer.Option(None, help="IR image."),
                rgb_dir: Path = typer.Option(None, help="Folder of RGB images (matched by file stem)."),
                depth_dir: Path = typer.Option(None, help="Folder of depth images."),
                ir_dir: Path = typer.Option(None, help="Folder of IR images."),
                out: Path = typer.Option(Path("predictions.csv"), help="CSV for folder input.")) -> None:
    """Score new captures: one presentation (--rgb/--depth/--ir) or folders (--rgb-dir ...) into a CSV."""
    import mfas
    from mfas.errors import ConfigError, MfasError

    p = mfas.load(bundle)
    if rgb_dir is None and depth_dir is None and ir_dir is None:
        r = p.predict(rgb=rgb, depth=depth, ir=ir)
        console.print(f"score {r.score:.4f} -> [bold]{r.decision}[/] (threshold {r.threshold:.4f}, policy "
                      f"{r.policy}; modalities used: {', '.join(r.modalities)})")
        return
    dirs = {"rgb": rgb_dir, "depth": depth_dir, "ir": ir_dir}
    for m, d in dirs.items():
        if d is not None and not d.is_dir():
            raise ConfigError(f"--{m}-dir {d}: not a folder")
    stems: dict[str, dict[str, Path]] = {m: {f.stem: f for f in sorted(d.iterdir()) if f.is_file()}
                                         for m, d in dirs.items() if d is not None}
    keys = sorted(set().union(*[set(v) for v in stems.values()]))
    rows = []
    for k in keys:
        given = {m: stems[m].get(k) for m in stems}
        try:
            r = p.predict(**given)
            rows.append([k, f"{r.score:.6f}", r.decision, "+".join(r.modalities), ""])
        except MfasError as e:
            rows.append([k, "", "", "+".join(m for m, v in given.items() if v is not None), str(e)])
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["name", "score", "decision", "modalities", "error"])
        w.writerows(rows)
    bad = sum(1 for r in rows if r[4])
    console.print(f"wrote {len(rows)} predictions to [bold]{out}[/] ({bad} with errors, listed in the CSV)")


models_app = typer.Typer(help="List and inspect registered models.", no_args_is_help=True)


@models_app.command("list")
@friendly_errors
def models_list() -> None:
    """Every registered model name."""
    from mfas.models import list_models

    for n in list_models():
        console.print(n)


@models_app.command("show")
@friendly_errors
def models_show(name: str = typer.Argument(..., help="Model name."),
                set_: list[str] = typer.Option(None, "--set", help="Override a model option: --set depth=3.")) -> None:
    """Every option with its value (* = set by --set) and parameter counts by top-level part."""
    import json

    import yaml
    from rich.markup import escape

    from mfas.models import create_model

    over = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in set_ or [])}
    m = create_model(name, **over)
    console.print(f"[bold]{escape(name)}[/] options:")
    for key, value in m.config.items():
        if key != "name":
            text = json.dumps(value) if isinstance(value, dict | list | tuple) else repr(value)
            console.print(f"  {'*' if key in over else ' '} {key} = {escape(text)}", highlight=False)
    t = Table(show_edge=False)
    t.add_column("part")
    t.add_column("parameters", justify="right")
    t.add_column("trainable", justify="right")
    t.add_column("used at inference")
    listed, unused, seen = 0, 0, set()
    for part, params, at_inference in m.parameter_parts():
        params = [p for p in params if id(p) not in seen]
        seen.update(id(p) for p in params)
        n = sum(p.numel() for p in params)
        listed += n
        unused += 0 if at_inference else n
        t.add_row(part, f"{n:,}", f"{sum(p.numel() for p in params if p.requires_grad):,}",
                  "yes" if at_inference else "no (training only)")
    total = sum(p.numel() for p in m.parameters())
    if total - listed:
        t.add_row("(own parameters)", f"{total - listed:,}", "", "yes")
    t.add_row("[bold]total[/]", f"[bold]{total:,}[/] ({total / 1e6:.2f}M)",
              f"{sum(p.numel() for p in m.parameters() if p.requires_grad):,}", "")
    if unused:
        t.add_row("[bold]at inference[/]", f"[bold]{total - unused:,}[/] ({(total - unused) / 1e6:.2f}M)", "", "")
    console.print(t)


@models_app.command("convert-mmda")
@friendly_errors
def models_convert_mmda(
        checkpoint: Path = typer.Argument(..., help="A state dict saved by the released MMDA code (murInJ/MMDA): "
                                                    ".pt/.pth/.bin or .safetensors."),
        out: Path = typer.Option(..., "--out",
                                 help="Folder for the bundle: model.safetensors, model.json, config.yaml."),
        protocol: str = typer.Option(None, "--protocol", "-p",
                                     help="The protocol the checkpoint was trained on, e.g. loo/CPS-W "
                                          "(what `mfas evaluate OUT` scores unless given -p)."),
        set_: list[str] = typer.Option(None, "--set", help="Override a key of the written config, e.g. "
                                                           "--set model.compat=clean (repeatable).")) -> None:
    """Turn a checkpoint of the released MMDA code into an mfas bundle for `mfas evaluate` and `mfas predict`."""
    from rich.markup import escape

    from mfas.engine.config import apply_overrides, dump_config, validate_config
    from mfas.engine.io import atomic_write_text, save_bundle
    from mfas.engine.resolve import resolve_protocol
    from mfas.errors import ConfigError
    from mfas.metrics import choose_threshold
    from mfas.models import create_model
    from mfas.models.mmda.convert import converted_run_config, load_released_checkpoint

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder")
    data = apply_overrides(converted_run_config(out.name, protocol), set_ or [])
    if not data.get("protocol"):
        raise ConfigError("give --protocol: the protocol the checkpoint was trained on, e.g. loo/CPS-W")
    cfg = validate_config(data, where="convert-mmda")
    model = create_model(cfg.model.name, **cfg.model.overrides)
    record = load_released_checkpoint(checkpoint, model)
    model.eval()
    threshold = {**choose_threshold("fixed:0.5").as_dict(),
                 "note": "converted checkpoint, no validation scores: fixed 0.5; `mfas evaluate` reports the others"}
    save_bundle(out, model, {"threshold": threshold, "selection": {"policy": "converted", "from": str(checkpoint)},
                             "protocol": resolve_protocol(cfg).model_dump(mode="json"), "seed": cfg.seed,
                             "metrics": {}, "converted_from": record})
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    console.print(f"bundle written to [bold]{out}[/] ({cfg.model.name}, compat {model.config.get('compat')}); "
                  f"{len(record['ignored'])} released keys without a counterpart, listed in model.json")
    by_reason: dict[str, list[str]] = {}
    for key, why in record["ignored"].items():
        by_reason.setdefault(why, []).append(key)
    for why, keys in by_reason.items():
        console.print(f"  {len(keys)} x {escape(why)} (e.g. {escape(keys[0])})", highlight=False)
