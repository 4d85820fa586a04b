"""Summaries of a store: counts per dataset, domain, split, label, PAI and modality presence."""

from __future__ import annotations

from collections import Counter

from mfas.data.store import Store


def store_info(store: Store) -> dict:
    """Counts a user checks before training: every key maps to ``{value: count}``."""
    out: dict = {"path": str(store.path), "count": len(store), "image_size": list(store.image_size),
                 "modalities": list(store.modalities), "skipped": store.meta.get("skipped", 0),
                 "skip_reasons": store.meta.get("skip_reasons", {}),
                 "provenance": store.meta.get("provenance", {})}
    for key in ("dataset", "domain", "split", "pai"):
        out[key] = dict(sorted(Counter(store.column(key).tolist()).items()))
    out["label"] = {"bonafide (1)": int((store.labels == 1).sum()), "attack (0)": int((store.labels == 0).sum())}
    pres = store.present(store.modalities)
    out["present"] = {m: int(pres[:, j].sum()) for j, m in enumerate(store.modalities)}
    cross = Counter(zip(store.column("domain").tolist(), store.column("split").tolist(),
                        store.labels.tolist(), strict=True))
    out["domain_split_label"] = {f"{d}/{s}/{'bonafide' if y == 1 else 'attack'}": n
                                 for (d, s, y), n in sorted(cross.items())}
    return out
