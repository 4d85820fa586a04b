"""Pool the mean ± sd cells of several `run_sim_evidence.py` tables made from disjoint sets of seeds.

    python tools/pool_seed_tables.py base-s01.md:2 base-s2.md:1 --out pooled.md
    python tools/pool_seed_tables.py docs/results/simfas.md:2 s2.md:1 --after "0:### Seeds 0 and 1" \\
        --cell-n 0:vitaf:C=1

Each input is ``PATH:N``, N being the number of seeds behind its cells. Its tables are the first AUC, HTER @
test_eer and HTER @ val_eer tables after the line that ``--after I:TEXT`` names for input I (default: the
file's start); a cell
reads ``mean ± sd`` (a bootstrap interval after it is ignored; "—" is a cell with no run). ``--cell-n
I:VARIANT:COLUMN=N`` says that a cell of input I stands for fewer seeds than its file (e.g. a target that one
seed did not reach); COLUMN is a target letter or ``mean``.

The pooled cell is exact for the seeds' values, whatever their split into files: with n_i seeds of mean m_i and
sample sd s_i per file, N = sum n_i, M = sum n_i m_i / N, sd^2 = (sum (n_i - 1) s_i^2 + sum n_i (m_i - M)^2) /
(N - 1), up to the inputs' rounding to 0.1. Bootstrap intervals cannot be pooled this way and are left out.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

METRICS = (("auc", "AUC"), ("test_eer", "HTER @ test_eer"), ("val_eer", "HTER @ val_eer"))
CELL = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*±\s*(\d+(?:\.\d+)?)")


def read_tables(path: Path, after: str | None) -> tuple[list[str], dict]:
    """(columns, {(metric, variant, column): (mean, sd)}) from a file's three tables."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if after is not None:
        starts = [i for i, line in enumerate(lines) if line.startswith(after)]
        if not starts:
            raise SystemExit(f"{path}: no line starts with {after!r}")
        lines = lines[starts[0]:]
    cells: dict = {}
    columns: list[str] = []
    metric = None
    seen: set[str] = set()
    for line in lines:
        if line.startswith("#"):
            metric = next((key for key, title in METRICS if title in line and key not in seen), None)
            continue
        if metric is None or not line.startswith("|") or set(line) <= set("|- "):
            continue
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if parts[0] == "variant":
            columns = [p.replace("→", "").strip() for p in parts[1:]]
            continue
        for col, text in zip(columns, parts[1:], strict=True):
            m = CELL.match(text)
            if m:
                cells[(metric, parts[0], col)] = (float(m.group(1)), float(m.group(2)))
        seen.add(metric)
    missing = [title for key, title in METRICS if key not in seen]
    if missing:
        raise SystemExit(f"{path}: no {', '.join(missing)} table" + (f" after {after!r}" if after else ""))
    return columns, cells


def pool(groups: list[tuple[int, float, float]]) -> tuple[int, float, float | None]:
    """(N, pooled mean, pooled sample sd or None for one seed) of (n, mean, sd) groups."""
    n = sum(g[0] for g in groups)
    mean = sum(k * m for k, m, _ in groups) / n
    if n < 2:
        return n, mean, None
    ss = sum((k - 1) * s * s + k * (m - mean) ** 2 for k, m, s in groups)
    return n, mean, math.sqrt(ss / (n - 1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", nargs="+", help="PATH:N, N the seeds behind the file's cells")
    p.add_argument("--after", action="append", default=[],
                   help="I:TEXT, read input I from its first line that starts with TEXT")
    p.add_argument("--cell-n", action="append", default=[], help="I:VARIANT:COLUMN=N, a cell with fewer seeds")
    p.add_argument("--out", type=Path, help="markdown file (default: print)")
    args = p.parse_args(argv)
    inputs = []
    for spec in args.tables:
        path, _, n = spec.rpartition(":")
        if not path or not n.isdigit() or int(n) < 1:
            p.error(f"{spec!r}: give PATH:N with N >= 1 seeds")
        inputs.append((Path(path), int(n)))
    overrides: dict[tuple[int, str, str], int] = {}
    for spec in args.cell_n:
        m = re.fullmatch(r"(\d+):([^:]+):([^=]+)=(\d+)", spec)
        if not m or int(m.group(1)) >= len(inputs):
            p.error(f"--cell-n {spec!r}: give I:VARIANT:COLUMN=N with I an input's index")
        overrides[(int(m.group(1)), m.group(2), m.group(3))] = int(m.group(4))
    after: dict[int, str] = {}
    for spec in args.after:
        i, _, text = spec.partition(":")
        if not i.isdigit() or int(i) >= len(inputs) or not text:
            p.error(f"--after {spec!r}: give I:TEXT with I an input's index")
        after[int(i)] = text
    read = [read_tables(path, after.get(i)) for i, (path, _) in enumerate(inputs)]
    columns = read[0][0]
    variants = list(dict.fromkeys(v for _, cells in read for (_, v, _) in cells))
    out = [f"Pooled from {', '.join(f'{path} ({n} seeds)' for path, n in inputs)}: mean ± sd over seeds, in %; "
           "(n) where a cell has fewer seeds than the rest.", ""]
    pooled: dict = {}
    for metric, _ in METRICS:
        for variant in variants:
            for col in columns:
                groups = [(overrides.get((i, variant, col), n), *cells[(metric, variant, col)])
                          for i, ((_, n), (_, cells)) in enumerate(zip(inputs, read, strict=True))
                          if (metric, variant, col) in cells]
                if groups:
                    pooled[(metric, variant, col)] = pool(groups)
    most = max((k for k, _, _ in pooled.values()), default=0)
    for metric, title in METRICS:
        out += [f"#### {title}", "", "| variant | " + " | ".join(f"→ {c}" if len(c) == 1 else c for c in columns)
                + " |", "|---|" + "---|" * len(columns)]
        for variant in variants:
            row = []
            for col in columns:
                if (metric, variant, col) not in pooled:
                    row.append("—")
                    continue
                k, mean, sd = pooled[(metric, variant, col)]
                text = f"{mean:.1f} ± {sd:.1f}" if sd is not None else f"{mean:.1f}"
                row.append(text + (f" ({k})" if k != most else ""))
            out.append(f"| {variant} | " + " | ".join(row) + " |")
        out.append("")
    text = "\n".join(out)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
