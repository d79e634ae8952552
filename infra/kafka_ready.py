#!/usr/bin/env python3
"""Is a Kafka broker really serving? Standard library only (no venv needed).

Sends ApiVersions (v0) and then a Metadata request (a non-flexible version, v3..v8, picked
from the broker's advertised range) over a plain socket and succeeds only when the response
lists at least one broker. A bare TCP connect is not enough: the port opens before the broker
can answer metadata.

    python3 infra/kafka_ready.py [--bootstrap 127.0.0.1:9092] [--wait 60] [--timeout 3] [--json]

`--bootstrap` takes "host:port[,host:port...]" and tolerates a "kafka://" prefix (the form of
PIXELPIPE_KAFKA). Exit status: 0 serving, 1 not serving (within --wait), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field

API_VERSIONS = 18
METADATA = 3
CLIENT_ID = b"pixelpipe-kafka-ready"


class NotReady(Exception):
    """The broker did not answer, or answered without a usable broker list."""


@dataclass
class BrokerInfo:
    node_id: int
    host: str
    port: int
    rack: str | None


@dataclass
class ClusterInfo:
    bootstrap: str
    cluster_id: str | None
    controller_id: int
    metadata_version: int
    brokers: list[BrokerInfo] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise NotReady("truncated response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def string(self) -> str | None:
        length = self.int16()
        if length < 0:
            return None
        if self.pos + length > len(self.data):
            raise NotReady("truncated string")
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", "replace")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise NotReady("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> _Reader:
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
    header = struct.pack(">hhih", api_key, version, corr, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if size < 4 or size > 64 * 1024 * 1024:
        raise NotReady(f"implausible response size {size}")
    reader = _Reader(_recv_exact(sock, size))
    got = reader.int32()  # response header v0: correlation_id
    if got != corr:
        raise NotReady(f"correlation id mismatch ({got} != {corr})")
    return reader


def _metadata_version(sock: socket.socket) -> int:
    reader = _request(sock, API_VERSIONS, 0, 1, b"")
    error = reader.int16()
    if error != 0:
        raise NotReady(f"ApiVersions error code {error}")
    for _ in range(reader.int32()):
        key, lo, hi = reader.int16(), reader.int16(), reader.int16()
        if key == METADATA:
            # v3..v8 share one layout up to the fields we read; v9+ is "flexible" encoding.
            version = min(hi, 8)
            if version < max(lo, 3):
                raise NotReady(f"broker supports Metadata v{lo}..v{hi}, need one in v3..v8")
            return version
    raise NotReady("broker does not list the Metadata API")


def _metadata(sock: socket.socket, version: int) -> tuple[str | None, int, list[BrokerInfo]]:
    body = struct.pack(">i", 0)  # topics: empty array -> brokers only, no topic metadata
    if version >= 4:
        body += b"\x00"  # allow_auto_topic_creation = false
    if version >= 8:
        body += b"\x00\x00"  # include cluster/topic authorized operations = false
    reader = _request(sock, METADATA, version, 2, body)
    reader.int32()  # throttle_time_ms (v3+)
    brokers = []
    for _ in range(reader.int32()):
        node_id = reader.int32()
        host = reader.string() or ""
        port = reader.int32()
        rack = reader.string()
        brokers.append(BrokerInfo(node_id, host, port, rack))
    cluster_id = reader.string()
    controller_id = reader.int32()
    return cluster_id, controller_id, brokers


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    servers = []
    for item in bootstrap.split(","):
        item = item.strip()
        if "://" in item:
            item = item.split("://", 1)[1]
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"bad bootstrap server {item!r}: expected host:port")
        servers.append((host.strip("[]") or "127.0.0.1", int(port)))
    if not servers:
        raise ValueError("empty bootstrap server list")
    return servers


def probe(host: str, port: int, timeout: float = 3.0) -> ClusterInfo:
    """One attempt against one server; raises NotReady (or OSError) when not serving."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        version = _metadata_version(sock)
        cluster_id, controller_id, brokers = _metadata(sock, version)
    if not brokers:
        raise NotReady("metadata lists no broker yet")
    return ClusterInfo(f"{host}:{port}", cluster_id, controller_id, version, brokers)


def wait_ready(bootstrap: str, wait: float = 0.0, timeout: float = 3.0) -> ClusterInfo:
    """Probe every server in `bootstrap` until one serves metadata or `wait` seconds pass."""
    servers = parse_bootstrap(bootstrap)
    deadline = time.monotonic() + wait
    last: Exception | None = None
    while True:
        for host, port in servers:
            try:
                return probe(host, port, timeout)
            except (OSError, NotReady) as exc:
                last = exc
        if time.monotonic() >= deadline:
            raise NotReady(f"{bootstrap}: not serving metadata ({last})")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", "-b", default="127.0.0.1:9092")
    parser.add_argument("--wait", type=float, default=0.0, help="retry for this many seconds")
    parser.add_argument("--timeout", type=float, default=3.0, help="socket timeout per try")
    parser.add_argument("--json", action="store_true", help="print the cluster info as JSON")
    parser.add_argument("--quiet", "-q", action="store_true")
    args = parser.parse_args(argv)
    try:
        info = wait_ready(args.bootstrap, args.wait, args.timeout)
    except ValueError as exc:
        print(f"kafka_ready: {exc}", file=sys.stderr)
        return 2
    except NotReady as exc:
        if not args.quiet:
            print(f"kafka_ready: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(info)))
    elif not args.quiet:
        brokers = ", ".join(f"{b.node_id}@{b.host}:{b.port}" for b in info.brokers)
        print(
            f"serving: {info.bootstrap} cluster_id={info.cluster_id} "
            f"brokers=[{brokers}] (Metadata v{info.metadata_version})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
