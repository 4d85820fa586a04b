"""Checks every multimodal model must pass, the ones that would have caught a fusion that ignores a modality:

- with the classification loss alone, at initialisation, every present modality gets a gradient (on its
  input, and on its own extractor where it has one) within a factor of 100 of the largest;
- replacing one present modality's input changes the logits, for each modality and in every fusion mode:
  by more than a tenth of how much they vary across the batch (at a ViT's initialisation a constant, the
  class token's position embedding, dominates the logits, so a change relative to their size says little;
  relative to their spread, a working fusion gives 0.4 to 1.8 here and a fusion that drops a modality ~0);
- each loss term on its own reaches the parameters it should, and auxiliary terms do not stand in for
  the classification loss (checked per term, not through the summed loss; mmFAS's in test_mmfas.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mfas.models import create_model, list_models
from mfas.models.mmfas.fusion import SWITCH_MODES

SIZE = 32
MMFAS = {"img_size": SIZE, "patch_size": 8, "dim": 24, "depth": 1, "num_heads": 2, "fusion_depth": 3}
VIT = {"img_size": SIZE, "patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2}
MMDA_CLIP = {"embed_dim": 32,
             "vision": {"image_size": SIZE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
             "text": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
MMDA = {"clip": MMDA_CLIP, "num_heads": 4, "udsa_levels": 2}
BASE_VIT = {"img_size": SIZE, "size": {"patch_size": 8, "embed_dim": 24, "depth": 1, "num_heads": 2}}
CMFL = {"img_size": SIZE, "growth": 4, "blocks": (1, 1), "init_features": 8}
CDCN = {"img_size": SIZE, "channels": (4, 8, 8, 8)}

#: (registry name, overrides, the per-modality extractor containers or None when the extractor is shared)
MODELS = {
    **{f"mmfas-{f}": ("mmfas-tiny", {**MMFAS, "fusion": f}, "extractors")
       for f in ("switch", "merge", "cross", "none")},
    **{f"mmfas-switch-{mode}": ("mmfas-tiny", {**MMFAS, "switch_mode": mode}, "extractors")
       for mode in SWITCH_MODES if mode != "RDI"},
    "mmfas-no-self-attn": ("mmfas-tiny", {**MMFAS, "switch_self_attn": False}, "extractors"),
    "mmfas-aligned-proj": ("mmfas-tiny", {**MMFAS, "align_proj": True}, "extractors"),
    "vit-concat": ("vit-concat-tiny", VIT, "encoders"),
    "cnn-concat": ("cnn-concat-tiny", {"img_size": SIZE}, "encoders"),
    "mmda-clean": ("mmda-tiny", {**MMDA, "compat": "clean"}, None),
    "mmda-official": ("mmda-tiny", {**MMDA, "compat": "official"}, None),
    # the MMDG benchmark's baselines (their own checks: test_baselines.py)
    "vit": ("vit-tiny", BASE_VIT, "vit.patch_embed"),
    "vitaf": ("vitaf-tiny", {**BASE_VIT, "adapter_dim": 8}, None),  # frozen patch embeddings, shared blocks
    "mmdg": ("mmdg-tiny", BASE_VIT, None),
    "mmdg-no-regrad": ("mmdg-tiny", {**BASE_VIT, "regrad": False, "pairs": "all"}, None),
    "clip": ("clip-tiny", {"clip": MMDA_CLIP}, None),
    "clip-linear": ("clip-tiny", {"clip": MMDA_CLIP, "head": "linear"}, None),
    "flip-v": ("flip-v-tiny", {"clip": MMDA_CLIP}, None),
    "flip-it": ("flip-it-tiny", {"clip": MMDA_CLIP}, None),
    "cmfl": ("cmfl-tiny", CMFL, "streams"),
    "mm-cdcn": ("mm-cdcn-tiny", CDCN, "branches"),
}


def batch(b: int = 4, seed: int = 0, size: int = SIZE) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 3, size, size, generator=g),
            "depth": torch.randn(b, 1, size, size, generator=g),
            "ir": torch.randn(b, 1, SIZE, SIZE, generator=g),
            "present": torch.ones(b, 3, dtype=torch.bool), "label": torch.arange(b) % 2,
            "domain": ["A"] * (b // 2) + ["B"] * (b - b // 2)}


def build(key: str) -> torch.nn.Module:
    name, overrides, _ = MODELS[key]
    torch.manual_seed(0)
    m = create_model(name, **overrides)
    if key.startswith("mmda"):
        for module in m.modules():  # repeatable routing, so the two forward passes below are comparable
            if hasattr(module, "eval_routing"):
                module.eval_routing = "deterministic"
    return m.eval()


def norm(grads) -> float:
    return float(torch.sqrt(sum((g.detach().float() ** 2).sum() for g in grads if g is not None)))


@pytest.mark.parametrize("key", sorted(MODELS))
def test_classification_loss_reaches_every_modality(key: str):
    m = build(key)
    b = batch()
    for mod in m.modalities:
        b[mod].requires_grad_(True)
    F.cross_entropy(m(b).logits.float(), b["label"]).backward()
    inputs = {mod: float(b[mod].grad.norm()) for mod in m.modalities}
    assert min(inputs.values()) > 0 and max(inputs.values()) / min(inputs.values()) < 100, inputs
    container = MODELS[key][2]
    if container is not None:
        parts = m
        for attr in container.split("."):
            parts = getattr(parts, attr)
        extractors = {mod: norm(p.grad for p in parts[mod].parameters()) for mod in m.modalities}
        assert min(extractors.values()) > 0 and max(extractors.values()) / min(extractors.values()) < 100, extractors


@pytest.mark.parametrize("key", sorted(MODELS))
def test_each_present_modality_changes_the_score(key: str):
    m = build(key)
    b = batch(8)
    with torch.no_grad():
        base = m(b).logits.float()
        spread = (base - base.mean(0)).norm()
        for mod in m.modalities:
            other = dict(b)
            other[mod] = batch(8, seed=1)[mod]
            share = float((m(other).logits.float() - base).norm() / spread)
            assert share > 0.1, f"replacing {mod} moved the logits by {share:.2e} of their spread over the batch"


def _reached(m: torch.nn.Module, loss: torch.Tensor) -> set[str]:
    m.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {n for n, p in m.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}


def test_mmda_loss_terms_reach_their_parameters():
    torch.manual_seed(0)
    m = create_model("mmda-tiny", **MMDA).train()
    b = batch()
    losses = m.losses(b, m(b))
    reached = {k: _reached(m, losses[k]) for k in ("ce", "rs2", "anchor", "moe_aux")}

    def parts(names: set[str]) -> set[str]:
        return {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("clip.") else "") for n in names}

    # the classification loss trains the image tower, MD2A, U-DSA and the classifier, not the text tower
    assert {"clip.visual", "md2a", "udsa", "classifier"} <= parts(reached["ce"])
    assert not any(n.startswith("clip.transformer") for n in reached["ce"])
    # RS2 ties image and text: it reaches both towers and U-DSA
    assert {"clip.visual", "clip.transformer", "udsa", "md2a"} <= parts(reached["rs2"])
    # the prompt anchor trains the classifier on the text features (and through them the text tower)
    assert {"classifier", "clip.transformer"} <= parts(reached["anchor"]) and "clip.visual" not in parts(
        reached["anchor"])
    # the MoE auxiliary losses reach the routers
    assert any(n.endswith("router.weight") for n in reached["moe_aux"])


@pytest.mark.parametrize("name", [n for n in list_models() if n.endswith("-tiny")])
def test_weight_decay_groups_by_name(name: str):
    """timm's convention for every model: no decay on biases, norms, scalars, class tokens, position embeddings
    and stacked per-expert biases/norms; every trainable parameter in exactly one group."""
    m = create_model(name)
    groups = m.param_groups(0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    exempt_names = ("cls_token", "pos_embed", "class_embedding", "positional_embedding", "norm_weight", "mult_bias",
                    ".b1", ".b2", ".const", "missing.", ".gamma", ".beta")
    for n, p in m.named_parameters():
        if id(p) in decayed:
            assert p.ndim >= 2 and not n.endswith(".bias") and not any(e in n for e in exempt_names), n
        elif p.requires_grad:
            assert p.ndim <= 1 or n.endswith(".bias") or any(e in n for e in exempt_names), n
    if name.startswith("mmfas"):
        no_decay = {n for n, p in m.named_parameters() if id(p) not in decayed}
        assert "extractors.rgb.cls_token" in no_decay
        assert "extractors.rgb.blocks.0.attn.qkv.weight" not in no_decay


#: small overrides per model family, so every registered name (full-size ones included) builds in a moment
FAMILY = {"mmfas": MMFAS, "vit-concat": VIT, "mmda": MMDA,
          "cnn-concat": {"img_size": SIZE, "layers": (1, 1, 1, 1), "channels": (8, 8, 16, 16)},
          "severed": {"img_size": SIZE}, "minifasnet": {}, "vit": BASE_VIT, "vitaf": BASE_VIT, "mmdg": BASE_VIT,
          "clip": {"clip": MMDA_CLIP}, "flip-v": {"clip": MMDA_CLIP}, "flip-it": {"clip": MMDA_CLIP}, "cmfl": CMFL,
          "mm-cdcn": CDCN}
MINIFASNET = Path(__file__).resolve().parents[2] / "shared" / "models" / "minifasnet"


def _family(name: str) -> dict:
    fam = sorted((f for f in FAMILY if name == f or name.startswith(f + "-")), key=len, reverse=True)
    assert fam, f"{name}: no small overrides for its family here; add them to FAMILY"
    if fam[0] == "minifasnet":  # a peer with released weights: the real file, fixed 80 x 80 input
        f = MINIFASNET / ("MiniFASNetV2.onnx" if name.endswith("v2") else "MiniFASNetV1SE.onnx")
        if not f.is_file():
            pytest.skip(f"MiniFASNet ONNX not found at {f}")
        return {"onnx": str(f)}
    return FAMILY[fam[0]]


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("name", list_models())
def test_features_follow_the_contract(name: str, train: bool):
    """ModelOutput.features holds what the model declares (docs/models.md, "The feature contract"): `embedding`
    (B, num_features), `present` (B, M) bool over the model's modalities, `cls_<m>` (B, D) for each modality."""
    torch.manual_seed(0)
    m = create_model(name, **_family(name)).train(train)
    keys = m.feature_keys()
    assert keys[:2] == ("embedding", "present") and m.num_features > 0
    # per-modality features, except where the modalities are mixed at the input (FLIP's concat + 1x1 conv)
    assert m.modal_features or getattr(m, "early_fusion", False), f"{name}: no per-modality features"
    b = batch(4, size=m.input_size[0])
    b["present"][1, 2] = False  # one absent IR
    with torch.no_grad():
        f = m(b).features
    assert set(keys) <= set(f), f"{name}: missing {set(keys) - set(f)}"
    assert f["embedding"].shape == (4, m.num_features) and f["embedding"].is_floating_point()
    assert f["present"].shape == (4, len(m.modalities)) and f["present"].dtype == torch.bool
    if not train:  # training-time modality dropout may hide more; at inference the mask is the input's
        expected = torch.stack([b["present"][:, ("rgb", "depth", "ir").index(x)] for x in m.modalities], 1)
        assert torch.equal(f["present"], expected)
    if m.modal_features:
        widths = {f[f"cls_{x}"].shape[1] for x in m.modalities}
        assert len(widths) == 1 and all(f[f"cls_{x}"].shape == (4, *widths) for x in m.modalities)
    assert all(torch.isfinite(f[k].float()).all() for k in keys)


def test_missing_feature_is_an_error_naming_the_model():
    from mfas.errors import MfasError

    m = create_model("vit-concat-tiny", **VIT)
    m.require_features(["embedding", "cls_rgb"], "t-SNE")
    with pytest.raises(MfasError, match=r"t-SNE needs features nothing, which model 'vit-concat-tiny'"):
        m.require_features(["nothing"], "t-SNE")
