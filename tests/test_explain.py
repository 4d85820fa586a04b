"""Grad-CAM maps and t-SNE of a trained mmFAS run, through the library and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from engine_helpers import tiny_config
from mfas.cli.main import app
from mfas.data import open_store
from mfas.engine.gradcam import grad_cam
from mfas.engine.predict import Predictor, model_transform
from mfas.engine.resolve import run_stores
from mfas.engine.samples import find_samples
from mfas.engine.tsne import final_features, modal_features, tsne_dataset
from mfas.errors import MfasError

TINY = {"img_size": 32, "patch_size": 8, "dim": 24, "depth": 1, "num_heads": 2, "fusion_depth": 2}


@pytest.fixture(scope="module")
def run(sim_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mfas.engine.train import train

    cfg = tiny_config(sim_store, tmp_path_factory.mktemp("explain"), name="mm", trainer={"max_epochs": 1})
    cfg = cfg.model_copy(update={"model": cfg.model.__class__(name="mmfas-tiny", **TINY)})
    return train(cfg)


def _ids(store: Path, n: int, domain: str = "W") -> list[str]:
    st = open_store(store)
    idx = st.select(split="test", domain=domain)
    labels = st.column("label")[idx]
    pick = [idx[labels == 1][0], idx[labels == 0][0]][:n]
    return [str(s) for s in st.column("sample_id")[pick]]


def test_grad_cam_maps_are_per_modality_in_unit_range(run: Path, sim_store: Path):
    pred = Predictor(run)
    transform = model_transform(pred.model)
    items = [transform(dict(raw)) for _, raw in find_samples(run_stores(run), _ids(sim_store, 2))]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("rgb", "depth", "ir", "present", "label")}
    maps = grad_cam(pred.model, batch)
    assert set(maps) == {"rgb", "depth", "ir"}
    for m in maps.values():
        assert m.shape == (2, 32, 32)
        assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0 + 1e-6
        assert torch.isfinite(m).all()
    # the maps explain each sample separately: a sample's map is the same alone and in the batch
    alone = grad_cam(pred.model, {k: v[:1] for k, v in batch.items()})
    assert torch.allclose(alone["rgb"][0], maps["rgb"][0], atol=1e-4)
    assert all(p.grad is None for p in pred.model.parameters())  # no gradient left behind on the weights


def test_explain_cli_writes_images_and_maps(run: Path, sim_store: Path, tmp_path: Path):
    ids = _ids(sim_store, 2)
    args = ["explain", str(run), "--out", str(tmp_path / "cam")]
    for s in ids:
        args += ["--sample", s]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    for s in ids:
        for m in ("rgb", "depth", "ir"):
            assert (tmp_path / "cam" / f"{s}_{m}.png").stat().st_size > 0
            assert (tmp_path / "cam" / f"{s}_{m}_cam.png").stat().st_size > 0
        assert (tmp_path / "cam" / f"{s}.png").stat().st_size > 0


def test_explain_unknown_sample_is_a_clear_error(run: Path, tmp_path: Path):
    res = CliRunner().invoke(app, ["explain", str(run), "--sample", "no-such-id", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "no-such-id" in res.output and "not found" in res.output
    with pytest.raises(MfasError, match="not a run folder"):
        run_stores(tmp_path)


def test_tsne_draws_both_classes_and_writes_a_figure(run: Path, tmp_path: Path):
    ds = tsne_dataset(run, run_stores(run), None, limit=8, seed=0)
    labels = ds.store.column("label")[ds.indices]
    assert len(ds) == 8 and set(labels.tolist()) == {0, 1}
    assert set(ds.store.column("domain")[ds.indices].tolist()) == {"W"}  # the run's test target
    assert np.array_equal(ds.indices, tsne_dataset(run, run_stores(run), None, limit=8, seed=0).indices)
    out = tmp_path / "tsne.png"
    res = CliRunner().invoke(app, ["tsne", str(run), str(run), "--out", str(out), "--limit", "30",
                                   "--data", "sim:test"])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 0 and "30 samples" in " ".join(res.output.split())


def test_tsne_reads_only_the_feature_contract(run: Path):
    pred = Predictor(run)
    ds = tsne_dataset(run, run_stores(run), None, limit=4, seed=0)
    feats, labels = modal_features(pred, ds, 4)
    assert list(feats) == ["rgb", "depth", "ir"] and all(v.shape == (4, TINY["dim"]) for v in feats.values())
    x, labels2, domains = final_features(pred, ds, 4)  # `embedding`: mmFAS's fused feature
    assert x.shape == (4, pred.model.num_features) and np.array_equal(labels, labels2) and set(domains) == {"W"}
    pred.model.modal_features = False  # a model without per-modality features: a clear error naming it
    with pytest.raises(MfasError, match="cls_rgb, cls_depth, cls_ir, which model 'mmfas-tiny' does not provide"):
        modal_features(pred, ds, 4)
