"""A torch ``Dataset`` over a store: modality tensors, presence mask and metadata."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mfas.conventions import MODALITIES, MODALITY_CHANNELS
from mfas.data.store import Store

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
        self.store = store
        self.indices = np.arange(len(store)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.modalities = tuple(modalities)
        self.drop = set(drop)
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
