"""How much each modality moves a trained run's scores: replace one modality's input by another test sample's
(a random permutation within the test set) and report the mean |change of P(bona fide)|.

    python tools/modality_sensitivity.py runs/evidence-mmfas-after/CPS-W_mmfas_s0 [more runs] --store stores/simfas

A fusion that ignores a modality gives ~0 for it (the defect of the Faithfulness issue: RGB).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mfas.data import open_store
from mfas.data.dataset import StoreDataset
from mfas.data.transforms import eval_transform
from mfas.engine.io import load_bundle


def sensitivity(run: Path, store: Path, limit: int = 256, seed: int = 0) -> dict[str, float]:
    model, meta = load_bundle(run)
    model.eval()
    part = meta["protocol"]["tests"][0]["parts"][0]  # the run's first test set (one store part on SimFAS)
    st = open_store(store)
    idx = np.asarray(st.select(split=part["split"], domain=part.get("domain")))
    idx = np.random.default_rng(seed).permutation(idx)[:limit]
    ds = StoreDataset(st, idx, transform=eval_transform(tuple(model.input_size), model.norm_stats))
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    perm = torch.from_numpy(np.random.default_rng(seed + 1).permutation(len(ds)))
    out = {}
    with torch.no_grad():
        base = model(batch).score
        for m in model.modalities:
            swapped = dict(batch)
            swapped[m] = batch[m][perm]
            out[m] = float((model(swapped).score - base).abs().mean())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--store", type=Path, default=Path("stores/simfas"))
    p.add_argument("--limit", type=int, default=256)
    a = p.parse_args()
    for run in a.runs:
        print(run.name, json.dumps({k: round(v, 4) for k, v in sensitivity(run, a.store, a.limit).items()}))


if __name__ == "__main__":
    main()
