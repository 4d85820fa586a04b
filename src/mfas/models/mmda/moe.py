"""The MoE block MMDA uses everywhere (MD2A, every U-DSA level, the classifier).

Seven experts: four GEGLU feed-forward experts and three constant experts (a learned vector each); a
bias-free linear router with softmax, top-2, and the ST-MoE rule of sending a token to its second expert
with probability min(1, g2 / threshold). Auxiliary losses (training only): the switch balance loss and
the router z-loss, weighted 1e-2 and 1e-3.

No token is ever dropped for capacity: MMDA's sequences are at most 3 tokens long and the released
code's minimum capacity is 4, so capacity is not modelled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ROUTING = ("stochastic", "deterministic")


class GEGLU(nn.Module):
    """``gelu(gate) * x * mult_bias`` on the two halves ``[x, gate]`` of the last axis."""

    def __init__(self, dim: int):
        super().__init__()
        self.mult_bias = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = x.chunk(2, dim=-1)
        return F.gelu(gate) * x * self.mult_bias


class FFNExpert(nn.Module):
    """RMSNorm -> Linear(dim, 2h) -> GEGLU -> Linear(h, dim), with h = int(dim * mult * 2 / 3)."""

    def __init__(self, dim: int, mult: float = 4.0):
        super().__init__()
        hidden = int(dim * mult * 2 / 3)
        self.net = nn.Sequential(nn.RMSNorm(dim, eps=1e-5), nn.Linear(dim, 2 * hidden), GEGLU(hidden),
                                 nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConstantExpert(nn.Module):
    """Outputs one learned vector whatever the input."""

    def __init__(self, dim: int):
        super().__init__()
        self.const = nn.Parameter(torch.empty(dim).normal_(std=0.02))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.const.expand_as(x)


class MoE(nn.Module):
    """Top-2 mixture of ``n_ffn`` GEGLU experts and ``n_const`` constant experts.

    ``forward(x)`` with x (B, N, D) returns (y (B, N, D), aux) where aux is the weighted auxiliary loss
    (a zero scalar outside training). The balance loss is computed per row b over its N tokens and then
    averaged, as in the released code, so it is the same for any layout that keeps rows intact.

    Routing of the second expert: in training always stochastic (probability min(1, g2 / threshold));
    at eval ``eval_routing="stochastic"`` keeps that (the released code) and ``"deterministic"`` routes
    exactly when g2 >= threshold, so inference is repeatable.
    """

    def __init__(self, dim: int, n_ffn: int = 4, n_const: int = 3, mult: float = 4.0, threshold: float = 0.2,
                 balance_coef: float = 1e-2, z_coef: float = 1e-3, eval_routing: str = "deterministic"):
        super().__init__()
        if eval_routing not in ROUTING:
            raise ValueError(f"eval_routing must be one of {ROUTING}, got {eval_routing!r}")
        self.experts = nn.ModuleList([FFNExpert(dim, mult) for _ in range(n_ffn)]
                                     + [ConstantExpert(dim) for _ in range(n_const)])
        self.router = nn.Linear(dim, len(self.experts), bias=False)
        self.threshold, self.balance_coef, self.z_coef = threshold, balance_coef, z_coef
        self.eval_routing = eval_routing

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_exp = len(self.experts)
        logits = self.router(x)  # (B, N, E)
        probs = logits.float().softmax(-1)
        top, idx = probs.topk(2, dim=-1)  # (B, N, 2)
        gates = top / top.sum(-1, keepdim=True).clamp_min(1e-9)
        g2 = gates[..., 1]
        if self.training or self.eval_routing == "stochastic":
            route2 = torch.rand_like(g2) < g2 / self.threshold
        else:
            route2 = g2 >= self.threshold
        gates = torch.stack([gates[..., 0], g2 * route2], dim=-1).to(x.dtype)
        # combine[b, n, e]: the weight of expert e for token (b, n); zero for experts not routed to
        combine = torch.zeros(*x.shape[:-1], n_exp, dtype=x.dtype, device=x.device).scatter_add(-1, idx, gates)
        # every expert runs on every token (at most 3 tokens per row): no host sync, and every parameter
        # takes part in the graph, which DDP needs
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            w = combine[..., e:e + 1]
            # straight-through dispatch (as the released code): value x, gradient also through the gate
            y = y + w * expert(x * (1 + w - w.detach()))
        if not self.training:
            return y, x.new_zeros(())
        density = F.one_hot(idx[..., 0], n_exp).float().mean(-2)  # (B, E): share of tokens whose top-1 is e
        proxy = probs.mean(-2)
        balance = (density * proxy).mean() * n_exp ** 2
        z = torch.logsumexp(logits.float(), dim=-1).square().mean()
        return y, (self.balance_coef * balance + self.z_coef * z).to(x.dtype)
