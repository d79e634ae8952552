"""``pixelpipe status [--json] [--watch]`` and ``pixelpipe alerts [--follow] [--json]``: the
cluster as the topics tell it, without contacting any worker (``streams.cluster_status``)."""

from __future__ import annotations

import asyncio
import contextlib
import io
from typing import Any

import click
import orjson

from pixelpipe.cli.common import broker_option, emit, print_table, settings_from, user_errors

# --------------------------------------------------------------------------- status


def status_text(status: dict[str, Any]) -> str:
    """The status for people: one section per key of ``--json``, plain lines."""
    out = io.StringIO()

    def section(title: str) -> None:
        out.write(f"\n{title}\n")

    override = status["level"]["override"]
    levels = ", ".join(f"{n} {level}" for level, n in sorted(status["level"]["workers"].items()))
    forced = (f"{override['level']} (forced until {override['until'] or 'degrade auto'})"
              if override else "auto")
    out.write(f"pixelpipe at {status['at']}: level {forced}; workers at {levels or '-'}\n")

    workers = status["workers"]
    section(f"workers ({sum(not w['missing'] for w in workers)} up, "
            f"{sum(w['missing'] for w in workers)} missing)")
    print_table(
        ["worker", "state", "seen", "partitions", "level", "health", "in flight", "retry",
         "pool", "refusing"],
        [[w["id"], "MISSING" if w["missing"] else "up", f"{w['age_s']:.0f}s ago",
          _ranges(w.get("partitions", [])), w.get("level"), f"{w.get('health', 0):.2f}",
          w.get("in_flight"), w.get("retry_backlog"),
          f"{w.get('pool', {}).get('size', 0)} ({w.get('pool', {}).get('restarts', 0)} restarts)",
          ", ".join(w.get("refusing", [])) or "-"] for w in workers],
        file=out)

    lag = status["lag"]
    section(f"uploads lag ({lag['group']}): {lag['total_records']} records, oldest "
            f"{lag['max_seconds']:.1f} s")
    print_table(["partition", "committed", "end", "records", "seconds"],
                [[p["partition"], p["committed"], p["end"], p["records"], f"{p['seconds']:.1f}"]
                 for p in lag["partitions"]], right={"committed", "end", "records", "seconds"},
                file=out)

    retry = status["retry"]
    section(f"retry backlog: {retry['total']}  " + "  ".join(
        f"{t['tier']}={t['records']}" for t in retry["tiers"]))
    dlq = status["dlq"]
    section(f"dead letters: {dlq['total']} total, {dlq['last_hour']} in the last hour" + (
        "  (" + ", ".join(f"{c} {n}" for c, n in sorted(dlq["by_code"].items())) + ")"
        if dlq["by_code"] else ""))
    breakers = status["breakers"]
    section(f"breakers not closed: {len(breakers)}")
    for row in breakers:
        out.write(f"  {row['processor']}: {row['state']} since {row.get('since')}"
                  f"{' (' + row['reason'] + ')' if row.get('reason') else ''}\n")
    alerts = status["alerts"]
    section(f"alerts firing: {len(alerts)}")
    for alert in alerts:
        out.write(f"  [{alert['severity']}] {alert['id']} since {alert['since']}: "
                  f"{alert['summary']}\n")
    return out.getvalue()


def _ranges(partitions: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    if not partitions:
        return "-"
    parts, start, last = [], partitions[0], partitions[0]
    for p in [*partitions[1:], None]:
        if p is not None and p == last + 1:
            last = p
            continue
        parts.append(str(start) if start == last else f"{start}-{last}")
        if p is not None:
            start = last = p
    return ",".join(parts)


@click.command()
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: workers, lag, retry, dlq, breakers, level, alerts.")
@click.option("--watch", "-w", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(0.5, 3600), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@broker_option
def status(as_json: bool, watch: bool, interval: float, broker: str | None) -> None:
    """The whole cluster from the topics: workers (from their heartbeats), uploads lag per
    partition, retry backlog, dead letters, breakers, the degradation level, active alerts."""
    from pixelpipe.streams.cluster_status import ClusterReader

    settings = settings_from(broker)

    @user_errors
    def run() -> None:
        async def once(reader: ClusterReader) -> dict[str, Any]:
            return await reader.status()

        async def main() -> None:
            async with ClusterReader(settings) as reader:
                if not watch:
                    body = await once(reader)
                    if as_json:
                        emit(body)
                    else:
                        click.echo(status_text(body).lstrip("\n"), nl=False)
                    return
                await _watch(reader, as_json, interval)

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())

    run()


async def _watch(reader: Any, as_json: bool, interval: float) -> None:
    if as_json:  # one object per refresh, as JSON lines
        while True:
            emit(await reader.status())
            await asyncio.sleep(interval)
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    with Live(Text("reading the cluster ..."), console=console, auto_refresh=False) as live:
        while True:
            text = status_text(await reader.status())
            live.update(Text(text.lstrip("\n")), refresh=True)
            await asyncio.sleep(interval)


# --------------------------------------------------------------------------- alerts


@click.command()
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new alert events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per alert event.")
@click.option("--active", is_flag=True, help="Only the alerts firing now.")
@broker_option
def alerts(follow: bool, as_json: bool, active: bool, broker: str | None) -> None:
    """Alert events (firing / resolved) from the alerts topic, oldest first."""
    from pixelpipe.streams.cluster_status import ClusterReader, active_alerts
    from pixelpipe.streams.topics import alerts_topic

    settings = settings_from(broker)

    def show(alert: dict[str, Any]) -> None:
        if as_json:
            emit(alert)
        else:
            click.echo(f"{alert.get('at')}  {str(alert.get('state')).upper():8}  "
                       f"[{alert.get('severity')}] {alert.get('id')}: {alert.get('summary')}")

    @user_errors
    def run() -> None:
        async def main() -> None:
            async with ClusterReader(settings) as reader:
                topic = alerts_topic(settings.topic_prefix)
                if active:
                    latest = await reader.latest_by_key(topic)
                    for alert in active_alerts(latest.values()):
                        show(alert)
                    return
                partitions = await reader.partitions(topic)
                positions = await reader.beginnings(partitions)
                shown = 0
                while True:
                    records = await reader.read(positions)
                    for record in records:
                        positions[next(tp for tp in partitions
                                       if tp.partition == record.partition)] = record.offset + 1
                        try:
                            body = orjson.loads(record.value)
                        except orjson.JSONDecodeError:
                            continue
                        if isinstance(body, dict):
                            show(body)
                            shown += 1
                    if not follow:
                        if not as_json:
                            click.echo(f"({shown} alert events on {topic})", err=True)
                        return
                    await asyncio.sleep(1.0)

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())

    run()

