"""``cmfl``: Cross-Modal Focal Loss (George and Marcel, CVPR 2021) on three modalities (docs/models/cmfl.md).

One DenseNet-161 stream per modality, cut after its second transition (384 channels at 1/16 of the input),
global average pooling and a sigmoid (as released), a bona fide probability per stream and a joint head on the
concatenated pooled features. Each stream's cross-entropy is down-weighted where the other streams are
confident and correct: (1 - w)^gamma with w = p_other * harmonic_mean(p_self, p_other), p the probability a
stream gives the true class. The released two-stream loss generalises to three streams as the mean of that
factor over the other streams (the same loss for two). Total: beta * mean over streams + (1 - beta) * BCE of
the joint head; the score is the joint head's.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.densenet import DenseNet

from mfas.conventions import MODALITY_CHANNELS
from mfas.errors import ConfigError
from mfas.models.base import ModelOutput, PadModel
from mfas.models.layers.heads import UNIT_STATS, logits_from_logit
from mfas.models.layers.inputs import modality_image, present_mask
from mfas.models.layers.weights import read_tensors
from mfas.models.registry import register_model

#: the DenseNet-161 parts a stream keeps
KEEP = ("conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2", "transition2")


def densenet_stream(in_chans: int, growth: int, blocks: tuple[int, ...], init: int) -> tuple[nn.Sequential, int]:
    """A torchvision DenseNet's features up to its second transition, with ``in_chans`` input channels; returns
    (module, output channels)."""
    net = DenseNet(growth_rate=growth, block_config=(*blocks, 1, 1), num_init_features=init)
    parts = [(n, getattr(net.features, n)) for n in KEEP]
    if in_chans != 3:
        parts[0] = ("conv0", nn.Conv2d(in_chans, init, 7, 2, 3, bias=False))
    return nn.Sequential(OrderedDict(parts)), net.features.transition2.conv.out_channels


def load_densenet_weights(stream: nn.Sequential, pretrained: str) -> None:
    """ImageNet DenseNet weights (torchvision layout, a local ``.pth``/``.safetensors`` file read without
    unpickling code, or ``torchvision`` for its download when online) into one stream; a grey stream's first
    convolution takes the RGB kernel averaged over its channels, as released for depth."""
    if pretrained == "torchvision":
        from torchvision.models import DenseNet161_Weights, densenet161

        sd = densenet161(weights=DenseNet161_Weights.IMAGENET1K_V1).state_dict()
    else:
        sd = read_tensors(Path(pretrained))
    # torchvision's old names (norm.1) and the features. prefix
    sd = {re.sub(r"\.(norm|relu|conv)\.(\d+)", r".\1\2", k): v for k, v in sd.items() if k.startswith("features.")}
    sd = {k[len("features."):]: v for k, v in sd.items() if k.split(".")[1] in KEEP}
    own = stream.state_dict()
    w = sd.get("conv0.weight")
    if w is not None and w.shape[1] != own["conv0.weight"].shape[1]:
        sd["conv0.weight"] = w.mean(1, keepdim=True).repeat(1, own["conv0.weight"].shape[1], 1, 1)
    # files saved before BatchNorm counted its batches (torchvision's own, 2017) lack num_batches_tracked
    missing = sorted(k for k in set(own) - set(sd) if not k.endswith("num_batches_tracked"))
    wrong = sorted(k for k in own if k in sd and sd[k].shape != own[k].shape)
    if missing or wrong:
        raise ConfigError(f"pretrained weights {pretrained} do not fit a DenseNet-161 stream: "
                          f"{len(missing)} missing (e.g. {', '.join(missing[:3])}), {len(wrong)} of another shape")
    stream.load_state_dict({k: sd[k] for k in own if k in sd}, strict=False)


def cmfl_term(ce: torch.Tensor, pt: torch.Tensor, others: list[torch.Tensor], gamma: float) -> torch.Tensor:
    """(B,) cross-modal focal loss of one stream: its cross-entropy ``ce`` and true-class probability ``pt``,
    and the other streams' true-class probabilities. Gradients flow through the weight, as released."""
    factor = 0.0
    for q in others:
        w = q * (2 * pt * q) / (pt + q + 1e-9)
        factor = factor + (1 - w).clamp_min(0) ** gamma
    return factor / len(others) * ce


class CMFL(PadModel):
    """Per-modality DenseNet streams -> pooled (B, C) each -> sigmoid -> stream logits (B,) and a joint logit
    on the concatenation (B, M*C). Logits (B, 2) are [0, joint logit], so the score is the joint probability.

    Args:
        img_size: input side (224 released).
        growth, blocks, init_features: DenseNet sizes (DenseNet-161: 48, (6, 12), 96).
        pretrained: ImageNet DenseNet-161 weights for every stream (file or ``torchvision``); None: random.
        gamma: focusing exponent (3); beta: weight of the streams' focal terms against the joint BCE (0.5).
    """

    supports_missing = True
    modal_features = True
    training_only = ("stream_heads",)  # the score is the joint head's

    def __init__(self, modalities: tuple[str, ...] | list[str] = ("rgb", "depth", "ir"), img_size: int = 224,
                 growth: int = 48, blocks: tuple[int, ...] | list[int] = (6, 12), init_features: int = 96,
                 pretrained: str | None = None, gamma: float = 3.0, beta: float = 0.5):
        super().__init__()
        if len(blocks) != 2:
            raise ValueError(f"blocks: a stream keeps two dense blocks, got {list(blocks)}")
        if len(modalities) < 2:
            raise ValueError("CMFL weighs each stream by the others: it needs at least two modalities")
        self.modalities, self.input_size = tuple(modalities), (img_size, img_size)
        self.norm_stats = {m: UNIT_STATS[m] for m in self.modalities}
        streams, width = {}, 0
        for m in self.modalities:
            streams[m], width = densenet_stream(MODALITY_CHANNELS[m], growth, tuple(blocks), init_features)
            if pretrained:
                load_densenet_weights(streams[m], pretrained)
        self.streams = nn.ModuleDict(streams)
        self.stream_heads = nn.ModuleDict({m: nn.Linear(width, 1) for m in self.modalities})
        self.num_features = width * len(self.modalities)
        self.joint = nn.Linear(self.num_features, 1)
        self.gamma, self.beta = float(gamma), float(beta)

    def forward(self, batch: dict) -> ModelOutput:
        present = present_mask(batch, self.modalities)
        feats, stream_logits = {}, []
        for i, m in enumerate(self.modalities):
            x = modality_image(batch, m, present[:, i], self.norm_stats[m])
            f = torch.sigmoid(F.adaptive_avg_pool2d(self.streams[m](x), 1).flatten(1))
            feats[f"cls_{m}"] = f
            stream_logits.append(self.stream_heads[m](f)[:, 0])
        z = torch.cat([feats[f"cls_{m}"] for m in self.modalities], 1)
        joint = self.joint(z)[:, 0]
        feats.update(embedding=z, present=present, stream_logits=torch.stack(stream_logits, 1))
        return ModelOutput(logits=logits_from_logit(joint), features=feats)

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        y = batch["label"].float()
        s = output.features["stream_logits"].float()  # (B, M)
        ce = torch.stack([F.binary_cross_entropy_with_logits(s[:, i], y, reduction="none")
                          for i in range(s.shape[1])], 1)
        pt = torch.exp(-ce)
        out: dict[str, torch.Tensor] = {}
        terms = []
        for i, m in enumerate(self.modalities):
            others = [pt[:, j] for j in range(s.shape[1]) if j != i]
            out[f"cmfl_{m}"] = cmfl_term(ce[:, i], pt[:, i], others, self.gamma).mean()
            terms.append(out[f"cmfl_{m}"])
        joint = F.binary_cross_entropy_with_logits(output.logits[:, 1].float(), y)
        out["bce_joint"] = joint
        out["loss"] = self.beta * torch.stack(terms).mean() + (1 - self.beta) * joint
        return out


@register_model("cmfl", img_size=224)
@register_model("cmfl-tiny", img_size=112, growth=8, blocks=(2, 2), init_features=16)
def cmfl(**kwargs: object) -> CMFL:
    return CMFL(**kwargs)
