"""Deep fusion of the three modal token sequences: switch-, merge- and cross-attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention, Mlp
from timm.models.vision_transformer import Block
from torch import nn

MODE_LETTERS = {"R": "rgb", "D": "depth", "I": "ir"}
SWITCH_MODES = ("RDI", "RID", "DRI", "DIR", "IRD", "IDR")


class CrossAttention(nn.Module):
    """Multi-head attention with queries from ``q`` (B, Tq, D) and keys/values from ``k``, ``v`` (B, Tk, D)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.h = num_heads
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, tq, d = q.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(b, -1, self.h, d // self.h).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(q)), heads(self.k(k)), heads(self.v(v)))
        return self.proj(out.transpose(1, 2).reshape(b, tq, d))


class SwitchBlock(nn.Module):
    """Pre-norm ViT block whose attention takes its queries, keys and values from given streams.

    ``forward(x, q, k, v)``: ``x`` (B, T, D) is the stream the block updates (its residual and FFN, as in
    ViT); ``q`` (B, T, D) and ``k``, ``v`` (B, Tk, D) feed the attention. ``None`` for any of them means
    ``x`` itself (after the optional self-attention). Output: the updated ``x`` (B, T, D).
    ``self_attn``: a self-attention sub-layer on ``x`` before the switched attention; not in the paper,
    see docs/models/mmfas.md (it is what the paper's 15.63M count needs).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, self_attn: bool = True):
        super().__init__()
        self.norm_self = nn.LayerNorm(dim, eps=1e-6) if self_attn else None
        self.self_attn = Attention(dim, num_heads, qkv_bias=True) if self_attn else None
        self.norm_q, self.norm_k, self.norm_v = (nn.LayerNorm(dim, eps=1e-6) for _ in range(3))
        self.cross = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, q: torch.Tensor | None = None, k: torch.Tensor | None = None,
                v: torch.Tensor | None = None) -> torch.Tensor:
        if self.self_attn is not None:
            x = x + self.self_attn(self.norm_self(x))
        q, k, v = (x if t is None else t for t in (q, k, v))
        x = x + self.cross(self.norm_q(q), self.norm_k(k), self.norm_v(v))
        return x + self.mlp(self.norm_mlp(x))


def switch_order(mode: str, layer: int) -> tuple[str, str, str]:
    """The (query, key, value) modalities of block ``layer``: ``mode`` left-shifted by ``layer % 3``.

    RDI gives (rgb, depth, ir), then (depth, ir, rgb), then (ir, rgb, depth), and again.
    """
    if mode not in SWITCH_MODES:
        raise ValueError(f"switch mode must be one of {', '.join(SWITCH_MODES)}, got {mode!r}")
    s = layer % 3
    rotated = mode[s:] + mode[:s]
    return tuple(MODE_LETTERS[c] for c in rotated)  # type: ignore[return-value]


class SwitchFusion(nn.Module):
    """``depth`` switch blocks over one branch, the RGB stream; depth and IR are never changed.

    Block ``l`` attends with queries, keys and values taken from the modalities of
    ``switch_order(mode, l)`` (the current RGB stream wherever RGB is named) and adds the result, then the
    FFN, to the RGB stream: x_rgb <- x_rgb + Attn(Q, K, V); x_rgb <- x_rgb + FFN(x_rgb). The paper: "maintain
    only a single modality branch" and "we update the output of each layer to the color feature while
    keeping the other two modal features unchanged" (residuals and FFN "the same as the original ViT").

    Input: {modality: (B, T, D)}; output: (B, D), the mean of the three streams' class tokens after fusion.
    """

    def __init__(self, dim: int, depth: int = 6, num_heads: int = 6, mlp_ratio: float = 4.0, mode: str = "RDI",
                 self_attn: bool = True):
        super().__init__()
        switch_order(mode, 0)
        self.mode = mode
        self.blocks = nn.ModuleList(SwitchBlock(dim, num_heads, mlp_ratio, self_attn) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        x = streams["rgb"]
        for layer, block in enumerate(self.blocks):
            q, k, v = (None if m == "rgb" else streams[m] for m in switch_order(self.mode, layer))
            x = block(x, q, k, v)
        cls = [self.norm(x)[:, 0], streams["depth"][:, 0], streams["ir"][:, 0]]
        return torch.stack(cls).mean(0)


class MergeFusion(nn.Module):
    """Merge-attention: one stream of the three modalities stacked along channels (width 3D), ``depth`` ViT
    blocks at that width, then a linear map of the class token back to D."""

    def __init__(self, dim: int, depth: int = 6, head_dim: int = 45, mlp_ratio: float = 4.0):
        super().__init__()
        wide = 3 * dim
        self.blocks = nn.Sequential(*[Block(wide, wide // head_dim, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(wide, eps=1e-6)
        self.out = nn.Linear(wide, dim)

    def forward(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        x = torch.cat([streams[m] for m in ("rgb", "depth", "ir")], dim=-1)
        return self.out(self.norm(self.blocks(x))[:, 0])


class CrossFusion(nn.Module):
    """Cross-attention: one branch per modality; each branch's blocks attend from its own stream to the other
    two streams' tokens (concatenated). Output: mean of the three branches' class tokens."""

    def __init__(self, dim: int, depth: int = 6, num_heads: int = 6, mlp_ratio: float = 4.0):
        super().__init__()
        mods = ("rgb", "depth", "ir")
        self.branches = nn.ModuleDict({m: nn.ModuleList(SwitchBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
                                       for m in mods})
        self.norms = nn.ModuleDict({m: nn.LayerNorm(dim, eps=1e-6) for m in mods})

    def forward(self, streams: dict[str, torch.Tensor]) -> torch.Tensor:
        s = dict(streams)
        for layer in range(len(self.branches["rgb"])):
            new = {}
            for m, blocks in self.branches.items():
                ctx = torch.cat([s[o] for o in self.branches if o != m], dim=1)
                new[m] = blocks[layer](s[m], None, ctx, ctx)
            s = new
        return torch.stack([self.norms[m](s[m][:, 0]) for m in self.branches]).mean(0)
