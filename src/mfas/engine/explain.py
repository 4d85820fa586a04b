"""Explanations of a trained run: Grad-CAM maps per modality and t-SNE of the modal features."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mfas.conventions import MODALITIES
from mfas.data import StoreDataset
from mfas.engine.predict import Predictor
from mfas.engine.train import resolve_protocol, resolve_stores
from mfas.errors import MfasError
from mfas.models.base import PadModel
from mfas.protocols import DataRef, StoreSet, resolve


def grad_cam(model: PadModel, batch: dict, target: int = 1) -> dict[str, torch.Tensor]:
    """Grad-CAM of logit ``target`` (1 = bona fide) on each modality's token map.

    Weights are the token-averaged gradients of each channel; the map is ReLU(sum_c w_c A_c) over the patch
    tokens, reshaped to the patch grid, upsampled to the input size and scaled to [0, 1] per sample.
    Returns {modality: (B, H, W)}.
    """
    try:
        layers = model.cam_layers()
    except NotImplementedError as e:
        raise MfasError(f"{e}; Grad-CAM needs one token map per modality") from None
    acts: dict[str, torch.Tensor] = {}
    hooks = [layer.register_forward_hook(lambda _m, _i, out, k=k: acts.__setitem__(k, out))
             for k, layer in layers.items()]
    try:
        model.eval()
        with torch.enable_grad():
            out = model(batch)
            keys = [k for k, a in acts.items() if a.requires_grad]
            # gradients of the activations only: the weights' .grad stay untouched
            grads = torch.autograd.grad(out.logits[:, target].sum(), [acts[k] for k in keys], allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
    maps = {}
    for m, g in zip(keys, grads, strict=True):
        if g is None:
            continue
        tokens, g = acts[m][:, 1:].detach(), g[:, 1:]
        side = int(round(tokens.shape[1] ** 0.5))
        if side * side != tokens.shape[1]:
            raise MfasError(f"{m}: {tokens.shape[1]} patch tokens do not form a square grid")
        cam = F.relu((g.mean(1, keepdim=True) * tokens).sum(-1)).reshape(-1, 1, side, side)
        cam = F.interpolate(cam, size=batch[m].shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
        maps[m] = cam / peak
    return maps


def run_stores(run: Path, extra: dict[str, Path] | None = None) -> StoreSet:
    """The stores a run was trained with (its config's ``data.stores`` and datasets file), plus ``extra``."""
    from mfas.engine.config import load_config

    if not (Path(run) / "config.yaml").exists():
        raise MfasError(f"{run}: not a run folder (no config.yaml)")
    return resolve_stores(load_config(Path(run) / "config.yaml"), extra)


def find_samples(stores: StoreSet, sample_ids: Sequence[str]) -> list[tuple[str, dict]]:
    """(store key, raw item) for every requested sample id, searched in ``stores``; unknown ids are an error."""
    if not sample_ids:
        raise MfasError("no sample ids given")
    found: dict[str, tuple[str, dict]] = {}
    for key in stores.paths:
        if all(s in found for s in sample_ids):
            break
        st = stores.get(key)
        ids = st.column("sample_id")
        index = {s: i for i, s in enumerate(ids.tolist())}
        want = [s for s in sample_ids if s in index and s not in found]
        if want:
            ds = StoreDataset(st, [index[s] for s in want])
            for k, s in enumerate(want):
                found[s] = (key, ds[k])
    missing = [s for s in sample_ids if s not in found]
    if missing:
        raise MfasError(f"sample id(s) not found in stores {', '.join(stores.paths) or '(none)'}: "
                        f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    return [found[s] for s in sample_ids]


def _display(t: torch.Tensor) -> np.ndarray:
    a = t.float().numpy()
    return a.transpose(1, 2, 0) / 255.0 if a.shape[0] == 3 else a[0] / 255.0


def explain_samples(run: Path, sample_ids: Sequence[str], out: Path, stores: StoreSet) -> list[Path]:
    """Write, per sample, the original images (``<id>_<m>.png``, at the model's input size), the Grad-CAM
    heat maps per modality (``<id>_<m>_cam.png``) and one overview figure (``<id>.png``); returns the overviews.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred = Predictor(run)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (_, raw), sid in zip(find_samples(stores, sample_ids), sample_ids, strict=True):
        item = pred.transform(dict(raw))
        batch = {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in item.items()}
        maps = grad_cam(pred.model, batch)
        with torch.no_grad():
            score = float(pred.model(batch).score[0])
        resized = pred.transform.steps[0](dict(raw))  # geometry only: what the model saw, in display units
        mods = [m for m in MODALITIES if m in maps]
        fig, axes = plt.subplots(2, len(mods), figsize=(3 * len(mods), 6.2), squeeze=False)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sid)
        for j, m in enumerate(mods):
            img = _display(resized[m])
            cam = maps[m][0].numpy()
            plt.imsave(out / f"{safe}_{m}.png", img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            plt.imsave(out / f"{safe}_{m}_cam.png", cam, cmap="jet", vmin=0, vmax=1)
            present = bool(raw["present"][MODALITIES.index(m)])
            axes[0, j].imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            axes[0, j].set_title(f"{m}" + ("" if present else " (absent)"))
            axes[1, j].imshow(img, cmap=None if img.ndim == 3 else "gray", vmin=0, vmax=1)
            axes[1, j].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[1, j].set_title("Grad-CAM (bona fide logit)")
            for a in axes[:, j]:
                a.axis("off")
        label = "bona fide" if int(raw["label"]) == 1 else f"attack ({raw.get('pai', '?')})"
        fig.suptitle(f"{sid}: {label}; score {score:.3f}, threshold {pred.threshold:.3f}")
        fig.tight_layout()
        fig.savefig(out / f"{safe}.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{safe}.png")
    return written


def modal_features(pred: Predictor, ds: StoreDataset, limit: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Class-token features {modality: (n, D)} of the first ``limit`` samples, and their labels."""
    feats: dict[str, list[np.ndarray]] = {}
    labels = []
    with torch.no_grad():
        for k in range(min(limit, len(ds))):
            item = pred.transform(ds[k])
            batch = {key: (v[None] if torch.is_tensor(v) else [v]) for key, v in item.items()}
            f = pred.model(batch).features
            for m in pred.modalities:
                if f"cls_{m}" in f:
                    feats.setdefault(m, []).append(f[f"cls_{m}"][0].float().numpy())
            labels.append(int(item["label"]))
    if not feats:
        raise MfasError("the model exposes no per-modality features (features['cls_<modality>'])")
    return {m: np.stack(v) for m, v in feats.items()}, np.asarray(labels)


def tsne_dataset(run: Path, stores: StoreSet, data: str | None = None, limit: int = 300,
                 seed: int = 0) -> StoreDataset:
    """Up to ``limit`` samples drawn at random (seeded) from ``data`` (``STORE:SPLIT`` or
    ``STORE[DOMAIN]:SPLIT``; default: the parts of the run's first test set), so both classes appear."""
    from mfas.engine.config import load_config

    if data is None:
        refs = list(resolve_protocol(load_config(Path(run) / "config.yaml")).tests[0].parts)
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
    """One t-SNE panel per run of the three modalities' L2-normalised class-token features (colour = modality,
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


def final_features(pred: Predictor, ds: StoreDataset, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The final representation ``features["final"]`` (n, D) of the first ``limit`` samples (MMDA: the last
    U-DSA output r_0, which the classifier reads), with their labels and domains."""
    feats, labels, domains = [], [], []
    with torch.no_grad():
        for k in range(min(limit, len(ds))):
            raw = ds[k]
            item = pred.transform(raw)
            batch = {key: (v[None] if torch.is_tensor(v) else [v]) for key, v in item.items()}
            f = pred.model(batch).features
            if "final" not in f:
                raise MfasError("the model exposes no final representation (features['final'])")
            feats.append(f["final"][0].float().numpy())
            labels.append(int(item["label"]))
            domains.append(str(raw["domain"]))
    return np.stack(feats), np.asarray(labels), np.asarray(domains)


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
