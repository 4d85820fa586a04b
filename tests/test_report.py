"""Report layouts from hand-made metrics files, and reports written from score files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mfas.cli.engine import _print_summary
from mfas.cli.main import app
from mfas.engine.evaluation import protocol_metrics, read_scores, score_file, write_scores
from mfas.engine.layouts import mmdg_layout, summary_table
from mfas.engine.methods import method_label
from mfas.engine.report import write_report
from mfas.metrics import Metric, definitions, fuse_videos, roc_auc
from mfas.protocols import get_protocol


def fake_run(root: Path, name: str, protocol: str, tests: dict[str, tuple[float, float, float]],
             model: dict) -> tuple[Path, dict]:
    """tests: {name: (auc, hter@test_eer, hter@val_eer)}."""
    run = root / name
    run.mkdir(parents=True)
    (run / "model.json").write_text(json.dumps({"model": model}))
    m = {"protocol": protocol, "tests": {
        t: {"threshold_free": {"auc": a}, "policies": {"test_eer": {"hter": h1}, "val_eer": {"hter": h2}}}
        for t, (a, h1, h2) in tests.items()}}
    return run, m


def labelled(results: list[tuple[Path, dict]]) -> list[tuple[str, dict]]:
    """The layout takes method labels; the report makes them with method_label from each run's model.json."""
    return [(method_label(run), m) for run, m in results]


def row(lines: list[str], start: str) -> list[str]:
    line = next(x for x in lines if x.startswith(f"| {start} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_mmdg_layout_groups_methods_averages_seeds_and_recomputes_the_average(tmp_path: Path):
    targets = {"CPS-W": "W", "CPW-S": "S", "CSW-P": "P", "PSW-C": "C"}
    results = []
    for k, (proto, t) in enumerate(targets.items()):
        for seed, delta in ((0, 0.0), (1, 0.02)):
            results.append(fake_run(tmp_path, f"a_{proto}_{seed}", f"sim/loo/{proto}",
                                    {t: (0.90 + delta, 0.10 + 0.01 * k, 0.20 + delta)},
                                    {"name": "mmda-tiny", "compat": "official"}))
        results.append(fake_run(tmp_path, f"b_{proto}", f"loo/{proto}", {t: (0.80, 0.30, 0.40)},
                                {"name": "mmda-tiny", "compat": "clean"}))
    results.append(fake_run(tmp_path, "other", "sim/cross", {"C": (0.5, 0.5, 0.5)}, {"name": "mmda-tiny"}))
    lines = mmdg_layout(labelled(results))
    assert sum(x.startswith("## MMDG layout, leave-one-out") for x in lines) == 2  # both threshold blocks
    paper = lines[:lines.index("", 3)]
    a = row(paper, "mmda-tiny compat=official")
    assert a[1] == "10.00 ± 0.00" and a[2] == "91.00 ± 1.41"  # CPS-W HTER, AUC over 2 seeds
    assert a[7] == "13.00 ± 0.00"  # PSW-C HTER
    assert a[-2:] == ["11.50", "91.00"]  # mean of the four seed-means
    b = row(paper, "mmda-tiny")
    assert b[-2:] == ["30.00", "80.00"]
    deploy = lines[lines.index("", 3):]
    assert row(deploy, "mmda-tiny compat=official")[1] == "21.00 ± 1.41"


def test_mmdg_layout_missing_modality_columns_average_the_splits(tmp_path: Path):
    results = []
    for k, proto in enumerate(["CPS-W", "CPW-S", "CSW-P", "PSW-C"]):
        t = proto[-1]
        results.append(fake_run(tmp_path, proto, f"missing/{proto}",
                                {f"{t} no-depth": (0.7, 0.3 + 0.02 * k, 0.4), f"{t} no-ir": (0.8, 0.2, 0.3),
                                 f"{t} rgb-only": (0.6, 0.4, 0.5)}, {"name": "mmda-tiny"}))
    lines = mmdg_layout(labelled(results))
    assert lines[0].startswith("## MMDG layout, missing modalities")
    assert "no-depth HTER" in lines[2] and "rgb-only AUC" in lines[2]
    assert "| method | splits | no-depth HTER |" in lines[2]
    r = row(lines, "mmda-tiny")
    assert r[1] == "all 4"
    assert r[2] == "33.00 ± 2.58" and r[4] == "20.00 ± 0.00"  # no-depth HTER over the splits; no-ir
    # one split alone is named as such, never passed off as the four-split mean
    part = row(mmdg_layout(labelled(results[:1])), "mmda-tiny")
    assert part[1] == "CPS-W" and part[2] == "30.00"


def test_reference_rows_as_printed_with_recomputed_averages(tmp_path: Path):
    from mfas.protocols.reference import load_reference

    ref = load_reference("mmdg")
    # the transcription: MMDA's own row and a row whose printed average is not its mean (specs/mmda.md section 4)
    assert ref["loo"]["rows"]["MMDA"]["CPS-W"] == [1.22, 99.99] and ref["loo"]["rows"]["MMDA"]["PSW-C"] == [6.25, 98.18]
    assert ref["missing"]["rows"]["DADM"]["rgb-only"] == [22.61, 84.04]
    assert ref["limited"]["rows"]["FLIP"]["PS-CW"] == [23.85, 83.46]
    results = [fake_run(tmp_path, f"r_{p}", f"loo/{p}", {p[-1]: (0.9, 0.1, 0.2)}, {"name": "mmda-tiny"})
               for p in ("CPS-W", "CPW-S", "CSW-P", "PSW-C")]
    lines = mmdg_layout(labelled(results), reference=ref)
    paper = lines[:next(i for i, x in enumerate(lines) if x.startswith("## MMDG layout") and i > 0)]
    mmda = row(paper, "*MMDA (as printed)*")
    assert mmda[1:3] == ["1.22", "99.99"]
    assert mmda[-2:] == ["4.00", "98.84"]  # recomputed; the paper prints 98.94 for the AUC
    assert row(paper, "*ViT (as printed)*")[-2:] == ["35.16", "67.74"]  # printed 36.60 / 68.12
    note = next(x for x in paper if x.startswith("Printed averages that are not the mean"))
    assert "MMDA 4.00 / 98.94" in note and "ViT 36.60 / 68.12" in note and "FLIP" not in note
    assert any("murInJ/MMDA" in x for x in paper)
    assert not any("not comparable" in x for x in paper)  # real-data runs: no SimFAS warning
    deploy = lines[len(paper):]
    assert not any("as printed" in x for x in deploy)  # the papers' numbers are paper-compatible only
    sim = [fake_run(tmp_path / "sim", "s", "sim/loo/CPS-W", {"W": (0.9, 0.1, 0.2)}, {"name": "mmda-tiny"})]
    assert any("not comparable" in x for x in mmdg_layout(labelled(sim), reference=ref))


def test_report_cli_reference_option(tmp_path: Path):
    run = scored_run(tmp_path, protocol="sim/loo/CPS-W")
    res = CliRunner().invoke(app, ["report", str(run), "--bootstrap", "0", "--reference", "mmdg"])
    assert res.exit_code == 0, res.output
    text = (run / "report.md").read_text()
    assert "*MMDG (as printed)*" in text and "not comparable" in text
    res = CliRunner().invoke(app, ["report", str(run), "--bootstrap", "0", "--reference", "mmdga"])
    assert res.exit_code != 0 and "unknown reference 'mmdga'" in res.output


def test_method_label_names_non_default_options(tmp_path: Path):
    run, _ = fake_run(tmp_path, "r", "loo/CPS-W", {}, {"name": "mmfas-tiny", "modalities": ["rgb", "depth", "ir"],
                                                       "icl": False, "cm": "none"})
    assert method_label(run) == "mmfas-tiny cm=none icl=False"
    assert method_label(tmp_path / "nothing") == "nothing"


# -- reports written from score files: definitions drive the columns, intervals, video level -----------------

def scored_run(root: Path, protocol: str = "sim/cross", frames: int = 1, videos: int = 60, seed: int = 0,
               policies: tuple[str, ...] = ("test_eer", "val_eer")) -> Path:
    """A result folder as evaluation writes it: scores/<target>.csv, scores/select.csv and metrics.json."""
    proto = get_protocol(protocol)
    rng = np.random.default_rng(seed)

    def table(tag: str) -> dict[str, np.ndarray]:
        yv = np.arange(videos) % 2
        pv = np.where(yv == 1, "bonafide", np.where(np.arange(videos) % 4 == 0, "print", "replay"))
        base = rng.random(videos) * 0.7 + 0.3 * yv
        y, p = np.repeat(yv, frames), np.repeat(pv, frames).astype(object)
        s = np.clip(np.repeat(base, frames) + 0.05 * rng.normal(size=y.size), 0, 1)
        ids = np.array([f"{tag}-{i:05d}" for i in range(y.size)], dtype=object)
        vid = np.array([f"{tag}-v{i // frames:04d}" for i in range(y.size)], dtype=object)
        dom = np.full(y.size, tag, dtype=object)
        return {"sample_id": ids, "dataset": dom, "domain": dom, "label": y, "pai": p, "video": vid, "score": s}

    run = root / f"{protocol.replace('/', '_')}_f{frames}"
    tests = {t.name: table(t.name) for t in proto.tests}
    val = table("val")
    m = protocol_metrics(proto, tests, val, list(policies))
    m["selection"] = {"policy": "last", "epoch": 0}
    (run / "scores").mkdir(parents=True)
    write_scores(run / "scores" / "select.csv", val)
    for name, tab in tests.items():
        write_scores(score_file(run, name), tab)
    (run / "metrics.json").write_text(json.dumps(m))
    return run


def table_after(lines: list[str], title: str) -> list[list[str]]:
    """The rows (cells, header first) of the first markdown table after the line starting with ``title``."""
    i = next(k for k, x in enumerate(lines) if x.startswith(title))
    start = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("|"))
    rows = []
    for x in lines[start:]:
        if not x.startswith("|"):
            break
        rows.append([c.strip() for c in x.strip("|").split("|")])
    return [rows[0], *rows[2:]]


def interval(cell: str) -> tuple[float, float]:
    low, high = cell.strip("[]").split(", ")
    return float(low), float(high)


def test_a_new_definition_reaches_metrics_json_the_report_and_the_cli(tmp_path: Path, monkeypatch, capsys):
    toy = (Metric("toy_free", "Toy free", "threshold_free", lambda y, s, p: float(s[y == 1].mean()),
                  "mean bona fide score", better="higher", cli=True, ci=True),
           Metric("toy_rate", "Toy rate", "policy", lambda y, s, p, t: float((s >= t).mean()), "share accepted",
                  cli=True))
    monkeypatch.setattr(definitions, "METRICS", definitions.METRICS + toy)
    run = scored_run(tmp_path)
    m = json.loads((run / "metrics.json").read_text())
    c = read_scores(score_file(run, "C"))
    assert m["tests"]["C"]["threshold_free"]["toy_free"] == pytest.approx(c["score"][c["label"] == 1].mean(),
                                                                           abs=1e-8)
    assert "toy_free" in m["average"]["threshold_free"] and "toy_rate" in m["average"]["policies"]["val_eer"]
    lines = write_report([run], run, n_boot=30).read_text().splitlines()
    free = table_after(lines, "**Threshold-free**")
    assert "Toy free ↑" in free[0] and "Toy free 95% CI" in free[0]
    k = free[0].index("Toy free ↑")
    assert free[1][k] == f"{100 * m['tests']['C']['threshold_free']['toy_free']:.2f}"
    deploy = table_after(lines, "**Deployable** (threshold policy `val_eer`")
    assert "Toy rate ↓" in deploy[0] and "Toy rate 95% CI" not in deploy[0]
    cols, rows = summary_table(m)
    assert "Toy free" in cols and "Toy rate@val_eer" in cols and "Toy rate@test_eer (paper-compatible)" in cols
    value = f"{100 * m['tests']['C']['policies']['val_eer']['toy_rate']:.2f}"
    assert rows[0][cols.index("Toy rate@val_eer")] == value
    _print_summary(run / "metrics.json")  # what `mfas train | evaluate` print
    printed = capsys.readouterr().out
    assert "Toy" in printed and value in printed


def test_report_intervals_bracket_the_reported_numbers(tmp_path: Path):
    run = scored_run(tmp_path, protocol="sim/loo/CPS-W", videos=80)
    m = json.loads((run / "metrics.json").read_text())["tests"]["W"]
    r = CliRunner().invoke(app, ["report", str(run), "--bootstrap", "200"])
    assert r.exit_code == 0, r.output
    lines = (run / "report.md").read_text().splitlines()
    assert not any("video level" in x for x in lines)  # one frame per video: nothing to fuse
    assert any("200 resamples of the frames stratified by class, seed 0" in x for x in lines)
    free = table_after(lines, "**Threshold-free**")
    auc = free[1][free[0].index("AUC ↑")]
    assert auc == f"{100 * m['threshold_free']['auc']:.2f}"
    low, high = interval(free[1][free[0].index("AUC 95% CI")])
    assert low <= float(auc) <= high < 100.01
    for title, pol in (("**Paper-compatible**", "test_eer"), ("**Deployable** (threshold policy `val_eer`", "val_eer")):
        t = table_after(lines, title)
        hter = t[1][t[0].index("HTER ↓")]
        assert hter == f"{100 * m['policies'][pol]['hter']:.2f}"
        low, high = interval(t[1][t[0].index("HTER 95% CI")])
        assert low <= float(hter) <= high and high - low < 40
    assert len(list((run / "plots").glob("*.png"))) == 2


def test_video_level_block_when_videos_have_several_frames(tmp_path: Path):
    run = scored_run(tmp_path, protocol="sim/cross", frames=3, videos=40)
    m = json.loads((run / "metrics.json").read_text())
    lines = write_report([run], run, n_boot=50).read_text().splitlines()
    assert any("the frames of one video are resampled together" in x for x in lines)
    k = lines.index(f"### {run.name}: video level")
    assert "(160 videos from 480 frames in all)" in lines[k + 2]
    video = lines[k:]
    free = table_after(video, "**Threshold-free**")
    assert free[0][1] == "n (videos)" and free[1][1] == "40"
    c = read_scores(score_file(run, "C"))
    fused = fuse_videos(c["video"], c["label"], c["score"], c["pai"], method="mean")
    assert free[1][free[0].index("AUC ↑")] == f"{100 * roc_auc(fused.labels, fused.scores):.2f}"
    assert free[-1][0].startswith("**weighted of C, P, S, W**")
    # the frame-level block above is unchanged: it still reports metrics.json
    frame = table_after(lines, "**Threshold-free**")
    assert frame[0][1] == "n (frames)" and frame[1][frame[0].index("AUC ↑")] == \
        f"{100 * m['tests']['C']['threshold_free']['auc']:.2f}"
    assert table_after(video, "**Deployable** (threshold policy `val_eer`")[0][-1] == "HTER 95% CI"
