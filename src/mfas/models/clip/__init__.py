"""``clip``: the plain CLIP baseline of the MMDG benchmark tables (docs/models/clip.md).

One CLIP ViT-B/16 image tower shared by the three modalities; each modality's projected image feature is
L2-normalised, the three are averaged and normalised again, and the logits are CLIP's: the scaled cosine to two
class embeddings made from FLIP's prompts (attack, bona fide). Cross-entropy; every weight trains, the text
tower included. ``head: linear`` replaces the prompts by a linear layer on the concatenated features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfas.models.base import ModelOutput, PadModel
from mfas.models.layers.clip import TINY_CLIP, VIT_B_16, build_clip, encode_image, load_clip_weights
from mfas.models.layers.clip_prompts import PromptClasses
from mfas.models.layers.heads import HALF, HALF_STATS
from mfas.models.layers.inputs import modality_image, present_mask
from mfas.models.registry import register_model


class ClipBaseline(PadModel):
    """Images per modality -> shared CLIP image tower -> (B, E) each -> fused (B, E) -> (B, 2).

    Args:
        clip: CLIP sizes as data (``{"embed_dim", "vision", "text"}``); the input side is the tower's.
        pretrained: CLIP weights, a local file (open_clip, OpenAI or Hugging Face layout) or an open_clip tag.
        quick_gelu: OpenAI's activation (True for OpenAI's weights).
        head: ``text`` (scaled cosine to the prompt classes) or ``linear``.
        freeze: ``none`` (full fine-tuning) or ``backbone`` (only the head, and the logit scale, train).
    """

    supports_missing = True
    modal_features = True

    def __init__(self, modalities: tuple[str, ...] | list[str] = ("rgb", "depth", "ir"), clip: dict | None = None,
                 pretrained: str | None = None, quick_gelu: bool = True, clip_arch: str = "ViT-B-16",
                 head: str = "text", freeze: str = "none"):
        super().__init__()
        if head not in ("text", "linear") or freeze not in ("none", "backbone"):
            raise ValueError(f"head must be 'text' or 'linear' and freeze 'none' or 'backbone', got {head!r}, "
                             f"{freeze!r}")
        cfg = clip or VIT_B_16
        self.clip = build_clip(cfg, quick_gelu)
        if pretrained:
            load_clip_weights(self.clip, pretrained, clip_arch)
        size = int(cfg["vision"].get("image_size", 224))
        self.modalities, self.input_size = tuple(modalities), (size, size)
        self.norm_stats = {m: HALF_STATS[m] for m in self.modalities}
        dim = int(cfg["embed_dim"])
        self.num_features, self.head_kind = dim, head
        if head == "text":
            self.prompts = PromptClasses(self.clip)
        else:  # the text tower and logit scale go unused: removed / frozen, so DDP finds every gradient
            self.linear = nn.Linear(dim * len(self.modalities), 2)
            self.num_features = dim * len(self.modalities)
            del self.clip.transformer, self.clip.token_embedding, self.clip.ln_final, self.clip.positional_embedding
            self.clip.text_projection = None
            self.clip.logit_scale.requires_grad_(False)
        if freeze == "backbone":
            self.clip.requires_grad_(False)
            self.clip.logit_scale.requires_grad_(head == "text")

    def forward(self, batch: dict) -> ModelOutput:
        present = present_mask(batch, self.modalities)
        dtype = self.clip.visual.class_embedding.dtype
        x = torch.cat([modality_image(batch, m, present[:, i], HALF, channels=3, dtype=dtype)
                       for i, m in enumerate(self.modalities)])
        v = encode_image(self.clip, x).chunk(len(self.modalities))
        feats = {f"cls_{m}": f for m, f in zip(self.modalities, v, strict=True)}
        if self.head_kind == "text":
            z = F.normalize(torch.stack([F.normalize(f, dim=-1) for f in v]).mean(0), dim=-1)
            logits = self.clip.logit_scale.exp() * z @ self.prompts(self.clip).to(z.dtype).T
        else:
            z = torch.cat(v, 1)
            logits = self.linear(z)
        feats.update(embedding=z, present=present)
        return ModelOutput(logits=logits, features=feats)


@register_model("clip", clip=VIT_B_16)
@register_model("clip-tiny", clip=TINY_CLIP)
def clip_baseline(**kwargs: object) -> ClipBaseline:
    return ClipBaseline(**kwargs)
