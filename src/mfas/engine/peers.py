"""Bundles for peer models with released weights (inference only), so ``mfas predict`` and ``mfas evaluate``
score them like a trained run and a report can show them next to ours."""

from __future__ import annotations

from pathlib import Path

import yaml

from mfas.data.images import RESIZE
from mfas.engine.io import atomic_write_text, check_output_folder, load_bundle, save_bundle
from mfas.models import create_model

#: the operating point of a peer bundle until ``mfas calibrate`` sets one: the released model's own decision
PEER_THRESHOLD = {"value": 0.5, "policy": "fixed:0.5", "source": "fixed", "paper_compatible": False,
                  "note": "the released model's argmax decision between real and attack; calibrate on site"}


def write_minifasnet_bundle(onnx: str | Path, out: str | Path, variant: str = "v2") -> Path:
    """A run folder at ``out`` for the MiniFASNet file ``onnx``: ``model.json`` (its crop policy as the
    preprocessing, threshold 0.5), an empty ``model.safetensors`` and a ``config.yaml`` for ``mfas evaluate``
    (which then needs ``--protocol`` or ``--protocol-file`` and ``--store``). The bundle records the file's
    absolute path and SHA-256; a moved or changed file is refused when the bundle is loaded."""
    out = check_output_folder(Path(out), "--out")
    model = create_model(f"minifasnet-{variant}", onnx=str(Path(onnx).resolve()))
    model.config["sha256"] = model.sha256
    capture = {"store_size": [80, 80], "resize": RESIZE, "crop": model.crop_policy.as_dict()}
    save_bundle(out, model, {"threshold": dict(PEER_THRESHOLD), "selection": None,
                             "peer": {"source": "Silent-Face-Anti-Spoofing (Minivision), Apache-2.0",
                                      "file": Path(onnx).name, "sha256": model.sha256}}, capture=capture)
    config = {"name": out.name, "seed": 0, "protocol": "peer",
              "data": {"stores": {}, "batch_size": 32},
              "model": {k: v for k, v in model.config.items()}, "trainer": {"progress": False},
              "eval": {"policies": ["test_eer", "val_eer"], "selection": "last"}}
    atomic_write_text(out / "config.yaml", "# a peer with released weights: evaluate it with --protocol or "
                                           "--protocol-file and --store\n" + yaml.safe_dump(config, sort_keys=False))
    load_bundle(out)  # what was written loads
    return out
