"""The engine: configs, training runs, evaluation, reports, bundles, resume, atomic saves, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import mfas
from engine_helpers import tiny_config
from mfas.engine.config import apply_overrides, load_config, validate_config
from mfas.engine.evaluation import read_scores
from mfas.engine.io import AtomicCheckpointIO, load_bundle
from mfas.engine.run_eval import evaluate_run
from mfas.engine.train import train
from mfas.errors import ConfigError, DataError, MfasError

MFAS = [sys.executable, "-m", "mfas.cli.main"]


def test_config_overrides_and_errors(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"name": "x", "protocol": "sim/loo/CPS-W", "model": {"name": "vit-concat-tiny"}}))
    cfg = load_config(f, ["model.depth=3", "optim.lr=1e-4", "trainer.devices=2", "eval.policies=[val_eer]"])
    assert cfg.model.overrides == {"depth": 3} and cfg.optim.lr == 1e-4 and cfg.trainer.devices == 2
    with pytest.raises(ConfigError, match="unknown key 'optim.lrr'; did you mean 'optim.lr'"):
        load_config(f, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="unknown key 'trainr'; did you mean 'trainer'"):
        load_config(f, ["trainr.devices=2"])
    with pytest.raises(ConfigError, match="eval.policies"):
        load_config(f, ["eval.policies=[sometimes]"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="protocol"):
        validate_config({"name": "x", "model": {"name": "m"}})


@pytest.fixture(scope="module")
def trained(sim_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return train(tiny_config(sim_store, out, eval={"policies": ["test_eer", "val_eer", "bpcer:0.1"]}))


def test_run_folder_layout(trained: Path):
    for f in ("config.yaml", "last.ckpt", "model.safetensors", "model.json", "metrics.json", "report.md",
              "scores/W.csv", "scores/select.csv"):
        assert (trained / f).exists(), f
    assert list((trained / "logs").glob("metrics.csv")) and list((trained / "tb").glob("events.*"))
    meta = json.loads((trained / "model.json").read_text())
    assert meta["threshold"]["policy"] == "val_eer" and meta["threshold"]["source"] == "val"
    assert meta["model"]["name"] == "vit-concat-tiny" and meta["preprocessing"]["input_size"] == [32, 32]
    assert meta["protocol"]["name"] == "sim/loo/CPS-W"
    m = json.loads((trained / "metrics.json").read_text())
    w = m["tests"]["W"]
    assert w["policies"]["test_eer"]["threshold"]["paper_compatible"] is True
    assert w["policies"]["val_eer"]["threshold"]["paper_compatible"] is False
    assert w["policies"]["test_eer"]["hter"] == pytest.approx(w["threshold_free"]["eer"])
    scores = read_scores(trained / "scores" / "W.csv")
    assert len(scores["score"]) == w["n"] and set(scores["domain"]) == {"W"}
    report = (trained / "report.md").read_text()
    assert "Paper-compatible" in report and "Deployable" in report and "APCER per PAI species" in report
    assert (trained / "plots").exists() and len(list((trained / "plots").glob("*.png"))) == 2


def test_bundle_loads_without_pickle_and_checks_hash(trained: Path, tmp_path: Path):
    model, meta = load_bundle(trained)
    state = load_file(str(trained / "model.safetensors"))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns("*.ckpt", "tb", "logs"))
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(MfasError, match="does not match the hash"):
        load_bundle(copy)


def test_predict_api_and_batch_independence(trained: Path, sim_store: Path):
    from mfas.data import open_store

    st = open_store(sim_store)
    p = mfas.load(trained)
    i = int(st.select(split="test", domain="W")[0])
    r = p.predict(rgb=np.asarray(st.arrays["rgb"][i]), depth=np.asarray(st.arrays["depth"][i]),
                  ir=np.asarray(st.arrays["ir"][i]))
    assert 0 <= r.score <= 1 and r.modalities == ("rgb", "depth", "ir")
    assert r.decision == ("bonafide" if r.score >= r.threshold else "attack") and r.policy == "val_eer"
    again = p.predict(rgb=np.asarray(st.arrays["rgb"][i]), depth=np.asarray(st.arrays["depth"][i]),
                      ir=np.asarray(st.arrays["ir"][i]))
    assert again.score == r.score  # deterministic
    rgb_only = p.predict(rgb=np.asarray(st.arrays["rgb"][i]))
    assert rgb_only.modalities == ("rgb",)
    # the score in the score file (computed in batches) equals the single-sample prediction
    scores = read_scores(trained / "scores" / "W.csv")
    k = list(scores["sample_id"]).index(st.column("sample_id")[i])
    assert abs(scores["score"][k] - r.score) < 1e-5
    with pytest.raises(DataError, match="wrong channel count"):
        p.predict(rgb=np.zeros((32, 32), np.uint8))
    with pytest.raises(MfasError, match="no input"):
        p.predict()


def test_evaluate_with_missing_modalities(trained: Path):
    out = evaluate_run(trained, "sim/missing/CPS-W")
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["tests"]) == {"W no-depth", "W no-ir", "W rgb-only"}
    assert m["tests"]["W rgb-only"]["modalities"] == ["rgb"]
    a = read_scores(out / "scores" / "W_rgb-only.csv")["score"]
    b = read_scores(trained / "scores" / "W.csv")["score"]
    assert not np.allclose(a, b)  # dropping modalities changes the scores
    out2 = evaluate_run(trained, modalities=("rgb", "depth"))
    assert out2.name == "sim_loo_CPS-W@rgb+depth"
    assert json.loads((out2 / "metrics.json").read_text())["tests"]["W"]["modalities"] == ["rgb", "depth"]


def test_refuses_to_overwrite_a_run(trained: Path, sim_store: Path):
    cfg = tiny_config(sim_store, trained.parent, name=trained.name)
    with pytest.raises(ConfigError, match="run folder exists"):
        train(cfg)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


@pytest.mark.parametrize("selection", ["last", "best_source_val"])
def test_resume_after_kill_matches_uninterrupted(sim_store: Path, tmp_path: Path, selection: str):
    """Killed after its first last.ckpt and resumed, a run ends with the uninterrupted run's weights; under a
    best-epoch selection also with its selected epoch, from the best-weights file that last.ckpt names."""
    sections = {"trainer": {"max_epochs": 5}, "data": {"batches_per_epoch": 12}, "eval": {"selection": selection}}
    full = train(tiny_config(sim_store, tmp_path, name="full", **sections))
    cfg = tiny_config(sim_store, tmp_path, name="cut", **sections)
    cfg_path = tmp_path / "cut.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    proc = subprocess.Popen([*MFAS, "train", str(cfg_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "cut" / "last.ckpt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run never saved a checkpoint"
    assert not (tmp_path / "cut" / "model.json").exists(), "the run finished before it was killed"
    r = subprocess.run([*MFAS, "train", "--resume", str(tmp_path / "cut")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    a, b = _weights(full), _weights(tmp_path / "cut")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ma = json.loads((full / "metrics.json").read_text())["tests"]["W"]
    mb = json.loads((tmp_path / "cut" / "metrics.json").read_text())["tests"]["W"]
    assert ma["threshold_free"]["n_per_species"] == mb["threshold_free"]["n_per_species"]
    for k in ("auc", "eer", "eer_threshold", "tpr_at_fpr_1", "acc_at_bpcer_1"):
        assert ma["threshold_free"][k] == pytest.approx(mb["threshold_free"][k], abs=1e-6)
    sa = json.loads((full / "model.json").read_text())["selection"]
    sb = json.loads((tmp_path / "cut" / "model.json").read_text())["selection"]
    assert sa["epoch"] == sb["epoch"] and sa["history"] == sb["history"]
    best = sorted(p.name for p in (tmp_path / "cut").glob("best-*"))
    assert best == ([] if selection == "last" else [f"best-epoch{sb['epoch']}.safetensors"])
    ck = torch.load(tmp_path / "cut" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["mfas"]["best_epoch"] == (-1 if selection == "last" else sb["epoch"])
    assert not any(k.startswith("mfas_best") for k in ck)  # the best weights live in their own file
    # the logs survive the resume: every epoch's rows once, as in the uninterrupted run
    ra, rb = _csv_rows(full), _csv_rows(tmp_path / "cut")
    assert [(r["epoch"], r["step"]) for r in ra] == [(r["epoch"], r["step"]) for r in rb]
    assert sorted({r["epoch"] for r in rb if r.get("val/select/eer")}) == [str(e) for e in range(5)]
    assert not (tmp_path / "cut" / ".lock").exists()  # the killed run's lock was taken over, then released


def _csv_rows(run: Path) -> list[dict]:
    import csv

    with open(run / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


SLOW_SAVE = """
import sys, time, torch
from mfas.engine.io import AtomicCheckpointIO
real = torch.save
def slow(obj, f, *a, **k):
    with open(f, "wb") as h:
        h.write(b"partial")
        h.flush()
        print("writing", flush=True)
        time.sleep(30)
torch.save = slow
AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, sys.argv[1])
"""


def test_killed_checkpoint_save_keeps_previous(tmp_path: Path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(3), "epoch": 1}, path)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ck = AtomicCheckpointIO().load_checkpoint(path)
    assert ck["epoch"] == 1 and torch.equal(ck["w"], torch.zeros(3))


def test_ddp_evaluation_gathers_each_sample_once(trained: Path, tmp_path: Path):
    single = evaluate_run(trained, out_dir=tmp_path / "single")
    r = subprocess.run([*MFAS, "evaluate", str(trained), "--devices", "2", "--strategy", "ddp",
                        "--out", str(tmp_path / "ddp")], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MASTER_PORT": "29533"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for name in ("W.csv", "select.csv"):
        a = read_scores(single / "scores" / name)
        b = read_scores(tmp_path / "ddp" / "scores" / name)
        assert list(a["sample_id"]) == list(b["sample_id"])  # every sample once, same order
        np.testing.assert_allclose(a["score"], b["score"], atol=1e-6)


# MMDA: its text tower runs once per optimizer step (summed gradient held across micro-batches), which DDP must
# still synchronise; routing made deterministic (second expert always taken) and no dropout, so that two ranks
# and one process draw nothing at random that could differ
DDP_MODEL = {"name": "mmda-tiny", "clip": {"embed_dim": 32, "vision": {"image_size": 32, "layers": 1, "width": 32,
                                                                       "head_width": 16, "patch_size": 16},
                                           "text": {"context_length": 77, "vocab_size": 49408, "width": 32,
                                                    "heads": 2, "layers": 1}},
             "num_heads": 4, "udsa_levels": 2, "compat": "official", "attn_dropout": 0.0, "moe_threshold": 1e-9}


def test_ddp_training_two_processes(sim_store: Path, tmp_path: Path):
    """Two gloo ranks train together: each takes half of the epoch's batches, the run is written once, every test
    sample is scored exactly once, and the weights after training equal one process's with the same global batch
    (one process, the same micro-batches, two accumulated per step)."""
    cfg = tiny_config(sim_store, tmp_path, name="ddp", trainer={"max_epochs": 2, "devices": 2, "strategy": "ddp"})
    cfg = validate_config({**cfg.model_dump(mode="json"), "model": DDP_MODEL})
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    r = subprocess.run([*MFAS, "train", str(path)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MASTER_PORT": "29534"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "ddp"
    ck = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["global_step"] == 2 * (4 // 2)  # batches_per_epoch 4, split over 2 ranks, 2 epochs
    tab = read_scores(run / "scores" / "W.csv")
    assert len(set(tab["sample_id"])) == len(tab["sample_id"]) > 0
    single = validate_config({**cfg.model_dump(mode="json"), "name": "one",
                              "trainer": {**cfg.trainer.model_dump(), "devices": 1, "strategy": "auto",
                                          "accumulate_grad_batches": 2}})
    one = train(single)
    n_test = len(read_scores(one / "scores" / "W.csv")["sample_id"])
    assert len(tab["sample_id"]) == n_test
    ck1 = torch.load(one / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck1["global_step"] == ck["global_step"]
    ddp_w, one_w = ck["state_dict"], ck1["state_dict"]
    assert ddp_w.keys() == one_w.keys()
    for k in ddp_w:
        a, b = ddp_w[k], one_w[k]
        if k.endswith("in_proj_bias"):
            # the key bias adds the same q.b_k to every logit of a row: its gradient is zero in exact arithmetic, and
            # Adam's normalisation turns the rounding left in it into lr-sized steps of either sign, in any two runs
            d = a.shape[0] // 3
            a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
        # per tensor, in norm: Adam divides each gradient element by its own running magnitude, so an element whose
        # gradient is nearly zero moves by rounding; a gradient missing on a rank (e.g. the text tower's) moves
        # whole rows by lr per step, 1e-2 of the tensor's norm here
        err, ref = float((a - b).float().norm()), float(b.float().norm())
        assert err <= 1e-4 * ref + 1e-7, (k, err, ref)
    # every parameter, the text tower's included (its gradient held over the step), was updated from a gradient
    states = ck["optimizer_states"][0]["state"]
    assert len(states) == len(ddp_w) - sum(k.endswith(("reference", "reference_seen")) for k in ddp_w)
    assert all(float(st["exp_avg_sq"].sum()) > 0 for st in states.values())
    model, _ = load_bundle(run)
    assert all(torch.isfinite(p).all() for p in model.parameters())
