"""One's own RGB captures: the shipped RGB-only configs build RGB-only models without hidden overrides, train
on a store split by the split helper, and image sizes are reconciled at config time."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from mfas.engine.config import load_config, validate_config
from mfas.errors import ConfigError
from mfas.models import create_model

ROOT = Path(__file__).resolve().parents[1]
OWN = sorted((ROOT / "configs" / "own").glob("*-rgb.yaml"))


@pytest.mark.parametrize("path", OWN, ids=[p.stem for p in OWN])
def test_rgb_only_configs_build_rgb_only_models(path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(path, ["model.name=" + load_config(path).model.name + "-tiny"])
    model = create_model(cfg.model.name, **cfg.model.overrides)
    assert model.modalities == ("rgb",) and cfg.protocol == "own/rgb"


def test_the_rgb_only_config_trains_on_a_split_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from mfas.data.prepare import prepare
    from mfas.engine.train import train

    rng = np.random.default_rng(0)
    for cls, n in (("live", 4), ("attack", 4)):
        (tmp_path / "caps" / cls).mkdir(parents=True)
        for subj in range(n):
            for k in range(3):
                img = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8) // (1 if cls == "live" else 3)
                cv2.imwrite(str(tmp_path / "caps" / cls / f"{cls}{subj}_{k}.png"), img)
    prepare("folder", tmp_path / "caps", tmp_path / "own", size=32, modalities=("rgb",), workers=1,
            split_ratios="0.5,0.25,0.25", split_by="subject", subject_pattern=r"^(\w+?)_")
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / "configs/own/mmfas-rgb.yaml", [
        "model.name=mmfas-rgb-tiny", "data.image_size=32", f"data.stores.own={tmp_path / 'own'}",
        f"output_dir={tmp_path / 'runs'}", "trainer.max_epochs=1", "trainer.progress=false",
        "data.batch_size=4", "trainer.accelerator=cpu"])
    assert cfg.model.overrides["img_size"] == 32  # follows data.image_size
    run = train(cfg)
    assert (run / "model.json").exists() and (run / "scores" / "own.csv").exists()


def test_image_sizes_that_disagree_fail_at_config_time():
    base = {"name": "x", "protocol": "sim/loo/CPS-W", "data": {"stores": {"sim": "s"}, "image_size": 224},
            "model": {"name": "vit-concat-tiny"}}
    assert validate_config(base).model.overrides["img_size"] == 224
    bad = {**base, "model": {"name": "vit-concat-tiny", "img_size": 112}}
    with pytest.raises(ConfigError, match=re.escape("data.image_size 224 and model.img_size 112 differ")):
        validate_config(bad)
