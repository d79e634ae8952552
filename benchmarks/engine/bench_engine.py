"""Benchmark pixelpipe's imaging engine against libvips (pyvips) and Pillow.

Same photos, single core, one run. Every (library, case) pair is measured in a fresh
subprocess pinned to one CPU: median wall time of ``--rounds`` rounds (after one warm-up)
and the process's peak RSS (``VmHWM``), also shown as growth over the RSS after imports.

    .venv/bin/python benchmarks/engine/bench_engine.py --rounds 9 --out benchmarks/engine/RESULTS.md

Inputs are made in a temporary directory from ../shared/data/photos beside the repository (never copied into
the repository): the 12 MP and 6 MP photos as they are, the 6 MP photo as PNG, and a 4K
(3840x2160) JPEG cut from the 12 MP photo.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PHOTOS = Path(
    os.environ.get(
        "PIXELPIPE_PHOTOS", Path(__file__).resolve().parents[3] / "shared" / "data" / "photos"
    )
)
LIBS = ("pixelpipe", "libvips", "pillow", "decode-floor")

# case -> (input key, description)
CASES: dict[str, tuple[str, str]] = {
    "thumb-12mp": ("jpeg12", "12 MP JPEG -> 800 px JPEG q85"),
    "thumb-6mp": ("jpeg6", "6 MP JPEG -> 800 px JPEG q85"),
    "png-webp": ("png6", "6 MP PNG -> WebP q80 (same size)"),
    "4k-avif": ("jpeg4k", "4K JPEG -> AVIF q60, speed 8 / effort 1 (same size)"),
    "three-12mp": ("jpeg12", "12 MP JPEG -> 200 px JPEG q80 + 800 px WebP q80 + 1600 px JPEG q85"),
    "three-6mp": ("jpeg6", "6 MP JPEG -> 200 px JPEG q80 + 800 px WebP q80 + 1600 px JPEG q85"),
    "three-12mp-e2": ("jpeg12", "12 MP JPEG -> the same three, WebP at effort 2 on every side"),
    "three-6mp-e2": ("jpeg6", "6 MP JPEG -> the same three, WebP at effort 2 on every side"),
}

#: the three renditions of one upload (issue 15): (long side, format, quality)
THREE = ((200, "jpeg", 80), (800, "webp", 80), (1600, "jpeg", 85))
#: libwebp's default method (libvips ``effort``, Pillow ``method``), and the lower one the
#: ``-e2`` cases ask of every library alike
WEBP_EFFORT = 4
LOW_WEBP_EFFORT = 2


def _webp_effort(case: str) -> int:
    return LOW_WEBP_EFFORT if case.endswith("-e2") else WEBP_EFFORT


def _single_core() -> None:
    os.environ["VIPS_CONCURRENCY"] = "1"
    os.environ["OMP_NUM_THREADS"] = "1"
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _rss_mb() -> float:
    # VmHWM is this process's own high-water mark: unlike ru_maxrss it does not inherit the
    # driver's peak across fork/exec
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- one library's implementation of each case ---------------------------------------------


def _pixelpipe(case: str, path: str) -> Callable[[], bytes] | None:
    from pixelpipe.imaging import parse_operations, render
    from pixelpipe.imaging._cv import single_thread

    single_thread()
    specs = {
        "thumb-12mp": ["resize:width=800,height=800", "format:type=jpeg,quality=85"],
        "thumb-6mp": ["resize:width=800,height=800", "format:type=jpeg,quality=85"],
        "png-webp": ["format:type=webp,quality=80"],
        "4k-avif": ["format:type=avif,quality=60,speed=8"],
    }
    if case.startswith("three"):
        from pixelpipe.imaging.engine import RenderResult, render_many

        effort = _webp_effort(case)
        renditions = [parse_operations([f"resize:width={side},height={side}",
                                        f"format:type={fmt},quality={q}"
                                        + (f",effort={effort}" if fmt == "webp" else "")])
                      for side, fmt, q in THREE]

        def three() -> bytes:
            out = render_many(path, renditions)
            assert all(isinstance(r, RenderResult) for r in out), out
            return b"".join(r.data for r in out if isinstance(r, RenderResult))

        return three
    ops = parse_operations(specs[case])
    return lambda: render(path, ops).data


def _decode_floor(case: str, path: str) -> Callable[[], bytes] | None:
    """The floor: only the shrink-on-load decode the engine itself would do (no resize,
    encode or verify). Entropy-decoding every coefficient of the JPEG is unavoidable."""
    from pixelpipe.imaging import parse_operations
    from pixelpipe.imaging._cv import cv2, single_thread
    from pixelpipe.imaging.engine import shrink_factor
    from pixelpipe.imaging.formats import probe

    single_thread()
    if not (case.startswith("thumb") or case.startswith("three")):
        return None
    side = 1600 if case.startswith("three") else 800
    data = Path(path).read_bytes()
    header = probe(data)
    ops = parse_operations([f"resize:width={side},height={side}"])
    factor = shrink_factor(header, ops, header.width, header.height)
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}[factor]
    import numpy as np

    def decode() -> bytes:
        image = cv2.imdecode(np.frombuffer(Path(path).read_bytes(), np.uint8),
                             flag | cv2.IMREAD_IGNORE_ORIENTATION)
        return bytes(image[:1, :1].tobytes())

    return decode


def _libvips(case: str, path: str) -> Callable[[], bytes] | None:
    import pyvips

    pyvips.cache_set_max(0)  # no result cache between rounds
    if case.startswith("three"):
        # what imgproxy or thumbor do for three sizes: three requests, three thumbnails
        effort = _webp_effort(case)

        def three() -> bytes:
            return b"".join(pyvips.Image.thumbnail(path, side).write_to_buffer(
                f".{'jpg' if fmt == 'jpeg' else fmt}", Q=q,
                **({"effort": effort} if fmt == "webp" else {})) for side, fmt, q in THREE)

        return three
    if case.startswith("thumb"):
        return lambda: pyvips.Image.thumbnail(path, 800).write_to_buffer(".jpg", Q=85)
    if case == "png-webp":
        return lambda: pyvips.Image.new_from_file(path, access="sequential").write_to_buffer(
            ".webp", Q=80
        )
    if case == "4k-avif":
        try:
            pyvips.Operation.new_from_name("heifsave_buffer")
        except pyvips.Error:
            return None
        return lambda: pyvips.Image.new_from_file(path, access="sequential").write_to_buffer(
            ".avif", Q=60, effort=1
        )
    return None


def _pillow(case: str, path: str) -> Callable[[], bytes] | None:
    import io

    from PIL import Image, features

    def thumb() -> bytes:
        with Image.open(path) as im:
            im.draft("RGB", (800, 800))
            w, h = im.size
            s = 800 / max(w, h)
            small = im.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC,
                              reducing_gap=2.0)
        out = io.BytesIO()
        small.save(out, "JPEG", quality=85)
        return out.getvalue()

    def convert(fmt: str, **options: Any) -> Callable[[], bytes]:
        def run() -> bytes:
            with Image.open(path) as im:
                out = io.BytesIO()
                im.save(out, fmt, **options)
            return out.getvalue()

        return run

    def three() -> bytes:
        parts = []
        for side, fmt, q in THREE:
            with Image.open(path) as im:
                im.draft("RGB", (side, side))
                w, h = im.size
                s = side / max(w, h)
                small = im.resize((round(w * s), round(h * s)), Image.Resampling.BICUBIC,
                                  reducing_gap=2.0)
            out = io.BytesIO()
            extra = {"method": _webp_effort(case)} if fmt == "webp" else {}
            small.save(out, fmt.upper(), quality=q, **extra)
            parts.append(out.getvalue())
        return b"".join(parts)

    if case.startswith("three"):
        return three
    if case.startswith("thumb"):
        return thumb
    if case == "png-webp":
        return convert("WEBP", quality=80)
    if case == "4k-avif":
        if not features.check("avif"):
            return None
        return convert("AVIF", quality=60, speed=8)
    return None


def worker(lib: str, case: str, path: str, rounds: int, malloc: str) -> dict[str, Any]:
    """Runs in a fresh process: import, warm up once, time ``rounds`` rounds."""
    _single_core()
    if malloc == "kept":  # what the pool's image processes do, given to every side alike
        from pixelpipe.imaging.memory import keep_freed_buffers

        if not keep_freed_buffers():
            raise SystemExit("--malloc kept needs glibc")
    make = {"pixelpipe": _pixelpipe, "libvips": _libvips, "pillow": _pillow,
            "decode-floor": _decode_floor}[lib]
    job = make(case, path)
    if job is None:
        return {"skipped": "not supported by this build"}
    baseline = _rss_mb()
    out = job()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        out = job()
        times.append((time.perf_counter() - start) * 1000.0)
    peak = _rss_mb()
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "peak_rss_mb": peak,
        "rss_growth_mb": peak - baseline,
        "out_kb": len(out) / 1024.0,
    }


# --- the driver ----------------------------------------------------------------------------


def make_inputs(tmp: Path) -> dict[str, Path]:
    from pixelpipe.imaging._cv import cv2

    jpeg12 = PHOTOS / "012mp-bus.jpg"
    jpeg6 = PHOTOS / "006mp-cathedral.jpg"
    png6 = tmp / "cathedral-6mp.png"
    cv2.imwrite(str(png6), cv2.imread(str(jpeg6)))
    bus = cv2.imread(str(jpeg12))
    h, w = bus.shape[:2]
    crop_h = w * 9 // 16
    top = (h - crop_h) // 2
    four_k = cv2.resize(bus[top : top + crop_h], (3840, 2160), interpolation=cv2.INTER_AREA)
    jpeg4k = tmp / "bus-4k.jpg"
    cv2.imwrite(str(jpeg4k), four_k, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return {"jpeg12": jpeg12, "jpeg6": jpeg6, "png6": png6, "jpeg4k": jpeg4k}


def run_all(rounds: int, only: set[str] | None = None,
            malloc: str = "kept") -> dict[str, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="pixelpipe-bench-") as tmp:
        inputs = make_inputs(Path(tmp))
        for case, (key, _desc) in CASES.items():
            if only and case not in only:
                continue
            slow = case in ("png-webp", "4k-avif")
            n = max(3, rounds // 2) if slow else rounds
            results[case] = {}
            for lib in LIBS:
                cmd = [sys.executable, __file__, "--worker", lib, case, str(inputs[key]), str(n),
                       "--malloc", malloc]
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                                      check=False)
                if proc.returncode != 0:
                    results[case][lib] = {"skipped": proc.stderr.strip().splitlines()[-1]}
                else:
                    results[case][lib] = json.loads(proc.stdout.strip().splitlines()[-1])
                results[case][lib]["rounds"] = n
                print(case, lib, results[case][lib], file=sys.stderr)
    return results


def to_markdown(results: dict[str, dict[str, dict[str, Any]]], command: str,
                malloc: str = "kept") -> str:
    import cv2
    import PIL
    import pyvips

    lines = [
        "# Engine benchmark",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; every run pinned to one core "
        f"(OpenCV {cv2.__version__} with `setNumThreads(1)`, libvips "
        f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)} with "
        f"`VIPS_CONCURRENCY=1`, Pillow {PIL.__version__}).",
        "Each cell: a fresh process per library and case, one warm-up, then the median of the "
        "rounds. Peak RSS is `VmHWM` (the high-water mark) of that process; growth is peak minus the RSS after "
        "imports (what the work itself cost). pixelpipe's time includes its safety work: "
        "header checks, and decoding the output again to verify it.",
        ("Every side's process keeps its freed buffers (`--malloc kept`: glibc's trim and mmap "
         "thresholds as `pixelpipe.imaging.memory` sets them in the pool's image processes)."
         if malloc == "kept" else
         "Every side's process runs with glibc's default malloc settings (`--malloc default`)."),
        "",
        "| case | library | median ms | x libvips time | peak RSS MB | RSS growth MB "
        "| x libvips growth | output KB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for case, per_lib in results.items():
        vips = per_lib.get("libvips", {})
        for lib, r in per_lib.items():
            if "skipped" in r:
                lines.append(f"| {CASES[case][1]} | {lib} | skipped: {r['skipped']} | | | | | |")
                continue
            ratio_t = (f"{r['median_ms'] / vips['median_ms']:.2f}"
                       if "median_ms" in vips else "n/a")
            ratio_m = (f"{r['rss_growth_mb'] / vips['rss_growth_mb']:.2f}"
                       if vips.get("rss_growth_mb") else "n/a")
            lines.append(
                f"| {CASES[case][1]} | {lib} | {r['median_ms']:.1f} | {ratio_t} "
                f"| {r['peak_rss_mb']:.0f} | {r['rss_growth_mb']:.0f} | {ratio_m} "
                f"| {r['out_kb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker", nargs=4, metavar=("LIB", "CASE", "PATH", "ROUNDS"))
    parser.add_argument("--cases", default="", help="comma-separated cases (default: all)")
    parser.add_argument(
        "--malloc", choices=("kept", "default"), default="kept",
        help="kept: every side's process keeps its freed buffers, as pixelpipe's image "
             "processes do (pixelpipe.imaging.memory); default: glibc's defaults everywhere")
    args = parser.parse_args()
    if args.worker:
        lib, case, path, rounds = args.worker
        print(json.dumps(worker(lib, case, path, int(rounds), args.malloc)))
        return
    results = run_all(args.rounds, {c for c in args.cases.split(",") if c} or None,
                      args.malloc)
    command = "python " + " ".join(["benchmarks/engine/bench_engine.py", *sys.argv[1:]])
    text = to_markdown(results, command, args.malloc)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
