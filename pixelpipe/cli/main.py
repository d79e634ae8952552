"""The ``pixelpipe`` command line: a thin shell over the client API and the worker.

Machine output is JSON lines on stdout; progress goes to stderr (rich); tables go to stdout,
rich on a terminal and plain aligned columns otherwise (``common.print_table``). Every user
error (unreachable broker, bad path, bad spec) is one line on stderr and exit code 1, never a
traceback (``--debug`` or ``PIXELPIPE_DEBUG=1`` shows it). Exit codes: 0 ok, 1 error, 2 usage
(click), 3 ``publish --wait`` saw a dead letter.

Why not faust's own CLI (``@app.command``): it finalizes and autodiscovers the app for every
command, adds faust's generic commands, and has no place for one-line user errors; here the
worker command runs a real ``faust.Worker`` over the same app, and the other commands need no
app at all.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from pixelpipe.cli.common import (
    ENV_DEBUG,
    EXIT_DEAD_LETTER,
    CliError,
    broker_option,
    emit,
    print_table,
    run,
    set_debug,
    settings_from,
    user_errors,
)
from pixelpipe.config import ENV_WEB_PORT, Settings
from pixelpipe.streams.topics import processed_topic

EXIT_CODES_EPILOG = f"""\b
Exit codes:
  0  ok
  1  error (one line on stderr: unreachable broker, bad path, bad spec, ...)
  2  usage error (unknown option, missing argument)
  3  publish --wait: at least one event ended as a dead letter

\b
Errors never print a traceback; --debug or {ENV_DEBUG}=1 shows it."""


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_EPILOG)
@click.version_option(package_name="pixelpipe")
@click.option("--debug", is_flag=True,
              help=f"Show the traceback of an error (also: {ENV_DEBUG}=1).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """pixelpipe: a fault-tolerant image-processing pipeline on Apache Kafka.

    Publish uploads, run workers, consume processed images, inspect and replay dead letters,
    see and override circuit breakers and the degradation level; 'ops' and 'presets' list what
    a rendition can be made of. Configuration comes from PIXELPIPE_* environment variables
    (see the README); --broker overrides PIXELPIPE_KAFKA.
    """
    set_debug(debug)
    if ctx.invoked_subcommand != "worker":
        # aiokafka logs each failed connection attempt; a command says it once, in one line
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# --------------------------------------------------------------------------- version


@main.command()
@click.option("--verbose", "-v", is_flag=True,
              help="Also the codec libraries OpenCV bundles and the Python libraries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def version(verbose: bool, as_json: bool) -> None:
    """pixelpipe's version; with --verbose, the versions of the codecs that decode untrusted
    images (libjpeg-turbo, libpng, libwebp, libavif, ...: bundled in the OpenCV wheel, in no
    lock file) and of the libraries it runs on."""
    import platform

    from pixelpipe import __version__
    from pixelpipe.imaging.codecs import codec_versions, library_versions

    body: dict[str, Any] = {"pixelpipe": __version__, "python": platform.python_version()}
    if verbose:
        body["codecs"] = codec_versions()
        body["libraries"] = library_versions()
    if as_json:
        emit(body)
        return
    click.echo(f"pixelpipe {body['pixelpipe']} (Python {body['python']})")
    for section in ("codecs", "libraries"):
        for name, value in body.get(section, {}).items():
            click.echo(f"  {name + ':':26} {value}")


# --------------------------------------------------------------------------- worker


@main.command()
@broker_option
@click.option("--workers", type=int, default=None, help="Image processes (default: cores).")
@click.option("--web-port", type=click.IntRange(0, 65535), default=None,
              help=f"Web server port (default 6066, env {ENV_WEB_PORT}); one per worker on a "
                   "host.")
@click.option("--loglevel", "-l", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@user_errors
def worker(broker: str | None, workers: int | None, web_port: int | None, loglevel: str) -> None:
    """Run a worker: the Faust agents, the web server and the image process pool.

    Runs until SIGTERM or Ctrl-C. Several workers with the same PIXELPIPE_APP_ID share the
    uploads between them (one consumer group); on one host each needs its own --web-port.
    """
    from pixelpipe.agents.worker import run_worker

    settings = settings_from(broker, workers=workers, web_port=web_port)
    check_web_port(settings.web_host, settings.web_port)
    run_worker(settings, loglevel=loglevel)


def check_web_port(host: str, port: int) -> None:
    """Fail in one line, before faust starts, when the web server could not listen.

    Binds as aiohttp will (SO_REUSEADDR, so a port left in TIME_WAIT by a stopped worker
    passes) and closes at once; faust would otherwise die with a long OSError traceback."""
    if port == 0:
        return  # any free port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CliError(f"web host {host!r}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CliError(
                    f"web port {port} on {host} is already in use (another worker?); choose "
                    f"another with --web-port or {ENV_WEB_PORT}"
                ) from None
            raise CliError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another "
                f"--web-port or {ENV_WEB_PORT}"
            ) from None


# --------------------------------------------------------------------------- publish


def expand_paths(paths: Sequence[str]) -> Iterator[Path]:
    """Files as given, directories recursed (images only, sorted), in the order of ``paths``."""
    from pixelpipe.imaging.formats import IMAGE_SUFFIXES

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.exists():
            yield path
        else:
            raise click.BadParameter(f"no such file or directory: {raw}", param_hint="PATH")


def renditions_from(presets: Sequence[str], ops: Sequence[str], name: str) -> list[dict[str, Any]]:
    from pixelpipe.imaging import parse_operations, resolve_rendition

    renditions: list[dict[str, Any]] = []
    for preset in presets:
        resolve_rendition(preset, None)  # unknown preset: a one-line error before publishing
        renditions.append({"name": preset, "preset": preset})
    if ops:
        parse_operations(list(ops))  # bad spec: a one-line error before publishing
        renditions.append({"name": name, "operations": list(ops)})
    return renditions or [{"name": "web-large", "preset": "web-large"}]


@main.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option("--preset", "presets", multiple=True, metavar="P",
              help="A named preset ('pixelpipe presets' lists them); one rendition each "
                   "(repeatable). Default: web-large.")
@click.option("--op", "ops", multiple=True, metavar="SPEC",
              help="An operation, e.g. resize:width=800,height=600,fit=inside or "
                   "format:type=webp,quality=80 ('pixelpipe ops' lists them and their "
                   "parameters); together they make one rendition (repeatable).")
@click.option("--name", default="custom", show_default=True,
              help="Name of the rendition made of the --op operations.")
@click.option("--priority", type=click.Choice(["low", "normal", "high"]), default="normal",
              show_default=True)
@click.option("--wait", is_flag=True, help="Wait for each event's outcome and print it.")
@click.option("--timeout", type=float, default=300.0, show_default=True,
              help="With --wait: seconds to wait for all outcomes.")
@broker_option
@user_errors
def publish(
    paths: Sequence[str], presets: Sequence[str], ops: Sequence[str], name: str, priority: str,
    wait: bool, timeout: float, broker: str | None,
) -> None:
    """Store images in the blob store and publish one upload event each.

    Prints one JSON line per event, in the order of the paths, with event_id and path; with
    --wait the line also holds status (processed or dead_letter) and outcome, and each dead
    letter is also told on stderr in one line (event id, code, processor, message).
    Directories are searched recursively for images; when no image is found at all, one line
    on stderr says so and the exit code is 1. Exits 3 when --wait saw a dead letter.
    """
    from pixelpipe.streams.client import Publisher

    files = list(expand_paths(paths))
    if not files:
        from pixelpipe.imaging.formats import IMAGE_SUFFIXES

        raise CliError(f"no images found under {', '.join(paths)} (looked for "
                       f"{', '.join(sorted(IMAGE_SUFFIXES))} files); nothing published")
    renditions = renditions_from(presets, ops, name)
    settings = settings_from(broker)
    dead = run(_publish(Publisher(settings), files, renditions, priority, wait, timeout))
    if dead:
        raise SystemExit(EXIT_DEAD_LETTER)


async def _publish(
    publisher: Any, files: list[Path], renditions: list[dict[str, Any]], priority: str,
    wait: bool, timeout: float,
) -> int:
    from rich.progress import Progress

    async with publisher:
        if wait:
            await publisher.watch_outcomes()
        published = []
        with Progress(transient=True, disable=not sys.stderr.isatty() or len(files) < 5) as bar:
            task = bar.add_task("publishing", total=len(files))
            for path in files:
                upload = await publisher.publish_file(path, renditions, priority=priority)
                published.append((path, upload))
                bar.advance(task)
                if not wait:
                    emit(_publish_line(path, upload))
        if not wait:
            return 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        dead = 0
        for path, upload in published:
            outcome = await publisher.wait_for(upload.event_id, max(0.0, deadline - loop.time()))
            from pixelpipe.schemas import to_dict

            line = _publish_line(path, upload)
            line["status"] = outcome.status
            line["outcome"] = to_dict(outcome.event)
            emit(line)
            if outcome.status == "dead_letter":
                dead += 1
                click.echo(_dead_letter_line(path, outcome.event), err=True)
        return dead


def _dead_letter_line(path: Path, letter: Any) -> str:
    error = letter.error
    where = f" in {error.processor}" if error.processor else ""
    message = " ".join(str(error.message).split())
    return f"pixelpipe: dead letter: {letter.event_id} ({path}): {error.code}{where}: {message}"


def _publish_line(path: Path, upload: Any) -> dict[str, Any]:
    return {
        "event_id": upload.event_id,
        "path": str(path),
        "image_id": upload.event.image_id,
        "partition": upload.partition,
        "offset": upload.offset,
    }


# --------------------------------------------------------------------------- consume


@main.command()
@click.option("--from-beginning", is_flag=True,
              help="Start at the earliest processed event and stop at the current end "
                   "(unless --follow).")
@click.option("--follow", "-f", is_flag=True,
              help="Keep waiting for new events (implied without --from-beginning and "
                   "--group).")
@click.option("--limit", "-n", type=int, default=None, help="Stop after N events.")
@click.option("--group", "-g", default=None,
              help="Consumer group: commit progress and resume from it next time.")
@broker_option
@user_errors
def consume(
    from_beginning: bool, follow: bool, limit: int | None, group: str | None, broker: str | None
) -> None:
    """Print processed-image events as JSON lines (each event once; a backfill upgrade is new).

    \b
    Where it starts and stops:
      (no flags)        waits for new events, until Ctrl-C or --limit
      --from-beginning  every event so far, then stops at the end of the topic
      --group G         from G's committed offset (new events on its first run), then stops
      --follow          with either: keeps waiting at the end instead of stopping

    What it reads, from where, is said in one line on stderr; so is the count when it stops.
    """
    settings = settings_from(broker)
    if not from_beginning and group is None:
        follow = True  # starting at the end: without waiting there is nothing to read
    plan = _consume_plan(processed_topic(settings.topic_prefix), from_beginning, follow, limit,
                         group)
    count = run(_consume(settings, from_beginning, follow, limit, group, plan))
    click.echo(f"pixelpipe: {count} processed event(s)", err=True)


def _consume_plan(
    topic: str, from_beginning: bool, follow: bool, limit: int | None, group: str | None
) -> str:
    most = f", at most {limit}" if limit is not None else ""
    if not from_beginning and group is None:
        return (f"pixelpipe: waiting for new processed events on {topic}{most} (Ctrl-C to "
                "stop; --from-beginning prints the earlier ones)")
    start = "from the beginning" if from_beginning else f"from group {group}'s committed offset"
    stop = ("then waiting for new ones (Ctrl-C to stop)" if follow
            else "up to its current end (--follow keeps waiting)")
    return f"pixelpipe: reading processed events of {topic} {start}{most}, {stop}"


async def _consume(
    settings: Settings, from_beginning: bool, follow: bool, limit: int | None, group: str | None,
    plan: str,
) -> int:
    from pixelpipe.schemas import to_dict
    from pixelpipe.streams.client import ProcessedConsumer

    count = 0
    async with ProcessedConsumer(
        settings, group=group, from_beginning=from_beginning, follow=follow, limit=limit
    ) as consumer:
        click.echo(plan, err=True)  # once connected: an unreachable broker is one line alone
        async for event in consumer:
            emit(to_dict(event))
            count += 1
    return count


# --------------------------------------------------------------------------- demo


@main.command()
@click.option("--keep-running", is_flag=True, help="Leave the broker running afterwards.")
@click.option("--photos", type=click.Path(path_type=Path), default=None,
              help="A folder of extra photos to include (default: ../shared/data/photos "
                   "beside the repository, when present).")
@broker_option
@user_errors
def demo(keep_running: bool, photos: Path | None, broker: str | None) -> None:
    """The main job on the embedded default: local broker, a worker, sample images, results.

    Starts the infra/ Kafka broker unless one answers at --broker, starts a worker, publishes
    generated sample images (some deliberately broken) and real photos, waits for every
    outcome and prints what was processed and what was dead-lettered, and why.
    """
    from pixelpipe.demo import run_demo

    code = run_demo(settings_from(broker), keep_running=keep_running, photos=photos,
                    table=print_table)
    raise SystemExit(code)


def _register_subcommands() -> None:
    from pixelpipe.cli.backfill import backfill
    from pixelpipe.cli.breaker import breaker
    from pixelpipe.cli.catalog import ops, presets
    from pixelpipe.cli.check import check
    from pixelpipe.cli.degrade import degrade
    from pixelpipe.cli.dlq import dlq
    from pixelpipe.cli.monitor import alerts, status
    from pixelpipe.cli.store import store

    main.add_command(breaker)
    main.add_command(degrade)
    main.add_command(dlq)
    main.add_command(ops)
    main.add_command(presets)
    main.add_command(status)
    main.add_command(alerts)
    main.add_command(backfill)
    main.add_command(check)
    main.add_command(store)


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    main()
