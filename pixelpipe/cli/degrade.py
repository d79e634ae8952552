"""``pixelpipe degrade status|set|auto``: see and override the degradation level of every worker.

An override is one record on the compacted control topic (``streams.control``) that every
worker follows: it reaches them all within a second, wins over each worker's own ladder and
expires after ``--for`` (no ``--for``: until ``degrade auto``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pixelpipe.cli.common import CliError, broker_option, emit, settings_from, user_errors
from pixelpipe.config import parse_duration
from pixelpipe.policy.degradation import LEVELS, Level

#: what each level means for an upload, in words (the confirmation of ``degrade set``)
MEANS: dict[Level, str] = {
    "full": "full quality, whatever their health",
    "reduced_quality": "capped quality and faster encoders",
    "basic": "capped quality, no optional operations, AVIF swapped for its fallback",
    "cached_only": "existing outputs only, deferring the uploads that have none",
    "emergency": "the original image as every rendition",
}


@click.group()
def degrade() -> None:
    """See and override the degradation level (shared by every worker).

    Levels, best first: full, reduced_quality, basic, cached_only, emergency. Without an
    override (auto) each worker picks its level from its health.
    """


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if seconds <= 0:
        raise click.BadParameter(f"must be a positive duration, not {value!r}")
    return seconds


def _words(seconds: float) -> str:
    """``3600`` -> ``1h``, ``90`` -> ``1m30s``, ``0.5`` -> ``0.5s``."""
    if seconds < 1:
        return f"{seconds:g}s"
    rest, parts = round(seconds), []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


async def status_row(broker: str | None) -> dict[str, Any]:
    from pixelpipe.streams.control import degrade_status

    return await degrade_status(settings_from(broker))


async def send(broker: str | None, level: Level | None, for_s: float | None,
               reason: str) -> dict[str, Any]:
    from pixelpipe.streams.control import send_degrade

    return await send_degrade(settings_from(broker), level, for_s=for_s, reason=reason)


# --------------------------------------------------------------------------- status


@degrade.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON line.")
@broker_option
def status(as_json: bool, broker: str | None) -> None:
    """The override in force: its level, until when, why and by whom; or auto."""

    @user_errors
    def run() -> None:
        row = asyncio.run(status_row(broker))
        if as_json:
            emit(row)
            return
        click.echo(describe(row))

    run()


def describe(row: dict[str, Any]) -> str:
    """``degrade status`` in words, one line."""
    if row["level"] == "auto":
        text = "auto: no override, each worker picks its level from its health"
        if row.get("expired"):
            text += f" (the override {row['expired']} by {row.get('by') or '?'} expired at " \
                    f"{row.get('expired_at')})"
        elif row.get("by"):
            text += f" (cleared by {row['by']} at {row.get('at')})"
        return text
    until = ("until 'pixelpipe degrade auto'" if row["until"] is None
             else f"until {row['until']} ({_words(max(row['remaining_s'], 0))} left)")
    reason = f": {row['reason']}" if row.get("reason") else ""
    return f"{row['level']}: every worker, {until}, set by {row.get('by') or '?'} at " \
           f"{row.get('at')}{reason}"


# --------------------------------------------------------------------------- set / auto


@degrade.command(name="set")
@click.argument("level", type=click.Choice(LEVELS), metavar="LEVEL")
@click.option("--for", "for_s", metavar="DURATION", callback=_duration, default=None,
              help="How long it holds, e.g. 10m, 1h (default: until 'degrade auto').")
@click.option("--reason", default="", metavar="TEXT", help="Why (shown by 'degrade status').")
@click.option("--json", "as_json", is_flag=True,
              help="Also print the record sent, as one JSON line on stdout.")
@broker_option
def set_(level: Level, for_s: float | None, reason: str, as_json: bool,
         broker: str | None) -> None:
    """Pin every worker at LEVEL, whatever its health, for --for (or until 'degrade auto')."""

    @user_errors
    def run() -> None:
        if level not in LEVELS:  # click.Choice checked it; a guard for direct callers
            raise CliError(f"unknown level {level!r} (known: {', '.join(LEVELS)})")
        message = asyncio.run(send(broker, level, for_s, reason))
        if as_json:
            emit(message)
        how_long = ("until 'pixelpipe degrade auto'" if for_s is None
                    else f"for {_words(for_s)}, then auto")
        click.echo(f"pixelpipe: every worker now serves at {level} ({MEANS[level]}), "
                   f"{how_long}", err=True)

    run()


@degrade.command()
@click.option("--json", "as_json", is_flag=True,
              help="Also print the record sent, as one JSON line on stdout.")
@broker_option
def auto(as_json: bool, broker: str | None) -> None:
    """Clear the override: each worker picks its level from its health again."""

    @user_errors
    def run() -> None:
        message = asyncio.run(send(broker, None, None, ""))
        if as_json:
            emit(message)
        click.echo("pixelpipe: cleared the degradation override: each worker picks its level "
                   "from its health again", err=True)

    run()
