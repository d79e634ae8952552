"""One frozen settings object, and the one place that reads environment variables.

Every knob has a default that works on one machine with the ``infra/`` broker. The public
edge (CLI, client API) takes plain keyword arguments and builds a ``Settings`` with
``Settings.from_env(**overrides)``.

| variable                        | default                     | meaning                               |
|---------------------------------|-----------------------------|---------------------------------------|
| PIXELPIPE_KAFKA                 | kafka://127.0.0.1:9092      | broker URL(s), comma separated; kafka+ssl:// for TLS |
| PIXELPIPE_KAFKA_CA_FILE         | (system CAs)                | PEM CA bundle the broker's certificate is checked against |
| PIXELPIPE_KAFKA_USER            | (none: no SASL)             | SASL user name                        |
| PIXELPIPE_KAFKA_PASSWORD / _PASSWORD_FILE | (none)            | SASL password (a secret: never logged) |
| PIXELPIPE_KAFKA_SASL_MECHANISM  | SCRAM-SHA-512               | SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN |
| PIXELPIPE_KAFKA_ALLOW_PLAINTEXT | off                         | on: allow kafka:// to a non-loopback broker |
| PIXELPIPE_DATA                  | ./.pixelpipe/blobs          | blob store: a directory or s3://bucket/prefix |
| PIXELPIPE_S3_ENDPOINT           | (AWS, or AWS_ENDPOINT_URL)  | S3 endpoint URL, e.g. http://127.0.0.1:7070 |
| PIXELPIPE_S3_TIMEOUT            | 30s                         | one S3 request, connect 5s at most    |
| PIXELPIPE_S3_RETRIES            | 3                           | retries of a failed S3 request        |
| PIXELPIPE_S3_CACHE_MB           | 1024                        | local cache of downloaded S3 sources  |
| AWS_ACCESS_KEY_ID               | (the client's chain)        | S3 credentials, with the two below    |
| AWS_SECRET_ACCESS_KEY           | (none)                      | (secrets: never logged, in no repr)   |
| AWS_SESSION_TOKEN               | (none)                      | temporary S3 credentials' token       |
| AWS_REGION                      | (client's: us-east-1)       | S3 region                             |
| AWS_PROFILE                     | (none)                      | S3 credentials of a profile (boto3)   |
| PIXELPIPE_TOPIC_PREFIX          | pixelpipe                   | prefix of every topic name            |
| PIXELPIPE_APP_ID                | pixelpipe                   | Faust app id = consumer group         |
| PIXELPIPE_UPLOAD_PARTITIONS     | 12                          | partitions of uploads (when created)  |
| PIXELPIPE_WORKERS               | os.cpu_count()              | image processes per worker            |
| PIXELPIPE_TASK_TIMEOUT          | 60                          | seconds before a task's process dies  |
| PIXELPIPE_MAX_INFLIGHT          | 2 x workers + 2             | uploads processed at once per worker  |
| PIXELPIPE_WEB_HOST / _WEB_PORT  | 127.0.0.1 / 6066            | worker web server (loopback default)  |
| PIXELPIPE_WEB_TOKEN / _TOKEN_FILE | (none)                    | bearer token of /status, dashboard data |
| PIXELPIPE_MAX_PIXELS            | engine: 50000000            | decode limit: pixels                  |
| PIXELPIPE_MAX_SIDE              | engine: 16384               | decode limit: pixels per side         |
| PIXELPIPE_MAX_BYTES             | engine: 52428800            | decode limit: source bytes            |
| PIXELPIPE_WORKER_MEMORY_MB      | 2048                        | address-space cap per image process   |
| PIXELPIPE_WORKER_MAX_TASKS      | 10000                       | renders before an image process is replaced (0: never) |
| PIXELPIPE_DATADIR               | ./.pixelpipe/worker         | Faust state (tables) directory        |
| PIXELPIPE_REPLICATION_FACTOR    | 1                           | replicas of topics we create          |
| PIXELPIPE_PROFILE               | development                 | production: refuse unsafe settings    |
| PIXELPIPE_RETRY_TIERS           | 5s,30s,2m,10m               | retry tier delays, one topic each     |
| PIXELPIPE_LOW_PRIORITY_RETRIES  | 2                           | retries of a ``low`` priority upload  |
| PIXELPIPE_MAX_AGE               | 24h                         | dead-letter uploads older than this   |
| PIXELPIPE_FAULTS                | (off)                       | fault injection, see agents/faults.py |
| PIXELPIPE_BREAKER_WINDOW        | 30s                         | sliding window of the breaker         |
| PIXELPIPE_BREAKER_MIN_CALLS     | 20                          | calls in window before it may open    |
| PIXELPIPE_BREAKER_FAILURE_RATE  | 0.5                         | failure rate that opens it            |
| PIXELPIPE_BREAKER_SLOW_RATE     | 0.8                         | slow-call rate that opens it          |
| PIXELPIPE_BREAKER_SLOW_CALL     | 10s                         | a call slower than this is slow       |
| PIXELPIPE_BREAKER_WAIT          | 10s                         | first open wait (doubles per trip)    |
| PIXELPIPE_BREAKER_MAX_WAIT      | 5m                          | longest open wait                     |
| PIXELPIPE_BREAKER_HALF_OPEN_CALLS | 3                         | trial calls per worker in half-open   |
| PIXELPIPE_DEGRADE               | on                          | off: the level stays full (kill switch)|
| PIXELPIPE_MEMORY_BUDGET_MB      | cgroup limit, else RAM      | memory the worker + pool may use      |
| PIXELPIPE_HEALTH_TRIGGERS       | (policy/health.py)          | e.g. ``lag_records=200:2000,cpu=0.8:1``|
| PIXELPIPE_DEGRADE_ESCALATE      | 2                           | bad evaluations before escalating     |
| PIXELPIPE_DEGRADE_RECOVER       | 60s                         | stable health before one level up     |
| PIXELPIPE_DEGRADE_DWELL         | 30s                         | least time in a level before recovery |
| PIXELPIPE_DEGRADE_QUALITY       | 70                          | quality cap from reduced_quality on   |
| PIXELPIPE_DEGRADE_MAX_DEFERRALS | 3                           | deferrals before an upload is served  |
| PIXELPIPE_HEARTBEAT             | 5s                          | worker heartbeat interval             |
| PIXELPIPE_ALERT_INTERVAL        | 10s                         | alert evaluation interval             |
| PIXELPIPE_ALERT_WEBHOOK         | (off)                       | URL each firing/resolved alert is POSTed to |
| PIXELPIPE_ALERT_ERROR_RATIO     | 0.05                        | error-ratio alert threshold           |
| PIXELPIPE_ALERT_SHORT_WINDOW / _LONG_WINDOW | 5m / 1h         | burn-rate windows of that alert       |
| PIXELPIPE_ALERT_HEALTH          | 0.5                         | health alert threshold (critical)     |
| PIXELPIPE_ALERT_PREDICT_HEALTH  | 0.7                         | predicted-health alert threshold      |
| PIXELPIPE_ALERT_LAG             | 1000                        | uploads lag alert threshold (records) |
| PIXELPIPE_ALERT_PREDICT_WINDOW / _HORIZON | 15m / 1h          | regression window and look-ahead      |
| PIXELPIPE_ALERT_STALL           | 10m                         | committed offset still this long + lag |
| PIXELPIPE_ALERT_BREAKER_OPEN    | 5m                          | breaker open longer than this         |
| PIXELPIPE_ALERT_DLQ_PER_MIN     | 10                          | dead letters per minute threshold     |
"""

from __future__ import annotations

import ipaddress
import itertools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pixelpipe.errors import ConfigError

ENV_KAFKA = "PIXELPIPE_KAFKA"
ENV_KAFKA_CA_FILE = "PIXELPIPE_KAFKA_CA_FILE"
ENV_KAFKA_USER = "PIXELPIPE_KAFKA_USER"
ENV_KAFKA_PASSWORD = "PIXELPIPE_KAFKA_PASSWORD"  # noqa: S105 (the variable's name)
ENV_KAFKA_PASSWORD_FILE = "PIXELPIPE_KAFKA_PASSWORD_FILE"  # noqa: S105
ENV_KAFKA_SASL_MECHANISM = "PIXELPIPE_KAFKA_SASL_MECHANISM"
ENV_KAFKA_ALLOW_PLAINTEXT = "PIXELPIPE_KAFKA_ALLOW_PLAINTEXT"
ENV_DATA = "PIXELPIPE_DATA"
ENV_S3_ENDPOINT = "PIXELPIPE_S3_ENDPOINT"
ENV_AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
ENV_AWS_ENDPOINT_URL_S3 = "AWS_ENDPOINT_URL_S3"
ENV_S3_TIMEOUT = "PIXELPIPE_S3_TIMEOUT"
ENV_S3_RETRIES = "PIXELPIPE_S3_RETRIES"
ENV_S3_CACHE_MB = "PIXELPIPE_S3_CACHE_MB"
# the standard AWS names, read here like every other setting (not by the S3 client itself)
ENV_AWS_ACCESS_KEY_ID = "AWS_ACCESS_KEY_ID"
ENV_AWS_SECRET_ACCESS_KEY = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 (the variable's name)
ENV_AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"  # noqa: S105
ENV_AWS_REGION = "AWS_REGION"
ENV_AWS_PROFILE = "AWS_PROFILE"
ENV_TOPIC_PREFIX = "PIXELPIPE_TOPIC_PREFIX"
ENV_APP_ID = "PIXELPIPE_APP_ID"
ENV_UPLOAD_PARTITIONS = "PIXELPIPE_UPLOAD_PARTITIONS"
ENV_WORKERS = "PIXELPIPE_WORKERS"
ENV_TASK_TIMEOUT = "PIXELPIPE_TASK_TIMEOUT"
ENV_MAX_INFLIGHT = "PIXELPIPE_MAX_INFLIGHT"
ENV_WEB_HOST = "PIXELPIPE_WEB_HOST"
ENV_WEB_PORT = "PIXELPIPE_WEB_PORT"
ENV_WEB_TOKEN = "PIXELPIPE_WEB_TOKEN"  # noqa: S105 (the variable's name, not a secret)
ENV_WEB_TOKEN_FILE = "PIXELPIPE_WEB_TOKEN_FILE"  # noqa: S105
ENV_MAX_PIXELS = "PIXELPIPE_MAX_PIXELS"
ENV_MAX_SIDE = "PIXELPIPE_MAX_SIDE"
ENV_MAX_BYTES = "PIXELPIPE_MAX_BYTES"
ENV_WORKER_MEMORY_MB = "PIXELPIPE_WORKER_MEMORY_MB"
ENV_WORKER_MAX_TASKS = "PIXELPIPE_WORKER_MAX_TASKS"
ENV_DATADIR = "PIXELPIPE_DATADIR"
ENV_REPLICATION_FACTOR = "PIXELPIPE_REPLICATION_FACTOR"
ENV_PROFILE = "PIXELPIPE_PROFILE"
ENV_RETRY_TIERS = "PIXELPIPE_RETRY_TIERS"
ENV_LOW_PRIORITY_RETRIES = "PIXELPIPE_LOW_PRIORITY_RETRIES"
ENV_MAX_AGE = "PIXELPIPE_MAX_AGE"
ENV_FAULTS = "PIXELPIPE_FAULTS"
ENV_BREAKER_WINDOW = "PIXELPIPE_BREAKER_WINDOW"
ENV_BREAKER_MIN_CALLS = "PIXELPIPE_BREAKER_MIN_CALLS"
ENV_BREAKER_FAILURE_RATE = "PIXELPIPE_BREAKER_FAILURE_RATE"
ENV_BREAKER_SLOW_RATE = "PIXELPIPE_BREAKER_SLOW_RATE"
ENV_BREAKER_SLOW_CALL = "PIXELPIPE_BREAKER_SLOW_CALL"
ENV_BREAKER_WAIT = "PIXELPIPE_BREAKER_WAIT"
ENV_BREAKER_MAX_WAIT = "PIXELPIPE_BREAKER_MAX_WAIT"
ENV_BREAKER_HALF_OPEN_CALLS = "PIXELPIPE_BREAKER_HALF_OPEN_CALLS"
ENV_DEGRADE = "PIXELPIPE_DEGRADE"
ENV_MEMORY_BUDGET_MB = "PIXELPIPE_MEMORY_BUDGET_MB"
ENV_HEALTH_TRIGGERS = "PIXELPIPE_HEALTH_TRIGGERS"
ENV_DEGRADE_ESCALATE = "PIXELPIPE_DEGRADE_ESCALATE"
ENV_DEGRADE_RECOVER = "PIXELPIPE_DEGRADE_RECOVER"
ENV_DEGRADE_DWELL = "PIXELPIPE_DEGRADE_DWELL"
ENV_DEGRADE_QUALITY = "PIXELPIPE_DEGRADE_QUALITY"
ENV_HEARTBEAT = "PIXELPIPE_HEARTBEAT"
ENV_ALERT_INTERVAL = "PIXELPIPE_ALERT_INTERVAL"
ENV_ALERT_WEBHOOK = "PIXELPIPE_ALERT_WEBHOOK"
ENV_INFRA_DIR = "PIXELPIPE_INFRA_DIR"
ENV_DEMO_PHOTOS = "PIXELPIPE_DEMO_PHOTOS"

DEFAULT_BROKER = "kafka://127.0.0.1:9092"
#: broker URL schemes: plaintext, and TLS (``kafka+ssl://host:port``)
PLAINTEXT_SCHEMES = ("kafka", "aiokafka")
TLS_SCHEME = "kafka+ssl"
#: the SASL mechanisms a user/password may be sent with (aiokafka supports all three)
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
DEFAULT_SASL_MECHANISM = "SCRAM-SHA-512"
#: ``PIXELPIPE_PROFILE`` values; ``production`` makes the worker refuse to start on settings that
#: could lose data (``pixelpipe.streams.profile``)
PROFILES = ("development", "production")



@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The circuit breaker's settings, the one place they are written (the state machine is
    ``pixelpipe.policy.breaker``): a sliding window of 1 s buckets, the rates that open it,
    the open wait and the half-open trial budget."""

    #: sliding window the rates are computed over
    window_s: float = 30.0
    #: calls in the window before it may open
    min_calls: int = 20
    #: failure rate that opens it
    failure_rate: float = 0.5
    #: slow-call rate that opens it
    slow_rate: float = 0.8
    #: a call slower than this is slow
    slow_call_s: float = 10.0
    #: first open wait (doubles per consecutive trip)
    wait_s: float = 10.0
    #: longest open wait
    max_wait_s: float = 300.0
    #: trial calls per worker in half-open
    half_open_calls: int = 3


@dataclass(frozen=True, slots=True)
class DegradeConfig:
    """Graceful degradation's settings (the ladder is ``pixelpipe.policy.degradation``, the
    health score ``pixelpipe.policy.health``)."""

    #: the kill switch: False pins the level at ``full`` (an operator override still applies)
    enabled: bool = True
    #: memory the worker and its image processes may use; 0: the cgroup limit, else all RAM
    memory_budget_mb: int = 0
    #: overrides of the health triggers, ``name=start:saturate,...``
    triggers: str = ""
    escalate_after: int = 2
    recover_after_s: float = 60.0
    recover_margin: float = 0.1
    min_dwell_s: float = 30.0
    quality_cap: int = 70
    #: deferrals an upload may suffer at an automatic level before it is served (emergency)
    max_deferrals: int = 3
    #: how often health is sampled and the ladder evaluated
    interval_s: float = 1.0

    def trigger_overrides(self) -> dict[str, tuple[float, float]]:
        """``triggers`` parsed: signal -> (start, saturate)."""
        out: dict[str, tuple[float, float]] = {}
        for item in self.triggers.split(","):
            item = item.strip()
            if not item:
                continue
            name, _, bounds = item.partition("=")
            start, _, saturate = bounds.partition(":")
            try:
                out[name.strip()] = (float(start), float(saturate))
            except ValueError:
                raise ConfigError(
                    f"{ENV_HEALTH_TRIGGERS}: {item!r} is not name=start:saturate") from None
        return out


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    """Heartbeats and the cluster's alert rules (``pixelpipe.agents.heartbeat``,
    ``pixelpipe.agents.alerts``; the rules themselves are ``pixelpipe.policy.alerts``).
    Windows and thresholds are settings so a test can shorten them."""

    heartbeat_s: float = 5.0
    #: a worker whose last heartbeat is older than this many intervals is shown missing
    missing_after: int = 3
    alert_interval_s: float = 10.0
    webhook: str = ""
    error_ratio: float = 0.05
    short_window_s: float = 300.0
    long_window_s: float = 3600.0
    health: float = 0.5
    predict_health: float = 0.7
    lag_records: int = 1000
    predict_window_s: float = 900.0
    predict_horizon_s: float = 3600.0
    stall_s: float = 600.0
    breaker_open_s: float = 300.0
    dlq_per_min: float = 10.0
    #: fewer attempts than this in the short window say nothing about an error ratio
    min_attempts: int = 20


def parse_switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ValueError(f"not on/off: {text!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a worker, the CLI and the client API need to agree on."""

    broker: str = DEFAULT_BROKER
    #: PEM CA bundle for a ``kafka+ssl://`` broker ('': the system's CAs)
    kafka_ca_file: str = ""
    #: SASL user and password ('' : no SASL); the password is a secret: never in repr, logs,
    #: status or error messages
    kafka_user: str = ""
    kafka_password: str = field(default="", repr=False)
    kafka_sasl_mechanism: str = DEFAULT_SASL_MECHANISM
    #: allow an unencrypted connection (``kafka://``) to a broker that is not on loopback
    kafka_allow_plaintext: bool = False
    data_dir: Path = Path(".pixelpipe/blobs")
    #: ``s3://bucket/prefix`` when ``PIXELPIPE_DATA`` names an S3 store ('' : the local
    #: ``data_dir``); a string, since ``Path`` would fold its ``//``
    data_url: str = ""
    #: S3 endpoint URL (``PIXELPIPE_S3_ENDPOINT``, else ``AWS_ENDPOINT_URL_S3``, else
    #: ``AWS_ENDPOINT_URL``, all from the settings' mapping; '' : AWS)
    s3_endpoint: str = ""
    #: one S3 request's timeout and the retries of a failed one (then ``storage_unavailable``)
    s3_timeout_s: float = 30.0
    s3_retries: int = 3
    #: bound of the worker's local cache of downloaded S3 sources (under ``state_dir``)
    s3_cache_mb: int = 1024
    #: S3 credentials (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``;
    #: '' : the client's own chain: web identity, container or instance metadata). Given to
    #: the S3 client explicitly, so a ``from_env(mapping)`` store uses the mapping's, never
    #: the process environment's. Secrets: never in repr, logs, status or error messages
    s3_access_key_id: str = field(default="", repr=False)
    s3_secret_access_key: str = field(default="", repr=False)
    s3_session_token: str = field(default="", repr=False)
    #: S3 region (``AWS_REGION``; '' : the client's default, us-east-1)
    s3_region: str = ""
    #: AWS profile whose credentials the S3 store uses (``AWS_PROFILE``, through boto3)
    s3_profile: str = ""
    topic_prefix: str = "pixelpipe"
    app_id: str = "pixelpipe"
    upload_partitions: int = 12
    workers: int = max(1, os.cpu_count() or 1)
    task_timeout_s: float = 60.0
    max_inflight: int = 0  # 0: derived from workers in __post_init__
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    #: bearer token for /status and the dashboard's data; required when web_host is not
    #: loopback. A secret: never in repr, logs or status.
    web_token: str = field(default="", repr=False)
    # decode limits; None: the engine's own defaults (imaging.limits.DEFAULT_LIMITS, the one
    # place they are written: 50 MP, 16,384 px a side, 50 MiB)
    max_pixels: int | None = None
    max_side: int | None = None
    max_bytes: int | None = None
    worker_memory_mb: int = 2048
    #: renders an image process does before it is replaced (0: never). Replacing one costs a
    #: spawn and ``import cv2`` (~0.2-0.3 s during which that process renders nothing), so it
    #: is a rare backstop against a slow leak, not a routine (issue 15: at 200, both
    #: processes were replaced every ~10 s at 70 % load and the uploads behind them waited
    #: up to 0.8 s in Kafka; p99 690 ms at 200, 247 ms at 10,000, same load and seed)
    worker_max_tasks: int = 10_000
    state_dir: Path = Path(".pixelpipe/worker")
    replication_factor: int = 1
    #: ``development`` (no checks) or ``production``: the worker refuses to start unless
    #: replication, min ISR, the producers and the blob store are fit for production
    profile: str = "development"
    #: retry tiers as (name, delay in seconds), in order; the name is the topic suffix
    retry_tiers: tuple[tuple[str, float], ...] = (("5s", 5.0), ("30s", 30.0), ("2m", 120.0),
                                                  ("10m", 600.0))
    #: retries a ``low`` priority upload gets (``normal`` and ``high`` get every tier)
    low_priority_retries: int = 2
    #: an upload older than this (from ``submitted_at``) is dead-lettered deadline_exceeded
    max_age_s: float = 24 * 3600.0
    #: fault injection for tests and drills (see ``pixelpipe.agents.faults``); off when empty
    faults: str = ""
    #: circuit breaker settings (``PIXELPIPE_BREAKER_*``), see ``BreakerConfig``
    breaker: BreakerConfig = BreakerConfig()
    #: graceful degradation (``PIXELPIPE_DEGRADE*``, health triggers), see ``DegradeConfig``
    degrade: DegradeConfig = DegradeConfig()
    #: heartbeats and alerts (``PIXELPIPE_HEARTBEAT``, ``PIXELPIPE_ALERT_*``)
    monitor: MonitorConfig = MonitorConfig()

    def __post_init__(self) -> None:
        if self.max_inflight <= 0:
            # Two tasks queued per process keeps both cores busy while one event's outputs are
            # being delivered; more would only lengthen the replay after a crash.
            object.__setattr__(self, "max_inflight", 2 * self.workers + 2)
        if self.workers < 1:
            raise ConfigError(f"{ENV_WORKERS} must be at least 1")
        if self.worker_max_tasks < 0:
            raise ConfigError(f"{ENV_WORKER_MAX_TASKS} must be 0 (never) or more")
        if self.upload_partitions < 1:
            raise ConfigError(f"{ENV_UPLOAD_PARTITIONS} must be at least 1")
        bootstrap_from_url(self.broker)  # a bad URL fails here, in one line, not in aiokafka
        self._check_kafka_security()
        if self.profile not in PROFILES:
            raise ConfigError(
                f"{ENV_PROFILE}={self.profile!r}: must be one of {', '.join(PROFILES)}")
        if self.data_url:
            check_s3_url(self.data_url)
        if self.s3_timeout_s <= 0 or self.s3_retries < 0 or self.s3_cache_mb < 1:
            raise ConfigError(f"{ENV_S3_TIMEOUT} must be positive, {ENV_S3_RETRIES} at least 0 "
                              f"and {ENV_S3_CACHE_MB} at least 1")

    def _check_kafka_security(self) -> None:
        """The TLS/SASL settings fit together (one line each; the password never in it)."""
        if self.kafka_sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"{ENV_KAFKA_SASL_MECHANISM}={self.kafka_sasl_mechanism!r}: must "
                              f"be one of {', '.join(SASL_MECHANISMS)}")
        if self.kafka_user and not self.kafka_password:
            raise ConfigError(f"{ENV_KAFKA_USER} is set but no password: set "
                              f"{ENV_KAFKA_PASSWORD_FILE} (or {ENV_KAFKA_PASSWORD})")
        if self.kafka_password and not self.kafka_user:
            raise ConfigError(f"a Kafka password is set but no user: set {ENV_KAFKA_USER}")
        if self.kafka_ca_file:
            if not self.kafka_tls:
                raise ConfigError(
                    f"{ENV_KAFKA_CA_FILE} is set but the broker URL {self.broker!r} is not "
                    f"TLS: use {TLS_SCHEME}://host:port ({ENV_KAFKA})")
            if not Path(self.kafka_ca_file).expanduser().is_file():
                raise ConfigError(f"{ENV_KAFKA_CA_FILE}={self.kafka_ca_file}: no such file")

    @property
    def kafka_tls(self) -> bool:
        """The broker URL is ``kafka+ssl://``: every connection is TLS."""
        return broker_uses_tls(self.broker)

    @property
    def kafka_security_protocol(self) -> str:
        """aiokafka's ``security_protocol``: ``SASL_SSL``, ``SSL``, ``SASL_PLAINTEXT`` or
        ``PLAINTEXT``."""
        if self.kafka_tls:
            return "SASL_SSL" if self.kafka_user else "SSL"
        return "SASL_PLAINTEXT" if self.kafka_user else "PLAINTEXT"

    @property
    def kafka_is_loopback(self) -> bool:
        """Every broker address is on this machine (127.0.0.0/8, ::1, localhost)."""
        return all(is_loopback_host(address_host(address))
                   for address in self.bootstrap_servers.split(","))

    def check_kafka_transport(self) -> None:
        """Refuse an unencrypted connection to a broker beyond loopback unless allowed: called
        wherever a Kafka client is built (``streams.kafka``, the faust app)."""
        if self.kafka_tls or self.kafka_allow_plaintext or self.kafka_is_loopback:
            return
        raise ConfigError(
            f"refusing an unencrypted Kafka connection to {self.bootstrap_servers} (not "
            f"loopback): use {TLS_SCHEME}://host:port in {ENV_KAFKA} (with "
            f"{ENV_KAFKA_CA_FILE}, {ENV_KAFKA_USER}, {ENV_KAFKA_PASSWORD_FILE}), or set "
            f"{ENV_KAFKA_ALLOW_PLAINTEXT}=1 on a network you trust")

    @property
    def data_location(self) -> str:
        """Where the blobs are, for messages: the ``s3://`` URL or the local directory."""
        return self.data_url or str(self.data_dir)

    @property
    def web_is_loopback(self) -> bool:
        return self.web_host in ("localhost", "::1") or self.web_host.startswith("127.")

    def check_web_exposure(self) -> None:
        """A worker whose web server is reachable beyond this machine must protect its data."""
        if not self.web_is_loopback and not self.web_token:
            raise ConfigError(
                f"{ENV_WEB_HOST}={self.web_host} exposes the web server beyond loopback: set "
                f"{ENV_WEB_TOKEN} or {ENV_WEB_TOKEN_FILE} (a bearer token for /status and the "
                f"dashboard's data), or bind 127.0.0.1")

    @property
    def uploads_group(self) -> str:
        """The consumer group whose committed offsets say which uploads are settled.

        Not the faust app's own group (``app_id``): faust's consumer no longer reads uploads,
        and a group cannot mix faust's assignor with aiokafka's (issue 9)."""
        return f"{self.app_id}.uploads"

    @property
    def retry_group(self) -> str:
        """The consumer group of the retry scheduler (every tier topic)."""
        return f"{self.app_id}.retry"

    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` for aiokafka, from the ``kafka://`` URL(s)."""
        return bootstrap_from_url(self.broker)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, **overrides: Any
    ) -> Settings:
        """Defaults, then environment variables, then non-None keyword ``overrides``."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        _read(env, ENV_KAFKA, values, "broker", str)
        _read(env, ENV_KAFKA_CA_FILE, values, "kafka_ca_file", str)
        _read(env, ENV_KAFKA_USER, values, "kafka_user", str)
        _read(env, ENV_KAFKA_PASSWORD, values, "kafka_password", str)
        _read(env, ENV_KAFKA_PASSWORD_FILE, values, "kafka_password", _secret_file)
        _read(env, ENV_KAFKA_SASL_MECHANISM, values, "kafka_sasl_mechanism",
              lambda raw: raw.upper())
        _read(env, ENV_KAFKA_ALLOW_PLAINTEXT, values, "kafka_allow_plaintext", parse_switch)
        if is_s3_url(env.get(ENV_DATA, "")):
            values["data_url"] = env[ENV_DATA].strip()
        else:
            _read(env, ENV_DATA, values, "data_dir", Path)
        # the standard AWS endpoint variables, from the same mapping, when ours is not set
        # (least specific first: each later read wins)
        _read(env, ENV_AWS_ENDPOINT_URL, values, "s3_endpoint", str)
        _read(env, ENV_AWS_ENDPOINT_URL_S3, values, "s3_endpoint", str)
        _read(env, ENV_S3_ENDPOINT, values, "s3_endpoint", str)
        _read(env, ENV_S3_TIMEOUT, values, "s3_timeout_s", parse_duration)
        _read(env, ENV_S3_RETRIES, values, "s3_retries", int)
        _read(env, ENV_S3_CACHE_MB, values, "s3_cache_mb", int)
        _read(env, ENV_AWS_ACCESS_KEY_ID, values, "s3_access_key_id", str)
        _read(env, ENV_AWS_SECRET_ACCESS_KEY, values, "s3_secret_access_key", str)
        _read(env, ENV_AWS_SESSION_TOKEN, values, "s3_session_token", str)
        _read(env, ENV_AWS_REGION, values, "s3_region", str)
        _read(env, ENV_AWS_PROFILE, values, "s3_profile", str)
        _read(env, ENV_TOPIC_PREFIX, values, "topic_prefix", str)
        _read(env, ENV_APP_ID, values, "app_id", str)
        _read(env, ENV_UPLOAD_PARTITIONS, values, "upload_partitions", int)
        _read(env, ENV_WORKERS, values, "workers", int)
        _read(env, ENV_TASK_TIMEOUT, values, "task_timeout_s", float)
        _read(env, ENV_MAX_INFLIGHT, values, "max_inflight", int)
        _read(env, ENV_WEB_HOST, values, "web_host", str)
        _read(env, ENV_WEB_PORT, values, "web_port", int)
        _read(env, ENV_WEB_TOKEN, values, "web_token", str)
        _read(env, ENV_WEB_TOKEN_FILE, values, "web_token", _secret_file)
        _read(env, ENV_MAX_PIXELS, values, "max_pixels", int)
        _read(env, ENV_MAX_SIDE, values, "max_side", int)
        _read(env, ENV_MAX_BYTES, values, "max_bytes", int)
        _read(env, ENV_WORKER_MEMORY_MB, values, "worker_memory_mb", int)
        _read(env, ENV_WORKER_MAX_TASKS, values, "worker_max_tasks", int)
        _read(env, ENV_DATADIR, values, "state_dir", Path)
        _read(env, ENV_REPLICATION_FACTOR, values, "replication_factor", int)
        _read(env, ENV_PROFILE, values, "profile", lambda raw: raw.lower())
        _read(env, ENV_RETRY_TIERS, values, "retry_tiers", parse_tiers)
        _read(env, ENV_LOW_PRIORITY_RETRIES, values, "low_priority_retries", int)
        _read(env, ENV_MAX_AGE, values, "max_age_s", parse_duration)
        _read(env, ENV_FAULTS, values, "faults", str)
        breaker: dict[str, Any] = {}
        for name, key, kind in _BREAKER_ENV:
            _read(env, name, breaker, key, kind)
        if breaker:
            values["breaker"] = BreakerConfig(**breaker)
        degrade: dict[str, Any] = {}
        for name, key, kind in _DEGRADE_ENV:
            _read(env, name, degrade, key, kind)
        if degrade:
            values["degrade"] = DegradeConfig(**degrade)
            values["degrade"].trigger_overrides()  # a bad spec fails at start-up, not later
        monitor: dict[str, Any] = {}
        for name, key, kind in _MONITOR_ENV:
            _read(env, name, monitor, key, kind)
        if monitor:
            values["monitor"] = MonitorConfig(**monitor)
        known = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in known:
                raise TypeError(f"unknown setting {key!r}")
            if value is None:
                continue
            if key == "data_dir" and is_s3_url(str(value)):  # --data s3://... and the like
                values["data_url"] = str(value).strip()
            elif key == "data_dir":
                values["data_dir"] = Path(value)
                values["data_url"] = ""  # an explicit directory wins over an s3:// from env
            else:
                values[key] = Path(value) if key == "state_dir" else value
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return replace(self, **changes)


def _read(
    env: Mapping[str, str], name: str, into: dict[str, Any], key: str, kind: Any
) -> None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return
    try:
        into[key] = kind(raw.strip())
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from exc


def _secret_file(path: str) -> str:
    """The first line of a secret's file (``..._FILE`` variables); the secret never appears
    in an error message, only the path."""
    try:
        secret = Path(path).expanduser().read_text().strip().splitlines()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if not secret or not secret[0].strip():
        raise ValueError(f"{path} is empty")
    return secret[0].strip()


def is_s3_url(text: str) -> bool:
    return text.strip().lower().startswith("s3://")


def check_s3_url(url: str) -> None:
    """``s3://bucket[/prefix]`` with a valid bucket name, or a one-line ``ConfigError`` (the
    store itself, ``pixelpipe.storage.s3``, parses it again)."""
    rest = url.strip()[len("s3://"):] if is_s3_url(url) else ""
    bucket, _, prefix = rest.partition("/")
    hint = f"{ENV_DATA}={url!r}: expected s3://bucket/prefix"
    if not is_s3_url(url) or not (3 <= len(bucket) <= 63) or not all(
            c.islower() or c.isdigit() or c in ".-" for c in bucket) or not bucket[0].isalnum():
        raise ConfigError(f"{hint} with a bucket name of 3-63 characters a-z 0-9 . -")
    if any(part in (".", "..") for part in prefix.split("/")) or "?" in prefix or "#" in prefix:
        raise ConfigError(f"{hint}; the prefix may not hold '.', '..', '?' or '#'")


def bootstrap_from_url(url: str) -> str:
    """``kafka://a:9092;b:9092`` or ``kafka://a:9092,kafka://b:9092`` -> ``a:9092,b:9092``
    (``kafka+ssl://`` alike)."""
    return ",".join(parse_broker_url(url)[0])


def broker_uses_tls(url: str) -> bool:
    """``kafka+ssl://...``: the broker is reached over TLS."""
    return parse_broker_url(url)[1]


def parse_broker_url(url: str) -> tuple[list[str], bool]:
    """The ``host:port`` addresses of a broker URL and whether it is TLS (``kafka+ssl://``).

    An address without a scheme takes the one before it; plaintext and TLS in one URL is a
    ``ConfigError`` (a client speaks one protocol to every broker)."""
    if "@" in url:
        # user:password@host would end up in logs and /status: refused, and never echoed
        raise ConfigError(f"{ENV_KAFKA}: no credentials in the broker URL; set "
                          f"{ENV_KAFKA_USER} and {ENV_KAFKA_PASSWORD_FILE} instead")
    servers = []
    schemes: set[bool] = set()
    for part in url.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "://" in part:
            scheme, _, part = part.partition("://")
            scheme = scheme.lower()
            if scheme not in (*PLAINTEXT_SCHEMES, TLS_SCHEME):
                raise ConfigError(f"unsupported broker URL scheme {scheme!r} in {url!r} "
                                  f"(kafka:// or {TLS_SCHEME}://)")
            schemes.add(scheme == TLS_SCHEME)
        address = part.rstrip("/")
        _check_address(address, url)
        servers.append(address)
    if not servers:
        raise ConfigError(f"no broker address in {url!r}")
    if len(schemes) > 1:
        raise ConfigError(f"broker URL {url!r} mixes kafka:// and {TLS_SCHEME}://: use one")
    return servers, schemes == {True}


def address_host(address: str) -> str:
    """``host:port`` / ``[v6]:port`` / ``host`` -> the host (brackets removed)."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    return address.rpartition(":")[0] if ":" in address else address


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: traffic that never leaves this machine."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_address(address: str, url: str) -> None:
    """``host[:port]`` (``[v6]:port`` too), or a ``ConfigError`` naming the URL: aiokafka would
    fail later with a bare ``ValueError`` from ``int()``."""
    hint = f"in broker URL {url!r} (--broker or {ENV_KAFKA}; e.g. {DEFAULT_BROKER})"
    if address.endswith("]") or ":" not in address:
        host, port = address, ""
    else:
        host, _, port = address.rpartition(":")
    if not host.strip("[]"):
        raise ConfigError(f"no host in {address!r} {hint}")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"port {port!r} of {address!r} is not a port number {hint}")


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``500ms``, ``5s``, ``2m``, ``1h``, ``1d`` or plain seconds -> seconds."""
    text = text.strip().lower()
    for unit in ("ms", "s", "m", "h", "d"):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * _UNITS[unit]
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a duration: {text!r} (use e.g. 500ms, 5s, 2m, 1h)") from None


def parse_tiers(text: str) -> tuple[tuple[str, float], ...]:
    """``5s,30s,2m,10m`` -> ``(("5s", 5.0), ...)``; delays must grow strictly."""
    tiers = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        tiers.append((name, parse_duration(name)))
    delays = [d for _, d in tiers]
    growing = all(b > a for a, b in itertools.pairwise(delays))
    if not growing or any(d <= 0 for d in delays):
        raise ValueError(f"retry tiers must be positive and growing: {text!r}")
    return tuple(tiers)


#: the ``PIXELPIPE_DEGRADE*`` variables: (variable, ``DegradeConfig`` field, parser)
_DEGRADE_ENV: tuple[tuple[str, str, Any], ...] = (
    (ENV_DEGRADE, "enabled", parse_switch),
    (ENV_MEMORY_BUDGET_MB, "memory_budget_mb", int),
    (ENV_HEALTH_TRIGGERS, "triggers", str),
    (ENV_DEGRADE_ESCALATE, "escalate_after", int),
    (ENV_DEGRADE_RECOVER, "recover_after_s", parse_duration),
    (ENV_DEGRADE_DWELL, "min_dwell_s", parse_duration),
    (ENV_DEGRADE_QUALITY, "quality_cap", int),
    ("PIXELPIPE_DEGRADE_MAX_DEFERRALS", "max_deferrals", int),
)

#: the ``PIXELPIPE_HEARTBEAT`` / ``PIXELPIPE_ALERT_*`` variables
_MONITOR_ENV: tuple[tuple[str, str, Any], ...] = (
    (ENV_HEARTBEAT, "heartbeat_s", parse_duration),
    (ENV_ALERT_INTERVAL, "alert_interval_s", parse_duration),
    (ENV_ALERT_WEBHOOK, "webhook", str),
    ("PIXELPIPE_ALERT_ERROR_RATIO", "error_ratio", float),
    ("PIXELPIPE_ALERT_SHORT_WINDOW", "short_window_s", parse_duration),
    ("PIXELPIPE_ALERT_LONG_WINDOW", "long_window_s", parse_duration),
    ("PIXELPIPE_ALERT_HEALTH", "health", float),
    ("PIXELPIPE_ALERT_PREDICT_HEALTH", "predict_health", float),
    ("PIXELPIPE_ALERT_LAG", "lag_records", int),
    ("PIXELPIPE_ALERT_PREDICT_WINDOW", "predict_window_s", parse_duration),
    ("PIXELPIPE_ALERT_PREDICT_HORIZON", "predict_horizon_s", parse_duration),
    ("PIXELPIPE_ALERT_STALL", "stall_s", parse_duration),
    ("PIXELPIPE_ALERT_BREAKER_OPEN", "breaker_open_s", parse_duration),
    ("PIXELPIPE_ALERT_DLQ_PER_MIN", "dlq_per_min", float),
)

#: the ``PIXELPIPE_BREAKER_*`` variables: (variable, ``BreakerConfig`` field, parser)
_BREAKER_ENV: tuple[tuple[str, str, Any], ...] = (
    (ENV_BREAKER_WINDOW, "window_s", parse_duration),
    (ENV_BREAKER_MIN_CALLS, "min_calls", int),
    (ENV_BREAKER_FAILURE_RATE, "failure_rate", float),
    (ENV_BREAKER_SLOW_RATE, "slow_rate", float),
    (ENV_BREAKER_SLOW_CALL, "slow_call_s", parse_duration),
    (ENV_BREAKER_WAIT, "wait_s", parse_duration),
    (ENV_BREAKER_MAX_WAIT, "max_wait_s", parse_duration),
    (ENV_BREAKER_HALF_OPEN_CALLS, "half_open_calls", int),
)


def path_from_env(name: str, env: Mapping[str, str] | None = None) -> Path | None:
    """A directory named by an environment variable (``PIXELPIPE_INFRA_DIR``, ...), if set."""
    raw = (os.environ if env is None else env).get(name, "").strip()
    return Path(raw).expanduser() if raw else None
