"""U-DSA: U-shaped dual-space adaptation. ``levels`` refine blocks adapt the visual embedding and both
prompt sets together on the way down (one block per level, shared by the three); ``levels`` remap blocks
come back up with skips: r_{l-1} = remap_l(e_l) + e_{l-1} (not chained, as released). RS2 is applied at
the 2 * levels + 1 outputs [e_0 .. e_L, r_{L-1} .. r_0]; the final representation is r_0.
"""

from __future__ import annotations

import torch
from torch import nn

from mfas.models.mmda.moe import MoE

#: ``batch``: the released code's attention over the samples of a batch (an nn.MultiheadAttention fed
#: (B, 1, D) with batch_first=False); ``sample``: each sample's single token attends to itself only.
VISUAL_ATTENTION = ("batch", "sample")


class RefineBlock(nn.Module):
    """x1 = x + MHA(LN1 x); x2 = MoE(LN2 x1); out = x + x1 + x2 (the released double residual).

    ``forward(x, attend)`` takes rows x (R, 1, D) (one token per row: a sample's embedding or a prompt's)
    and ``attend``: ``"rows"`` lets the rows attend to each other (prompts of one class; samples of a
    batch in the released code), ``"self"`` keeps every row to itself.
    """

    def __init__(self, dim: int, num_heads: int, eval_routing: str = "deterministic"):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.moe = MoE(dim, eval_routing=eval_routing)

    def mix(self, x: torch.Tensor, attend: str) -> torch.Tensor:
        """x1 = x + MHA(LN1 x), (R, 1, D)."""
        h = self.ln1(x)
        if attend == "rows":
            h = h.transpose(0, 1)  # (1, R, D): the rows form one sequence
            a = self.attn(h, h, h, need_weights=False)[0].transpose(0, 1)
        else:
            a = self.attn(h, h, h, need_weights=False)[0]
        return x + a

    def forward(self, x: torch.Tensor, attend: str) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = self.mix(x, attend)
        x2, aux = self.moe(self.ln2(x1))
        return x + x1 + x2, aux

    def forward_sets(self, xs: list[torch.Tensor], attends: list[str]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """:meth:`forward` on several row sets (each attends as its ``attends`` entry says), with one MoE call
        over all of their rows: the same outputs and routing draws as one call per set, in that order; the
        experts' weight gradients then come from one batched product instead of one per set."""
        x1s = [self.mix(x, a) for x, a in zip(xs, attends, strict=True)]
        sizes = [x.shape[0] for x in xs]
        x2, aux = self.moe(self.ln2(torch.cat(x1s)), groups=sizes)
        return [x + x1 + y for x, x1, y in zip(xs, x1s, x2.split(sizes), strict=True)], aux


class UDSA(nn.Module):
    """``forward(e0, spoof, live)`` with e0 (B, D), spoof (Ns, D), live (Nl, D) returns
    (visual list of 2L+1 tensors (B, D), spoof list, live list (text paired with each visual level), aux).
    Prompt sets attend within their class; the visual rows attend as ``visual_attention`` says."""

    def __init__(self, dim: int, num_heads: int, levels: int = 7, visual_attention: str = "sample",
                 eval_routing: str = "deterministic", group_moe: bool = True):
        super().__init__()
        self.group_moe = group_moe
        if visual_attention not in VISUAL_ATTENTION:
            raise ValueError(f"visual_attention must be one of {VISUAL_ATTENTION}, got {visual_attention!r}")
        self.visual_attention = visual_attention
        self.refine = nn.ModuleList([RefineBlock(dim, num_heads, eval_routing) for _ in range(levels)])
        self.remap = nn.ModuleList([RefineBlock(dim, num_heads, eval_routing) for _ in range(levels)])

    def forward(self, e0: torch.Tensor, spoof: torch.Tensor, live: torch.Tensor,
                text_levels: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
                ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """``text_levels``: the prompt side as :meth:`text_levels` returns it (it does not depend on the images, so
        inference may compute it once); None computes it here, interleaved with the visual rows level by level,
        which is the released order of the random routing draws in training. With ``group_moe``, in training, a
        level's MoE runs once over the visual rows and both prompt sets (:meth:`RefineBlock.forward_sets`), with the
        same outputs and draws as the released three calls."""
        vis_mode = "rows" if self.visual_attention == "batch" else "self"
        es, ss, ls = [e0[:, None]], [spoof[:, None]], [live[:, None]]
        aux = e0.new_zeros(())
        for block in self.refine:
            if text_levels is None and self.group_moe and self.training:  # at inference (export) rows stay apart
                (e, s, t), a = block.forward_sets([es[-1], ss[-1], ls[-1]], [vis_mode, "rows", "rows"])
                es.append(e)
                ss.append(s)
                ls.append(t)
                aux = aux + a
                continue
            e, a1 = block(es[-1], vis_mode)
            es.append(e)
            aux = aux + a1
            if text_levels is None:
                s, a2 = block(ss[-1], "rows")
                t, a3 = block(ls[-1], "rows")
                ss.append(s)
                ls.append(t)
                aux = aux + a2 + a3
        levels = len(self.refine)
        vis = list(es)
        for lev in range(levels, 0, -1):
            r, a = self.remap[lev - 1](es[lev], vis_mode)
            vis.append(r + es[lev - 1])
            aux = aux + a
        if text_levels is not None:
            sp, lv = text_levels
        else:
            sp = [s[:, 0] for s in ss] + [ss[lev - 1][:, 0] for lev in range(levels, 0, -1)]
            lv = [t[:, 0] for t in ls] + [ls[lev - 1][:, 0] for lev in range(levels, 0, -1)]
        return [v[:, 0] for v in vis], sp, lv, aux

    def text_levels(self, spoof: torch.Tensor, live: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The prompt embeddings paired with each of the 2L + 1 visual levels: lists of (Ns, D) and (Nl, D)."""
        ss, ls = [spoof[:, None]], [live[:, None]]
        for block in self.refine:
            ss.append(block(ss[-1], "rows")[0])
            ls.append(block(ls[-1], "rows")[0])
        back = range(len(self.refine), 0, -1)
        return ([s[:, 0] for s in ss] + [ss[lev - 1][:, 0] for lev in back],
                [t[:, 0] for t in ls] + [ls[lev - 1][:, 0] for lev in back])
