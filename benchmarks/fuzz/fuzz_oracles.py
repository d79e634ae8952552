"""The fuzz targets and their oracles, shared by ``fuzz.py`` and ``tests/unit/test_fuzz_corpus.py``.

Three targets, each a function of one input that returns ``None`` (an allowed outcome) or a
:class:`Finding` (a crash, a hang, a broken round trip):

- ``codec``: bytes of one Kafka message value, through every decoder in
  :mod:`pixelpipe.schemas.codec`. Allowed: a valid event that re-encodes and decodes back to
  an equal event, or ``MalformedEvent`` (``malformed_event``). ``original_of`` must always give
  a dict that can be embedded (and so encoded) in a dead letter.
- ``spec``: one JSON value (a corpus file is its JSON text) into ``parse_operation`` (strings
  and objects), ``parse_operations`` and ``resolve_rendition`` (lists, rendition objects).
  Allowed: operations or ``InvalidOperation``; a parsed operation's canonical ``spec`` (and
  its JSON form) parses back to an equal operation.
- ``decode``: bytes of a source image into ``probe`` + ``check_limits`` (in-process, under a
  watchdog) and into ``render`` with small :data:`LIMITS` in a child process with an
  address-space cap and a timeout (:class:`RenderChild`). Allowed: a ``RenderResult`` or an
  input error (``corrupt_image``, ``unsupported_format``, ``image_too_large``,
  ``invalid_operation``); a timeout, a dead child, ``MemoryError``, any other code or any
  other exception is a finding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
TARGETS = ("codec", "spec", "decode")
#: files in ``corpus/<target>/`` whose finding is known and not fixed yet: sha-named file ->
#: what is wrong (the replay test expects these to fail, strictly, until they are fixed)
KNOWN_OPEN_FILE = CORPUS / "known_open.json"

#: input errors a render may end in; anything else is a finding
INPUT_ERROR_CODES = frozenset(
    {"corrupt_image", "unsupported_format", "image_too_large", "invalid_operation"}
)
#: per-example watchdog for the in-process targets (a pure-Python loop that never ends)
IN_PROCESS_TIMEOUT_S = 5.0
#: a render of at most LIMITS takes milliseconds; this is the child's hard timeout
RENDER_TIMEOUT_S = 10.0
#: the child's address-space cap (MB): a few hundred MB above what the imports map
CHILD_MEMORY_MB = 1536
#: the operations every fuzzed source is rendered with
RENDER_OPS = ("auto-orient", "resize:width=24,height=24,fit=cover")


@dataclass(frozen=True, slots=True)
class Finding:
    """What went wrong: ``kind`` (crash, hang, dead, roundtrip, ...) and where, as a stable
    ``signature`` (to tell a new bug from another example of a known one), and ``detail``."""

    target: str
    kind: str
    signature: str
    detail: str


def sha_name(data: bytes) -> str:
    """A corpus file's name: the first 16 hex digits of the input's sha256."""
    return hashlib.sha256(data).hexdigest()[:16]


# --------------------------------------------------------------------------- helpers


class Hang(BaseException):  # a BaseException: no `except Exception` swallows it
    """Raised by the in-process watchdog."""


@contextlib.contextmanager
def watchdog(seconds: float = IN_PROCESS_TIMEOUT_S) -> Iterator[None]:
    """Raise :class:`Hang` in the main thread after ``seconds`` (SIGALRM)."""

    def fire(signum: int, frame: Any) -> None:
        raise Hang(f"no result within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _where(exc: BaseException) -> str:
    """The innermost pixelpipe frame of ``exc``'s traceback, as ``file:line`` (else the last)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/pixelpipe/" in f.filename] or frames
    if not ours:
        return "?"
    frame = ours[-1]
    return f"{frame.filename.rsplit('/pixelpipe/', 1)[-1]}:{frame.lineno}"


def _crash(target: str, call: str, exc: BaseException) -> Finding:
    if isinstance(exc, Hang):
        return Finding(target, "hang", f"{target}:{call}:hang", f"{call}: {exc}")
    text = "".join(traceback.format_exception(exc)[-6:])
    return Finding(target, "crash", f"{target}:{call}:{type(exc).__name__}@{_where(exc)}",
                   f"{call} raised {type(exc).__name__}: {exc!s:.300}\n{text}")


# --------------------------------------------------------------------------- codec


def check_codec(raw: bytes) -> Finding | None:
    """Every decoder on ``raw``: an equal event after a re-encode, or ``MalformedEvent``."""
    import orjson

    from pixelpipe.errors import MalformedEvent
    from pixelpipe.schemas import codec

    decoders: tuple[tuple[str, Callable[[bytes | None], Any]], ...] = (
        ("decode_upload", codec.decode_upload),
        ("decode_processed", codec.decode_processed),
        ("decode_deadletter", codec.decode_deadletter),
        ("decode_retry", codec.decode_retry),
        ("decode_json_object", codec.decode_json_object),
    )
    for name, decoder in decoders:
        try:
            with watchdog():
                event = decoder(raw)
        except MalformedEvent as exc:
            if exc.code != "malformed_event" or type(exc) is not MalformedEvent:
                return Finding("codec", "wrong_error", f"codec:{name}:{exc.code}", str(exc))
            continue
        except BaseException as exc:
            return _crash("codec", name, exc)
        try:
            if name == "decode_json_object":
                continue  # a plain JSON object: nothing to re-encode as an event
            with watchdog():
                again = decoder(codec.encode(event))
        except BaseException as exc:
            return _crash("codec", f"{name}->encode->decode", exc)
        if again != event:
            return Finding("codec", "roundtrip", f"codec:{name}:roundtrip",
                           f"{name}: decode(encode(event)) != event: {event!r:.300}")
    try:
        with watchdog():
            original = codec.original_of(raw)
            if not isinstance(original, dict):
                return Finding("codec", "crash", "codec:original_of:not-a-dict",
                               f"original_of gave {type(original).__name__}")
            # a dead letter embeds it two levels down (the letter, then "original")
            orjson.dumps({"original": original})
    except BaseException as exc:
        return _crash("codec", "original_of", exc)
    return None


# --------------------------------------------------------------------------- spec


def load_json(data: bytes) -> Any:
    """A spec corpus file: one JSON value (Python's parser: big integers, NaN allowed)."""
    return json.loads(data.decode("utf-8"))


def dump_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True).encode("ascii")  # lone surrogates escaped


def _same(a: Any, b: Any) -> bool:
    """Equality, with NaN equal to itself (a round trip cannot do better)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _round_trip(op: Any) -> str | None:
    """Why ``op`` does not parse back from its canonical forms (None: it does)."""
    from pixelpipe.imaging.spec import parse_operation

    again = parse_operation(op.spec)
    if again != op:
        return f"spec {op.spec!r} parses to {again.spec!r}"
    if parse_operation(op) != op:
        return f"Operation {op!r} re-parses differently"
    as_json = {"op": op.name, **dict(op.params)}
    from_json = parse_operation(as_json)
    if from_json != op:
        return f"JSON form {as_json!r} parses to {from_json.spec!r}"
    if again.spec != op.spec:
        return f"spec is not stable: {op.spec!r} then {again.spec!r}"
    return None


def check_spec(value: Any) -> Finding | None:
    """``value`` into the parser entry points that accept its shape."""
    from pixelpipe.errors import InvalidOperation
    from pixelpipe.imaging.presets import resolve_rendition
    from pixelpipe.imaging.spec import Operation, parse_operation, parse_operations

    calls: list[tuple[str, Callable[[], Any]]] = []
    if isinstance(value, str | dict):
        calls.append(("parse_operation", lambda: (parse_operation(value),)))
    if isinstance(value, list):
        calls.append(("parse_operations", lambda: parse_operations(value)))
        calls.append(("resolve_rendition", lambda: resolve_rendition(None, value)))
    if isinstance(value, dict) and ("preset" in value or "operations" in value):
        preset = value.get("preset")
        operations = value.get("operations")
        if (preset is None or isinstance(preset, str)) and (
            operations is None or isinstance(operations, list)
        ):
            calls.append(("resolve_rendition",
                          lambda: resolve_rendition(preset, operations)))
    for name, call in calls:
        try:
            with watchdog():
                ops = call()
        except InvalidOperation as exc:
            if exc.code != "invalid_operation":
                return Finding("spec", "wrong_error", f"spec:{name}:{exc.code}", str(exc))
            continue
        except BaseException as exc:
            return _crash("spec", name, exc)
        for op in ops:
            if not isinstance(op, Operation):
                return Finding("spec", "crash", f"spec:{name}:not-an-operation", repr(op))
            try:
                with watchdog():
                    why = _round_trip(op)
            except BaseException as exc:
                return Finding("spec", "roundtrip",
                               f"spec:roundtrip:{op.name}:{type(exc).__name__}",
                               f"{op.spec!r} does not parse back: {type(exc).__name__}: {exc}")
            if why is not None:
                return Finding("spec", "roundtrip", f"spec:roundtrip:{op.name}", why)
    return None


# --------------------------------------------------------------------------- decode


def limits() -> Any:
    from pixelpipe.imaging.limits import Limits

    # small: a 1 MP, 2048 px a side, 256 KiB source is the largest a fuzzed input may claim
    return Limits(max_pixels=1024 * 1024, max_side=2048, max_bytes=256 * 1024)


def check_guards(data: bytes) -> Finding | None:
    """``probe`` + ``check_limits`` in-process: a Header within limits or an input error."""
    from pixelpipe.errors import PixelpipeError
    from pixelpipe.imaging.formats import check_limits, probe

    try:
        with watchdog():
            header = probe(data)
            check_limits(header.width, header.height, limits())
    except PixelpipeError as exc:
        if exc.code in INPUT_ERROR_CODES:
            return None
        return Finding("decode", "wrong_error", f"decode:probe:{exc.code}@{_where(exc)}",
                       f"probe: {exc.code}: {exc}")
    except BaseException as exc:
        return _crash("decode", "probe", exc)
    if header.format not in ("jpeg", "png", "webp", "avif", "heic", "tiff", "gif", "bmp"):
        return Finding("decode", "crash", "decode:probe:format", repr(header))
    return None


def _child_main(conn: Any, memory_mb: int) -> None:
    """The render child: an address-space cap, one thread, then render what it is sent."""
    import resource

    cap = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if os.environ.get("FUZZ_CHILD_STDERR") != "1":  # libpng/libjpeg warn on every bad input
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    from pixelpipe.errors import PixelpipeError
    from pixelpipe.imaging._cv import single_thread
    from pixelpipe.imaging.engine import render
    from pixelpipe.imaging.spec import parse_operations

    single_thread()
    ops = parse_operations(RENDER_OPS)
    small = limits()
    conn.send(("ready",))
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        try:
            result = render(data, ops, small)
            if result.width <= 0 or result.height <= 0 or not result.data:
                reply: tuple[Any, ...] = ("bad_result", repr(result)[:200])
            else:
                reply = ("ok", result.format, result.width, result.height)
        except PixelpipeError as exc:
            reply = ("error", exc.code, f"{exc!s:.300}", _where(exc))
        except MemoryError as exc:
            reply = ("memory", f"{exc!s:.200}", _where(exc))
        except BaseException as exc:
            reply = ("exception", type(exc).__name__, f"{exc!s:.300}", _where(exc),
                     "".join(traceback.format_exception(exc)[-6:]))
        conn.send(reply)


class RenderChild:
    """One long-lived render process: ``check(data)`` sends a source, waits at most
    ``timeout_s`` and restarts the child after a timeout (killed) or a death."""

    def __init__(self, timeout_s: float = RENDER_TIMEOUT_S,
                 memory_mb: int = CHILD_MEMORY_MB) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._conn: Any = None

    def _start(self) -> None:
        parent, child = self._context.Pipe()
        self._process = self._context.Process(
            target=_child_main, args=(child, self.memory_mb), daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(120):
            raise RuntimeError("render child did not start within 120 s")
        if parent.recv() != ("ready",):
            raise RuntimeError("render child sent an unexpected greeting")

    def _stop(self) -> None:
        if self._process is not None:
            if self._process.is_alive():
                self._process.kill()
            self._process.join(10)
            self._conn.close()
        self._process = None
        self._conn = None

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> RenderChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check(self, data: bytes) -> Finding | None:
        if self._process is None:
            self._start()
        try:
            self._conn.send_bytes(data)
            if not self._conn.poll(self.timeout_s):
                self._stop()
                self.restarts += 1
                return Finding("decode", "hang", "decode:render:timeout",
                               f"render gave no result within {self.timeout_s} s")
            reply = self._conn.recv()
        except (EOFError, OSError):
            self._process.join(10)
            code = self._process.exitcode
            self._stop()
            self.restarts += 1
            how = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
            return Finding("decode", "dead", f"decode:render:dead:{how}",
                           f"the render child died ({how})")
        kind = reply[0]
        if kind == "ok":
            return None
        if kind == "error":
            code, message, where = reply[1:]
            if code in INPUT_ERROR_CODES:
                return None
            return Finding("decode", "wrong_error", f"decode:render:{code}@{where}",
                           f"render: {code}: {message}")
        if kind == "memory":
            return Finding("decode", "memory", f"decode:render:MemoryError@{reply[2]}",
                           f"render ran out of memory under {self.memory_mb} MB: {reply[1]}")
        if kind == "exception":
            name, message, where, text = reply[1:]
            return Finding("decode", "crash", f"decode:render:{name}@{where}",
                           f"render raised {name}: {message}\n{text}")
        return Finding("decode", "crash", "decode:render:bad_result", repr(reply))


def check_decode(data: bytes, child: RenderChild) -> Finding | None:
    """The decode guards in-process, then a render in ``child``."""
    return check_guards(data) or child.check(data)


# --------------------------------------------------------------------------- corpus


def known_open() -> dict[str, str]:
    """``<target>/<file>`` -> why, for corpus findings that are known and not fixed."""
    if not KNOWN_OPEN_FILE.exists():
        return {}
    entries: dict[str, str] = json.loads(KNOWN_OPEN_FILE.read_text())
    return entries


def corpus_files(target: str) -> list[Path]:
    folder = CORPUS / target
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def save(target: str, data: bytes, prefix: str = "", suffix: str = ".bin") -> Path:
    """Keep ``data`` in ``corpus/<target>/`` under its sha256 name (idempotent)."""
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{prefix}{sha_name(data)}{suffix}"
    if not path.exists():
        path.write_bytes(data)
    return path


def suffix_of(target: str) -> str:
    return ".json" if target == "spec" else ".bin"


def env_for_fuzzing() -> None:
    """Debug operations stay refused (as in production), whatever the caller's environment."""
    os.environ.pop("PIXELPIPE_ENABLE_DEBUG_OPS", None)


# --------------------------------------------------------------------------- seeds


def valid_events() -> dict[str, dict[str, Any]]:
    """One valid JSON object per decoder's schema (the upload as in tests/unit/test_schemas)."""
    sha = "ab" * 32
    upload: dict[str, Any] = {
        "schema": "pixelpipe.upload/1",
        "event_id": "e-1",
        "image_id": "img-1",
        "source": {"uri": f"blob://sources/ab/{sha}", "sha256": sha, "size": 10,
                   "content_type": "image/jpeg"},
        "renditions": [{"name": "t", "preset": "thumbnail"},
                       {"name": "w", "operations": ["resize:width=8", {"op": "grayscale"}],
                        "optional": ["grayscale"], "fallback_format": "jpeg"}],
        "priority": "high",
        "submitted_at": "2026-11-28T00:00:00.000Z",
        "deadline": "2026-11-28T00:05:00.000Z",
        "attributes": {"tenant": "a"},
    }
    attempts = [{"at": "2026-11-28T00:00:01.000Z", "code": "source_missing", "tier": "main"}]
    origin = {"topic": "pixelpipe.uploads", "partition": 0, "offset": 7}
    return {
        "upload": upload,
        "processed": {
            "schema": "pixelpipe.processed/1", "event_id": "e-1", "image_id": "img-1",
            "source_sha256": sha,
            "renditions": [{"name": "t", "uri": "blob://renditions/x.jpg", "sha256": sha,
                            "size": 100, "width": 20, "height": 10, "format": "jpeg",
                            "skipped": ["watermark"], "degraded": "basic"}],
            "attempts": 1, "processing_ms": 12.5, "completed_at": "2026-11-28T00:00:02.000Z",
            "attributes": {"tenant": "a"}, "level": "full",
        },
        "deadletter": {
            "schema": "pixelpipe.deadletter/1", "event_id": "e-1", "original": upload,
            "error": {"code": "corrupt_image", "class": "CorruptImage", "message": "bad",
                      "processor": "decode", "retryable": False},
            "attempts": attempts, "origin": origin,
            "first_failed_at": "2026-11-28T00:00:01.000Z",
            "dead_lettered_at": "2026-11-28T00:00:03.000Z", "replays": 0, "image_id": "img-1",
        },
        "retry": {
            "schema": "pixelpipe.retry/1", "event_id": "e-1", "original": upload,
            "attempts": attempts, "origin": origin,
            "first_failed_at": "2026-11-28T00:00:01.000Z", "due_at": "2026-11-28T00:00:31.000Z",
            "tier": "retry-30s", "image_id": "img-1", "deferrals": 0,
        },
    }


def sample_images() -> dict[str, bytes]:
    """Small valid sources of every source format (made here, never stored as fixtures)."""
    import io

    import numpy as np

    from pixelpipe.imaging._cv import cv2

    height, width = 12, 16
    y, x = np.mgrid[0:height, 0:width]
    bgr = np.dstack((x * 16, y * 20, (x + y) * 8)).astype(np.uint8)
    bgra = np.dstack((bgr, np.full((height, width), 200, np.uint8)))
    gray = bgr[:, :, 0].copy()

    def cv(ext: str, image: Any, *flags: int) -> bytes:
        ok, buffer = cv2.imencode(ext, image, list(flags))
        assert ok, ext
        return bytes(buffer.tobytes())

    out = {
        "jpeg": cv(".jpg", bgr, cv2.IMWRITE_JPEG_QUALITY, 70),
        "jpeg-gray-progressive": cv(".jpg", gray, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "png": cv(".png", bgr),
        "png-alpha": cv(".png", bgra),
        "webp": cv(".webp", bgr, cv2.IMWRITE_WEBP_QUALITY, 60),
        "webp-lossless-alpha": cv(".webp", bgra, cv2.IMWRITE_WEBP_QUALITY, 101),
        "avif": cv(".avif", bgr),
        "tiff": cv(".tiff", bgr),
        "bmp": cv(".bmp", bgr),
        "gif": cv(".gif", bgr),
    }
    # EXIF orientation 6 in a JPEG APP1 (the orientation path of probe and render)
    import struct

    entry = struct.pack(">HHIHH", 274, 3, 1, 6, 0)
    exif = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + b"\x00" * 4
    payload = b"Exif\x00\x00" + exif
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    out["jpeg-exif"] = out["jpeg"][:2] + app1 + out["jpeg"][2:]
    try:
        import pillow_heif

        container = pillow_heif.from_bytes(
            "RGB", (width, height), np.ascontiguousarray(bgr[:, :, ::-1]).tobytes())
        buffer = io.BytesIO()
        container.save(buffer, quality=50,
                       enc_params={"x265:pools": "1", "x265:frame-threads": "1"})
        out["heic"] = buffer.getvalue()
    except Exception:  # no HEIF encoder in this build: HEIC is fuzzed from bytes only
        pass
    return out
