"""MMDG's uncertainty-guided cross-modal adapter (U-Adapter) and the Monte-Carlo-dropout certainty it reads."""

from __future__ import annotations

import math

import torch
from torch import nn

from mfas.models.layers.cdc import CDConv2d


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def expected_dropout_std(samples: int, p: float) -> float:
    """E[sample std] of ``samples`` dropout draws of the value 1 (kept with probability 1 - p, scaled by 1/(1 - p)),
    exactly, over the Binomial number of draws that keep it."""
    return sum(w * c for w, c in _std_terms(samples, p))


def _std_terms(samples: int, p: float) -> list[tuple[float, float]]:
    """(probability, std factor) of each number k of draws that keep an element: the draws' unbiased std is
    |a| times the factor sqrt(k (samples - k) / (samples (samples - 1))) / (1 - p)."""
    q = 1 - p
    return [(math.comb(samples, k) * q ** k * p ** (samples - k),
             math.sqrt(k * (samples - k) / (samples * (samples - 1))) / q) for k in range(samples + 1)]


def certainty(a: torch.Tensor, p: float = 0.3, samples: int = 20, rate: float = 2.25, sampled: bool = True,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """exp(-rate * std) of ``samples`` Monte-Carlo dropout draws of ``a`` (B, N, D), averaged over D -> (B, N).

    The draws are not materialised: dropout keeps an element in k ~ Binomial(samples, 1 - p) of the draws, and
    the unbiased std of those draws is |a| / (1 - p) * sqrt(k (samples - k) / (samples (samples - 1))), the
    same distribution as drawing them. ``sampled=False`` gives the expectation of exp(-rate * std) over k
    instead (exact, a sum over the samples + 1 values of k): deterministic, and a sample's value does not depend
    on its batch (used at inference)."""
    a = a.detach().float()
    if sampled:
        k = torch.binomial(torch.full_like(a, float(samples)), torch.full_like(a, 1 - p), generator=generator)
        std = a.abs() / (1 - p) * torch.sqrt(k * (samples - k) / (samples * (samples - 1)))
        return torch.exp(-rate * std).mean(-1)
    mag = a.abs()
    return sum(w * torch.exp(-rate * c * mag) for w, c in _std_terms(samples, p) if w > 0).mean(-1)


class UAdapter(nn.Module):
    """Writes into modality ``own``'s stream what its tokens hold for the other modality's queries.

    ``forward(own, other, cert)``: own and other tokens (B, 1 + h*w, D) after the block's second norm, the other
    modality's certainty (B, 1 + h*w) -> (B, 1 + h*w, D). Down-projections to ``dim`` (QuickGELU); attention with
    ``dim`` heads of width 1, queries from the other modality, keys and values from this one, each query's
    logits multiplied by its certainty (an uncertain query attends more evenly); residual to the own tokens and a
    LayerNorm; a central difference convolution on the token grid (the class token as a 1x1 map); QuickGELU,
    dropout and a zero-initialised up-projection, so the block starts as the pretrained one.
    """

    def __init__(self, width: int, grid: tuple[int, int], dim: int = 8, theta: float = 0.5, drop: float = 0.2):
        super().__init__()
        self.grid, self.dim = grid, dim
        self.down_own, self.down_other = nn.Linear(width, dim), nn.Linear(width, dim)
        for lin in (self.down_own, self.down_other):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.cdc = CDConv2d(dim, dim, 3, padding=1, theta=theta)
        self.drop = nn.Dropout(drop)
        self.up = nn.Linear(dim, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, own: torch.Tensor, other: torch.Tensor, cert: torch.Tensor) -> torch.Tensor:
        b, n, _ = own.shape
        d1, d2 = quick_gelu(self.down_own(own)), quick_gelu(self.down_other(other))
        q = self.q(d2).transpose(1, 2).unsqueeze(-1)  # (B, heads = dim, N, 1)
        k = self.k(d1).transpose(1, 2).unsqueeze(-1)
        v = self.v(d1).transpose(1, 2).unsqueeze(-1)
        logits = (q @ k.transpose(-1, -2)) * cert[:, None, :, None].to(q.dtype)  # head width 1: scale 1
        att = (logits.softmax(-1) @ v).squeeze(-1).transpose(1, 2)  # (B, N, dim)
        r = self.norm(self.proj(att) + d1)
        h, w = self.grid
        grid = r[:, 1:].transpose(1, 2).reshape(b, self.dim, h, w)
        cls = r[:, :1].transpose(1, 2).reshape(b, self.dim, 1, 1)
        z = torch.cat([self.cdc(cls).flatten(2), self.cdc(grid).flatten(2)], 2).transpose(1, 2)
        return self.up(self.drop(quick_gelu(z)))


def regrad(own: list[torch.Tensor | None], ssp: dict[str, list[torch.Tensor | None]], modality: str, fast: str | None,
           cert: dict[str, float]) -> list[torch.Tensor | None]:
    """ReGrad's modulated gradient of the single-side prototype losses for the parameters of ``modality``'s
    branch: ``ssp[m][i]`` is the gradient of modality m's loss for parameter i (``own = ssp[modality]``).

    A slow branch keeps its own gradient and takes from each other modality's gradient the part along its own
    (when they agree) or the part orthogonal to it (when they conflict), weighted by that modality's certainty.
    The fast branch (the one with the lowest running loss) keeps of its own gradient the part along the others'
    sum (agreeing) or orthogonal to it (conflicting), weighted by its certainty, plus the others' gradients.
    """

    def proj(b: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return (g * b).sum() / (b.pow(2).sum() + 1e-8) * b

    out: list[torch.Tensor | None] = []
    others = [m for m in ssp if m != modality]
    for i, g_own in enumerate(own):
        g_others = {m: ssp[m][i] for m in others if ssp[m][i] is not None}
        if g_own is None and not g_others:
            out.append(None)
            continue
        g_own = g_own if g_own is not None else torch.zeros_like(next(iter(g_others.values())))
        # torch.where on the dot product, not a Python branch: no host synchronisation per parameter on a GPU
        if modality == fast:
            s = sum(g_others.values(), torch.zeros_like(g_own))
            along = proj(s, g_own)
            part = torch.where((g_own * s).sum() > 0, along, g_own - along)
            out.append(cert[modality] * part + s)
        else:
            total = g_own.clone()
            for m, g in g_others.items():
                along = proj(g_own, g)
                total = total + cert[m] * torch.where((g_own * g).sum() > 0, along, g - along)
            out.append(total)
    return out
