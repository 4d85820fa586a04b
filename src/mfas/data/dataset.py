"""A torch ``Dataset`` over a store: modality tensors, presence mask and metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mfas.conventions import MODALITIES, MODALITY_CHANNELS
from mfas.data.store import Store
from mfas.errors import ConfigError

META_KEYS = ("sample_id", "dataset", "domain", "split", "pai", "subject", "video")


class StoreDataset(Dataset):
    """Items are dicts with, for each requested modality ``m``:

    * ``item[m]``: uint8 tensor C x H x W (C = 3 for ``rgb``, 1 otherwise), or float after a
      transform; zeros when the modality is absent — models must read the presence mask,
    * ``item["present"]``: bool tensor (M,), True where the modality was captured,
    * ``item["label"]``: int64 (1 bona fide, 0 attack), ``item["index"]``: row in the store,
    * metadata strings ``sample_id``, ``dataset``, ``domain``, ``split``, ``pai``, ``subject``,
      ``video`` and the int ``frame``.

    ``drop`` removes modalities at read time (missing-modality protocols): they come back absent.
    """

    def __init__(self, store: Store, indices: Sequence[int] | np.ndarray | None = None,
                 modalities: Sequence[str] = MODALITIES, drop: Sequence[str] = (),
                 transform: Callable[[dict], dict] | None = None):
        if isinstance(store, str | Path):
            raise ConfigError(f"StoreDataset: got the path {store}; pass the opened store, open_store({str(store)!r})")
        self.store = store
        self.indices = np.arange(len(store)) if indices is None else _check_indices(indices, store)
        self.modalities = _check_names("modalities", modalities)
        self.drop = set(_check_names("drop", drop))
        self.transform = transform
        self._present = store.present(self.modalities)
        for m in self.drop:
            if m in self.modalities:
                self._present[:, self.modalities.index(m)] = False

    def __len__(self) -> int:
        return int(self.indices.size)

    @property
    def labels(self) -> np.ndarray:
        return self.store.labels[self.indices]

    def column(self, name: str) -> np.ndarray:
        return self.store.column(name)[self.indices]

    def __getitem__(self, k: int) -> dict:
        i = int(self.indices[k])
        h, w = self.store.image_size
        item: dict = {}
        present = self._present[i]
        for j, m in enumerate(self.modalities):
            if present[j]:
                a = torch.from_numpy(np.array(self.store.arrays[m][i]))
                item[m] = a.permute(2, 0, 1) if a.ndim == 3 else a.unsqueeze(0)
            else:
                item[m] = torch.zeros(MODALITY_CHANNELS[m], h, w, dtype=torch.uint8)
        item["present"] = torch.from_numpy(present.copy())
        item["label"] = torch.tensor(int(self.store.labels[i]), dtype=torch.int64)
        item["index"] = i
        item["frame"] = int(self.store.column("frame")[i])
        for key in META_KEYS:
            item[key] = str(self.store.column(key)[i])
        if self.transform is not None:
            item = self.transform(item)
        return item


def _check_names(what: str, names: Sequence[str]) -> tuple[str, ...]:
    names = (names,) if isinstance(names, str) else tuple(names)
    for m in names:
        if m not in MODALITY_CHANNELS:
            raise ConfigError(f"StoreDataset {what}: unknown modality {m!r}; known: {', '.join(MODALITY_CHANNELS)}")
    return names


def _check_indices(indices: Sequence[int] | np.ndarray, store: Store) -> np.ndarray:
    """Row numbers of ``store``, checked: whole numbers within the store (a bool mask is refused, not cast)."""
    a = np.asarray(indices)
    if a.dtype == bool:
        raise ConfigError("StoreDataset indices: got a boolean mask; pass row numbers (np.flatnonzero(mask))")
    if a.size and a.dtype.kind not in "iu":
        raise ConfigError(f"StoreDataset indices: expected whole row numbers, got {a.dtype} values")
    a = a.astype(np.int64).reshape(-1)
    bad = a[(a < 0) | (a >= len(store))]
    if bad.size:
        raise ConfigError(f"StoreDataset indices: row {int(bad[0])} is out of range for {store.path} "
                          f"({len(store)} samples)")
    return a
