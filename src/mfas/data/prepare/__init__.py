"""Dataset adapters: raw dataset files or published lists -> an mfas store (``mfas data prepare``).

Every module of this package that defines an adapter registers it (``@register_adapter("name")`` on an
:class:`~mfas.data.prepare.registry.Adapter` subclass); importing the package imports them all, so
:data:`ADAPTERS` and ``mfas data prepare --help`` list every adapter with its one-line description.
Adapters plan :class:`~mfas.data.prepare.core.Item` objects; :func:`prepare` decodes and writes them with
a report of counts and of every skipped input (also kept in the store's ``skipped.csv``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict
from collections.abc import Callable, Mapping
from numbers import Integral
from pathlib import Path

from mfas.data.faces import CropPolicy
from mfas.data.images import MIN_SIDE, RESIZE, describe_missing
from mfas.data.prepare.core import FramePolicy, Item, PrepareReport, Skip, build
from mfas.data.prepare.registry import (
    ADAPTERS,
    OMIT,
    REQUIRED,
    Adapter,
    Option,
    frames_option,
    get_adapter,
    list_adapters,
    register_adapter,
)
from mfas.data.store import MAX_STORE_SIDE
from mfas.errors import ConfigError

#: The most decoding processes ``prepare`` starts.
MAX_WORKERS = 64

__all__ = ["ADAPTERS", "OMIT", "REQUIRED", "Adapter", "FramePolicy", "Item", "Option", "PrepareReport", "Skip",
           "frames_option", "get_adapter", "list_adapters", "prepare", "register_adapter"]

for _module in pkgutil.iter_modules(__path__):  # each adapter module registers its adapter on import
    importlib.import_module(f"{__name__}.{_module.name}")


def prepare(dataset: str, root: str | Path, out: str | Path, size: int = 224, workers: int = 1,
            strict: bool = False, overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
            crop: CropPolicy | Mapping | None = None, **options) -> PrepareReport:
    """Build the store ``out`` from dataset ``dataset`` under ``root``; ``options`` go to the adapter
    (see each adapter's ``options``). Raises ConfigError for an unknown adapter or option.

    ``crop``: a :class:`~mfas.data.faces.CropPolicy` (or its settings; its size is the store's): detect the face
    in each capture's RGB image and store the crop; captures without a face are skipped with that reason. The
    policy is recorded in ``store.json`` (``provenance.preprocessing.crop``) and from there in every bundle
    trained on the store, so prediction crops new frames the same way."""
    adapter = get_adapter(dataset)
    root = Path(root)
    if not root.is_dir():
        why = "is a file, not a folder" if root.exists() else describe_missing(root)
        raise ConfigError(f"--root {root}: no such folder" + ("" if why == "does not exist" else f" (it {why})"))
    _check_common(root, Path(out), size, workers)
    if crop is not None:
        settings = crop.as_dict() if isinstance(crop, CropPolicy) else dict(crop)
        crop = CropPolicy.from_dict({**settings, "size": size}, where="--detect")
    values = adapter.validate(options)
    plan = list(adapter.plan(root, values))
    items = [p for p in plan if isinstance(p, Item)]
    provenance = {"adapter": dataset, "root": str(root.resolve()),
                  "options": {k: [str(x) for x in v] if isinstance(v, list | tuple) else str(v)
                              for k, v in options.items()},
                  "inputs": adapter.inputs(values),
                  "preprocessing": {"size": size, "resize": RESIZE,
                                    "black_border_crop": sorted({it.domain for it in items if it.crop_border}),
                                    "crop": None if crop is None else crop.as_dict()}}
    by_source = defaultdict(set)
    for it in items:
        first = it.sources.get("rgb") or next(iter(it.sources.values()))
        by_source[str(first)].add(it.split)
    shared = sorted(k for k, v in by_source.items() if len(v) > 1)
    if shared:
        provenance["in_several_splits"] = shared[:100]
        provenance["in_several_splits_count"] = len(shared)
    provenance.update(adapter.provenance(values))
    return build(plan, out, size=size, modalities=adapter.modalities(values), workers=workers, strict=strict,
                 overwrite=overwrite, provenance=provenance, progress=progress, crop=crop)


def _check_common(root: Path, out: Path, size: object, workers: object) -> None:
    """The options every adapter shares: ConfigError naming the first bad one."""
    if isinstance(size, bool) or not isinstance(size, Integral) or not MIN_SIDE <= size <= MAX_STORE_SIDE:
        raise ConfigError(f"--size {size!r}: the stored image side must be a whole number between {MIN_SIDE} and "
                          f"{MAX_STORE_SIDE} pixels")
    if isinstance(workers, bool) or not isinstance(workers, Integral) or not 0 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers {workers!r}: expected a whole number between 0 and {MAX_WORKERS}")
    try:
        r, o = root.resolve(), out.resolve()
    except (OSError, RuntimeError):
        return  # a looping --out is refused, with its reason, when the store is created
    if o == r or o in r.parents:
        raise ConfigError(f"--out {out}: {'is' if o == r else 'contains'} the dataset folder --root {root}; "
                          "a store must go elsewhere")
