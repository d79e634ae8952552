"""``pixelpipe backfill``: ask again, at full quality, for the uploads whose outputs were
degraded; a thin shell over ``streams.backfill.Backfiller``.

Registered on ``main`` by ``pixelpipe.cli.main``; shares ``pixelpipe.cli.common`` with the others.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from pixelpipe.cli.common import (
    EXIT_ERROR,
    broker_option,
    emit,
    print_table,
    run,
    settings_from,
    user_errors,
)
from pixelpipe.config import Settings
from pixelpipe.policy.deadletters import parse_when
from pixelpipe.policy.degradation import LEVELS, Level
from pixelpipe.schemas import iso
from pixelpipe.streams.deadletter_reader import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    from pixelpipe.streams.backfill import BackfillPlan, BackfillReport, PlanItem

COLUMNS = ("completed at", "event id", "image", "level", "worst", "supersedes", "upload")


def _since(ctx: click.Context, param: click.Parameter, value: str) -> datetime:
    try:
        return parse_when(value, datetime.now(UTC))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--since", default="24h", show_default=True, metavar="WHEN", callback=_since,
              help="Outcomes completed at or after WHEN: an ISO time (2024-05-01T12:00:00Z) "
                   "or an age (90s, 30m, 2h, 1d).")
@click.option("--level", type=click.Choice(LEVELS), default=None, metavar="LEVEL",
              help="Only events whose worst rendition mark is LEVEL or worse (best first: "
                   f"{', '.join(LEVELS)}); default: any degraded rendition.")
@click.option("--dry-run", is_flag=True,
              help="Print the plan (event id, image id, level, worst rendition mark, "
                   "completed at) and publish nothing; exits 0.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=20.0,
              show_default=True, metavar="N", help="At most N uploads per second.")
@click.option("--limit", "-n", type=click.IntRange(min=0), default=None, metavar="N",
              help="At most N uploads (oldest first); run again for the rest.")
@click.option("--force", is_flag=True,
              help="Publish even though a worker is not at full or an override is in force.")
@click.option("--json", "as_json", is_flag=True, help="Machine output: JSON lines.")
@click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
              metavar="S", help="Seconds to wait for the broker before giving up.")
@broker_option
@user_errors
def backfill(
    since: datetime, level: Level | None, dry_run: bool, rate: float, limit: int | None,
    force: bool, as_json: bool, timeout: float, broker: str | None,
) -> None:
    """Republish the uploads whose outputs were degraded, so consumers get full-quality
    renditions.

    Reads the processed events completed since --since; for each event id, the latest one is
    taken when a rendition is marked degraded (at least --level). Its original upload is
    looked up on the uploads topic and published again: same event_id and image_id, priority
    low, and 'supersedes' naming the degraded outcome (partition@offset on the processed
    topic). The worker's new processed event carries it, and consumers take it as a new event.
    An event already upgraded (its latest outcome not degraded) is not taken again.

    Before publishing, the cluster must be healthy: every live worker at full and no
    degradation override in force (else one line, exit 1, nothing published; --force skips
    the check). A table or --json lines go to stdout, a summary to stderr. Exits 1 when the
    upload of a selected event is no longer on the uploads topic (the others are published).
    """
    settings = settings_from(broker)
    if dry_run:
        plan = run(_plan(settings, since, level, limit, timeout))
        _show(plan, None, as_json)
        _summary(plan, None)
        return
    plan, report = run(_run(settings, since, level, limit, rate, force, timeout))
    _show(plan, report, as_json)
    _summary(plan, report)
    if report.not_found:
        raise SystemExit(EXIT_ERROR)


async def _plan(
    settings: Settings, since: datetime, level: Level | None, limit: int | None, timeout: float,
) -> BackfillPlan:
    from pixelpipe.streams.backfill import Backfiller

    async with Backfiller(settings, dry_run=True, timeout_s=timeout) as backfiller:
        return await backfiller.plan(since=since, level=level, limit=limit)


async def _run(
    settings: Settings, since: datetime, level: Level | None, limit: int | None, rate: float,
    force: bool, timeout: float,
) -> tuple[BackfillPlan, BackfillReport]:
    """Plan, then publish: ``BackfillRefused`` (one line, exit 1) before anything is published
    when the cluster is not healthy and not --force."""
    from rich.progress import Progress

    from pixelpipe.streams.backfill import Backfiller

    async with Backfiller(settings, timeout_s=timeout) as backfiller:
        plan = await backfiller.plan(since=since, level=level, limit=limit)
        todo = len(plan.found)
        with Progress(transient=True, disable=not (sys.stderr.isatty() and todo)) as bar:
            task = bar.add_task("backfilling", total=todo)
            report = await backfiller.run(
                plan, rate=rate, force=force,
                on_progress=lambda n: bar.update(task, completed=n),
            )
    return plan, report


def _action(item: PlanItem, report: BackfillReport | None) -> str:
    if not item.found:
        return "not_found"
    return "would_publish" if report is None else "published"


def _show(plan: BackfillPlan, report: BackfillReport | None, as_json: bool) -> None:
    if as_json:
        for item in plan.items:
            line: dict[str, Any] = {**item.candidate.summary(), "action": _action(item, report)}
            landed = report.landed.get(item.candidate.event_id) if report else None
            if landed is not None:
                line["partition"], line["offset"] = landed
            emit(line)
        return
    if not plan.items:
        return
    rows: list[Sequence[str]] = []
    for item in plan.items:
        c = item.candidate
        rows.append([c.completed_at.replace("T", " ")[:23], c.event_id, c.image_id, c.level,
                     c.worst, c.supersedes, "found" if item.found else "not found"])
    what = "dry run: " if report is None else ""
    print_table(COLUMNS, rows, title=f"{what}{len(plan.items)} degraded event(s)")


def _summary(plan: BackfillPlan, report: BackfillReport | None) -> None:
    selection = plan.selection
    window = f"since {iso(plan.since)}" + (f", {plan.level} or worse" if plan.level else "")
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(selection.skipped.items()))
    tail = f"; skipped: {skipped}" if skipped else ""
    missing = len(plan.not_found)
    lost = (f"; {missing} not found (the upload is no longer on the uploads topic)"
            if missing else "")
    if not plan.items:
        click.echo(f"pixelpipe: nothing to backfill: no degraded outcome {window} "
                   f"({selection.events} event(s) read){tail}", err=True)
        return
    if report is None:
        click.echo(f"pixelpipe: dry run: would backfill {len(plan.found)} upload(s) "
                   f"({window}){lost}{tail}; nothing published", err=True)
        return
    forced = " (--force: health check skipped)" if report.forced else ""
    click.echo(f"pixelpipe: backfilled {report.published} upload(s) to {report.topic} in "
               f"{report.elapsed_s:.2f} s ({report.rate:.1f}/s; {window}){forced}{lost}{tail}",
               err=True)
