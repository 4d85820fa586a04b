"""t-SNE of a trained run's features, one panel per run: the modal features (``cls_<m>``, mmFAS Figure 2) or the
representation the head reads (``embedding``, MMDA Figure 6). Uses only the feature contract of
:class:`mfas.models.base.ModelOutput`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from mfas.data import StoreDataset
from mfas.engine.predict import Predictor, model_transform
from mfas.engine.resolve import resolve_protocol, run_config
from mfas.engine.samples import batch_of_one
from mfas.errors import MfasError
from mfas.protocols import DataRef, StoreSet, resolve


def _features(pred: Predictor, ds: StoreDataset, limit: int, keys: Sequence[str],
              purpose: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Contract features ``keys`` {key: (n, D)} of the first ``limit`` samples, scored one at a time (so
    batch-dependent modes see no other sample), with their labels and domains."""
    pred.model.require_features(keys, purpose)
    feats: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    transform = model_transform(pred.model)
    labels, domains = [], []
    with torch.no_grad():
        for k in range(min(limit, len(ds))):
            raw = ds[k]
            item = transform(raw)
            f = pred.model(batch_of_one(item)).features
            for key in keys:
                feats[key].append(f[key][0].float().numpy())
            labels.append(int(item["label"]))
            domains.append(str(raw["domain"]))
    return {k: np.stack(v) for k, v in feats.items()}, np.asarray(labels), np.asarray(domains)


def modal_features(pred: Predictor, ds: StoreDataset, limit: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-modality global features {modality: (n, D)} (``features["cls_<m>"]``) of the first ``limit`` samples,
    and their labels."""
    mods = tuple(pred.model.modalities)
    feats, labels, _ = _features(pred, ds, limit, [f"cls_{m}" for m in mods], "t-SNE of the modal features")
    return {m: feats[f"cls_{m}"] for m in mods}, labels


def final_features(pred: Predictor, ds: StoreDataset, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The representation the classification head reads, ``features["embedding"]`` (n, D), of the first ``limit``
    samples (MMDA: the last U-DSA output r_0; mmFAS: the fused feature), with their labels and domains."""
    feats, labels, domains = _features(pred, ds, limit, ["embedding"], "t-SNE of the final representation")
    return feats["embedding"], labels, domains


def tsne_dataset(run: Path, stores: StoreSet, data: str | None = None, limit: int = 300,
                 seed: int = 0) -> StoreDataset:
    """Up to ``limit`` samples drawn at random (seeded) from ``data`` (``STORE:SPLIT`` or
    ``STORE[DOMAIN]:SPLIT``; default: the parts of the run's first test set), so both classes appear."""
    if data is None:
        refs = list(resolve_protocol(run_config(run)).tests[0].parts)
    else:
        refs = [DataRef.parse(data)]
    picked: list[tuple] = [(ref, *resolve(ref, stores)) for ref in refs]
    store = picked[0][1]
    if any(p[1] is not store for p in picked):
        raise MfasError("t-SNE data must come from one store; pass --data STORE:SPLIT or STORE[DOMAIN]:SPLIT")
    idx = np.unique(np.concatenate([p[2] for p in picked]))
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(idx, size=min(limit, idx.size), replace=False))
    return StoreDataset(store, idx)


def _embed(x: np.ndarray, seed: int) -> np.ndarray:
    """2-D t-SNE of the L2-normalised rows of x (the alignment losses of both methods compare cosines)."""
    from sklearn.manifold import TSNE

    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    return TSNE(n_components=2, perplexity=min(30.0, (len(x) - 1) / 3), init="pca",
                random_state=seed).fit_transform(x)


def _panels(runs: Sequence[Path], out: Path, draw: Callable[[object, Path], None]) -> Path:
    """One panel per run, ``draw(axis, run)`` filling each; the legend of the last panel; saved to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4.6), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        draw(ax, Path(run))
        ax.set_title(Path(run).name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def tsne_figure(runs: Sequence[Path], ds: StoreDataset, out: Path, limit: int = 300, seed: int = 0) -> Path:
    """One t-SNE panel per run of the modalities' L2-normalised global features (colour = modality,
    marker = label); e.g. a run without alignment next to one with it, as in the mmFAS paper's Figure 2."""
    colours = {"rgb": "tab:red", "depth": "tab:blue", "ir": "tab:green"}

    def draw(ax: object, run: Path) -> None:
        feats, labels = modal_features(Predictor(run), ds, limit)
        mods = list(feats)
        emb = _embed(np.concatenate([feats[m] for m in mods]), seed)
        for k, m in enumerate(mods):
            for lab, marker in ((1, "o"), (0, "x")):
                sel = np.flatnonzero(labels == lab) + k * len(labels)
                ax.scatter(emb[sel, 0], emb[sel, 1], s=10, c=colours.get(m, "k"), marker=marker,
                           label=f"{m} {'bona fide' if lab else 'attack'}", alpha=0.7)

    return _panels(runs, out, draw)


def tsne_final_figure(runs: Sequence[Path], ds: StoreDataset, out: Path, limit: int = 300, seed: int = 0) -> Path:
    """One t-SNE panel per run of the final representations, colour = domain, marker = label (the MMDA
    paper's Figure 6). Samples are scored one at a time, so batch-dependent modes see no other sample."""
    from matplotlib import colormaps

    palette = colormaps["tab10"]

    def draw(ax: object, run: Path) -> None:
        x, labels, domains = final_features(Predictor(run), ds, limit)
        emb = _embed(x, seed)
        for j, dom in enumerate(sorted(set(domains.tolist()))):
            for lab, marker in ((1, "o"), (0, "x")):
                sel = np.flatnonzero((domains == dom) & (labels == lab))
                ax.scatter(emb[sel, 0], emb[sel, 1], s=10, color=palette(j % 10), marker=marker, alpha=0.7,
                           label=f"{dom} {'bona fide' if lab else 'attack'}")

    return _panels(runs, out, draw)
