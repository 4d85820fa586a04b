"""Reading a checkpoint file of tensors without unpickling code: the one reader the baselines' weight loaders
(ImageNet ViT, DenseNet) share."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from mfas.errors import ConfigError


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` (``.safetensors``, or ``torch.load(weights_only=True)`` for anything else) by name:
    a ``state_dict`` / ``model`` / ``module`` wrapper unwrapped, ``module.`` and ``model.`` prefixes stripped.
    A missing, unreadable or empty file is a :class:`ConfigError` naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"pretrained weights {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise ConfigError(f"pretrained weights {path}: cannot be read ({str(e).splitlines()[0]})") from None
    if isinstance(sd, dict):
        for key in ("state_dict", "model", "module"):
            if key in sd and isinstance(sd[key], dict):
                sd = sd[key]
    if not isinstance(sd, dict) or not any(torch.is_tensor(v) for v in sd.values()):
        raise ConfigError(f"pretrained weights {path}: not a state dict")
    return {re.sub(r"^(module\.|model\.)", "", k): v for k, v in sd.items() if torch.is_tensor(v)}
