"""The harness of the bad-input corpus (tests/test_bad_input*.py): a careless or hostile input must end in a
clear error, exit status 2, a message that names the culprit (file, key or option), no traceback, and no
change to anything that existed before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mfas.cli.main import app
from mfas.errors import MfasError

runner = CliRunner()


def tree_digest(path: Path) -> str:
    """A hash of everything under ``path`` (names, sizes, bytes); of nothing when it does not exist."""
    h = hashlib.sha256()
    path = Path(path)
    if not path.exists():
        return "absent"
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def flat(text: str) -> str:
    """Output with every run of whitespace collapsed (rich wraps long lines)."""
    return " ".join(text.split())


def cli_error(argv: list[str], culprit: str | Iterable[str], untouched: Iterable[Path] = (),
              code: int = 2, env: dict | None = None, input: str | None = None) -> str:
    """Run ``mfas argv`` in-process and check the contract; returns the (flattened) output.

    ``culprit``: text (or several) the message must contain, e.g. the file name or the key.
    ``untouched``: paths whose content must be the same afterwards (a missing path must stay missing).
    """
    keep = {Path(p): tree_digest(Path(p)) for p in untouched}
    r = runner.invoke(app, [str(a) for a in argv], env={"COLUMNS": "200", **(env or {})}, input=input)
    out = flat(r.output)
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), f"{type(r.exception).__name__}: {r.exception}"
    assert r.exit_code == code, f"exit {r.exit_code}: {out}"
    for c in [culprit] if isinstance(culprit, str) else culprit:
        assert flat(c) in out, f"{c!r} not in: {out}"
    for p, digest in keep.items():
        assert tree_digest(p) == digest, f"{p} changed"
    return out


def api_error(fn: Callable[[], object], culprit: str | Iterable[str], untouched: Iterable[Path] = (),
              error: type[BaseException] = MfasError) -> BaseException:
    """Call ``fn()`` and check it raises ``error`` (an mfas error by default) whose message names the culprit,
    leaving ``untouched`` as it was."""
    keep = {Path(p): tree_digest(Path(p)) for p in untouched}
    with pytest.raises(error) as info:
        fn()
    msg = flat(str(info.value))
    for c in [culprit] if isinstance(culprit, str) else culprit:
        assert flat(c) in msg, f"{c!r} not in: {msg}"
    for p, digest in keep.items():
        assert tree_digest(p) == digest, f"{p} changed"
    return info.value
