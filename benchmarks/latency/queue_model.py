"""What the latency goal asks of two image processes: an M/G/2 queue, simulated.

Poisson arrivals at ``rate`` uploads/s, two servers taking uploads first come first served,
service times alternating between the two photographs (the benchmark publishes them in turn)
with +-10 % uniform jitter, plus a fixed ``overhead`` per upload (source check, store, Kafka
hops). No machine, no Kafka: only the queueing that two servers of a given speed cannot
avoid at a given load, so a measured p99 can be read against it.

    python benchmarks/latency/queue_model.py --photo-ms 16.9,32.9 --loads 0.3,0.5,0.7,0.9
    python benchmarks/latency/queue_model.py --photo-ms 23.6,45.9 --rate 39.5 --overhead-ms 10

``--photo-ms``: per-photo service times (ms), e.g. the bare renders' medians or the render
times measured inside the pipeline; ``--loads``: fractions of this model's own capacity
(2 / mean service time); ``--rate``: an absolute arrival rate instead.
"""

from __future__ import annotations

import argparse
import heapq
import random


def simulate(rate: float, photo_s: list[float], overhead_s: float, servers: int = 2,
             uploads: int = 200_000, seed: int = 1) -> tuple[float, float, float]:
    """(p50, p99, mean) of arrival -> completion + ``overhead_s``, in ms."""
    rng = random.Random(seed)
    free = [0.0] * servers  # when each server is next free (a heap)
    now, latencies = 0.0, []
    for i in range(uploads):
        now += rng.expovariate(rate)
        service = photo_s[i % len(photo_s)] * (1 + rng.uniform(-0.1, 0.1))
        start = max(now, heapq.heappop(free))
        heapq.heappush(free, start + service)
        latencies.append(start + service - now + overhead_s)
    latencies.sort()
    return (latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000,
            sum(latencies) / len(latencies) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo-ms", default="16.9,32.9")
    parser.add_argument("--loads", default="0.3,0.5,0.7,0.9")
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--overhead-ms", type=float, default=0.0)
    parser.add_argument("--servers", type=int, default=2)
    args = parser.parse_args()
    photo_s = [float(x) / 1000 for x in args.photo_ms.split(",")]
    capacity = args.servers / (sum(photo_s) / len(photo_s))
    print(f"service {args.photo_ms} ms per photo, {args.servers} servers: capacity "
          f"{capacity:.1f} uploads/s; overhead {args.overhead_ms:g} ms")
    rates = ([args.rate] if args.rate else
             [float(x) * capacity for x in args.loads.split(",")])
    print("| rate /s | utilisation | p50 ms | p99 ms | mean ms |")
    print("|---:|---:|---:|---:|---:|")
    for rate in rates:
        p50, p99, mean = simulate(rate, photo_s, args.overhead_ms / 1000, args.servers)
        print(f"| {rate:.1f} | {rate / capacity:.0%} | {p50:.0f} | {p99:.0f} | {mean:.0f} |")


if __name__ == "__main__":
    main()
