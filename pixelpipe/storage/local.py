"""The local blob store: content-addressed sources, idempotent output keys, atomic writes.

Kafka carries references (``blob://`` URIs), not pixels (the claim-check pattern).

Layout under the root (``PIXELPIPE_DATA``):

    sources/ab/ab12...ef            a source, named by the sha256 of its bytes (immutable)
    outputs/cd/cd34...90.webp       an output, named by a key derived from (source sha256,
                                    canonical rendition spec, degradation level)

Writes go to a temporary file in the same directory, are fsynced, then renamed into place, and
the directory is fsynced: a crash leaves either the whole blob or nothing under its name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pixelpipe.errors import ForbiddenSource, ImageTooLarge, SourceMissing, StorageUnavailable

SCHEME = "blob"
_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredBlob:
    """A blob as written: its URI, its path on disk, its sha256 and size."""

    uri: str
    path: Path
    sha256: str
    size: int


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class VerifiedHashes:
    """sha256 of files already hashed, keyed by what changes whenever a file's bytes do.

    A retry or a replay of an upload reads the same immutable source again; hashing 3-5 MB
    each time costs about as much as a tenth of the render. The key is (device, inode, size,
    mtime_ns, ctime_ns) of the open file: a rewrite in place changes mtime and ctime, a
    replaced file changes the inode, and ctime cannot be set back by a user (``os.utime`` moves
    it forward), so a changed file is hashed again and caught. What no metadata shows (bits
    rotting on the disk) is caught again once an entry is ``max_age_s`` old: the cache saves
    the re-hash of a retry minutes later, not of a replay next week. Bounded (LRU), thread-safe.
    """

    def __init__(self, capacity: int = 4096, max_age_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.max_age_s = max_age_s
        self.hits = 0
        self._clock = clock
        self._known: OrderedDict[FileKey, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def sha256(self, path: Path) -> str:
        with path.open("rb") as handle:
            key = file_key(os.fstat(handle.fileno()))
            known = self.known(key)
            if known is not None:
                return known
            digest = hashlib.sha256()
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
            # the file may have changed while we read it: only remember a stable one
            after = file_key(os.fstat(handle.fileno()))
        value = digest.hexdigest()
        if after == key:
            self.remember(key, value)
        return value

    def known(self, key: FileKey) -> str | None:
        """The sha256 remembered for the file with ``key`` (``file_key``), if still fresh."""
        now = self._clock()
        with self._lock:
            known = self._known.get(key)
            if known is None or now - known[1] >= self.max_age_s:
                return None
            self._known.move_to_end(key)
            self.hits += 1
            return known[0]

    def remember(self, key: FileKey, sha256: str) -> None:
        """Remember that the file with ``key`` hashed to ``sha256``. Only for a key taken
        before the bytes were read and found the same after: a file that changed in between
        must not be remembered."""
        with self._lock:
            self._known[key] = (sha256, self._clock())
            self._known.move_to_end(key)
            while len(self._known) > self.capacity:
                self._known.popitem(last=False)


#: what changes whenever a file's bytes do: (device, inode, size, mtime_ns, ctime_ns)
FileKey = tuple[int, int, int, int, int]


def file_key(info: os.stat_result) -> FileKey:
    """The ``VerifiedHashes`` key of a file from its ``stat``."""
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def output_key(source_sha256: str, canonical_spec: str, degradation: str | None = None) -> str:
    """The idempotent name of an output: reprocessing the same request gives the same key."""
    material = f"{source_sha256}\n{canonical_spec}\n{degradation or 'full'}".encode()
    return hashlib.sha256(material).hexdigest()


class LocalBlobStore:
    """A directory of blobs. Thread-safe for concurrent writers of the same key (rename wins)."""

    #: ``open_source`` resolves and stats a file of this directory: no download, no read
    opens_in_place = True

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    # ----------------------------------------------------------------- naming

    def source_uri(self, sha256: str) -> str:
        return f"{SCHEME}://sources/{sha256[:2]}/{sha256}"

    def output_uri(self, key: str, extension: str) -> str:
        return f"{SCHEME}://outputs/{key[:2]}/{key}.{extension}"

    def resolve(self, uri: str) -> Path:
        """The path of a ``blob://`` URI (or a ``file://`` URI under the root).

        Raises ``ForbiddenSource`` for other schemes, ``..`` escapes, symlinks out of the
        root and absolute paths elsewhere.
        """
        parts = urlsplit(uri)
        if parts.scheme == SCHEME:
            relative = unquote(parts.netloc + parts.path)
            if not relative or relative.startswith("/") or "\\" in relative:
                raise ForbiddenSource(f"bad blob URI {uri!r}", processor="fetch")
            candidate = self.root / relative
        elif parts.scheme == "file" and parts.netloc in ("", "localhost"):
            candidate = Path(unquote(parts.path))
        else:
            raise ForbiddenSource(
                f"source URI scheme {parts.scheme or '(none)'!r} is not allowed: {uri!r:.200}",
                processor="fetch",
            )
        if ".." in candidate.parts:
            raise ForbiddenSource(f"source URI escapes the blob store: {uri!r:.200}", processor="fetch")
        # resolve() follows symlinks, so a link inside the store pointing out is caught too.
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.root):
            raise ForbiddenSource(
                f"source {uri!r:.200} is outside the blob store", processor="fetch"
            )
        return resolved

    # ----------------------------------------------------------------- reading

    def open_source(self, uri: str, *, max_bytes: int) -> Path:
        """Check that a source exists and is a regular file; return its path."""
        path = self.resolve(uri)
        try:
            stat = path.stat()
        except FileNotFoundError as exc:
            raise SourceMissing(f"source blob {uri!r} does not exist", processor="fetch") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot stat {uri!r}: {exc}", processor="fetch") from exc
        if not path.is_file():
            raise ForbiddenSource(f"source {uri!r} is not a regular file", processor="fetch")
        if stat.st_size > max_bytes:
            # Checked here, before a byte is read, as well as by the engine.
            raise ImageTooLarge(
                f"source is {stat.st_size} bytes; the limit is {max_bytes}", processor="decode"
            )
        return path

    def release_source(self, path: Path) -> None:
        """Nothing to do: the path is the store's own file (``base.BlobStore``)."""

    def close(self) -> None:
        """Nothing to release (``base.BlobStore``)."""

    # ----------------------------------------------------------------- writing

    def put_source(self, data: bytes) -> StoredBlob:
        """Store source bytes under their sha256 (a no-op when already there)."""
        sha = sha256_bytes(data)
        uri = self.source_uri(sha)
        path = self.root / "sources" / sha[:2] / sha
        if not path.exists():
            self._write_atomic(path, data)
        return StoredBlob(uri=uri, path=path, sha256=sha, size=len(data))

    def put_output(self, key: str, extension: str, data: bytes) -> StoredBlob:
        """Store an output under its derived key. Writing the same key twice is harmless."""
        path = self.root / "outputs" / key[:2] / f"{key}.{extension}"
        self._write_atomic(path, data)
        return StoredBlob(
            uri=self.output_uri(key, extension), path=path, sha256=sha256_bytes(data),
            size=len(data),
        )

    def find_output(self, key: str) -> tuple[str, Path] | None:
        """(URI, path) of the stored output with ``key``, whatever its extension, or None."""
        folder = self.root / "outputs" / key[:2]
        for path in sorted(folder.glob(f"{key}.*")):
            if path.is_file():
                return self.output_uri(key, path.suffix.lstrip(".")), path
        return None

    def read(self, uri: str) -> bytes:
        path = self.resolve(uri)
        try:
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise SourceMissing(f"blob {uri!r} does not exist", processor="fetch") from exc

    def _write_atomic(self, path: Path, data: bytes) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {path.name}: {exc}", processor="store") from exc
