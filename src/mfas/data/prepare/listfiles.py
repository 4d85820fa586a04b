"""Reading published list files: the MMDG benchmark lists and the CASIA-FAS protocol lists.

MMDG (``C/S/W-{train,val,test}.txt``): ``<rgb> <depth> <ir> <label>`` per line, label 1 = bona fide,
CRLF line ends and no final newline; PADISI (``P-*.txt``): ``<file>.npz<TAB><label>``.
CASIA-FAS (``<DS>@<p>_video_{train,dev,test}.txt``): ``<video folder> <label>`` with **0 = bona fide**;
the folder names the colour frames (``.../color``) and depth/IR are its ``depth``/``ir`` siblings.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from mfas.errors import ConfigError, DataError


def read_lines(path: str | Path, min_fields: int = 2) -> Iterator[tuple[int, list[str]]]:
    """``(line number, fields)`` of a list file: any line ending, TAB or space separated, blank lines
    and ``#`` comments skipped; a line with too few fields is a DataError naming file and line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "list file does not exist")
    text = p.read_bytes().decode("utf-8-sig")
    for ln, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        fields = s.split()
        if len(fields) < min_fields:
            raise DataError(f"{p}:{ln}", f"expected at least {min_fields} fields, got {len(fields)}: {s[:80]!r}")
        yield ln, fields


def split_from_name(path: str | Path) -> str:
    """The split a list file's name says: ``C-train.txt`` -> train, ``..._dev.txt`` -> val, ``test`` -> test."""
    stem = Path(path).stem.lower()
    for key, split in (("train", "train"), ("val", "val"), ("dev", "val"), ("valid", "val"), ("test", "test")):
        if re.search(rf"(^|[-_@.]){key}([-_.]|$)", stem) or stem.endswith(key):
            return split
    raise ConfigError(f"{path}: cannot tell the split from the file name; pass --split train|val|test")


def detect_format(lines: Sequence[list[str]]) -> str:
    """``mmdg`` (three paths and a label, or npz and a label) or ``casia-fas`` (a folder and a label)."""
    first = lines[0]
    if len(first) >= 4:
        return "mmdg"
    if first[0].endswith(".npz"):
        return "mmdg"
    return "casia-fas"


def read_csv(path: str | Path, need: set[str], hint: str = "") -> list[dict]:
    """Rows of a CSV with a header holding every column in ``need``; a DataError names the file and
    the missing columns otherwise (``hint`` says what the file should be)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file does not exist")
    rows = list(csv.DictReader(p.read_text(encoding="utf-8-sig").splitlines()))
    if not rows:
        raise DataError(p, "no rows under the header")
    missing = sorted(need - set(rows[0]))
    if missing:
        raise DataError(p, f"missing column(s) {', '.join(missing)}" + (f"; {hint}" if hint else ""))
    return rows
