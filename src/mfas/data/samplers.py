"""Batch samplers that balance bona fide vs attack, every (domain, class) cell or every domain; the
config's ``data.sampler`` names one through :func:`make_batch_sampler`."""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from mfas.errors import ConfigError, did_you_mean


class GroupBalancedBatchSampler(Sampler[list[int]]):
    """Batches with an equal share of every group (remainder spread over random groups).

    Each group is drawn without replacement from a shuffled pool that is refilled when it runs
    out, so small groups are oversampled rather than dropped. ``num_batches`` defaults to
    ``ceil(N / batch_size)``. Deterministic for a given ``seed`` and epoch (``set_epoch``).
    """

    def __init__(self, groups: Sequence[Hashable], batch_size: int, num_batches: int | None = None,
                 seed: int = 0):
        keys = [g if isinstance(g, str | int) else tuple(g) for g in groups]
        self.names = sorted(set(keys), key=str)
        if not self.names:
            raise ValueError("cannot balance an empty dataset")
        if batch_size < len(self.names):
            raise ValueError(f"batch_size {batch_size} is smaller than the {len(self.names)} groups "
                             f"to balance ({self.names})")
        lookup = {n: i for i, n in enumerate(self.names)}
        codes = np.array([lookup[k] for k in keys])
        self.members = [np.flatnonzero(codes == i) for i in range(len(self.names))]
        self.batch_size = batch_size
        self.num_batches = num_batches or math.ceil(len(keys) / batch_size)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        pools = [rng.permutation(m) for m in self.members]
        pos = [0] * len(pools)
        k = len(pools)
        for _ in range(self.num_batches):
            share = np.full(k, self.batch_size // k)
            share[rng.choice(k, self.batch_size % k, replace=False)] += 1
            batch: list[int] = []
            for g in range(k):
                for _ in range(share[g]):
                    if pos[g] == pools[g].size:
                        pools[g] = rng.permutation(self.members[g])
                        pos[g] = 0
                    batch.append(int(pools[g][pos[g]]))
                    pos[g] += 1
            yield [batch[i] for i in rng.permutation(len(batch))]


def class_balanced(labels: Sequence[int], batch_size: int, num_batches: int | None = None,
                   seed: int = 0) -> GroupBalancedBatchSampler:
    """Half bona fide, half attack in every batch."""
    return GroupBalancedBatchSampler(list(labels), batch_size, num_batches, seed)


def class_domain_balanced(labels: Sequence[int], domains: Sequence[str], batch_size: int,
                          num_batches: int | None = None, seed: int = 0) -> GroupBalancedBatchSampler:
    """An equal share of every (domain, class) cell in every batch."""
    return GroupBalancedBatchSampler([(str(d), int(y)) for d, y in zip(domains, labels, strict=True)],
                                     batch_size, num_batches, seed)


def domain_groups(domains: Sequence[str], batch_size: int, num_batches: int | None = None,
                  seed: int = 0) -> GroupBalancedBatchSampler:
    """An equal share of every domain in every batch (at least two samples of each)."""
    n_dom = len(set(domains))
    if batch_size < 2 * n_dom:
        raise ConfigError(f"data.sampler=domain_groups needs data.batch_size >= 2 x {n_dom} source "
                          f"domains, got {batch_size}")
    return GroupBalancedBatchSampler(list(domains), batch_size, num_batches, seed)


def shuffled(n: int, batch_size: int, num_batches: int | None = None, seed: int = 0) -> GroupBalancedBatchSampler:
    """Plain shuffled batches without replacement (one group), the pool refilled per pass."""
    return GroupBalancedBatchSampler([0] * n, batch_size, num_batches, seed)


SAMPLERS = ("random", "class_balanced", "class_domain", "domain_groups")


def make_batch_sampler(kind: str, labels: Sequence[int], domains: Sequence[str], batch_size: int,
                       num_batches: int | None = None, seed: int = 0) -> GroupBalancedBatchSampler:
    """The batch sampler the config's ``data.sampler`` names (one of :data:`SAMPLERS`)."""
    labels, domains = [int(y) for y in labels], [str(d) for d in domains]
    if kind == "random":
        return shuffled(len(labels), batch_size, num_batches, seed)
    if kind == "class_balanced":
        return class_balanced(labels, batch_size, num_batches, seed)
    if kind == "class_domain":
        return class_domain_balanced(labels, domains, batch_size, num_batches, seed)
    if kind == "domain_groups":
        return domain_groups(domains, batch_size, num_batches, seed)
    raise ConfigError(f"unknown data.sampler {kind!r}" + did_you_mean(kind, SAMPLERS))
