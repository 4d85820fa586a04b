"""``mm-cdcn``: multi-modal central difference network (Yu et al., CVPRW 2020), docs/models/mm-cdcn.md.

One CDCN branch per modality (central difference convolutions, theta 0.7; three blocks, each ending in a
max-pool; the three blocks' outputs resized to the map size and concatenated), the branches' outputs
concatenated and reduced to a one-channel map at 1/8 of the input. Supervision is pixel-wise: the map of a bona
fide sample should be all ones, an attack's all zeros (the MMDG benchmark has no pseudo-depth), with MSE and
the contrastive depth loss. The score is the mean of the map, clipped to [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfas.conventions import MODALITY_CHANNELS
from mfas.models.base import ModelOutput, PadModel
from mfas.models.layers.cdc import CDConv2d
from mfas.models.layers.heads import HALF_STATS, logits_from_probability
from mfas.models.layers.inputs import modality_image, present_mask
from mfas.models.registry import register_model


def cdc_bn_relu(cin: int, cout: int, theta: float) -> nn.Sequential:
    return nn.Sequential(CDConv2d(cin, cout, 3, padding=1, theta=theta), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Branch(nn.Module):
    """One modality: (B, C, S, S) -> multi-scale features (B, 3 * c_out, S/8, S/8) -> (B, c_out, S/8, S/8).
    ``channels`` = (stem, block in/out, block middle, block out): (64, 128, 196, 128) released."""

    def __init__(self, in_chans: int, channels: tuple[int, int, int, int], theta: float):
        super().__init__()
        stem, c1, c2, c3 = channels
        self.stem = cdc_bn_relu(in_chans, stem, theta)
        self.blocks = nn.ModuleList(
            nn.Sequential(cdc_bn_relu(cin, c1, theta), cdc_bn_relu(c1, c2, theta), cdc_bn_relu(c2, c3, theta),
                          nn.MaxPool2d(3, 2, 1))
            for cin in (stem, c3, c3))
        self.reduce = cdc_bn_relu(3 * c3, c3, theta)

    def scales(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three blocks' outputs, at 1/2, 1/4 and 1/8 of the input."""
        out, x = [], self.stem(x)
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def fuse(self, scales: list[torch.Tensor]) -> torch.Tensor:
        size = scales[-1].shape[-2:]
        return self.reduce(torch.cat([F.interpolate(s, size=size, mode="bilinear") for s in scales], 1))


def contrast_kernels(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The 8 kernels of the contrastive depth loss (8, 1, 3, 3): +1 at one neighbour, -1 at the centre."""
    k = torch.zeros(8, 1, 3, 3, device=device, dtype=dtype)
    for i, (r, c) in enumerate([(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]):
        k[i, 0, r, c], k[i, 0, 1, 1] = 1.0, -1.0
    return k


def contrastive_depth_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE between the 8 neighbour contrasts of the predicted and target maps (B, H, W)."""
    k = contrast_kernels(pred.device, pred.dtype)
    return F.mse_loss(F.conv2d(pred[:, None], k), F.conv2d(target[:, None], k))


class MMCDCN(PadModel):
    """Per-modality CDCN branches -> concat (B, M*c, S/8, S/8) -> CDC -> (B, c, .) -> CDC -> ReLU -> map (B, S/8,
    S/8); logits (B, 2) carry the score mean(map) clipped to [0, 1] (``features["map"]`` is the map).

    Args:
        img_size: input side (256 in the challenge code; 224 in the benchmark's loaders, map 28 x 28).
        channels: branch widths (stem, block in/out, block middle, block out).
        theta: CDC theta (0.7).
        depth_skip_from_rgb: reproduce the released code's slip that feeds the RGB branch's second-block
            output into the depth branch's multi-scale concatenation (default False: the depth branch's own).
    """

    supports_missing = True
    modal_features = True

    def __init__(self, modalities: tuple[str, ...] | list[str] = ("rgb", "depth", "ir"), img_size: int = 224,
                 channels: tuple[int, ...] | list[int] = (64, 128, 196, 128), theta: float = 0.7,
                 depth_skip_from_rgb: bool = False):
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"channels takes four widths (stem, block in/out, middle, out), got {list(channels)}")
        self.modalities, self.input_size = tuple(modalities), (img_size, img_size)
        self.norm_stats = {m: HALF_STATS[m] for m in self.modalities}
        ch = tuple(int(c) for c in channels)
        self.branches = nn.ModuleDict({m: Branch(MODALITY_CHANNELS[m], ch, theta) for m in self.modalities})
        c = ch[3]
        self.fuse = cdc_bn_relu(c * len(self.modalities), c, theta)
        self.out = CDConv2d(c, 1, 3, padding=1, theta=theta)
        self.num_features = c
        self.skip_slip = bool(depth_skip_from_rgb) and {"rgb", "depth"} <= set(self.modalities)

    def forward(self, batch: dict) -> ModelOutput:
        present = present_mask(batch, self.modalities)
        scales = {m: self.branches[m].scales(modality_image(batch, m, present[:, i], self.norm_stats[m]))
                  for i, m in enumerate(self.modalities)}
        if self.skip_slip:
            scales["depth"] = [scales["depth"][0], scales["rgb"][1], scales["depth"][2]]
        per = {m: self.branches[m].fuse(scales[m]) for m in self.modalities}
        h = self.fuse(torch.cat([per[m] for m in self.modalities], 1))
        depth_map = F.relu(self.out(h))[:, 0]
        score = depth_map.float().mean((1, 2)).clamp(0, 1)
        feats = {f"cls_{m}": per[m].mean((2, 3)) for m in self.modalities}
        feats.update(embedding=h.mean((2, 3)), present=present, map=depth_map)
        return ModelOutput(logits=logits_from_probability(score), features=feats)

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        pred = output.features["map"].float()
        target = batch["label"].float()[:, None, None].expand_as(pred)
        mse = F.mse_loss(pred, target)
        cdl = contrastive_depth_loss(pred, target)
        return {"mse": mse, "contrastive_depth": cdl, "loss": mse + cdl}


@register_model("mm-cdcn", img_size=224)
@register_model("mm-cdcn-tiny", img_size=112, channels=(8, 12, 16, 12))
def mm_cdcn(**kwargs: object) -> MMCDCN:
    return MMCDCN(**kwargs)
