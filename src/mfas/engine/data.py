"""From a protocol and its stores to data loaders, with DDP sharding that never pads."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from mfas.conventions import MODALITIES
from mfas.data.dataset import StoreDataset
from mfas.data.samplers import make_batch_sampler
from mfas.data.transforms import eval_transform, train_transform
from mfas.engine.config import DataConfig
from mfas.protocols import DataRef, Protocol, StoreSet, TestSet, resolve


class Seeded(Dataset):
    """Applies ``transform(item, generator)`` with a generator seeded by (seed, epoch, index).

    Augmentation is therefore a function of the sample and the epoch only: the same with any
    number of workers, on any rank, and after a resume.
    """

    def __init__(self, base: Dataset, transform, seed: int):
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, k: int) -> dict:
        item = self.base[k]
        g = torch.Generator().manual_seed(hash((self.seed, self.epoch, k)) & 0x7FFF_FFFF_FFFF)
        item = self.transform(item, g)
        item["position"] = k  # position in this dataset, used to gather scores across ranks
        return item


class Relabelled(Dataset):
    """``base`` with its items' ``label`` replaced by ``labels[k]`` (the shuffled-labels diagnostic)."""

    def __init__(self, base: Dataset, labels: np.ndarray):
        self.base, self.labels = base, labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, k: int) -> dict:
        item = self.base[k]
        item["label"] = torch.as_tensor(self.labels[k], dtype=torch.as_tensor(item["label"]).dtype)
        return item


@dataclass
class Part:
    """A concatenation of store slices with the columns samplers and reports need."""

    dataset: ConcatDataset
    labels: np.ndarray
    domains: np.ndarray
    meta: dict[str, np.ndarray]


def build_part(refs: Sequence[DataRef], stores: StoreSet, modalities: Sequence[str],
               drop: Sequence[str] = ()) -> Part:
    sets, labels, domains = [], [], []
    meta: dict[str, list] = {k: [] for k in ("sample_id", "dataset", "domain", "pai", "video", "subject")}
    for ref in refs:
        store, idx = resolve(ref, stores)
        ds = StoreDataset(store, idx, modalities=MODALITIES, drop=[m for m in MODALITIES
                                                                    if m not in modalities or m in drop])
        sets.append(ds)
        labels.append(ds.labels)
        domains.append(ds.column("domain"))
        for k in meta:
            meta[k].append(ds.column(k))
    return Part(ConcatDataset(sets), np.concatenate(labels), np.concatenate(domains),
                {k: np.concatenate(v) for k, v in meta.items()})


def rank_world() -> tuple[int, int]:
    """This process' rank and the world size; (0, 1) outside a process group.

    Read when a sampler is iterated, not when it is built: loaders may be built before the
    strategy has started the process group.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class ShardedBatches(Sampler[list[int]]):
    """Every rank draws the same global batch sequence and keeps batches rank, rank + W, ..."""

    def __init__(self, inner: Sampler[list[int]]):
        self.inner = inner

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.inner) // rank_world()[1]

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = rank_world()
        stop = (len(self.inner) // world) * world
        for i, b in enumerate(self.inner):
            if i >= stop:
                return
            if i % world == rank:
                yield b


class Shard(Sampler[int]):
    """Indices rank, rank + W, ... of a dataset: every sample on exactly one rank, no padding."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        rank, world = rank_world()
        return len(range(rank, self.n, world))

    def __iter__(self) -> Iterator[int]:
        rank, world = rank_world()
        return iter(range(rank, self.n, world))


class PadDataModule(L.LightningDataModule):
    """Loaders for a protocol: ``train``, ``select`` (validation) and every test set."""

    def __init__(self, protocol: Protocol, stores: StoreSet, cfg: DataConfig, modalities: Sequence[str],
                 input_size: tuple[int, int], norm: dict, seed: int = 0, extra_eval: Sequence[TestSet] = ()):
        super().__init__()
        self.protocol, self.stores, self.cfg, self.seed = protocol, stores, cfg, seed
        self.modalities = tuple(m for m in modalities if m in protocol.train_modalities)
        size = (cfg.image_size, cfg.image_size) if cfg.image_size else tuple(input_size)
        self.size = size
        self.norm = {m: (tuple(v["mean"]), tuple(v["std"])) if isinstance(v, dict) else v for m, v in norm.items()}
        self.train_tf = train_transform(size, self.norm) if cfg.augment else eval_transform(size, self.norm)
        self.eval_tf = eval_transform(size, self.norm)
        self.extra_eval = tuple(extra_eval)
        self.train: Part | None = None
        self.select: Part | None = None
        self.tests: dict[str, Part] = {}
        self._train_ds: Seeded | None = None

    def setup(self, stage: str | None = None) -> None:
        """Open the protocol's data. ``stage="evaluate"``: the selection and test data only, so a store that
        holds no train split (data of one's own, kept for testing) can be scored."""
        if stage == "evaluate" and self.train is None and self.select is None:
            eval_only = self.protocol.model_copy(update={"train": ()})
            self.stores.check(eval_only)
            self.select = build_part(self.protocol.select, self.stores, self.modalities) \
                if self.protocol.select else None
            return
        if self.train is None:
            self.stores.check(self.protocol)
            self.train = build_part(self.protocol.train, self.stores, self.modalities)
            if self.cfg.shuffle_labels:
                perm = np.random.default_rng(self.seed).permutation(len(self.train.labels))
                labels = self.train.labels[perm]
                self.train = Part(Relabelled(self.train.dataset, labels), labels, self.train.domains, self.train.meta)
            self.select = build_part(self.protocol.select, self.stores, self.modalities) \
                if self.protocol.select else None
            self._train_ds = Seeded(self.train.dataset, self.train_tf, self.seed)

    def eval_part(self, test: TestSet) -> Part:
        if test.name not in self.tests:
            self.tests[test.name] = build_part(test.parts, self.stores, self.modalities, drop=test.missing)
        return self.tests[test.name]

    def train_dataloader(self) -> DataLoader:
        inner = make_batch_sampler(self.cfg.sampler, self.train.labels, self.train.domains, self.cfg.batch_size,
                                   self.cfg.batches_per_epoch, self.seed)
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        inner.set_epoch(epoch)
        self._train_ds.set_epoch(epoch)
        return DataLoader(self._train_ds, batch_sampler=ShardedBatches(inner),
                          num_workers=self.cfg.workers, persistent_workers=False)

    def loader(self, part: Part) -> DataLoader:
        ds = Seeded(part.dataset, self.eval_tf, self.seed)
        return DataLoader(ds, batch_size=self.cfg.eval_batch_size, sampler=Shard(len(ds)),
                          num_workers=self.cfg.workers)

    def val_dataloader(self) -> list[DataLoader]:
        loaders = [self.loader(self.select)] if self.select is not None else []
        return loaders + [self.loader(self.eval_part(t)) for t in self.extra_eval]
