"""``pixelpipe demo``: the whole pipeline on the embedded default, start to finish.

Starts the ``infra/`` broker unless one answers, a worker subprocess, publishes generated
samples (some broken on purpose), a few hostile events (malformed JSON, an unknown schema, a
path outside the store, a missing source), waits for every outcome, prints a table, and checks
each outcome against what it should be. Exit 0 only when every outcome is as expected.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from pixelpipe.config import (
    ENV_DEMO_PHOTOS,
    ENV_INFRA_DIR,
    ENV_RETRY_TIERS,
    Settings,
    parse_tiers,
    path_from_env,
)
from pixelpipe.demo.samples import Sample, make_samples
from pixelpipe.errors import BrokerUnavailable, OperationalError, OutcomeTimeout
from pixelpipe.schemas import malformed_event_id, to_dict, utc_now_iso
from pixelpipe.streams.admin import declare_pipeline_topics
from pixelpipe.streams.client import FinalOutcome, Publisher
from pixelpipe.streams.topics import uploads_topic


class DemoFailed(OperationalError):
    """The demo could not finish (its worker died): one line says why."""

    code = "demo_failed"


#: the checkout this module runs from, if it runs from one (not from an installed wheel)
CHECKOUT = Path(__file__).resolve().parents[2]
DEMO_TIERS = "1s,2s"
DEMO_RENDITIONS: list[dict[str, Any]] = [
    {"name": "thumbnail", "preset": "thumbnail"},
    {"name": "web", "operations": ["resize:width=800,height=800,fit=inside",
                                   "format:type=webp,quality=80"]},
]


def _say(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


async def _broker_answers(settings: Settings) -> bool:
    try:
        await declare_pipeline_topics(settings, timeout_s=5)
    except BrokerUnavailable:
        return False
    return True


def _is_checkout(root: Path) -> bool:
    return (root / "pyproject.toml").is_file() and (root / "pixelpipe").is_dir()


def find_kafka_sh(checkout: Path | None = None) -> Path | None:
    """``infra/kafka.sh``: from ``PIXELPIPE_INFRA_DIR``, else from the checkout we run in.
    None when pixelpipe runs from an installed package with neither."""
    checkout = CHECKOUT if checkout is None else checkout
    candidates = [path_from_env(ENV_INFRA_DIR)]
    if _is_checkout(checkout):
        candidates.append(checkout / "infra")
    for folder in candidates:
        if folder is not None and (folder / "kafka.sh").is_file():
            return folder / "kafka.sh"
    return None


def find_photos(given: Path | None, checkout: Path | None = None) -> Path | None:
    """Real photographs to add to the samples: ``--photos``, ``PIXELPIPE_DEMO_PHOTOS``, or
    ``../shared/data/photos`` beside a checkout; None (generated samples only) otherwise."""
    checkout = CHECKOUT if checkout is None else checkout
    candidates = [given, path_from_env(ENV_DEMO_PHOTOS)]
    if _is_checkout(checkout):
        candidates.append(checkout.parent / "shared" / "data" / "photos")
    return next((c for c in candidates if c is not None and c.is_dir()), None)


def _start_local_broker(settings: Settings) -> Path:
    kafka_sh = find_kafka_sh()
    if kafka_sh is None:
        raise BrokerUnavailable(
            f"no broker answers at {settings.bootstrap_servers}, and there is no infra/kafka.sh "
            f"to start one: start a broker and point PIXELPIPE_KAFKA at it, or set "
            f"{ENV_INFRA_DIR} to the infra/ folder of a pixelpipe checkout"
        )
    host, _, port = settings.bootstrap_servers.split(",")[0].rpartition(":")
    if host not in ("127.0.0.1", "localhost"):
        raise BrokerUnavailable(f"no broker answers at {settings.bootstrap_servers}")
    _say(f"no broker at {settings.bootstrap_servers}: starting infra/kafka.sh up (port {port})")
    env = dict(os.environ, KAFKA_PORT=port)
    # its stdout is the bootstrap address (for scripts); the demo says it in its own words
    result = subprocess.run([str(kafka_sh), "up"], env=env, check=False,
                            stdout=subprocess.DEVNULL)
    if result.returncode != 0:
        raise BrokerUnavailable(f"{kafka_sh} up failed; see {kafka_sh} logs")
    return kafka_sh


def _start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PIXELPIPE_KAFKA=settings.broker, PIXELPIPE_DATA=str(settings.data_dir),
               PIXELPIPE_APP_ID=settings.app_id, PIXELPIPE_TOPIC_PREFIX=settings.topic_prefix,
               PIXELPIPE_WEB_PORT=str(settings.web_port),
               PIXELPIPE_RETRY_TIERS=",".join(name for name, _ in settings.retry_tiers))
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pixelpipe", "worker", "--loglevel", "info"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )


def _stop(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _hostile_events(store_root: Path) -> list[tuple[str, bytes, str]]:
    """(label, raw message value, expected code) for events no image file can make."""
    fake_sha = "0" * 64
    base = {
        "schema": "pixelpipe.upload/1", "image_id": "hostile", "submitted_at": utc_now_iso(),
        "renditions": [{"name": "thumbnail", "preset": "thumbnail"}],
        "source": {"uri": f"blob://sources/00/{fake_sha}", "sha256": fake_sha, "size": 10},
    }
    outside = dict(base, event_id=str(uuid.uuid4()),
                   source=dict(base["source"], uri="file:///etc/passwd"))  # type: ignore[arg-type]
    missing = dict(base, event_id=str(uuid.uuid4()))
    unknown = dict(base, event_id=str(uuid.uuid4()), schema="pixelpipe.upload/99")
    bad_preset = dict(base, event_id=str(uuid.uuid4()),
                      renditions=[{"name": "x", "preset": "no-such-preset"}])
    return [
        ("not JSON at all", b"\x00\xffthis is { not json", "malformed_event"),
        ("unknown schema pixelpipe.upload/99", orjson.dumps(unknown), "malformed_event"),
        ("source file:///etc/passwd", orjson.dumps(outside), "forbidden_source"),
        # retryable: walks every retry tier, then is dead-lettered as exhausted
        ("source blob that does not exist", orjson.dumps(missing), "retries_exhausted"),
        ("unknown preset", orjson.dumps(bad_preset), "invalid_operation"),
    ]


def isolated(settings: Settings) -> Settings:
    """The demo's own namespace on the broker: topics ``<prefix>-demo-<run>.*``, its own app id
    (consumer groups, faust state) and a free web port. A worker already running on the same
    broker (default settings, production tiers, port 6066) never sees the demo's uploads, and
    the demo's dead letters never land on that deployment's dead-letter topic."""
    run = uuid.uuid4().hex[:8]
    with socket.socket() as probe:
        probe.bind((settings.web_host, 0))
        port = int(probe.getsockname()[1])
    return settings.with_(topic_prefix=f"{settings.topic_prefix}-demo-{run}",
                          app_id=f"{settings.app_id}-demo-{run}", web_port=port)


async def _outcome(publisher: Publisher, event_id: str, worker: subprocess.Popen[bytes],
                   log_path: Path, timeout: float = 300) -> FinalOutcome:
    """Wait for ``event_id``'s outcome, but stop at once, saying why, if the worker died."""
    deadline = time.monotonic() + timeout
    while True:
        if worker.poll() is not None:
            text = await asyncio.to_thread(log_path.read_text, errors="replace")
            lines = text.strip().splitlines()
            raise DemoFailed(f"the demo's worker exited with code {worker.returncode}: "
                             f"{lines[-1] if lines else '(no output)'} (log: {log_path})")
        try:
            return await publisher.wait_for(event_id, timeout=1.0)
        except OutcomeTimeout:
            if time.monotonic() > deadline:
                raise OutcomeTimeout(f"no outcome for {event_id} within {timeout:.0f} s; "
                                     f"see {log_path}") from None


async def _run(settings: Settings, samples: list[Sample], worker: subprocess.Popen[bytes],
               log_path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with Publisher(settings) as publisher:
        await publisher.watch_outcomes()
        pending: list[tuple[str, str, str, str]] = []  # label, what, expected, event_id
        for sample in samples:
            upload = await publisher.publish_file(sample.path, DEMO_RENDITIONS)
            pending.append((sample.path.name, sample.what, sample.expect, upload.event_id))
        for label, raw, expect in _hostile_events(settings.data_dir):
            try:
                event_id = orjson.loads(raw).get("event_id")
            except orjson.JSONDecodeError:
                event_id = None
            partition, offset = await publisher.send_raw(
                uploads_topic(settings.topic_prefix), b"hostile", raw
            )
            if event_id is None:
                event_id = malformed_event_id(uploads_topic(settings.topic_prefix), partition,
                                              offset)
            pending.append((label, "hostile event", expect, event_id))
        _say(f"published {len(pending)} events; waiting for their outcomes")
        for label, what, expect, event_id in pending:
            outcome = await _outcome(publisher, event_id, worker, log_path)
            body = to_dict(outcome.event)
            got = "processed" if outcome.status == "processed" else body["error"]["code"]
            rows.append({"input": label, "what": what, "expected": expect, "got": got,
                         "ok": got == expect, "event_id": event_id, "outcome": body})
    return rows


class TablePrinter(Protocol):
    """How a table is printed: ``pixelpipe.cli.common.print_table``, given by the CLI (the demo
    is a layer below the CLI and does not import it)."""

    def __call__(
        self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None,
        wrap: Collection[str] = (), right: Collection[str] = (),
        styles: Sequence[str | None] | None = None,
    ) -> None: ...


TABLE_TITLE = "pixelpipe demo: every upload ends processed or dead-lettered"
#: the results table; ``details`` (free text) last, so the plain layout stays aligned
RESULT_COLUMNS = ("input", "what", "result", "as expected", "details")


def results_table(rows: list[dict[str, Any]]) -> tuple[list[list[str]], list[str | None]]:
    """The cells of the results table (``RESULT_COLUMNS``), one row per outcome, and each
    row's style on a terminal (red: not as expected)."""
    cells: list[list[str]] = []
    styles: list[str | None] = []
    for row in rows:
        body = row["outcome"]
        if row["got"] == "processed":
            details = ", ".join(
                f"{r['name']}: {r['width']}x{r['height']} {r['format']} {r['size'] // 1024} KiB"
                for r in body["renditions"]
            )
            result = "processed"
        else:
            tiers = " -> ".join(a["tier"] for a in body["attempts"])
            details = f"{body['error']['message']} (attempts: {tiers or 'none'})"
            result = f"dead letter: {row['got']}"
        cells.append([row["input"], row["what"], result,
                      "yes" if row["ok"] else f"NO (expected {row['expected']})", details])
        styles.append(None if row["ok"] else "bold red")
    return cells, styles


def run_demo(
    settings: Settings, *, keep_running: bool = False, photos: Path | None = None,
    table: TablePrinter | None = None,
) -> int:
    """Run the demo; return the process exit code. ``table`` prints the results table (the
    CLI gives its own); without it only the summary line is printed (every row is in
    ``results.jsonl`` anyway)."""
    if ENV_RETRY_TIERS not in os.environ:
        # The production tiers (5s..10m) would keep the demo waiting for 13 minutes on its
        # one retryable failure; the same path with short delays shows it in seconds.
        settings = settings.with_(retry_tiers=parse_tiers(DEMO_TIERS))
        _say(f"retry tiers for the demo: {DEMO_TIERS} (set {ENV_RETRY_TIERS} to change)")
    workdir = Path(".pixelpipe/demo")
    (workdir / "results.jsonl").unlink(missing_ok=True)  # never leave a stale one behind
    settings = isolated(settings)
    _say(f"topics {settings.topic_prefix}.*, app id {settings.app_id}, worker web port "
         f"{settings.web_port}: isolated from any other worker on this broker")
    started_broker: Path | None = None
    if not asyncio.run(_broker_answers(settings)):
        started_broker = _start_local_broker(settings)
        if not asyncio.run(_broker_answers(settings)):
            raise BrokerUnavailable(f"the broker at {settings.bootstrap_servers} does not answer")
    samples = make_samples(workdir / "samples", find_photos(photos))
    _say(f"{len(samples)} sample files in {workdir / 'samples'}; starting a worker "
         f"(log: {workdir / 'worker.log'})")
    worker = _start_worker(settings, workdir / "worker.log")
    began = time.monotonic()
    try:
        rows = asyncio.run(_run(settings, samples, worker, workdir / "worker.log"))
    finally:
        _stop(worker)
        if started_broker is not None and not keep_running:
            _say("stopping the broker this demo started (infra/kafka.sh down)")
            subprocess.run([str(started_broker), "down"], check=False,
                           env=dict(os.environ, KAFKA_PORT=settings.bootstrap_servers.rpartition(":")[2]))
    elapsed = time.monotonic() - began
    if table is not None:
        cells, styles = results_table(rows)
        table(RESULT_COLUMNS, cells, title=TABLE_TITLE, wrap={"details"}, styles=styles)
    with (workdir / "results.jsonl").open("wb") as out:
        for row in rows:
            out.write(orjson.dumps(row) + b"\n")
    processed = sum(r["got"] == "processed" for r in rows)
    unexpected = [r for r in rows if not r["ok"]]
    print(f"{processed} processed, {len(rows) - processed} dead-lettered, "
          f"{len(unexpected)} unexpected, in {elapsed:.1f} s; outputs under {settings.data_dir}/outputs, "
          f"results in {workdir / 'results.jsonl'}, topics {settings.topic_prefix}.*")
    return 1 if unexpected else 0
