"""Data layer: the sample schema, the store, transforms, samplers and the SimFAS generator.

The names below are imported on first use, so that ``mfas.data.images`` and ``mfas.data.faces`` (numpy and
OpenCV only) can be used by the inference package without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "StoreDataset": "mfas.data.dataset",
    "store_info": "mfas.data.info",
    "GroupBalancedBatchSampler": "mfas.data.samplers",
    "class_balanced": "mfas.data.samplers",
    "class_domain_balanced": "mfas.data.samplers",
    "Sample": "mfas.data.schema",
    "BuildReport": "mfas.data.store",
    "Store": "mfas.data.store",
    "StoreWriter": "mfas.data.store",
    "open_store": "mfas.data.store",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mfas.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
