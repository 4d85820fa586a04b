"""How much each modality moves a trained run's scores: replace one modality's input by another test sample's
(a random permutation within the test set) and report the mean |change of P(bona fide)|.

    python tools/modality_sensitivity.py runs/evidence-mmfas-after/CPS-W_mmfas_s0 [more runs] --store stores/simfas

A fusion that ignores a modality gives ~0 for it (the defect of the Faithfulness issue: RGB).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mfas.data import open_store
from mfas.engine.io import read_bundle_meta
from mfas.engine.known_answers import sensitivity as modality_sensitivity


def sensitivity(run: Path, store: Path, limit: int = 256, seed: int = 0) -> dict[str, float]:
    """On the run's first test set (one store part on SimFAS); mfas.engine.known_answers.sensitivity does the work."""
    meta = read_bundle_meta(run)
    part = meta["protocol"]["tests"][0]["parts"][0]
    rows = open_store(store).select(split=part["split"], domain=part.get("domain"))
    return modality_sensitivity(run, store, seed=seed, limit=limit, rows=rows)


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
