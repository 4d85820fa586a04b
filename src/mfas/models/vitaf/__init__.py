"""``vitaf``: ViT with ensemble adapters and feature-wise transformation (Huang et al., ECCV 2022), on the
MMDG benchmark's three modalities (docs/models/vitaf.md).

The ImageNet ViT is frozen; each block gets two adapters after attention and two after the MLP (their outputs
summed), and, in training only, a feature-wise transformation that scales and shifts the block's output by
learned-width Gaussian noise. A cosine loss pushes the two adapters of each pair apart. Modalities: the MMDG
template (own patch embedding, class token and position embedding per modality, shared blocks), class tokens
concatenated into SSDG's head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfas.models.base import ModelOutput, PadModel
from mfas.models.layers.heads import HALF, HALF_STATS, SSDGHead
from mfas.models.layers.inputs import modality_image, present_mask
from mfas.models.layers.mm_vit import MultiModalViT
from mfas.models.layers.vit import VIT_B_16
from mfas.models.registry import register_model


class Adapter(nn.Module):
    """x + up(GELU(down(x))) with both projections drawn from N(0, std) and zero biases (so it starts as the
    identity). (B, N, D) -> (B, N, D)."""

    def __init__(self, dim: int, hidden: int = 64, std: float = 2e-4):
        super().__init__()
        self.down, self.up = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        for lin in (self.down, self.up):
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.gelu(self.down(x)))


def _cos2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over samples and tokens of the squared cosine between a and b (B, N, D) along D."""
    return F.cosine_similarity(a, b, dim=-1).pow(2).mean()


class AdaptedBlock(nn.Module):
    """A timm ViT block with ensemble adapters and a feature-wise transformation. ``forward(x)`` (B, N, D) ->
    (tokens (B, N, D), cosine loss of this block's two adapter pairs (scalar))."""

    def __init__(self, block: nn.Module, dim: int, hidden: int, std: float, fwt_gamma: float, fwt_beta: float):
        super().__init__()
        self.block = block
        self.a11, self.a12 = Adapter(dim, hidden, std), Adapter(dim, hidden, std)
        self.a21, self.a22 = Adapter(dim, hidden, std), Adapter(dim, hidden, std)
        self.gamma = nn.Parameter(torch.full((1, 1, dim), float(fwt_gamma)))
        self.beta = nn.Parameter(torch.full((1, 1, dim), float(fwt_beta)))

    def no_weight_decay(self) -> set[str]:
        return {"gamma", "beta"}  # noise widths, not weights

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.block
        h = b.ls1(b.attn(b.norm1(x)))
        d1, d2 = self.a11(h), self.a12(h)
        x = x + b.drop_path1(d1 + d2)
        h = b.ls2(b.mlp(b.norm2(x)))
        e1, e2 = self.a21(h), self.a22(h)
        x = x + b.drop_path2(e1 + e2)
        if self.training:  # one draw per forward, shared by every sample and token, as released
            eps = torch.randn(2, 1, 1, x.shape[-1], device=x.device, dtype=x.dtype)
            x = (1 + eps[0] * F.softplus(self.gamma, beta=100)) * x + eps[1] * F.softplus(self.beta, beta=100)
        return x, _cos2(d1, d2) + _cos2(e1, e2)


class ViTAF(PadModel):
    """Images per modality -> frozen shared ViT with adapted blocks -> class tokens (B, D) each -> concat ->
    SSDG head -> (B, 2).

    Args:
        size, img_size, pretrained, pos_embed: as ``vit`` (:class:`~mfas.models.layers.mm_vit.MultiModalViT`).
        adapter_dim: adapter bottleneck (64).
        adapter_std: std of the adapters' initial weights (2e-4).
        fwt_gamma, fwt_beta: initial widths of the multiplicative and additive noise (0.1, 0.1: the released
            values for CeFA, SURF and WMCA; 0.3, 0.5 for the RGB benchmarks).
        cos_weight: weight of the adapters' cosine loss (released per target: CeFA 1, SURF 0.1, WMCA 0.01).
        train: ``adapters`` (adapters, FWT, head and the per-modality class tokens and position embeddings; the
            ViT's weights frozen, as released for RGB) or ``all``.
    """

    supports_missing = True
    modal_features = True

    def __init__(self, modalities: tuple[str, ...] | list[str] = ("rgb", "depth", "ir"), img_size: int = 224,
                 size: dict | None = None, pretrained: str | None = None, pos_embed: str = "fresh",
                 adapter_dim: int = 64, adapter_std: float = 2e-4, fwt_gamma: float = 0.1, fwt_beta: float = 0.1,
                 cos_weight: float = 0.1, train: str = "adapters"):
        super().__init__()
        if train not in ("adapters", "all"):
            raise ValueError(f"train must be 'adapters' or 'all', got {train!r}")
        self.modalities, self.input_size = tuple(modalities), (img_size, img_size)
        self.norm_stats = {m: HALF_STATS[m] for m in self.modalities}
        sz = {**VIT_B_16, **(size or {}), "img_size": img_size}
        self.vit = MultiModalViT(self.modalities, sz, pretrained, pos_embed=pos_embed)
        if train == "adapters":
            self.vit.requires_grad_(False)
            for p in [*self.vit.cls_token.values(), *self.vit.pos_embed.values()]:
                p.requires_grad_(True)
        d = self.vit.embed_dim
        self.vit.blocks = nn.ModuleList(AdaptedBlock(b, d, adapter_dim, adapter_std, fwt_gamma, fwt_beta)
                                        for b in self.vit.blocks)
        self.num_features = d * len(self.modalities)
        self.head = SSDGHead(self.num_features)
        self.cos_weight = float(cos_weight)

    def forward(self, batch: dict) -> ModelOutput:
        present = present_mask(batch, self.modalities)
        dtype = self.vit.cls_token[self.modalities[0]].dtype
        tokens = torch.cat([self.vit.embed(modality_image(batch, m, present[:, i], HALF, channels=3, dtype=dtype), m)
                            for i, m in enumerate(self.modalities)])
        cos = tokens.new_zeros(())
        for block in self.vit.blocks:
            tokens, c = block(tokens)
            cos = cos + c
        cls = self.vit.norm(tokens[:, 0]).chunk(len(self.modalities))
        z = torch.cat(cls, 1)
        feats = {f"cls_{m}": c for m, c in zip(self.modalities, cls, strict=True)}
        feats.update(embedding=z, present=present, adapter_cos=cos)
        return ModelOutput(logits=self.head(z), features=feats)

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(output.logits.float(), batch["label"].long())
        cos = output.features["adapter_cos"].float()
        return {"ce": ce, "adapter_cos": cos, "loss": ce + self.cos_weight * cos}


TINY = {"patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 4.0}


@register_model("vitaf", img_size=224)
@register_model("vitaf-tiny", img_size=112, size=TINY, adapter_dim=16)
def vitaf(**kwargs: object) -> ViTAF:
    return ViTAF(**kwargs)
