"""``mmdg``: Suppress and Rebalance (Lin et al., CVPR 2024), docs/models/mmdg.md.

An ImageNet ViT-B/16 shared by the three modalities (own patch embedding, class token, position embedding
each), with uncertainty-guided cross-modal adapters (U-Adapters) beside every block's MLP, a fused head on the
concatenated class tokens, single-side prototypical (SSP) losses per modality and ReGrad, which rebalances the
modalities' SSP gradients before they reach each modality's branch.
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
from mfas.models.mmdg.adapter import UAdapter, certainty, regrad
from mfas.models.registry import register_model


def adapter_pairs(modalities: tuple[str, ...], pairs: str) -> list[tuple[str, str]]:
    """(own, other) pairs with an adapter: ``rgb_hub`` (released: RGB <- each other modality and each other
    modality <- RGB, no depth <-> IR path) or ``all`` ordered pairs."""
    if pairs == "all" or "rgb" not in modalities:
        return [(a, b) for a in modalities for b in modalities if a != b]
    if pairs != "rgb_hub":
        raise ValueError(f"pairs must be 'rgb_hub' or 'all', got {pairs!r}")
    others = [m for m in modalities if m != "rgb"]
    return [("rgb", m) for m in others] + [(m, "rgb") for m in others]


def ssp_loss(f: torch.Tensor, label: torch.Tensor, domain: list[str] | None) -> torch.Tensor:
    """Single-side prototypical loss of features f (B, D): bona fide samples form one class, attacks one class
    per source domain; cross-entropy over the negative Euclidean distances to the class means of the batch
    (detached prototypes), as PMR's prototype loss that MMDG's code builds on."""
    if domain is None:
        domain = ["attack"] * len(label)
    names = ["bonafide" if int(y) == 1 else f"attack:{d}" for y, d in zip(label.tolist(), domain, strict=True)]
    classes = sorted(set(names))
    if len(classes) < 2:
        return f.sum() * 0.0
    idx = torch.tensor([classes.index(n) for n in names], device=f.device)
    onehot = F.one_hot(idx, len(classes)).float()
    protos = (onehot.T @ f.detach().float()) / onehot.sum(0)[:, None]
    return F.cross_entropy(-torch.cdist(f.float(), protos), idx)


class MMDG(PadModel):
    """Images per modality -> shared ViT with U-Adapters -> class tokens (B, D) -> concat (B, M*D) -> (B, 2).

    Args:
        size, img_size, pretrained, pos_embed: the ViT (:class:`~mfas.models.layers.mm_vit.MultiModalViT`).
        train_blocks: trainable last blocks (1 as released; -1 all). The final norm, class tokens, position
            embeddings, adapters and head always train.
        freeze_patch_embed: keep the per-modality patch embeddings frozen (released).
        adapter_dim, theta, adapter_drop: U-Adapter width (8), CDC theta (0.5), dropout (0.2).
        mc_p, mc_samples, mc_rate: Monte-Carlo dropout rate (0.3), draws (20), certainty exp(-rate * std) (2.25).
        eval_certainty: ``expected`` (inference uses the expected dropout std: deterministic, batch-independent)
            or ``sampled`` (draws as in training).
        pairs: which modality pairs get adapters (``rgb_hub`` as released, or ``all``).
        ssp_weight: weight of each modality's SSP loss (0.3).
        regrad: rebalance the SSP gradients (ReGrad); False adds the weighted SSP losses plainly.
        regrad_momentum: running-loss momentum that decides the fast modality (0.5).
    """

    supports_missing = True
    modal_features = True

    def __init__(self, modalities: tuple[str, ...] | list[str] = ("rgb", "depth", "ir"), img_size: int = 224,
                 size: dict | None = None, pretrained: str | None = None, pos_embed: str = "fresh",
                 train_blocks: int = 1, freeze_patch_embed: bool = True, adapter_dim: int = 8, theta: float = 0.5,
                 adapter_drop: float = 0.2, mc_p: float = 0.3, mc_samples: int = 20, mc_rate: float = 2.25,
                 eval_certainty: str = "expected", pairs: str = "rgb_hub", ssp_weight: float = 0.3,
                 regrad: bool = True, regrad_momentum: float = 0.5):
        super().__init__()
        if eval_certainty not in ("expected", "sampled"):
            raise ValueError(f"eval_certainty must be 'expected' or 'sampled', got {eval_certainty!r}")
        if not 0 < mc_p < 1 or mc_samples < 2:
            raise ValueError(f"mc_p must be in (0, 1) and mc_samples >= 2, got {mc_p!r}, {mc_samples!r}")
        self.modalities, self.input_size = tuple(modalities), (img_size, img_size)
        self.norm_stats = {m: HALF_STATS[m] for m in self.modalities}
        sz = {**VIT_B_16, **(size or {}), "img_size": img_size}
        self.vit = MultiModalViT(self.modalities, sz, pretrained, pos_embed=pos_embed)
        self.vit.freeze_blocks(train_blocks)
        if freeze_patch_embed:
            self.vit.patch_embed.requires_grad_(False)
        d = self.vit.embed_dim
        self.pairs = adapter_pairs(self.modalities, pairs)
        self.adapters = nn.ModuleList(
            nn.ModuleDict({f"{a}<-{b}".replace("<-", "_from_"): UAdapter(d, self.vit.grid, adapter_dim, theta,
                                                                         adapter_drop) for a, b in self.pairs})
            for _ in self.vit.blocks)
        self.num_features = d * len(self.modalities)
        self.head = nn.Linear(self.num_features, 2)
        self.mc = {"p": float(mc_p), "samples": int(mc_samples), "rate": float(mc_rate)}
        self.eval_certainty = eval_certainty
        self.ssp_weight, self.use_regrad, self.momentum = float(ssp_weight), bool(regrad), float(regrad_momentum)
        self.register_buffer("running_ssp", torch.zeros(len(self.modalities)), persistent=True)
        self.register_buffer("running_seen", torch.zeros((), dtype=torch.bool), persistent=True)

    def _block(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Block i on the stacked tokens (M*B, N, D) of all modalities -> (tokens, certainty (M*B, N))."""
        blk = self.vit.blocks[i]
        a = blk.ls1(blk.attn(blk.norm1(x)))
        cert = certainty(a, **self.mc, sampled=self.training or self.eval_certainty == "sampled")
        h = x + blk.drop_path1(a)
        y = blk.norm2(h)
        out = h + blk.drop_path2(blk.ls2(blk.mlp(y)))
        ys, cs = y.chunk(len(self.modalities)), cert.chunk(len(self.modalities))
        idx = {m: j for j, m in enumerate(self.modalities)}
        extra = [torch.zeros_like(ys[0]) for _ in self.modalities]
        for own, other in self.pairs:
            ad = self.adapters[i][f"{own}_from_{other}"]
            extra[idx[own]] = extra[idx[own]] + ad(ys[idx[own]], ys[idx[other]], cs[idx[other]])
        return out + torch.cat(extra), cert

    def forward(self, batch: dict) -> ModelOutput:
        present = present_mask(batch, self.modalities)
        dtype = self.vit.cls_token[self.modalities[0]].dtype
        x = torch.cat([self.vit.embed(modality_image(batch, m, present[:, i], HALF, channels=3, dtype=dtype), m)
                       for i, m in enumerate(self.modalities)])
        cert = None
        for i in range(len(self.vit.blocks)):
            x, cert = self._block(i, x)
        cls = self.vit.norm(x[:, 0]).chunk(len(self.modalities))
        z = torch.cat(cls, 1)
        feats = {f"cls_{m}": c for m, c in zip(self.modalities, cls, strict=True)}
        feats.update(embedding=z, present=present,
                     cls_certainty=torch.stack(cert[:, 0].chunk(len(self.modalities)), 1))  # (B, M)
        return ModelOutput(logits=self.head(z), features=feats)

    def branch_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Each modality's own trainable parameters (ReGrad modulates their gradients): its patch embedding,
        class token, position embedding and the adapters that write into its stream."""
        out: dict[str, list[nn.Parameter]] = {}
        for m in self.modalities:
            ps = [*self.vit.patch_embed[m].parameters(), self.vit.cls_token[m], self.vit.pos_embed[m]]
            for block in self.adapters:
                for name, ad in block.items():
                    if name.startswith(f"{m}_from_"):
                        ps += list(ad.parameters())
            out[m] = [p for p in ps if p.requires_grad]
        return out

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        y = batch["label"].long()
        ce = F.cross_entropy(output.logits.float(), y)
        out: dict[str, torch.Tensor] = {"ce": ce}
        present = output.features["present"]
        ssp = {}
        for i, m in enumerate(self.modalities):
            keep = present[:, i]
            dom = batch.get("domain")
            dom = [d for d, k in zip(dom, keep.tolist(), strict=True) if k] if dom is not None else None
            f = output.features[f"cls_{m}"]
            ssp[m] = ssp_loss(f[keep], y[keep], dom) if bool(keep.any()) else f.sum() * 0.0
            out[f"ssp_{m}"] = ssp[m]
        if not (self.use_regrad and self.training and torch.is_grad_enabled()):
            out["loss"] = ce + self.ssp_weight * sum(ssp.values())
            return out
        out["loss"] = ce + self._regrad_surrogate(ssp, output.features["cls_certainty"])
        return out

    def _regrad_surrogate(self, ssp: dict[str, torch.Tensor], cls_cert: torch.Tensor) -> torch.Tensor:
        """A term whose value is 0 and whose gradient is ReGrad's modulated SSP gradient on each modality's
        branch (nothing on shared parameters, as released): computed here with ``autograd.grad`` so that the one
        ``backward`` the engine runs (synchronised under DDP, accumulated over micro-batches) carries it."""
        branches = self.branch_parameters()
        params = [p for m in self.modalities for p in branches[m]]
        grads = {}
        for m in self.modalities:
            loss = self.ssp_weight * ssp[m]
            g = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) if loss.requires_grad \
                else [None] * len(params)
            grads[m] = list(g)
        with torch.no_grad():
            cur = torch.stack([self.ssp_weight * ssp[m].detach().float() for m in self.modalities])
            cc = cls_cert.detach().float().mean(0)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                # every rank must pick the same fast modality and weights (DDP broadcasts rank 0's buffers)
                both = torch.cat([cur, cc])
                torch.distributed.all_reduce(both)
                both /= torch.distributed.get_world_size()
                cur, cc = both[:len(cur)], both[len(cur):]
            if bool(self.running_seen):
                self.running_ssp.mul_(self.momentum).add_((1 - self.momentum) * cur)
            else:
                self.running_ssp.copy_(cur)
                self.running_seen.fill_(True)
            r = self.running_ssp
            j = int(r.argmin())
            fast = self.modalities[j] if bool((r[j] < torch.cat([r[:j], r[j + 1:]])).all()) else None
        cert = {m: float(cc[i]) for i, m in enumerate(self.modalities)}
        term = params[0].new_zeros(()) if params else torch.zeros(())
        start = 0
        for m in self.modalities:
            n = len(branches[m])
            sl = slice(start, start + n)
            start += n
            # each modality's own slice of every loss's gradient
            own = grads[m][sl]
            per = {k: grads[k][sl] for k in self.modalities}
            for p, g in zip(branches[m], regrad(own, per, m, fast, cert), strict=True):
                if g is not None:
                    term = term + (p * g).sum() - (p.detach() * g).sum()
        return term


TINY = {"patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 4.0}


@register_model("mmdg", img_size=224)
@register_model("mmdg-tiny", img_size=112, size=TINY)
def mmdg(**kwargs: object) -> MMDG:
    return MMDG(**kwargs)
