"""``report.md`` and plots for one or several runs.

This module gathers: each result's ``metrics.json`` and score files, the bootstrap intervals and the
video-level metrics computed from those scores. The tables come from :mod:`mfas.engine.layouts`, the figures
from :mod:`mfas.engine.plots`, the method names of the MMDG layout from :mod:`mfas.engine.methods`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mfas.engine.evaluation import average_row, fuse_table, has_videos, read_scores, score_file, video_ids
from mfas.engine.io import atomic_write_text
from mfas.engine.layouts import comparison, mmdg_layout, result_tables, table1_layout
from mfas.engine.plots import score_plots
from mfas.errors import DataError, MetricError, MfasError
from mfas.metrics import confidence_intervals, evaluate_scores, threshold_free

N_BOOT = 1000  # bootstrap resamples per interval
CI_SEED = 0
FUSION = "mean"  # frame scores -> video score

Table = dict[str, np.ndarray]


def read_metrics(path: Path) -> dict:
    """A ``metrics.json`` written by an evaluation; a :class:`DataError` naming the file when it is damaged."""
    try:
        m = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(path, f"cannot be read as JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(m, dict) or not isinstance(m.get("tests"), dict) or not isinstance(m.get("policies"), list):
        raise DataError(path, "not the metrics of an evaluation (expected a mapping with 'tests' and 'policies')")
    return m


def find_results(run: Path) -> list[Path]:
    """Folders under a run holding a metrics.json: the run itself and its eval/* folders."""
    out = [run] if (run / "metrics.json").exists() else []
    out += sorted(p.parent for p in (run / "eval").glob("*/metrics.json")) if (run / "eval").exists() else []
    return out


def load_scores(result_dir: Path, m: dict) -> tuple[dict[str, Table], Table | None]:
    """The score table of every test set of ``m`` that has its file, and the selection scores (or None)."""
    tables = {n: read_scores(score_file(result_dir, n)) for n in m["tests"] if score_file(result_dir, n).exists()}
    select = result_dir / "scores" / "select.csv"
    return tables, (read_scores(select) if select.exists() else None)


def intervals(m: dict, tables: dict[str, Table], n_boot: int = N_BOOT, seed: int = CI_SEED,
              by_video: bool = True) -> tuple[dict, str]:
    """Bootstrap 95% intervals of every test set of ``m`` with scores, and a line saying how they were made.

    Each policy keeps the threshold it applied (``metrics.json``), except ``test_eer``, which chooses it
    again in every resample. With ``by_video``, a test set whose videos have several frames is resampled by
    whole videos.
    """
    cis, grouped = {}, False
    for name, r in m["tests"].items():
        t = tables.get(name)
        if t is None or "threshold_free" not in r:
            continue
        groups = video_ids(t) if by_video and has_videos(t) else None
        grouped |= groups is not None
        thresholds = {p: b["threshold"]["value"] for p, b in r["policies"].items()}
        cis[name] = confidence_intervals(t["label"], t["score"], t["pai"], thresholds=thresholds, groups=groups,
                                         n_boot=n_boot, seed=seed)
    unit = m.get("unit", "frame")
    note = (f"percentile bootstrap, {n_boot} resamples of the {unit}s stratified by class, seed {seed}"
            + ("; the frames of one video are resampled together" if grouped else ""))
    return cis, note


def video_metrics(m: dict, videos: dict[str, Table], select: Table | None) -> dict:
    """``metrics.json``-shaped results of the video-level score tables ``videos`` (:func:`fuse_table`, one
    row per video). Validation-based thresholds are chosen on ``select``, the selection scores fused the
    same way; the average row is recomputed when the frame-level one exists."""
    val_t = None
    if select is not None:
        try:
            threshold_free(select["label"], select["score"], select["pai"])
            val_t = (select["label"], select["score"], select["pai"])
        except MetricError:
            pass
    out: dict = {"policies": list(m["policies"]), "unit": "video", "tests": {}, "average": None}
    for name, r in m["tests"].items():
        f = videos.get(name)
        if f is None:
            continue
        try:
            res = evaluate_scores((f["label"], f["score"], f["pai"]), val=val_t, policies=m["policies"])
        except MetricError as e:
            res = {"error": str(e)}
        res.update(modalities=list(r.get("modalities", [])), n=int(f["label"].size),
                   n_frames=int(f["n_frames"].sum()))
        out["tests"][name] = res
    a = m.get("average")
    if a:
        rows = [out["tests"].get(n) for n in a["over"]]
        if len(rows) > 1 and all(r is not None and "error" not in r for r in rows):
            out["average"] = average_row(rows, a["kind"], a["over"], m["policies"])
    return out


def result_section(label: str, m: dict, result_dir: Path, out: Path, n_boot: int = N_BOOT) -> list[str]:
    """The markdown of one result: its tables with intervals, the video-level block when it applies, plots."""
    tables, select = load_scores(result_dir, m)
    cis, note = intervals(m, tables, n_boot) if n_boot else ({}, "")
    lines = [f"## {label}", "", *result_tables(m, cis, note)]
    if any(has_videos(t) for t in tables.values()):
        lines += video_section(label, m, tables, select, n_boot)
    for img in score_plots(tables, out / "plots", prefix=f"{label.replace('/', '_')}_"):
        lines.append(f"![{Path(img).stem}](plots/{Path(img).name})")
    return lines + [""]


def video_section(label: str, m: dict, tables: dict[str, Table], select: Table | None,
                  n_boot: int = N_BOOT) -> list[str]:
    """The video-level block: the tables of :func:`video_metrics` on the fused scores, with intervals."""
    try:
        videos = {n: fuse_table(t, FUSION) for n, t in tables.items()}
    except MetricError as e:  # e.g. the frames of one video disagree on the label
        return [f"### {label}: video level", "", f"Not computed: {e}.", ""]
    try:
        fused_select = None if select is None else fuse_table(select, FUSION)
    except MetricError:
        fused_select = None
    vm = video_metrics(m, videos, fused_select)
    n_v = sum(r["n"] for r in vm["tests"].values())
    n_f = sum(r["n_frames"] for r in vm["tests"].values())
    cis, note = intervals(vm, videos, n_boot, by_video=False) if n_boot else ({}, "")
    return [f"### {label}: video level", "",
            f"Frame scores fused by their {FUSION} over each video ({n_v} videos from {n_f} frames in all). "
            "Validation-based thresholds are chosen on the validation videos fused the same way; `test_eer` is "
            "the EER point of the fused test set.", "", *result_tables(vm, cis, note)]


def write_report(runs: list[Path], out: Path, n_boot: int = N_BOOT, reference: str | None = None) -> Path:
    """Write ``out/report.md`` (and plots under ``out/plots``) for one or several runs.

    ``n_boot`` resamples per bootstrap interval (0 leaves the intervals out); ``reference`` names published rows
    (:mod:`mfas.protocols.reference`) to show, as printed, in the MMDG layout.
    """
    results: list[tuple[str, dict, Path]] = []
    by_run: list[tuple[Path, dict]] = []
    for run in runs:
        found = find_results(Path(run))
        if not found:
            raise MfasError(f"{run}: no metrics.json (train or evaluate the run first)")
        for d in found:
            label = Path(run).name if d == Path(run) else f"{Path(run).name}/{d.name}"
            results.append((label, read_metrics(d / "metrics.json"), d))
            by_run.append((Path(run), results[-1][1]))
    lines = ["# mfas report", "", "Conventions: label 1 = bona fide; score = P(bona fide); a sample is accepted "
             "as bona fide when score >= threshold. Every fixed-threshold number names the policy that chose "
             "its threshold. ↑ / ↓: higher / lower is better.", ""]
    for label, m, d in results:
        lines += result_section(label, m, d, out, n_boot)
    if len(results) > 1:
        lines += comparison([(lbl, m) for lbl, m, _ in results])
    weighted = [(lbl, m) for lbl, m, _ in results if (m.get("average") or {}).get("kind") == "weighted"]
    if weighted:
        lines += table1_layout(weighted)
    if len(by_run) > 1 or reference:
        from mfas.engine.methods import method_label
        from mfas.protocols.reference import load_reference

        labels = {run: method_label(run) for run in dict.fromkeys(run for run, _ in by_run)}
        ref = load_reference(reference) if reference else None
        table = mmdg_layout([(labels[run], m) for run, m in by_run], reference=ref)
        if reference and not table:
            table = [f"No run is on an MMDG-benchmark protocol: the `{reference}` reference rows go next to such "
                     "runs.", ""]
        lines += table
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    return out / "report.md"
