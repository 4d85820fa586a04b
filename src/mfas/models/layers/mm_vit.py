"""The multimodal ViT of the MMDG benchmark's baselines (MMDG, its ViT baseline, ViTAF on three modalities):
one ImageNet ViT whose transformer blocks all modalities share, with a patch embedding, a class token and a
position embedding of each modality's own.

Following the MMDG authors' code: the patch embeddings and class tokens start as copies of the pretrained
ones; the position embeddings start fresh (normal, std 0.02) unless ``pos_embed="pretrained"``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from mfas.models.layers.vit import build_vit, load_vit_weights


class MultiModalViT(nn.Module):
    """Per-modality token embeddings over one shared stack of timm ViT blocks.

    Args:
        modalities: the modalities, each with its own embeddings.
        size: ViT sizes (:data:`mfas.models.layers.vit.VIT_B_16` and smaller).
        pretrained: ImageNet ViT weights (file or timm tag, see :func:`load_vit_weights`); None keeps random ones.
        pos_embed: ``fresh`` (the MMDG code) or ``pretrained`` (copies of the pretrained one).
        drop_path: stochastic depth of the blocks.
    """

    def __init__(self, modalities: tuple[str, ...], size: dict, pretrained: str | None = None,
                 pos_embed: str = "fresh", drop_path: float = 0.0):
        super().__init__()
        if pos_embed not in ("fresh", "pretrained"):
            raise ValueError(f"pos_embed must be 'fresh' or 'pretrained', got {pos_embed!r}")
        vit = build_vit(size, drop_path_rate=drop_path)
        if pretrained:
            load_vit_weights(vit, pretrained, size)
        self.modalities = tuple(modalities)
        self.embed_dim = vit.embed_dim
        self.grid = tuple(vit.patch_embed.grid_size)
        self.patch_embed = nn.ModuleDict({m: copy.deepcopy(vit.patch_embed) for m in self.modalities})
        self.cls_token = nn.ParameterDict({m: nn.Parameter(vit.cls_token.detach().clone()) for m in self.modalities})
        pos = {}
        for m in self.modalities:
            if pos_embed == "pretrained":
                pos[m] = nn.Parameter(vit.pos_embed.detach().clone())
            else:
                pos[m] = nn.Parameter(torch.empty_like(vit.pos_embed))
                nn.init.normal_(pos[m], std=0.02)
        self.pos_embed = nn.ParameterDict(pos)
        self.pos_drop = vit.pos_drop
        self.blocks = vit.blocks
        self.norm = vit.norm

    def no_weight_decay(self) -> set[str]:
        return {f"cls_token.{m}" for m in self.modalities} | {f"pos_embed.{m}" for m in self.modalities}

    def embed(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        """Images (B, 3, H, W) of one modality -> tokens (B, 1 + h*w, D), class token first."""
        t = self.patch_embed[modality](x)
        cls = self.cls_token[modality].to(t.dtype).expand(t.shape[0], -1, -1)
        return self.pos_drop(torch.cat([cls, t], 1) + self.pos_embed[modality].to(t.dtype))

    def forward(self, images: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{modality: (B, 3, H, W)} -> {modality: (B, D)} class tokens after the final norm. The modalities go
        through the shared blocks in one pass (their samples are independent), not one pass each."""
        tokens = torch.cat([self.embed(images[m], m) for m in self.modalities])
        for block in self.blocks:
            tokens = block(tokens)
        cls = self.norm(tokens[:, 0]).unflatten(0, (len(self.modalities), -1))  # (M, B, D); exports as a reshape
        return {m: cls[i] for i, m in enumerate(self.modalities)}

    def freeze_blocks(self, trainable: int) -> None:
        """Freeze all blocks but the last ``trainable`` (-1: none frozen); the final norm stays trainable."""
        if trainable < 0:
            return
        for i, block in enumerate(self.blocks):
            block.requires_grad_(i >= len(self.blocks) - trainable)
