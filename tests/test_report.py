"""Report layouts computed from hand-made metrics files."""

from __future__ import annotations

import json
from pathlib import Path

from mfas.engine.report import method_label, mmdg_layout


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
    lines = mmdg_layout(results)
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
    lines = mmdg_layout(results)
    assert lines[0].startswith("## MMDG layout, missing modalities")
    assert "no-depth HTER" in lines[2] and "rgb-only AUC" in lines[2]
    assert "| method | splits | no-depth HTER |" in lines[2]
    r = row(lines, "mmda-tiny")
    assert r[1] == "all 4"
    assert r[2] == "33.00 ± 2.58" and r[4] == "20.00 ± 0.00"  # no-depth HTER over the splits; no-ir
    # one split alone is named as such, never passed off as the four-split mean
    part = row(mmdg_layout(results[:1]), "mmda-tiny")
    assert part[1] == "CPS-W" and part[2] == "30.00"


def test_method_label_names_non_default_options(tmp_path: Path):
    run, _ = fake_run(tmp_path, "r", "loo/CPS-W", {}, {"name": "mmfas-tiny", "modalities": ["rgb", "depth", "ir"],
                                                       "icl": False, "cm": "none"})
    assert method_label(run) == "mmfas-tiny cm=none icl=False"
    assert method_label(tmp_path / "nothing") == "nothing"
