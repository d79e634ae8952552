"""``pixelpipe dlq``: inspect and replay dead letters; a thin shell over ``streams.dlq_reader``
and ``streams.dlq_replay``.

Registered on ``main`` by ``pixelpipe.cli``; shares ``pixelpipe.cli.common`` with the others.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import click
import orjson

from pixelpipe.cli.common import broker_option, emit, run, settings_from, user_errors
from pixelpipe.config import Settings
from pixelpipe.policy.deadletters import LetterFilter, Status, StoredLetter, Target, parse_when
from pixelpipe.schemas import to_dict
from pixelpipe.streams.deadletter_reader import DEFAULT_TIMEOUT_S, DeadLetterReader

F = TypeVar("F", bound=Callable[..., Any])
STATUSES = ("pending", "in_doubt", "replayed", "superseded")


def filter_options(func: F) -> F:
    """The selection options shared by list, stats and replay."""
    options = [
        click.option("--code", "codes", multiple=True, metavar="CODE",
                     help="Final error code or cause (the last attempt's code), e.g. "
                          "source_missing also matches letters that ended retries_exhausted "
                          "after missing sources (repeatable: any of them)."),
        click.option("--processor", "processors", multiple=True, metavar="NAME",
                     help="The processor that failed: an operation, decode, fetch, store "
                          "(repeatable)."),
        click.option("--since", default=None, metavar="WHEN",
                     help="Dead-lettered at or after WHEN: an ISO time "
                          "(2024-05-01T12:00:00Z) or an age (90s, 30m, 2h, 1d)."),
        click.option("--until", default=None, metavar="WHEN",
                     help="Dead-lettered at or before WHEN (ISO time or age)."),
        click.option("--image-id", "image_ids", multiple=True, metavar="ID",
                     help="Only this image (repeatable)."),
        click.option("--event-id", "event_ids", multiple=True, metavar="ID",
                     help="Only this event (repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


timeout_option = click.option(
    "--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True, metavar="S",
    help="Seconds to wait for the broker before giving up.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine output: JSON lines.")


def make_filter(
    codes: Sequence[str], processors: Sequence[str], since: str | None, until: str | None,
    image_ids: Sequence[str], event_ids: Sequence[str], statuses: Sequence[str] = (),
) -> LetterFilter:
    now = datetime.now(UTC)

    def when(value: str | None, name: str) -> datetime | None:
        if value is None:
            return None
        try:
            return parse_when(value, now)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint=name) from None

    return LetterFilter(
        codes=tuple(codes), processors=tuple(processors), image_ids=tuple(image_ids),
        event_ids=tuple(event_ids), since=when(since, "--since"), until=when(until, "--until"),
        statuses=cast(tuple[Status, ...], tuple(statuses)),
    )


@click.group()
def dlq() -> None:
    """Inspect and replay dead letters (the PREFIX.dlq topic).

    A letter is identified by its event id and replay count; copies of the same letter
    (at-least-once delivery) count once. Replays are recorded in the compacted PREFIX.dlq.replays
    ledger: each letter is replayed once unless --again, and an interrupted replay run again
    continues without duplicates.
    """


# --------------------------------------------------------------------------- list


@dlq.command("list")
@filter_options
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUSES),
              help="Only letters in this replay state (repeatable).")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=None,
              help="At most N letters (oldest first).")
@json_option
@timeout_option
@broker_option
@user_errors
def list_(
    codes: Sequence[str], processors: Sequence[str], since: str | None, until: str | None,
    image_ids: Sequence[str], event_ids: Sequence[str], statuses: Sequence[str],
    limit: int | None, as_json: bool, timeout: float, broker: str | None,
) -> None:
    """List dead letters, oldest first: a table, or one JSON object per line with --json.

    Each line holds event_id, image_id, code (final), cause (last attempt's code), processor,
    message, attempts, first_failed_at, dead_lettered_at, replays, status (pending, in_doubt,
    replayed or superseded), partition, offset and duplicates.
    """
    where = make_filter(codes, processors, since, until, image_ids, event_ids, statuses)
    letters = run(_letters(settings_from(broker), where, limit, timeout))
    if as_json:
        for stored in letters:
            emit(stored.summary())
        return
    _print_table(letters)


async def _letters(
    settings: Settings, where: LetterFilter, limit: int | None, timeout: float
) -> list[StoredLetter]:
    async with DeadLetterReader(settings, timeout_s=timeout) as reader:
        return await reader.letters(where, limit)


def _print_table(letters: Sequence[StoredLetter]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(letters)} dead letter(s)")
    table.add_column("dead-lettered at", no_wrap=True)
    table.add_column("event id", overflow="fold")
    table.add_column("image", overflow="fold")
    table.add_column("code (cause)", overflow="fold")
    table.add_column("processor")
    table.add_column("tries", justify="right")
    table.add_column("replays", justify="right")
    table.add_column("status")
    for stored in letters:
        line = stored.summary()
        code = line["code"] if line["cause"] == line["code"] else f"{line['code']} ({line['cause']})"
        table.add_row(
            line["dead_lettered_at"].replace("T", " ")[:19], line["event_id"],
            line["image_id"] or "-", code, line["processor"] or "-", str(line["attempts"]),
            str(line["replays"]), line["status"],
        )
    Console().print(table)


# --------------------------------------------------------------------------- show


@dlq.command()
@click.argument("event_id")
@json_option
@timeout_option
@broker_option
@user_errors
def show(event_id: str, as_json: bool, timeout: float, broker: str | None) -> None:
    """Show every dead letter of EVENT_ID: the whole envelope (error, attempt history, origin,
    the original upload, replays), its replay state and the ledger's record.

    One object per letter (a replayed event that died again has one per generation); --json
    prints them as JSON lines. Exits 1 when the event has no dead letter.
    """
    letters = run(_show(settings_from(broker), event_id, timeout))
    for stored in letters:
        obj = {
            "status": stored.status,
            "partition": stored.partition,
            "offset": stored.offset,
            "duplicates": stored.duplicates,
            "letter": to_dict(stored.letter),
            "replay": stored.replay.to_json() if stored.replay else None,
        }
        if as_json:
            emit(obj)
        else:
            sys.stdout.write(orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() + "\n")


async def _show(settings: Settings, event_id: str, timeout: float) -> list[StoredLetter]:
    async with DeadLetterReader(settings, timeout_s=timeout) as reader:
        return await reader.show(event_id)


# --------------------------------------------------------------------------- stats


@dlq.command()
@filter_options
@json_option
@timeout_option
@broker_option
@user_errors
def stats(
    codes: Sequence[str], processors: Sequence[str], since: str | None, until: str | None,
    image_ids: Sequence[str], event_ids: Sequence[str], as_json: bool, timeout: float,
    broker: str | None,
) -> None:
    """Count dead letters by code, cause, processor and replay state; oldest and newest.

    With --json, one object: total, by_code, by_cause, by_processor, by_status, replayed,
    not_replayed, oldest, newest, duplicates (extra copies collapsed) and undecodable (records
    of the topic that are not dead letters). The filters narrow what is counted.
    """
    where = make_filter(codes, processors, since, until, image_ids, event_ids)
    summary = run(_stats(settings_from(broker), where, timeout))
    if as_json:
        emit(summary)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{summary['total']} dead letter(s), oldest {summary['oldest'] or '-'}, "
                  f"newest {summary['newest'] or '-'}; replayed {summary['replayed']}, "
                  f"not replayed {summary['not_replayed']}")
    for title in ("by_code", "by_cause", "by_processor", "by_status"):
        table = Table(title=title.replace("_", " "))
        table.add_column(title.removeprefix("by_"))
        table.add_column("letters", justify="right")
        for key, count in summary[title].items():
            table.add_row(str(key), str(count))
        console.print(table)


async def _stats(settings: Settings, where: LetterFilter, timeout: float) -> dict[str, Any]:
    async with DeadLetterReader(settings, timeout_s=timeout) as reader:
        return await reader.stats(where)


# --------------------------------------------------------------------------- replay


@dlq.command()
@filter_options
@click.option("--limit", "-n", type=click.IntRange(min=0), default=None,
              help="Replay at most N letters (oldest first); run again for the rest.")
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; publish nothing.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="N", help="At most N letters per second (default: as fast as Kafka acks).")
@click.option("--to", "to", type=click.Choice(["uploads", "retry"]), default="uploads",
              show_default=True,
              help="uploads: the original upload again; retry: a retry envelope due now on "
                   "the first retry tier, with a fresh attempt history.")
@click.option("--force", is_flag=True,
              help="Also replay letters caused by input errors (malformed_event, "
                   "corrupt_image, image_too_large, ...), after their cause was fixed.")
@click.option("--again", is_flag=True, help="Also replay letters already replayed.")
@json_option
@timeout_option
@broker_option
@user_errors
def replay(
    codes: Sequence[str], processors: Sequence[str], since: str | None, until: str | None,
    image_ids: Sequence[str], event_ids: Sequence[str], limit: int | None, dry_run: bool,
    rate: float | None, to: str, force: bool, again: bool, as_json: bool, timeout: float,
    broker: str | None,
) -> None:
    """Replay dead letters: publish each original upload again (same event_id, replays + 1).

    Each letter is replayed once: letters already replayed are skipped unless --again, and
    letters of an interrupted run are finished without duplicates when run again. Letters
    caused by input errors are refused unless --force. A progress bar and a summary (count,
    time, measured rate) go to stderr; --json prints one line per letter on stdout.
    """
    where = make_filter(codes, processors, since, until, image_ids, event_ids)
    report, letters = run(_replay(
        settings_from(broker), where, cast(Target, to), limit, dry_run, rate, force, again,
        timeout,
    ))
    replayed = set(report.event_ids)
    for stored in letters:
        action = ("would_replay" if dry_run else "replayed") if stored.event_id in replayed \
            else "recovered"
        line = stored.summary()
        line["action"] = action
        if as_json:
            emit(line)
    if not as_json and dry_run and letters:
        _print_table(letters)
    skipped = ", ".join(f"{k} {v}" for k, v in report.skipped.items())
    tail = f"; skipped: {skipped}" if skipped else ""
    if dry_run:
        click.echo(f"pixelpipe: dry run: would replay {report.replayed} dead letter(s) to "
                   f"{report.topic}; nothing published{tail}", err=True)
    else:
        recovered = (f"; {report.recovered} of an interrupted run were already published"
                     if report.recovered else "")
        click.echo(
            f"pixelpipe: replayed {report.replayed} dead letter(s) to {report.topic} in "
            f"{report.elapsed_s:.2f} s ({report.rate:.1f}/s){recovered}{tail}", err=True,
        )


async def _replay(
    settings: Settings, where: LetterFilter, to: Target, limit: int | None, dry_run: bool,
    rate: float | None, force: bool, again: bool, timeout: float,
) -> tuple[Any, list[StoredLetter]]:
    from rich.progress import Progress

    from pixelpipe.streams.deadletter_replayer import Replayer

    async with Replayer(settings, dry_run=dry_run, timeout_s=timeout) as replayer:
        plan = await replayer.plan(where, to=to, again=again, force=force, limit=limit)
        show_bar = sys.stderr.isatty() and not dry_run and len(plan.letters) > 0
        with Progress(transient=True, disable=not show_bar) as bar:
            task = bar.add_task("replaying", total=len(plan.letters))
            report = await replayer.replay(
                plan, rate=rate, on_progress=lambda n: bar.update(task, completed=n)
            )
    return report, list(plan.letters)
