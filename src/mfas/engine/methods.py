"""What a run's method is called in the comparison layouts (asks the model registry)."""

from __future__ import annotations

import json
from pathlib import Path

from mfas.errors import MfasError
from mfas.models.registry import full_defaults


def method_label(run: Path) -> str:
    """The model name plus the options that differ from the registry's defaults (seed and size options of
    the name itself excluded), e.g. ``mmda-tiny compat=official``; the folder name without a ``model.json``."""
    mj = run / "model.json"
    if not mj.exists():
        return run.name
    cfg = dict(json.loads(mj.read_text())["model"])
    name = cfg.pop("name")
    try:
        defaults = full_defaults(name)
    except MfasError:
        return name
    same = {k for k, v in cfg.items() if k in defaults and json.loads(json.dumps(defaults[k], default=str)) == v}
    diff = [f"{k}={v}" for k, v in sorted(cfg.items()) if k not in same and k != "pretrained"]
    return " ".join([name, *diff])
