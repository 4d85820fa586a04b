"""SimFAS learning curves: AUC against samples per domain, in-domain and leave-one-domain-out, for one baseline.
This is how the default scale of SimFAS is chosen (docs/simfas.md, "Learning curves and the default scale").

    python tools/simfas_curves.py --sizes 250 1000 4000
    python tools/simfas_curves.py --report-only          # table and plot from finished runs

For each size it generates ``<stores>/n<size>`` (seed 0) if missing, then trains ``--model`` on ``sim/in/<D>`` and
``sim/loo/<sources>-<D>`` for every domain D. In-domain runs train 3 x ``--epochs``: one domain's images for as
many optimiser steps as leave-one-out takes on three sources. Finished runs (with metrics.json) are kept, so an
interrupted sweep continues where it stopped. Writes a CSV, a markdown table and a plot.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = ("C", "P", "S", "W")
LOO = {d: "sim/loo/" + "".join(x for x in DOMAINS if x != d) + f"-{d}" for d in DOMAINS}


def config(name: str, protocol: str, store: Path, runs: Path, a: argparse.Namespace) -> dict:
    return {"name": name, "seed": a.seed, "protocol": protocol, "output_dir": str(runs),
            "data": {"stores": {"sim": str(store)}, "image_size": a.size, "batch_size": 32,
                     "sampler": "class_balanced", "augment": True},
            "model": {"name": a.model, "img_size": a.size},
            "optim": {"lr": a.lr, "weight_decay": 0.05, "schedule": "cosine", "warmup": 0.1},
            "trainer": {"max_epochs": a.epochs * (3 if protocol.startswith("sim/in/") else 1),
                        "deterministic": True, "progress": False},
            "eval": {"policies": ["test_eer", "val_eer"], "selection": "last"}}


def runs_of(a: argparse.Namespace) -> list[tuple[int, str, str, str]]:
    """(size, kind, domain, run name) of the sweep."""
    return [(n, kind, d, f"n{n}_{kind}_{d}") for n in a.sizes for kind in a.kinds for d in a.domains]


def train_all(a: argparse.Namespace) -> None:
    from mfas.data.synth import generate_store
    from mfas.engine.config import validate_config
    from mfas.engine.train import train

    for n, kind, d, name in runs_of(a):
        store = a.stores / f"n{n}"
        if not (store / "store.json").exists():
            t = time.perf_counter()
            generate_store(store, per_domain=n, size=a.size, seed=0, overwrite=True)
            print(f"store n={n}: {time.perf_counter() - t:.0f} s", flush=True)
        if (a.runs / name / "metrics.json").exists():
            continue
        shutil.rmtree(a.runs / name, ignore_errors=True)
        protocol = f"sim/in/{d}" if kind == "in" else LOO[d]
        t = time.perf_counter()
        train(validate_config(config(name, protocol, store, a.runs, a), where=name))
        print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)


def collect(a: argparse.Namespace) -> list[dict]:
    rows = []
    for n, kind, d, name in runs_of(a):
        path = a.runs / name / "metrics.json"
        if path.exists():
            res = json.loads(path.read_text())["tests"][d]
            rows.append({"per_domain": n, "kind": kind, "domain": d, "n_test": res["n"],
                         "auc": 100 * res["threshold_free"]["auc"]})
    return rows


def write(rows: list[dict], a: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a.out.parent.mkdir(parents=True, exist_ok=True)
    with open(a.out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["per_domain", "kind", "domain", "n_test", "auc"])
        w.writeheader()
        w.writerows({**r, "auc": f"{r['auc']:.2f}"} for r in rows)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    lines = ["| samples per domain | " + " | ".join(f"in {d}" for d in a.domains) + " | in mean | "
             + " | ".join(f"→ {d}" for d in a.domains) + " | LOO mean |",
             "|---|" + "---|" * (2 * len(a.domains) + 2)]
    for kind, colour, label in (("in", "tab:blue", "in-domain"), ("loo", "tab:red", "leave-one-domain-out")):
        means = []
        for d in a.domains:
            pts = [(r["per_domain"], r["auc"]) for r in rows if r["kind"] == kind and r["domain"] == d]
            if pts:
                x, y = zip(*sorted(pts), strict=True)
                ax.plot(x, y, color=colour, alpha=0.3, lw=1, marker=".")
                ax.annotate(d, (x[-1], y[-1]), color=colour, fontsize=7, xytext=(3, 0), textcoords="offset points")
        for n in a.sizes:
            vals = [r["auc"] for r in rows if r["kind"] == kind and r["per_domain"] == n]
            if len(vals) == len(a.domains):
                means.append((n, float(np.mean(vals))))
        if means:
            x, y = zip(*means, strict=True)
            ax.plot(x, y, color=colour, lw=2.2, marker="o", label=f"{label} (mean of 4)")
    for n in a.sizes:
        cell = {(r["kind"], r["domain"]): r["auc"] for r in rows if r["per_domain"] == n}
        parts = []
        for kind in a.kinds:
            vals = [cell.get((kind, d)) for d in a.domains]
            parts += [f"{v:.1f}" if v is not None else "—" for v in vals]
            parts.append(f"**{np.mean(vals):.1f}**" if all(v is not None for v in vals) else "—")
        lines.append(f"| {n:,} | " + " | ".join(parts) + " |")
    ax.set_xscale("log")
    ax.set_xticks(list(a.sizes), [f"{n:,}" for n in a.sizes])
    ax.set_xlabel("SimFAS samples per domain")
    ax.set_ylabel("test AUC (%)")
    ax.set_title(f"{a.model}, {a.epochs} epochs ({3 * a.epochs} in-domain), {a.size}²: in-domain vs "
                 "leave-one-domain-out", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(a.out)
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {a.out}, {a.out.with_suffix('.csv')}, {a.out.with_suffix('.md')}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[250, 1000, 4000], help="samples per domain")
    p.add_argument("--kinds", nargs="+", default=["in", "loo"], choices=["in", "loo"])
    p.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=list(DOMAINS))
    p.add_argument("--model", default="cnn-concat-tiny")
    p.add_argument("--epochs", type=int, default=10, help="leave-one-out epochs (in-domain: 3 x)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--size", type=int, default=112, help="image side")
    p.add_argument("--seed", type=int, default=0, help="training seed (stores use seed 0)")
    p.add_argument("--stores", type=Path, default=Path("stores/curves"))
    p.add_argument("--runs", type=Path, default=Path("runs/curves"))
    p.add_argument("--out", type=Path, default=ROOT / "docs/img/simfas_curves.png")
    p.add_argument("--report-only", action="store_true", help="table and plot from finished runs")
    a = p.parse_args()
    if not a.report_only:
        train_all(a)
    write(collect(a), a)


if __name__ == "__main__":
    main()
