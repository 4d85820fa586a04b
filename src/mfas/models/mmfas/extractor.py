"""The per-modality ViT feature extractor of mmFAS (depth 3, width 270 in the paper)."""

from __future__ import annotations

import math

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn


def sincos_1d(n: int, dim: int) -> torch.Tensor:
    """(n, dim) fixed sinusoidal position table of the original Transformer; ``dim`` must be even.

    1-D over the token index because the paper's width 270 is not divisible by 4, which 2-D sin-cos needs.
    """
    if dim % 2:
        raise ValueError(f"sin-cos position embedding needs an even width, got {dim}")
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(n, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table.float()


class ViTExtractor(nn.Module):
    """Patch embedding, class token, position embedding, ``depth`` timm blocks, final LayerNorm.

    Input (B, C, H, W) with C = ``in_chans`` (a one-channel image is repeated to ``in_chans``);
    output (B, 1 + N, D) tokens, the class token first.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, dim: int = 270,
                 depth: int = 3, num_heads: int = 6, mlp_ratio: float = 4.0, pos_embed: str = "sincos",
                 drop_path: float = 0.0):
        super().__init__()
        self.in_chans = in_chans
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=dim)
        n = self.patch_embed.num_patches + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if pos_embed == "sincos":
            self.register_buffer("pos_embed", sincos_1d(n, dim)[None], persistent=False)
        elif pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        self.blocks = nn.Sequential(*[Block(dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=drop_path)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.normal_(self.cls_token, std=1e-6)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_embed"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1 and self.in_chans != 1:
            x = x.expand(-1, self.in_chans, -1, -1)  # grey depth/IR replicated, as the paper feeds them
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1).to(t.dtype), t], dim=1) + self.pos_embed.to(t.dtype)
        return self.norm(self.blocks(t))
