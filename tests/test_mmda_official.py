"""MMDA ``compat: official`` against the released code (murInJ/MMDA): the experts' pre-norm epsilon, MD2A's
norm, weight decay on every parameter in one AdamW group, and fp32 official configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mfas.engine.config import load_config
from mfas.models import create_model
from mfas.models.mmda.md2a import DomainDiffAttention
from mfas.models.mmda.moe import MoE

ROOT = Path(__file__).resolve().parents[1]
MICRO_CLIP = {"embed_dim": 32,
              "vision": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
              "text": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
MICRO = {"clip": MICRO_CLIP, "num_heads": 4, "udsa_levels": 2}


def released_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) * weight, written out."""
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def test_moe_expert_prenorm_uses_the_released_eps():
    """The released experts are ``RMSNorm(dim)`` with the default eps 1e-6 (ours was 1e-5). With inputs of small
    RMS the epsilon dominates, so the two are told apart clearly."""
    torch.manual_seed(0)
    moe = MoE(16)
    assert moe.norm_eps == 1e-6
    with torch.no_grad():
        moe.norm_weight.uniform_(0.5, 1.5)
    x = 1e-3 * torch.randn(5, 16)  # mean(x^2) ~ 1e-6, the size of the epsilon
    got = moe.ffn(x)
    for e in range(moe.n_ffn):
        h = released_rms_norm(x, moe.norm_weight[e], 1e-6) @ moe.w1[e] + moe.b1[e]
        a, gate = h.chunk(2, dim=-1)
        expect = (F.gelu(gate) * a * moe.mult_bias[e]) @ moe.w2[e] + moe.b2[e]
        assert torch.allclose(got[e], expect, atol=1e-6, rtol=1e-5), e


@pytest.mark.parametrize("compat", ["clean", "official"])
def test_every_moe_of_the_model_uses_eps_1e_6(compat: str):
    m = create_model("mmda-tiny", compat=compat, **MICRO)
    moes = [mod for mod in m.modules() if isinstance(mod, MoE)]
    assert len(moes) == 1 + 2 * 2 + 1
    assert {mod.norm_eps for mod in moes} == {1e-6}


def test_md2a_norm_is_an_rms_norm_with_the_released_eps():
    """Released MD2A: ``RMSNorm(d_model, eps=1e-5)`` over the concatenated heads (an RMS norm: the L2-form class in
    the repository takes no eps). Small outputs tell eps 1e-5 from an L2 norm times sqrt(d)."""
    torch.manual_seed(0)
    a = DomainDiffAttention(32, 4, dropout=0.0)
    assert a.norm.eps == 1e-5
    with torch.no_grad():
        a.norm.weight.uniform_(0.5, 1.5)
    x = 1e-3 * torch.randn(2, 3, 32)
    assert torch.allclose(a.norm(x), released_rms_norm(x, a.norm.weight, 1e-5), atol=1e-7, rtol=1e-5)
    l2 = F.normalize(x, dim=-1) * math.sqrt(32) * a.norm.weight
    assert not torch.allclose(a.norm(x), l2, rtol=1e-2)


def groups_by_name(m: torch.nn.Module, wd: float = 0.1) -> list[tuple[float, set[str]]]:
    names = {id(p): n for n, p in m.named_parameters()}
    return [(g["weight_decay"], {names[id(p)] for p in g["params"]}) for g in m.param_groups(wd)]


def test_moe_names_its_stacked_biases_norms_and_constants():
    assert MoE(8).no_weight_decay() == {"b1", "b2", "norm_weight", "mult_bias", "const"}


def test_clean_mode_decays_weight_matrices_only():
    m = create_model("mmda-tiny", **MICRO)
    groups = groups_by_name(m)
    decayed = set().union(*[n for wd, n in groups if wd > 0])
    kept = set().union(*[n for wd, n in groups if wd == 0])
    assert decayed | kept == {n for n, _ in m.named_parameters()} and not decayed & kept
    for name in ("md2a.attn.q.weight", "md2a.moe.w1", "md2a.moe.w2", "md2a.moe.router.weight", "md2a.proj.weight",
                 "udsa.refine.0.attn.in_proj_weight", "classifier.head.weight", "clip.visual.conv1.weight",
                 "clip.token_embedding.weight", "clip.visual.proj", "clip.text_projection"):
        assert name in decayed, name
    for name in ("md2a.moe.b1", "md2a.moe.b2", "md2a.moe.norm_weight", "md2a.moe.mult_bias", "md2a.moe.const",
                 "udsa.remap.1.moe.const", "classifier.moe.mult_bias", "md2a.attn.lambda_q1", "md2a.attn.norm.weight",
                 "udsa.refine.0.attn.in_proj_bias", "clip.logit_scale", "clip.visual.class_embedding",
                 "clip.visual.positional_embedding", "clip.positional_embedding", "md2a.ln1.weight"):
        assert name in kept, name


@pytest.mark.parametrize("freeze", ["none", "text"])
def test_official_mode_decays_every_trainable_parameter_in_one_group(freeze: str):
    m = create_model("mmda-tiny", compat="official", freeze=freeze, **MICRO)
    groups = groups_by_name(m, 5e-5)
    assert len(groups) == 1 and groups[0][0] == 5e-5
    assert groups[0][1] == {n for n, p in m.named_parameters() if p.requires_grad}
    assert "md2a.moe.b1" in groups[0][1] and "clip.visual.positional_embedding" in groups[0][1]
    opt = torch.optim.AdamW(m.param_groups(5e-5), lr=5e-6)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-5]


def test_official_configs_train_in_fp32_and_fast_ones_in_bf16():
    official = sorted((ROOT / "configs/mmda/official").glob("*.yaml"))
    fast = sorted((ROOT / "configs/mmda/fast").glob("*.yaml"))
    assert len(official) == len(fast) == 10
    for path in official:
        cfg = load_config(path)
        assert cfg.trainer.precision == "32-true", path.name
        assert cfg.model.overrides["compat"] == "official" and cfg.optim.weight_decay == 5e-5
    for path in fast:
        assert load_config(path).trainer.precision == "bf16-mixed", path.name
    # --set switches an official run to bf16 without editing the file
    cfg = load_config(official[0], ["trainer.precision=bf16-mixed"])
    assert cfg.trainer.precision == "bf16-mixed"
