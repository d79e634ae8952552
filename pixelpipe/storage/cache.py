"""A bounded local cache of downloaded blobs: the S3 store's sources handed to the image pool.

The pool's child processes open a source by path, so the S3 store downloads it (verified) to a
file here and returns that path. Each entry is *pinned* while a caller uses it (from
``open_source`` until ``release_source``) and never evicted then, nor within ``grace_s`` of
its last use (``find_output`` hands out paths without a release); past that, the least
recently used entries are deleted whenever the cache holds more than ``max_bytes``. A retry of
the same upload minutes later finds its source still here (same URI, ETag and size) and skips
the download.

Each store instance has its own directory, ``<root>/<pid>-<random>``; directories left by
processes that are gone (a ``kill -9``) are removed when the next one is made. Thread-safe.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(slots=True)
class _Entry:
    path: Path
    size: int
    pins: int
    last_used: float
    #: (inode, size, mtime_ns) when inserted: a file changed since is not served
    stamp: tuple[int, int, int] = (0, 0, 0)


def _stamp(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_ino, info.st_size, info.st_mtime_ns


class DownloadCache:
    def __init__(self, root: Path, max_bytes: int, *, grace_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.grace_s = grace_s
        self.evicted = 0
        self._clock = clock
        self._dir: Path | None = None
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._by_path: dict[Path, str] = {}
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        """This instance's directory, made (and stale siblings removed) on first use."""
        with self._lock:
            if self._dir is None:
                self.root.mkdir(parents=True, exist_ok=True)
                _remove_stale(self.root)
                path = self.root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
                path.mkdir()
                self._dir = path
            return self._dir

    @property
    def size(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def lookup(self, name: str) -> Path | None:
        """The cached file called ``name``, pinned; None when it is not here."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                return None
            try:
                intact = _stamp(entry.path) == entry.stamp
            except OSError:
                intact = False
            if not intact:  # deleted or rewritten behind our back: download again
                self._drop(name)
                return None
            entry.pins += 1
            entry.last_used = self._clock()
            self._entries.move_to_end(name)
            return entry.path

    def temp_file(self) -> tuple[int, Path]:
        """An open temporary file in the cache (fd, path) for a download in progress."""
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".part-")
        return fd, Path(tmp)

    def insert(self, name: str, tmp: Path, size: int, *, pin: bool = True) -> Path:
        """Move a finished download into the cache as ``name``; pinned unless ``pin`` is
        False. Evicts what the bound asks for."""
        final = self.directory / name
        os.replace(tmp, final)
        stamp = _stamp(final)
        with self._lock:
            old = self._entries.pop(name, None)
            pins = old.pins if old is not None else 0
            self._entries[name] = _Entry(final, size, pins + (1 if pin else 0), self._clock(),
                                         stamp)
            self._by_path[final] = name
            self._evict()
        return final

    def release(self, path: Path) -> None:
        with self._lock:
            name = self._by_path.get(Path(path))
            entry = self._entries.get(name) if name is not None else None
            if entry is not None and name is not None:
                entry.pins = max(0, entry.pins - 1)
                entry.last_used = self._clock()  # its last use is now: the end of the LRU
                self._entries.move_to_end(name)
            self._evict()

    def discard(self, path: Path) -> None:
        """Forget and delete one entry (a file found corrupt)."""
        with self._lock:
            name = self._by_path.get(Path(path))
            if name is not None:
                self._drop(name)

    def close(self) -> None:
        with self._lock:
            directory, self._dir = self._dir, None
            self._entries.clear()
            self._by_path.clear()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    # ------------------------------------------------------------------ inside the lock

    def _drop(self, name: str) -> None:
        entry = self._entries.pop(name)
        self._by_path.pop(entry.path, None)
        with contextlib.suppress(OSError):
            entry.path.unlink()

    def _evict(self) -> None:
        total = sum(e.size for e in self._entries.values())
        if total <= self.max_bytes:
            return
        now = self._clock()
        for name, entry in list(self._entries.items()):  # least recently used first
            if total <= self.max_bytes:
                break
            if entry.pins > 0 or now - entry.last_used < self.grace_s:
                continue
            total -= entry.size
            self._drop(name)
            self.evicted += 1


def _remove_stale(root: Path) -> None:
    """Delete the directories of cache instances whose process is gone."""
    for child in root.iterdir():
        pid_text = child.name.partition("-")[0]
        if not child.is_dir() or not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(child, ignore_errors=True)
        except OSError:
            pass  # someone else's live process
