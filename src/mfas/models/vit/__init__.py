"""``vit``: the multimodal ViT baseline of the MMDG benchmark (docs/models/vit.md).

An ImageNet ViT-B/16 whose blocks the three modalities share, each modality with its own patch embedding,
class token and position embedding (the MMDG authors' template); the final class tokens are concatenated
into a fused head, and each modality also has its own head. Loss: cross-entropy on the fused head plus each
modality's head, weight 1 each. A missing modality is a black image, as the benchmark tests it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfas.models.base import ModelOutput, PadModel
from mfas.models.layers.heads import HALF, HALF_STATS
from mfas.models.layers.inputs import modality_image, present_mask
from mfas.models.layers.mm_vit import MultiModalViT
from mfas.models.layers.vit import VIT_B_16
from mfas.models.registry import register_model


class MultiModalViTBaseline(PadModel):
    """Images (B, 3|1, S, S) per modality -> shared ViT -> class tokens (B, D) each -> concat (B, M*D) -> fused
    logits (B, 2); per-modality logits (B, 2) in ``features["modal_logits"]`` (B, M, 2).

    Args:
        size: ViT sizes (``embed_dim``, ``depth``, ``num_heads``, ``patch_size``, ``mlp_ratio``); ``img_size``
            is the input side.
        pretrained: ImageNet ViT weights, a local file (timm or torchvision layout) or a timm tag; None: random.
        train_blocks: how many of the last blocks train (-1: all, full fine-tuning; 1: the last block only, as
            the MMDG authors' adapter baseline).
        modal_heads: weight of the per-modality cross-entropy terms (0 drops them).
        pos_embed: ``fresh`` or ``pretrained`` position embeddings (see :class:`MultiModalViT`).
    """

    supports_missing = True
    modal_features = True
    training_only = ("modal_head",)  # the score is the fused head's

    def __init__(self, modalities: tuple[str, ...] | list[str] = ("rgb", "depth", "ir"), img_size: int = 224,
                 size: dict | None = None, pretrained: str | None = None, train_blocks: int = -1,
                 modal_heads: float = 1.0, pos_embed: str = "fresh", drop_path: float = 0.0):
        super().__init__()
        self.modalities, self.input_size = tuple(modalities), (img_size, img_size)
        self.norm_stats = {m: HALF_STATS[m] for m in self.modalities}
        sz = {**VIT_B_16, **(size or {}), "img_size": img_size}
        self.vit = MultiModalViT(self.modalities, sz, pretrained, pos_embed=pos_embed, drop_path=drop_path)
        self.vit.freeze_blocks(train_blocks)
        d = self.vit.embed_dim
        self.num_features = d * len(self.modalities)
        self.head = nn.Linear(self.num_features, 2)
        self.modal_head = nn.ModuleDict({m: nn.Linear(d, 2) for m in self.modalities})
        self.modal_weight = float(modal_heads)

    def cam_layers(self) -> dict[str, nn.Module]:
        raise NotImplementedError("vit shares its blocks between modalities; Grad-CAM needs a per-modality layer")

    def forward(self, batch: dict) -> ModelOutput:
        present = present_mask(batch, self.modalities)
        dtype = self.vit.cls_token[self.modalities[0]].dtype
        images = {m: modality_image(batch, m, present[:, i], HALF, channels=3, dtype=dtype)
                  for i, m in enumerate(self.modalities)}
        cls = self.vit(images)
        z = torch.cat([cls[m] for m in self.modalities], 1)
        modal = torch.stack([self.modal_head[m](cls[m]) for m in self.modalities], 1)
        feats = {f"cls_{m}": cls[m] for m in self.modalities}
        feats.update(embedding=z, present=present, modal_logits=modal)
        return ModelOutput(logits=self.head(z), features=feats)

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        y = batch["label"].long()
        ce = F.cross_entropy(output.logits.float(), y)
        out = {"ce": ce}
        total = ce
        if self.modal_weight > 0:
            modal = output.features["modal_logits"].float()
            for i, m in enumerate(self.modalities):
                out[f"ce_{m}"] = F.cross_entropy(modal[:, i], y)
                total = total + self.modal_weight * out[f"ce_{m}"]
        out["loss"] = total
        return out


TINY = {"patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 4.0}


@register_model("vit", img_size=224)
@register_model("vit-tiny", img_size=112, size=TINY)
def vit(**kwargs: object) -> MultiModalViTBaseline:
    return MultiModalViTBaseline(**kwargs)
