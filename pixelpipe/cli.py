"""The ``pixelpipe`` command line: a thin shell over the client API and the worker.

Machine output is JSON lines on stdout; progress and tables go to stderr (rich). Every user
error (unreachable broker, bad path, bad spec) is one line on stderr and exit code 1, never a
traceback.

Why not faust's own CLI (``@app.command``): it finalizes and autodiscovers the app for every
command, adds faust's generic commands, and has no place for one-line user errors; here the
worker command runs a real ``faust.Worker`` over the same app, and the other commands need no
app at all.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from pixelpipe.cli_common import (
    broker_option,
    emit,
    run,
    settings_from,
    user_errors,
)
from pixelpipe.streams.settings import Settings

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".avif", ".tif", ".tiff", ".gif", ".bmp"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pixelpipe")
@click.pass_context
def main(ctx: click.Context) -> None:
    """pixelpipe: a fault-tolerant image-processing pipeline on Apache Kafka.

    Publish uploads, run workers, consume processed images, inspect and replay dead letters,
    see and override circuit breakers. Configuration comes from PIXELPIPE_* environment
    variables (see the README); --broker overrides PIXELPIPE_KAFKA.
    """
    if ctx.invoked_subcommand != "worker":
        # aiokafka logs each failed connection attempt; a command says it once, in one line
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


# --------------------------------------------------------------------------- worker


@main.command()
@broker_option
@click.option("--workers", type=int, default=None, help="Image processes (default: cores).")
@click.option("--web-port", type=int, default=None, help="Web server port (default 6066).")
@click.option("--loglevel", "-l", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@user_errors
def worker(broker: str | None, workers: int | None, web_port: int | None, loglevel: str) -> None:
    """Run a worker: the Faust agents, the web server and the image process pool.

    Runs until SIGTERM or Ctrl-C. Several workers with the same PIXELPIPE_APP_ID share the
    uploads between them (one consumer group).
    """
    from pixelpipe.agents.worker import run_worker

    run_worker(settings_from(broker, workers=workers, web_port=web_port), loglevel=loglevel)


# --------------------------------------------------------------------------- publish


def expand_paths(paths: Sequence[str]) -> Iterator[Path]:
    """Files as given, directories recursed (images only, sorted), in the order of ``paths``."""
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
              help="A named preset; one rendition each (repeatable). Default: web-large.")
@click.option("--op", "ops", multiple=True, metavar="SPEC",
              help="An operation, e.g. resize:width=800,height=600,fit=inside or "
                   "format:type=webp,quality=80; together they make one rendition (repeatable).")
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
    --wait the line also holds status (processed or dead_letter) and outcome. Directories are
    searched recursively for images. Exits 2 when --wait saw a dead letter.
    """
    from pixelpipe.streams.client import Publisher

    files = list(expand_paths(paths))
    renditions = renditions_from(presets, ops, name)
    settings = settings_from(broker)
    dead = run(_publish(Publisher(settings), files, renditions, priority, wait, timeout))
    if dead:
        raise SystemExit(2)


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
            dead += outcome.status == "dead_letter"
            emit(line)
        return dead


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
@click.option("--from-beginning", is_flag=True, help="Start at the earliest processed event.")
@click.option("--follow", "-f", is_flag=True, help="Keep waiting for new events.")
@click.option("--limit", "-n", type=int, default=None, help="Stop after N events.")
@click.option("--group", "-g", default=None,
              help="Consumer group: commit progress and resume from it next time.")
@broker_option
@user_errors
def consume(
    from_beginning: bool, follow: bool, limit: int | None, group: str | None, broker: str | None
) -> None:
    """Print processed-image events as JSON lines (each event_id once).

    Without --follow, stops at the end of the topic as it was at start-up.
    """
    run(_consume(settings_from(broker), from_beginning, follow, limit, group))


async def _consume(
    settings: Settings, from_beginning: bool, follow: bool, limit: int | None, group: str | None
) -> None:
    from pixelpipe.schemas import to_dict
    from pixelpipe.streams.client import ProcessedConsumer

    async with ProcessedConsumer(
        settings, group=group, from_beginning=from_beginning, follow=follow, limit=limit
    ) as consumer:
        async for event in consumer:
            emit(to_dict(event))


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

    code = run_demo(settings_from(broker), keep_running=keep_running, photos=photos)
    raise SystemExit(code)


def _register_subcommands() -> None:
    from pixelpipe.cli_breaker import breaker
    from pixelpipe.cli_dlq import dlq

    main.add_command(breaker)
    main.add_command(dlq)


_register_subcommands()


if __name__ == "__main__":  # pragma: no cover
    main()
