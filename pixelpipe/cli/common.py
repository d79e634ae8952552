"""What every ``pixelpipe`` command shares: one-line user errors, JSON lines, tables, the broker
option."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import sys
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from typing import Any, TextIO, TypeVar

import click
import orjson

from pixelpipe.config import ENV_KAFKA, Settings
from pixelpipe.errors import ConfigError, OperationalError, PixelpipeError

F = TypeVar("F", bound=Callable[..., Any])

ENV_DEBUG = "PIXELPIPE_DEBUG"

#: exit codes of every command (documented in ``pixelpipe --help``)
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DEAD_LETTER = 0, 1, 2, 3

_debug = False


class CliError(OperationalError):
    """A user error found by the command line itself: one line on stderr, exit 1."""

    code = "cli_error"


def set_debug(on: bool) -> None:
    global _debug
    _debug = on


def debug_enabled() -> bool:
    """``pixelpipe --debug`` or ``PIXELPIPE_DEBUG=1``: errors keep their traceback."""
    return _debug or os.environ.get(ENV_DEBUG, "").strip().lower() in ("1", "true", "yes", "on")


def _fail(message: str) -> None:
    click.echo(f"pixelpipe: error: {message}", err=True)
    raise SystemExit(EXIT_ERROR)


def user_errors(func: F) -> F:
    """Turn every error into one line on stderr and exit 1 (with ``--debug``: the traceback).

    click's own usage errors (exit 2) and ``SystemExit`` pass through untouched."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:
            # the reader went away (``... | head``): stop quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None
        except KeyboardInterrupt:
            _fail("interrupted")
        except Exception as exc:
            if debug_enabled():
                raise
            _fail(describe(exc))
        return None

    return wrapper  # type: ignore[return-value]


def describe(exc: BaseException) -> str:
    """One line for an error: ours as they are, anything else with its type and a hint."""
    if isinstance(exc, OperationalError | PixelpipeError | ConfigError | CliError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out waiting for Kafka (is the broker up? see --broker)"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)
    text = _ADDRESS_FAMILY.sub("", " ".join(str(exc).split())) or "(no message)"
    return f"{type(exc).__name__}: {text} (run with --debug or {ENV_DEBUG}=1 for the traceback)"


#: the socket family aiokafka puts in its addresses: ``('localhost', 9092, <AddressFamily...>)``
_ADDRESS_FAMILY = re.compile(r",\s*<AddressFamily\.\w+:\s*-?\d+>")


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def emit(obj: Any) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")
    sys.stdout.flush()


def settings_from(broker: str | None, **overrides: Any) -> Settings:
    return Settings.from_env(broker=broker, **overrides)


broker_option = click.option(
    "--broker", "-b", default=None, metavar="URL",
    help=f"Kafka broker URL, e.g. kafka://127.0.0.1:9092 (env {ENV_KAFKA}).",
)


# --------------------------------------------------------------------------- tables

#: what separates two columns of the plain layout
PLAIN_GAP = "  "


def _cell(value: Any) -> str:
    """One line of text for a cell: newlines and tabs become spaces, an empty cell is ``-``."""
    text = " ".join(str(value).split()) if value is not None else ""
    return text or "-"


def is_terminal(file: TextIO) -> bool:
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
    wrap: Collection[str] = (), right: Collection[str] = (),
    styles: Sequence[str | None] | None = None, file: TextIO | None = None,
) -> None:
    """Print a table for people to read (machines get ``--json``), on ``file`` (stdout).

    Only the columns named in ``wrap`` (free text: messages, details) may wrap; every other
    cell (event ids, times, codes) stays whole on one line, so it can be copied. Each row is
    one line of the plain layout; newlines inside a cell become spaces.

    - ``file`` is a terminal: a rich table as wide as the terminal, rows styled by ``styles``
      (one rich style or None per row). When the unwrappable columns do not fit, the plain
      layout instead: its lines run past the terminal's width, but no cell is cut or wrapped.
    - otherwise (a pipe, a file): the plain layout, whatever the width: a header line, then one
      line per row, columns padded with spaces and two spaces apart (``right`` columns
      right-aligned), no box characters, no colour; the title, if any, goes to stderr.
    """
    out = file if file is not None else sys.stdout
    cells = [[_cell(value) for value in row] for row in rows]
    if any(len(row) != len(columns) for row in cells):
        raise ValueError("every row needs one cell per column")
    if is_terminal(out) and _print_rich(out, columns, cells, title, wrap, right, styles):
        return
    if title:
        click.echo(title, err=True)
    for line in plain_lines(columns, cells, right):
        out.write(line + "\n")
    out.flush()


def plain_lines(
    columns: Sequence[str], cells: Sequence[Sequence[str]], right: Collection[str] = (),
) -> list[str]:
    """The plain layout, line by line (see ``print_table``)."""
    from rich.cells import cell_len

    widths = [max([cell_len(name)] + [cell_len(row[i]) for row in cells])
              for i, name in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = []
        for i, value in enumerate(values):
            pad = " " * (widths[i] - cell_len(value))
            parts.append(pad + value if columns[i] in right else value + pad)
        return PLAIN_GAP.join(parts).rstrip()

    return [line(columns), *(line(row) for row in cells)]


def _print_rich(
    out: TextIO, columns: Sequence[str], cells: Sequence[Sequence[str]], title: str | None,
    wrap: Collection[str], right: Collection[str], styles: Sequence[str | None] | None,
) -> bool:
    """The rich table on a terminal, if its unwrappable columns fit; False if they do not."""
    from rich.cells import cell_len
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    console = Console(file=out)
    table = Table(title=Text(title) if title else None)
    for i, name in enumerate(columns):
        free = name in wrap
        table.add_column(
            name, justify="right" if name in right else "left", no_wrap=not free,
            overflow="fold" if free else "ignore",
            min_width=None if free else max([cell_len(name)] + [cell_len(r[i]) for r in cells]),
        )
    for n, row in enumerate(cells):
        # Text, not str: a message holding "[name]" is not rich markup
        table.add_row(*(Text(value) for value in row), style=styles[n] if styles else None)
    needed = Measurement.get(console, console.options.update_width(1 << 20), table).minimum
    if needed > console.width:
        return False
    console.print(table)
    return True
