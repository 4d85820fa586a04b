"""``cnn-concat``: one timm ResNet per modality, pooled features concatenated, a linear head.

The convolutional twin of ``vit-concat``: CNNs learn from a few thousand images where a ViT trained from
scratch does not, so this is the baseline that shows what a benchmark's cues allow. A missing modality
(presence mask False) is replaced by a learned per-modality embedding, so a sample's score never depends
on the rest of its batch (batch norm uses its running statistics in ``eval()``).
"""

from __future__ import annotations

import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import nn

from mfas.conventions import MODALITY_CHANNELS
from mfas.models.base import IMAGENET, ModelOutput, PadModel, hide_modalities
from mfas.models.registry import register_model


class CNNConcat(PadModel):
    """Per-modality ResNets (BasicBlock) -> global average pool (B, C) each -> concat (B, M*C) -> Linear -> (B, 2).

    Args:
        modalities: the modalities used (any non-empty subset of rgb, depth, ir).
        img_size: input side.
        layers: blocks in each of the four stages (ResNet-18: 2, 2, 2, 2).
        channels: widths of the four stages (ResNet-18: 64, 128, 256, 512); the stem has ``channels[0]``.
        drop_rate: dropout before the head.
        modality_dropout: training-only probability of hiding each modality of a sample (its features become
            the learned missing-modality embedding), so that a model evaluated with a modality missing has seen
            that case; at least one present modality of every sample stays visible.
    """

    supports_missing = True
    modal_features = True

    def __init__(self, modalities: tuple[str, ...] | list[str] = ("rgb", "depth", "ir"), img_size: int = 112,
                 layers: tuple[int, ...] | list[int] = (2, 2, 2, 2),
                 channels: tuple[int, ...] | list[int] = (64, 128, 256, 512), drop_rate: float = 0.0,
                 modality_dropout: float = 0.0):
        super().__init__()
        mods = tuple(modalities)
        if not mods or any(m not in MODALITY_CHANNELS for m in mods) or len(set(mods)) != len(mods):
            raise ValueError(f"modalities must be a non-empty subset of rgb, depth, ir, got {modalities!r}")
        if len(layers) != 4 or len(channels) != 4:
            raise ValueError(f"a ResNet has four stages: layers and channels take four values each, got "
                             f"{list(layers)} and {list(channels)}")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout!r}")
        self.modalities, self.input_size = mods, (img_size, img_size)
        self.modality_dropout = float(modality_dropout)
        self.norm_stats = {m: IMAGENET[m] for m in mods}
        width = int(channels[-1])
        self.encoders = nn.ModuleDict({
            m: ResNet(BasicBlock, tuple(layers), num_classes=0, in_chans=MODALITY_CHANNELS[m],
                      stem_width=int(channels[0]), channels=tuple(int(c) for c in channels))
            for m in mods})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(width)) for m in mods})
        self.num_features = width * len(mods)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, 2)

    def forward(self, batch: dict) -> ModelOutput:
        present = torch.stack([self.present(batch, m) for m in self.modalities], 1)  # (B, M)
        if self.training and self.modality_dropout > 0:
            present = hide_modalities(present, self.modality_dropout)
        feats = []
        for i, m in enumerate(self.modalities):
            f = self.encoders[m](batch[m])  # (B, C) pooled
            feats.append(torch.where(present[:, i, None], f, self.missing[m].to(f.dtype).expand_as(f)))
        z = torch.cat(feats, dim=1)
        out = {f"cls_{m}": f for m, f in zip(self.modalities, feats, strict=True)}
        out.update(embedding=z, fused=z, present=present)
        return ModelOutput(logits=self.head(self.drop(z)), features=out)


register_model("cnn-concat", img_size=112)(CNNConcat)
register_model("cnn-concat-tiny", img_size=112, layers=(1, 1, 1, 1), channels=(16, 32, 64, 128))(CNNConcat)
