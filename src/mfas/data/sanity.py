"""Shortcut check for a store: can trivial global statistics tell bona fide from attack?

Features are the mean and standard deviation of every channel (R, G, B, depth, IR); a logistic
regression is trained on all domains but one and scored on the held-out domain (AUC with bona
fide positive). A benchmark where this reaches high AUC can be solved without looking at faces.
"""

from __future__ import annotations

import numpy as np

from mfas.data.store import Store
from mfas.errors import MfasError
from mfas.metrics import roc_auc

#: SimFAS' promise: leave-one-domain-out AUC of the mean/std probe stays at or below this.
SHORTCUT_AUC_LIMIT = 0.75


def channel_stats(store: Store, chunk: int = 512) -> tuple[np.ndarray, list[str]]:
    """(N, 2 * channels) mean and std per channel, and the feature names."""
    feats, names = [], []
    for m in store.modalities:
        a = store.arrays[m]
        chans = ["r", "g", "b"] if a.ndim == 4 else [m]
        mu = np.zeros((len(store), len(chans)))
        sd = np.zeros_like(mu)
        for s in range(0, len(store), chunk):
            x = np.asarray(a[s:s + chunk], dtype=np.float32)
            x = x.reshape(x.shape[0], -1, len(chans))
            mu[s:s + chunk], sd[s:s + chunk] = x.mean(1), x.std(1)
        feats += [mu, sd]
        names += [f"{c}_mean" for c in chans] + [f"{c}_std" for c in chans]
    return np.concatenate(feats, axis=1), names


def sanity_report(store: Store, modalities: tuple[str, ...] | None = None) -> dict:
    """Leave-one-domain-out AUC of the mean/std logistic-regression probe, per held-out domain."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, names = channel_stats(store)
    if modalities is not None:
        keep = [i for i, n in enumerate(names) if any(n.startswith(p) for p in _prefixes(modalities))]
        x, names = x[:, keep], [names[i] for i in keep]
    y = store.labels
    domains = store.column("domain")
    uniq = sorted(set(domains.tolist()))
    if len(uniq) < 2:
        raise MfasError(f"{store.path}: leave-one-domain-out needs at least two domains, found {uniq}")
    per = {}
    for d in uniq:
        tr, te = domains != d, domains == d
        if len(set(y[tr].tolist())) < 2 or len(set(y[te].tolist())) < 2:
            per[d] = None
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(x[tr], y[tr])
        per[d] = roc_auc(y[te], clf.predict_proba(x[te])[:, 1])
    valid = [v for v in per.values() if v is not None]
    worst = max(valid) if valid else float("nan")
    return {"features": names, "auc_per_heldout_domain": per, "mean_auc": float(np.mean(valid)),
            "max_auc": worst, "limit": SHORTCUT_AUC_LIMIT, "passed": bool(worst <= SHORTCUT_AUC_LIMIT)}


def _prefixes(modalities: tuple[str, ...]) -> list[str]:
    out = []
    for m in modalities:
        out += ["r_", "g_", "b_"] if m == "rgb" else [f"{m}_"]
    return out


def depth_planarity(store: Store, chunk: int = 256) -> np.ndarray:
    """Per sample: RMS residual (grey levels) of a plane fitted to the valid depth of the frame's centre.

    Low for flat instruments (print, replay), high for anything face-shaped. NaN without depth.
    """
    if "depth" not in store.modalities:
        raise MfasError(f"{store.path}: the store has no depth array")
    h, w = store.image_size
    ys, xs = np.mgrid[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    design = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1).astype(np.float64)
    out = np.full(len(store), np.nan)
    has = store.present(("depth",))[:, 0]
    arr = store.arrays["depth"]
    for s in range(0, len(store), chunk):
        block = np.asarray(arr[s:s + chunk, h // 4: 3 * h // 4, w // 4: 3 * w // 4], dtype=np.float64)
        for k, d in enumerate(block.reshape(block.shape[0], -1)):
            ok = d > 0
            if not has[s + k] or ok.sum() < 10:
                continue
            coef, *_ = np.linalg.lstsq(design[ok], d[ok], rcond=None)
            out[s + k] = float(np.sqrt(np.mean((design[ok] @ coef - d[ok]) ** 2)))
    return out


def planarity_report(store: Store) -> dict[str, dict[str, float]]:
    """Per domain, AUC of depth planarity (residual as the bona fide score): bona fide vs each species.

    Near 1 means planarity alone detects the species in that domain. SimFAS keeps masks and partial
    attacks near chance so that no single modality solves every PAI; flat instruments score high
    except where a domain's depth is too noisy (``S``, like CASIA-SURF).
    """
    r = depth_planarity(store)
    pai, dom = store.column("pai"), store.column("domain")
    out: dict[str, dict[str, float]] = {}
    for d in sorted(set(dom.tolist())):
        ok = ~np.isnan(r) & (dom == d)
        row = {}
        for sp in sorted(set(pai[(store.labels == 0) & ok].tolist())):
            m = ok & ((pai == sp) | (pai == "bonafide"))
            if (pai[m] == "bonafide").any():
                row[sp] = roc_auc((pai[m] == "bonafide").astype(int), r[m])
        out[d] = row
    return out
