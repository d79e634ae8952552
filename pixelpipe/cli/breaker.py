"""``pixelpipe breaker status|open|close|disable|reset``: see and override circuit breakers.

Processor names are checked against what this version runs (``known_processors``): a typo
such as ``breaker open bogus`` is refused in one line, ``--force`` sends it anyway (a
processor of a newer version, say). ``breaker reset`` of a name this version does not know
removes its row: a tombstone on the compacted breaker topic, which ``status`` honours.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pixelpipe.cli.common import (
    CliError,
    broker_option,
    emit,
    print_table,
    settings_from,
    user_errors,
)
from pixelpipe.config import Settings
from pixelpipe.policy.breaker import Command

#: pipeline stages that report outcomes under their own name (``agents/upload_processor.py``,
#: ``imaging/pool.py``, ``imaging/encode.py``, ``imaging/verify.py``); ``render`` is the name
#: of a failure that names no processor
STAGES = ("fetch", "decode", "pool", "render", "encode", "verify", "store")


def known_processors() -> tuple[str, ...]:
    """Every name a breaker can have in this version: the stages, each operation that is a
    processor (``agents.gate.NOT_PROCESSORS`` are not) and each encoder (output format)."""
    from pixelpipe.imaging import OUTPUT_FORMATS, REGISTRY
    from pixelpipe.policy.gate import NOT_PROCESSORS

    operations = [name for name in REGISTRY if name not in NOT_PROCESSORS]
    return (*STAGES, *operations, *OUTPUT_FORMATS)


def _settings(broker: str | None) -> Settings:
    return settings_from(broker)


@click.group()
def breaker() -> None:
    """See and override the per-processor circuit breakers (shared by every worker).

    A processor is a stage (fetch, decode, pool, render, encode, verify, store), an operation
    (resize, blur, ...) or an encoder (jpeg, png, webp, avif).
    """


def _broker_option(func: Any) -> Any:
    return broker_option(func)


# --------------------------------------------------------------------------- status


@breaker.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON line per processor.")
@_broker_option
def status(as_json: bool, broker: str | None) -> None:
    """Every processor's breaker: state, failure and slow rates, calls in the window,
    since when, next trial."""

    @user_errors
    def run() -> None:
        rows = asyncio.run(breaker_rows(_settings(broker)))
        if as_json:
            for row in rows:
                emit(row)
            return
        print_table(
            ("processor", "state", "failure rate", "slow rate", "calls", "since", "next trial",
             "reason"),
            [(row["processor"], row["state"], f"{row['failure_rate']:.0%}",
              f"{row['slow_rate']:.0%}", row["calls"], row["since"], row["next_trial"],
              row["reason"]) for row in rows],
            title="circuit breakers", wrap={"reason"},
            right={"failure rate", "slow rate", "calls"},
        )
        if not rows:
            click.echo("no breaker has seen any outcome yet", err=True)

    run()


async def breaker_rows(settings: Settings) -> list[dict[str, Any]]:
    """One row per processor, as ``streams.breaker_client.breaker_status`` makes them."""
    from pixelpipe.streams.breaker_client import breaker_status

    return await breaker_status(settings)


# --------------------------------------------------------------------------- overrides


#: what each command did, in words (stderr), for processor {p}
DONE: dict[Command, str] = {
    "open": "forced the breaker of {p} open on every worker: its calls are refused until "
            "'pixelpipe breaker close {p}' or reset",
    "close": "closed the breaker of {p} on every worker: its calls run again",
    "disable": "disabled the breaker of {p} on every worker: it will not open, whatever the "
               "failures, until close or reset",
    "reset": "reset the breaker of {p}: closed, with an empty window and no trips",
}


def check_processor(processor: str, force: bool) -> bool:
    """Whether ``processor`` is known to this version; unknown without ``force``: an error."""
    known = known_processors()
    if processor in known or force:
        return processor in known
    raise CliError(
        f"unknown processor {processor!r} (known: {', '.join(known)}); --force sends it anyway "
        "(a processor of another version)"
    )


async def remove_row(settings: Settings, processor: str) -> None:
    """A tombstone for ``processor`` on the compacted breaker topic (delivered, acks=all)."""
    from pixelpipe.streams.client import Publisher
    from pixelpipe.streams.topics import breaker_topic

    async with Publisher(settings) as publisher:
        await publisher.send_raw(breaker_topic(settings.topic_prefix), processor.encode(), None)


def _override(cmd: Command, help_text: str) -> None:
    @breaker.command(name=cmd, help=help_text)
    @click.argument("processor")
    @click.option("--force", is_flag=True,
                  help="Accept a processor name this version does not know.")
    @click.option("--json", "as_json", is_flag=True,
                  help="Also print the command sent, as one JSON line on stdout.")
    @_broker_option
    def command(processor: str, force: bool, as_json: bool, broker: str | None) -> None:
        from pixelpipe.streams.breaker_client import send_command

        @user_errors
        def run() -> None:
            settings = _settings(broker)
            if cmd == "reset" and not force and processor not in known_processors():
                asyncio.run(remove_row(settings, processor))
                if as_json:
                    emit({"processor": processor, "removed": True})
                click.echo(f"pixelpipe: removed the breaker row of {processor!r}, not a "
                           "processor of this version", err=True)
                return
            check_processor(processor, force)
            message = asyncio.run(send_command(settings, processor, cmd))
            if as_json:
                emit(message)
            click.echo(f"pixelpipe: {DONE[cmd].format(p=processor)}", err=True)

        run()


_override("open", "Force PROCESSOR's breaker open on every worker (FORCED_OPEN) until "
                  "close or reset. PROCESSOR must be known to this version unless --force.")
_override("close", "Close PROCESSOR's breaker (ends FORCED_OPEN, DISABLED or OPEN).")
_override("disable", "Disable PROCESSOR's breaker: it never opens, whatever the failures.")
_override("reset", "Back to CLOSED with an empty window and no trips. For a name this "
                   "version does not know (a typo forced open, say): remove its row.")
