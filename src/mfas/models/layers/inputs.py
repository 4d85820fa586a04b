"""How the baselines of the MMDG benchmark see a batch: per-modality images with an absent modality as a black
image (the benchmark's missing-modality convention, as MMDA's released code), grey modalities repeated to the
three channels an RGB-pretrained backbone expects, or all modalities stacked on the channel axis."""

from __future__ import annotations

import torch

from mfas.conventions import MODALITIES


def black(mean: tuple[float, ...], std: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """A black image (pixel 0) after normalisation by ``mean``/``std``, shaped and typed like ``like`` (B, C, H, W)."""
    m = torch.tensor(mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return (-m / s).expand_as(like)


def present_mask(batch: dict, modalities: tuple[str, ...]) -> torch.Tensor:
    """(B, M) bool: which of ``modalities`` each sample has (the batch's mask is over all of MODALITIES)."""
    return torch.stack([batch["present"][:, MODALITIES.index(m)].bool() for m in modalities], 1)


def modality_image(batch: dict, modality: str, present: torch.Tensor, norm: tuple, channels: int | None = None,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """(B, C, H, W) input of one modality with absent samples (``present`` (B,) False) replaced by a black image;
    ``channels=3`` repeats a grey modality to three channels. ``norm`` = (mean, std) the batch was normalised with.
    The choice is a ``torch.where`` on the data, not a branch, so an exported graph is the same for any mask."""
    x = batch[modality]
    if dtype is not None:
        x = x.to(dtype)
    x = torch.where(present[:, None, None, None], x, black(norm[0], norm[1], x))
    if channels is not None and x.shape[1] != channels:
        if x.shape[1] != 1:
            raise ValueError(f"{modality}: cannot turn {x.shape[1]} channels into {channels}")
        x = x.expand(-1, channels, -1, -1)
    return x
