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


# the extra that installs each optional package (pyproject.toml): the core installs inference only
EXTRAS = {"torch": "torch", "torchvision": "torch", "timm": "torch", "open_clip": "torch", "lightning": "train",
          "sklearn": "train", "matplotlib": "train", "tensorboard": "train", "tqdm": "train", "onnx": "train",
          "onnxscript": "train", "onnxruntime": "infer", "h5py": "hdf5",
          "fastapi": "serve", "uvicorn": "serve", "starlette": "serve"}


def missing_extra(e: ModuleNotFoundError) -> str | None:
    """The line that tells which ``pip install 'mfas[...]'`` provides a missing optional package, if it is one."""
    top = (e.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    return f"this needs {top}, which the core install leaves out: pip install 'mfas[{EXTRAS[top]}]'"


def friendly_errors(fn: Callable) -> Callable:
    """Turn mfas' own errors, and a missing optional package, into one red line and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MfasError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as e:
            line = missing_extra(e)
            if line is None:
                raise
            err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
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
