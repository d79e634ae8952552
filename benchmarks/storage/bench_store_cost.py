"""The blob store's share of one upload, local directory vs S3 (``pixelpipe.storage``).

    infra/s3.sh up && eval "$(infra/s3.sh env)"
    nice -n 19 .venv/bin/python benchmarks/storage/bench_store_cost.py [--uploads 30]

One "upload" here is what the publisher and a worker do with the store: ``put_source`` of a
3 MB source, ``open_source`` (for S3: HEAD + verified download into the cache; a fresh store
each time, so no cache hit) and ``release_source``, then ``put_output`` of two outputs
(300 KB and 60 KB). Wall time and this process's CPU time per upload.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from pixelpipe.config import Settings
from pixelpipe.storage import BlobStore, open_store
from pixelpipe.storage.local import output_key


def one_upload(store: BlobStore, source: bytes, outputs: list[bytes]) -> None:
    blob = store.put_source(source)
    path = store.open_source(blob.uri, max_bytes=50 * 1024 * 1024)
    assert path.stat().st_size == len(source)
    store.release_source(path)
    for i, data in enumerate(outputs):
        store.put_output(output_key(blob.sha256, f"bench-{i}"), "webp", data)


def run(make: callable, uploads: int) -> dict[str, float]:  # type: ignore[valid-type]
    walls = []
    cpu0 = time.process_time()
    for _ in range(uploads):
        source = os.urandom(3 * 1024 * 1024)  # new bytes: a new source every time
        outputs = [os.urandom(300 * 1024), os.urandom(60 * 1024)]
        store = make()
        t0 = time.perf_counter()
        one_upload(store, source, outputs)
        walls.append(time.perf_counter() - t0)
        store.close()
    cpu = time.process_time() - cpu0
    walls.sort()
    return {"median_ms": round(statistics.median(walls) * 1000, 2),
            "p90_ms": round(walls[int(0.9 * (len(walls) - 1))] * 1000, 2),
            "cpu_ms": round(cpu / uploads * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=30)
    parser.add_argument("--bucket", default="pixelpipe")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pp-store-bench-") as tmp:
        root = Path(tmp)
        local = Settings.from_env({}, data_dir=root / "blobs", state_dir=root / "state")
        s3 = Settings.from_env({"PIXELPIPE_DATA": f"s3://{args.bucket}/bench-{uuid.uuid4().hex[:8]}",
                                "PIXELPIPE_DATADIR": str(root / "state"),
                                "PIXELPIPE_S3_ENDPOINT": os.environ.get("PIXELPIPE_S3_ENDPOINT",
                                                                        "http://127.0.0.1:7070")})
        rows = {}
        for _ in range(2):  # alternate, so a busy machine slows both alike
            for name, settings in (("local", local), ("s3 (versitygw, loopback)", s3)):
                result = run(lambda s=settings: open_store(s), args.uploads // 2)
                rows.setdefault(name, []).append(result)
    print(f"per upload: put_source 3 MB + open_source + put_output 300 KB + 60 KB, "
          f"{args.uploads} uploads")
    print(f"{'store':26} {'median ms':>10} {'p90 ms':>8} {'cpu ms':>8}")
    for name, results in rows.items():
        median = statistics.mean(r["median_ms"] for r in results)
        p90 = statistics.mean(r["p90_ms"] for r in results)
        cpu = statistics.mean(r["cpu_ms"] for r in results)
        print(f"{name:26} {median:10.2f} {p90:8.2f} {cpu:8.2f}")


if __name__ == "__main__":
    main()
