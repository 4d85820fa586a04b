"""Small configs for engine tests."""

from __future__ import annotations

from pathlib import Path

from mfas.engine.config import ExperimentConfig, validate_config


def tiny_config(store: Path, out: Path, name: str = "run", **sections: dict) -> ExperimentConfig:
    data = {
        "name": name, "seed": 0, "protocol": "sim/loo/CPS-W", "output_dir": str(out),
        "data": {"stores": {"sim": str(store)}, "image_size": 32, "batch_size": 8, "eval_batch_size": 16,
                 "batches_per_epoch": 4, "sampler": "class_balanced"},
        "model": {"name": "vit-concat-tiny", "img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2},
        "optim": {"lr": 1e-3, "warmup": 0.2},
        "trainer": {"max_epochs": 3, "deterministic": True, "progress": False, "accelerator": "cpu"},
        "eval": {"policies": ["test_eer", "val_eer"], "selection": "last"},
    }
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v} if isinstance(v, dict) else v
    return validate_config(data)
