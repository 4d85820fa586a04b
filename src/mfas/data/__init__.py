"""Data layer: the sample schema, the store, transforms, samplers and the SimFAS generator."""

from mfas.data.dataset import StoreDataset
from mfas.data.info import store_info
from mfas.data.samplers import GroupBalancedBatchSampler, class_balanced, class_domain_balanced
from mfas.data.schema import Sample
from mfas.data.store import BuildReport, Store, StoreWriter, open_store

__all__ = [
    "BuildReport",
    "GroupBalancedBatchSampler",
    "Sample",
    "Store",
    "StoreDataset",
    "StoreWriter",
    "class_balanced",
    "class_domain_balanced",
    "open_store",
    "store_info",
]
