"""Checkpoints of the released MMDA code (murInJ/MMDA) loaded into ``mmda``: the key layout of
``models/framework/MMDA.py`` and its ST-MoE experts, equal logits, clear errors, and ``mfas models convert-mmda``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mfas.cli.main import app
from mfas.errors import ConfigError
from mfas.models import create_model
from mfas.models.mmda.convert import (
    convert_released,
    convert_released_state_dict,
    load_released_checkpoint,
    released_layout,
)
from mfas.models.mmda.moe import MoE

LEVELS = 7  # mmda-tiny keeps the released 7 U-DSA levels
D, H = 64, int(64 * 4 * 2 / 3)  # mmda-tiny's width and the experts' hidden size (170)


def released_moe(out: dict, prefix: str, sd: dict, ours: str) -> None:
    """The released ``MoE`` module: ``gate`` (TopNGating) and ``experts.experts`` = 4 ``Expert`` (Sequential of
    RMSNorm, Linear(D, 2H), GEGLU, Linear(H, D)) + 3 ``ConstExpert``."""
    out[f"{prefix}.gate.to_gates.weight"] = sd[f"{ours}.router.weight"]
    out[f"{prefix}.gate.threshold_train"] = torch.tensor([1e-9, 0.2])
    out[f"{prefix}.gate.threshold_eval"] = torch.tensor([1e-9, 0.2])
    for e in range(4):
        net = f"{prefix}.experts.experts.{e}.net"
        out[f"{net}.0.weight"] = sd[f"{ours}.norm_weight"][e]
        out[f"{net}.1.weight"] = sd[f"{ours}.w1"][e].T  # an nn.Linear weight is (out, in)
        out[f"{net}.1.bias"] = sd[f"{ours}.b1"][e]
        out[f"{net}.2.mult_bias"] = sd[f"{ours}.mult_bias"][e]
        out[f"{net}.3.weight"] = sd[f"{ours}.w2"][e].T
        out[f"{net}.3.bias"] = sd[f"{ours}.b2"][e]
    for c in range(3):
        out[f"{prefix}.experts.experts.{4 + c}.const"] = sd[f"{ours}.const"][c]


def to_released(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What the released ``train.py`` would save (``unwrap_model(model).state_dict()``) for these weights."""
    sd = model.state_dict()
    out = {f"model.{k[len('clip.'):]}": v for k, v in sd.items() if k.startswith("clip.")}
    for ours, rel in (("q", "w_qs"), ("k", "w_ks"), ("v", "w_vs"), ("dq", "w_dqs"), ("dk", "w_dks")):
        out[f"adapter.fusion.attn.{rel}.weight"] = sd[f"md2a.attn.{ours}.weight"]
    for lam in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
        out[f"adapter.fusion.attn.{lam}"] = sd[f"md2a.attn.{lam}"]
    out["adapter.fusion.attn.ln.weight"] = sd["md2a.attn.norm.weight"]
    for part in ("ln1", "ln2", "proj"):
        for kind in ("weight", "bias"):
            out[f"adapter.fusion.{part}.{kind}"] = sd[f"md2a.{part}.{kind}"]
    released_moe(out, "adapter.fusion.net", sd, "md2a.moe")
    for level in range(LEVELS):
        for rel, ours in (("refine", "refine"), ("remapping", "remap")):
            rp, op = f"adapter.u_align.{rel}.{level}", f"udsa.{ours}.{level}"
            for leaf in ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
                         "ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"):
                out[f"{rp}.{leaf}"] = sd[f"{op}.{leaf}"]
            released_moe(out, f"{rp}.to_feature", sd, f"{op}.moe")
    released_moe(out, "adapter.classifier.net", sd, "classifier.moe")
    out["adapter.classifier.proj.weight"] = sd["classifier.head.weight"]
    out["adapter.classifier.proj.bias"] = sd["classifier.head.bias"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def deterministic(model: torch.nn.Module) -> torch.nn.Module:
    for mod in model.modules():
        if isinstance(mod, MoE):
            mod.eval_routing = "deterministic"
    return model.eval()


def batch(b: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(b, 3, 112, 112, generator=g), "depth": torch.randn(b, 1, 112, 112, generator=g),
            "ir": torch.randn(b, 1, 112, 112, generator=g), "present": torch.ones(b, 3, dtype=torch.bool),
            "label": torch.arange(b) % 2, "domain": ["W", "W", "C"][:b]}


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    """An official mmda-tiny with every parameter moved off its initial value (norms and GEGLU biases are ones
    at init, which would hide a mix-up of experts)."""
    torch.manual_seed(0)
    m = create_model("mmda-tiny", compat="official")
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return deterministic(m)


def test_released_layout_names_and_shapes(source: torch.nn.Module):
    rel = to_released(source)
    shapes = {k: tuple(v.shape) for k, v in rel.items()}
    for key, shape in {
        "model.visual.conv1.weight": (64, 3, 16, 16),
        "model.visual.class_embedding": (64,),
        "model.token_embedding.weight": (49408, 64),
        "model.logit_scale": (),
        "adapter.fusion.attn.w_qs.weight": (D, D),
        "adapter.fusion.attn.w_dks.weight": (D, D),
        "adapter.fusion.attn.lambda_q2": (D,),
        "adapter.fusion.attn.ln.weight": (D,),
        "adapter.fusion.proj.weight": (D, 3 * D),
        "adapter.fusion.net.gate.to_gates.weight": (7, D),
        "adapter.fusion.net.gate.threshold_train": (2,),
        "adapter.fusion.net.experts.experts.0.net.0.weight": (D,),
        "adapter.fusion.net.experts.experts.0.net.1.weight": (2 * H, D),
        "adapter.fusion.net.experts.experts.2.net.2.mult_bias": (H,),
        "adapter.fusion.net.experts.experts.3.net.3.weight": (D, H),
        "adapter.fusion.net.experts.experts.6.const": (D,),
        "adapter.u_align.refine.0.attn.in_proj_weight": (3 * D, D),
        "adapter.u_align.refine.6.to_feature.experts.experts.1.net.1.bias": (2 * H,),
        "adapter.u_align.remapping.6.ln2.bias": (D,),
        "adapter.u_align.remapping.3.to_feature.experts.experts.5.const": (D,),
        "adapter.classifier.net.gate.to_gates.weight": (7, D),
        "adapter.classifier.proj.weight": (2, D),
    }.items():
        assert shapes[key] == shape, key
    assert not any(k.startswith(("md2a.", "udsa.", "classifier.", "clip.")) for k in rel)
    thresholds = {k for k in rel if k.endswith((".threshold_train", ".threshold_eval"))}
    assert len(thresholds) == 2 * (1 + 2 * LEVELS + 1)
    # the converter's own idea of the layout agrees with the one built here
    assert released_layout(source) == {k: v for k, v in shapes.items() if k not in thresholds}


def test_converted_weights_give_the_same_logits(source: torch.nn.Module):
    rel = to_released(source)
    torch.manual_seed(1)
    dst = create_model("mmda-tiny", compat="official")
    conv = convert_released(rel, dst)
    assert set(conv.ignored) == {k for k in rel if ".gate.threshold_" in k}
    dst.load_state_dict(conv.state_dict, strict=True)
    deterministic(dst)
    b = batch()
    with torch.no_grad():
        assert torch.equal(dst(b).logits, source(b).logits)
    # without a model the same dict comes out (names and MoE completeness checked)
    free = convert_released_state_dict(rel)
    assert free.keys() == conv.state_dict.keys()
    assert all(torch.equal(free[k], conv.state_dict[k]) for k in free)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_files_with_wrappers_and_the_old_head(source: torch.nn.Module, tmp_path: Path, suffix: str):
    """A DDP-wrapped save, RMSNorm parameters spelt ``gamma`` and the unused head of versions before July 2025."""
    rel = to_released(source)
    rel["adapter.fusion.attn.ln.gamma"] = rel.pop("adapter.fusion.attn.ln.weight")
    rel["adapter.classifier.net.experts.experts.1.net.0.gamma"] = \
        rel.pop("adapter.classifier.net.experts.experts.1.net.0.weight")
    head = {"classifier.0.gamma": torch.ones(D), "classifier.1.weight": torch.randn(2 * H, D),
            "classifier.1.bias": torch.zeros(2 * H), "classifier.2.mult_bias": torch.ones(H),
            "classifier.3.weight": torch.randn(2, H), "classifier.3.bias": torch.zeros(2)}
    rel.update(head)
    path = tmp_path / f"best_HTER{suffix}"
    wrapped = {f"module.{k}": v for k, v in rel.items()}
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(wrapped, str(path))
    else:
        torch.save(wrapped, path)
    dst = create_model("mmda-tiny", compat="official")
    record = load_released_checkpoint(path, dst)
    assert {"classifier.0.weight", "classifier.3.bias"} <= set(record["ignored"])
    assert "unused head" in record["ignored"]["classifier.1.weight"] and len(record["sha256"]) == 64
    deterministic(dst)
    with torch.no_grad():
        assert torch.equal(dst(batch()).logits, source(batch()).logits)


def test_unknown_missing_and_misshapen_keys_are_named(source: torch.nn.Module, tmp_path: Path):
    dst = create_model("mmda-tiny", compat="official")
    rel = to_released(source)
    extra = dict(rel, **{"adapter.fusion.attn.w_os.weight": torch.zeros(D, D)})
    with pytest.raises(ConfigError, match=r"1 unknown \(adapter\.fusion\.attn\.w_os\.weight\)"):
        convert_released(extra, dst)
    with pytest.raises(ConfigError, match=r"unknown \(adapter\.fusion\.attn\.w_os\.weight\)"):
        convert_released_state_dict(extra)  # also without a model
    lost = "adapter.u_align.refine.3.to_feature.experts.experts.2.net.3.bias"
    short = {k: v for k, v in rel.items() if k != lost}
    esc = re.escape(lost)
    with pytest.raises(ConfigError, match=rf"1 missing \({esc}\)"):
        convert_released(short, dst)
    with pytest.raises(ConfigError, match=rf"missing \({esc}\)"):
        convert_released_state_dict(short)
    torch.save(short, tmp_path / "short.pt")
    with pytest.raises(ConfigError, match=rf"short\.pt: .*missing \({esc}\)"):
        load_released_checkpoint(tmp_path / "short.pt", dst)
    bad = dict(rel, **{"adapter.classifier.proj.weight": torch.zeros(3, D)})
    with pytest.raises(ConfigError, match=r"wrong shape \(adapter\.classifier\.proj\.weight \(3, 64\)"):
        convert_released(bad, dst)
    other = dict(rel, **{"adapter.fusion.net.gate.threshold_eval": torch.tensor([1e-9, 0.3])})
    with pytest.raises(ConfigError, match=r"threshold_eval .* threshold 0\.2"):
        convert_released(other, dst)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk\.pth: cannot be read"):
        load_released_checkpoint(tmp_path / "junk.pth", dst)
    with pytest.raises(ConfigError, match="MMDA model"):
        load_released_checkpoint(tmp_path / "short.pt", create_model("vit-concat-tiny"))


def test_convert_command_writes_a_bundle_that_evaluate_and_predict_read(source: torch.nn.Module, sim_store: Path,
                                                                       tmp_path: Path):
    import mfas

    torch.save(to_released(source), tmp_path / "cls_best_HTER.pt")
    out = tmp_path / "released_CPS-W"
    runner = CliRunner()
    res = runner.invoke(app, ["models", "convert-mmda", str(tmp_path / "cls_best_HTER.pt"), "--out", str(out),
                              "-p", "sim/loo/CPS-W", "--set", "model.name=mmda-tiny"])
    assert res.exit_code == 0, res.output
    assert "without a counterpart" in res.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["model"]["compat"] == "official" and meta["threshold"]["policy"] == "fixed:0.5"
    assert meta["converted_from"]["layout"] == "murInJ/MMDA state dict"
    p = mfas.load(out)
    deterministic(p.model)
    with torch.no_grad():
        assert torch.equal(p.model(batch()).logits, source(batch()).logits)
    res = runner.invoke(app, ["evaluate", str(out), "--store", f"sim={sim_store}"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "eval" / "sim_loo_CPS-W" / "metrics.json").read_text())
    assert 0.0 <= metrics["tests"]["W"]["threshold_free"]["auc"] <= 1.0
    # a checkpoint that does not fit: exit status 2 and the key named; an existing folder is refused
    short = {k: v for k, v in to_released(source).items() if k != "adapter.fusion.attn.w_vs.weight"}
    torch.save(short, tmp_path / "short.pt")
    res = runner.invoke(app, ["models", "convert-mmda", str(tmp_path / "short.pt"), "--out", str(tmp_path / "x"),
                              "-p", "sim/loo/CPS-W", "--set", "model.name=mmda-tiny"])
    assert res.exit_code == 2 and "adapter.fusion.attn.w_vs.weight" in res.output
    res = runner.invoke(app, ["models", "convert-mmda", str(tmp_path / "cls_best_HTER.pt"), "--out", str(out),
                              "-p", "sim/loo/CPS-W"])
    assert res.exit_code == 2 and "not an empty folder" in res.output
    res = runner.invoke(app, ["models", "convert-mmda", str(tmp_path / "cls_best_HTER.pt"), "--out",
                              str(tmp_path / "y")])
    assert res.exit_code == 2 and "--protocol" in res.output
