"""The MoE block MMDA uses everywhere (MD2A, every U-DSA level, the classifier).

Seven experts: four GEGLU feed-forward experts (RMS pre-norm with eps 1e-6, the released default) and three
constant experts (a learned vector each); a bias-free linear router with softmax, top-2, and the ST-MoE rule
of sending a token to its second expert with probability min(1, g2 / threshold). Auxiliary losses (training
only): the switch balance loss and the router z-loss, weighted 1e-2 and 1e-3.

No token is ever dropped for capacity: MMDA's sequences are at most 3 tokens long and the released
code's minimum capacity is 4, so capacity is not modelled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ROUTING = ("stochastic", "deterministic")


class MoE(nn.Module):
    """Top-2 mixture of ``n_ffn`` GEGLU experts and ``n_const`` constant experts.

    ``forward(x)`` with x (..., D) returns (y (..., D), aux) where aux is the weighted auxiliary loss
    (a zero scalar outside training). The balance loss is computed per row over the second-to-last axis
    and then averaged, as in the released code (its layout is (B, N, D)).

    The FFN experts are stored stacked (``w1`` (E, D, 2H), ``w2`` (E, H, D), ...) and run as batched matrix
    products: expert e is RMSNorm(gamma_e) -> Linear(D, 2H) -> GEGLU(mult_bias_e) -> Linear(H, D) with
    H = int(D * mult * 2 / 3), the same parameters as E separate modules in far fewer kernel launches.

    Routing of the second expert: in training always stochastic (probability min(1, g2 / threshold));
    at eval ``eval_routing="stochastic"`` keeps that (the released code) and ``"deterministic"`` routes
    exactly when g2 >= threshold, so inference is repeatable.

    ``norm_eps``: the epsilon of the experts' RMS pre-norm, x / sqrt(mean(x^2) + eps); 1e-6 is what the released
    experts use (their ``RMSNorm(dim)`` keeps the default eps), in both compat modes.
    """

    def __init__(self, dim: int, n_ffn: int = 4, n_const: int = 3, mult: float = 4.0, threshold: float = 0.2,
                 balance_coef: float = 1e-2, z_coef: float = 1e-3, eval_routing: str = "deterministic",
                 norm_eps: float = 1e-6):
        super().__init__()
        if eval_routing not in ROUTING:
            raise ValueError(f"eval_routing must be one of {ROUTING}, got {eval_routing!r}")
        hidden = int(dim * mult * 2 / 3)
        self.n_ffn, self.n_experts = n_ffn, n_ffn + n_const
        self.norm_weight = nn.Parameter(torch.ones(n_ffn, dim))
        self.w1 = nn.Parameter(torch.empty(n_ffn, dim, 2 * hidden).uniform_(-dim ** -0.5, dim ** -0.5))
        self.b1 = nn.Parameter(torch.empty(n_ffn, 2 * hidden).uniform_(-dim ** -0.5, dim ** -0.5))
        self.mult_bias = nn.Parameter(torch.ones(n_ffn, hidden))
        self.w2 = nn.Parameter(torch.empty(n_ffn, hidden, dim).uniform_(-hidden ** -0.5, hidden ** -0.5))
        self.b2 = nn.Parameter(torch.empty(n_ffn, dim).uniform_(-hidden ** -0.5, hidden ** -0.5))
        self.const = nn.Parameter(torch.empty(n_const, dim).normal_(std=0.02))
        self.router = nn.Linear(dim, self.n_experts, bias=False)
        self.threshold, self.balance_coef, self.z_coef = threshold, balance_coef, z_coef
        self.eval_routing, self.norm_eps = eval_routing, norm_eps

    def no_weight_decay(self) -> set[str]:
        """The stacked per-expert biases, norm weights and GEGLU multiplicative biases, and the constant experts:
        2-D only because they are stacked over experts, so the generic 1-D rule does not see them."""
        return {"b1", "b2", "norm_weight", "mult_bias", "const"}

    def ffn(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Outputs (E, T, D) of the FFN experts on tokens x (T, D); ``scale`` (E, T) multiplies each expert's
        input (the straight-through dispatch) before its norm."""
        xin = x[None] if scale is None else x[None] * scale[..., None]
        h = torch.rms_norm(xin, (x.shape[-1],), eps=self.norm_eps) * self.norm_weight[:, None]
        h = torch.baddbmm(self.b1[:, None], h, self.w1)
        a, gate = h.chunk(2, dim=-1)
        h = F.gelu(gate) * a * self.mult_bias[:, None]
        return torch.baddbmm(self.b2[:, None], h, self.w2)

    def forward(self, x: torch.Tensor, groups: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``groups``: sizes along the first axis of inputs that stand for separate calls (e.g. the visual rows and
        the two prompt sets of one U-DSA level): the outputs and the routing draws are those of the separate calls
        in that order, and aux is the sum of their auxiliary losses; only the products are batched."""
        shape, n_exp = x.shape, self.n_experts
        sizes = [shape[0]] if groups is None else [int(g) for g in groups]
        if sum(sizes) != shape[0] or any(g < 1 for g in sizes):
            raise ValueError(f"MoE groups {sizes} do not split the {shape[0]} rows of the input")
        logits = self.router(x)  # (..., E)
        probs = logits.float().softmax(-1)
        top, idx = probs.topk(2, dim=-1)
        gates = top / top.sum(-1, keepdim=True).clamp_min(1e-9)
        g2 = gates[..., 1]
        if self.training or self.eval_routing == "stochastic":
            route2 = torch.rand_like(g2) < g2 / self.threshold
        else:
            route2 = g2 >= self.threshold
        gates = torch.stack([gates[..., 0], g2 * route2], dim=-1).to(x.dtype)
        # combine[..., e]: the weight of expert e for each token; zero for experts not routed to
        combine = torch.zeros(*shape[:-1], n_exp, dtype=x.dtype, device=x.device).scatter_add(-1, idx, gates)
        tokens, w = x.reshape(-1, shape[-1]), combine.reshape(-1, n_exp)
        # every expert runs on every token (at most 3 tokens per row): no host sync, and every parameter
        # takes part in the graph, which DDP needs; straight-through dispatch (as released): the expert
        # input is x (1 + w - stop_grad(w)), so the gate also gets the gradient through the input
        wf = w[:, : self.n_ffn].T
        out = self.ffn(tokens, 1 + wf - wf.detach())
        y = torch.einsum("te,etd->td", w[:, : self.n_ffn], out) + w[:, self.n_ffn:] @ self.const
        y = y.reshape(shape)
        if not self.training:
            return y, x.new_zeros(())
        density = F.one_hot(idx[..., 0], n_exp).float().mean(-2)  # share of a row's tokens whose top-1 is e
        proxy = probs.mean(-2)
        lse2 = torch.logsumexp(logits.float(), dim=-1).square()
        aux = None
        for d, p, z2 in zip(density.split(sizes), proxy.split(sizes), lse2.split(sizes), strict=True):
            term = (self.balance_coef * ((d * p).mean() * n_exp ** 2) + self.z_coef * z2.mean()).to(x.dtype)
            aux = term if aux is None else aux + term
        return y, aux
