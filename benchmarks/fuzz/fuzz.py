"""Fuzz the event codec, the operation-spec parser and the decode guards with hypothesis.

    nice -n 19 .venv/bin/python benchmarks/fuzz/fuzz.py --minutes 30 --seed 1 \\
        --results benchmarks/fuzz/RESULTS.md

The budget is split over the targets (codec 25 %, spec 25 %, decode 50 %); each target runs
hypothesis in chunks of ``max_examples`` with seeds ``--seed``, ``--seed + 1``, ... until its
share is spent. Oracles: see ``fuzz_oracles.py``. A failing example is reduced by hypothesis,
saved in ``corpus/<target>/`` under its sha256 and its signature (exception type and the
innermost pixelpipe frame) is then known: later examples of the same bug do not stop the run,
new bugs do. The hypothesis database lives in ``benchmarks/fuzz/.hypothesis`` (git-ignored),
so interesting examples are tried first by the next run. The corpus is replayed first, and by
``tests/unit/test_fuzz_corpus.py``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzz_oracles as oracles

SHARES = {"codec": 0.25, "spec": 0.25, "decode": 0.5}
CHUNK = {"codec": 1000, "spec": 1000, "decode": 200}
#: how long hypothesis may keep shrinking a finding past a target's share
SHRINK_GRACE_S = 60.0
MAX_INPUT = 16 * 1024


# --------------------------------------------------------------------------- strategies

JSON_LEAF = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=24))
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner,
                                                                  max_size=5),
    max_leaves=24,
)
ODD_VALUES = st.sampled_from([
    "", " ", "\t\n", "\x00", "Z", "2026-13-40T99:99:99Z", "9999-12-31T23:59:59.999999+23:59",
    "0001-01-01", "nan", "-1", "1e999", "\ud7ff\ufffd", "a" * 300, -1, 0, 2**63 - 1, 2**64 - 1,
    -(2**63), 1e308, -0.0, True, False, None, [], {}, [None], {"op": None},
])
DEEP = "\x00DEEP\x00"


@st.composite
def mutated_event(draw: st.DrawFn) -> bytes:
    """A valid event with 1-4 fields replaced, deleted, added or nested very deep."""
    events = oracles.valid_events()
    event: Any = copy.deepcopy(events[draw(st.sampled_from(sorted(events)))])
    deep: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        node = event
        while True:  # walk down to a container
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if not isinstance(child, dict | list) or not child or draw(st.booleans()):
                break
            node = child
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        action = draw(st.sampled_from(["replace", "odd", "delete", "add", "deep"]))
        if not keys or action == "add":
            if isinstance(node, dict):
                node[draw(st.text(max_size=12))] = draw(JSON_VALUE)
            else:
                node.append(draw(JSON_VALUE))
            continue
        key = draw(st.sampled_from(keys))
        if action == "delete":
            del node[key]
        elif action == "replace":
            node[key] = draw(JSON_VALUE)
        elif action == "odd":
            node[key] = draw(ODD_VALUES)
        else:
            opener = draw(st.sampled_from(["[", '{"a":']))
            depth = draw(st.sampled_from([64, 200, 254, 255, 300, 500, 900, 990, 1000, 1023,
                                          1024, 1025]) | st.integers(1, 1100))
            closer = "]" if opener == "[" else "}"
            inner = "" if opener == "[" else "1"
            deep.append(opener * depth + inner + closer * depth)
            node[key] = DEEP
    raw = orjson.dumps(event)
    for text in deep:
        raw = raw.replace(orjson.dumps(DEEP), text.encode(), 1)
    return raw


@st.composite
def byte_mutation(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 5))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=8))
            continue
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "int"]))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[at] = draw(st.integers(0, 255))
        elif action == "truncate":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            size = draw(st.sampled_from([1, 2, 4]))
            value = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF,
                                          0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])
                         | st.integers(0, 2**32 - 1)) % (1 << (8 * size))
            order = draw(st.sampled_from(["big", "little"]))
            data[at : at + size] = value.to_bytes(size, order)
    return bytes(data[:MAX_INPUT])


def codec_inputs() -> st.SearchStrategy[bytes]:
    valid = [orjson.dumps(e) for e in oracles.valid_events().values()]
    return st.one_of(
        st.binary(max_size=2048),
        JSON_VALUE.map(orjson.dumps),
        mutated_event(),
        mutated_event(),
        st.sampled_from(valid).flatmap(byte_mutation),
    )


OP_NAMES = ["resize", "crop", "rotate", "auto-orient", "flip", "blur", "sharpen", "grayscale",
            "watermark", "format", "strip", "debug-sleep", "greyscale", "autoorient",
            "auto_orient", "rotation", " Resize ", "GRAYSCALE", ""]
PARAM_NAMES = ["width", "height", "fit", "gravity", "enlarge", "background", "x", "y", "angle",
               "axis", "sigma", "amount", "threshold", "image", "margin", "opacity", "scale",
               "type", "quality", "progressive", "optimize", "lossless", "compression", "speed",
               "seconds", "WIDTH", "op", ""]
SPEC_TEXT = st.text(alphabet=st.sampled_from(list("0123456789abcdefxyz.-+_#:,= \t\nEeINnFf"))
                    | st.characters(), max_size=16)
PARAM_VALUE = st.one_of(
    st.integers(-70_000, 70_000), st.integers(), st.integers(-(10**400), 10**400),
    st.floats(), st.booleans(), st.none(), SPEC_TEXT,
    st.sampled_from(["inside", "cover", "contain", "exact", "fill", "center", "centre",
                     "northeast", "jpeg", "jpg", "png", "webp", "avif", "true", "off",
                     "white", "transparent", "#ff000080", "00ff00", "logo.png", "h", "both"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                          max_size=2),
)


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _params_of(name: str) -> list[str]:
    from pixelpipe.imaging.ops import ALIASES, REGISTRY

    key = name.strip().lower()
    opdef = REGISTRY.get(ALIASES.get(key, key))
    return [p.name for p in opdef.params] if opdef else []


@st.composite
def op_dict(draw: st.DrawFn) -> dict[str, Any]:
    item: dict[str, Any] = {"op": draw(st.sampled_from(OP_NAMES) | st.text(max_size=10))}
    own = _params_of(item["op"])
    for _ in range(draw(st.integers(0, 5))):
        keys = st.sampled_from(own) | st.sampled_from(PARAM_NAMES) if own else st.sampled_from(
            PARAM_NAMES)
        item[draw(keys | st.text(max_size=6))] = draw(PARAM_VALUE)
    if draw(st.integers(0, 9)) == 0:
        item["op"] = draw(JSON_VALUE)
    return item


@st.composite
def op_text(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(OP_NAMES) | st.text(max_size=10))
    own = _params_of(name) or PARAM_NAMES
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        key = draw(st.sampled_from(own) | st.sampled_from(PARAM_NAMES) | st.text(max_size=6))
        value = draw(PARAM_VALUE.map(_text_of) | SPEC_TEXT)
        parts.append(f"{key}={value}" if draw(st.integers(0, 9)) else key)
    return name + (":" + ",".join(parts) if parts or draw(st.booleans()) else "")


def spec_inputs() -> st.SearchStrategy[Any]:
    one = op_text() | op_dict()
    presets = st.sampled_from(["thumbnail", "web-large", "avatar", "webp-fallback", "",
                               "Thumbnail", "nope"]) | st.text(max_size=8)
    rendition = st.fixed_dictionaries(
        {}, optional={"preset": presets | st.none(), "operations": st.lists(one, max_size=4)})
    return st.one_of(st.text(), one, one, st.lists(one, max_size=4), rendition, JSON_VALUE)


_ANCHORS = (b"IHDR", b"IDAT", b"IEND", b"eXIf", b"\xff\xc0", b"\xff\xc2", b"\xff\xc4",
            b"\xff\xda", b"\xff\xdb", b"\xff\xe1", b"ftyp", b"meta", b"hdlr", b"pitm", b"iloc",
            b"iinf", b"infe", b"iref", b"iprp", b"ipco", b"ipma", b"ispe", b"irot", b"imir",
            b"clap", b"hvcC", b"av1C", b"mdat", b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"Exif",
            b"MM\x00*", b"II*\x00", b"NETSCAPE", b"\x21\xf9", b"\x2c\x00")
MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
          b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00mif1", b"\x00\x00\x00\x18ftypheic\x00\x00"
          b"\x00\x00mif1", b"II*\x00", b"MM\x00*", b"GIF89a", b"BM"]


@st.composite
def field_edit(draw: st.DrawFn, base: bytes) -> bytes:
    """Overwrite bytes next to a structural marker (a chunk/box/segment header field)."""
    data = bytearray(base)
    anchors = [i for token in _ANCHORS for i in _find_all(base, token)] or [0]
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.sampled_from(anchors)) + draw(st.integers(-4, 20))
        at = min(max(at, 0), max(len(data) - 1, 0))
        size = draw(st.sampled_from([1, 2, 4]))
        value = draw(st.sampled_from([0, 1, 2, 0x7F, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF,
                                      0x80000000, 0xFFFFFFFF, 4096, 65535, 9, 100]))
        data[at : at + size] = (value % (1 << (8 * size))).to_bytes(
            size, draw(st.sampled_from(["big", "little"])))
    return bytes(data[:MAX_INPUT])


def _find_all(data: bytes, token: bytes) -> list[int]:
    found, at = [], data.find(token)
    while at >= 0 and len(found) < 8:
        found.append(at)
        at = data.find(token, at + 1)
    return found


def decode_inputs(samples: dict[str, bytes]) -> st.SearchStrategy[bytes]:
    bases = st.sampled_from(sorted(samples)).map(samples.__getitem__)
    splice = st.tuples(bases, bases, st.floats(0, 1), st.floats(0, 1)).map(
        lambda t: t[0][: int(len(t[0]) * t[2])] + t[1][int(len(t[1]) * t[3]) :])
    return st.one_of(
        bases.flatmap(byte_mutation), bases.flatmap(byte_mutation),
        bases.flatmap(field_edit), bases.flatmap(field_edit),
        bases.map(lambda b: b[: len(b) // 2]), splice,
        st.tuples(st.sampled_from(MAGICS), st.binary(max_size=512)).map(b"".join),
        st.binary(max_size=512),
    )


# --------------------------------------------------------------------------- the run


@dataclass
class Stats:
    examples: int = 0
    distinct: int = 0
    seconds: float = 0.0
    chunks: int = 0
    repeats: int = 0  # examples of an already known finding
    findings: list[dict[str, str]] = field(default_factory=list)
    corpus_replayed: int = 0
    corpus_failures: list[str] = field(default_factory=list)


class _Failure(Exception):
    pass


def run_target(name: str, strategy: st.SearchStrategy[Any], to_bytes: Callable[[Any], bytes],
               oracle: Callable[[bytes], oracles.Finding | None], budget_s: float,
               first_seed: int, database: DirectoryBasedExampleDatabase, stats: Stats,
               known: set[str]) -> None:
    cache: dict[bytes, oracles.Finding | None] = {}
    last: list[tuple[bytes, oracles.Finding]] = []
    end = time.monotonic() + budget_s

    def body(value: Any) -> None:
        data = to_bytes(value)
        digest = hashlib.sha256(data).digest()
        stats.examples += 1
        if digest in cache:
            finding = cache[digest]
        elif time.monotonic() > end + SHRINK_GRACE_S:
            return  # past the budget: new inputs are not run (shrinking winds down)
        else:
            finding = cache[digest] = oracle(data)
            stats.distinct += 1
        if finding is None:
            return
        if finding.signature in known:
            stats.repeats += 1
            return
        last.append((data, finding))
        raise _Failure(finding.signature)

    chunk = 0
    started = time.monotonic()
    while time.monotonic() < end:
        test = settings(
            max_examples=CHUNK[name], deadline=None, database=database,
            report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
            print_blob=False,
        )(hypothesis_seed(first_seed + chunk)(given(strategy)(body)))
        chunk += 1
        try:
            test()
        except _Failure:
            data, finding = last[-1]  # the last failure raised is the reduced one
            path = oracles.save(name, data, suffix=oracles.suffix_of(name))
            known.add(finding.signature)
            stats.findings.append({"signature": finding.signature, "kind": finding.kind,
                                   "file": str(path.relative_to(oracles.HERE)),
                                   "detail": finding.detail[:2000]})
            print(f"  FINDING {finding.signature} -> {path.name}", flush=True)
        except Exception as exc:  # a flaky failure or a hypothesis error: report, go on
            if last:
                data, finding = last[-1]
                path = oracles.save(name, data, suffix=oracles.suffix_of(name))
                known.add(finding.signature)
                stats.findings.append({"signature": finding.signature, "kind": finding.kind,
                                       "file": str(path.relative_to(oracles.HERE)),
                                       "detail": f"({type(exc).__name__}) {finding.detail}"})
            print(f"  hypothesis ended a chunk with {type(exc).__name__}: {exc!s:.200}",
                  flush=True)
        last.clear()
    stats.chunks = chunk
    stats.seconds = time.monotonic() - started


def replay_corpus(name: str, oracle: Callable[[bytes], oracles.Finding | None],
                  stats: Stats, known: set[str]) -> None:
    open_ = oracles.known_open()
    for path in oracles.corpus_files(name):
        stats.corpus_replayed += 1
        finding = oracle(path.read_bytes())
        if finding is not None:
            known.add(finding.signature)
            status = "known open" if f"{name}/{path.name}" in open_ else "REGRESSION"
            stats.corpus_failures.append(f"{path.name}: {status}: {finding.signature}")


def seed_corpus(samples: dict[str, bytes]) -> None:
    """Write the seed inputs: valid and near-valid ones, a few KB per target."""
    for event in oracles.valid_events().values():
        raw = orjson.dumps(event)
        oracles.save("codec", raw, "seed-")
        oracles.save("codec", raw[: len(raw) // 2], "seed-")
    oracles.save("codec", b"", "seed-")
    oracles.save("codec", b"[]", "seed-")
    oracles.save("codec", b'{"schema": "pixelpipe.upload/2"}', "seed-")
    for value in (
        "resize:width=800,height=600,fit=cover", {"op": "resize", "width": 800},
        "rotate:angle=-90", {"op": "rotate", "angle": 30.5, "background": "#ff000080"},
        "crop:x=1,y=2,width=3,height=4", "format:type=jpg,quality=80",
        {"op": "format", "type": "webp", "lossless": True}, "watermark:image=logo.png",
        "sharpen:amount=2,sigma=0.5,threshold=3", "flip:axis=v", "greyscale",
        ["blur:sigma=2", "strip", {"op": "auto-orient"}], {"preset": "thumbnail"},
        {"preset": "nope"}, "resize", "resize:width=0", {"op": "blur", "sigma": "nan"},
    ):
        oracles.save("spec", oracles.dump_json(value), "seed-", ".json")
    for data in samples.values():
        if len(data) <= 8 * 1024:
            oracles.save("decode", data, "seed-")


def write_results(path: Path, args: argparse.Namespace, results: dict[str, Stats],
                  wall_s: float, verdict: str) -> None:
    lines = [
        "# Fuzz run: event codec, operation-spec parser, decode guards",
        "",
        f"Command: `nice -n 19 .venv/bin/python benchmarks/fuzz/fuzz.py --minutes {args.minutes:g}"
        f" --seed {args.seed} --results {args.results}`",
        "",
        f"Host: {platform.node()} ({platform.machine()}, Python {platform.python_version()}),"
        f" {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; wall time {wall_s / 60:.1f} min.",
        "",
        "| target | seconds | examples | distinct inputs run | chunks | corpus replayed"
        " | new findings |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in results.items():
        lines.append(f"| {name} | {s.seconds:.0f} | {s.examples} | {s.distinct} | {s.chunks} "
                     f"| {s.corpus_replayed} | {len(s.findings)} |")
    lines += ["", f"**Verdict: {verdict}**", ""]
    for name, s in results.items():
        for f in s.findings:
            lines.append(f"- {name}: `{f['signature']}` ({f['kind']}), reproducer "
                         f"`benchmarks/fuzz/{f['file']}`")
        for failure in s.corpus_failures:
            lines.append(f"- {name} corpus: {failure}")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="total budget (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(oracles.TARGETS))
    parser.add_argument("--seed-corpus", action="store_true",
                        help="(re)write the seed inputs into corpus/ and exit")
    parser.add_argument("--results", type=Path, default=None,
                        help="write a RESULTS.md (for a real run)")
    parser.add_argument("--json", type=Path, default=None, help="write the report as JSON")
    args = parser.parse_args()
    oracles.env_for_fuzzing()
    samples = oracles.sample_images()
    if args.seed_corpus:
        seed_corpus(samples)
        return 0
    targets = [t for t in args.targets.split(",") if t]
    total = sum(SHARES[t] for t in targets)
    results: dict[str, Stats] = {}
    started = time.monotonic()
    child = oracles.RenderChild()
    try:
        plan: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], bytes],
                              Callable[[bytes], oracles.Finding | None]]] = {
            "codec": (codec_inputs(), bytes, oracles.check_codec),
            "spec": (spec_inputs(), oracles.dump_json,
                     lambda data: oracles.check_spec(oracles.load_json(data))),
            "decode": (decode_inputs(samples), bytes,
                       lambda data: oracles.check_decode(data, child)),
        }
        for name in targets:
            strategy, to_bytes, oracle = plan[name]
            budget = args.minutes * 60 * SHARES[name] / total
            stats = results[name] = Stats()
            known: set[str] = set()
            print(f"{name}: replaying the corpus, then {budget:.0f} s of fuzzing", flush=True)
            replay_corpus(name, oracle, stats, known)
            # one database per target: every chunk's examples are there for the next run
            database = DirectoryBasedExampleDatabase(str(oracles.HERE / ".hypothesis" / name))
            run_target(name, strategy, to_bytes, oracle, budget, args.seed, database, stats,
                       known)
            print(f"{name}: {stats.examples} examples ({stats.distinct} distinct run) in "
                  f"{stats.seconds:.0f} s, {len(stats.findings)} new findings", flush=True)
    finally:
        restarts = child.restarts
        child.close()
    wall = time.monotonic() - started
    crashes = sum(1 for s in results.values() for f in s.findings if f["kind"] != "hang")
    hangs = sum(1 for s in results.values() for f in s.findings if f["kind"] == "hang")
    regressions = [f for s in results.values() for f in s.corpus_failures if "REGRESSION" in f]
    verdict = (f"{crashes} crashes, {hangs} hangs, {len(regressions)} corpus regressions"
               f" ({restarts} render-child restarts)")
    print(f"verdict: {verdict}")
    for name, s in results.items():
        for f in s.findings:
            print(f"  {name}: {f['signature']}: {f['file']}\n    {f['detail'][:400]}")
        for failure in s.corpus_failures:
            print(f"  {name} corpus: {failure}")
    if args.json:
        args.json.write_text(json.dumps({n: s.__dict__ for n, s in results.items()}, indent=1))
    if args.results:
        write_results(args.results, args, results, wall, verdict)
    return 0 if crashes == hangs == len(regressions) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
