"""Bad input for configs, runs and models: `mfas train`, `mfas train --resume`, `load_config`, `validate_config`,
`apply_overrides`, `create_model` and `mfas models show`. Each case ends in a clear error (exit status 2 from the
CLI, a typed error from the API) that names the culprit, without a traceback, and changes nothing that existed.

The run-folder cases also check the guarantees that keep runs whole: one training per run (the lock), logs that
survive a kill and a resume, a run that died in its first epoch can be trained again, a finished run is never
deleted.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bad_input import api_error, cli_error, runner
from engine_helpers import tiny_config
from mfas.cli.main import app
from mfas.engine.config import apply_overrides, load_config, validate_config
from mfas.engine.resolve import check_protocol, resume_config
from mfas.engine.train import RunLock, plan_run, read_resume_point, train
from mfas.errors import ConfigError, DataError, RunError
from mfas.models import create_model
from mfas.protocols import load_protocol_file

#: every run of this file: two short epochs, every step logged (so the logs show each step once)
SECTIONS = {"trainer": {"max_epochs": 2, "log_every_n_steps": 1}}


def write_config(path: Path, cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


@pytest.fixture
def cfg_file(sim_store: Path, tmp_path: Path) -> Path:
    """A valid config whose run would be ``tmp_path/runs/run`` (absent)."""
    return write_config(tmp_path / "exp.yaml", tiny_config(sim_store, tmp_path / "runs", name="run", **SECTIONS))


@pytest.fixture(scope="module")
def finished(sim_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run (trained once for the module; copy it before touching it)."""
    return train(tiny_config(sim_store, tmp_path_factory.mktemp("done"), name="done", **SECTIONS))


def copy_run(src: Path, dst: Path, interrupted: bool = False) -> Path:
    shutil.copytree(src, dst)
    if interrupted:  # as if killed after its last epoch's checkpoint, before the bundle
        for name in ("model.json", "model.safetensors", "metrics.json", "report.md"):
            (dst / name).unlink()
        for name in ("scores", "plots"):
            shutil.rmtree(dst / name)
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    cfg.update(output_dir=str(dst.parent), name=dst.name)
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dst


def csv_rows(run: Path) -> list[dict]:
    with open(run / "logs" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def same_logs(a: Path, b: Path) -> None:
    """The same rows (epoch, step, columns) with the same values (to float noise)."""
    ra, rb = csv_rows(a), csv_rows(b)
    assert [(r["epoch"], r["step"], sorted(k for k, v in r.items() if v)) for r in ra] == \
        [(r["epoch"], r["step"], sorted(k for k, v in r.items() if v)) for r in rb]
    for x, y in zip(ra, rb, strict=True):
        for k, v in x.items():
            if v and k not in ("epoch", "step"):
                assert float(y[k]) == pytest.approx(float(v), rel=1e-5, abs=1e-7), (k, x, y)


# -- config values that used to pass or end in a traceback: `mfas train CONFIG --set ...` ---------------------------

SET_CASES = [
    ("data.batch_size=-1", "data.batch_size"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.eval_batch_size=-5", "data.eval_batch_size"),
    ("data.image_size=0", "data.image_size"),
    ("data.batches_per_epoch=0", "data.batches_per_epoch"),
    ("data.workers=-1", "data.workers"),
    ("optim.lr=-1e-4", "optim.lr"),
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.warmup=2", "optim.warmup"),
    ("optim.betas=[0.9, 1.5]", "optim.betas"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("trainer.max_epochs=-1", "trainer.max_epochs"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("trainer.precision=bf17", "trainer.precision"),
    ("trainer.devices=abc", "trainer.devices"),
    ("trainer.accelerator=gpux", "trainer.accelerator"),
    ("seed=-1", "seed"),
    ("model.depth=abc", "model.depth"),
    ("model.embed_dim=1.5", "model.embed_dim"),
    ("model.depth=true", "model.depth"),
    ("model.dpth=2", ["model.dpth", "model.depth"]),
    ("model.name=vit-concat-tinyy", ["model.name", "vit-concat-tiny"]),
    ("model.modalities=[rgb, x]", "model.modalities"),
    ("model.modalities=rgb,nir", "model.modalities"),
    ("optim.lr=[1,", ["optim.lr", "not valid YAML"]),
    ("name=", "name"),
    ("name=a/b", ["name", "plain folder name"]),
    ("name=..", ["name", "plain folder name"]),
    ("eval.bundle_policy=val_eeer", ["eval.bundle_policy", "val_eeer"]),
    ("eval.bundle_policy=test_eer", ["eval.bundle_policy", "test labels"]),
    ("eval.policies=[sometimes]", "eval.policies"),
    ("a..b=1", "a..b"),
    ("novalue", "KEY=VALUE"),
    ("name.x=1", "'name' is not a section"),
    ("data=5", "data"),
]


@pytest.mark.parametrize(("setting", "culprit"), SET_CASES, ids=[s for s, _ in SET_CASES])
def test_bad_set_value_is_refused_before_anything_is_written(cfg_file: Path, tmp_path: Path, setting: str,
                                                             culprit: str | list[str]):
    cli_error(["train", cfg_file, "--set", setting], culprit, untouched=[tmp_path / "runs", cfg_file])


def test_run_name_cannot_leave_the_output_folder(cfg_file: Path, tmp_path: Path):
    """Before: `--set name=../../x` wrote the run two levels above output_dir."""
    escaped = tmp_path / "escaped"
    cli_error(["train", cfg_file, "--set", f"name=../../{tmp_path.name}/escaped"], ["name", "plain folder name"],
              untouched=[tmp_path / "runs", escaped, cfg_file])


def test_model_builder_value_error_names_the_option(cfg_file: Path, tmp_path: Path):
    """Before: mmFAS' ValueError for an unknown fusion was a traceback, after the run folder was created."""
    cli_error(["train", cfg_file, "--set", "model={name: mmfas-tiny, img_size: 32, fusion: bogus}"],
              ["mmfas-tiny", "fusion", "bogus"], untouched=[tmp_path / "runs", cfg_file])


def test_model_builder_assertion_names_the_option(cfg_file: Path, tmp_path: Path):
    """timm's assertion (width not divisible by the heads) became a traceback."""
    cli_error(["train", cfg_file, "--set", "model.num_heads=3"], ["vit-concat-tiny", "num_heads"],
              untouched=[tmp_path / "runs", cfg_file])


def test_bundle_policy_without_validation_data_is_refused_before_training(cfg_file: Path, tmp_path: Path):
    """Before: the bundle silently got fixed:0.5 after the whole training."""
    proto = tmp_path / "noselect.yaml"
    proto.write_text(yaml.safe_dump({"name": "bad/noselect", "train": [{"store": "sim", "split": "train"}],
                                     "tests": [{"name": "W", "parts": [{"store": "sim", "split": "test"}]}]}))
    cli_error(["train", cfg_file, "--set", f"protocol_file={proto}", "--set", "protocol=bad/noselect"],
              ["eval.bundle_policy", "no select part"], untouched=[tmp_path / "runs", cfg_file, proto])


# -- config files --------------------------------------------------------------------------------------------------

CONFIG_FILES = [
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a text file"),
    ("list", b"- name: x\n- protocol: y\n", "not a list"),
    ("scalar", b"42\n", "not a number"),
    ("text", b"just some words\n", "not text"),
    ("broken-yaml", b"name: x\nmodel: {name: [\n", "not valid YAML"),
    ("tab-indent", b"name: x\n\tprotocol: y\n", "not valid YAML"),
    ("non-string-key", b"1: 2\nname: x\n", "key 1"),
    ("empty", b"", "name"),
]


@pytest.mark.parametrize(("kind", "content", "culprit"), CONFIG_FILES, ids=[c[0] for c in CONFIG_FILES])
def test_bad_config_file_is_named(tmp_path: Path, kind: str, content: bytes, culprit: str):
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(content)
    cli_error(["train", path], [path.name, culprit], untouched=[path, tmp_path / "runs"])
    api_error(lambda: load_config(path), [path.name, culprit], untouched=[path], error=ConfigError)


def test_missing_config_and_folder_as_config(tmp_path: Path):
    cli_error(["train", tmp_path / "nope.yaml"], ["nope.yaml", "no such config file"],
              untouched=[tmp_path / "nope.yaml"])
    (tmp_path / "folder.yaml").mkdir()
    cli_error(["train", tmp_path / "folder.yaml"], ["folder.yaml", "a folder"], untouched=[tmp_path])


# -- the config API --------------------------------------------------------------------------------------------------

def test_validate_config_refuses_a_list_and_non_string_keys():
    api_error(lambda: validate_config([1, 2]), "a config is a mapping", error=ConfigError)  # type: ignore[arg-type]
    api_error(lambda: validate_config({1: 2}), "key 1", error=ConfigError)  # type: ignore[dict-item]


def test_apply_overrides_errors_name_the_set(tmp_path: Path):
    data = {"name": "x", "optim": {"lr": 1}}
    api_error(lambda: apply_overrides(data, ["optim.lr=[1,"]), ["optim.lr", "not valid YAML"], error=ConfigError)
    api_error(lambda: apply_overrides(data, ["optim..lr=1"]), "empty part", error=ConfigError)
    api_error(lambda: apply_overrides(["a"], ["a=1"]), "mapping", error=ConfigError)  # type: ignore[arg-type]
    assert data == {"name": "x", "optim": {"lr": 1}}  # never changed in place


def test_a_single_modality_string_is_a_one_element_list(cfg_file: Path):
    """Documented choice: `modalities: rgb` (or `rgb,depth`) is read as a list in canonical order."""
    cfg = load_config(cfg_file, ["model.modalities=depth,rgb"])
    assert cfg.model.overrides["modalities"] == ["rgb", "depth"]
    assert create_model("vit-concat-tiny", modalities="ir").modalities == ("ir",)
    r = runner.invoke(app, ["models", "show", "vit-concat-tiny", "--set", "modalities=rgb"])
    assert r.exit_code == 0 and 'modalities = ["rgb"]' in r.output, r.output


# -- create_model and `mfas models show` ---------------------------------------------------------------------------

MODEL_CASES = [
    ("mmfas-tiny", {"fusion": "bogus"}, ["mmfas-tiny", "fusion", "bogus"]),
    ("mmfas-tiny", {"cm": "sometimes"}, ["mmfas-tiny", "cm"]),
    ("vit-concat-tiny", {"depth": "abc"}, ["vit-concat-tiny", "depth", "int"]),
    ("vit-concat-tiny", {"dpth": 3}, ["dpth", "depth"]),
    ("vit-concat-tiny", {"embed_dim": -8}, ["vit-concat-tiny", "embed_dim"]),
    ("cnn-concat-tiny", {"layers": [1, 1]}, ["cnn-concat-tiny", "layers"]),
    ("mmda-tiny", {"freeze": "everything"}, ["mmda-tiny", "freeze"]),
    ("no-such-model", {}, ["no-such-model", "unknown model"]),
]


@pytest.mark.parametrize(("name", "options", "culprit"), MODEL_CASES, ids=[f"{n}-{o}" for n, o, _ in MODEL_CASES])
def test_create_model_errors_are_config_errors(name: str, options: dict, culprit: list[str]):
    api_error(lambda: create_model(name, **options), culprit, error=ConfigError)


@pytest.mark.parametrize(("name", "setting", "culprit"), [
    ("vit-concat-tiny", "depth=abc", "depth"),
    ("mmfas-tiny", "fusion=bogus", "fusion"),
    ("vit-concat-tiny", "dpth=3", "dpth"),
    ("vit-concat-tiny", "modalities=[rgb, x]", "modalities"),
    ("no-such-model", "depth=1", "no-such-model"),
])
def test_models_show_bad_option(name: str, setting: str, culprit: str):
    cli_error(["models", "show", name, "--set", setting], culprit)


def test_models_show_bad_yaml_value():
    cli_error(["models", "show", "vit-concat-tiny", "--set", "depth=[1,"], ["depth", "not valid YAML"])


# -- run folders: existing runs are never changed by a refused training ---------------------------------------------

def test_plain_training_over_a_finished_run_is_refused(finished: Path, tmp_path: Path):
    run = copy_run(finished, tmp_path / "runs" / "run")
    cfg = write_config(tmp_path / "exp.yaml", load_config(run / "config.yaml"))
    cli_error(["train", cfg], ["run folder exists", "finished"], untouched=[run])


def test_resuming_a_finished_run_deletes_nothing(finished: Path, tmp_path: Path):
    """Before: the resume re-ran the evaluation and Lightning's CSV logger deleted logs/metrics.csv."""
    run = copy_run(finished, tmp_path / "runs" / "run")
    cli_error(["train", "--resume", run], [str(run), "already finished"], untouched=[run])
    assert csv_rows(run)


def test_plain_training_over_an_interrupted_run_points_to_resume(finished: Path, tmp_path: Path):
    run = copy_run(finished, tmp_path / "runs" / "run", interrupted=True)
    cfg = write_config(tmp_path / "exp.yaml", load_config(run / "config.yaml"))
    cli_error(["train", cfg], ["run folder exists", f"--resume {run}"], untouched=[run])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_resume_from_a_damaged_checkpoint_names_it(finished: Path, tmp_path: Path, damage: str):
    run = copy_run(finished, tmp_path / "runs" / "run", interrupted=True)
    ckpt = run / "last.ckpt"
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncated": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    cli_error(["train", "--resume", run], [str(ckpt), "cannot be resumed"], untouched=[run])
    api_error(lambda: read_resume_point(ckpt), "last.ckpt", error=DataError)


def test_resume_with_a_damaged_or_edited_config_names_it(finished: Path, tmp_path: Path):
    run = copy_run(finished, tmp_path / "runs" / "run", interrupted=True)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["trainer"]["max_epochs"] = 0
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    cli_error(["train", "--resume", run], ["config.yaml", "trainer.max_epochs"], untouched=[run])
    (run / "config.yaml").write_bytes(b"\xff\xfe\x00\x01")
    cli_error(["train", "--resume", run], ["config.yaml", "not a text file"], untouched=[run])


def test_resume_of_something_that_is_not_a_run(tmp_path: Path, cfg_file: Path):
    cli_error(["train", "--resume", tmp_path / "nothing"], "config.yaml", untouched=[tmp_path / "nothing"])
    odd = tmp_path / "runs" / "run"
    odd.mkdir(parents=True)
    (odd / "notes.txt").write_text("mine")
    shutil.copy(cfg_file, odd / "config.yaml")
    cli_error(["train", "--resume", odd], ["nothing to resume", "notes.txt"], untouched=[odd])
    cli_error(["train", "--resume", odd, "--set", "optim.lr=1"], "--resume", untouched=[odd])
    cli_error(["train"], "give a config file")


def test_a_folder_of_other_files_is_never_replaced(cfg_file: Path, tmp_path: Path):
    run = tmp_path / "runs" / "run"
    run.mkdir(parents=True)
    (run / "thesis.tex").write_text("years of work")
    (run / "logs").mkdir()
    cli_error(["train", cfg_file], ["run folder exists", "thesis.tex"], untouched=[run])


def test_run_path_that_is_a_file(cfg_file: Path, tmp_path: Path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "run").write_text("a file")
    cli_error(["train", cfg_file], ["runs/run", "not a folder"], untouched=[tmp_path / "runs"])


def test_output_dir_that_is_a_file(cfg_file: Path, tmp_path: Path):
    (tmp_path / "afile").write_text("x")
    cli_error(["train", cfg_file, "--set", f"output_dir={tmp_path / 'afile'}"],
              ["afile", "cannot create the run folder"], untouched=[tmp_path / "afile"])


def test_more_processes_than_batches_is_refused(cfg_file: Path, tmp_path: Path):
    """Two DDP processes sharing one batch per epoch: one would train on nothing (and with one batch each epoch
    nothing at all)."""
    env = dict(os.environ)
    cli_error(["train", cfg_file, "--set", "trainer.devices=2", "--set", "trainer.strategy=ddp", "--set",
               "data.batches_per_epoch=1"], ["data.batches_per_epoch", "2 processes"], untouched=[tmp_path / "runs"])
    assert dict(os.environ) == env


def test_an_accelerator_this_machine_lacks(cfg_file: Path, tmp_path: Path):
    """Before: Lightning's MisconfigurationException was a traceback (mps never exists on Linux)."""
    if sys.platform == "darwin":
        pytest.skip("mps may exist here")
    cli_error(["train", cfg_file, "--set", "trainer.accelerator=mps"], ["trainer", "accelerator mps"],
              untouched=[tmp_path / "runs"])


def test_protocol_without_select_part_api(sim_store: Path, tmp_path: Path):
    proto_file = tmp_path / "p.yaml"
    proto_file.write_text(yaml.safe_dump({"name": "bad/noselect-api", "train": [{"store": "sim", "split": "train"}],
                                          "tests": [{"name": "W", "parts": [{"store": "sim", "split": "test"}]}]}))
    (proto,) = load_protocol_file(proto_file)
    cfg = tiny_config(sim_store, tmp_path, protocol="bad/noselect-api")
    api_error(lambda: check_protocol(cfg, proto), ["eval.bundle_policy", "bad/noselect-api"], error=ConfigError)
    fixed = tiny_config(sim_store, tmp_path, protocol="bad/noselect-api", eval={"bundle_policy": "fixed:0.5"})
    check_protocol(fixed, proto)  # a fixed threshold needs no validation data


# -- the run lock -------------------------------------------------------------------------------------------------

def test_a_second_training_of_a_locked_run_is_refused(cfg_file: Path, tmp_path: Path):
    """Before: two trainings of one run wrote the same files at once."""
    run = tmp_path / "runs" / "run"
    with RunLock(run):
        cli_error(["train", cfg_file], [str(run / ".lock"), f"pid {os.getpid()}"], untouched=[run])
        api_error(lambda: RunLock(run).acquire(), [".lock", f"pid {os.getpid()}"], untouched=[run], error=RunError)
    assert not (run / ".lock").exists()


def test_a_lock_left_by_an_ended_process_is_taken_over(tmp_path: Path):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(f'{{"pid": {int(ended.stdout)}, "host": "{socket.gethostname()}"}}')
    with RunLock(run) as lock:
        assert f'"pid": {os.getpid()}' in lock.path.read_text()
    assert list(run.iterdir()) == []


def test_a_refused_training_leaves_no_folder_it_created(cfg_file: Path, tmp_path: Path):
    """A store that does not exist fails after the lock was taken: the folders made for it are removed."""
    cli_error(["train", cfg_file, "--set", f"data.stores.sim={tmp_path / 'no-store'}"], "no-store",
              untouched=[tmp_path / "runs"])


# -- kill and resume: the logs keep every epoch once ----------------------------------------------------------------

HANG_AT_SAVE = """
import sys, time, torch
hang_at, calls, real = int(sys.argv[2]), [0], torch.save
def save(obj, f, *a, **k):
    calls[0] += 1
    if calls[0] == hang_at:
        print("hanging", flush=True)
        time.sleep(600)
    return real(obj, f, *a, **k)
torch.save = save
from mfas.cli.main import app
sys.argv = ["mfas", "train", sys.argv[1]]
app()
"""


def start_and_hang(cfg_file: Path, at_save: int) -> subprocess.Popen:
    """`mfas train` in a subprocess that hangs at its ``at_save``-th checkpoint save (epoch ``at_save - 1``), after
    that epoch's log rows were written out."""
    proc = subprocess.Popen([sys.executable, "-c", HANG_AT_SAVE, str(cfg_file), str(at_save)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if "hanging" in line:
            return proc
    proc.wait()
    raise AssertionError("the training ended before it reached the checkpoint save")


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_kill_and_resume_keeps_every_epoch_of_the_logs(finished: Path, cfg_file: Path, tmp_path: Path):
    """Killed while saving epoch 1's checkpoint (epoch 1's rows already in metrics.csv, last.ckpt of epoch 0), then
    resumed: metrics.csv equals the uninterrupted run's, TensorBoard shows each step once. While the first training
    runs, a second one is refused naming its pid. Before: the resume deleted metrics.csv and kept only the epochs
    after the resume."""
    run = tmp_path / "runs" / "run"
    proc = start_and_hang(cfg_file, at_save=2)
    try:
        assert {r["epoch"] for r in csv_rows(run)} == {"0", "1"}
        cli_error(["train", "--resume", run], [str(run / ".lock"), f"pid {proc.pid}"], untouched=[run])
    finally:
        kill(proc)
    r = runner.invoke(app, ["train", "--resume", str(run)])
    assert r.exit_code == 0, r.output
    same_logs(run, finished)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = {}
    for name, folder in (("cut", run), ("full", finished)):
        ea = EventAccumulator(str(folder / "tb"))
        ea.Reload()
        steps[name] = [s.step for s in ea.Scalars("train/loss")], [s.step for s in ea.Scalars("val/select/eer")]
    assert steps["cut"] == steps["full"], sorted(p.name for p in (run / "tb").iterdir())
    assert not (run / ".lock").exists()


def test_a_run_killed_in_its_first_epoch_can_be_trained_again(finished: Path, cfg_file: Path, tmp_path: Path):
    """Before: the folder blocked a new training ("run folder exists") while --resume said "nothing to resume".
    Now `--resume` starts it again from epoch 0, and so does a plain re-run; both end as the uninterrupted run."""
    run = tmp_path / "runs" / "run"
    kill(start_and_hang(cfg_file, at_save=1))
    assert not (run / "last.ckpt").exists() and (run / "config.yaml").exists()
    assert plan_run(run, resume=True) == "restart" and plan_run(run, resume=False) == "replace"
    again = copy_run(run, tmp_path / "runs" / "again")
    r = runner.invoke(app, ["train", "--resume", str(run)])
    assert r.exit_code == 0, r.output
    same_logs(run, finished)
    cfg = write_config(tmp_path / "again.yaml", load_config(cfg_file, ["name=again"]))
    r = runner.invoke(app, ["train", str(cfg)])
    assert r.exit_code == 0, r.output
    same_logs(again, finished)
    assert (again / "model.json").exists()


def test_resume_config_follows_a_moved_run(finished: Path, tmp_path: Path):
    moved = copy_run(finished, tmp_path / "elsewhere" / "renamed")
    cfg = resume_config(moved)
    assert cfg.run_dir == moved
    api_error(lambda: resume_config(tmp_path / "nothing"), "no config.yaml", error=RunError)
