"""MMDA: sizes, shapes, gradients under each freezing option, compat modes, MoE, RS2, MD2A partners,
text-feature caching and CLIP weights in the three checkpoint layouts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mfas.errors import ConfigError
from mfas.models import create_model
from mfas.models.mmda.backbone import build_clip, load_clip_weights
from mfas.models.mmda.md2a import DomainDiffAttention, first_same_domain, lambda_init_for, random_same_domain
from mfas.models.mmda.moe import MoE
from mfas.models.mmda.rs2 import LIVE_PROMPTS, SPOOF_PROMPTS, rs2_logits, smoothed_targets, soft_ce

MICRO_CLIP = {"embed_dim": 32,
              "vision": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
              "text": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
MICRO = {"clip": MICRO_CLIP, "num_heads": 4, "udsa_levels": 2}


def batch(b: int = 4, size: int = 32, seed: int = 0, domains: list[str] | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 3, size, size, generator=g), "depth": torch.randn(b, 1, size, size, generator=g),
            "ir": torch.randn(b, 1, size, size, generator=g), "present": torch.ones(b, 3, dtype=torch.bool),
            "label": torch.arange(b) % 2, "domain": domains or ["A", "A", "B", "B", "C", "C"][:b]}


def sub(b: dict, idx: list[int]) -> dict:
    return {k: (v[idx] if torch.is_tensor(v) else [v[i] for i in idx]) for k, v in b.items()}


def test_full_size_parameter_counts_match_the_spec():
    m = create_model("mmda")
    parts = {name: sum(p.numel() for p in ps) for name, ps, _ in m.parameter_parts()}
    assert parts["md2a"] == pytest.approx(10.51e6, rel=2e-3)
    assert parts["udsa"] == pytest.approx(132.51e6, rel=2e-3)  # 14 blocks of 9.465M
    assert parts["classifier"] == pytest.approx(8.41e6, rel=2e-3)
    adapters = parts["md2a"] + parts["udsa"] + parts["classifier"]
    assert adapters == pytest.approx(151.4e6, rel=2e-3)
    clip = parts["clip.visual"] + parts["clip.text"] + parts["clip.logit_scale"]
    assert clip == pytest.approx(149.6e6, rel=2e-3)
    assert sum(parts.values()) == sum(p.numel() for p in m.parameters())
    assert m.input_size == (224, 224)


def test_shapes_and_fifteen_alignment_levels():
    m = create_model("mmda-tiny", clip=MICRO_CLIP, num_heads=4).eval()
    b = batch()
    out = m(b)
    assert out.logits.shape == (4, 2)
    assert out.features["align_logits"].shape == (15, 4, 2)  # 2 x 7 + 1 levels
    assert out.features["final"].shape == (4, 32) and out.features["tokens"].shape == (4, 3, 32)
    assert out.features["text_spoof"].shape == (24, 32) and out.features["text_live"].shape == (23, 32)
    assert len(SPOOF_PROMPTS) == 24 and len(LIVE_PROMPTS) == 23


@pytest.mark.parametrize("freeze", ["none", "text", "backbone"])
def test_gradients_reach_exactly_the_trainable_parameters(freeze: str):
    torch.manual_seed(0)
    m = create_model("mmda-tiny", freeze=freeze, **MICRO).train()
    b = batch()
    m.losses(b, m(b))["loss"].backward()
    text = {id(p) for p in m.text_parameters()}
    for name, p in m.named_parameters():
        in_clip = name.startswith("clip.")
        frozen = (freeze == "backbone" and in_clip) or (freeze == "text" and id(p) in text)
        assert p.requires_grad == (not frozen), name
        if frozen:
            assert p.grad is None, name
        else:
            assert p.grad is not None, name
    # the parts that carry the method's ideas get non-zero gradients
    for name in ("md2a.attn.dq.weight", "md2a.attn.lambda_q1", "udsa.refine.1.attn.in_proj_weight",
                 "udsa.remap.0.moe.router.weight", "classifier.head.weight"):
        assert dict(m.named_parameters())[name].grad.abs().sum() > 0, name
    if freeze != "backbone":
        assert m.clip.logit_scale.grad.abs() > 0 and m.clip.visual.conv1.weight.grad.abs().sum() > 0


def test_fits_a_fixed_batch():
    """Classifier and RS2 losses fall to their floor (-(log 1/1.1 + 0.1 log 0.1/1.1) = 0.335 with the (1.0, 0.1)
    targets) on a fixed batch: the whole path from pixels to both heads learns."""
    torch.manual_seed(0)
    m = create_model("mmda-tiny", **MICRO).train()
    b = batch(8, domains=["A"] * 4 + ["B"] * 4)
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    for _ in range(40):
        terms = m.losses(b, m(b))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
    floor = -(math.log(1 / 1.1) + 0.1 * math.log(0.1 / 1.1))
    assert float(terms["ce"].detach()) < floor + 0.1
    assert float(terms["rs2"].detach()) < 5 * (floor + 0.1)  # 2 x 2 + 1 levels


def test_clean_mode_score_is_independent_of_the_batch():
    torch.manual_seed(0)
    m = create_model("mmda-tiny", **MICRO)
    m.train()
    b = batch(6)
    m(b)  # one training pass fills the running reference
    for partner_eval in ("self", "reference"):
        m.partner_eval = partner_eval
        m.eval()
        with torch.no_grad():
            full = m(b).score
            alone = torch.cat([m(sub(b, [i])).score for i in range(6)])
            other = m(sub(b, [5, 2, 0])).score
        assert torch.allclose(full, alone, atol=1e-5), partner_eval
        assert torch.allclose(other, full[[5, 2, 0]], atol=1e-5)
        with torch.no_grad():
            assert torch.equal(m(b).score, full)  # deterministic


def test_official_mode_has_the_documented_batch_dependence():
    torch.manual_seed(0)
    m = create_model("mmda-tiny", compat="official", **MICRO).eval()
    b = batch(6, domains=["A"] * 6)
    with torch.no_grad():
        torch.manual_seed(1)
        full = m(b).score
        torch.manual_seed(1)
        again = m(b).score
        torch.manual_seed(1)
        alone = torch.cat([m(sub(b, [i])).score for i in range(6)])
    assert torch.equal(full, again)  # repeatable when the RNG is fixed
    assert (full - alone)[1:].abs().max() > 1e-4  # partner = first sample, U-DSA attends over the batch


def test_partner_rules():
    assert first_same_domain(["A", "B", "A", "C", "B"]).tolist() == [0, 1, 0, 3, 1]
    doms = ["A", "B", "A", "C", "B", "A"]
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        p = random_same_domain(doms, g).tolist()
        assert p[3] == 3  # alone in its domain: itself
        for i, j in enumerate(p):
            assert doms[j] == doms[i] and (j != i or i == 3)
        seen.add(p[0])
    assert seen == {2, 5}  # both other A samples get chosen


def test_diff_attention_lambda_and_noise_map():
    assert lambda_init_for(12) == pytest.approx(0.8 - 0.6 * math.exp(-3.6)) and abs(lambda_init_for(12) - 0.7836) < 1e-4
    torch.manual_seed(0)
    a = DomainDiffAttention(32, 4, dropout=0.0).eval()
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        for p in (a.lambda_q1, a.lambda_k1, a.lambda_q2, a.lambda_k2):
            p.zero_()
        assert float(a.lam()) == pytest.approx(a.lambda_init)
        # same tokens as partner and the same projections: the noise map equals the signal map
        a.dq.weight.copy_(a.q.weight)
        a.dk.weight.copy_(a.k.weight)
        out = a(x, x)
        v = a.v(x).view(2, 3, 4, 8).transpose(1, 2)
        attn = (a.q(x).view(2, 3, 4, 8).transpose(1, 2) @ a.k(x).view(2, 3, 4, 8).transpose(1, 2).transpose(-1, -2)
                / math.sqrt(32)).softmax(-1)
        expect = ((1 - a.lambda_init) * attn @ v).transpose(1, 2).reshape(2, 3, 32)
        expect = F.rms_norm(expect, (32,), a.norm.weight, 1e-5) * (1 - a.lambda_init)
        assert torch.allclose(out, expect, atol=1e-5)


def expert(moe: MoE, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert e of ``moe`` written out as the separate module the released code has."""
    h = F.rms_norm(x, (x.shape[-1],), moe.norm_weight[e], moe.norm_eps) @ moe.w1[e] + moe.b1[e]
    a, gate = h.chunk(2, dim=-1)
    return (F.gelu(gate) * a * moe.mult_bias[e]) @ moe.w2[e] + moe.b2[e]


def test_moe_routing_and_auxiliary_losses():
    torch.manual_seed(0)
    moe = MoE(16)
    x = torch.randn(5, 3, 16)
    with torch.no_grad():
        moe.router.weight.zero_()  # uniform router: every gate 1/7
    moe.train()
    aux = moe(x)[1].detach()
    # top-1 is expert 0 everywhere: balance = 7^2 * mean_e(density_e * 1/7) = 1; z = (ln 7)^2
    assert float(aux) == pytest.approx(1e-2 * 1.0 + 1e-3 * math.log(7) ** 2, rel=1e-5)
    assert sum(p.numel() for p in moe.parameters()) == 4 * (16 + 16 * 84 + 84 + 42 + 42 * 16 + 16) + 3 * 16 + 7 * 16
    moe.eval()
    assert float(moe(x)[1]) == 0.0
    x = x.abs()
    with torch.no_grad():
        moe.router.weight[:2] = 1.0  # experts 0 and 1 tie on top: g1 = g2 = 0.5 >= 0.2, both routed
    y = moe(x)[0]
    expect = 0.5 * expert(moe, 0, x) + 0.5 * expert(moe, 1, x)
    assert torch.allclose(y, expect, atol=1e-6)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[0] = 0.3  # expert 0 dominates: for many tokens g2 falls below the threshold
    y = moe(x)[0]
    top = moe.router(x).softmax(-1).topk(2).values
    g1 = top[..., 0] / top.sum(-1)
    route2 = (top[..., 1] / top.sum(-1)) >= 0.2
    assert not route2.all() and (moe.router(x).argmax(-1) == 0).all()
    assert torch.allclose(y[~route2], (g1[..., None] * expert(moe, 0, x))[~route2], atol=1e-5)
    stochastic = MoE(16, eval_routing="stochastic").eval()
    with torch.no_grad():
        stochastic.load_state_dict(moe.state_dict())
    outs = {tuple(stochastic(x)[0].flatten().tolist()) for _ in range(8)}
    assert len(outs) > 1  # the released behaviour: second expert drawn at random even at eval


def test_rs2_logits_take_the_closest_prompt_and_smoothed_targets():
    e1, e2 = torch.eye(4)[0], torch.eye(4)[1]
    visual = torch.stack([e1, e2])
    spoof = torch.stack([e2, e1 + e2])
    live = torch.stack([e1, -e2])
    z = rs2_logits(visual, spoof, live, torch.tensor(100.0))
    assert torch.allclose(z, torch.tensor([[100 / math.sqrt(2), 100.0], [100.0, 0.0]]), atol=1e-4)
    y = smoothed_targets(torch.tensor([0, 1]))
    assert torch.equal(y, torch.tensor([[1.0, 0.1], [0.1, 1.0]]))
    logits = torch.randn(2, 2)
    assert torch.allclose(soft_ce(logits, y), F.cross_entropy(logits, y))


def test_text_features_are_cached_exactly_when_they_cannot_change():
    calls = []

    def count(module: torch.nn.Module, args: tuple) -> None:
        calls.append(1)

    for freeze, expect_train in (("none", 2), ("text", 1)):
        m = create_model("mmda-tiny", freeze=freeze, **MICRO)
        m.clip.token_embedding.register_forward_pre_hook(count)
        calls.clear()
        m.train()
        b = batch()
        m(b)
        m(b)
        assert len(calls) == expect_train, freeze
    m = create_model("mmda-tiny", **MICRO)
    m.clip.token_embedding.register_forward_pre_hook(count)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m.eval()
    calls.clear()
    with torch.no_grad():
        first = m(b).features["text_spoof"].clone()
        m(b)
    assert len(calls) == 1  # inference: computed once
    m.train()
    m.losses(b, out := m(b))["loss"].backward()
    opt.step()
    m.eval()
    calls.clear()
    with torch.no_grad():
        after = m(b).features["text_spoof"]
    assert len(calls) == 1 and not torch.allclose(first, after)  # a weight update invalidates the cache
    assert out.features["text_spoof"].requires_grad


def test_missing_modality_sees_a_black_image():
    m = create_model("mmda-tiny", **MICRO).eval()
    b = batch(2)
    b["present"][0, 1] = False
    black = dict(b)
    black["depth"] = b["depth"].clone()
    black["depth"][0] = -(127.5 / 255) / (128 / 255)
    black["present"] = torch.ones(2, 3, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(m(b).score, m(black).score, atol=1e-6)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_clip_weights_in_open_clip_layouts(tmp_path: Path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    src = build_clip(MICRO_CLIP).eval()
    x = torch.randn(2, 3, 32, 32)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "w.pt")
    traced = torch.jit.trace(src, (x, torch.zeros(1, 77, dtype=torch.long)), strict=False, check_trace=False)
    traced.save(str(tmp_path / "openai.pt"))  # TorchScript archive, as OpenAI released ViT-B/16
    for name in ("w.safetensors", "w.pt", "openai.pt"):
        dst = build_clip(MICRO_CLIP).eval()
        load_clip_weights(dst, str(tmp_path / name))
        with torch.no_grad():
            assert torch.equal(dst.encode_image(x), src.encode_image(x)), name
    m = create_model("mmda-tiny", **MICRO, pretrained=str(tmp_path / "w.safetensors"))
    assert torch.equal(m.clip.visual.conv1.weight, src.visual.conv1.weight)


def test_clip_weights_in_hugging_face_layout(tmp_path: Path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config={"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                     "eos_token_id": 49407, "bos_token_id": 49406, "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 16, "hidden_act": "quick_gelu"},
        projection_dim=32)
    hf = transformers.CLIPModel(cfg).eval()
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(tmp_path / "model.safetensors"))
    ours = build_clip(MICRO_CLIP).eval()
    load_clip_weights(ours, str(tmp_path / "model.safetensors"))
    import open_clip

    x, tok = torch.randn(2, 3, 32, 32), open_clip.tokenize(["a photo of a spoof face", "This is a real face"])
    with torch.no_grad():
        img, txt = hf.get_image_features(pixel_values=x), hf.get_text_features(input_ids=tok)
        img = img if torch.is_tensor(img) else img.pooler_output
        txt = txt if torch.is_tensor(txt) else txt.pooler_output
        assert torch.allclose(ours.encode_image(x), img, atol=1e-5)
        assert torch.allclose(ours.encode_text(tok), txt, atol=1e-5)


def test_bad_weights_and_options_are_clear_errors(tmp_path: Path):
    clip = build_clip(MICRO_CLIP)
    with pytest.raises(ConfigError, match="no such file"):
        load_clip_weights(clip, str(tmp_path / "nope.pt"))
    with pytest.raises(ConfigError, match="neither a file nor an open_clip tag.*openai"):
        load_clip_weights(clip, "no-such-tag")
    other = dict(MICRO_CLIP, embed_dim=16)
    torch.save(build_clip(other).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="wrong shape.*text_projection|wrong shape.*visual.proj"):
        load_clip_weights(clip, str(tmp_path / "other.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="junk.pt: cannot be read"):
        load_clip_weights(clip, str(tmp_path / "junk.pt"))
    with pytest.raises(ConfigError, match="has no option 'compt'"):
        create_model("mmda-tiny", compt="official")
    with pytest.raises(ValueError, match="compat must be one of"):
        create_model("mmda-tiny", compat="paper")


@pytest.mark.parametrize("compat", ["clean", "official"])
def test_trains_through_the_engine(sim_store: Path, tmp_path: Path, compat: str):
    import csv
    import json

    from engine_helpers import tiny_config
    from mfas.engine.train import train

    micro = {"batch_size": 3, "eval_batch_size": 3} if compat == "official" else {"batch_size": 6}
    cfg = tiny_config(sim_store, tmp_path, name=f"mmda-{compat}", data={**micro, "sampler": "random"},
                      trainer={"max_epochs": 1, "log_every_n_steps": 1,
                               "accumulate_grad_batches": 2 if compat == "official" else 1})
    cfg = cfg.model_copy(update={"model": cfg.model.__class__(name="mmda-tiny", compat=compat, **MICRO)})
    run = train(cfg)
    m = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= m["tests"]["W"]["threshold_free"]["auc"] <= 1.0
    header = next(csv.reader((run / "logs" / "metrics.csv").open()))
    assert {"train/ce", "train/rs2", "train/anchor", "train/moe_aux"} <= set(header)
    import mfas

    assert mfas.load(run).model.config["compat"] == compat
    if compat == "clean":  # the paper's Figure 6: final representations by domain and class
        from typer.testing import CliRunner

        from mfas.cli.main import app

        out = tmp_path / "tsne.png"
        res = CliRunner().invoke(app, ["tsne", str(run), "--what", "final", "--data", "sim:test", "--limit", "24",
                                       "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert out.stat().st_size > 0
        sid = next(csv.DictReader((run / "scores" / "W.csv").open()))
        res = CliRunner().invoke(app, ["explain", str(run), "--sample", sid["sample_id"], "--out", str(tmp_path)])
        assert res.exit_code == 2 and "Grad-CAM" in res.output  # one shared image tower: no per-modality maps
