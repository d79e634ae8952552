"""The pipeline over TLS + SASL/SCRAM-SHA-512 on a real broker (issue 14, security).

The test starts its own broker with ``KAFKA_SASL_SSL=1 infra/kafka.sh up`` (free ports, a run
dir of its own, always ``down --purge`` afterwards): a CA and broker certificate made on the
fly, a SCRAM user created when the data is formatted. The worker, ``pixelpipe publish --wait``
and ``pixelpipe status`` get only the SASL_SSL listener (``infra/kafka.sh sasl-env``: the
``kafka+ssl://`` URL, the CA file, the user and the password *file*); the outcomes are read
from outside by a plain aiokafka consumer with its own SASL_SSL options. A wrong password fails
in one line; afterwards the password is looked for everywhere it could leak (the worker's log,
``/status``, the heartbeats, ``pixelpipe status --json``, the CLI's output, the broker's log):
found nowhere.
"""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from harness import (
    REPO,
    PipelineEnv,
    json_lines,
    read_to_end,
    run_infra,
    sasl_client_options,
    wait_until,
)
from images import mixed_images

from pixelpipe.streams.topics import processed_topic, uploads_topic, workers_topic

pytestmark = [pytest.mark.broker, pytest.mark.slow]

KAFKA_SH = REPO / "infra" / "kafka.sh"
RESIZE = "resize:width=200,height=200,fit=inside"
UPLOADS = 4


@dataclass
class SaslBroker:
    run_dir: Path
    plaintext_port: int
    sasl_port: int
    #: what ``infra/kafka.sh sasl-env`` printed: PIXELPIPE_KAFKA, _CA_FILE, _USER, ...
    client_env: dict[str, str]
    password: str = field(repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    def outside(self) -> dict[str, Any]:
        """aiokafka options of an outside reader (not pixelpipe's client code)."""
        return sasl_client_options(self.client_env["PIXELPIPE_KAFKA_CA_FILE"],
                                   self.client_env["PIXELPIPE_KAFKA_USER"], self.password)


def _ports_free(base: int, count: int) -> bool:
    for port in range(base, base + count):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_range(count: int = 3) -> int:
    """A base port with ``count`` free ports from it (client, controller, SASL_SSL)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + count < 65536 and _ports_free(base, count):
            return base
    raise AssertionError("no free port range")


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    base = free_port_range()
    run_dir = tmp_path_factory.mktemp("kafka-sasl")
    env = {**os.environ, "KAFKA_PORT": str(base), "KAFKA_HOME_DIR": str(run_dir),
           "KAFKA_SASL_SSL": "1", "KAFKA_HEAP_OPTS": "-Xms128m -Xmx384m"}
    try:
        assert run_infra(KAFKA_SH, env, "up").strip() == f"127.0.0.1:{base}"
        exports = run_infra(KAFKA_SH, env, "sasl-env")
        client_env = {}
        for line in exports.splitlines():
            word, assignment = shlex.split(line)
            assert word == "export"
            name, _, value = assignment.partition("=")
            client_env[name] = value
        assert client_env["PIXELPIPE_KAFKA"] == f"kafka+ssl://127.0.0.1:{base + 2}"
        assert "PIXELPIPE_KAFKA_PASSWORD" not in client_env  # the password only by file
        password_file = Path(client_env["PIXELPIPE_KAFKA_PASSWORD_FILE"])
        assert password_file.stat().st_mode & 0o077 == 0  # mode 600
        assert (run_dir / "server.properties").stat().st_mode & 0o077 == 0
        password = password_file.read_text().strip()
        assert len(password) >= 32
        yield SaslBroker(run_dir=run_dir, plaintext_port=base, sasl_port=base + 2,
                         client_env=client_env, password=password)
    finally:
        run_infra(KAFKA_SH, env, "down", "--purge", timeout=120)


def test_the_pipeline_runs_over_sasl_ssl_and_the_password_appears_nowhere(
    sasl_broker: SaslBroker, tmp_path: Path,
) -> None:
    password = sasl_broker.password
    pipeline = PipelineEnv(bootstrap=sasl_broker.bootstrap, root=tmp_path, workers=1,
                           kafka_env=sasl_broker.client_env)
    assert pipeline.settings().kafka_security_protocol == "SASL_SSL"
    worker = pipeline.start_worker("sasl", PIXELPIPE_HEARTBEAT="1s")
    leaks: dict[str, bytes] = {}
    try:
        # uploads published with --wait over the same settings, processed by the worker
        mixed_images(tmp_path / "in", UPLOADS)
        published = pipeline.cli("publish", str(tmp_path / "in"), "--op", RESIZE, "--wait",
                                 "--timeout", "240")
        leaks["publish stdout"], leaks["publish stderr"] = published.stdout, published.stderr
        lines = json_lines(published.stdout)
        assert published.returncode == 0, published.stderr
        assert len(lines) == UPLOADS and all(line["status"] == "processed" for line in lines)
        ids = {line["event_id"] for line in lines}
        # read from outside with a SASL_SSL client of its own: every upload, every outcome
        outside = sasl_broker.outside()
        on_topics = read_to_end(sasl_broker.bootstrap, [uploads_topic(pipeline.prefix),
                                                        processed_topic(pipeline.prefix)],
                                **outside)
        by_topic: dict[str, set[str]] = {}
        for record in on_topics:
            by_topic.setdefault(record.topic, set()).add(orjson.loads(record.value)["event_id"])
        assert by_topic[uploads_topic(pipeline.prefix)] == ids
        assert by_topic[processed_topic(pipeline.prefix)] == ids
        # the status page, the heartbeats and `pixelpipe status --json`
        leaks["/status"] = worker.get_text("/status").encode()
        wait_until(lambda: len(read_to_end(sasl_broker.bootstrap,
                                           [workers_topic(pipeline.prefix)], **outside)) >= 2,
                   30, "two heartbeats")
        beats = read_to_end(sasl_broker.bootstrap, [workers_topic(pipeline.prefix)], **outside)
        leaks["heartbeats"] = b"\n".join(record.value or b"" for record in beats)
        status = pipeline.cli("status", "--json")
        assert orjson.loads(status.stdout)["workers"], status.stderr
        leaks["status stdout"], leaks["status stderr"] = status.stdout, status.stderr
    finally:
        worker.stop()
    leaks["worker log"] = worker.log().encode()
    leaks["broker log"] = (sasl_broker.run_dir / "kafka.log").read_bytes()
    assert b"SASL_SSL" in leaks["broker log"]  # the listener the worker went through
    found = [where for where, text in leaks.items() if password.encode() in text]
    assert not found, f"the SASL password appears in: {found}"


def test_a_wrong_password_fails_in_one_line(sasl_broker: SaslBroker, tmp_path: Path) -> None:
    wrong = "wr0ng-pa55word-7c1d"
    kafka_env = {**sasl_broker.client_env, "PIXELPIPE_KAFKA_PASSWORD_FILE": "",
                 "PIXELPIPE_KAFKA_PASSWORD": wrong}
    pipeline = PipelineEnv(bootstrap=sasl_broker.bootstrap, root=tmp_path, workers=1,
                           kafka_env=kafka_env)
    mixed_images(tmp_path / "in", 1)
    for args in (("publish", str(tmp_path / "in"), "--wait", "--timeout", "60"),
                 ("status", "--json")):
        result = pipeline.cli(*args, timeout=120, check=False)
        stderr = result.stderr.decode(errors="replace")
        assert result.returncode == 1, (args, stderr)
        assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
        assert "SASL_SSL" in stderr and "password refused" in stderr, stderr
        output = result.stdout + result.stderr
        assert wrong.encode() not in output and sasl_broker.password.encode() not in output
    # the worker too: exit 1, its last line our one-line error (aiokafka's own log line about
    # the refused authentication may precede it), no traceback, no password
    worker = subprocess.run(
        [sys.executable, "-m", "pixelpipe", "worker"], capture_output=True, timeout=120,
        env=pipeline.env(PIXELPIPE_WEB_PORT="0", PIXELPIPE_DATADIR=str(tmp_path / "state")),
        check=False)
    output = worker.stdout + worker.stderr
    assert worker.returncode == 1, output[-3000:]
    last = output.decode(errors="replace").strip().splitlines()[-1]
    assert last.startswith("pixelpipe: error: cannot connect to Kafka"), last
    assert b"Traceback" not in output
    assert wrong.encode() not in output and sasl_broker.password.encode() not in output
