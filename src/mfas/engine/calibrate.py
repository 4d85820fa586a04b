"""On-site calibration: a new operating point for a bundle, chosen on labelled captures of the place it runs.

A threshold chosen on the training protocol's validation data rarely transfers to another camera, light or
population of attacks (a model can rank a new site's captures well and still accept every attack at the old
threshold). ``mfas calibrate RUN --data STORE --policy bpcer:0.05`` scores the store's samples with the bundle,
chooses the threshold with the policy (``docs/metrics.md``, threshold policies) and writes it into ``model.json``.
The previous operating point is kept in ``threshold_history``; nothing else in the bundle changes.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfas.errors import ConfigError, DataError, MetricError

#: policies that need test labels make no sense here: the calibration captures are the validation data
_TEST_POLICIES = ("test_eer",)


def calibrate(run: str | Path, data: str | Path, policy: str, splits: Sequence[str] | None = None,
              dry_run: bool = False) -> dict:
    """Choose a threshold for ``run``'s bundle on ``data`` (a store; ``splits``: only these splits) with
    ``policy`` and write it into the bundle (unless ``dry_run``). Returns the new threshold's record (with the
    rates it gives on the calibration data and the number of samples)."""
    from mfas.data import open_store
    from mfas.engine.io import atomic_write_json, bundle_paths, load_bundle
    from mfas.engine.predict import score_rows
    from mfas.metrics import choose_threshold
    from mfas.metrics.evaluate import rates_at

    if policy.split(":")[0] in _TEST_POLICIES:
        raise ConfigError(f"--policy {policy}: calibration data are validation data; use val_eer, bpcer:X, "
                          "apcer:X or fixed:X")
    model, meta = load_bundle(run)
    mj, _ = bundle_paths(run)
    store = open_store(data)
    _check_preparation(meta, store, Path(data))
    rows = store.select(split=list(splits)) if splits else np.arange(len(store))
    if rows.size == 0:
        raise DataError(data, f"no samples in split(s) {', '.join(splits or ())}")
    labels = store.labels[rows]
    pai = np.asarray(store.column("pai")[rows]).astype(str)
    scores = score_rows(model, store, rows)
    try:
        t = choose_threshold(policy, val=(labels, scores, pai))
    except (MetricError, ValueError) as e:
        raise ConfigError(f"--policy {policy}: {e}") from None
    rates = rates_at(labels, scores, t.value, pai)
    record = {**t.as_dict(), "source": "calibration", "data": str(Path(data).resolve()),
              "splits": list(splits) if splits else "all", "n": int(rows.size),
              "n_bonafide": int((labels == 1).sum()), "n_attack": int((labels == 0).sum()),
              "rates": {k: v for k, v in rates.items() if isinstance(v, int | float) and k != "threshold"},
              "calibrated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if not dry_run:
        doc = json.loads(mj.read_text(encoding="utf-8"))
        doc["threshold_history"] = [*doc.get("threshold_history", []), doc["threshold"]]
        doc["threshold"] = record
        atomic_write_json(mj, doc)
        load_bundle(run)  # what was written loads
    return record


def _check_preparation(meta: dict, store, where: Path) -> None:
    """Calibration captures must be prepared as the training data were: the same face-crop policy."""
    want, have = meta["preprocessing"].get("crop"), store.crop
    if want != have:
        def say(c: dict | None) -> str:
            return "no face crop" if not c else f"face crop scale {c.get('scale')}, align {c.get('align')}"

        raise DataError(where, f"the store was prepared with {say(have)}, the model's training data with "
                               f"{say(want)}; prepare the calibration captures the same way (mfas data prepare "
                               "... --detect with the model's crop settings)")
