"""Dataset adapters: raw dataset files or published lists -> an mfas store (``mfas data prepare``).

=========  ==============================================================================
adapter    reads
=========  ==============================================================================
cefa       CASIA-SURF CeFA folders (race and mask parts), black borders cropped
surf       CASIA-SURF cropped release, or its challenge list files
wmca       WMCA preprocessed face-station HDF5 + grandtest / leave-one-attack-out CSVs
padisi     PADISI-Face ``.npz`` samples + ground truth and partition CSVs
hqwmca     HQ-WMCA stream files + protocol CSV, depth completion by rule and backend
lists      MMDG benchmark lists and CASIA-FAS protocol lists, paths under ``--root``
folder     your own captures: a ``<split>/<class>/<sample>/`` tree or a CSV
=========  ==============================================================================

Every adapter plans :class:`~mfas.data.prepare.core.Item` objects; :func:`prepare` decodes and writes
them with a report of counts and of every skipped input (also kept in the store's ``skipped.csv``).
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
from collections import defaultdict
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

from mfas.data.prepare import cefa, folder, hqwmca, lists, padisi, surf, wmca
from mfas.data.prepare.core import FramePolicy, Item, PrepareReport, Skip, build
from mfas.errors import ConfigError

ADAPTERS: dict[str, Callable[..., Iterator[Item | Skip]]] = {
    "cefa": cefa.plan, "surf": surf.plan, "wmca": wmca.plan, "padisi": padisi.plan, "hqwmca": hqwmca.plan,
    "lists": lists.plan, "folder": folder.plan,
}

__all__ = ["ADAPTERS", "FramePolicy", "Item", "PrepareReport", "Skip", "prepare"]


def _input_hashes(dataset: str, options: dict) -> dict[str, str]:
    """SHA-256 of every list / protocol / metadata file the build read (the shipped split list included)."""
    files = []
    for key in ("lists", "protocol_csv", "partition", "ground_truth", "csv_file"):
        v = options.get(key)
        for x in (v if isinstance(v, list | tuple) else [v]):
            if x and Path(x).is_file():
                files.append(Path(x))
    out = {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    if dataset == "cefa" and options.get("split", "mmfas") == "mmfas":
        text = resources.files("mfas.data.prepare").joinpath("lists/mmfas_cefa_subjects.csv").read_bytes()
        out["mfas:lists/mmfas_cefa_subjects.csv"] = hashlib.sha256(text).hexdigest()
    return out


def prepare(dataset: str, root: str | Path, out: str | Path, size: int = 224, workers: int = 1,
            strict: bool = False, overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
            **options) -> PrepareReport:
    """Build the store ``out`` from dataset ``dataset`` under ``root``; ``options`` go to the adapter
    (see each adapter's ``plan``). Raises ConfigError for an unknown adapter or option."""
    if dataset not in ADAPTERS:
        raise ConfigError(f"unknown dataset adapter {dataset!r}; choose from {', '.join(ADAPTERS)}")
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"--root {root}: no such folder")
    fn = ADAPTERS[dataset]
    known = [k for k in inspect.signature(fn).parameters if k != "root"]
    bad = [k for k in options if k not in known]
    if bad:
        near = difflib.get_close_matches(bad[0], known, n=1)
        raise ConfigError(f"adapter {dataset!r} has no option {bad[0]!r}"
                          + (f"; did you mean {near[0]!r}?" if near else f" (options: {', '.join(known)})"))
    plan = list(fn(root, **options))
    items = [p for p in plan if isinstance(p, Item)]
    modalities = ("rgb", "depth", "ir") if dataset != "folder" else tuple(
        m for m in ("rgb", "depth", "ir") if m in options.get("modalities", ("rgb", "depth", "ir")))
    provenance = {"adapter": dataset, "root": str(root.resolve()),
                  "options": {k: [str(x) for x in v] if isinstance(v, list | tuple) else str(v)
                              for k, v in options.items()},
                  "inputs": _input_hashes(dataset, options),
                  "preprocessing": {"size": size, "resize": "cv2 INTER_AREA when shrinking, INTER_LINEAR otherwise",
                                    "black_border_crop": sorted({it.domain for it in items if it.crop_border})}}
    by_source = defaultdict(set)
    for it in items:
        first = it.sources.get("rgb") or next(iter(it.sources.values()))
        by_source[str(first)].add(it.split)
    shared = sorted(k for k, v in by_source.items() if len(v) > 1)
    if shared:
        provenance["in_several_splits"] = shared[:100]
        provenance["in_several_splits_count"] = len(shared)
    if dataset == "hqwmca":
        provenance["ir_slot"] = f"HQ-WMCA stream {options.get('ir_stream', 'nir')!r}"
        provenance["depth"] = ("reconstructed from RGB by " + options.get("depth_backend", "none")
                               if options.get("depth_backend", "none") != "none"
                               else "absent for every sample: no reconstruction backend (depth_backend none)")
    return build(plan, out, size=size, modalities=modalities, workers=workers, strict=strict,
                 overwrite=overwrite, provenance=provenance, progress=progress)
