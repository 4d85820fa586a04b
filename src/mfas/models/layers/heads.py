"""Classification heads and input statistics shared by the baselines."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: (pixel - 127.5) / 128 in the [0, 1] units of the transforms: the MMDG benchmark loaders' scaling
HALF = (127.5 / 255, 128 / 255)
#: per-modality statistics for that scaling
HALF_STATS = {"rgb": ((HALF[0],) * 3, (HALF[1],) * 3), "depth": ((HALF[0],), (HALF[1],)),
              "ir": ((HALF[0],), (HALF[1],))}
#: inputs left in [0, 1] (CMFL's pipeline has no mean/std normalisation)
UNIT_STATS = {"rgb": ((0.0,) * 3, (1.0,) * 3), "depth": ((0.0,), (1.0,)), "ir": ((0.0,), (1.0,))}


def logits_from_probability(p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B,) P(bona fide) -> (B, 2) logits [0, logit(p)], whose softmax gives back p (for models that output a
    probability or a map, not two logits)."""
    p = p.float().clamp(eps, 1 - eps)  # in float32: bf16 rounds 1 - 1e-6 back to 1, and log1p(-1) is -inf
    return torch.stack([torch.zeros_like(p), torch.log(p) - torch.log1p(-p)], 1)


def logits_from_logit(z: torch.Tensor) -> torch.Tensor:
    """(B,) logit of bona fide -> (B, 2) logits [0, z]: softmax gives sigmoid(z), cross-entropy equals BCE."""
    return torch.stack([torch.zeros_like(z), z], 1)


class SSDGHead(nn.Module):
    """The head of SSDG that FLIP's ViT, FLIP-V and ViTAF reuse: Linear(D, 512) -> ReLU -> Dropout(0.5), a
    rescale f / (sqrt(|f|) sqrt(2)), then Linear(512, 2) whose weight columns are L2-normalised over the two
    classes on every forward (the released code writes the normalised weight back; using it is the same).
    Input (B, D) -> (B, 2) logits; ``embed`` returns the (B, 512) rescaled embedding."""

    def __init__(self, in_dim: int, dim: int = 512, drop: float = 0.5):
        super().__init__()
        self.embedder = nn.Linear(in_dim, dim)
        nn.init.normal_(self.embedder.weight, std=0.005)
        nn.init.constant_(self.embedder.bias, 0.1)
        self.drop = nn.Dropout(drop)
        self.classifier = nn.Linear(dim, 2)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        self.dim = dim

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        f = self.drop(F.relu(self.embedder(x)))
        return f / (f.norm(dim=1, keepdim=True).clamp_min(1e-12).sqrt() * 2 ** 0.5)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return F.linear(f, F.normalize(self.classifier.weight, dim=0), self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))
