"""Looking up samples by id in a run's stores, and turning one into a batch of one for a model."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mfas.data import StoreDataset
from mfas.errors import MfasError
from mfas.protocols import StoreSet


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


def batch_of_one(item: dict) -> dict:
    """A transformed item as a batch of one sample: tensors gain a leading axis, other values become lists."""
    return {k: (v[None] if torch.is_tensor(v) else [v]) for k, v in item.items()}
