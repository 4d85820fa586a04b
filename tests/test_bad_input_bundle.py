"""The bad-input corpus: bundles, checkpoints, predict, evaluate, report and models.

Every case asserts exit status 2 without a traceback (CLI) or the typed error (API), that the message names the
culprit, and that nothing that existed was changed (see tests/bad_input.py). The bundles here are written by
``save_bundle`` from a freshly built tiny model (no training needed: the same code path a run takes), with a
``config.yaml`` beside them so ``mfas evaluate`` gets as far as it can before it needs a store.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mfas
from bad_input import api_error, cli_error, flat, tree_digest
from engine_helpers import tiny_config
from mfas.engine import io as bio
from mfas.engine.config import dump_config
from mfas.engine.io import (
    AtomicCheckpointIO,
    check_checkpoint,
    load_bundle,
    read_bundle_meta,
    save_bundle,
)
from mfas.engine.predict import predict_folders
from mfas.errors import ConfigError, DataError, MfasError
from mfas.inference import bundle as bundle_mod
from mfas.inference import torch_model as torch_model_mod
from mfas.models import create_model

TINY = {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2}
THRESHOLD = {"value": 0.5, "policy": "fixed:0.5", "source": "fixed"}


def make_bundle(d: Path, name: str = "vit-concat-tiny", options: dict | None = None) -> Path:
    """A bundle (model.json + model.safetensors) and config.yaml in ``d``, as a finished run has them."""
    torch.manual_seed(0)
    model = create_model(name, **(TINY if options is None else options))
    save_bundle(d, model, {"threshold": THRESHOLD, "selection": {"policy": "last"}, "metrics": {}})
    (d / "config.yaml").write_text(dump_config(tiny_config(d.parent / "no-store", d.parent, name=d.name)))
    return d


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundles") / "good")


@pytest.fixture
def bundle(good: Path, tmp_path: Path) -> Path:
    """A private copy of the good bundle, free to damage."""
    d = tmp_path / "run"
    shutil.copytree(good, d)
    return d


def edit_json(d: Path, fn) -> Path:
    meta = json.loads((d / "model.json").read_text())
    fn(meta)
    (d / "model.json").write_text(json.dumps(meta))
    return d


def images(root: Path, names: dict[str, tuple[str, ...]], size: int = 32) -> dict[str, Path]:
    """Folders rgb/, depth/, ir/ under ``root`` with a random PNG per (name, modality) listed."""
    rng = np.random.default_rng(0)
    dirs = {m: root / m for m in ("rgb", "depth", "ir")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    for name, mods in names.items():
        for m in mods:
            shape = (size, size, 3) if m == "rgb" else (size, size)
            cv2.imwrite(str(dirs[m] / f"{name}.png"), rng.integers(0, 255, shape, dtype=np.uint8))
    return dirs


def dir_args(dirs: dict[str, Path]) -> list[str]:
    return [a for m, d in dirs.items() for a in (f"--{m}-dir", str(d))]


ALL = ("rgb", "depth", "ir")


# ------------------------------------------------------------------------------------------ predict: the bundle

def test_predict_missing_bundle_names_the_path_given(tmp_path: Path):
    """Before: 'PARENT/model.json: no model.json' (the parent folder's file); now the path the user typed."""
    out = cli_error(["predict", tmp_path / "runs" / "nope", "--rgb", tmp_path / "a.png"],
                    [f"{tmp_path / 'runs' / 'nope'}: does not exist"])
    assert "runs/model.json" not in out


def test_predict_symlink_loop_is_called_a_loop(tmp_path: Path):
    """Before: 'does not exist'."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cli_error(["predict", loop, "--rgb", tmp_path / "a.png"], [str(loop), "symbolic link loop"])


def test_predict_folder_without_model_json(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("x")
    cli_error(["predict", tmp_path, "--rgb", tmp_path / "a.png"], [str(tmp_path), "no model.json"],
              untouched=[tmp_path])


def test_predict_truncated_safetensors(bundle: Path, tmp_path: Path):
    """Before: a raw SafetensorError traceback."""
    w = bundle / "model.safetensors"
    w.write_bytes(w.read_bytes()[:200])
    cli_error(["predict", bundle, "--rgb", tmp_path / "a.png"], [str(w), "not a readable safetensors file"],
              untouched=[bundle])


def test_predict_weights_that_are_a_pickle(bundle: Path, tmp_path: Path):
    torch.save({"w": torch.ones(3)}, bundle / "model.safetensors")
    cli_error(["predict", bundle, "--rgb", tmp_path / "a.png"], ["model.safetensors", "not a readable safetensors"],
              untouched=[bundle])


def test_predict_model_json_not_json(bundle: Path, tmp_path: Path):
    (bundle / "model.json").write_text('{"format": "mfas-bundle",')
    cli_error(["predict", bundle, "--rgb", tmp_path / "a.png"], ["model.json", "not valid JSON"], untouched=[bundle])


def test_predict_model_json_sizes_beyond_the_weights(bundle: Path, tmp_path: Path):
    """Before: width 6144 x depth 48 allocated gigabytes, then failed on the weights."""
    edit_json(bundle, lambda m: m["model"].update(embed_dim=6144, depth=48))
    t = time.perf_counter()
    cli_error(["predict", bundle, "--rgb", tmp_path / "a.png"],
              ["model.json", "would have more than", "model.safetensors holds"], untouched=[bundle])
    assert time.perf_counter() - t < 20


# ------------------------------------------------------------------------------------------ predict: --out

def test_predict_out_over_an_existing_file(good: Path, tmp_path: Path):
    """Before: the file was replaced without a word."""
    dirs = images(tmp_path, {"a": ALL})
    out = tmp_path / "keep.csv"
    out.write_text("precious\n")
    cli_error(["predict", good, *dir_args(dirs), "--out", out], [str(out), "--overwrite"], untouched=[out])


def test_predict_overwrite_replaces_atomically(good: Path, tmp_path: Path):
    """The allowed path still works: --overwrite replaces the file (written atomically, nothing left over)."""
    from bad_input import runner
    from mfas.cli.main import app

    dirs = images(tmp_path, {"a": ALL, "b": ALL})
    out = tmp_path / "p.csv"
    out.write_text("old\n")
    r = runner.invoke(app, ["predict", str(good), *dir_args(dirs), "--out", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("name,score") and len(lines) == 3
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".p.csv")] == []


def test_predict_out_is_a_folder(good: Path, tmp_path: Path):
    dirs = images(tmp_path, {"a": ALL})
    cli_error(["predict", good, *dir_args(dirs), "--out", tmp_path / "rgb", "--overwrite"],
              [str(tmp_path / "rgb"), "is a folder"], untouched=[tmp_path / "rgb"])


def test_predict_out_under_a_file(good: Path, tmp_path: Path):
    """Before: a NotADirectoryError traceback after scoring everything."""
    dirs = images(tmp_path, {"a": ALL})
    f = tmp_path / "plain.txt"
    f.write_text("x")
    cli_error(["predict", good, *dir_args(dirs), "--out", f / "p.csv"], [str(f), "is a file, not a folder"],
              untouched=[f])


def test_predict_out_is_one_of_the_images(good: Path, tmp_path: Path):
    dirs = images(tmp_path, {"a": ALL})
    target = dirs["rgb"] / "a.png"
    cli_error(["predict", good, *dir_args(dirs), "--out", target, "--overwrite"], [str(target), "is one of the images"],
              untouched=[tmp_path])


def test_predict_out_in_single_mode(good: Path, tmp_path: Path):
    """Before: --out was ignored silently for a single presentation."""
    dirs = images(tmp_path, {"a": ALL})
    cli_error(["predict", good, "--rgb", dirs["rgb"] / "a.png", "--out", tmp_path / "x.csv"],
              "--out is for folder input", untouched=[tmp_path])


# ------------------------------------------------------------------------------------------ predict: folders

def test_predict_names_lacking_a_modality(good: Path, tmp_path: Path):
    """Before: 'c' was scored with rgb and depth only, exit 0."""
    dirs = images(tmp_path / "in", {"a": ALL, "b": ALL, "c": ("rgb", "depth")})
    out = tmp_path / "p.csv"
    cli_error(["predict", good, *dir_args(dirs), "--out", out],
              ["1 of 3 names lack a modality", "c (no ir)", "--allow-missing"], untouched=[out, tmp_path / "in"])


def test_predict_missing_folder_for_a_modality(good: Path, tmp_path: Path):
    dirs = images(tmp_path / "in", {"a": ALL})
    del dirs["ir"]
    cli_error(["predict", good, *dir_args(dirs), "--out", tmp_path / "p.csv"],
              ["no folder was given for ir", "a (no ir)"], untouched=[tmp_path / "p.csv"])


def test_predict_allow_missing_scores_with_what_is_there(good: Path, tmp_path: Path):
    from bad_input import runner
    from mfas.cli.main import app

    dirs = images(tmp_path / "in", {"a": ALL, "c": ("rgb", "depth")})
    out = tmp_path / "p.csv"
    r = runner.invoke(app, ["predict", str(good), *dir_args(dirs), "--out", str(out), "--allow-missing"])
    assert r.exit_code == 0, r.output
    assert out.read_text().splitlines()[2].startswith("c,") and "rgb+depth" in out.read_text()


def test_allow_missing_on_a_model_without_support():
    p = SimpleNamespace(modalities=ALL, supports_missing=False)
    api_error(lambda: predict_folders(p, {"a": {"rgb": Path("a.png")}}, {"rgb": Path("rgb")}, allow_missing=True),
              ["--allow-missing", "does not support missing modalities"], error=ConfigError)
    api_error(lambda: predict_folders(p, {"a": {"rgb": Path("a.png")}}, {"rgb": Path("rgb")}),
              ["a (no depth, ir)", "does not support missing modalities"], error=DataError)


def test_predict_ambiguous_names(good: Path, tmp_path: Path):
    """Before: one of a.png / a.jpg was ignored silently."""
    dirs = images(tmp_path / "in", {"a": ALL})
    shutil.copy(dirs["rgb"] / "a.png", dirs["rgb"] / "a.jpg")
    cli_error(["predict", good, *dir_args(dirs), "--out", tmp_path / "p.csv"],
              [str(dirs["rgb"]), "a.jpg and a.png"], untouched=[tmp_path / "in", tmp_path / "p.csv"])


def test_predict_nothing_to_score(good: Path, tmp_path: Path):
    """Before: 'wrote 0 predictions', exit 0 (and an empty CSV)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    cli_error(["predict", good, "--rgb-dir", empty, "--out", tmp_path / "p.csv"],
              [str(empty), "nothing to score", "*.png"], untouched=[tmp_path / "p.csv"])


def test_predict_every_image_unreadable(good: Path, tmp_path: Path):
    """Before: 'wrote 2 predictions (2 with errors)', exit 0. One bad file among good ones still scores the rest."""
    from bad_input import runner
    from mfas.cli.main import app

    dirs = images(tmp_path / "in", {"a": ALL, "b": ALL})
    for name in ("a", "b"):
        (dirs["rgb"] / f"{name}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "p.csv"
    cli_error(["predict", good, *dir_args(dirs), "--out", out], [str(out), "none of the 2 presentations", "a.png"])
    assert out.read_text().count("a.png") == 1  # the CSV lists every error
    (dirs["rgb"] / "a.png").unlink()
    images(tmp_path / "in", {"a": ("rgb",)})
    r = runner.invoke(app, ["predict", str(good), *dir_args(dirs), "--out", str(out), "--overwrite"])
    assert r.exit_code == 0 and "1 with errors" in flat(r.output) and "b.png" in r.output


def test_predict_folder_that_does_not_exist(good: Path, tmp_path: Path):
    cli_error(["predict", good, "--rgb-dir", tmp_path / "nope"], [str(tmp_path / "nope"), "does not exist"])


def test_predict_folder_that_is_a_file(good: Path, tmp_path: Path):
    f = tmp_path / "f.png"
    f.write_bytes(b"x")
    cli_error(["predict", good, "--rgb-dir", f, "--out", tmp_path / "p.csv"], [str(f), "--rgb-dir", "not a folder"])


def test_predict_folder_of_a_modality_the_model_does_not_use(tmp_path: Path):
    rgb_only = make_bundle(tmp_path / "cnn", "cnn-concat-tiny", {"img_size": 32, "modalities": ["rgb"]})
    dirs = images(tmp_path / "in", {"a": ALL})
    cli_error(["predict", rgb_only, *dir_args(dirs), "--out", tmp_path / "p.csv"],
              ["--depth-dir, --ir-dir", "does not use depth, ir"], untouched=[tmp_path / "p.csv"])


def test_predict_images_and_folders_together(good: Path, tmp_path: Path):
    """Before: --rgb was ignored silently when folders were given."""
    dirs = images(tmp_path, {"a": ALL})
    cli_error(["predict", good, "--rgb", dirs["rgb"] / "a.png", *dir_args(dirs)], "not both")


def test_predict_nothing_given(good: Path):
    cli_error(["predict", good], "nothing to score")


def test_predict_single_image_missing(good: Path, tmp_path: Path):
    cli_error(["predict", good, "--rgb", tmp_path / "gone.png"], [str(tmp_path / "gone.png"), "does not exist"])


# ------------------------------------------------------------------------------------------ evaluate

def test_evaluate_missing_run(tmp_path: Path):
    """Before: 'RUN/config.yaml: no such config file'."""
    cli_error(["evaluate", tmp_path / "nope"], [f"{tmp_path / 'nope'}: does not exist"])


def test_evaluate_a_file(bundle: Path):
    cli_error(["evaluate", bundle / "model.json"], [str(bundle / "model.json"), "not a run folder"])


def test_evaluate_unknown_modality(bundle: Path):
    """Before: a ValueError traceback."""
    cli_error(["evaluate", bundle, "--modalities", "rgb,bogus"], ["--modalities", "'bogus'"], untouched=[bundle])


def test_evaluate_modality_the_model_does_not_use(bundle: Path):
    cli_error(["evaluate", bundle, "--modalities", "rgb,thermal"], ["--modalities", "does not use thermal"],
              untouched=[bundle])


def test_evaluate_out_into_a_run_folder(bundle: Path, good: Path):
    """Before: the other run's metrics.json, scores and report would be overwritten."""
    cli_error(["evaluate", bundle, "--out", good], [str(good), "is a run or bundle folder"], untouched=[good, bundle])


def test_evaluate_bad_devices(bundle: Path):
    """Before: a TypeError traceback from Lightning."""
    cli_error(["evaluate", bundle, "--devices", "bogus"], "--devices 'bogus'", untouched=[bundle])


def test_evaluate_bad_strategy(bundle: Path):
    cli_error(["evaluate", bundle, "--strategy", "bogus"], "--strategy 'bogus'", untouched=[bundle])


def test_evaluate_damaged_weights(bundle: Path):
    w = bundle / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-10])
    cli_error(["evaluate", bundle], [str(w), "not a readable safetensors"], untouched=[bundle])


# ------------------------------------------------------------------------------------------ report

def test_report_missing_run(tmp_path: Path):
    cli_error(["report", tmp_path / "nope"], [str(tmp_path / "nope"), "does not exist"])


def test_report_symlink_loop(tmp_path: Path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    cli_error(["report", loop], [str(loop), "symbolic link loop"])


def test_report_out_is_a_file(bundle: Path, tmp_path: Path):
    """Before: a FileExistsError traceback after computing the report."""
    f = tmp_path / "report.txt"
    f.write_text("keep")
    cli_error(["report", bundle, "--out", f], [str(f), "exists and is not a folder"], untouched=[f, bundle])


def test_report_several_runs_need_out(bundle: Path, good: Path):
    cli_error(["report", bundle, good], "--out", untouched=[bundle, good])


def test_report_negative_bootstrap(bundle: Path):
    cli_error(["report", bundle, "--bootstrap", "-1"], "--bootstrap", untouched=[bundle])


# ------------------------------------------------------------------------------------------ models show / list

@pytest.mark.parametrize("sets,culprit", [
    (["fusion=bogus"], "fusion"),  # before: a ValueError traceback
    (["depth"], "--set 'depth': write KEY=VALUE"),  # before: depth=None, a TypeError traceback
    (["depth=abc"], "'depth'"),  # before: a TypeError traceback
    (["depth=["], "not valid YAML"),  # before: a YAML traceback
    (["depth=1000000000000"], "out of range"),
    (["dim=-3"], "dim"),  # before: a RuntimeError traceback (negative dimension)
    (["=3"], "write KEY=VALUE"),
])
def test_models_show_bad_set(sets: list[str], culprit: str):
    cli_error(["models", "show", "mmfas-tiny", *[a for s in sets for a in ("--set", s)]], culprit)


def test_models_show_a_model_too_large_to_exist():
    """Before: allocated until memory ran out; now counted on the meta device and stopped at the cap."""
    t = time.perf_counter()
    cli_error(["models", "show", "vit-concat", "--set", "embed_dim=6144", "--set", "depth=4800"],
              ["would have more than", "parameter and buffer values"])
    assert time.perf_counter() - t < 30


def test_models_show_unknown_model():
    cli_error(["models", "show", "nosuch"], "unknown model 'nosuch'")


def test_models_list_extra_argument():
    cli_error(["models", "list", "extra"], "extra")


# ------------------------------------------------------------------------------------------ convert-mmda

def _convert(src: Path, out: Path) -> list:
    return ["models", "convert-mmda", src, "--out", out, "-p", "sim/loo/CPS-W", "--set", "model.name=mmda-tiny"]


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_convert_malicious_checkpoint_is_refused_and_not_run(tmp_path: Path):
    marker = tmp_path / "pwned"
    src = tmp_path / "evil.pt"
    torch.save({"model.x": torch.ones(2), "payload": _Evil(marker)}, src)
    cli_error(_convert(src, tmp_path / "out"), [str(src), "refused", "posix.system"],
              untouched=[src, tmp_path / "out", marker])
    assert not marker.exists()


@pytest.mark.parametrize("kind,culprit", [
    ("junk", "not a PyTorch checkpoint"),  # before: a KeyError traceback for some byte patterns
    ("truncated", "not a PyTorch checkpoint"),
    ("empty", "is empty"),
    ("legacy", "legacy"),
    ("compressed", "compressed records"),
    ("missing", "does not exist"),
    ("bare-pickle", "not a PyTorch checkpoint"),
])
def test_convert_unreadable_checkpoints(kind: str, culprit: str, tmp_path: Path):
    src = tmp_path / "ck.pt"
    good = tmp_path / "good.pt"
    torch.save({"model.w": torch.ones(100, 100)}, good)
    if kind == "junk":
        src.write_bytes(b"junk" * 100)
    elif kind == "truncated":
        src.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "empty":
        src.write_bytes(b"")
    elif kind == "legacy":
        torch.save({"model.w": torch.ones(3)}, src, _use_new_zipfile_serialization=False)
    elif kind == "compressed":
        with zipfile.ZipFile(good) as zi, zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as zo:
            for info in zi.infolist():
                zo.writestr(info.filename, zi.read(info.filename))
    elif kind == "bare-pickle":
        import pickle

        src.write_bytes(pickle.dumps({"model.w": [1.0, 2.0]}))
    cli_error(_convert(src, tmp_path / "out"), [str(src), culprit], untouched=[src, tmp_path / "out"])


def test_convert_truncated_safetensors(tmp_path: Path):
    from safetensors.torch import save_file

    src = tmp_path / "ck.safetensors"
    save_file({"model.w": torch.ones(100, 100)}, str(src))
    src.write_bytes(src.read_bytes()[:-100])
    cli_error(_convert(src, tmp_path / "out"), [str(src), "not a readable safetensors"], untouched=[src])


# ------------------------------------------------------------------------------------------ the API

def test_load_missing_path(tmp_path: Path):
    api_error(lambda: mfas.load(tmp_path / "nope"), [f"{tmp_path / 'nope'}: does not exist"], error=DataError)


@pytest.mark.parametrize("path,culprit", [("x" * 5000, "File name too long"), ("a\x00b", "NUL character")])
def test_load_unusable_path(path: str, culprit: str):
    api_error(lambda: mfas.load(path), ["cannot be used as a path", culprit], error=DataError)


def test_predict_out_name_too_long(good: Path, tmp_path: Path):
    dirs = images(tmp_path, {"a": ALL})
    cli_error(["predict", good, *dir_args(dirs), "--out", tmp_path / ("z" * 300)], ["--out", "File name too long"])


def test_load_bundle_without_weights(bundle: Path):
    (bundle / "model.safetensors").unlink()
    api_error(lambda: load_bundle(bundle), [str(bundle / "model.safetensors"), "does not exist"], [bundle], DataError)


def test_load_bundle_weights_replaced(bundle: Path):
    w = bundle / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    api_error(lambda: load_bundle(bundle), ["model.safetensors", "does not match the hash in model.json"], [bundle],
              DataError)


@pytest.mark.parametrize("edit,culprit", [
    (lambda m: m.pop("threshold"), "threshold: Field required"),
    (lambda m: m["model"].pop("name"), "model.name: Field required"),
    (lambda m: m["model"].update(name="nosuch"), "unknown model 'nosuch'"),
    (lambda m: m["model"].update(depth="two"), "'depth'"),
    (lambda m: m["model"].update(depth=-1), "vit-concat-tiny"),
    (lambda m: m["model"].update(depth=10**40), "model.depth"),
    (lambda m: m["model"].update(embed_dim=64), "does not fit model.safetensors"),
    (lambda m: m["threshold"].update(value="high"), "threshold.value"),
    (lambda m: m["threshold"].update(value=float("nan")), "threshold.value"),
    (lambda m: m["preprocessing"].update(input_size=[100000, 100000]), "preprocessing.input_size"),
    (lambda m: m["preprocessing"].update(input_size=[64, 64]), "preprocessing.input_size is [64, 64]"),
    (lambda m: m["preprocessing"].update(modalities=["rgb", "rgb"]), "preprocessing.modalities"),
    (lambda m: m["preprocessing"]["norm"].pop("ir"), "norm has no entry for 'ir'"),
    (lambda m: m.update(supports_missing="yes"), "supports_missing"),
    (lambda m: m.update(weights_sha256="abc"), "weights_sha256"),
    (lambda m: m.update(format="other"), "not an mfas bundle of version 1"),
    (lambda m: m.update(version=2), "not an mfas bundle of version 1"),
])
def test_load_bundle_bad_model_json(bundle: Path, edit, culprit: str):
    edit_json(bundle, edit)
    err = api_error(lambda: load_bundle(bundle), [str(bundle / "model.json"), culprit], [bundle],
                    (ConfigError, DataError))
    assert "model.json" in str(err)


@pytest.mark.parametrize("content,culprit", [
    (b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    (b"\xff\xfe\x00", "not UTF-8"),
    (b"[1, 2]", "a JSON object was expected"),
    (b"1" * 5000, "not valid JSON"),
])
def test_read_bundle_meta_bad_files(bundle: Path, content: bytes, culprit: str):
    (bundle / "model.json").write_bytes(content)
    api_error(lambda: read_bundle_meta(bundle), [str(bundle / "model.json"), culprit], [bundle], DataError)


def test_read_bundle_meta_too_large(bundle: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(bundle_mod, "MAX_META_BYTES", 1000)
    api_error(lambda: read_bundle_meta(bundle), [str(bundle / "model.json"), "more than a model.json can have"],
              [bundle], DataError)


def test_read_bundle_meta_of_a_fifo(bundle: Path):
    """A FIFO named model.json would block the reader for ever."""
    (bundle / "model.json").unlink()
    os.mkfifo(bundle / "model.json")
    api_error(lambda: read_bundle_meta(bundle), [str(bundle / "model.json"), "not a regular file"], error=DataError)


def test_predictor_bad_device(good: Path):
    api_error(lambda: mfas.load(good, device="bogus"), "device 'bogus'", error=ConfigError)


def test_predict_array_beyond_the_pixel_limit(good: Path):
    """A view of 100,000 x 100,000 pixels that costs no memory: refused on its shape before any copy."""
    p = mfas.load(good)
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (100_000, 100_000, 3))
    api_error(lambda: p.predict(rgb=huge), ["rgb array", "exceeds the limit"], error=DataError)


# ------------------------------------------------------------------------------------------ checkpoints

def test_checkpoint_truncated(tmp_path: Path):
    """Before: a RuntimeError traceback from the zip reader (Lightning's resume goes through this loader)."""
    ck = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(1000)}, "epoch": 1}, ck)
    ck.write_bytes(ck.read_bytes()[:300])
    api_error(lambda: AtomicCheckpointIO().load_checkpoint(ck), [str(ck), "not a PyTorch checkpoint"], [ck], DataError)
    api_error(lambda: check_checkpoint(ck), [str(ck), "not a PyTorch checkpoint"], [ck], DataError)


def test_checkpoint_malicious(tmp_path: Path):
    """Before: UnpicklingError with torch's advice to retry with weights_only=False."""
    marker = tmp_path / "pwned"
    ck = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "x": _Evil(marker)}, ck)
    err = api_error(lambda: AtomicCheckpointIO().load_checkpoint(ck), [str(ck), "refused"], [ck], DataError)
    assert "weights_only" not in str(err) and not marker.exists()


def test_checkpoint_of_another_model(tmp_path: Path):
    ck = tmp_path / "last.ckpt"
    other = create_model("vit-concat-tiny", **{**TINY, "embed_dim": 64})
    torch.save({"state_dict": {f"model.{k}": v for k, v in other.state_dict().items()}, "optimizer_states": [],
                "lr_schedulers": [], "loops": {}, "epoch": 0, "global_step": 0}, ck)
    mine = create_model("vit-concat-tiny", **TINY)
    api_error(lambda: check_checkpoint(ck, model=mine), [str(ck), "does not fit", "of another shape"], [ck], DataError)
    torch.save({"state_dict": {}}, ck)
    api_error(lambda: check_checkpoint(ck, model=mine), [str(ck), "'optimizer_states'"], [ck], DataError)


def test_best_weights_truncated(tmp_path: Path):
    from mfas.engine.io import load_weights, save_weights

    w = save_weights(tmp_path / "best-epoch1.safetensors", {"w": torch.ones(100)}, {"format": "x"})
    w.write_bytes(w.read_bytes()[:50])
    api_error(lambda: load_weights(w), [str(w), "not a readable safetensors"], [w], DataError)


@pytest.mark.parametrize("name", ["vit-concat-tiny", "cnn-concat-tiny", "mmfas-tiny", "mmfas-cross-tiny",
                                  "mmfas-merge-tiny", "mmda-tiny"])
def test_every_kind_of_bundle_passes_the_checks(name: str, tmp_path: Path):
    """The checks refuse only what is wrong: a bundle of every registered method loads, weights equal."""
    model = create_model(name)
    save_bundle(tmp_path, model, {"threshold": THRESHOLD})
    loaded, meta = load_bundle(tmp_path)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert meta["model"]["name"] == name


# ------------------------------------------------------------------------------------------ fuzzing model.json

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                     st.text(max_size=20))
_junk = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                     max_leaves=12)
_sizes = st.one_of(st.integers(-10, 10), st.integers(-2**70, 2**70), st.sampled_from([0, 1, 6144, 10**6, 10**9]),
                   st.floats(allow_nan=True, allow_infinity=True))


def _paths(meta: dict, prefix: tuple = ()) -> list[tuple]:
    out = []
    for k, v in meta.items():
        out.append((*prefix, k))
        if isinstance(v, dict):
            out += _paths(v, (*prefix, k))
    return out


@st.composite
def _mutated(draw: st.DrawFn, valid: dict) -> dict:
    meta = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()) and isinstance(meta.get("model"), dict):  # half of the edits: the model's options
            path = ("model", draw(st.sampled_from([*valid["model"], "bogus_option"])))
        else:
            path = draw(st.sampled_from(_paths(meta)))
        node = meta
        for k in path[:-1]:
            node = node.get(k) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        how = draw(st.sampled_from(["delete", "junk", "size", "name", "nest"]))
        if how == "delete":
            node.pop(path[-1], None)
        elif how == "junk":
            node[path[-1]] = draw(_junk)
        elif how == "size":
            node[path[-1]] = draw(_sizes)
        elif how == "name":
            node[path[-1]] = draw(st.sampled_from(["mmda", "mmfas", "vit-concat", "nope", "", "vit-concat-tiny"]))
        else:
            node[path[-1]] = {"a": [node.get(path[-1])], "b": {"c": draw(_junk)}}
    return meta


def _check_refusal(d: Path, meta: object, real_builds: list[int], n_values: int) -> None:
    text = json.dumps(meta, allow_nan=True)
    (d / "model.json").write_text(text)
    t = time.perf_counter()
    try:
        load_bundle(d)
    except (ConfigError, DataError) as e:
        assert "model.json" in str(e), str(e)
    except MfasError as e:  # pragma: no cover - a refusal of the wrong type
        raise AssertionError(f"{type(e).__name__}: {e}") from e
    assert time.perf_counter() - t < 10
    # never a large allocation: a model is only ever built for real when its size fits the weights file
    assert all(n <= n_values + bundle_mod.NON_STATE_SLACK for n in real_builds), real_builds


@pytest.fixture(scope="module")
def fuzz_bundle(tmp_path_factory: pytest.TempPathFactory):
    d = make_bundle(tmp_path_factory.mktemp("fuzz") / "b")
    return d, json.loads((d / "model.json").read_text())


@pytest.fixture
def watched_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes (parameters + buffers) of every model load_bundle builds off the meta device."""
    sizes: list[int] = []
    real = torch_model_mod.create_model

    def spy(name: str, **kw: object):
        m = real(name, **kw)
        if next(m.parameters()).device.type != "meta":
            sizes.append(sum(t.numel() for t in [*m.parameters(), *m.buffers()]))
        return m

    monkeypatch.setattr(torch_model_mod, "create_model", spy)
    return sizes


FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(data=st.data())
def test_fuzz_mutated_model_json(fuzz_bundle, watched_builds, data):
    d, valid = fuzz_bundle
    n_values = sum(math.prod(s) for s in bio.weights_header(d / "model.safetensors")[0].values())
    _check_refusal(d, data.draw(_mutated(valid)), watched_builds, n_values)


@FUZZ
@given(meta=st.one_of(_junk, st.dictionaries(st.sampled_from(["format", "version", "model", "preprocessing",
                                                              "threshold", "supports_missing", "weights_sha256"]),
                                             _junk, max_size=7)))
def test_fuzz_arbitrary_model_json(fuzz_bundle, watched_builds, meta):
    d, _ = fuzz_bundle
    n_values = sum(math.prod(s) for s in bio.weights_header(d / "model.safetensors")[0].values())
    _check_refusal(d, meta, watched_builds, n_values)


def test_fuzz_bundle_is_left_as_it_was(fuzz_bundle):
    """The fuzzing above writes only model.json; the weights file is never touched by loading."""
    d, valid = fuzz_bundle
    before = tree_digest(d / "model.safetensors")
    (d / "model.json").write_text(json.dumps(valid))
    load_bundle(d)
    assert tree_digest(d / "model.safetensors") == before
