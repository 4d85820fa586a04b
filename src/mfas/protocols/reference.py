"""Published results as printed, for reference rows next to one's own runs (``mfas report --reference``).

Each reference is a YAML file beside this module (``reference_<name>.yaml``): per protocol family, its source,
its columns and its rows ``{method: {column: [HTER, AUC], printed_average: [..]}}`` in %, transcribed as the
papers print them. The numbers are the papers' claims on the real datasets, under their own threshold
(each test set's EER) and model-selection policies; they are shown, never recomputed, except the averages.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import yaml

from mfas.errors import ConfigError, did_you_mean

REFERENCES = ("mmdg",)


@cache
def load_reference(name: str) -> dict:
    """The reference ``name`` (see :data:`REFERENCES`) as ``{family: {"source", "columns", "rows"}}``."""
    if name not in REFERENCES:
        raise ConfigError(f"unknown reference {name!r}" + did_you_mean(name, list(REFERENCES), listing="known"))
    text = resources.files("mfas.protocols").joinpath(f"reference_{name}.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    for family, block in data.items():
        cols = block["columns"]
        for method, row in block["rows"].items():
            for c in cols:
                cell = row.get(c)
                if not (isinstance(cell, list) and len(cell) == 2 and all(isinstance(v, int | float) for v in cell)):
                    raise ConfigError(f"reference {name}: {family}/{method}/{c} is not [HTER, AUC]")
    return data


def recomputed_average(row: dict, columns: list[str]) -> tuple[float, float] | None:
    """(mean HTER, mean AUC) over ``columns`` of a reference row; None when a column is missing."""
    cells = [row.get(c) for c in columns]
    if any(c is None for c in cells):
        return None
    return sum(c[0] for c in cells) / len(cells), sum(c[1] for c in cells) / len(cells)
