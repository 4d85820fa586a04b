"""``mfas demo``: the main job on a fresh machine."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from mfas.cli.common import console, friendly_errors


@friendly_errors
def demo_cmd(out: Path = typer.Option(Path("runs/demo"), help="Folder for the demo's outputs."),
             per_domain: int = typer.Option(250, "--per-domain", "-n", help="SimFAS samples per domain."),
             seed: int = typer.Option(0, help="Random seed."),
             workers: int = typer.Option(0, help="Worker processes (0 = one per core).")) -> None:
    """Generate a small SimFAS store, print its contents and its shortcut check."""
    from mfas.cli.data import print_info, print_sanity, progress_bar
    from mfas.data import open_store, store_info
    from mfas.data.sanity import planarity_report, sanity_report
    from mfas.data.synth import generate_store
    from mfas.protocols import get_protocol

    store_path = out / "simfas"
    console.rule("[bold]1. SimFAS: generating a synthetic RGB + depth + NIR benchmark")
    t0 = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("rendering", total=per_domain * 4)
        generate_store(store_path, per_domain=per_domain, seed=seed, workers=workers or None, overwrite=True,
                       progress=lambda k: bar.advance(task, k))
    console.print(f"generated in {time.perf_counter() - t0:.1f} s")
    st = open_store(store_path)
    console.rule("[bold]2. what the store holds (mfas data info)")
    print_info(store_info(st))
    console.rule("[bold]3. can trivial statistics solve it? (mfas data sanity)")
    rep = sanity_report(st)
    rep["depth_planarity_auc"] = planarity_report(st)
    print_sanity(rep)
    console.rule("[bold]4. protocol it is ready for")
    p = get_protocol("sim/loo/CPS-W")
    console.print(f"{p.name}: {p.description}")
    console.print(f"  train {', '.join(map(str, p.train))}; select {', '.join(map(str, p.select))}; "
                  f"test {', '.join(str(r) for t in p.tests for r in t.parts)}")
    console.print(f"\nstore: [bold]{store_path}[/]   try: mfas data info {store_path}")
