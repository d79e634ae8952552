"""What every ``pixelpipe`` command shares: one-line user errors, JSON lines, the broker option."""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

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
    text = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {text} (run with --debug or {ENV_DEBUG}=1 for the traceback)"


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
