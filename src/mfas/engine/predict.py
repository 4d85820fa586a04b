"""Inference on new captures from a bundle: ``mfas.load(run).predict(rgb=..., depth=..., ir=...)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mfas.conventions import MODALITIES, MODALITY_CHANNELS
from mfas.data.images import MAX_PIXELS, conform, read_image
from mfas.data.transforms import eval_transform
from mfas.engine.io import load_bundle
from mfas.errors import DataError, MfasError


@dataclass(frozen=True)
class Prediction:
    score: float  # P(bona fide)
    decision: str  # "bonafide" or "attack" at the bundle's threshold
    threshold: float
    policy: str  # how the threshold was chosen
    modalities: tuple[str, ...]  # the modalities that were used

    @property
    def is_bonafide(self) -> bool:
        return self.decision == "bonafide"


class Predictor:
    """A trained model with its preprocessing and operating point. Deterministic, batch-independent."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu"):
        self.model, self.meta = load_bundle(path)
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        pre = self.meta["preprocessing"]
        self.size = tuple(pre["input_size"])
        self.modalities = tuple(pre["modalities"])
        self.norm = {m: (tuple(v["mean"]), tuple(v["std"])) for m, v in pre["norm"].items()}
        self.transform = eval_transform(self.size, self.norm)
        self.threshold = float(self.meta["threshold"]["value"])
        self.policy = str(self.meta["threshold"]["policy"])

    def _load(self, m: str, image: object) -> torch.Tensor:
        """uint8 C x H x W tensor of one modality, checked like store inputs."""
        if isinstance(image, str | Path):
            img = read_image(image, m)
        else:
            img = conform(np.asarray(image), m, f"{m} array")
            if img.shape[0] * img.shape[1] > MAX_PIXELS:
                raise DataError(f"{m} array", f"image of {img.shape[1]}x{img.shape[0]} exceeds the pixel limit")
        t = torch.from_numpy(np.array(img, copy=True))
        return t.permute(2, 0, 1) if t.ndim == 3 else t[None]

    @torch.no_grad()
    def predict(self, rgb: object = None, depth: object = None, ir: object = None) -> Prediction:
        """Score one presentation. Images: file paths or uint8 arrays (RGB order, H x W x 3 / H x W)."""
        given = {"rgb": rgb, "depth": depth, "ir": ir}
        used = tuple(m for m in MODALITIES if given[m] is not None and m in self.modalities)
        if not used:
            raise MfasError(f"no input for any of the model's modalities ({', '.join(self.modalities)})")
        ignored = [m for m in MODALITIES if given[m] is not None and m not in self.modalities]
        if ignored:
            raise MfasError(f"the model does not use {', '.join(ignored)}; it takes {', '.join(self.modalities)}")
        absent = [m for m in self.modalities if m not in used]
        if absent and not self.meta.get("supports_missing", False):
            raise MfasError(f"this model needs {', '.join(self.modalities)}; missing: {', '.join(absent)}")
        shapes = {m: self._load(m, given[m]) for m in used}
        sizes = {tuple(t.shape[-2:]) for t in shapes.values()}
        if len(sizes) > 1:
            sizes_txt = ", ".join(f"{m} {tuple(t.shape[-2:])}" for m, t in shapes.items())
            raise MfasError(f"the modalities differ in size ({sizes_txt}); give pixel-aligned images of one size")
        h, w = next(iter(sizes))
        item: dict = {m: shapes.get(m, torch.zeros(MODALITY_CHANNELS[m], h, w, dtype=torch.uint8)) for m in MODALITIES}
        item["present"] = torch.tensor([m in used for m in MODALITIES])
        # the evaluation transform of the engine, so a prediction equals the run's own scores
        item = self.transform(item)
        batch = {k: (v[None].to(self.device) if torch.is_tensor(v) else v) for k, v in item.items()}
        score = float(self.model(batch).score[0])
        return Prediction(score=score, decision="bonafide" if score >= self.threshold else "attack",
                          threshold=self.threshold, policy=self.policy, modalities=used)


def load(path: str | Path, device: str = "cpu") -> Predictor:
    """Load a run folder or bundle for inference. Nothing is unpickled."""
    return Predictor(path, device)
