"""mmFAS: parameter counts against the paper, shapes, gradients, batch independence, mining, switch order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from engine_helpers import tiny_config
from mfas.errors import ConfigError
from mfas.models import create_model
from mfas.models.mmfas.alignment import icl_loss, mine_pairs
from mfas.models.mmfas.fusion import SWITCH_MODES, SwitchFusion, switch_order

TINY = {"img_size": 32, "patch_size": 8, "dim": 24, "depth": 1, "num_heads": 2, "fusion_depth": 3}


def batch(b: int = 6, size: int = 32, seed: int = 0, present: torch.Tensor | None = None) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 3, size, size, generator=g), "depth": torch.randn(b, 1, size, size, generator=g),
            "ir": torch.randn(b, 1, size, size, generator=g),
            "present": torch.ones(b, 3, dtype=torch.bool) if present is None else present,
            "label": torch.arange(b) % 2}


def inference_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for n, p in m.named_parameters() if not n.startswith("align."))


NO_ALIGN = {"icl": False, "cm": "none"}


@pytest.mark.parametrize("overrides,paper,tol", [
    ({"modalities": ["rgb"], "fusion": "none", **NO_ALIGN}, 2.92, 0.03),
    ({"modalities": ["depth"], "fusion": "none", **NO_ALIGN}, 2.92, 0.03),
    ({"modalities": ["rgb", "ir"], "fusion": "none", **NO_ALIGN}, 5.76, 0.03),
    ({"fusion": "none", **NO_ALIGN}, 8.60, 0.03),
    ({"fusion": "none"}, 8.60, 0.03),
    ({}, 15.63, 0.07),
    ({"fusion": "merge"}, 56.11, 0.01),
    ({"fusion": "cross"}, 29.66, 0.01),
])
def test_parameter_counts_match_table_2(overrides: dict, paper: float, tol: float):
    m = create_model("mmfas", **overrides)
    n = inference_params(m) / 1e6
    assert abs(n / paper - 1) <= tol, f"{overrides}: {n:.3f}M vs paper {paper}M"


def test_shapes_and_features():
    m = create_model("mmfas-tiny", **TINY).eval()
    out = m(batch())
    assert out.logits.shape == (6, 2) and out.score.shape == (6,)
    assert out.features["fused"].shape == (6, 24) and out.features["cls_depth"].shape == (6, 24)
    assert m.extractors["rgb"](batch()["rgb"]).shape == (6, 1 + 16, 24)


def _reached(m: torch.nn.Module, loss: torch.Tensor) -> set[str]:
    m.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {n for n, p in m.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}


@pytest.mark.parametrize("fusion", ["switch", "merge", "cross", "none"])
def test_each_loss_term_reaches_its_parameters(fusion: str):
    """Per term, so that the auxiliary losses cannot stand in for the classifier: CE alone trains every
    inference parameter; ICL and CM train the three extractors and their own alignment parameters only."""
    m = create_model("mmfas-tiny", **TINY, fusion=fusion).train()
    b = batch()
    losses = m.losses(b, m(b))
    assert set(losses) == {"ce", "icl", "cm", "loss"}
    names = {n for n, _ in m.named_parameters()}
    align = {n for n in names if n.startswith("align.")}
    extractors = {n for n in names if n.startswith("extractors.")}
    ce = _reached(m, losses["ce"])
    assert names - align - {n for n in names if n.startswith("missing.")} - ce == set()
    assert not ce & align
    for term, own in (("icl", ".logit_scale"), ("cm", ".matcher.")):
        reached = _reached(m, losses[term])
        assert {n.split(".")[1] for n in reached & extractors} == {"rgb", "depth", "ir"}, term
        assert reached & align == {n for n in align if own in n}, term
        assert reached <= extractors | align, f"{term} reaches {sorted(reached - extractors - align)}"
    # missing-modality embeddings learn only from samples with the modality absent
    assert not any(n.startswith("missing.") for n in _reached(m, losses["loss"]))
    pres = torch.ones(6, 3, dtype=torch.bool)
    pres[:2, 1] = False
    b = batch(present=pres)
    reached = _reached(m, m.losses(b, m(b))["ce"])
    assert "missing.depth" in reached and "missing.ir" not in reached


def test_alignment_is_training_only():
    m = create_model("mmfas-tiny", **TINY).eval()
    b = batch()
    before = m(b).logits
    with torch.no_grad():
        for p in m.align.parameters():
            p.add_(1.0)
    assert torch.equal(before, m(b).logits)


@pytest.mark.parametrize("name", ["mmfas-tiny", "mmfas-merge-tiny", "mmfas-cross-tiny"])
def test_score_is_independent_of_the_batch(name: str):
    m = create_model(name, **TINY).eval()
    b = batch(b=5)
    with torch.no_grad():
        together = m(b).score
        for i in range(5):
            alone = m({k: v[i:i + 1] for k, v in b.items()}).score
            assert torch.allclose(alone, together[i:i + 1], atol=1e-5)
        assert torch.equal(m(b).score, together)  # deterministic


def test_absent_modality_is_ignored():
    m = create_model("mmfas-tiny", **TINY).eval()
    pres = torch.ones(4, 3, dtype=torch.bool)
    pres[:, 2] = False
    b1, b2 = batch(4, present=pres), batch(4, present=pres)
    b2["ir"] = torch.randn_like(b2["ir"]) * 5
    with torch.no_grad():
        s1, s2 = m(b1).score, m(b2).score
    assert torch.isfinite(s1).all() and torch.equal(s1, s2)


def test_hard_mining_picks_hardest_pairs():
    # labels: 0 0 1 1; similarity rows are anchors (RGB), columns partners (depth)
    sim = torch.tensor([[0.9, 0.1, 0.8, 0.3],
                        [0.2, 0.5, 0.1, 0.7],
                        [0.6, 0.4, 0.9, 0.2],
                        [0.1, 0.3, 0.5, 0.6]])
    labels = torch.tensor([0, 0, 1, 1])
    i, j, same = mine_pairs(sim, labels, "hard")
    pairs = {(int(a), int(b), int(s)) for a, b, s in zip(i, j, same, strict=True)}
    # negatives: most similar of the other class; positives: least similar of the same class (not itself)
    assert pairs == {(0, 2, 0), (1, 3, 0), (2, 0, 0), (3, 1, 0), (0, 1, 1), (1, 0, 1), (2, 3, 1), (3, 2, 1)}
    assert len(pairs) == 2 * 4
    # an anchor alone in its class gets no positive pair
    i, j, same = mine_pairs(sim[:3, :3], torch.tensor([0, 0, 1]), "hard")
    assert int((same == 1).sum()) == 2 and int((same == 0).sum()) == 3
    i, j, same = mine_pairs(sim, labels, "random")
    assert all((labels[a] == labels[b]) == bool(s) and (a != b) for a, b, s in zip(i, j, same, strict=True))


def test_icl_loss_prefers_matching_pairs():
    a = torch.eye(4)
    scale = torch.tensor(4.0)
    assert icl_loss(a, a, scale) < 0.1 < icl_loss(a, a[[1, 2, 3, 0]], scale)
    # hand computation: logits = e^4 * I, every row's cross-entropy is log(1 + 3 e^-e^4)
    expected = torch.log(1 + 3 * torch.exp(-torch.exp(scale)))
    assert torch.allclose(icl_loss(a, a, scale), expected, atol=1e-6)


def test_icl_alone_can_fit_a_fixed_batch():
    """The contrastive term reaches the extractors: optimising it alone pairs each RGB sample with its own
    depth and IR sample. L_ICL sums the RGB-depth and RGB-IR terms (Eq. 3), so chance is 2 ln(N)."""
    torch.manual_seed(0)
    m = create_model("mmfas-tiny", **TINY).train()
    b = batch(16)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    first = None
    for _ in range(80):
        icl = m.losses(b, m(b))["icl"]
        first = float(icl.detach()) if first is None else first
        opt.zero_grad()
        icl.backward()
        opt.step()
    assert first > 5.0 and float(icl.detach()) < 0.2


def test_switch_mode_rotation():
    assert [switch_order("RDI", k) for k in range(4)] == [("rgb", "depth", "ir"), ("depth", "ir", "rgb"),
                                                         ("ir", "rgb", "depth"), ("rgb", "depth", "ir")]
    assert switch_order("IDR", 1) == ("depth", "rgb", "ir")
    for mode in SWITCH_MODES:
        assert sorted(switch_order(mode, 0)) == ["depth", "ir", "rgb"]
    with pytest.raises(ValueError, match="switch mode"):
        switch_order("RRD", 0)


def test_switch_fusion_updates_only_the_rgb_stream():
    """Every block's residual is the RGB stream (the paper's single branch); queries, keys and values rotate
    over the modalities, RGB standing for the current RGB stream. Fails on the old fusion, whose residual
    followed the query stream and wrote depth or IR content into the RGB slot."""
    f = SwitchFusion(8, depth=3, num_heads=2, mode="DRI")
    calls = []
    streams = {m: torch.randn(1, 3, 8) for m in ("rgb", "depth", "ir")}
    before = {m: v.clone() for m, v in streams.items()}
    names = {id(v): m for m, v in streams.items()}

    class Spy(torch.nn.Module):
        def forward(self, x, q, k, v):
            calls.append((names.get(id(x), "rgb'"), *("x" if t is None else names[id(t)] for t in (q, k, v))))
            return x + 1

    f.blocks = torch.nn.ModuleList(Spy() for _ in range(3))
    out = f(streams)
    # DRI: (D, R, I) then (R, I, D) then (I, D, R); the updated stream is always RGB
    assert calls == [("rgb", "depth", "x", "ir"), ("rgb'", "x", "ir", "depth"), ("rgb'", "ir", "depth", "x")]
    assert all(torch.equal(streams[m], before[m]) for m in streams)
    expected = torch.stack([f.norm(before["rgb"] + 3)[:, 0], before["depth"][:, 0], before["ir"][:, 0]]).mean(0)
    assert torch.allclose(out, expected)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="needs all three modalities"):
        create_model("mmfas-tiny", modalities=["rgb", "depth"])
    with pytest.raises(ValueError, match="alignment bridges RGB"):
        create_model("mmfas-tiny", modalities=["depth", "ir"], fusion="none")
    with pytest.raises(ValueError, match="modality_dropout hides depth/IR beside RGB"):
        create_model("mmfas-tiny", modalities=["depth", "ir"], fusion="none", icl=False, cm="none",
                     modality_dropout=0.1)
    with pytest.raises(ConfigError, match="switch_mode"):
        create_model("mmfas-tiny", swich_mode="RDI")


def test_trains_through_the_engine(sim_store: Path, tmp_path: Path):
    from mfas.engine.train import train

    cfg = tiny_config(sim_store, tmp_path, name="mm", trainer={"max_epochs": 1}, protocol="sim/cross")
    cfg = cfg.model_copy(update={"model": cfg.model.__class__(name="mmfas-tiny", **TINY)})
    run = train(cfg)
    assert (run / "model.safetensors").exists()
    m = json.loads((run / "metrics.json").read_text())
    report = (run / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| mm |") and "Table 1" not in line
               and line.count("|") == 2 + 3 * 5)  # the Table 1 layout: 4 targets + weighted, 3 figures each
    cells = [c.strip() for c in row.strip("|").split("|")][1:]
    w = m["average"]
    assert cells[-3:] == [f"{100 * w['policies']['test_eer']['hter']:.2f}", f"{100 * w['threshold_free']['auc']:.2f}",
                          f"{100 * w['threshold_free']['acc_at_bpcer_1']:.2f}"]
    import mfas

    det = mfas.load(run)
    assert det.model.config["fusion"] == "switch"


#: experiment configs; protocol files (a top-level ``protocols`` list, e.g. configs/own/protocol.yaml) beside them
#: are checked by test_shipped_protocol_files_load
_YAMLS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
PROTOCOL_FILES = [p for p in _YAMLS if p.read_text().lstrip("# \n").startswith("protocols:")
                  or "\nprotocols:" in p.read_text()]
CONFIGS = [p for p in _YAMLS if p not in PROTOCOL_FILES]


def test_shipped_protocol_files_load():
    from mfas.protocols import load_protocol_file

    assert [p.name for p in PROTOCOL_FILES] == ["protocol.yaml"]
    for p in PROTOCOL_FILES:
        assert load_protocol_file(p)


def test_every_shipped_config_validates_and_builds():
    from mfas.engine.config import load_config

    assert len([c for c in CONFIGS if "mmfas" in c.parts]) == 2 * 35 + 4 * 5
    assert len([c for c in CONFIGS if "mmda" in c.parts]) == 2 * (4 + 4 + 2) + (4 + 2) * 2
    for path in CONFIGS:
        cfg = load_config(path)
        over = dict(cfg.model.overrides)
        if over.get("pretrained"):
            assert isinstance(over["pretrained"], str)
            over["pretrained"] = None  # a tag or a user's file: nothing to download or read in tests
        with torch.device("meta"):  # sizes only, no memory
            m = create_model(cfg.model.name, **over)
        if "table2" in path.parts and "sim" not in path.parts:
            paper = {"01": 2.92, "02": 2.92, "03": 2.92, "04": 5.76, "05": 5.76, "06": 5.76}.get(
                path.stem[:2], {"merge": 56.11, "cross": 29.66, "switch": 15.63}.get(m.fusion_kind, 8.60))
            assert abs(inference_params(m) / 1e6 / paper - 1) < 0.03, path.name


def test_class_matching_learns_same_class_on_separable_features():
    """CM must tell "same class" from "different class" for a pair: an XOR of the two labels, which one linear
    layer on the concatenated pair (the old matcher) cannot express; it stayed at ln 2 ~ 0.69 here."""
    from mfas.models.mmfas.alignment import AlignmentModule

    torch.manual_seed(0)
    dim, n = 24, 32
    module = AlignmentModule(dim, icl=False, cm="random")
    opt = torch.optim.Adam(module.parameters(), 3e-3)
    centre = torch.randn(2, dim)
    for _ in range(300):
        labels = torch.randint(0, 2, (n,))
        rgb = centre[labels] + 0.3 * torch.randn(n, dim)
        other = -centre[labels] + 0.3 * torch.randn(n, dim)
        cm = module(rgb, other, labels)["cm"]
        opt.zero_grad()
        cm.backward()
        opt.step()
    assert float(cm.detach()) < 0.1


def test_icl_sums_the_two_modality_pairs_as_eq_3():
    m = create_model("mmfas-tiny", **TINY, cm="none").train()
    b = batch()
    out = m(b)
    f = out.features
    expected = sum(icl_loss(f["cls_rgb"], f[f"cls_{o}"], m.align[o].logit_scale) for o in ("depth", "ir"))
    assert torch.allclose(m.losses(b, out)["icl"], expected)


def test_vit_initialisation():
    m = create_model("mmfas-tiny", **TINY)
    qkv = m.extractors["rgb"].blocks[0].attn.qkv
    assert abs(float(qkv.weight.detach().std()) - 0.02) < 0.004  # timm truncates at +-2 (absolute), as here
    assert not qkv.bias.any() and not m.head[0].bias.any()
    assert float(m.fusion.blocks[0].cross.q.weight.detach().std()) < 0.025
