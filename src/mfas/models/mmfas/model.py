"""mmFAS: three ViT extractors, RGB-bridged multiple-level alignment, switch-attention fusion.

Shapes: images (B, C, S, S) per modality; extractor tokens (B, T, D) with T = 1 + (S / patch)^2; the
global feature of a modality is its class token (B, D); logits (B, 2) with index 1 = bona fide.
See docs/models/mmfas.md for every choice the paper leaves open.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mfas.models.base import IMAGENET, ModelOutput, PadModel
from mfas.models.mmfas.alignment import CM_MODES, AlignmentModule
from mfas.models.mmfas.extractor import ViTExtractor
from mfas.models.mmfas.fusion import CrossFusion, MergeFusion, SwitchFusion

FUSIONS = ("none", "switch", "merge", "cross")
ALL = ("rgb", "depth", "ir")


def _init_vit(module: nn.Module) -> None:
    """timm's ViT initialisation: truncated normal (std 0.02) linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class MMFAS(PadModel):
    """The mmFAS model and every ablation of the paper's Tables 2 and 3 through its options.

    Args:
        modalities: any non-empty subset of rgb, depth, ir (Table 2's modality rows).
        img_size, patch_size, dim, depth, num_heads, mlp_ratio: extractor sizes (paper: 224, 16, 270, 3, 6, 4).
        pos_embed: ``sincos`` (fixed, matches the paper's parameter counts) or ``learned``.
        icl: instance-level contrastive alignment (RGB-depth and RGB-IR).
        cm: class-level matching: ``none``, ``random`` pairs, or ``hard`` (hard negative + hard positive mining).
        align_proj: per-pair linear projections producing the aligned features (off in the paper's counts).
        fusion: ``none`` (mean of class tokens), ``switch``, ``merge`` or ``cross`` attention.
        fusion_depth, switch_mode, switch_self_attn: the deep-fusion blocks (paper: 6, RDI, see docs).
        alpha, beta: weights of L_ICL and L_CM.
        modality_dropout: training-only probability of hiding depth or IR per sample, so the missing-modality
            embeddings learn (0 in the paper).
    """

    supports_missing = True
    modal_features = True
    #: parameters used only by the training losses; ``mfas models show`` counts them apart
    training_only = ("align",)

    def __init__(self, modalities: tuple[str, ...] | list[str] = ALL, img_size: int = 224, patch_size: int = 16,
                 dim: int = 270, depth: int = 3, num_heads: int = 6, mlp_ratio: float = 4.0,
                 pos_embed: str = "sincos", icl: bool = True, cm: str = "hard", align_proj: bool = False,
                 fusion: str = "switch", fusion_depth: int = 6, switch_mode: str = "RDI",
                 switch_self_attn: bool = True, alpha: float = 1.0, beta: float = 1.0,
                 modality_dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        mods = tuple(m for m in ALL if m in modalities)
        if not mods or len(mods) != len(tuple(modalities)):
            raise ValueError(f"modalities must be a non-empty subset of {ALL}, got {modalities!r}")
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if fusion != "none" and mods != ALL:
            raise ValueError(f"fusion={fusion!r} needs all three modalities; use fusion='none' for {mods}")
        if cm not in CM_MODES:
            raise ValueError(f"cm must be one of {CM_MODES}, got {cm!r}")
        if modality_dropout and ("rgb" not in mods or len(mods) < 2):
            raise ValueError("modality_dropout hides depth/IR beside RGB; it needs rgb and another modality")
        if (icl or cm != "none") and ("rgb" not in mods or len(mods) < 2):
            raise ValueError("alignment bridges RGB to depth/IR: it needs rgb and at least one other modality "
                             "(set icl=false, cm=none)")
        self.modalities, self.input_size, self.num_features = mods, (img_size, img_size), dim
        self.norm_stats = {m: IMAGENET[m] for m in mods}
        self.alpha, self.beta, self.modality_dropout = alpha, beta, modality_dropout
        self.fusion_kind = fusion
        self.extractors = nn.ModuleDict({m: ViTExtractor(img_size, patch_size, 3, dim, depth, num_heads, mlp_ratio,
                                                         pos_embed, drop_path) for m in mods})
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.zeros(dim)) for m in mods})
        partners = [m for m in mods if m != "rgb"] if (icl or cm != "none") else []
        self.align = nn.ModuleDict({m: AlignmentModule(dim, icl, cm) for m in partners})
        self.proj = nn.ModuleDict({k: nn.Linear(dim, dim) for m in partners for k in (f"rgb_{m}", m)}) \
            if align_proj and partners else None
        if fusion == "switch":
            self.fusion = SwitchFusion(dim, fusion_depth, num_heads, mlp_ratio, switch_mode, switch_self_attn)
        elif fusion == "merge":
            self.fusion = MergeFusion(dim, fusion_depth, dim // num_heads, mlp_ratio)
        elif fusion == "cross":
            self.fusion = CrossFusion(dim, fusion_depth, num_heads, mlp_ratio)
        else:
            self.fusion = None
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, 2))
        self.apply(_init_vit)

    def no_weight_decay(self) -> set[str]:
        return super().no_weight_decay() | {f"missing.{m}" for m in self.modalities}

    def cam_layers(self) -> dict[str, nn.Module]:
        return dict(self.extractors.items())

    # -- parts ---------------------------------------------------------------------------------------------
    def presence(self, batch: dict) -> dict[str, torch.Tensor]:
        """(B,) bool per modality, with training-time modality dropout applied (RGB is never hidden)."""
        pres = {m: self.present(batch, m) for m in self.modalities}
        if self.training and self.modality_dropout > 0:
            for m in self.modalities:
                if m != "rgb":
                    pres[m] = pres[m] & (torch.rand(pres[m].shape, device=pres[m].device) >= self.modality_dropout)
        return pres

    def extract(self, batch: dict, pres: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{modality: (B, T, D)} extractor tokens; an absent modality's tokens are its learned embedding."""
        out = {}
        for m in self.modalities:
            t = self.extractors[m](batch[m])
            out[m] = torch.where(pres[m][:, None, None], t, self.missing[m].to(t.dtype).expand_as(t))
        return out

    def aligned(self, tokens: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Aligned token sequences F'; RGB is the mean of its versions aligned to each partner (shallow fusion)."""
        if self.proj is None:
            return tokens
        out = dict(tokens)
        versions = []
        for m in self.align:
            out[m] = self.proj[m](tokens[m])
            versions.append(self.proj[f"rgb_{m}"](tokens["rgb"]))
        out["rgb"] = torch.stack(versions).mean(0)
        return out

    def forward(self, batch: dict) -> ModelOutput:
        pres = self.presence(batch)
        tokens = self.aligned(self.extract(batch, pres))
        if self.fusion is None:
            fused = torch.stack([tokens[m][:, 0] for m in self.modalities]).mean(0)
        else:
            fused = self.fusion(tokens)
        feats = {f"cls_{m}": tokens[m][:, 0] for m in self.modalities}
        feats["embedding"] = feats["fused"] = fused
        feats["present"] = torch.stack([pres[m] for m in self.modalities], 1)
        return ModelOutput(logits=self.head(fused), features=feats)

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        """L = L_ce + alpha L_ICL + beta L_CM; alignment uses only samples where both modalities are present."""
        y = batch["label"].long()
        ce = F.cross_entropy(output.logits.float(), y)
        out = {"ce": ce}
        icl, cm = [], []
        pres = output.features["present"]
        for m, module in self.align.items():
            both = pres[:, 0] & pres[:, self.modalities.index(m)]
            terms = module(output.features["cls_rgb"][both], output.features[f"cls_{m}"][both], y[both])
            if "icl" in terms:
                icl.append(terms["icl"])
            if "cm" in terms:
                cm.append(terms["cm"])
        loss = ce
        if icl:  # Eq. 3: the RGB-depth and RGB-IR terms are summed, each the mean of its two directions
            out["icl"] = torch.stack(icl).sum()
            loss = loss + self.alpha * out["icl"]
        if cm:
            out["cm"] = torch.stack(cm).sum()
            loss = loss + self.beta * out["cm"]
        out["loss"] = loss
        return out
