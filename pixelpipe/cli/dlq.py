"""``pixelpipe dlq``: inspect and replay dead letters; a thin shell over ``streams.dlq_reader``
and ``streams.dlq_replay``.

Registered on ``main`` by ``pixelpipe.cli``; shares ``pixelpipe.cli.common`` with the others.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import click
import orjson

from pixelpipe.cli.common import (
    broker_option,
    emit,
    print_table,
    run,
    settings_from,
    user_errors,
)
from pixelpipe.config import Settings
from pixelpipe.errors import ReplayRefused
from pixelpipe.policy.deadletters import (
    LetterFilter,
    Status,
    StoredLetter,
    Target,
    parse_when,
    refusal_reason,
)
from pixelpipe.policy.replay_plan import plan_replay
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


LETTER_COLUMNS = ("dead-lettered at", "event id", "image", "code (cause)", "processor", "tries",
                  "replays", "status")
#: with a replay plan (``dlq replay --dry-run``): what the run would do with each letter, and why
PLAN_COLUMNS = ("plan", "why")


def _letter_row(stored: StoredLetter) -> list[str]:
    line = stored.summary()
    code = line["code"] if line["cause"] == line["code"] else f"{line['code']} ({line['cause']})"
    return [
        line["dead_lettered_at"].replace("T", " ")[:19], line["event_id"], line["image_id"] or "-",
        code, line["processor"] or "-", str(line["attempts"]), str(line["replays"]),
        line["status"],
    ]


def _print_table(
    letters: Sequence[StoredLetter], plan: dict[str, tuple[str, str]] | None = None,
    title: str | None = None,
) -> None:
    """The letters as a table (``common.print_table``: event ids never wrap; plain columns when
    stdout is not a terminal). ``plan``: letter key -> (plan, why), two more columns."""
    columns = LETTER_COLUMNS + (PLAN_COLUMNS if plan is not None else ())
    rows = []
    for stored in letters:
        row = _letter_row(stored)
        if plan is not None:
            row.extend(plan.get(stored.key, ("-", "-")))
        rows.append(row)
    print_table(columns, rows, title=title or f"{len(letters)} dead letter(s)",
                wrap={"why"}, right={"tries", "replays"})


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
    click.echo(f"{summary['total']} dead letter(s), oldest {summary['oldest'] or '-'}, "
               f"newest {summary['newest'] or '-'}; replayed {summary['replayed']}, "
               f"not replayed {summary['not_replayed']}")
    for title in ("by_code", "by_cause", "by_processor", "by_status"):
        click.echo()
        # the first column's name says what it counts by: no title needed in the plain layout
        print_table((title.removeprefix("by_"), "letters"),
                    [(key, count) for key, count in summary[title].items()], right={"letters"})


async def _stats(settings: Settings, where: LetterFilter, timeout: float) -> dict[str, Any]:
    async with DeadLetterReader(settings, timeout_s=timeout) as reader:
        return await reader.stats(where)


# --------------------------------------------------------------------------- replay


@dlq.command()
@filter_options
@click.option("--limit", "-n", type=click.IntRange(min=0), default=None,
              help="Replay at most N letters (oldest first); run again for the rest.")
@click.option("--dry-run", is_flag=True,
              help="Show the plan and publish nothing: each letter that would be replayed, and "
                   "each that would be refused and why (input errors without --force); exits 0 "
                   "either way.")
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
    caused by input errors are refused unless --force: the whole run is refused, exit 1, before
    anything is published (--dry-run shows which letters and why). A progress bar and a summary
    (count, time, measured rate) go to stderr; --json prints one line per letter on stdout
    (with --dry-run: action would_replay, would_refuse or recovered, and why).
    """
    where = make_filter(codes, processors, since, until, image_ids, event_ids)
    if dry_run:
        _dry_run(settings_from(broker), where, cast(Target, to), limit, force, again, as_json,
                 timeout)
        return
    report, letters = run(_replay(
        settings_from(broker), where, cast(Target, to), limit, rate, force, again, timeout,
    ))
    replayed = set(report.event_ids)
    for stored in letters:
        line = stored.summary()
        line["action"] = "replayed" if stored.event_id in replayed else "recovered"
        if as_json:
            emit(line)
    recovered = (f"; {report.recovered} of an interrupted run were already published"
                 if report.recovered else "")
    click.echo(
        f"pixelpipe: replayed {report.replayed} dead letter(s) to {report.topic} in "
        f"{report.elapsed_s:.2f} s ({report.rate:.1f}/s){recovered}{_skipped(report.skipped)}",
        err=True,
    )


def _skipped(skipped: dict[str, int]) -> str:
    text = ", ".join(f"{k} {v}" for k, v in skipped.items())
    return f"; skipped: {text}" if text else ""


async def _replay(
    settings: Settings, where: LetterFilter, to: Target, limit: int | None,
    rate: float | None, force: bool, again: bool, timeout: float,
) -> tuple[Any, list[StoredLetter]]:
    """A real replay: the plan is refused as a whole (``ReplayRefused``, exit 1) when it holds
    a letter caused by an input error and not --force."""
    from rich.progress import Progress

    from pixelpipe.streams.deadletter_replayer import Replayer

    async with Replayer(settings, dry_run=False, timeout_s=timeout) as replayer:
        plan = await replayer.plan(where, to=to, again=again, force=force, limit=limit)
        show_bar = sys.stderr.isatty() and len(plan.letters) > 0
        with Progress(transient=True, disable=not show_bar) as bar:
            task = bar.add_task("replaying", total=len(plan.letters))
            report = await replayer.replay(
                plan, rate=rate, on_progress=lambda n: bar.update(task, completed=n)
            )
    return report, list(plan.letters)


# --------------------------------------------------------------------------- replay --dry-run


@dataclass(frozen=True)
class Preview:
    """What ``dlq replay`` would do with a selection, letter by letter (a dry run)."""

    #: every selected letter the run would act on or refuse, in topic order
    letters: list[StoredLetter]
    #: letter key -> (plan, why): ``replay``, ``recovered`` or ``refuse``
    plan: dict[str, tuple[str, str]]
    report: Any
    #: refused letters by reason: their input-error code, or ``not replayable as asked``
    refused: Counter[str]
    #: how many of them are refused for an input error (--force would take them)
    input_errors: int = 0


#: the reason of a refusal that is not an input error (the why column has the words)
OTHER_REFUSAL = "not replayable as asked"


def _why_refused(
    stored: StoredLetter, refusal: ReplayRefused, force: bool
) -> tuple[str, str, bool]:
    """(reason, why, input error?): the input-error code and what it means, or the refusal's
    own words."""
    code = None if force else refusal_reason(stored.letter)
    if code is not None:
        return code, (f"input error {code}: the same input would fail the same way (fix the "
                      "cause, then --force)"), True
    return OTHER_REFUSAL, str(refusal), False


async def preview_replay(
    settings: Settings, where: LetterFilter, to: Target, limit: int | None, force: bool,
    again: bool, timeout: float,
) -> Preview:
    """The plan of a replay run without running it, refused letters included.

    A real run refuses the whole selection when one letter would be refused; a dry run shows
    which ones and why. Each letter is planned alone by ``policy.replay_plan.plan_replay`` (the
    one set of rules); the replayable ones are then planned together, with ``--limit``, and
    dry-run "replayed" by the ``Replayer`` (nothing is written; in-doubt letters already
    published by an interrupted run show as recovered)."""
    from pixelpipe.streams.deadletter_replayer import Replayer

    async with Replayer(settings, dry_run=True, timeout_s=timeout) as replayer:
        selected = await replayer.reader.letters(where)
        replayable: list[StoredLetter] = []
        plan: dict[str, tuple[str, str]] = {}
        refused: Counter[str] = Counter()
        input_errors = 0
        for stored in selected:
            try:
                plan_replay([stored], to=to, again=again, force=force)
            except ReplayRefused as refusal:
                reason, why, input_error = _why_refused(stored, refusal, force)
                refused[reason] += 1
                input_errors += input_error
                plan[stored.key] = ("refuse", why)
                continue
            replayable.append(stored)  # skipped ones too: plan_replay counts them
        replay_plan = plan_replay(replayable, to=to, again=again, force=force, limit=limit)
        report = await replayer.replay(replay_plan)
    would = set(report.event_ids)
    topic = report.topic
    for stored in replay_plan.letters:
        plan[stored.key] = (("replay", f"to {topic}") if stored.event_id in would
                            else ("recovered", "already published by an interrupted run"))
    shown = [s for s in selected if s.key in plan]
    return Preview(letters=shown, plan=plan, report=report, refused=refused,
                   input_errors=input_errors)


def _dry_run(
    settings: Settings, where: LetterFilter, to: Target, limit: int | None, force: bool,
    again: bool, as_json: bool, timeout: float,
) -> None:
    preview = run(preview_replay(settings, where, to, limit, force, again, timeout))
    report = preview.report
    actions = {"replay": "would_replay", "recovered": "recovered", "refuse": "would_refuse"}
    for stored in preview.letters:
        action, why = preview.plan[stored.key]
        if as_json:
            line = stored.summary()
            line["action"] = actions[action]
            line["why"] = why
            emit(line)
    if not as_json and preview.letters:
        _print_table(preview.letters, preview.plan,
                     title=f"dry run: {len(preview.letters)} dead letter(s)")
    refused = ""
    if preview.refused:
        count = sum(preview.refused.values())
        reasons = ", ".join(f"{r} {n}" for r, n in preview.refused.most_common())
        advice = (": fix the cause and pass --force, or narrow it with --code"
                  if preview.input_errors else " (see why)")
        refused = (f"; would refuse {count} ({reasons}), and without --dry-run the whole "
                   f"selection is refused{advice}")
    recovered = (f"; {report.recovered} in doubt already published (would be confirmed)"
                 if report.recovered else "")
    click.echo(f"pixelpipe: dry run: would replay {report.replayed} dead letter(s) to "
               f"{report.topic}{recovered}{refused}{_skipped(report.skipped)}; nothing "
               "published", err=True)
