"""tools/pool_seed_tables.py: pooled mean ± sd of tables from disjoint seed sets equals the statistics of all seeds."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pool_seed_tables", ROOT / "tools" / "pool_seed_tables.py")
pool_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pool_tool)


def _table(rows: dict[str, list[list[float]]]) -> str:
    """A run_sim_evidence-style file: per variant, per column, the seeds' values (in %)."""
    out = []
    for title in ("AUC (higher is better)", "HTER @ test_eer, paper-compatible", "HTER @ val_eer, deployable"):
        out += [f"## {title}", "", "| variant | → W | → C | mean |", "|---|---|---|---|"]
        for variant, cols in rows.items():
            cells = []
            for xs in cols:
                a = np.asarray(xs)
                sd = a.std(ddof=1) if a.size > 1 else 0.0
                cells.append("—" if not xs else f"{a.mean():.4f} ± {sd:.4f} [1.0, 2.0]")
            out.append(f"| {variant} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def test_pooled_cells_equal_the_statistics_of_all_seeds(tmp_path: Path):
    rng = np.random.default_rng(0)
    seeds = rng.uniform(50, 90, size=(5, 3))  # 5 seeds x (W, C, mean)
    a, b = tmp_path / "a.md", tmp_path / "b.md"
    a.write_text(_table({"m": [list(seeds[:3, j]) for j in range(3)],
                         "short": [list(seeds[:3, 0]), list(seeds[:1, 1]), []]}))
    b.write_text(_table({"m": [list(seeds[3:, j]) for j in range(3)],
                         "short": [list(seeds[3:, 0]), list(seeds[3:, 1]), list(seeds[3:, 2])]}))
    out = tmp_path / "pooled.md"
    assert pool_tool.main([f"{a}:3", f"{b}:2", "--cell-n", "0:short:C=1", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    auc = lines[lines.index("#### AUC") + 4:lines.index("#### AUC") + 6]
    want = [f"{seeds[:, j].mean():.1f} ± {seeds[:, j].std(ddof=1):.1f}" for j in range(3)]
    assert auc[0] == "| m | " + " | ".join(want) + " |"
    c = np.concatenate([seeds[:1, 1], seeds[3:, 1]])
    assert auc[1] == (f"| short | {want[0]} | {c.mean():.1f} ± {c.std(ddof=1):.1f} (3) | "
                      f"{seeds[3:, 2].mean():.1f} ± {seeds[3:, 2].std(ddof=1):.1f} (2) |")


def test_a_file_without_the_tables_is_named(tmp_path: Path):
    f = tmp_path / "x.md"
    f.write_text("# nothing here\n")
    with pytest.raises(SystemExit, match="x.md: no AUC"):
        pool_tool.main([f"{f}:1"])
