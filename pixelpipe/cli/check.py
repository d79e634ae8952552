"""``pixelpipe check [--profile production]``: the effective settings a worker would run with,
and whether the production profile accepts them (the same check the worker makes at start-up,
``pixelpipe.streams.profile``).

Effective means as built and as the broker reports them: the producers' ``acks`` and
idempotence (pixelpipe's own clients and faust's), each existing topic's replicas,
``min.insync.replicas`` and in-sync replicas now.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click

from pixelpipe.cli.common import broker_option, emit, print_table, run, settings_from, user_errors
from pixelpipe.config import ENV_PROFILE, PROFILES


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def faust_app_of(settings: Any, state_dir: Path) -> Any:
    """The faust App a worker builds from ``settings`` (``agents/app.py``), with a throwaway
    state directory: never started."""
    from pixelpipe.agents.app import create_app

    return create_app(settings.with_(state_dir=state_dir))


@click.command()
@click.option("--profile", type=click.Choice(PROFILES), default=None,
              help=f"The profile to check against (default: {ENV_PROFILE}, else development).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object: the effective settings, problems and ok.")
@broker_option
@user_errors
def check(profile: str | None, as_json: bool, broker: str | None) -> None:
    """Print the effective settings and check them against a profile.

    Shows the producers' acks and idempotence as the clients are built, and every existing
    topic of this pipeline (ours, faust's, __consumer_offsets) with its replicas and
    min.insync.replicas as the broker reports them. With the production profile (--profile
    production or PIXELPIPE_PROFILE=production) every problem is named in one line on stderr
    and the exit code is 1: the worker would refuse to start.
    """
    from pixelpipe.streams.profile import effective, error_for, problems

    settings = settings_from(broker)
    if profile is not None:
        settings = settings.with_(profile=profile)
    with tempfile.TemporaryDirectory(prefix="pixelpipe-check-") as tmp:
        found = run(effective(settings, faust_app=faust_app_of(settings, Path(tmp))))
    issues = problems(found)
    production = settings.profile == "production"
    if as_json:
        emit({**found.to_dict(), "problems": issues, "ok": not issues})
    else:
        _print(found)
        if not production:
            click.echo(f"profile {settings.profile}: nothing enforced; the production profile "
                       f"would find {len(issues)} problem(s)" + (": " + "; ".join(issues)
                                                                 if issues else ""))
        elif not issues:
            click.echo("production profile: ok")
    if production:
        error = error_for(found)
        if error is not None:
            raise error


def _print(found: Any) -> None:
    click.echo(f"profile:            {found.profile}")
    click.echo(f"kafka:              {found.bootstrap} ({found.brokers} broker(s) in the "
               "metadata)")
    allowed = ", plaintext allowed by the operator" if found.plaintext_allowed else ""
    click.echo(f"connection:         {found.security_protocol}{allowed}")
    click.echo(f"blob store:         {found.blob_store}")
    click.echo(f"replication factor: {found.replication_factor} for the topics pixelpipe "
               f"creates, with min.insync.replicas={found.min_insync_replicas}")
    faust_rf = found.faust_topic_replication
    click.echo(f"faust's own topics: created with "
               f"{'?' if faust_rf is None else faust_rf} replica(s)")
    print_table(
        ["producer", "acks", "idempotent", "sends"],
        [[p.name, p.acks, _yes_no(p.idempotent), p.sends] for p in found.producers],
        wrap=("sends",),
    )
    if found.topics:
        print_table(
            ["topic", "partitions", "replicas", "min ISR", "set by", "in sync", "offline"],
            [[t.name, t.partitions, t.replication_factor,
              "?" if t.min_insync_replicas is None else t.min_insync_replicas,
              t.min_isr_source, t.in_sync, t.offline] for t in found.topics],
            right=("partitions", "replicas", "min ISR", "in sync", "offline"),
        )
    if found.missing_topics:
        click.echo(f"not created yet ({len(found.missing_topics)}, a worker creates them with "
                   f"the replication above): " + ", ".join(found.missing_topics))
