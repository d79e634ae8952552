"""Chaos run for issue 9: many takeovers over thousands of uploads, judged from outside.

Runs the takeover drill of ``tests/takeover_drill.py`` (kill -9 of the only worker, a second
worker joining and leaving, a second worker joining and the first killed) round after round,
then reads the processed and dead-letter topics for every published event id and the uploads
group's lag. Writes a Markdown table.

    infra/kafka.sh up
    .venv/bin/python benchmarks/chaos/bench_takeovers.py --bootstrap 127.0.0.1:9092 \
        --rounds 21 --per-round 150 --out benchmarks/chaos/RESULTS.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from harness import PipelineEnv  # noqa: E402
from images import mixed_images  # noqa: E402
from takeover_drill import ACTIONS, DRILL_ENV, run_drill  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--per-round", type=int, default=150)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pixelpipe-chaos-") as tmp:
        root = Path(tmp)
        sources = [img.path for img in mixed_images(root / "src", 12, max_side=400)
                   if img.path.suffix in (".jpg", ".png", ".webp")]
        pipeline = PipelineEnv(bootstrap=args.bootstrap, root=root)
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        report = run_drill(pipeline, sources, rounds=args.rounds, per_round=args.per_round,
                           say=lambda line: print(line, flush=True), drain_timeout=600)
    print(report.summary())
    rebalances = (report.takeovers["kill9"] + 2 * report.takeovers["join-leave"]
                  + 2 * report.takeovers["join-kill9"])
    wrong = sum(1 for e, s in report.statuses.items()
                if s != ({"corrupt_image"} if e in report.corrupt else {"processed"}))
    lines = [
        "# Chaos: takeovers with uploads in flight (issue 9)",
        "",
        "Command: `.venv/bin/python benchmarks/chaos/bench_takeovers.py --bootstrap "
        f"{args.bootstrap} --rounds {args.rounds} --per-round {args.per_round} "
        "--out benchmarks/chaos/RESULTS.md` (broker from `infra/kafka.sh up`)",
        "",
        f"Run {started} on {platform.machine()}, {platform.python_version()}. Each round "
        f"publishes {args.per_round} uploads (small crops of the shared photos, every "
        f"{40}th truncated on purpose): half, then, once the current worker is part-way "
        "through them, the other half around one action, so every kill, join and leave lands "
        "with uploads fetched and in flight. Actions cycle through "
        f"{', '.join(ACTIONS)}. Workers run with `{DRILL_ENV}` so several uploads are "
        "fetched and in flight at every kill. Outcomes are read from the processed and "
        "dead-letter topics for every published event id; lag is the uploads group's log end "
        "minus committed offset once everything is delivered.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| uploads published | {len(report.published)} |",
        f"| rounds (kill9 / join-leave / join-kill9) | {report.takeovers['kill9']} / "
        f"{report.takeovers['join-leave']} / {report.takeovers['join-kill9']} |",
        f"| kill -9 of a worker with work in flight | "
        f"{report.takeovers['kill9'] + report.takeovers['join-kill9']} |",
        f"| partition takeovers (group rebalances caused) | {rebalances} |",
        f"| **lost (no outcome anywhere)** | **{len(report.lost)}** |",
        f"| outcome different from expected | {wrong} |",
        f"| duplicate outcome records (same event id, harmless) | {report.duplicates} |",
        f"| uploads lag after drain | {sum(report.lag.values())} |",
        f"| wall time | {report.seconds:.0f} s |",
    ]
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0 if not report.lost and not wrong and not sum(report.lag.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
