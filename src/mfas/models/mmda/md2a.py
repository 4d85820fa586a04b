"""MD2A: modality-domain joint differential attention over the three modality tokens of a sample, with
the noise map computed from a same-domain partner's tokens; then the MoE block and the 3D -> D projection.

Shapes: tokens X (B, 3, D) in the order rgb, depth, ir; the partner's tokens X_d (B, 3, D); output v_0 (B, D).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mfas.models.mmda.moe import MoE


def lambda_init_for(depth: int) -> float:
    """The DiffTransformer initial lambda, 0.8 - 0.6 exp(-0.3 depth); MMDA evaluates it at depth 12."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class DomainDiffAttention(nn.Module):
    """(softmax(Q K^T s) - lambda softmax(Q' K'^T s)) V per head, heads concatenated, RMSNorm, times
    (1 - lambda_init). Q, K, V from the sample's tokens; Q', K' from the partner's tokens through their own
    projections; no output projection. ``scale`` defaults to 1/sqrt(dim) (not per head), as released.
    lambda = exp(<lq1, lk1>) - exp(<lq2, lk2>) + lambda_init, one scalar shared by all heads."""

    def __init__(self, dim: int, num_heads: int, lambda_depth: int = 12, dropout: float = 0.1,
                 scale: float | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by {num_heads} heads")
        self.num_heads, self.scale = num_heads, scale if scale is not None else dim ** -0.5
        self.q, self.k, self.v = (nn.Linear(dim, dim, bias=False) for _ in range(3))
        self.dq, self.dk = (nn.Linear(dim, dim, bias=False) for _ in range(2))
        self.lambda_init = lambda_init_for(lambda_depth)
        self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2 = (
            nn.Parameter(torch.empty(dim).normal_(std=0.1)) for _ in range(4))
        self.drop = nn.Dropout(dropout)
        self.norm = nn.RMSNorm(dim, eps=1e-5)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, H, N, d/H)

    def lam(self) -> torch.Tensor:
        """The current lambda (a scalar tensor)."""
        return (torch.exp((self.lambda_q1 * self.lambda_k1).sum().float())
                - torch.exp((self.lambda_q2 * self.lambda_k2).sum().float()) + self.lambda_init)

    def forward(self, x: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        dq, dk = self._heads(self.dq(partner)), self._heads(self.dk(partner))
        signal = self.drop((q @ k.transpose(-2, -1) * self.scale).softmax(-1))
        noise = self.drop((dq @ dk.transpose(-2, -1) * self.scale).softmax(-1))
        out = (signal - self.lam().to(x.dtype) * noise) @ v  # (B, H, N, d/H)
        out = out.transpose(1, 2).reshape(x.shape)
        return self.norm(out) * (1 - self.lambda_init)


class MD2A(nn.Module):
    """x1 = X + DiffAttn(LN1 X, LN1 X_d); x2 = MoE(LN2 x1); out = X + x1 + x2 (the released double residual);
    then flatten (B, 3D) -> Linear -> v_0 (B, D). Returns (v_0, MoE auxiliary loss)."""

    def __init__(self, dim: int, num_heads: int, num_tokens: int = 3, lambda_depth: int = 12,
                 dropout: float = 0.1, eval_routing: str = "deterministic"):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = DomainDiffAttention(dim, num_heads, lambda_depth, dropout)
        self.moe = MoE(dim, eval_routing=eval_routing)
        self.proj = nn.Linear(num_tokens * dim, dim)

    def forward(self, x: torch.Tensor, partner: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = x + self.attn(self.ln1(x), self.ln1(partner))
        x2, aux = self.moe(self.ln2(x1))
        out = x + x1 + x2
        return self.proj(out.flatten(1)), aux


def first_same_domain(domains: Sequence[str]) -> torch.Tensor:
    """(B,) index of the first sample of the batch with the same domain (possibly the sample itself): the
    released code's partner rule, in training and at test."""
    first: dict[str, int] = {}
    return torch.tensor([first.setdefault(d, i) for i, d in enumerate(domains)], dtype=torch.long)


def random_same_domain(domains: Sequence[str], generator: torch.Generator | None = None) -> torch.Tensor:
    """(B,) index of a uniformly chosen *other* sample of the same domain in the batch; the sample itself
    when it is alone in its domain (the paper's "batch reorganise ... retain")."""
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(domains):
        groups.setdefault(d, []).append(i)
    out = torch.arange(len(domains))
    for members in groups.values():
        if len(members) < 2:
            continue
        for pos, i in enumerate(members):
            r = int(torch.randint(len(members) - 1, (1,), generator=generator))
            out[i] = members[r + (r >= pos)]
    return out
