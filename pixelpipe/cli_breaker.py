"""``pixelpipe breaker status|open|close|disable|reset``: see and override circuit breakers."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pixelpipe.cli_common import broker_option, emit, settings_from, user_errors
from pixelpipe.streams.breaker import Command


def _settings(broker: str | None) -> Any:
    return settings_from(broker)


@click.group()
def breaker() -> None:
    """See and override the per-processor circuit breakers (shared by every worker)."""


def _broker_option(func: Any) -> Any:
    return broker_option(func)


@breaker.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON line per processor.")
@_broker_option
def status(as_json: bool, broker: str | None) -> None:
    """Every processor's breaker: state, failure and slow rates, calls in the window,
    since when, next trial."""
    from pixelpipe.streams.breaker_client import breaker_status

    @user_errors
    def run() -> None:
        rows = asyncio.run(breaker_status(_settings(broker)))
        if as_json:
            for row in rows:
                emit(row)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title="circuit breakers")
        for column in ("processor", "state", "failure rate", "slow rate", "calls", "since",
                       "next trial", "reason"):
            table.add_column(column)
        for row in rows:
            table.add_row(row["processor"], row["state"], f"{row['failure_rate']:.0%}",
                          f"{row['slow_rate']:.0%}", str(row["calls"]), row["since"] or "",
                          row["next_trial"] or "", row["reason"])
        Console().print(table)
        if not rows:
            click.echo("no breaker has seen any outcome yet", err=True)

    run()


def _override(cmd: Command, help_text: str) -> None:
    @breaker.command(name=cmd, help=help_text)
    @click.argument("processor")
    @_broker_option
    def command(processor: str, broker: str | None) -> None:
        from pixelpipe.streams.breaker_client import send_command

        @user_errors
        def run() -> None:
            emit(asyncio.run(send_command(_settings(broker), processor, cmd)))

        run()


_override("open", "Force PROCESSOR's breaker open on every worker (FORCED_OPEN) until "
                  "close or reset.")
_override("close", "Close PROCESSOR's breaker (ends FORCED_OPEN, DISABLED or OPEN).")
_override("disable", "Disable PROCESSOR's breaker: it never opens, whatever the failures.")
_override("reset", "Back to CLOSED with an empty window and no trips.")
