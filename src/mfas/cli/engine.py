"""``mfas train | evaluate | report | predict`` and ``mfas models``."""

from __future__ import annotations

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
    from mfas.engine.resolve import resume_config
    from mfas.engine.train import train
    from mfas.errors import ConfigError
    from mfas.protocols import parse_store_args

    if resume is not None:
        if config is not None or set_:
            raise ConfigError("--resume takes the run's own config.yaml; do not pass a config or --set")
        cfg = resume_config(resume)  # the folder given, even if it was moved or renamed
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
                 protocol_file: Path = typer.Option(
                     None, "--protocol-file",
                     help="YAML file of protocols (docs/protocols.md); its only protocol is used unless --protocol "
                          "names one. The stores need no train split."),
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
    from mfas.errors import ConfigError
    from mfas.protocols import parse_store_args

    try:
        mods = parse_modalities(modalities) if modalities is not None else None
    except ValueError as e:
        raise ConfigError(f"--modalities {modalities!r}: {e}") from None
    dev = int(devices) if devices and devices.isdigit() else devices
    path = evaluate_run(run, protocol, mods, parse_store_args(store), dev, strategy, out, protocol_file)
    console.print(f"evaluation written to [bold]{path}[/]")
    _print_summary(path / "metrics.json")


@friendly_errors
def calibrate_cmd(run: Path = typer.Argument(..., help="A trained run folder or bundle."),
                  data: Path = typer.Option(..., "--data", help="Store of labelled captures from the site (mfas "
                                                                "data prepare folder ..., prepared as the training "
                                                                "data were)."),
                  policy: str = typer.Option(..., "--policy", help="Threshold policy on these captures: val_eer, "
                                                                   "bpcer:0.05 (at most 5% of bona fide rejected), "
                                                                   "apcer:0.01, fixed:0.5."),
                  split: list[str] = typer.Option(None, "--split", help="Use only this split of the store "
                                                                        "(repeatable; default: every sample)."),
                  dry_run: bool = typer.Option(False, "--dry-run", help="Show the new operating point; do not write "
                                                                        "it.")) -> None:
    """Choose a new operating point on labelled local captures and write it into the bundle (model.json); the
    previous one is kept in threshold_history. predict and the service use it from then on."""
    from mfas.engine.calibrate import calibrate

    r = calibrate(run, data, policy, split or None, dry_run)
    rates = r["rates"]
    console.print(f"threshold {r['value']:.4f} ({r['policy']} on {r['n']} captures: {r['n_bonafide']} bona fide, "
                  f"{r['n_attack']} attacks): APCER {100 * rates.get('apcer', float('nan')):.1f}%, "
                  f"BPCER {100 * rates.get('bpcer', float('nan')):.1f}%", highlight=False)
    console.print("dry run: nothing written" if dry_run else f"written to {run} (model.json; the previous "
                                                               "threshold is in threshold_history)", highlight=False)


@friendly_errors
def export_cmd(run: Path = typer.Argument(..., help="A trained run folder or bundle."),
               format_: str = typer.Option("onnx", "--format", help="Export format (onnx)."),
               int8: bool = typer.Option(False, "--int8", help="Also write a dynamically quantised int8 copy "
                                                              "(model.int8.onnx) and measure its score change."),
               opset: int = typer.Option(18, "--opset", min=18, max=23, help="ONNX operator set.")) -> None:
    """Export the bundle's model to ONNX (dynamic batch axis) beside its weights, checked against torch, and
    record it in model.json; then predict --backend onnx (or onnx-int8) and mfas.load(..., backend="onnx")
    run it with onnxruntime, without torch."""
    from mfas.errors import ConfigError

    if format_ != "onnx":
        raise ConfigError(f"--format: only onnx is supported, got {format_!r}")
    from mfas.engine.export import export_onnx

    with console.status("exporting (tracing the model takes a few seconds to a minute)"):
        r = export_onnx(run, int8=int8, opset=opset)
    console.print(f"wrote {run / r['fp32']['file']} (opset {r['opset']}; inputs {', '.join(r['inputs'])}; "
                  f"max |score - torch| {r['fp32']['parity_max_abs']:.1e})",
                  highlight=False, markup=False, soft_wrap=True)
    if "int8" in r:
        console.print(f"wrote {run / r['int8']['file']} (int8; max |score - torch| "
                      f"{r['int8']['parity_max_abs']:.1e} on random inputs: measure it on your data)",
                      highlight=False, markup=False, soft_wrap=True)


@friendly_errors
def report_cmd(runs: list[Path] = typer.Argument(..., help="One or more runs."),
               out: Path = typer.Option(None, help="Folder for report.md and plots (default: the single run)."),
               bootstrap: int = typer.Option(None, "--bootstrap", min=0,
                                             help="Resamples per bootstrap 95% interval (default 1000; 0: none)."),
               reference: str = typer.Option(
                   None, "--reference",
                   help="Add the papers' printed rows to the benchmark layout, as printed with their source and "
                        "averages recomputed: mmdg (the MMDG benchmark tables of MMDA, MMDG, DADM).")
               ) -> None:
    """Write report.md: threshold-free and per-policy tables (paper-compatible and deployable) with bootstrap
    95% intervals, per-PAI APCER, video-level scores when videos have several frames, the papers' layouts,
    plots."""
    from mfas.engine.io import check_output_folder, existing_folder
    from mfas.engine.report import write_report
    from mfas.errors import ConfigError

    for run in runs:
        existing_folder(run, "run")
    if out is None:
        if len(runs) > 1:
            raise ConfigError("several runs need --out DIR for the comparison report")
        out = runs[0]
    else:
        check_output_folder(out, "--out", allow_run=True)
    if reference is not None:
        from mfas.protocols.reference import load_reference

        load_reference(reference)  # an unknown name fails before any work
    path = write_report(runs, out, **({} if bootstrap is None else {"n_boot": bootstrap}), reference=reference)
    console.print(f"wrote [bold]{path}[/] (plots in {path.parent / 'plots'})")


@friendly_errors
def predict_cmd(bundle: Path = typer.Argument(..., help="Run folder or bundle (model.json + model.safetensors)."),
                rgb: Path = typer.Option(None, help="RGB image."),
                depth: Path = typer.Option(None, help="Depth image."),
                ir: Path = typer.Option(None, help="IR image."),
                rgb_dir: Path = typer.Option(None, help="Folder of RGB images (matched by file stem)."),
                depth_dir: Path = typer.Option(None, help="Folder of depth images."),
                ir_dir: Path = typer.Option(None, help="Folder of IR images."),
                out: Path = typer.Option(None, help="CSV for folder input (default: predictions.csv)."),
                overwrite: bool = typer.Option(False, "--overwrite", help="Replace the --out file if it exists."),
                allow_missing: bool = typer.Option(
                    False, "--allow-missing",
                    help="Folder input: score names that lack a modality with the ones they have (only for models "
                         "that support missing modalities; otherwise such names are an error)."),
                all_faces: bool = typer.Option(
                    False, "--all-faces",
                    help="Score every face found (models with a crop policy); by default the largest."),
                threshold: float = typer.Option(
                    None, "--threshold",
                    help="Decide at this score instead of the bundle's threshold (see mfas calibrate to store "
                         "one)."),
                backend: str = typer.Option(
                    "torch", "--backend",
                    help="torch (the weights), onnx or onnx-int8 (the bundle's export from mfas export; "
                         "onnxruntime, no torch needed).")) -> None:
    """Score new captures: one presentation (--rgb/--depth/--ir) or folders (--rgb-dir ...) into a CSV.

    A model trained on a store prepared with --detect finds the face in RGB and crops it (from depth and IR too)
    as its training data was cropped; a frame without a face gives the decision no_face."""
    from rich.markup import escape

    import mfas
    from mfas.errors import ConfigError, DataError
    from mfas.fs import atomic_write_json, check_output_file
    from mfas.inference.folders import (
        PREDICTION_COLUMNS,
        folder_metrics,
        match_folders,
        predict_folders,
        write_predictions,
    )

    images = {"rgb": rgb, "depth": depth, "ir": ir}
    dirs = {m: d for m, d in {"rgb": rgb_dir, "depth": depth_dir, "ir": ir_dir}.items() if d is not None}
    if dirs and any(v is not None for v in images.values()):
        raise ConfigError("give single images (--rgb/--depth/--ir) or folders (--rgb-dir/--depth-dir/--ir-dir), "
                          "not both")
    if not dirs:
        if not any(v is not None for v in images.values()):
            raise ConfigError("nothing to score: give --rgb/--depth/--ir images or --rgb-dir/--depth-dir/--ir-dir "
                              "folders")
        for flag, given in (("--out", out is not None), ("--overwrite", overwrite), ("--allow-missing", allow_missing)):
            if given:
                raise ConfigError(f"{flag} is for folder input (--rgb-dir ...); a single presentation is printed")
        p = mfas.load(bundle, threshold=threshold, backend=backend)
        for r in p.predict_all(**images, largest_only=not all_faces):
            where = "" if r.face is None else " face at x={:.0f} y={:.0f} {:.0f}x{:.0f}:".format(*r.face.box)
            if r.score is None:
                console.print(f"[bold]no_face[/]: no face found in the RGB image (crop policy: YuNet score >= "
                              f"{p.crop.score_threshold}, box >= {p.crop.min_face} px)")
                continue
            console.print(f"{escape(where)} score {r.score:.4f} -> [bold]{r.decision}[/] (threshold "
                          f"{r.threshold:.4f}, policy {escape(r.policy)}; modalities used: "
                          f"{', '.join(r.modalities)})".lstrip())
        return
    out = check_output_file(out if out is not None else Path("predictions.csv"), "--out", overwrite)
    inputs, skipped, labels = match_folders(dirs, out)
    p = mfas.load(bundle, threshold=threshold, backend=backend)
    rows = predict_folders(p, inputs, dirs, allow_missing, all_faces, labels)
    write_predictions(out, rows)
    err = PREDICTION_COLUMNS.index("error")
    bad = [r for r in rows if r[err]]
    if len(bad) == len(rows):
        raise DataError(out, f"none of the {len(rows)} presentations could be scored (first: {bad[0][0]}: "
                             f"{bad[0][err]}); every error is listed in this CSV")
    console.print(f"wrote {len(rows)} predictions to [bold]{escape(str(out))}[/] ({len(bad)} with errors, listed "
                  "in the CSV)")
    no_face = sum(r[2] == "no_face" for r in rows)
    if no_face:
        console.print(f"{no_face} presentations without a face (decision no_face)")
    for r in bad[:5]:
        console.print(f"  {r[0]}: {r[err]}", highlight=False, markup=False)
    if skipped:
        names = ", ".join(str(f) for f in skipped[:3]) + (f" and {len(skipped) - 3} more" if len(skipped) > 3 else "")
        console.print(f"skipped {len(skipped)} files that are not images: {names}", highlight=False, markup=False)
    m = folder_metrics(rows, p.threshold, p.policy)
    if m is not None:
        path = out.with_name(out.stem + ".metrics.json")
        atomic_write_json(path, m)
        parts = [f"{m['n_bonafide']} bona fide and {m['n_attack']} attacks scored"]
        if "auc" in m:
            parts.append(f"AUC {100 * m['auc']:.1f}%, at threshold {m['threshold']:.4f} ({m['policy']}): APCER "
                         f"{100 * m['apcer']:.1f}%, BPCER {100 * m['bpcer']:.1f}%, ACER {100 * m['acer']:.1f}%")
        if any(m["no_face"].values()):
            parts.append(f"no face: {m['no_face']['bonafide']} bona fide, {m['no_face']['attack']} attacks")
        console.print("labelled by class folders: " + "; ".join(parts) + f" (written to {path})", highlight=False,
                      markup=False)


peer_app = typer.Typer(help="Bundles for peer models with released weights (inference only).",
                       no_args_is_help=True)


@peer_app.command("minifasnet")
@friendly_errors
def peer_minifasnet(onnx: Path = typer.Option(..., "--onnx", help="MiniFASNetV2.onnx or MiniFASNetV1SE.onnx "
                                                                  "(Silent-Face-Anti-Spoofing, Apache-2.0)."),
                    out: Path = typer.Option(..., "--out", help="New run folder for the bundle."),
                    variant: str = typer.Option(None, "--variant",
                                                help="v2 (crop 2.7 x the face box) or v1se (4.0); default from "
                                                     "the file name.")) -> None:
    """Write a bundle for the MiniFASNet RGB peer, which mfas predict and mfas evaluate then score like a run:
    predict crops raw frames as the released model expects (YuNet face, box x 2.7 or 4.0, 80 x 80)."""
    from mfas.engine.peers import write_minifasnet_bundle
    from mfas.errors import ConfigError

    if variant is None:
        low = onnx.name.lower()
        variant = "v1se" if "v1se" in low else "v2" if "v2" in low else None
        if variant is None:
            raise ConfigError(f"--variant: cannot tell v2 or v1se from the file name {onnx.name!r}; give it")
    path = write_minifasnet_bundle(onnx, out, variant)
    console.print(f"wrote the MiniFASNet-{variant} bundle to {path}; mfas predict {path} --rgb FRAME",
                  highlight=False, markup=False)


models_app = typer.Typer(help="List and inspect registered models.", no_args_is_help=True)


def parse_model_sets(items: list[str]) -> dict:
    """``["depth=3", "fusion=merge"]`` -> {"depth": 3, "fusion": "merge"} (values parsed as YAML)."""
    import yaml

    from mfas.errors import ConfigError

    over = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: write KEY=VALUE, e.g. --set depth=3")
        try:
            over[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            reason = " ".join(str(e).split())
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({reason})") from None
    return over


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

    from rich.markup import escape

    from mfas.engine.io import check_option_values, meta_model

    over = parse_model_sets(set_ or [])
    check_option_values(over, "--set")
    m = meta_model(name, over, "")  # shapes only: counting parameters allocates nothing
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
    from mfas.engine.io import atomic_write_text, check_checkpoint, check_output_folder, save_bundle, weights_header
    from mfas.engine.resolve import resolve_protocol
    from mfas.errors import ConfigError
    from mfas.metrics import choose_threshold
    from mfas.models import create_model
    from mfas.models.mmda.convert import converted_run_config, load_released_checkpoint

    check_output_folder(out, "--out", allow_run=True)  # a usable path under a writable folder
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder")
    # the file first: a truncated, foreign or malicious checkpoint is refused before a model is built
    if checkpoint.suffix == ".safetensors":
        weights_header(checkpoint)
    else:
        check_checkpoint(checkpoint)
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
