"""Grad-CAM of a trained run: heat maps per modality on each modality's patch tokens, and their figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mfas.conventions import MODALITIES
from mfas.data.transforms import Compose
from mfas.engine.predict import Predictor, model_transform
from mfas.engine.resolve import safe_name
from mfas.engine.samples import batch_of_one, find_samples
from mfas.errors import MfasError
from mfas.models.base import PadModel
from mfas.protocols import StoreSet


def grad_cam(model: PadModel, batch: dict, target: int = 1) -> dict[str, torch.Tensor]:
    """Grad-CAM of logit ``target`` (1 = bona fide) on each modality's token map.

    Weights are the token-averaged gradients of each channel; the map is ReLU(sum_c w_c A_c) over the patch
    tokens, reshaped to the patch grid, upsampled to the input size and scaled to [0, 1] per sample.
    Returns {modality: (B, H, W)}.
    """
    try:
        layers = model.cam_layers()
    except NotImplementedError as e:
        raise MfasError(f"{e}; Grad-CAM needs one token map per modality") from None
    acts: dict[str, torch.Tensor] = {}
    hooks = [layer.register_forward_hook(lambda _m, _i, out, k=k: acts.__setitem__(k, out))
             for k, layer in layers.items()]
    try:
        model.eval()
        with torch.enable_grad():
            out = model(batch)
            keys = [k for k, a in acts.items() if a.requires_grad]
            # gradients of the activations only: the weights' .grad stay untouched
            grads = torch.autograd.grad(out.logits[:, target].sum(), [acts[k] for k in keys], allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
    maps = {}
    for m, g in zip(keys, grads, strict=True):
        if g is None:
            continue
        tokens, g = acts[m][:, 1:].detach(), g[:, 1:]
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise MfasError(f"{m}: {tokens.shape[1]} patch tokens do not form a square grid")
        cam = F.relu((g.mean(1, keepdim=True) * tokens).sum(-1)).reshape(-1, 1, side, side)
        cam = F.interpolate(cam, size=batch[m].shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        maps[m] = cam / peak
    return maps


def _display(t: torch.Tensor) -> np.ndarray:
    a = t.float().numpy().clip(0, 1)  # [0, 1] floats at the model's input size
    return a.transpose(1, 2, 0) if a.shape[0] == 3 else a[0]


def explain_samples(run: Path, sample_ids: Sequence[str], out: Path, stores: StoreSet) -> list[Path]:
    """Write, per sample, the original images (``<id>_<m>.png``, at the model's input size), the Grad-CAM
    heat maps per modality (``<id>_<m>_cam.png``) and one overview figure (``<id>.png``); returns the overviews.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = Predictor(run)
    transform = model_transform(pred.model)
    geometry = Compose(transform.steps[:2])  # ToFloat, Resize (not normalised): what the model saw
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (_, raw), sid in zip(find_samples(stores, sample_ids), sample_ids, strict=True):
        batch = batch_of_one(transform(dict(raw)))
        maps = grad_cam(pred.model, batch)
        with torch.no_grad():
            score = float(pred.model(batch).score[0])
        resized = geometry(dict(raw))
        mods = [m for m in MODALITIES if m in maps]
        fig, axes = plt.subplots(2, len(mods), figsize=(3 * len(mods), 6.2), squeeze=False)
        safe = safe_name(sid)
        for j, m in enumerate(mods):
            img = _display(resized[m])
            cam = maps[m][0].numpy()
            plt.imsave(out / f"{safe}_{m}.png", img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            plt.imsave(out / f"{safe}_{m}_cam.png", cam, cmap="jet", vmin=0, vmax=1)
            present = bool(raw["present"][MODALITIES.index(m)])
            axes[0, j].imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            axes[0, j].set_title(f"{m}" + ("" if present else " (absent)"))
            axes[1, j].imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            axes[1, j].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[1, j].set_title("Grad-CAM (bona fide logit)")
            for a in axes[:, j]:
                a.axis("off")
        label = "bona fide" if int(raw["label"]) == 1 else f"attack ({raw.get('pai', '?')})"
        fig.suptitle(f"{sid}: {label}; score {score:.3f}, threshold {pred.threshold:.3f}")
        fig.tight_layout()
        fig.savefig(out / f"{safe}.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{safe}.png")
    return written
