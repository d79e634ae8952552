"""Find or start the real Kafka broker the tests run against (standard library + subprocess).

Order (ARCHITECTURE.md section 11):

1. ``KAFKA_BOOTSTRAP_SERVERS`` if set (``host:port[,...]``, a ``kafka://`` prefix is accepted):
   used as is, never started, stopped or restarted by the tests.
2. testcontainers' Kafka module when a Docker engine answers (checked quickly, never hangs).
3. The ``infra/`` broker (``infra/kafka.sh``) on a test-only port and run dir, so it never
   clashes with a developer's broker on 9092: ``PIXELPIPE_TEST_KAFKA_PORT`` (default 19092,
   controller on port + 1), run dir ``infra/.run/kafka-test-<port>``, version ``KAFKA_VERSION``.
   Stopped (and its data wiped) at session end only if this session started it.

``PIXELPIPE_TEST_BROKER=auto|docker|infra`` forces step 2 or 3 (``auto`` is the default).
With ``CI`` set, a broker that cannot be reached or started raises :class:`BrokerUnavailable`;
without it, :func:`session_broker` calls ``pytest.skip`` with the reason.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
KAFKA_SH = INFRA / "kafka.sh"
KAFKA_READY = INFRA / "kafka_ready.py"
DEFAULT_TEST_PORT = 19092
# Confluent Platform 7.9 ships Apache Kafka 3.9 (testcontainers' KafkaContainer needs a cp image).
DEFAULT_DOCKER_IMAGE = "confluentinc/cp-kafka:7.9.0"
UP_TIMEOUT = 900  # a cold `up` may download the jars first


class BrokerUnavailable(RuntimeError):
    """No broker could be reached or started."""


class BrokerControlError(RuntimeError):
    """The broker cannot be stopped/started/restarted from the tests (e.g. an external one)."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def normalize_bootstrap(value: str) -> str:
    """'kafka://a:1, b:2' -> 'a:1,b:2' (the form aiokafka and faust's URL both accept)."""
    servers = [s.strip().split("://", 1)[-1] for s in value.split(",")]
    return ",".join(s for s in servers if s)


def wait_serving(bootstrap: str, wait: float = 30.0) -> None:
    """Raise BrokerUnavailable unless a broker answers a real Metadata request in `wait` s."""
    proc = subprocess.run(
        [sys.executable, str(KAFKA_READY), "--bootstrap", bootstrap, "--wait", str(wait)],
        capture_output=True,
        text=True,
        timeout=wait + 30,
    )
    if proc.returncode != 0:
        raise BrokerUnavailable((proc.stderr or proc.stdout).strip() or f"{bootstrap} not serving")


@dataclass
class Broker:
    """A broker the session uses. ``managed``: this session started it and stops it at the end.

    ``stop()``, ``start()``, ``restart()`` (keeps the data) and ``kill()`` (SIGKILL, then
    ``start()`` recovers the same data) are for chaos tests; they raise BrokerControlError on a
    broker that the tests do not control (``can_control`` is False).
    """

    bootstrap: str
    kind: str  # "env" | "docker" | "infra"
    managed: bool = False
    version: str | None = None
    run_dir: Path | None = None
    _start: Callable[[], None] | None = field(default=None, repr=False)
    _stop: Callable[[bool], None] | None = field(default=None, repr=False)
    _close: Callable[[], None] | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """The faust/pixelpipe form: ``kafka://host:port[;host:port]``."""
        return "kafka://" + ";".join(self.bootstrap.split(","))

    @property
    def can_control(self) -> bool:
        return self._start is not None and self._stop is not None

    def _require_control(self) -> tuple[Callable[[], None], Callable[[bool], None]]:
        if self._start is None or self._stop is None:
            raise BrokerControlError(f"the {self.kind} broker at {self.bootstrap} is not ours")
        return self._start, self._stop

    def start(self) -> None:
        self._require_control()[0]()

    def stop(self) -> None:
        self._require_control()[1](False)

    def kill(self) -> None:
        self._require_control()[1](True)

    def restart(self) -> None:
        start, stop = self._require_control()
        stop(False)
        start()

    def log_tail(self, lines: int = 80) -> str:
        """The last lines of the broker's log ('' when there is none to read)."""
        if self.run_dir is None:
            return ""
        log = self.run_dir / "kafka.log"
        if not log.exists():
            return ""
        return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-lines:])

    def close(self) -> None:
        """End-of-session: stop it if this session started it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.managed and self._close is not None:
            self._close()


# ----------------------------------------------------------------------------- docker


def docker_answers(timeout: float = 3.0) -> bool:
    """True when a Docker engine answers a ping within `timeout`; never hangs, never raises."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        sockets = [
            Path("/var/run/docker.sock"),
            Path.home() / ".docker/run/docker.sock",
            Path.home() / ".docker/desktop/docker.sock",
            Path(f"/run/user/{os.getuid()}/docker.sock") if hasattr(os, "getuid") else None,
        ]
        if not any(p is not None and p.exists() for p in sockets):
            return False
    try:
        import docker  # installed with testcontainers

        client = docker.from_env(timeout=int(max(timeout, 1)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def start_docker_broker() -> Broker:
    """Kafka in a container via testcontainers (KRaft). Unverified here: no Docker engine."""
    from testcontainers.community.kafka import KafkaContainer

    image = os.environ.get("PIXELPIPE_TEST_KAFKA_IMAGE", DEFAULT_DOCKER_IMAGE)
    container = (
        KafkaContainer(image)
        .with_kraft()
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_MIN_INSYNC_REPLICAS", "1")
        .with_env("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "false")
    )
    container.start(timeout=180)
    bootstrap = container.get_bootstrap_server()
    wait_serving(bootstrap, 60)

    def stop(kill: bool) -> None:
        wrapped = container.get_wrapped_container()
        if kill:
            wrapped.kill()
        else:
            wrapped.stop(timeout=30)

    def start() -> None:
        container.get_wrapped_container().start()
        # The advertised listener was written for the first mapped port; Docker keeps it on a
        # restart of the same container, but check rather than assume.
        now = container.get_bootstrap_server()
        if now != bootstrap:
            raise BrokerControlError(f"container came back on {now}, not {bootstrap}")
        wait_serving(bootstrap, 120)

    return Broker(
        bootstrap=bootstrap,
        kind="docker",
        managed=True,
        version=image,
        _start=start,
        _stop=stop,
        _close=container.stop,
    )


# ------------------------------------------------------------------------------ infra


def _infra_env(port: int) -> dict[str, str]:
    env = dict(os.environ)
    env["KAFKA_PORT"] = str(port)
    env["KAFKA_CONTROLLER_PORT"] = os.environ.get(
        "PIXELPIPE_TEST_KAFKA_CONTROLLER_PORT", str(port + 1)
    )
    env["KAFKA_HOME_DIR"] = str(INFRA / ".run" / f"kafka-test-{port}")
    env["PYTHON"] = sys.executable
    env.pop("KAFKA_HOME", None)
    return env


def _kafka_sh(
    env: dict[str, str], *args: str, timeout: float = UP_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run(
        [bash, str(KAFKA_SH), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def start_infra_broker(port: int | None = None) -> Broker:
    port = port or int(os.environ.get("PIXELPIPE_TEST_KAFKA_PORT", DEFAULT_TEST_PORT))
    env = _infra_env(port)
    run_dir = Path(env["KAFKA_HOME_DIR"])

    def run(*args: str) -> None:
        proc = _kafka_sh(env, *args)
        if proc.returncode != 0:
            raise BrokerUnavailable(
                f"infra/kafka.sh {' '.join(args)} failed (exit {proc.returncode}):\n"
                f"{proc.stderr.strip()}\n{proc.stdout.strip()}"
            )

    already = _kafka_sh(env, "status", timeout=60).returncode == 0
    if not already:
        run("up")
    bootstrap = f"127.0.0.1:{port}"
    wait_serving(bootstrap, 30)

    def start() -> None:
        run("up")

    def stop(kill: bool) -> None:
        if kill:
            run("down", "--kill")
        else:
            run("down")

    def close() -> None:
        proc = _kafka_sh(env, "down", "--purge", timeout=120)
        if proc.returncode != 0:
            print(f"kafka_broker: stopping the test broker failed:\n{proc.stderr}", file=sys.stderr)

    running_version = run_dir / "running.version"
    version = (
        running_version.read_text().strip()
        if running_version.exists()
        else env.get("KAFKA_VERSION", "3.9.1")
    )
    return Broker(
        bootstrap=bootstrap,
        kind="infra",
        managed=not already,
        version=version,
        run_dir=run_dir,
        _start=start,
        _stop=stop,
        _close=close,
    )


# ---------------------------------------------------------------------------- session

_lock = threading.Lock()
_session: Broker | None = None
_failure: BrokerUnavailable | None = None


def find_or_start_broker() -> Broker:
    """Steps 1-3 above; raises BrokerUnavailable. Not cached: see session_broker()."""
    env_bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if env_bootstrap:
        bootstrap = normalize_bootstrap(env_bootstrap)
        try:
            wait_serving(bootstrap, 30)
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"KAFKA_BOOTSTRAP_SERVERS={env_bootstrap}: {exc}") from None
        return Broker(bootstrap=bootstrap, kind="env")

    mode = os.environ.get("PIXELPIPE_TEST_BROKER", "auto").strip().lower() or "auto"
    if mode not in ("auto", "docker", "infra"):
        raise BrokerUnavailable(f"PIXELPIPE_TEST_BROKER={mode!r}: expected auto, docker or infra")
    if mode == "docker" or (mode == "auto" and docker_answers()):
        try:
            return start_docker_broker()
        except Exception as exc:
            if mode == "docker":
                raise BrokerUnavailable(f"testcontainers Kafka failed: {exc!r}") from exc
            print(f"kafka_broker: testcontainers failed ({exc!r}); using infra/", file=sys.stderr)
    try:
        return start_infra_broker()
    except subprocess.TimeoutExpired as exc:
        raise BrokerUnavailable(f"infra/kafka.sh timed out: {exc}") from exc
    except OSError as exc:
        raise BrokerUnavailable(f"cannot run infra/kafka.sh: {exc}") from exc


def session_broker() -> Broker:
    """The session's broker (found or started once per process, stopped at exit if ours).

    Unreachable/unstartable: raises BrokerUnavailable under CI, else ``pytest.skip``.
    """
    global _session, _failure
    with _lock:
        if _session is None and _failure is None:
            try:
                _session = find_or_start_broker()
            except BrokerUnavailable as exc:
                _failure = exc
            else:
                if _session.managed:
                    atexit.register(_session.close)
        if _session is not None:
            return _session
    assert _failure is not None
    if in_ci():
        raise _failure
    import pytest

    pytest.skip(f"no Kafka broker (set CI to make this an error): {_failure}")
    raise AssertionError("unreachable")  # pytest.skip raises


def ensure_broker() -> str:
    """Bootstrap servers ("127.0.0.1:PORT") of the session's broker."""
    return session_broker().bootstrap
