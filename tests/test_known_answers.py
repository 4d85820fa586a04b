"""The known-answer suite (mfas check) and the pieces it adds: shuffled-label training, modality dropout in
cnn-concat, the severed diagnostic model, and the checks' verdicts on hand-made scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from engine_helpers import tiny_config
from mfas.cli.main import app
from mfas.data.synth.domains import PROFILES, load_profiles
from mfas.engine import known_answers as ka
from mfas.errors import ConfigError
from mfas.models import create_model
from mfas.models.base import hide_modalities

runner = CliRunner()
SIZE = 32


def batch(b: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 3, SIZE, SIZE, generator=g), "depth": torch.randn(b, 1, SIZE, SIZE, generator=g),
            "ir": torch.randn(b, 1, SIZE, SIZE, generator=g), "present": torch.ones(b, 3, dtype=torch.bool),
            "label": torch.arange(b) % 2}


def test_hide_modalities_never_reveals_and_keeps_one():
    g = torch.Generator().manual_seed(0)
    present = torch.rand(500, 3, generator=g) > 0.3
    present[present.sum(1) == 0, 0] = True
    assert torch.equal(hide_modalities(present, 0.0), present)
    for p in (0.5, 0.99):
        out = hide_modalities(present, p, generator=g)
        assert not (out & ~present).any(), "a missing modality was made present"
        assert out.any(1).all(), "a sample lost every modality"
        assert (out != present).any()
    # with p close to 1 every sample keeps exactly one of its modalities, not always the same one
    out = hide_modalities(present, 0.999, generator=g)
    assert (out.sum(1) == 1).all() and (out.sum(0) > 50).all()


def test_cnn_concat_modality_dropout_only_in_training():
    m = create_model("cnn-concat-tiny", img_size=SIZE, modality_dropout=0.5)
    b = batch(16)
    m.eval()
    with torch.no_grad():
        assert m(b).features["present"].all()
        assert torch.equal(m(b).score, m(b).score)
    m.train()
    torch.manual_seed(0)
    assert not m(b).features["present"].all()
    with pytest.raises(ConfigError, match="modality_dropout"):
        create_model("cnn-concat-tiny", modality_dropout=1.0)


def test_severed_model_ignores_exactly_its_modality():
    torch.manual_seed(0)
    m = create_model("severed", img_size=SIZE, sever="depth").eval()
    b = batch()
    with torch.no_grad():
        base = m(b).score
        for mod in ("rgb", "depth", "ir"):
            swapped = dict(b)
            swapped[mod] = b[mod].flip(0)
            moved = (m(swapped).score - base).abs().max().item()
            assert (moved == 0.0) if mod == "depth" else (moved > 1e-6), mod
    with pytest.raises(ConfigError, match="sever"):
        create_model("severed", sever="thermal")
    with pytest.raises(ConfigError, match="base"):
        create_model("severed", base="severed")


def test_shuffled_labels_permute_training_only(sim_store: Path, tmp_path: Path):
    from mfas.engine.data import PadDataModule
    from mfas.engine.resolve import resolve_protocol, resolve_stores

    def module(shuffle: bool) -> PadDataModule:
        cfg = tiny_config(sim_store, tmp_path, data={"shuffle_labels": shuffle})
        dm = PadDataModule(resolve_protocol(cfg), resolve_stores(cfg), cfg.data, ("rgb", "depth", "ir"), (SIZE, SIZE),
                           {}, seed=0)
        dm.setup()
        return dm

    plain, shuffled = module(False), module(True)
    a, b = plain.train.labels, shuffled.train.labels
    assert sorted(a) == sorted(b) and (a != b).any()
    assert [int(shuffled.train.dataset[k]["label"]) for k in range(10)] == list(b[:10])
    assert np.array_equal(plain.select.labels, shuffled.select.labels)


def scored(species_auc: dict[str, float], n: int = 200, seed: int = 0) -> ka.Scored:
    """Scores whose AUC of bona fide against each species is close to the given one (in %)."""
    rng = np.random.default_rng(seed)
    labels, scores, pai = [np.ones(n, int)], [rng.normal(0, 1, n)], [np.array(["bonafide"] * n)]
    for sp, auc in species_auc.items():
        # shift of a unit normal that gives this AUC: auc = Phi(shift / sqrt 2)
        from statistics import NormalDist
        shift = NormalDist().inv_cdf(min(max(auc / 100, 1e-4), 1 - 1e-4)) * np.sqrt(2)
        labels.append(np.zeros(n, int))
        scores.append(rng.normal(-shift, 1, n))
        pai.append(np.array([sp] * n))
    return ka.Scored(np.concatenate(labels), np.concatenate(scores), np.concatenate(pai))


def test_auc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    sc = scored({"print": 80, "replay": 60})
    keep = (sc.labels == 1) | (sc.pai == "print")
    assert sc.auc("print") == pytest.approx(100 * roc_auc_score(sc.labels[keep], sc.scores[keep]))
    assert sc.auc() == pytest.approx(100 * roc_auc_score(sc.labels, sc.scores))


def test_shuffled_check():
    assert ka.check_shuffled(scored({"print": 50}, n=2000)).passed
    bad = ka.check_shuffled(scored({"print": 70}, n=2000))
    assert not bad.passed and "AUC 69.5" in bad.measured


GOOD = {"rgb": dict(print=60, replay=60, mask_rigid=60, mask_flexible=60, partial=60),
        "depth": dict(print=99, replay=99, mask_rigid=55, mask_flexible=55, partial=95),
        "ir": dict(print=55, replay=99, mask_rigid=99, mask_flexible=99, partial=99)}


def test_carrier_check_names_the_species_a_wrong_modality_wins():
    good = {m: scored(v, seed=i) for i, (m, v) in enumerate(GOOD.items())}
    assert ka.check_carriers(good).passed
    swapped = {"rgb": good["rgb"], "depth": good["ir"], "ir": good["depth"]}  # depth and IR inputs swapped
    bad = ka.check_carriers(swapped)
    assert not bad.passed and "mask_rigid: depth wins" in bad.measured and "partial: depth wins" in bad.measured
    assert "print:" not in bad.measured.split("WRONG")[1]  # depth and IR both carry prints


def test_removal_and_severed_checks():
    full = scored(dict(print=99, replay=99, mask_rigid=99, mask_flexible=99, partial=99))
    no_depth = scored(dict(print=90, replay=97, mask_rigid=99, mask_flexible=98, partial=98), seed=1)
    no_ir = scored(dict(print=97, replay=97, mask_rigid=60, mask_flexible=65, partial=80), seed=2)
    assert ka.check_removal(full, {"depth": no_depth, "ir": no_ir}).passed
    # IR-only species must suffer without IR
    bad = ka.check_removal(full, {"depth": no_depth, "ir": full})
    assert not bad.passed and "without ir, mask_rigid drops" in bad.measured
    # species depth carries nothing for must not suffer without depth (the fusion leans on the wrong input)
    bad = ka.check_removal(full, {"depth": no_ir, "ir": no_ir})
    assert not bad.passed and "without depth, mask_rigid (not carried by depth) drops" in bad.measured
    sens = {"rgb": 0.05, "depth": 0.1, "ir": 0.2}
    assert ka.check_severed(full, no_ir, sens, {**sens, "ir": 0.0}, "ir").passed
    assert not ka.check_severed(full, no_ir, sens, sens, "ir").passed  # IR still moves scores
    assert not ka.check_severed(full, full, sens, {**sens, "ir": 0.0}, "ir").passed  # no AUC drop


def test_repeat_check_compares_bytes(tmp_path: Path):
    for run, text in (("a", "x,1\n"), ("b", "x,1\n"), ("c", "x,2\n")):
        (tmp_path / run / "scores").mkdir(parents=True)
        (tmp_path / run / "scores" / "W.csv").write_text(text)
    assert ka.check_repeat(tmp_path / "a", tmp_path / "b").passed
    assert not ka.check_repeat(tmp_path / "a", tmp_path / "c").passed
    (tmp_path / "d").mkdir()
    assert not ka.check_repeat(tmp_path / "d", tmp_path / "d").passed  # nothing to compare is not a pass


def test_profile_is_w_in_one_session():
    k = load_profiles(ka.PROFILE_FILE)["W"]
    w = PROFILES["W"]
    assert k.instrument("print", "carbon")[1] <= 0.05 < w.instrument("print", "carbon")[0]
    ignore = {"instruments": None, "description": None, "attack_session": None, "pai_mix": None}
    assert {**k.as_dict(), **ignore} == {**w.as_dict(), **ignore}
    assert k.attack_session == {} and w.attack_session, "the suite's set-up must not have a session shortcut"
    # the species the carrier table covers, and no other (W's paper masks are left out)
    assert set(ka.CARRIERS) | {"bonafide"} == set(k.pai_mix) and set(k.pai_mix) <= set(w.pai_mix)


def test_cli_refuses_an_unknown_check(tmp_path: Path):
    r = runner.invoke(app, ["check", "--out", str(tmp_path), "--only", "carriers"])
    assert r.exit_code == 2 and "unknown check 'carriers'" in r.output
    assert not any(tmp_path.iterdir())


def test_cli_repeat_end_to_end(tmp_path: Path):
    """The smallest real run: two trainings with one seed give identical scores; results written as JSON; --reuse
    keeps the finished runs and computes the verdict again."""
    r = runner.invoke(app, ["check", "--out", str(tmp_path), "--only", "repeat", "-n", "100", "--image-size", "32",
                            "--epochs", "1", "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "PASS repeat" in r.output
    data = json.loads((tmp_path / "checks.json").read_text())
    assert [c["name"] for c in data["checks"]] == ["repeat"] and data["checks"][0]["passed"]
    before = (tmp_path / "runs" / "repeat-a" / "model.safetensors").stat().st_mtime_ns
    r = runner.invoke(app, ["check", "--out", str(tmp_path), "--only", "repeat", "-n", "100", "--image-size", "32",
                            "--epochs", "1", "--workers", "1", "--reuse"])
    assert r.exit_code == 0 and "reusing" in r.output and "PASS repeat" in r.output, r.output
    assert (tmp_path / "runs" / "repeat-a" / "model.safetensors").stat().st_mtime_ns == before
