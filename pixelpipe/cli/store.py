"""``pixelpipe store verify``: the stored blobs against their recorded sha256; a thin shell
over ``pixelpipe.streams.store_verify``.

Registered on ``main`` by ``pixelpipe.cli``; shares ``pixelpipe.cli.common`` with the others.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pixelpipe.cli.common import (
    EXIT_ERROR,
    CliError,
    broker_option,
    emit,
    print_table,
    run,
    settings_from,
    user_errors,
)
from pixelpipe.policy.deadletters import parse_when


@click.group()
def store() -> None:
    """The blob store (PIXELPIPE_DATA: a directory or s3://bucket/prefix)."""


@store.command()
@click.option("--repair", is_flag=True,
              help="Re-render bad outputs from their source: republish their uploads, wait for "
                   "the outcomes and check again.")
@click.option("--since", default=None, metavar="WHEN",
              help="Only outputs of processed events since WHEN (ISO time, or an age: 2h, 1d).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per bad blob, then one summary object (checked, bad, "
                   "repaired, ...).")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="With --repair: seconds to wait for the republished uploads' outcomes.")
@broker_option
@user_errors
def verify(repair: bool, since: str | None, as_json: bool, timeout: float,
           broker: str | None) -> None:
    """Check every stored output against the sha256 its processed event recorded, and every
    source against its own. Exit 0 when nothing bad is left, 1 otherwise."""
    from pixelpipe.streams.store_verify import StoreVerifier, VerifyReport

    since_ms = None
    if since is not None:
        try:
            since_ms = int(parse_when(since, datetime.now(UTC)).timestamp() * 1000)
        except ValueError as exc:
            raise CliError(f"--since: {exc}") from None
    settings = settings_from(broker)

    async def go() -> VerifyReport:
        async with StoreVerifier(settings) as verifier:
            report = await verifier.verify(since_ms)
            if repair and report.findings:
                report = await verifier.repair(report, timeout_s=timeout)
            return report

    report: VerifyReport = run(go())
    if as_json:
        for finding in report.findings:
            emit(finding.as_dict())
        emit(report.summary())
    else:
        if report.findings:
            print_table(["kind", "problem", "uri", "event_id", "detail", "repair"],
                        [(f.kind, f.problem, f.uri, f.event_id, f.detail, f.repair)
                         for f in report.findings],
                        wrap=("detail", "repair"))
        summary = report.summary()
        click.echo(f"checked {summary['checked']} ({summary['checked_outputs']} outputs, "
                   f"{summary['checked_sources']} sources) in {settings.data_location}: "
                   f"{summary['bad']} bad, {summary['repaired']} repaired")
    if report.bad - report.repaired:
        raise SystemExit(EXIT_ERROR)
