"""``flip-v`` and ``flip-it``: FLIP (Srivatsan et al., ICCV 2023) on the MMDG benchmark (docs/models/flip.md).

FLIP is an RGB method; the MMDG benchmark runs it as a "uni-modal DG" method on the three modalities stacked
on the channel axis and mapped to three channels by a learned 1x1 convolution (the benchmark's "Concat + 1x1
Conv"). FLIP-V: CLIP's image tower, its class token before the projection, SSDG's head, cross-entropy.
FLIP-IT: the projected image feature against class embeddings made from FLIP's six attack and six bona fide
prompts (mean of the prompts' text features, normalised), CLIP's scaled cosine as logits, cross-entropy. Every
weight trains, the text tower included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfas.conventions import MODALITY_CHANNELS
from mfas.models.base import IMAGENET, ModelOutput, PadModel
from mfas.models.layers.clip import TINY_CLIP, VIT_B_16, build_clip, encode_image, load_clip_weights
from mfas.models.layers.clip_prompts import PromptClasses
from mfas.models.layers.heads import SSDGHead
from mfas.models.layers.inputs import modality_image, present_mask
from mfas.models.registry import register_model


class ChannelMixer(nn.Module):
    """The benchmark's "Concat + 1x1 Conv": the modalities' channels stacked (B, sum C_m, H, W) -> 1x1
    convolution -> (B, 3, H, W). Initialised to the mean of the modalities (each RGB channel plus the grey
    ones, over their count), so a pretrained RGB tower starts from an image every modality contributes to."""

    def __init__(self, modalities: tuple[str, ...]):
        super().__init__()
        chans = [MODALITY_CHANNELS[m] for m in modalities]
        self.conv = nn.Conv2d(sum(chans), 3, 1)
        w = torch.zeros(3, sum(chans))
        start = 0
        for c in chans:
            for o in range(3):
                w[o, start + (o if c == 3 else 0)] = 1.0 / len(chans)
            start += c
        with torch.no_grad():
            self.conv.weight.copy_(w[:, :, None, None])
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FLIP(PadModel):
    """Stacked modalities (B, 5, S, S) -> 1x1 conv -> CLIP image tower -> (B, 2).

    Args:
        variant: ``v`` (FLIP-V) or ``it`` (FLIP-IT).
        clip, pretrained, quick_gelu, clip_arch: the CLIP backbone (as ``clip``).
    """

    supports_missing = True
    modal_features = False  # the modalities are mixed at the input: there is no per-modality feature
    early_fusion = True

    def __init__(self, variant: str = "it", modalities: tuple[str, ...] | list[str] = ("rgb", "depth", "ir"),
                 clip: dict | None = None, pretrained: str | None = None, quick_gelu: bool = True,
                 clip_arch: str = "ViT-B-16"):
        super().__init__()
        if variant not in ("v", "it"):
            raise ValueError(f"variant must be 'v' (FLIP-V) or 'it' (FLIP-IT), got {variant!r}")
        cfg = clip or VIT_B_16
        self.clip = build_clip(cfg, quick_gelu)
        if pretrained:
            load_clip_weights(self.clip, pretrained, clip_arch)
        size = int(cfg["vision"].get("image_size", 224))
        self.modalities, self.input_size, self.variant = tuple(modalities), (size, size), variant
        self.norm_stats = {m: IMAGENET[m] for m in self.modalities}  # FLIP feeds ImageNet statistics to CLIP
        self.mixer = ChannelMixer(self.modalities)
        if variant == "v":
            self.head = SSDGHead(int(cfg["vision"]["width"]))
            self.num_features = self.head.dim
            # no text tower in FLIP-V: nothing unused may stay trainable (DDP expects every parameter's gradient)
            del self.clip.transformer, self.clip.token_embedding, self.clip.ln_final, self.clip.positional_embedding
            self.clip.text_projection = None
            self.clip.logit_scale.requires_grad_(False)
            self.clip.visual.proj.requires_grad_(False)  # FLIP-V reads the class token before the projection
        else:
            self.prompts = PromptClasses(self.clip)
            self.num_features = int(cfg["embed_dim"])

    def forward(self, batch: dict) -> ModelOutput:
        present = present_mask(batch, self.modalities)
        dtype = self.clip.visual.class_embedding.dtype
        x = torch.cat([modality_image(batch, m, present[:, i], self.norm_stats[m], dtype=dtype)
                       for i, m in enumerate(self.modalities)], 1)
        x = self.mixer(x)
        if self.variant == "v":
            f = encode_image(self.clip, x, project=False)
            z = self.head.embed(f)
            logits = self.head.classify(z)
        else:
            z = F.normalize(encode_image(self.clip, x), dim=-1)
            logits = self.clip.logit_scale.exp() * z @ self.prompts(self.clip).to(z.dtype).T
        return ModelOutput(logits=logits, features={"embedding": z, "present": present})


@register_model("flip-v", variant="v", clip=VIT_B_16)
@register_model("flip-v-tiny", variant="v", clip=TINY_CLIP)
@register_model("flip-it", variant="it", clip=VIT_B_16)
@register_model("flip-it-tiny", variant="it", clip=TINY_CLIP)
def flip(**kwargs: object) -> FLIP:
    return FLIP(**kwargs)
