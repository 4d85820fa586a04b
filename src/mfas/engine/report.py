"""``report.md`` and plots from one or more runs' ``metrics.json`` and score files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from mfas.engine.evaluation import read_scores
from mfas.engine.io import atomic_write_text
from mfas.errors import MfasError
from mfas.metrics import error_curve
from mfas.models.registry import full_defaults


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def find_results(run: Path) -> list[Path]:
    """Folders under a run holding a metrics.json: the run itself and its eval/* folders."""
    out = [run] if (run / "metrics.json").exists() else []
    out += sorted(p.parent for p in (run / "eval").glob("*/metrics.json")) if (run / "eval").exists() else []
    return out


def protocol_tables(m: dict) -> list[str]:
    lines = []
    pols = m["policies"]
    paper = [p for p in pols if p == "test_eer"]
    deploy = [p for p in pols if p != "test_eer"]
    names = list(m["tests"])
    sel = m.get("selection") or {}
    oracle = " (**paper-compatible oracle**)" if sel.get("paper_compatible") else ""
    epoch = f", epoch {sel['epoch']}" if "epoch" in sel else ""
    lines.append(f"Protocol `{m['protocol']}`; unit: {m['unit']}; model selection: "
                 f"`{sel.get('policy', '?')}`{oracle}{epoch}")
    lines.append("")
    if paper:
        lines += ["**Paper-compatible** (threshold at the EER point of each test set itself, as the MMDG/MMDA/"
                  "FLIP papers report; an oracle, not a deployable number). Values in %.", "",
                  "| target | n | HTER | AUC | TPR@FPR=1% | Acc@BPCER=1% |", "|---|---|---|---|---|---|"]
        for n in names:
            r = m["tests"][n]
            if "error" in r:
                lines.append(f"| {n} | {r.get('n', '')} | {r['error']} | | | |")
                continue
            tf, b = r["threshold_free"], r["policies"].get("test_eer", {})
            lines.append(f"| {n} ({'+'.join(r['modalities'])}) | {r['n']} | {_pct(b.get('hter'))} | {_pct(tf['auc'])} "
                         f"| {_pct(tf['tpr_at_fpr_1'])} | {_pct(tf['acc_at_bpcer_1'])} |")
        a = m.get("average")
        if a:
            tf, b = a["threshold_free"], a["policies"].get("test_eer", {})
            lines.append(f"| **{a['kind']} of {', '.join(a['over'])}** | | {_pct(b.get('hter'))} | {_pct(tf['auc'])} "
                         f"| {_pct(tf['tpr_at_fpr_1'])} | {_pct(tf['acc_at_bpcer_1'])} |")
        lines.append("")
    for pol in deploy:
        lines += [f"**Deployable** (threshold policy `{pol}`: chosen on the sources' validation data, then applied "
                  "to every target; ISO/IEC 30107-3 rates). Values in %.", "",
                  "| target | threshold | APCER (max over PAI) | BPCER | ACER | HTER |", "|---|---|---|---|---|---|"]
        for n in names:
            b = m["tests"][n].get("policies", {}).get(pol)
            if b is None:
                why = m["tests"][n].get("skipped", {}).get(pol, m["tests"][n].get("error", "not computed"))
                lines.append(f"| {n} | {why} | | | | |")
                continue
            lines.append(f"| {n} | {b['threshold']['value']:.4f} | {_pct(b['apcer'])} | {_pct(b['bpcer'])} "
                         f"| {_pct(b['acer'])} | {_pct(b['hter'])} |")
        a = m.get("average")
        if a and pol in a["policies"]:
            b = a["policies"][pol]
            lines.append(f"| **{a['kind']}** | | {_pct(b['apcer'])} | {_pct(b['bpcer'])} | {_pct(b['acer'])} "
                         f"| {_pct(b['hter'])} |")
        lines.append("")
        species = sorted({s for n in names for s in m["tests"][n].get("policies", {}).get(pol, {})
                          .get("apcer_per_species", {})})
        if species:
            lines += [f"APCER per PAI species at `{pol}` (%):", "",
                      "| target | " + " | ".join(species) + " |", "|---|" + "---|" * len(species)]
            for n in names:
                per = m["tests"][n].get("policies", {}).get(pol, {}).get("apcer_per_species", {})
                lines.append(f"| {n} | " + " | ".join(_pct(per.get(s)) for s in species) + " |")
            lines.append("")
    return lines


def plots(result_dir: Path, out: Path, prefix: str) -> list[str]:
    """ROC, DET, FPR-FNR and histograms for every score file; returns the image paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = sorted(p for p in (result_dir / "scores").glob("*.csv") if p.stem != "select")
    if not files:
        return []
    tables = {p.stem: read_scores(p) for p in files}
    tables = {k: v for k, v in tables.items() if len(set(v["label"].tolist())) == 2}
    if not tables:
        return []
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, t in tables.items():
        c = error_curve(t["label"], t["score"])
        axes[0].plot(c.apcer, 1 - c.bpcer, label=name)
        eps = 1e-4
        axes[1].plot(np.clip(c.apcer, eps, 1), np.clip(c.bpcer, eps, 1), label=name)
    axes[0].plot([0, 1], [0, 1], ":", color="grey")
    axes[0].set(xlabel="FPR = APCER (pooled)", ylabel="TPR = 1 - BPCER", title="ROC (bona fide positive)")
    axes[1].set(xscale="log", yscale="log", xlabel="APCER (pooled)", ylabel="BPCER", title="DET")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, out / f"{prefix}roc_det.png"))
    n = len(tables)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 6.2), squeeze=False)
    for j, (name, t) in enumerate(tables.items()):
        c = error_curve(t["label"], t["score"])
        ax = axes[0, j]
        ax.plot(c.thresholds, c.apcer, label="FPR (APCER)")
        ax.plot(c.thresholds, c.bpcer, label="FNR (BPCER)")
        ax.set(title=name, xlabel="threshold", xlim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1, j]
        bins = np.linspace(0, 1, 31)
        ax.hist(t["score"][t["label"] == 1], bins=bins, alpha=0.6, label="bona fide", density=True)
        ax.hist(t["score"][t["label"] == 0], bins=bins, alpha=0.6, label="attack", density=True)
        ax.set(xlabel="score = P(bona fide)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out / f"{prefix}fpr_fnr_hist.png"))
    return written


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def comparison(results: list[tuple[str, dict]]) -> list[str]:
    tests = []
    for _, m in results:
        tests += [t for t in m["tests"] if t not in tests]
    lines = ["## Comparison (HTER at test EER / AUC, %, paper-compatible)", "",
             "| run | " + " | ".join(tests) + " | average |", "|---|" + "---|" * (len(tests) + 1)]
    for label, m in results:
        cells = []
        for t in tests:
            r = m["tests"].get(t)
            if not r or "threshold_free" not in r:
                cells.append("—")
                continue
            cells.append(_hter_auc(r))
        a = m.get("average")
        avg = _hter_auc(a) if a else "—"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {avg} |")
    return lines + [""]


def table1_layout(results: list[tuple[str, dict]]) -> list[str]:
    """The mmFAS paper's Table 1: one row per run, per target HTER (test EER threshold), AUC and Acc at
    BPCER = 1%, then the image-weighted (or mean) average."""
    tests = []
    for _, m in results:
        tests += [t for t in m["tests"] if t not in tests]
    avg_kind = next((m["average"]["kind"] for _, m in results if m.get("average")), None)
    groups = tests + ([avg_kind] if avg_kind else [])
    head = "| run | " + " | ".join(f"{g} HTER | {g} AUC | {g} Acc" for g in groups) + " |"
    lines = [f"## Table 1 layout ({', '.join(sorted({m['protocol'] for _, m in results}))}; %, HTER at each test "
             "set's EER threshold = paper-compatible, Acc at BPCER = 1% on the test set)", "", head,
             "|---|" + "---|" * (3 * len(groups))]
    for label, m in results:
        cells = []
        rows = [m["tests"].get(t) for t in tests] + ([m.get("average")] if avg_kind else [])
        for r in rows:
            if not r or "threshold_free" not in r:
                cells += ["—"] * 3
                continue
            tf = r["threshold_free"]
            cells += [_pct(r["policies"].get("test_eer", {}).get("hter")), _pct(tf["auc"]),
                      _pct(tf.get("acc_at_bpcer_1"))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


_MMDG = re.compile(r"^(?:sim/)?(loo|missing|limited)/([A-Z]+-[A-Z]+)$")
_MMDG_ORDER = {"loo": ["CPS-W", "CPW-S", "CSW-P", "PSW-C"], "missing": ["CPS-W", "CPW-S", "CSW-P", "PSW-C"],
               "limited": ["CW-PS", "PS-CW"]}


def method_label(run: Path) -> str:
    """The model name plus the options that differ from the registry's defaults (seed and size options of
    the name itself excluded), e.g. ``mmda-tiny compat=official``."""
    mj = run / "model.json"
    if not mj.exists():
        return run.name
    cfg = dict(json.loads(mj.read_text())["model"])
    name = cfg.pop("name")
    try:
        defaults = full_defaults(name)
    except MfasError:
        return name
    same = {k for k, v in cfg.items() if k in defaults and json.loads(json.dumps(defaults[k], default=str)) == v}
    diff = [f"{k}={v}" for k, v in sorted(cfg.items()) if k not in same and k != "pretrained"]
    return " ".join([name, *diff])


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "—"
    a = 100 * np.asarray(xs)
    return f"{a.mean():.2f}" + (f" ± {a.std(ddof=1):.2f}" if a.size > 1 else "")


def mmdg_layout(results: list[tuple[Path, dict]]) -> list[str]:
    """The MMDG benchmark's tables (as in the MMDA paper): one row per method (runs grouped by
    :func:`method_label`, seeds averaged as mean ± sd), per protocol HTER and AUC, and the average
    recomputed from the rows (mean over protocols of each seed-mean). Leave-one-out and limited-source runs
    use their first test set; missing-modality columns average the splits present (MMDG averages all four), and
    a ``splits`` column says which ones they were, so a partial set is never passed off as the benchmark's mean."""
    cells: dict = {}  # (family, method) -> {column: {metric: [values]}}
    splits: dict = {}  # (family, method) -> the protocol splits seen
    for run, m in results:
        match = _MMDG.match(m["protocol"])
        if not match:
            continue
        family, split = match.groups()
        method = method_label(run)
        splits.setdefault((family, method), set()).add(split)
        items = list(m["tests"].items())
        if family != "missing":
            items = items[:1]
        for test_name, r in items:
            if "threshold_free" not in r:
                continue
            col = split if family != "missing" else test_name.split(" ", 1)[-1]
            slot = cells.setdefault((family, method), {}).setdefault(col, {})
            slot.setdefault(("auc", None), []).append(r["threshold_free"]["auc"])
            for pol, v in r["policies"].items():
                slot.setdefault(("hter", pol), []).append(v["hter"])
    if not cells:
        return []
    lines = []
    titles = {"loo": "leave-one-out, complete modalities", "missing": "missing modalities at test (mean over the "
              "leave-one-out splits named in `splits`)", "limited": "limited sources"}
    for family in ("loo", "missing", "limited"):
        methods = [meth for fam, meth in cells if fam == family]
        if not methods:
            continue
        cols = [c for c in _MMDG_ORDER[family] if any(c in cells[(family, mt)] for mt in methods)]
        cols += sorted({c for mt in methods for c in cells[(family, mt)]} - set(cols))
        for pol, block in (("test_eer", "paper-compatible: threshold at each test set's EER"),
                           ("val_eer", "deployable: threshold from the sources' validation EER")):
            if not any(("hter", pol) in cells[(family, mt)].get(c, {}) for mt in methods for c in cols):
                continue
            extra = ["splits"] if family == "missing" else []
            lines += [f"## MMDG layout, {titles[family]} (HTER / AUC %, {block})", "",
                      "| " + " | ".join(["method", *extra, *(f"{c} {k}" for c in cols for k in ("HTER", "AUC")),
                                         "Avg HTER", "Avg AUC"]) + " |",
                      "|---|" + "---|" * (2 * len(cols) + 2 + len(extra))]
            for mt in methods:
                row, h_means, a_means = [], [], []
                for c in cols:
                    slot = cells[(family, mt)].get(c, {})
                    h, a = slot.get(("hter", pol), []), slot.get(("auc", None), [])
                    row += [_mean_sd(h), _mean_sd(a)]
                    if h and a:
                        h_means.append(float(np.mean(h)))
                        a_means.append(float(np.mean(a)))
                complete = len(h_means) == len(cols)
                avg = [f"{100 * np.mean(h_means):.2f}", f"{100 * np.mean(a_means):.2f}"] if complete else ["—", "—"]
                if extra:
                    seen = splits[(family, mt)]
                    row.insert(0, f"all {len(seen)}" if seen >= set(_MMDG_ORDER["loo"]) else ", ".join(sorted(seen)))
                lines.append(f"| {mt} | " + " | ".join(row + avg) + " |")
            lines.append("")
    return lines


def _hter_auc(r: dict) -> str:
    return f"{_pct(r['policies'].get('test_eer', {}).get('hter'))} / {_pct(r['threshold_free']['auc'])}"


def write_report(runs: list[Path], out: Path) -> Path:
    """Write ``out/report.md`` (and plots under ``out/plots``) for one or several runs."""
    results: list[tuple[str, dict, Path]] = []
    by_run: list[tuple[Path, dict]] = []
    for run in runs:
        found = find_results(Path(run))
        if not found:
            raise MfasError(f"{run}: no metrics.json (train or evaluate the run first)")
        for d in found:
            label = Path(run).name if d == Path(run) else f"{Path(run).name}/{d.name}"
            results.append((label, json.loads((d / "metrics.json").read_text()), d))
            by_run.append((Path(run), results[-1][1]))
    lines = ["# mfas report", "", "Conventions: label 1 = bona fide; score = P(bona fide); a sample is accepted "
             "as bona fide when score >= threshold. Every fixed-threshold number names the policy that chose "
             "its threshold.", ""]
    for label, m, d in results:
        lines += [f"## {label}", ""] + protocol_tables(m)
        imgs = plots(d, out / "plots", prefix=f"{label.replace('/', '_')}_")
        for img in imgs:
            lines.append(f"![{Path(img).stem}](plots/{Path(img).name})")
        lines.append("")
    if len(results) > 1:
        lines += comparison([(lbl, m) for lbl, m, _ in results])
    weighted = [(lbl, m) for lbl, m, _ in results if (m.get("average") or {}).get("kind") == "weighted"]
    if weighted:
        lines += table1_layout(weighted)
    if len(by_run) > 1:
        lines += mmdg_layout(by_run)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"
