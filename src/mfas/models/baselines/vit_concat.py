"""``vit-concat``: one timm ViT per modality, class tokens concatenated, a linear head.

A missing modality (presence mask False) is replaced by a learned per-modality embedding of the
same width, so the head always sees a fixed-size input and a sample's score never depends on the
rest of its batch.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from mfas.conventions import MODALITY_CHANNELS
from mfas.models.base import IMAGENET, ModelOutput, PadModel
from mfas.models.registry import register_model


class ViTConcat(PadModel):
    supports_missing = True
    modal_features = True

    def __init__(self, modalities: tuple[str, ...] = ("rgb", "depth", "ir"), img_size: int = 112,
                 patch_size: int = 16, embed_dim: int = 192, depth: int = 4, num_heads: int = 3,
                 mlp_ratio: float = 4.0, drop_rate: float = 0.0):
        super().__init__()
        self.modalities = tuple(modalities)
        self.input_size = (img_size, img_size)
        self.norm_stats = {m: IMAGENET[m] for m in self.modalities}
        self.encoders = nn.ModuleDict({
            m: VisionTransformer(img_size=img_size, patch_size=patch_size, in_chans=MODALITY_CHANNELS[m],
                                 num_classes=0, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
                                 mlp_ratio=mlp_ratio, drop_rate=drop_rate, global_pool="token")
            for m in self.modalities})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(embed_dim)) for m in self.modalities})
        self.num_features = embed_dim * len(self.modalities)
        self.head = nn.Linear(self.num_features, 2)

    def cam_layers(self) -> dict[str, nn.Module]:
        return {m: enc.norm for m, enc in self.encoders.items()}

    def forward(self, batch: dict) -> ModelOutput:
        feats, present = [], []
        for m in self.modalities:
            f = self.encoders[m](batch[m])  # (B, D) class token
            present.append(self.present(batch, m))
            feats.append(torch.where(present[-1][:, None], f, self.missing[m].to(f.dtype).expand_as(f)))
        z = torch.cat(feats, dim=1)
        out = {f"cls_{m}": f for m, f in zip(self.modalities, feats, strict=True)}
        out.update(embedding=z, fused=z, present=torch.stack(present, 1))
        return ModelOutput(logits=self.head(z), features=out)


@register_model("vit-concat", img_size=224, embed_dim=192, depth=6, num_heads=3)
@register_model("vit-concat-tiny", img_size=112, embed_dim=64, depth=2, num_heads=2)
def vit_concat(**kwargs: object) -> ViTConcat:
    return ViTConcat(**kwargs)
