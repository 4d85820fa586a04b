"""``mfas explain`` (Grad-CAM per modality) and ``mfas tsne`` (modal features before/after alignment)."""

from __future__ import annotations

from pathlib import Path

import typer

from mfas.cli.common import console, friendly_errors

STORE = typer.Option(None, "--store", "-s", help="Store key mapping KEY=PATH (repeatable); overrides the run's.")


@friendly_errors
def explain_cmd(run: Path = typer.Argument(..., help="A trained run folder."),
                sample: list[str] = typer.Option(..., "--sample", help="Sample id to explain (repeatable)."),
                out: Path = typer.Option(..., "--out", "-o", help="Folder for the images and heat maps."),
                store: list[str] = STORE) -> None:
    """Grad-CAM of the bona fide logit on each modality's patch tokens, for chosen samples (mmFAS Figure 7).

    Writes <id>_<modality>.png (input at the model's size), <id>_<modality>_cam.png (heat map in [0, 1])
    and an overview <id>.png with the score and the run's threshold.
    """
    from mfas.engine.gradcam import explain_samples
    from mfas.engine.resolve import run_stores
    from mfas.protocols import parse_store_args

    written = explain_samples(run, sample, out, run_stores(run, parse_store_args(store)))
    for p in written:
        console.print(f"wrote [bold]{p}[/]")


@friendly_errors
def tsne_cmd(runs: list[Path] = typer.Argument(..., help="One or more runs, one panel each "
                                                         "(e.g. a run without alignment and one with it)."),
             out: Path = typer.Option(Path("tsne.png"), "--out", "-o", help="Figure path."),
             data: str = typer.Option(None, help="Samples: STORE:SPLIT or STORE[DOMAIN]:SPLIT "
                                                 "(default: the first run's first test set)."),
             limit: int = typer.Option(300, min=10, help="Samples drawn (at random, seeded)."),
             seed: int = typer.Option(0, help="Seed of the draw and of t-SNE."),
             what: str = typer.Option("modalities", help="modalities: the per-modality global features, colour = "
                                      "modality (mmFAS Figure 2); final: the representation the classifier reads, "
                                      "colour = domain (MMDA Figure 6)."),
             store: list[str] = STORE) -> None:
    """t-SNE of a run's features, one panel per run: modal features (mmFAS) or final representations (MMDA)."""
    from mfas.engine.resolve import run_stores
    from mfas.engine.tsne import tsne_dataset, tsne_figure, tsne_final_figure
    from mfas.errors import ConfigError
    from mfas.protocols import parse_store_args

    if what not in ("modalities", "final"):
        raise ConfigError(f"--what must be modalities or final, got {what!r}")
    stores = run_stores(runs[0], parse_store_args(store))
    ds = tsne_dataset(runs[0], stores, data, limit, seed)
    draw = tsne_figure if what == "modalities" else tsne_final_figure
    console.print(f"wrote [bold]{draw(runs, ds, out, limit, seed)}[/] ({len(ds)} samples)")
