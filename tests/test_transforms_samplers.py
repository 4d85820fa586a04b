"""Transforms keep modalities aligned; samplers balance what they promise."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from mfas.data.samplers import GroupBalancedBatchSampler, class_balanced, class_domain_balanced
from mfas.data.transforms import Compose, JointGeometric, Normalize, Photometric, ToFloat, eval_transform


def item_with_same_content() -> dict:
    base = torch.arange(32 * 32, dtype=torch.float32).reshape(32, 32) / (32 * 32) * 255
    u8 = base.to(torch.uint8)
    return {"rgb": u8.expand(3, 32, 32).clone(), "depth": u8[None].clone(), "ir": u8[None].clone(),
            "present": torch.tensor([True, True, True])}


@pytest.mark.parametrize("seed", range(5))
def test_geometric_augmentation_is_identical_across_modalities(seed):
    g = torch.Generator().manual_seed(seed)
    out = JointGeometric((24, 24), max_rotation=15)(item_with_same_content(), g)
    assert out["rgb"].shape == (3, 24, 24) and out["depth"].shape == (1, 24, 24)
    torch.testing.assert_close(out["rgb"][0:1], out["depth"])
    torch.testing.assert_close(out["depth"], out["ir"])


def test_geometric_augmentation_changes_the_image():
    item = item_with_same_content()
    before = item["depth"].clone()
    g = torch.Generator().manual_seed(1)
    out = JointGeometric((32, 32), scale=(0.5, 0.6), max_rotation=0)(item, g)
    assert not torch.equal(out["depth"], before)


def test_photometric_is_drawn_per_modality_and_skips_absent():
    item = ToFloat()(item_with_same_content())
    item["present"] = torch.tensor([True, True, False])
    ir_before = item["ir"].clone()
    out = Photometric(noise=0.0, color_shift=0.0)(item, torch.Generator().manual_seed(0))
    # the same content went in; different per-modality parameters make rgb and depth differ
    assert not torch.allclose(out["rgb"][0], out["depth"][0])
    torch.testing.assert_close(out["ir"], ir_before)  # absent modality untouched


def test_photometric_refuses_uint8():
    with pytest.raises(TypeError, match="ToFloat"):
        Photometric()(item_with_same_content())


def test_normalize_per_modality():
    item = ToFloat()(item_with_same_content())
    item["present"] = torch.tensor([True, True, False])
    out = Normalize({"rgb": ([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]), "depth": ([0.0], [1.0]),
                     "ir": ([0.5], [0.5])})(item)
    assert out["rgb"].min() == pytest.approx(-2.0)
    assert out["ir"].min() >= 0  # absent: not normalised


def test_eval_transform_is_deterministic():
    a = eval_transform((20, 20))(item_with_same_content())
    b = eval_transform((20, 20))(item_with_same_content())
    torch.testing.assert_close(a["rgb"], b["rgb"])
    assert a["rgb"].dtype == torch.float32 and a["rgb"].shape == (3, 20, 20)
    assert isinstance(Compose([ToFloat()]), Compose)


def test_class_balanced_batches():
    labels = [1] * 10 + [0] * 90
    s = class_balanced(labels, batch_size=16, seed=0)
    batches = list(s)
    assert len(batches) == len(s) == 7
    for b in batches:
        assert len(b) == 16
        assert Counter(labels[i] for i in b) == {0: 8, 1: 8}
    # the small class is reused, not dropped: every bona fide index appears
    assert {i for b in batches for i in b if labels[i] == 1} == set(range(10))


def test_class_domain_balanced_batches():
    labels = [i % 2 for i in range(60)]
    domains = ["A"] * 40 + ["B"] * 15 + ["C"] * 5
    s = class_domain_balanced(labels, domains, batch_size=12, num_batches=5, seed=3)
    for b in s:
        cells = Counter((domains[i], labels[i]) for i in b)
        assert len(cells) == 6 and set(cells.values()) == {2}


def test_sampler_is_deterministic_per_epoch():
    s = GroupBalancedBatchSampler([0, 1] * 20, batch_size=4, seed=7)
    first = list(s)
    assert first == list(s)
    s.set_epoch(1)
    assert list(s) != first


def test_sampler_rejects_too_small_batches():
    with pytest.raises(ValueError, match="smaller than the 4 groups"):
        GroupBalancedBatchSampler(["a", "b", "c", "d"], batch_size=3)


def test_uneven_batch_remainders_spread_evenly():
    s = GroupBalancedBatchSampler(np.repeat([0, 1, 2], 10).tolist(), batch_size=7, num_batches=300, seed=0)
    totals = Counter(g for b in s for g in (i // 10 for i in b))
    assert max(totals.values()) - min(totals.values()) < 0.1 * 700


def test_random_sampler_visits_every_sample_once_per_pass():
    from mfas.engine.data import make_batch_sampler

    labels = np.array([0, 1] * 10)
    s = make_batch_sampler("random", labels, np.array(["A"] * 20), batch_size=5, num_batches=4, seed=0)
    seen = [i for b in s for i in b]
    assert all(len(b) == 5 for b in s) and sorted(seen) == list(range(20))
