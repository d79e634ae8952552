"""put / get / head of a 3 MB object with aiobotocore and with obstore, against a local S3 server.

    infra/s3.sh up && eval "$(infra/s3.sh env)"
    nice -n 19 .venv/bin/python benchmarks/storage/bench_s3_clients.py [--ops 20] [--rounds 3]

Both clients do what ``pixelpipe.storage.s3`` needs: a create-only put (``If-None-Match: *``)
with an ``x-amz-checksum-sha256`` the server verifies, a full get, a head. Rounds alternate the
clients so a busy machine slows both alike. Reported per operation: wall time (median and p90)
and the CPU time this process spent (``time.process_time`` counts every thread, obstore's
Rust runtime too), which is what a worker sharing its cores with the image processes pays.
Needs ``pip install aiobotocore obstore`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

SIZE = 3 * 1024 * 1024


def summary(walls: list[float], cpu: float) -> dict[str, float]:
    walls = sorted(walls)
    return {
        "median_ms": round(statistics.median(walls) * 1000, 2),
        "p90_ms": round(walls[int(0.9 * (len(walls) - 1))] * 1000, 2),
        "cpu_ms": round(cpu / len(walls) * 1000, 2),
    }


async def timed_async(n: int, op: Callable[[int], Awaitable[Any]]) -> tuple[list[float], float]:
    walls = []
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        await op(i)
        walls.append(time.perf_counter() - t0)
    return walls, time.process_time() - cpu0


def timed_sync(n: int, op: Callable[[int], Any]) -> tuple[list[float], float]:
    walls = []
    cpu0 = time.process_time()
    for i in range(n):
        t0 = time.perf_counter()
        op(i)
        walls.append(time.perf_counter() - t0)
    return walls, time.process_time() - cpu0


async def bench_aiobotocore(endpoint: str, bucket: str, data: bytes, n: int,
                            run: str) -> dict[str, tuple[list[float], float]]:
    from aiobotocore.session import get_session
    from botocore.config import Config

    checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
    config = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=5, read_timeout=30)
    out = {}
    async with get_session().create_client("s3", endpoint_url=endpoint, config=config) as client:
        async def put(i: int) -> None:
            await client.put_object(Bucket=bucket, Key=f"bench/{run}/boto-{i}", Body=data,
                                    IfNoneMatch="*", ChecksumAlgorithm="SHA256",
                                    ChecksumSHA256=checksum)

        async def get(i: int) -> None:
            response = await client.get_object(Bucket=bucket, Key=f"bench/{run}/boto-{i}")
            async with response["Body"] as body:
                assert len(await body.read()) == len(data)

        async def head(i: int) -> None:
            response = await client.head_object(Bucket=bucket, Key=f"bench/{run}/boto-{i}")
            assert response["ContentLength"] == len(data)

        await put(-1)  # the first request opens the connection pool and loads the models
        out["put"] = await timed_async(n, put)
        out["get"] = await timed_async(n, get)
        out["head"] = await timed_async(n, head)
    return out


def obstore_store(endpoint: str, bucket: str) -> Any:
    from obstore.store import S3Store

    return S3Store(
        bucket, endpoint=endpoint, virtual_hosted_style_request=False,
        checksum_algorithm="sha256",
        client_options={"allow_http": True, "timeout": "30s", "connect_timeout": "5s"},
        retry_config={"max_retries": 3, "retry_timeout": timedelta(seconds=20),
                      "backoff": {"init_backoff": timedelta(milliseconds=100),
                                  "max_backoff": timedelta(seconds=2), "base": 2}},
    )


async def bench_obstore_async(endpoint: str, bucket: str, data: bytes, n: int,
                              run: str) -> dict[str, tuple[list[float], float]]:
    import obstore

    store = obstore_store(endpoint, bucket)

    async def put(i: int) -> None:
        await obstore.put_async(store, f"bench/{run}/obs-{i}", data, mode="create")

    async def get(i: int) -> None:
        result = await obstore.get_async(store, f"bench/{run}/obs-{i}")
        assert len(await result.bytes_async()) == len(data)

    async def head(i: int) -> None:
        assert (await obstore.head_async(store, f"bench/{run}/obs-{i}"))["size"] == len(data)

    await put(-1)
    return {"put": await timed_async(n, put), "get": await timed_async(n, get),
            "head": await timed_async(n, head)}


def bench_obstore_sync(endpoint: str, bucket: str, data: bytes, n: int,
                       run: str) -> dict[str, tuple[list[float], float]]:
    import obstore

    store = obstore_store(endpoint, bucket)

    def put(i: int) -> None:
        obstore.put(store, f"bench/{run}/obsync-{i}", data, mode="create")

    def get(i: int) -> None:
        assert len(obstore.get(store, f"bench/{run}/obsync-{i}").bytes()) == len(data)

    def head(i: int) -> None:
        assert obstore.head(store, f"bench/{run}/obsync-{i}")["size"] == len(data)

    put(-1)
    return {"put": timed_sync(n, put), "get": timed_sync(n, get), "head": timed_sync(n, head)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=20, help="operations of each kind per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bucket", default="pixelpipe")
    parser.add_argument("--endpoint", default=os.environ.get("PIXELPIPE_S3_ENDPOINT",
                                                             "http://127.0.0.1:7070"))
    args = parser.parse_args()
    data = os.urandom(SIZE)
    totals: dict[str, dict[str, tuple[list[float], float]]] = {}

    def add(client: str, result: dict[str, tuple[list[float], float]]) -> None:
        into = totals.setdefault(client, {})
        for op, (walls, cpu) in result.items():
            old = into.get(op, ([], 0.0))
            into[op] = (old[0] + walls, old[1] + cpu)

    for r in range(args.rounds):
        run = f"{uuid.uuid4().hex[:8]}-{r}"
        add("aiobotocore", asyncio.run(
            bench_aiobotocore(args.endpoint, args.bucket, data, args.ops, run)))
        add("obstore (async)", asyncio.run(
            bench_obstore_async(args.endpoint, args.bucket, data, args.ops, run)))
        add("obstore (sync, in a thread)",
            bench_obstore_sync(args.endpoint, args.bucket, data, args.ops, run))

    report = {client: {op: summary(*value) for op, value in ops.items()}
              for client, ops in totals.items()}
    print(f"{SIZE} bytes, {args.rounds} rounds x {args.ops} ops, endpoint {args.endpoint}")
    print(f"{'client':30} {'op':5} {'median ms':>10} {'p90 ms':>8} {'cpu ms/op':>10}")
    for client, ops in report.items():
        for op, row in ops.items():
            print(f"{client:30} {op:5} {row['median_ms']:10.2f} {row['p90_ms']:8.2f} "
                  f"{row['cpu_ms']:10.2f}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
