"""The MMDG benchmark's baselines (vit, clip, flip-v, flip-it, mmdg, cmfl, mm-cdcn, vitaf): what each method's
paper or code lays down (its losses, its layers, its weights), and what a user relies on (batch independence,
a short run that learns, checkpoints that load). The checks shared with every model (each modality reaches
the gradient and moves the score, the feature contract) are in test_model_contract.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mfas.errors import ConfigError
from mfas.models import create_model

SIZE = 32
VIT = {"img_size": SIZE, "size": {"patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 2}}
CLIP = {"embed_dim": 32,
        "vision": {"image_size": SIZE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
#: registry name -> overrides that make it build and run in a moment
SMALL = {
    "vit-tiny": VIT, "vitaf-tiny": {**VIT, "adapter_dim": 8}, "mmdg-tiny": VIT,
    "clip-tiny": {"clip": CLIP}, "flip-v-tiny": {"clip": CLIP}, "flip-it-tiny": {"clip": CLIP},
    "cmfl-tiny": {"img_size": SIZE, "growth": 4, "blocks": (1, 1), "init_features": 8},
    "mm-cdcn-tiny": {"img_size": SIZE, "channels": (4, 8, 8, 8)},
}


def batch(b: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 3, SIZE, SIZE, generator=g), "depth": torch.randn(b, 1, SIZE, SIZE, generator=g),
            "ir": torch.randn(b, 1, SIZE, SIZE, generator=g), "present": torch.ones(b, 3, dtype=torch.bool),
            "label": torch.arange(b) % 2, "domain": ["A"] * (b // 2) + ["B"] * (b - b // 2)}


def build(name: str, **extra: object) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**SMALL[name], **extra})


def reached(m: torch.nn.Module, loss: torch.Tensor) -> set[str]:
    m.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {n for n, p in m.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_score_is_independent_of_the_batch_and_repeatable(name: str):
    m = build(name).eval()
    b = batch(5)
    b["present"][3, 1] = False  # a missing depth in the batch must not move the others
    with torch.no_grad():
        whole = m(b).score
        again = m(b).score
        alone = torch.cat([m({k: (v[i:i + 1] if torch.is_tensor(v) else v[i:i + 1]) for k, v in b.items()}).score
                           for i in range(5)])
    assert torch.equal(whole, again)
    assert torch.allclose(whole, alone, atol=1e-5), (whole, alone)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_short_run_learns_a_fixed_batch(name: str):
    """Twenty AdamW steps on one batch (a class cue in every modality) bring the model's own loss well down and
    order the scores by class: an implementation whose loss does not reach its weights stays where it began."""
    m = build(name).train()
    b = batch(8, seed=3)
    cue = (b["label"].float() * 2 - 1)[:, None, None, None]
    for k in ("rgb", "depth", "ir"):
        b[k] = b[k] * 0.3 + cue
    lr = 1e-2 if name in ("cmfl-tiny", "mm-cdcn-tiny") else 1e-3  # small CNNs from scratch take a larger step
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)

    def eval_loss() -> tuple[float, torch.Tensor]:
        m.eval()
        with torch.no_grad():
            out = m(b)
            loss = float(m.losses(b, out)["loss"])
        m.train()
        return loss, out.score

    first, _ = eval_loss()
    for _ in range(20):
        loss = m.losses(b, m(b))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, s = eval_loss()
    assert s[b["label"] == 1].min() > s[b["label"] == 0].max(), s
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("name,extra", [*((n, {}) for n in sorted(SMALL)), ("clip-tiny", {"head": "linear"})])
def test_every_trainable_parameter_gets_a_gradient(name: str, extra: dict):
    """DDP (find_unused_parameters=False, Lightning's default) fails on a trainable parameter the loss never
    reaches: FLIP-V's leftover text-tower parts once were."""
    m = build(name, **extra).train()
    b = batch()
    m.losses(b, m(b))["loss"].backward()
    unused = [n for n, p in m.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused, unused


@pytest.mark.parametrize("name", sorted(SMALL))
def test_scores_stay_finite_under_bf16_autocast(name: str):
    m = build(name).eval()
    b = batch()
    b["rgb"] = b["rgb"] + 3.0  # push maps and probabilities to their ends
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        s = m(b).score
    assert torch.isfinite(s).all() and ((s >= 0) & (s <= 1)).all(), s


def test_vit_losses_reach_their_heads():
    m = build("vit-tiny").train()
    b = batch()
    losses = m.losses(b, m(b))
    ce, rgb = reached(m, losses["ce"]), reached(m, losses["ce_rgb"])
    assert "head.weight" in ce and not any(n.startswith("modal_head") for n in ce)
    assert "modal_head.rgb.weight" in rgb and "modal_head.depth.weight" not in rgb and "head.weight" not in rgb
    assert "vit.cls_token.rgb" in rgb and "vit.cls_token.depth" not in rgb
    assert torch.allclose(losses["loss"], losses["ce"] + losses["ce_rgb"] + losses["ce_depth"] + losses["ce_ir"])


def test_vit_freezes_all_but_the_last_blocks():
    m = build("vit-tiny", train_blocks=1)
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert not any(n.startswith("vit.blocks.0.") for n in trainable)
    assert any(n.startswith("vit.blocks.1.") for n in trainable) and "vit.norm.weight" in trainable


def test_vit_weights_load_from_timm_and_torchvision_layouts(tmp_path: Path):
    """torchvision's ViT (MMDG's starting point) converted to timm's names gives the same class token."""
    from safetensors.torch import save_file
    from torchvision.models.vision_transformer import VisionTransformer as TV

    from mfas.models.layers.vit import build_vit, load_vit_weights

    torch.manual_seed(0)
    tv = TV(image_size=SIZE, patch_size=8, num_layers=2, num_heads=2, hidden_dim=24, mlp_dim=96).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    size = {"img_size": SIZE, "patch_size": 8, "embed_dim": 24, "depth": 2, "num_heads": 2, "mlp_ratio": 4.0}
    ours = build_vit(size).eval()
    load_vit_weights(ours, str(tmp_path / "tv.pth"), size)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        want = tv.encoder(torch.cat([tv.class_token.expand(2, -1, -1),
                                     tv.conv_proj(x).flatten(2).transpose(1, 2)], 1))[:, 0]
        assert torch.allclose(ours(x), want, atol=1e-5)
    save_file(ours.state_dict(), tmp_path / "timm.safetensors")
    m = build("vit-tiny", size={k: v for k, v in size.items() if k != "img_size"}, pretrained=str(tmp_path /
                                                                                               "timm.safetensors"))
    assert torch.equal(m.vit.blocks[1].mlp.fc1.weight, ours.blocks[1].mlp.fc1.weight)
    assert torch.equal(m.vit.patch_embed["ir"].proj.weight, ours.patch_embed.proj.weight)
    assert torch.equal(m.vit.cls_token["depth"], ours.cls_token)
    with pytest.raises(ConfigError, match="no such file"):
        build("vit-tiny", pretrained=str(tmp_path / "nothing.pth"))
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be read"):
        build("vit-tiny", pretrained=str(tmp_path / "bad.pth"))


def test_vitaf_adapters_start_as_identity_and_the_cosine_loss_reaches_only_them():
    from mfas.models.vitaf import Adapter

    a = Adapter(24, 8)
    x = torch.randn(2, 5, 24)
    assert torch.allclose(a(x), x, atol=1e-4)
    m = build("vitaf-tiny").train()
    b = batch()
    losses = m.losses(b, m(b))
    cos = reached(m, losses["adapter_cos"])
    assert cos and all(".a1" in n or ".a2" in n or n.endswith((".gamma", ".beta"))
                       or n.startswith(("vit.cls_token", "vit.pos_embed")) for n in cos), cos
    assert "head.embedder.weight" in reached(m, losses["ce"])
    frozen = {n for n, p in m.named_parameters() if not p.requires_grad}
    assert "vit.blocks.0.block.attn.qkv.weight" in frozen and "vit.patch_embed.rgb.proj.weight" in frozen
    # feature-wise transformation: noise in training only
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(b).logits, m(b).logits)


def test_mmdg_certainty_draws_match_monte_carlo_dropout():
    from mfas.models.mmdg.adapter import certainty, expected_dropout_std

    torch.manual_seed(0)
    a = torch.full((1, 1, 20000), 0.8)
    drawn = (torch.rand(20, *a.shape) >= 0.3) * a / 0.7  # 20 real dropout draws
    mc = torch.exp(-2.25 * drawn.std(0, unbiased=True)).mean(-1)
    assert torch.allclose(certainty(a), mc, atol=5e-3)
    assert abs(expected_dropout_std(20, 0.3) * 0.8 - float(drawn.std(0).mean())) < 5e-3
    assert torch.equal(certainty(a, sampled=False), certainty(a, sampled=False))
    # at inference, the expectation of what training draws (not the certainty of the expected std)
    mixed = torch.rand(1, 1, 20000) * 3
    drawn = (torch.rand(20, *mixed.shape) >= 0.3) * mixed / 0.7
    mc = torch.exp(-2.25 * drawn.std(0, unbiased=True)).mean(-1)
    assert torch.allclose(certainty(mixed, sampled=False), mc, atol=5e-3)


def test_regrad_projections_by_hand():
    from mfas.models.mmdg.adapter import regrad

    t = torch.tensor
    cert = {"rgb": 0.5, "depth": 0.25}
    # slow modality: another's gradient that agrees keeps its part along the own one
    out = regrad([t([1.0, 0.0])], {"rgb": [t([1.0, 0.0])], "depth": [t([1.0, 1.0])]}, "rgb", None, cert)
    assert torch.allclose(out[0], t([1.0, 0.0]) + 0.25 * t([1.0, 0.0]))
    # ... and one that conflicts keeps its part orthogonal to it
    out = regrad([t([1.0, 0.0])], {"rgb": [t([1.0, 0.0])], "depth": [t([-1.0, 1.0])]}, "rgb", None, cert)
    assert torch.allclose(out[0], t([1.0, 0.0]) + 0.25 * t([0.0, 1.0]))
    # fast modality: its own gradient projected on the others' sum, weighted by its certainty, plus the others
    out = regrad([t([1.0, 1.0])], {"rgb": [t([1.0, 1.0])], "depth": [t([2.0, 0.0])]}, "rgb", "rgb", cert)
    assert torch.allclose(out[0], 0.5 * t([1.0, 0.0]) + t([2.0, 0.0]))


def test_mmdg_regrad_leaves_shared_parameters_to_the_fused_loss():
    """With ReGrad the SSP losses reach only the modalities' branches (shared block and head get the fused
    cross-entropy's gradient alone), the surrogate adds nothing to the loss' value, and the branches' gradients
    differ from the plain weighted sum."""
    b = batch(6)
    grads = {}
    for mode in ("ce", "plain", "regrad"):
        m = build("mmdg-tiny", regrad=mode == "regrad", adapter_drop=0.0).train()
        torch.manual_seed(1)  # the same Monte-Carlo draws in the three runs
        out = m(b)
        losses = m.losses(b, out)
        loss = losses["ce"] if mode == "ce" else losses["loss"]
        if mode == "regrad":
            assert torch.allclose(loss, losses["ce"])
        m.zero_grad()
        loss.backward()
        grads[mode] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    assert torch.allclose(grads["regrad"]["head.weight"], grads["ce"]["head.weight"])
    assert torch.allclose(grads["regrad"]["vit.blocks.1.mlp.fc1.weight"], grads["ce"]["vit.blocks.1.mlp.fc1.weight"])
    assert not torch.allclose(grads["plain"]["vit.blocks.1.mlp.fc1.weight"], grads["ce"]["vit.blocks.1.mlp.fc1.weight"])
    assert not torch.allclose(grads["regrad"]["vit.cls_token.depth"], grads["ce"]["vit.cls_token.depth"])
    assert not torch.allclose(grads["regrad"]["vit.cls_token.depth"], grads["plain"]["vit.cls_token.depth"])


def test_mmdg_ssp_loss_pulls_to_class_means():
    from mfas.models.mmdg import ssp_loss

    f = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    label = torch.tensor([1, 1, 0, 0])
    assert float(ssp_loss(f, label, ["A", "A", "B", "B"])) < 1e-3
    mixed = torch.tensor([[0.0, 0.0], [5.0, 5.0], [0.1, 0.0], [5.1, 5.0]])
    assert abs(float(ssp_loss(mixed, label, ["A", "A", "B", "B"])) - math.log(2)) < 1e-3  # same means: chance
    assert float(ssp_loss(f, torch.ones(4, dtype=torch.long), None)) == 0.0  # one class: nothing to separate


def test_cmfl_loss_is_the_released_two_stream_loss():
    from mfas.models.cmfl import cmfl_term

    p, q = torch.tensor([0.9, 0.3]), torch.tensor([0.6, 0.8])  # true-class probabilities of two streams
    ce_p = -torch.log(p)
    w = q * 2 * p * q / (p + q)
    assert torch.allclose(cmfl_term(ce_p, p, [q], 3.0), (1 - w) ** 3 * ce_p, atol=1e-6)
    m = build("cmfl-tiny").train()
    b = batch()
    losses = m.losses(b, m(b))
    assert torch.allclose(losses["loss"], 0.5 * (losses["cmfl_rgb"] + losses["cmfl_depth"] + losses["cmfl_ir"]) / 3
                          + 0.5 * losses["bce_joint"])
    rgb = reached(m, losses["cmfl_rgb"])
    assert "stream_heads.rgb.weight" in rgb and "joint.weight" not in rgb
    assert "stream_heads.depth.weight" in rgb  # the weight w reads the other streams, and is not detached
    assert "joint.weight" in reached(m, losses["bce_joint"])
    with pytest.raises(ConfigError, match="at least two modalities"):
        create_model("cmfl-tiny", modalities=["rgb"])


def test_central_difference_convolution_by_hand():
    from mfas.models.layers.cdc import CDConv2d

    torch.manual_seed(0)
    conv = CDConv2d(2, 3, 3, padding=1, theta=0.7)
    x = torch.randn(1, 2, 6, 6)
    xp = F.pad(x, (1, 1, 1, 1))
    want = torch.zeros(1, 3, 6, 6)
    for i in range(6):
        for j in range(6):
            patch = xp[0, :, i:i + 3, j:j + 3]
            centre = x[0, :, i, j][:, None, None]
            vanilla = (conv.weight * patch).sum((1, 2, 3))
            diff = (conv.weight * (patch - centre)).sum((1, 2, 3))
            want[0, :, i, j] = 0.7 * diff + 0.3 * vanilla
    assert torch.allclose(conv(x), want, atol=1e-5)
    plain = CDConv2d(2, 3, 3, padding=1, theta=0.0, bias=False)
    assert torch.allclose(plain(x), F.conv2d(x, plain.weight, padding=1))
    strided = CDConv2d(2, 3, 3, stride=2, padding=1)
    assert strided(x).shape == (1, 3, 3, 3)


def test_mm_cdcn_map_supervision():
    from mfas.models.mm_cdcn import contrastive_depth_loss

    flat = torch.ones(2, 7, 7)
    assert float(contrastive_depth_loss(flat, flat * 0)) == 0.0  # a flat map has no contrast to miss
    bumpy = flat.clone()
    bumpy[:, 3, 3] = 3.0
    assert float(contrastive_depth_loss(bumpy, flat)) > 0
    m = build("mm-cdcn-tiny").train()
    b = batch()
    out = m(b)
    assert out.features["map"].shape == (4, SIZE // 8, SIZE // 8)
    assert torch.allclose(out.score, out.features["map"].mean((1, 2)).clamp(1e-6, 1 - 1e-6), atol=1e-6)
    losses = m.losses(b, out)
    for key in ("mse", "contrastive_depth"):
        assert {"branches.rgb.stem.0.weight", "branches.ir.stem.0.weight"} <= reached(m, losses[key])
    slip = build("mm-cdcn-tiny", depth_skip_from_rgb=True).eval()
    with torch.no_grad():
        assert not torch.allclose(slip(b).logits, build("mm-cdcn-tiny").eval()(b).logits)


def test_flip_mixer_starts_from_the_mean_of_the_modalities():
    m = build("flip-v-tiny")
    x = torch.randn(2, 5, 4, 4)
    rgb, grey = x[:, :3], x[:, 3:].sum(1, keepdim=True)
    assert torch.allclose(m.mixer(x), (rgb + grey) / 3, atol=1e-6)
    assert not hasattr(m.clip, "transformer")  # FLIP-V has no text tower
    assert m.feature_keys() == ("embedding", "present")


@pytest.mark.parametrize("name", ["clip-tiny", "flip-it-tiny"])
def test_prompt_classes_train_the_text_tower_and_are_cached_at_inference(name: str):
    m = build(name).train()
    b = batch()
    assert any(n.startswith("clip.transformer") for n in reached(m, m.losses(b, m(b))["ce"]))
    m.eval()
    with torch.no_grad():
        first = m.prompts(m.clip)
        assert m.prompts(m.clip) is first  # cached while the weights stay
        m.clip.token_embedding.weight.add_(0.1)
        assert m.prompts(m.clip) is not first


@pytest.mark.parametrize("name", ["clip-tiny", "flip-it-tiny", "flip-v-tiny"])
def test_clip_based_models_load_local_clip_weights(name: str, tmp_path: Path):
    from safetensors.torch import save_file

    from mfas.models.layers.clip import build_clip

    torch.manual_seed(5)
    src = build_clip(CLIP)
    save_file(src.state_dict(), tmp_path / "clip.safetensors")
    m = build(name, pretrained=str(tmp_path / "clip.safetensors"))
    assert torch.equal(m.clip.visual.conv1.weight, src.visual.conv1.weight)
    assert torch.equal(m.clip.logit_scale, src.logit_scale)
    with pytest.raises(ConfigError, match="no such file"):
        build(name, pretrained=str(tmp_path / "none.pt"))


def test_cmfl_loads_densenet_weights_and_averages_the_first_kernel_for_grey_streams(tmp_path: Path):
    from torchvision.models.densenet import DenseNet

    torch.manual_seed(0)
    src = DenseNet(growth_rate=4, block_config=(1, 1, 1, 1), num_init_features=8)
    torch.save(src.state_dict(), tmp_path / "densenet.pth")
    m = build("cmfl-tiny", pretrained=str(tmp_path / "densenet.pth"))
    w = src.features.conv0.weight
    assert torch.equal(m.streams["rgb"].conv0.weight, w)
    assert torch.allclose(m.streams["depth"].conv0.weight, w.mean(1, keepdim=True))
    assert torch.equal(m.streams["ir"].denseblock2.denselayer1.conv1.weight,
                       src.features.denseblock2.denselayer1.conv1.weight)
    # torchvision's own 2017 file: old names (norm.1), no num_batches_tracked; and a wrapped, prefixed one
    old = {k.replace("norm1", "norm.1").replace("conv1", "conv.1"): v for k, v in src.state_dict().items()
           if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": {f"module.{k}": v for k, v in old.items()}}, tmp_path / "old.pth")
    m2 = build("cmfl-tiny", pretrained=str(tmp_path / "old.pth"))
    assert torch.equal(m2.streams["rgb"].denseblock1.denselayer1.norm1.weight,
                       src.features.denseblock1.denselayer1.norm1.weight)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_trains_through_the_engine_and_reloads(name: str, sim_store: Path, tmp_path: Path):
    import csv

    import mfas
    from engine_helpers import tiny_config
    from mfas.engine.train import train

    cfg = tiny_config(sim_store, tmp_path, name=name, trainer={"max_epochs": 1, "log_every_n_steps": 1},
                      data={"batches_per_epoch": 2})
    cfg = cfg.model_copy(update={"model": cfg.model.__class__(name=name, **SMALL[name])})
    run = train(cfg)
    m = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= m["tests"]["W"]["threshold_free"]["auc"] <= 1.0
    header = set(next(csv.reader((run / "logs" / "metrics.csv").open())))
    model = create_model(name, **SMALL[name])
    b = batch()
    model.train()
    terms = set(model.losses(b, model(b)))
    assert {f"train/{t}" for t in terms} <= header, (terms, header)
    det = mfas.load(run)
    assert det.model.config["name"] == name


@pytest.mark.parametrize("name", sorted(SMALL))
def test_exports_to_onnx_with_the_same_scores(name: str, tmp_path: Path):
    """Every baseline's inference is one graph of fixed structure (a missing modality is a ``where`` on the
    data), so the exported file scores as the weights do, a missing modality included."""
    from mfas.engine.export import _export_fp32, _ort_scores, probe_inputs

    m = build(name).eval()
    ex = probe_inputs(m)
    ex["present"][1, 2] = False
    _export_fp32(m.export_view(), ex, tmp_path / "m.onnx", 17)
    with torch.no_grad():
        want = m.export_view()(**ex).numpy()
    assert abs(_ort_scores(tmp_path / "m.onnx", ex) - want).max() < 1e-4
