"""Shared CLI helpers: a console, error handling that prints a clear line instead of a traceback."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mfas.errors import MfasError

# no emoji codes: rich would print a data reference such as "crops:train:" as a train emoji
console = Console(emoji=False)
err_console = Console(stderr=True, emoji=False)


def friendly_errors(fn: Callable) -> Callable:
    """Turn mfas' own errors into one red line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MfasError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def counts_table(title: str, counts: dict, total: int | None = None) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False)
    t.add_column("value")
    t.add_column("count", justify="right")
    if total:
        t.add_column("share", justify="right")
    for k, v in counts.items():
        row = [str(k), f"{v:,}"]
        if total:
            row.append(f"{100 * v / total:.1f}%")
        t.add_row(*row)
    return t


def print_json(obj: object) -> None:
    console.print_json(json.dumps(obj, default=str))
