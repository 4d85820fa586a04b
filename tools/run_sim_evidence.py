"""The SimFAS evidence: a model family's variants on the four leave-one-domain-out protocols, several seeds,
aggregated into a markdown table (the sections of docs/results/simfas.md).

    python tools/run_sim_evidence.py --store stores/simfas --runs runs/evidence --seeds 0 1 2
    python tools/run_sim_evidence.py --family mmda --runs runs/evidence-mmda --out mmda.md
    python tools/run_sim_evidence.py --family baselines --runs runs/evidence-base --out base.md

Variants are the configs in configs/sim/<family>/loo/<protocol>/<variant>.yaml.

Finished runs (with metrics.json) are kept, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from mfas.engine.evaluation import read_scores

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from make_mmfas_configs import LOO_PROTOCOLS, LOO_VARIANTS  # noqa: E402

POLICIES = ("test_eer", "val_eer")


def family_variants(family: str) -> list[str]:
    folder = ROOT / f"configs/sim/{family}/loo/{LOO_PROTOCOLS[0]}"
    found = sorted(p.stem for p in folder.glob("*.yaml"))
    if family == "mmfas":
        return [v for v in LOO_VARIANTS if v in found]
    return found


def run_all(store: Path, runs: Path, seeds: list[int], per_domain: int, variants: list[str],
            overrides: list[str], family: str = "mmfas", protocols: list[str] | None = None) -> None:
    from mfas.data.synth import generate_store
    from mfas.engine.config import load_config
    from mfas.engine.train import train

    if not (store / "store.json").exists():
        generate_store(store, per_domain=per_domain, seed=0)
    for seed in seeds:
        for proto in protocols or LOO_PROTOCOLS:
            for variant in variants:
                name = f"{proto}_{variant}_s{seed}"
                if (runs / name / "metrics.json").exists():
                    continue
                shutil.rmtree(runs / name, ignore_errors=True)
                cfg = load_config(ROOT / f"configs/sim/{family}/loo/{proto}/{variant}.yaml",
                                  [f"seed={seed}", f"name={name}", f"output_dir={runs}", "trainer.progress=false",
                                   f"data.stores.sim={store}", *overrides])
                t = time.perf_counter()
                train(cfg)
                print(f"{name}: {time.perf_counter() - t:.0f} s", flush=True)


def collect(runs: Path, seeds: list[int], variants: list[str]) -> dict:
    table: dict = {}
    for variant in variants:
        for proto in LOO_PROTOCOLS:
            vals: dict[str, list[float]] = {"auc": [], **{p: [] for p in POLICIES}}
            scores: list[dict] = []
            for seed in seeds:
                path = runs / f"{proto}_{variant}_s{seed}" / "metrics.json"
                if not path.exists():
                    continue
                m = json.loads(path.read_text())
                ((target, res),) = m["tests"].items()
                vals["auc"].append(res["threshold_free"]["auc"])
                for p in POLICIES:
                    vals[p].append(res["policies"][p]["hter"])
                scores.append({"table": read_scores(path.parent / "scores" / f"{target}.csv"),
                               "thresholds": {p: res["policies"][p]["threshold"]["value"] for p in POLICIES}})
            table[(variant, proto)] = {**vals, "runs": scores}
    return table


def _metric(kind: str):
    """(labels, scores, pai, threshold) -> value of the table's metric ``kind``."""
    from mfas.metrics import definitions
    from mfas.metrics.thresholds import ThresholdPolicy, choose_threshold

    if kind == "auc":
        return lambda y, s, p, t: definitions.get("auc").compute(y, s, p)
    hter = definitions.get("hter").compute
    if ThresholdPolicy.parse(kind).paper_compatible:  # the target's own EER point, chosen again per resample
        return lambda y, s, p, t: hter(y, s, p, choose_threshold(ThresholdPolicy.parse(kind), test=(y, s, p)).value)
    return lambda y, s, p, t: hter(y, s, p, t)


def seed_mean_ci(cells: list[dict], kind: str, n_boot: int = 500, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the seed-mean of ``kind`` averaged over ``cells`` (one per target).

    The test samples of each target are resampled (stratified by class), the same resample for every seed of
    that target, since the seeds score one test set; targets are resampled independently."""
    rng = np.random.default_rng(seed)
    fn = _metric(kind)
    boots = np.zeros(n_boot)
    for cell in cells:
        runs = cell["runs"]
        y = runs[0]["table"]["label"]
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        for b in range(n_boot):
            idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
            boots[b] += np.mean([fn(r["table"]["label"][idx], r["table"]["score"][idx], r["table"]["pai"][idx],
                                    r["thresholds"].get(kind)) for r in runs]) / len(cells)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return float(lo), float(hi)


def fmt(xs: list[float], ci: tuple[float, float] | None = None) -> str:
    if not xs:
        return "—"
    a = 100 * np.asarray(xs)
    text = f"{a.mean():.1f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.1f}"
    return text + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def write_markdown(table: dict, seeds: list[int], out: Path, note: str, variants: list[str],
                   family: str = "mmfas") -> None:
    lines = [f"# SimFAS leave-one-domain-out: {family}", "",
             f"Variants of `configs/sim/{family}/loo/` on the four SimFAS leave-one-domain-out protocols, "
             f"produced by `python tools/run_sim_evidence.py --family {family}`. "
             f"Seeds {', '.join(map(str, seeds))}; each cell is mean ± sample standard deviation over seeds, in %, "
             "then [the 95% bootstrap interval of that seed mean]: 500 class-stratified resamples of the target's "
             "test samples, shared by the seeds (they score one test set); the mean column resamples every target. "
             "Model selection: `last` epoch (no target data). HTER@test_eer sets the threshold at each target's "
             "own EER point (paper-compatible, optimistic); HTER@val_eer uses the sources' validation EER "
             "threshold (deployable).", "", note, ""]
    for metric, title in (("auc", "AUC (higher is better)"), ("test_eer", "HTER @ test_eer, paper-compatible"),
                          ("val_eer", "HTER @ val_eer, deployable")):
        lines += [f"## {title}", "", "| variant | " + " | ".join(f"→ {p[-1]}" for p in LOO_PROTOCOLS) + " | mean |",
                  "|---|" + "---|" * (len(LOO_PROTOCOLS) + 1)]
        for variant in variants:
            done = [table[(variant, p)] for p in LOO_PROTOCOLS if table[(variant, p)]["runs"]]
            cells = [fmt(table[(variant, p)][metric], seed_mean_ci([table[(variant, p)]], metric)
                         if table[(variant, p)]["runs"] else None) for p in LOO_PROTOCOLS]
            n = min(len(table[(variant, p)][metric]) for p in LOO_PROTOCOLS)
            per_seed = [np.mean([table[(variant, p)][metric][i] for p in LOO_PROTOCOLS]) for i in range(n)]
            mean_ci = seed_mean_ci(done, metric) if n and len(done) == len(LOO_PROTOCOLS) else None
            lines.append(f"| {variant} | " + " | ".join(cells) + f" | {fmt(per_seed, mean_ci)} |")
        lines.append("")
    if family == "mmfas":
        lines += ["Variants: `mmfas` = full model (ICL + CM with hard mining, switch-attention); `no-align` = "
                  "switch-attention without alignment losses; `merge` / `cross` = merge- / cross-attention fusion "
                  "with alignment; `rgb-only` = the RGB extractor and head alone.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, default=Path("stores/simfas"))
    p.add_argument("--per-domain", type=int, default=500, help="SimFAS samples per domain if the store is made")
    p.add_argument("--runs", type=Path, default=Path("runs/evidence"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    # not docs/results/simfas.md: that page is curated (several families, commentary) and a sweep would replace it
    p.add_argument("--out", type=Path, default=None, help="markdown table (default: <runs>/evidence.md)")
    p.add_argument("--note", default="", help="a line about the machine and store, put under the intro")
    p.add_argument("--family", default="mmfas", help="configs/sim/<family>/loo (mmfas, mmda, baselines)")
    p.add_argument("--variants", nargs="+", default=None, help="default: every config of the family")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every run, e.g. trainer.max_epochs=30 (use a separate --runs folder)")
    p.add_argument("--protocols", nargs="+", default=None, choices=list(LOO_PROTOCOLS),
                   help="train only these (e.g. to split a sweep over two processes); the table uses all")
    p.add_argument("--report-only", action="store_true", help="aggregate finished runs, train nothing")
    a = p.parse_args()
    a.out = a.out or a.runs / "evidence.md"
    variants = a.variants or family_variants(a.family)
    unknown = set(variants) - set(family_variants(a.family))
    if unknown:
        p.error(f"no config for variant(s) {', '.join(sorted(unknown))} in configs/sim/{a.family}/loo")
    if not a.report_only:
        run_all(a.store, a.runs, a.seeds, a.per_domain, variants, a.overrides, a.family, a.protocols)
    write_markdown(collect(a.runs, a.seeds, variants), a.seeds, a.out, a.note, variants, a.family)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
