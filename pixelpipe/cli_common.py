"""What every ``pixelpipe`` command shares: one-line user errors, JSON lines, the broker option."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
import orjson

from pixelpipe.errors import PixelpipeError
from pixelpipe.streams.errors import StreamsError
from pixelpipe.streams.settings import ENV_KAFKA, ConfigError, Settings

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> None:
    click.echo(f"pixelpipe: error: {message}", err=True)
    raise SystemExit(1)


def user_errors(func: F) -> F:
    """Turn our errors into one line on stderr and exit 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (StreamsError, PixelpipeError, ConfigError) as exc:
            _fail(str(exc))
        except BrokenPipeError:
            # the reader went away (``... | head``): stop quietly, as Unix tools do
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(0) from None
        except KeyboardInterrupt:
            _fail("interrupted")
        except TimeoutError:
            _fail("timed out waiting for Kafka (is the broker up? see --broker)")
        except OSError as exc:
            _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return None

    return wrapper  # type: ignore[return-value]


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
