"""``mfas check``: the known-answer suite (mfas.engine.known_answers)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from mfas.cli.common import console, friendly_errors

CHECKS = ("shuffled", "carrier", "removal", "severed", "repeat")


@friendly_errors
def check_cmd(out: Path = typer.Option(Path("runs/check"), help="Folder for the suite's store, runs and results."),
              only: str = typer.Option("", help=f"Comma-separated subset of: {', '.join(CHECKS)}."),
              per_domain: int = typer.Option(2000, "--per-domain", "-n", help="Samples of the suite's set-up."),
              epochs: int = typer.Option(8, help="Training epochs of each model."),
              image_size: int = typer.Option(112, "--image-size", help="Image side."),
              model: str = typer.Option("cnn-concat-tiny", help="Model the checks train."),
              seed: int = typer.Option(0, help="Random seed."),
              workers: int = typer.Option(0, help="Worker processes for SimFAS (0 = one per core)."),
              reuse: bool = typer.Option(False, help="Keep finished runs in OUT trained with the same config "
                                                     "(recompute the verdicts only)."),
              json_out: bool = typer.Option(False, "--json", help="Print the results as JSON.")) -> None:
    """Run experiments whose outcome is known (shuffled labels at chance, each species won by the modality that
    carries its cue, a removed or severed modality missed, a repeat identical) and compare. Exit status 1 when a
    check fails. About 30 minutes on 2 CPU cores with the defaults; results in OUT/checks.json."""
    from mfas.engine.io import atomic_write_json
    from mfas.engine.known_answers import Settings, run_checks
    from mfas.errors import ConfigError

    chosen = [c.strip() for c in only.split(",") if c.strip()] or list(CHECKS)
    for c in chosen:
        if c not in CHECKS:
            raise ConfigError(f"--only: unknown check {c!r}; known: {', '.join(CHECKS)}")
    if per_domain < 100 or epochs < 1 or image_size < 32:
        raise ConfigError("--per-domain must be >= 100, --epochs >= 1 and --image-size >= 32")
    s = Settings(per_domain=per_domain, image_size=image_size, epochs=epochs, model=model, seed=seed)
    t0 = time.perf_counter()
    results = run_checks(out, s, chosen, say=lambda m: console.print(f"[dim]{m}[/]"), workers=workers or None,
                         reuse=reuse)
    wall = time.perf_counter() - t0
    atomic_write_json(out / "checks.json", {"settings": s.__dict__, "wall_s": round(wall, 1),
                                            "checks": [r.__dict__ for r in results]})
    if json_out:
        typer.echo(json.dumps([r.__dict__ for r in results], indent=1))
    else:
        for r in results:
            mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
            console.print(f"{mark} [bold]{r.name}[/]\n  expected: {r.expected}\n  measured: {r.measured}")
        console.print(f"{sum(r.passed for r in results)}/{len(results)} checks passed in {wall:.0f} s; "
                      f"details in {out / 'checks.json'}")
    if not all(r.passed for r in results):
        raise typer.Exit(1)
