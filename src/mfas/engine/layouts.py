"""Markdown tables from results shaped like ``metrics.json``.

A run's own tables and the CLI summary take their columns from :mod:`mfas.metrics.definitions`; the
comparison and the papers' layouts (mmFAS Table 1, the MMDG benchmark as the MMDA paper prints it) show the
fixed columns of those papers. Pure functions: no files, no model registry; callers pass labels, confidence
intervals and results in.
"""

from __future__ import annotations

import re

from mfas.metrics import ThresholdPolicy, definitions, mean_std
from mfas.metrics.definitions import Metric


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _sep(n: int) -> str:
    return "|" + "---|" * n


def fmt_ci(metric: Metric, ci: dict | None) -> str:
    return "—" if not ci else f"[{metric.fmt(ci['low'])}, {metric.fmt(ci['high'])}]"


def _headers(metrics: list[Metric], with_ci: bool) -> list[str]:
    out = []
    for mt in metrics:
        out.append(mt.header)
        if with_ci and mt.ci:
            out.append(f"{mt.label} 95% CI")
    return out


def _cells(metrics: list[Metric], values: dict, cis: dict | None, with_ci: bool) -> list[str]:
    out = []
    for mt in metrics:
        out.append(mt.fmt(values.get(mt.key)))
        if with_ci and mt.ci:
            out.append(fmt_ci(mt, (cis or {}).get(mt.key)))
    return out


def ordered_policies(policies: list[str]) -> list[str]:
    """Paper-compatible (test-derived) policies first, then the deployable ones in their given order."""
    return sorted(policies, key=lambda p: not ThresholdPolicy.parse(p).paper_compatible)


def policy_title(policy: str) -> str:
    pol = ThresholdPolicy.parse(policy)
    if pol.paper_compatible:
        return (f"**Paper-compatible** (threshold policy `{pol}`: the EER point of each test set itself, as the "
                "MMDG/MMDA/FLIP papers report; an oracle, not a deployable number)")
    where = "a fixed threshold" if pol.kind == "fixed" else "chosen on the sources' validation data"
    return (f"**Deployable** (threshold policy `{pol}`: {where}, then applied to every target; ISO/IEC 30107-3 "
            "rates)")


def result_tables(m: dict, cis: dict | None = None, ci_note: str = "") -> list[str]:
    """The tables of one result (a run, or one of its evaluations): the threshold-free block, one block per
    threshold policy (paper-compatible first) and APCER per PAI species at each deployable policy.

    Columns are the definitions with ``table=True``. ``cis`` maps a test name to the output of
    :func:`mfas.metrics.confidence_intervals`; when given, each metric with ``ci=True`` gets a 95% CI column
    and ``ci_note`` (how the intervals were made) goes into the block titles.
    """
    cis = cis or {}
    with_ci = bool(cis)
    names = list(m["tests"])
    unit = m.get("unit", "frame")
    avg = m.get("average")
    lines: list[str] = []
    if "protocol" in m:
        sel = m.get("selection") or {}
        oracle = " (**paper-compatible oracle**)" if sel.get("paper_compatible") else ""
        epoch = f", epoch {sel['epoch']}" if "epoch" in sel else ""
        lines += [f"Protocol `{m['protocol']}`; unit: {unit}; model selection: `{sel.get('policy', '?')}`"
                  f"{oracle}{epoch}", ""]
    note = f" 95% CI: {ci_note}." if with_ci and ci_note else ""

    tf = definitions.select("threshold_free", table=True)
    cols = ["target", f"n ({unit}s)", *_headers(tf, with_ci)]
    lines += [f"**Threshold-free** (no threshold involved). Values in %.{note}", "", _row(cols), _sep(len(cols))]
    for n in names:
        r = m["tests"][n]
        if "threshold_free" not in r:
            lines.append(_row([n, r.get("n", ""), r.get("error", "not computed"), *[""] * (len(cols) - 3)]))
            continue
        lines.append(_row([f"{n} ({'+'.join(r['modalities'])})" if r.get("modalities") else n, r["n"],
                           *_cells(tf, r["threshold_free"], cis.get(n, {}).get("threshold_free"), with_ci)]))
    if avg:
        lines.append(_row([f"**{avg['kind']} of {', '.join(avg['over'])}**", "",
                           *_cells(tf, avg["threshold_free"], None, with_ci)]))
    lines.append("")

    pm = definitions.select("policy", table=True)
    for pol in ordered_policies(list(m["policies"])):
        paper = ThresholdPolicy.parse(pol).paper_compatible
        redo = " The interval chooses the threshold again in every resample." if with_ci and paper else ""
        cols = ["target", "threshold", *_headers(pm, with_ci)]
        lines += [f"{policy_title(pol)}. Values in %.{note}{redo}", "", _row(cols), _sep(len(cols))]
        for n in names:
            r = m["tests"][n]
            b = r.get("policies", {}).get(pol)
            if b is None:
                why = r.get("skipped", {}).get(pol, r.get("error", "not computed"))
                lines.append(_row([n, why, *[""] * (len(cols) - 2)]))
                continue
            lines.append(_row([n, f"{b['threshold']['value']:.4f}",
                               *_cells(pm, b, cis.get(n, {}).get("policies", {}).get(pol), with_ci)]))
        if avg and pol in avg["policies"]:
            lines.append(_row([f"**{avg['kind']}**", "", *_cells(pm, avg["policies"][pol], None, with_ci)]))
        lines.append("")
        species = sorted({s for n in names for s in m["tests"][n].get("policies", {}).get(pol, {})
                          .get("apcer_per_species", {})})
        if species and not paper:
            pct = definitions.get("apcer")
            lines += [f"APCER per PAI species at `{pol}` (%):", "", _row(["target", *species]), _sep(len(species) + 1)]
            for n in names:
                per = m["tests"][n].get("policies", {}).get(pol, {}).get("apcer_per_species", {})
                lines.append(_row([n, *(pct.fmt(per.get(s)) for s in species)]))
            lines.append("")
    return lines


def summary_table(m: dict) -> tuple[list[str], list[list[str]]]:
    """Columns and rows of the ``mfas train | evaluate`` summary: each definition with ``cli=True``, the
    policy ones once per threshold policy (the paper-compatible one labelled so)."""
    tf = definitions.select("threshold_free", cli=True)
    pm = definitions.select("policy", cli=True)
    pols = list(m["policies"])
    cols = ["target", *(mt.label for mt in tf)]
    for p in pols:
        tag = " (paper-compatible)" if ThresholdPolicy.parse(p).paper_compatible else ""
        cols += [f"{mt.label}@{p}{tag}" for mt in pm]

    def cells(r: dict) -> list[str]:
        out = [mt.fmt(r["threshold_free"].get(mt.key)) for mt in tf]
        for p in pols:
            out += [mt.fmt(r["policies"][p].get(mt.key)) if p in r["policies"] else "—" for mt in pm]
        return out

    rows = []
    for name, r in m["tests"].items():
        if "threshold_free" not in r:
            rows.append([name, r.get("error", ""), *[""] * (len(cols) - 2)])
            continue
        rows.append([name, *cells(r)])
    if m.get("average"):
        rows.append([m["average"]["kind"], *cells(m["average"])])
    return cols, rows


# -- layouts over several runs: the papers' fixed columns ---------------------------------------------------

def _hter_auc(r: dict) -> str:
    return (f"{definitions.get('hter').fmt(r['policies'].get('test_eer', {}).get('hter'))} / "
            f"{definitions.get('auc').fmt(r['threshold_free']['auc'])}")


def comparison(results: list[tuple[str, dict]]) -> list[str]:
    """One row per result: HTER at test EER / AUC per target and the average."""
    tests: list[str] = []
    for _, m in results:
        tests += [t for t in m["tests"] if t not in tests]
    lines = ["## Comparison (HTER at test EER / AUC, %, paper-compatible)", "",
             _row(["run", *tests, "average"]), _sep(len(tests) + 2)]
    for label, m in results:
        cells = []
        for t in tests:
            r = m["tests"].get(t)
            cells.append(_hter_auc(r) if r and "threshold_free" in r else "—")
        a = m.get("average")
        lines.append(_row([label, *cells, _hter_auc(a) if a else "—"]))
    return lines + [""]


def table1_layout(results: list[tuple[str, dict]]) -> list[str]:
    """The mmFAS paper's Table 1: one row per run, per target HTER (test EER threshold), AUC and Acc at
    BPCER = 1%, then the image-weighted (or mean) average."""
    hter, auc, acc = definitions.get("hter"), definitions.get("auc"), definitions.get("acc_at_bpcer_1")
    tests: list[str] = []
    for _, m in results:
        tests += [t for t in m["tests"] if t not in tests]
    avg_kind = next((m["average"]["kind"] for _, m in results if m.get("average")), None)
    groups = tests + ([avg_kind] if avg_kind else [])
    head = "| run | " + " | ".join(f"{g} HTER | {g} AUC | {g} Acc" for g in groups) + " |"
    lines = [f"## Table 1 layout ({', '.join(sorted({m['protocol'] for _, m in results}))}; %, HTER at each test "
             "set's EER threshold = paper-compatible, Acc at BPCER = 1% on the test set)", "", head,
             _sep(1 + 3 * len(groups))]
    for label, m in results:
        cells = []
        rows = [m["tests"].get(t) for t in tests] + ([m.get("average")] if avg_kind else [])
        for r in rows:
            if not r or "threshold_free" not in r:
                cells += ["—"] * 3
                continue
            tf = r["threshold_free"]
            cells += [hter.fmt(r["policies"].get("test_eer", {}).get("hter")), auc.fmt(tf["auc"]),
                      acc.fmt(tf.get("acc_at_bpcer_1"))]
        lines.append(_row([label, *cells]))
    return lines + [""]


_MMDG = re.compile(r"^(?:sim/)?(loo|missing|limited)/([A-Z]+-[A-Z]+)$")
_MMDG_ORDER = {"loo": ["CPS-W", "CPW-S", "CSW-P", "PSW-C"], "missing": ["CPS-W", "CPW-S", "CSW-P", "PSW-C"],
               "limited": ["CW-PS", "PS-CW"]}


def _mean_sd(xs: list[float]) -> str:
    """``mean ± sd`` (sd over seeds, ddof = 1) in %, the mean alone for one value."""
    if not xs:
        return "—"
    mean, sd = mean_std([100 * x for x in xs])
    return f"{mean:.2f}" + (f" ± {sd:.2f}" if len(xs) > 1 else "")


def _reference_lines(ref: dict, cols: list[str], extra: list[str], sim: bool) -> list[str]:
    """Rows of one family of a published reference (``mfas.protocols.reference``) under our columns: the cells
    as printed, the average recomputed over ``cols``; then the source and the printed averages that differ."""
    lines, differ = [], []
    for method, row in ref["rows"].items():
        cells = []
        for c in cols:
            v = row.get(c)
            cells += [f"{v[0]:.2f}", f"{v[1]:.2f}"] if v else ["—", "—"]
        have = [row[c] for c in cols if c in row]
        avg = ["—", "—"]
        if len(have) == len(cols) and cols:
            h, a = sum(v[0] for v in have) / len(have), sum(v[1] for v in have) / len(have)
            avg = [f"{h:.2f}", f"{a:.2f}"]
            printed = row.get("printed_average")
            if printed and (set(cols) == set(ref["columns"])):
                try:
                    off = abs(float(printed[0]) - h) > 0.015 or abs(float(printed[1]) - a) > 0.015
                except (TypeError, ValueError):
                    off = True
                if off:
                    differ.append(f"{method} {printed[0]} / {printed[1]}")
        lines.append(_row([f"*{method} (as printed)*", *(["—"] * len(extra)), *cells, *avg]))
    notes = ["", f"Rows *(as printed)*: {ref['source']}; their own threshold (each test set's EER) and model "
             "selection, on the real datasets. Averages recomputed from the printed cells."]
    if differ:
        notes.append("Printed averages that are not the mean of their row: " + "; ".join(differ) + ".")
    if sim:
        notes.append("**The runs above are on SimFAS (`sim/` protocols): not comparable with the printed rows, "
                     "which are on the real datasets.**")
    return lines + notes


def mmdg_layout(results: list[tuple[str, dict]], reference: dict | None = None) -> list[str]:
    """The MMDG benchmark's tables (as in the MMDA paper) from ``(method label, metrics)`` pairs: one row per
    method (seeds averaged as mean ± sd), per protocol HTER and AUC, and the average recomputed from the rows
    (mean over protocols of each seed-mean). Leave-one-out and limited-source runs use their first test set;
    missing-modality columns average the splits present (MMDG averages all four), and a ``splits`` column
    says which ones they were, so a partial set is never passed off as the benchmark's mean.

    ``reference`` (``mfas.protocols.reference.load_reference``) adds the papers' rows as printed to the
    paper-compatible block of each family our runs have, with their averages recomputed."""
    cells: dict = {}  # (family, method) -> {column: {metric: [values]}}
    splits: dict = {}  # (family, method) -> the protocol splits seen
    for method, m in results:
        match = _MMDG.match(m["protocol"])
        if not match:
            continue
        family, split = match.groups()
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
    sim = any(str(m.get("protocol", "")).startswith("sim/") for _, m in results)
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
            lines += [f"## MMDG layout, {titles[family]} (HTER / AUC %, {block}; ± sd over seeds)", "",
                      _row(["method", *extra, *(f"{c} {k}" for c in cols for k in ("HTER", "AUC")),
                            "Avg HTER", "Avg AUC"]),
                      _sep(2 * len(cols) + 3 + len(extra))]
            for mt in methods:
                row, h_means, a_means = [], [], []
                for c in cols:
                    slot = cells[(family, mt)].get(c, {})
                    h, a = slot.get(("hter", pol), []), slot.get(("auc", None), [])
                    row += [_mean_sd(h), _mean_sd(a)]
                    if h and a:
                        h_means.append(mean_std(h)[0])
                        a_means.append(mean_std(a)[0])
                complete = len(h_means) == len(cols)
                avg = [_mean_sd([mean_std(h_means)[0]]), _mean_sd([mean_std(a_means)[0]])] if complete \
                    else ["—", "—"]
                if extra:
                    seen = splits[(family, mt)]
                    row.insert(0, f"all {len(seen)}" if seen >= set(_MMDG_ORDER["loo"]) else ", ".join(sorted(seen)))
                lines.append(_row([mt, *row, *avg]))
            if reference and pol == "test_eer" and family in reference:
                lines += _reference_lines(reference[family], cols, extra, sim)
            lines.append("")
    return lines
