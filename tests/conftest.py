"""Shared fixtures: tiny stores built by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mfas.data import Sample, StoreWriter


def make_samples(n: int = 12, size: int = 16, domains: tuple[str, ...] = ("A", "B"), seed: int = 0) -> list[Sample]:
    """Deterministic tiny samples: alternating bona fide / print, cycling domains and splits."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % 2
        out.append(Sample(
            sample_id=f"s{i:03d}", label=label, pai="bonafide" if label else ("print" if i % 4 else "replay"),
            dataset="toy", domain=domains[i % len(domains)], split=("train", "val", "test")[i % 3],
            subject=f"subj{i // 4}", video=f"v{i // 2}", frame=i % 2,
            images={"rgb": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                    "depth": rng.integers(0, 256, (size, size), dtype=np.uint8),
                    "ir": rng.integers(0, 256, (size, size), dtype=np.uint8) if i % 3 else None}))
    return out


@pytest.fixture
def tiny_store(tmp_path: Path) -> Path:
    path = tmp_path / "tiny"
    with StoreWriter(path, size=(16, 16)) as w:
        w.add_many(make_samples())
    return path


@pytest.fixture(scope="session")
def sim_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small SimFAS store shared by the tests that need realistic samples."""
    from mfas.data.synth import generate_store

    path = tmp_path_factory.mktemp("sim") / "simfas"
    generate_store(path, per_domain=40, size=64, seed=0, workers=2)
    return path


@pytest.fixture(scope="session")
def sim_store_medium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 samples per domain: enough for the statistical checks of SimFAS to be stable."""
    from mfas.data.synth import generate_store

    path = tmp_path_factory.mktemp("sim_medium") / "simfas"
    generate_store(path, per_domain=150, size=64, seed=11, workers=2)
    return path
