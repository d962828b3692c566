"""The `hrtemnet` command line: a thin layer over the library functions.

Every command is registered with `@command()`, which turns a `UserError` (bad input the user
can fix) into one line on stderr and exit code 2.
"""

from __future__ import annotations

import functools
from pathlib import Path

import typer
from rich.console import Console

from hrtemnet.errors import UserError

app = typer.Typer(
    name="hrtemnet",
    help="Find and classify atomic columns (Mo, S2, S) in HRTEM focal series of MoS2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
console = Console()
err_console = Console(stderr=True)


def command(*args, **kwargs):
    """Register a CLI command whose UserErrors become `error: ...` and exit code 2."""

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*a, **kw):
            try:
                return func(*a, **kw)
            except UserError as error:
                err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None

        return app.command(*args, **kwargs)(wrapper)

    return decorate


def parse_float_list(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} must be comma-separated numbers, e.g. -30,20,70 (got {text!r})") from None


def existing_path(path: Path, what: str) -> Path:
    if not path.exists():
        raise UserError(f"{what} {path} does not exist")
    return path
