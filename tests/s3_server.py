"""The real S3 server (versitygw, ``infra/s3.sh``) the S3 store's tests run against.

``session_s3()`` runs ``infra/s3.sh up`` once per test session on a test-only port and run dir
(``PIXELPIPE_TEST_S3_PORT``, default 17070; run dir ``infra/.run/s3-test-<port>``), with one
bucket, ``pixelpipe-test``; every test uses its own prefix in it. The first ``up`` on a fresh
machine builds versitygw (``go install``, ~3 min, cached in ``~/.cache/pixelpipe``). At the end
of the session that started it, ``down --purge``. A server that already runs there is used and
left running. With ``CI`` set, a server that cannot start fails the run, it never skips.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import subprocess
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from harness import PipelineEnv
from kafka_broker import in_ci

REPO = Path(__file__).resolve().parent.parent
S3_SH = REPO / "infra" / "s3.sh"
DEFAULT_TEST_PORT = 17070
BUCKET = "pixelpipe-test"
UP_TIMEOUT = 1800  # a cold `up` builds versitygw first


class S3Unavailable(RuntimeError):
    """The S3 server could not be started."""


@dataclass
class S3Server:
    endpoint: str
    run_dir: Path
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    bucket: str = BUCKET
    managed: bool = False
    _env: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def data_dir(self) -> Path:
        """versitygw's posix data directory: ``<data>/<bucket>/<key>`` is the object's file."""
        return self.run_dir / "data"

    def object_file(self, key: str) -> Path:
        return self.data_dir / self.bucket / key

    def client_env(self) -> dict[str, str]:
        """What a client process needs (the output of ``infra/s3.sh env``)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_REGION": self.region, "PIXELPIPE_S3_ENDPOINT": self.endpoint}

    def url(self, prefix: str | None = None) -> str:
        """``s3://<bucket>/<prefix>`` for ``PIXELPIPE_DATA``; a fresh prefix by default."""
        return f"s3://{self.bucket}/{prefix or 't' + uuid.uuid4().hex[:10]}"

    def close(self) -> None:
        if self.managed:
            self.managed = False
            proc = _s3_sh(self._env, "down", "--purge", timeout=120)
            if proc.returncode != 0:
                print(f"s3_server: stopping the test S3 server failed:\n{proc.stderr}")


def _s3_sh(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash") or "/bin/bash"
    return subprocess.run([bash, str(S3_SH), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def start_s3(port: int | None = None) -> S3Server:
    port = port or int(os.environ.get("PIXELPIPE_TEST_S3_PORT", DEFAULT_TEST_PORT))
    env = dict(os.environ)
    env.update(S3_PORT=str(port), S3_HOME_DIR=str(REPO / "infra" / ".run" / f"s3-test-{port}"),
               S3_BUCKETS=BUCKET)
    already = _s3_sh(env, "status", timeout=30).returncode == 0
    try:
        up = _s3_sh(env, "up", timeout=UP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise S3Unavailable(f"infra/s3.sh up: {exc}") from exc
    if up.returncode != 0:
        raise S3Unavailable(f"infra/s3.sh up failed (exit {up.returncode}):\n"
                            f"{up.stderr.strip()[-3000:]}")
    printed = _s3_sh(env, "env", timeout=30)
    if printed.returncode != 0:
        raise S3Unavailable(f"infra/s3.sh env failed: {printed.stderr.strip()}")
    values = dict(item.split("=", 1) for item in shlex.split(printed.stdout)
                  if "=" in item and item != "export")
    return S3Server(endpoint=values["PIXELPIPE_S3_ENDPOINT"], run_dir=Path(env["S3_HOME_DIR"]),
                    access_key=values["AWS_ACCESS_KEY_ID"],
                    secret_key=values["AWS_SECRET_ACCESS_KEY"], region=values["AWS_REGION"],
                    managed=not already, _env=env)


@dataclass
class S3Pipeline(PipelineEnv):
    """A test pipeline whose blob store is a fresh prefix of the test S3 server's bucket
    (``s3_env``: ``PIXELPIPE_DATA`` and the client variables, for workers and the CLI)."""

    s3_env: dict[str, str] = field(default_factory=dict)

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**{**self.s3_env, **extra})


_lock = threading.Lock()
_session: S3Server | None = None
_failure: S3Unavailable | None = None


def session_s3() -> S3Server:
    """The session's S3 server (started once, stopped at exit if this session started it).
    Cannot start: raises under CI, else ``pytest.skip``."""
    global _session, _failure
    with _lock:
        if _session is None and _failure is None:
            try:
                _session = start_s3()
            except S3Unavailable as exc:
                _failure = exc
            else:
                atexit.register(_session.close)
        if _session is not None:
            return _session
    assert _failure is not None
    if in_ci():
        raise _failure
    import pytest

    pytest.skip(f"no S3 server (set CI to make this an error): {_failure}")
    raise AssertionError("unreachable")
