"""Test harness for the real pipeline: isolated settings, worker subprocesses, CLI runs.

Every test gets its own topic prefix, consumer group and blob store, so tests never see each
other's events even on one broker. Workers are real ``pixelpipe worker`` subprocesses (the most
isolated way to run faust; also the only way to kill -9 one).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PipelineEnv:
    """The environment of one test's pipeline: broker, prefix, group, store, state."""

    bootstrap: str
    root: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    workers: int = 2
    #: the broker connection's own variables, over the defaults (e.g. ``PIXELPIPE_KAFKA=
    #: kafka+ssl://...`` and the CA/user/password of a SASL_SSL listener)
    kafka_env: dict[str, str] = field(default_factory=dict)

    @property
    def app_id(self) -> str:
        return f"{self.prefix}-app"

    @property
    def data_dir(self) -> Path:
        return self.root / "blobs"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PIXELPIPE_KAFKA=f"kafka://{self.bootstrap}",
            PIXELPIPE_DATA=str(self.data_dir),
            PIXELPIPE_TOPIC_PREFIX=self.prefix,
            PIXELPIPE_APP_ID=self.app_id,
            PIXELPIPE_WORKERS=str(self.workers),
            PIXELPIPE_UPLOAD_PARTITIONS="6",
            # short tiers keep retried failures quick; tests of the tiers set their own
            PIXELPIPE_RETRY_TIERS="1s,2s",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.kafka_env)
        env.update(extra)
        return env

    def settings(self, **overrides: Any) -> Any:
        from pixelpipe.config import Settings

        return Settings.from_env(self.env(), **overrides)

    def cli(
        self, *args: str, timeout: float = 300, input_: bytes | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``pixelpipe ARGS`` as a user would; stdout/stderr captured."""
        result = subprocess.run(
            [sys.executable, "-m", "pixelpipe", *args], env=self.env(), capture_output=True,
            timeout=timeout, input=input_, check=False,
        )
        if check and result.returncode not in (0, 3):  # 3: publish --wait saw a dead letter
            raise AssertionError(
                f"pixelpipe {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stderr.decode(errors='replace')[-3000:]}"
            )
        return result

    def start_worker(self, name: str = "w1", **extra_env: str) -> WorkerProcess:
        port = free_port()
        state = self.root / f"state-{name}"
        log_path = self.root / f"worker-{name}.log"
        env = self.env(PIXELPIPE_WEB_PORT=str(port), PIXELPIPE_DATADIR=str(state), **extra_env)
        log = log_path.open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "pixelpipe", "worker", "--loglevel", "info"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
        )
        log.close()
        worker = WorkerProcess(process=process, web_port=port, log_path=log_path)
        worker.wait_ready()
        return worker


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    web_port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, dict[str, Any]]:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, orjson.loads(response.read())

    def get_text(self, path: str, timeout: float = 5.0) -> str:
        url = f"http://127.0.0.1:{self.web_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until faust says the worker is ready and it has partitions assigned."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited {self.process.returncode}:\n{self.log()[-4000:]}")
            log = self.log()
            # ready: faust is up, the uploads feed and the retry scheduler joined their groups
            if ("Worker ready" in log and "retry scheduler assigned" in log
                    and "uploads feed assigned" in log):
                try:
                    status, body = self.get("/ready", timeout=2)
                except OSError:
                    status, body = 0, {}
                if status == 200 and body.get("assigned_partitions", 0) > 0:
                    return
            time.sleep(0.3)
        raise AssertionError(f"worker not ready within {timeout} s:\n{self.log()[-4000:]}")

    def children(self) -> list[Any]:
        import psutil

        try:
            return list(psutil.Process(self.process.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    def kill9(self) -> None:
        """SIGKILL the worker, as the OOM killer or a power cut would; then reap its pool."""
        children = self.children()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._reap(children)

    def stop(self, timeout: float = 60) -> int:
        children = self.children()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reap(children)
        return int(self.process.returncode)

    @staticmethod
    def _reap(children: list[Any]) -> None:
        # Pool processes of a killed parent exit on their own when their pipe closes; make
        # sure none outlives a test either way.
        import psutil

        _gone, alive = psutil.wait_procs(children, timeout=10)
        for proc in alive:
            proc.kill()


def json_lines(output: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in output.splitlines() if line.strip()]


def consume_all(
    bootstrap: str,
    topics: Sequence[str],
    *,
    expect: int | None = None,
    done: Callable[[list[Any]], bool] | None = None,
    timeout: float = 120.0,
    **client: Any,
) -> list[Any]:
    """Read every record of ``topics`` from the beginning until ``done(records)`` (or
    ``expect`` records) or the timeout, then one more second for stragglers (duplicates)."""
    if done is None:
        def done(records: list[Any]) -> bool:
            return len(records) >= (expect or 0)

    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False, **client,
        )
        await consumer.start()
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            while not done(records) and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                for items in batch.values():
                    records.extend(items)
            # one more short read: anything past `expect` is a duplicate we want to see
            batch = await consumer.getmany(timeout_ms=1000)
            for items in batch.values():
                records.extend(items)
        finally:
            await consumer.stop()
        return records

    return asyncio.run(read())


# --------------------------------------------------------------------------- waiting on conditions


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned), or fail after
    ``timeout`` seconds naming ``what``: synchronisation on a condition, not on a sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def read_to_end(bootstrap: str, topics: Sequence[str], timeout: float = 30.0,
                **client: Any) -> list[Any]:
    """Every record of ``topics`` from the beginning up to their end as of this call (a missing
    topic has none). Deterministic where ``consume_all`` waits a fixed time: use it to check
    what is, or is not, on a topic once the thing that would have written it is done.
    ``client``: more consumer options (``sasl_client_options`` for a SASL_SSL listener)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    **client)
        await consumer.start()
        try:
            existing = [topic for topic in topics if topic in await consumer.topics()]
            if not existing:
                return []
            consumer.subscribe(existing)  # no group: every partition of each, from the start
            deadline = time.monotonic() + timeout
            while {tp.topic for tp in consumer.assignment()} != set(existing):
                if time.monotonic() > deadline:
                    raise AssertionError(f"no assignment of {existing} in {timeout} s")
                await consumer.getmany(timeout_ms=100)  # nothing is fetched before it
            parts = sorted(consumer.assignment())
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            records: list[Any] = []

            async def behind() -> bool:
                return any([await consumer.position(tp) < ends[tp] for tp in parts])

            while await behind():
                if time.monotonic() > deadline:
                    raise AssertionError(f"could not read {existing} to the end in {timeout} s")
                for tp, items in (await consumer.getmany(timeout_ms=200)).items():
                    records.extend(r for r in items if r.offset < ends[tp])
            return records
        finally:
            await consumer.stop()

    return asyncio.run(read())


def wait_for_records(
    bootstrap: str, topics: Sequence[str], until: Callable[[list[Any]], Any], *,
    timeout: float = 60.0, what: str = "records", **client: Any,
) -> list[Any]:
    """Read ``topics`` from the beginning until ``until(records)`` is truthy and return the
    records read so far; fail after ``timeout`` seconds naming ``what``. Unlike
    ``consume_all`` it returns as soon as the condition holds and never passes on a timeout."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def read() -> list[Any]:
        consumer = AIOKafkaConsumer(
            *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
            enable_auto_commit=False, fetch_max_wait_ms=100, **client,
        )
        await consumer.start()
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            while not until(records):
                if time.monotonic() >= deadline:
                    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; "
                                         f"{len(records)} record(s) read")
                for items in (await consumer.getmany(timeout_ms=100)).values():
                    records.extend(items)
        finally:
            await consumer.stop()
        return records

    return asyncio.run(read())


def sasl_client_options(ca_file: str | Path, user: str, password: str,
                        mechanism: str = "SCRAM-SHA-512") -> dict[str, Any]:
    """aiokafka options for a SASL_SSL listener, for the helpers above (an outside reader,
    built without pixelpipe's own client code)."""
    from aiokafka.helpers import create_ssl_context

    return {"security_protocol": "SASL_SSL", "ssl_context": create_ssl_context(cafile=ca_file),
            "sasl_mechanism": mechanism, "sasl_plain_username": user,
            "sasl_plain_password": password}


def event_ids_on(bootstrap: str, topics: Sequence[str]) -> dict[str, list[str]]:
    """topic -> the ``event_id`` of each of its records (to the end as of now), in order."""
    out: dict[str, list[str]] = {topic: [] for topic in topics}
    for record in read_to_end(bootstrap, topics):
        try:
            event_id = orjson.loads(record.value).get("event_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        out[record.topic].append(event_id)
    return out



def describe_topics(bootstrap: str, topics: Sequence[str], attempts: int = 10,
                    pause_s: float = 0.5) -> list[dict[str, Any]]:
    """The admin client's ``describe_topics``, retried: right after a broker is killed the
    client may pick the dead node. Raises ``RuntimeError`` with the last error when every
    attempt fails."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def once() -> list[dict[str, Any]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            return list(await admin.describe_topics(list(topics)))
        finally:
            await admin.close()

    last: Exception | None = None
    for _ in range(attempts):
        try:
            return asyncio.run(once())
        except Exception as exc:  # retried, then raised
            last = exc
            time.sleep(pause_s)
    raise RuntimeError(f"cannot describe {list(topics)}: {last!r}")


def run_infra(script: Path, env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """Run one of ``infra/``'s scripts (``kafka.sh``, ``toxiproxy.sh``, ...) at low CPU
    priority; its stdout, or an ``AssertionError`` with the tail of its stderr."""
    result = subprocess.run(["nice", "-n", "19", str(script), *args], env=env,
                            capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{script.name} {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stderr.decode(errors='replace')[-3000:]}")
    return result.stdout.decode()
