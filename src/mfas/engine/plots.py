"""The report's figures (matplotlib, Agg): ROC and DET, FPR/FNR against the threshold, score histograms."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mfas.metrics import error_curve


def score_plots(tables: dict[str, dict[str, np.ndarray]], out: Path, prefix: str) -> list[str]:
    """``<prefix>roc_det.png`` and ``<prefix>fpr_fnr_hist.png`` under ``out`` for the score tables
    (``{name: {"label", "score", ...}}``) that hold both classes; returns the paths written."""
    tables = {k: v for k, v in tables.items() if len(set(v["label"].tolist())) == 2}
    if not tables:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {name: error_curve(t["label"], t["score"]) for name, t in tables.items()}
    written = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for name, c in curves.items():
        axes[0].plot(c.apcer, 1 - c.bpcer, label=name)
        eps = 1e-4
        axes[1].plot(np.clip(c.apcer, eps, 1), np.clip(c.bpcer, eps, 1), label=name)
    axes[0].plot([0, 1], [0, 1], ":", color="grey")
    axes[0].set(xlabel="FPR = APCER (pooled)", ylabel="TPR = 1 - BPCER", title="ROC (bona fide positive)")
    axes[1].set(xscale="log", yscale="log", xlabel="APCER (pooled)", ylabel="BPCER", title="DET")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    written.append(_save(fig, out / f"{prefix}roc_det.png"))
    n = len(tables)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 6.2), squeeze=False)
    for j, (name, t) in enumerate(tables.items()):
        c = curves[name]
        ax = axes[0, j]
        ax.plot(c.thresholds, c.apcer, label="FPR (APCER)")
        ax.plot(c.thresholds, c.bpcer, label="FNR (BPCER)")
        ax.set(title=name, xlabel="threshold", xlim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1, j]
        bins = np.linspace(0, 1, 31)
        ax.hist(t["score"][t["label"] == 1], bins=bins, alpha=0.6, label="bona fide", density=True)
        ax.hist(t["score"][t["label"] == 0], bins=bins, alpha=0.6, label="attack", density=True)
        ax.set(xlabel="score = P(bona fide)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out / f"{prefix}fpr_fnr_hist.png"))
    return written


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
