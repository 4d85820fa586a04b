"""The command line: help everywhere, clear errors, real output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from mfas.cli.main import app

runner = CliRunner()


def all_command_paths() -> list[list[str]]:
    paths = [[]]
    root = get_command(app)

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p) or "mfas")
def test_every_command_has_help(path):
    r = runner.invoke(app, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_help_lists_command_groups():
    out = runner.invoke(app, ["--help"]).output
    for group in ("data", "protocols", "demo"):
        assert group in out


def test_protocols_list_shows_every_protocol():
    r = runner.invoke(app, ["protocols", "list"], env={"COLUMNS": "250"})
    assert r.exit_code == 0
    for name in ("loo/CPS-W", "loo/PSW-C", "missing/CSW-P", "limited/CW-PS", "limited/PS-CW", "mmfas/cross",
                 "sim/loo/CPW-S", "sim/missing/CPS-W", "sim/limited/PS-CW", "sim/cross"):
        assert name in r.output


def test_protocols_show_json():
    r = runner.invoke(app, ["protocols", "show", "loo/CPS-W", "--json"])
    assert r.exit_code == 0
    data = json.loads(r.output)
    assert data["name"] == "loo/CPS-W" and data["tests"][0]["parts"][0]["store"] == "W"


def test_data_info_prints_counts(tiny_store: Path):
    r = runner.invoke(app, ["data", "info", str(tiny_store)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    for word in ("12 samples", "domain", "split", "PAI species", "modality present", "bonafide", "replay"):
        assert word in r.output
    j = runner.invoke(app, ["data", "info", str(tiny_store), "--json", "--verify"])
    assert json.loads(j.output)["present"] == {"rgb": 12, "depth": 12, "ir": 8}


def test_errors_are_one_clear_line_and_exit_2(tmp_path: Path):
    r = runner.invoke(app, ["data", "info", str(tmp_path / "missing")])
    assert r.exit_code == 2
    assert "no such store" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["protocols", "show", "nope"])
    assert r.exit_code == 2 and "unknown protocol" in r.output


def test_synth_then_sanity(tmp_path: Path):
    out = tmp_path / "s"
    r = runner.invoke(app, ["data", "synth", str(out), "-n", "12", "--size", "32", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "wrote 48 samples" in r.output
    r = runner.invoke(app, ["data", "sanity", str(out), "--json"])
    rep = json.loads(r.output)
    assert set(rep["auc_per_heldout_domain"]) == {"C", "P", "S", "W"}
    assert "depth_planarity_auc" in rep


def test_preview_writes_png(tmp_path: Path):
    r = runner.invoke(app, ["data", "preview", str(tmp_path / "p.png"), "--size", "32"])
    assert r.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 1000


def test_demo_runs_end_to_end(tmp_path: Path):
    r = runner.invoke(app, ["demo", "--out", str(tmp_path), "-n", "60", "--epochs", "1", "--image-size", "32"],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "leave-one-domain-out AUC" in r.output and "sim/loo/CPS-W" in r.output and "sim/in/W" in r.output
    assert (tmp_path / "simfas" / "store.json").exists()
    final = r.output[r.output.index("does it learn"):]
    for name, label in (("cnn-concat-tiny_sim-in-W", "in-domain (W)"),
                        ("cnn-concat-tiny_sim-loo-CPS-W", "cross-domain (C, P, S)")):
        run = tmp_path / "runs" / name
        metrics = json.loads((run / "metrics.json").read_text())
        auc = metrics["tests"]["W"]["threshold_free"]["auc"]
        row = next(line for line in final.splitlines() if label in line)
        assert f"{100 * auc:.1f} [" in row  # the comparison comes from the real runs, with an interval
        assert (run / "model.safetensors").exists() and list((run / "plots").glob("*.png"))


def test_models_show_counts_without_allocating():
    """`models show` builds on the meta device: the counts are the real model's (README: 15.64M at inference)."""
    r = runner.invoke(app, ["models", "show", "mmfas", "--set", "depth=3"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "16,227,278" in r.output and "15.64M" in r.output and "* depth = 3" in r.output


def test_predict_and_evaluate_refuse_bad_paths_cleanly(tmp_path: Path):
    r = runner.invoke(app, ["predict", str(tmp_path / "nope"), "--rgb", "a.png"])
    assert r.exit_code == 2 and f"{tmp_path / 'nope'}: does not exist" in " ".join(r.output.split())
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "does not exist" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["models", "show", "mmfas", "--set", "fusion=bogus"])
    assert r.exit_code == 2 and "fusion" in r.output and "Traceback" not in r.output
