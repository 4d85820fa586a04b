"""Multiple-level alignment (training only): instance contrastive learning and class matching."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CM_MODES = ("none", "random", "hard")


def icl_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between paired features ``a`` (N, D) and ``b`` (N, D): sample i of ``a`` matches
    sample i of ``b``; the mean of the a->b and b->a cross-entropies. ``logit_scale`` = log(1 / tau)."""
    za, zb = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = logit_scale.float().clamp(max=math.log(100.0)).exp() * za @ zb.T
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def mine_pairs(sim: torch.Tensor, labels: torch.Tensor, mode: str = "hard",
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs (anchor i in modality A, partner j in modality B) for class matching.

    For every anchor i: one negative (a j of the other class) and one positive (a j != i of the same class).
    ``mode="hard"``: the negative with the *highest* similarity ``sim[i, j]`` and the positive with the
    *lowest* (hard negative and hard positive mining); ``mode="random"``: uniformly chosen ones. Anchors
    without a candidate (no other class, or alone in its class) give no pair of that kind, so a balanced
    batch gives 2N pairs. Returns (i, j, same) with ``same`` = 1 for positive pairs.
    """
    n = sim.shape[0]
    same_cls = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=sim.device)
    neg_ok, pos_ok = ~same_cls, same_cls & ~eye
    if mode == "hard":
        neg_score = sim.masked_fill(~neg_ok, float("-inf"))
        pos_score = (-sim).masked_fill(~pos_ok, float("-inf"))
    elif mode == "random":
        noise = torch.rand(n, n, device=sim.device, generator=generator)
        neg_score = noise.masked_fill(~neg_ok, float("-inf"))
        pos_score = noise.masked_fill(~pos_ok, float("-inf"))
    else:
        raise ValueError(f"pair mining mode must be 'hard' or 'random', got {mode!r}")
    out_i, out_j, out_y = [], [], []
    for score, ok, y in ((neg_score, neg_ok, 0), (pos_score, pos_ok, 1)):
        has = ok.any(1)
        i = torch.nonzero(has).squeeze(1)
        out_i.append(i)
        out_j.append(score[i].argmax(1))
        out_y.append(torch.full_like(i, y))
    return torch.cat(out_i), torch.cat(out_j), torch.cat(out_y)


class AlignmentModule(nn.Module):
    """RGB <-> one other modality: a learnable temperature for ICL and the matching predictor for CM.

    The matching predictor is the paper's "540-wide FC" read as an MLP of that width: the concatenated pair
    (2 x dim = 540) -> Linear(540, 540) -> ReLU -> Linear(540, 2) over {different class, same class}. A single
    linear layer scores a(x_i) + b(x_j) and so cannot express "same class" (an XOR of the two labels).
    """

    def __init__(self, dim: int, icl: bool = True, cm: str = "hard", tau_init: float = 0.07):
        super().__init__()
        if cm not in CM_MODES:
            raise ValueError(f"cm must be one of {CM_MODES}, got {cm!r}")
        self.icl, self.cm = icl, cm
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / tau_init))) if icl else None
        self.matcher = nn.Sequential(nn.Linear(2 * dim, 2 * dim), nn.ReLU(inplace=True), nn.Linear(2 * dim, 2)) \
            if cm != "none" else None

    def forward(self, rgb: torch.Tensor, other: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """``rgb``, ``other``: (N, D) global features of the same N samples; returns the loss terms."""
        out: dict[str, torch.Tensor] = {}
        if rgb.shape[0] < 2:
            return out
        if self.icl:
            out["icl"] = icl_loss(rgb, other, self.logit_scale)
        if self.matcher is not None:
            with torch.no_grad():
                sim = F.normalize(rgb.float(), dim=-1) @ F.normalize(other.float(), dim=-1).T
            i, j, same = mine_pairs(sim, labels, "hard" if self.cm == "hard" else "random")
            if i.numel():
                logits = self.matcher(torch.cat([rgb[i], other[j]], dim=-1))
                out["cm"] = F.cross_entropy(logits.float(), same)
        return out
