"""All terminal output goes through :class:`Output`: records/JSON on stdout, messages, errors and the
Rich progress bar on stderr (so ``--json`` output stays parseable), ``--quiet`` silences messages."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape

DEBUG = os.environ.get("PRIVPIX_DEBUG", "") not in ("", "0")


class Output:
    """Human / JSON / quiet output for one command run."""

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json = json_mode
        self.quiet = quiet
        self.out = Console(file=sys.stdout, highlight=False, soft_wrap=True)
        self.err = Console(file=sys.stderr, highlight=False, soft_wrap=True)

    def record(self, obj: dict[str, Any]) -> None:
        """One machine-readable record (a JSON line on stdout in --json mode)."""
        if self.json:
            sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
            sys.stdout.flush()

    def emit_json(self, obj: Any) -> None:
        """A whole JSON document on stdout (for commands whose result is one object)."""
        sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
        sys.stdout.flush()

    def line(self, msg: str) -> None:
        """A human line on stdout (not in --json or --quiet mode)."""
        if not (self.json or self.quiet):
            self.out.print(msg)

    def info(self, msg: str) -> None:
        """A message on stderr (not with --quiet)."""
        if not self.quiet:
            self.err.print(msg)

    def warn(self, msg: str) -> None:
        if not self.quiet:
            self.err.print(f"[yellow]warning:[/] {escape(msg)}")

    def error(self, msg: str) -> None:
        """One error line on stderr; always shown, also with --quiet."""
        self.err.print(f"[red]error:[/] {escape(msg)}")

    @contextmanager
    def progress(self, total: int, description: str) -> Iterator[Any]:
        """A Rich progress bar with ETA on stderr (none with --quiet or for a single item)."""
        if self.quiet or total <= 1:
            yield None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.err,
            transient=False,
        ) as prog:
            task = prog.add_task(description, total=total)

            class _Adv:
                def advance(self, n: int = 1) -> None:
                    prog.advance(task, n)

            yield _Adv()


def route_warnings(out: Output) -> None:
    """Send Python/Pillow warnings (TIFF tag warnings, ...) through ``out``: one yellow line each on
    stderr, silenced by --quiet, never a raw ``file:line: Warning`` dump."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        out.warn(f"{category.__name__}: {message}".splitlines()[0])

    warnings.showwarning = show


def cli_errors(fn):  # type: ignore[no-untyped-def]
    """Decorator for commands: a PrivpixError becomes one stderr line and its exit code (2 for usage)."""
    import functools

    import typer

    from ..errors import PrivpixError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PrivpixError as e:
            if DEBUG:
                raise
            Output().error(str(e))
            raise typer.Exit(e.exit_code) from None

    return wrapper
