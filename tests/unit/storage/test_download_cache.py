"""The S3 store's download cache: pinned while used, LRU-bounded after, stale dirs removed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pixelpipe.storage.cache import DownloadCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def add(cache: DownloadCache, name: str, size: int, *, pin: bool = True) -> Path:
    fd, tmp = cache.temp_file()
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"x" * size)
    return cache.insert(name, tmp, size, pin=pin)


def test_pinned_entries_survive_the_bound_released_ones_go_least_recent_first(
        tmp_path: Path) -> None:
    clock = Clock()
    cache = DownloadCache(tmp_path, max_bytes=250, grace_s=10, clock=clock)
    a, b = add(cache, "a", 100), add(cache, "b", 100)
    c = add(cache, "c", 100)  # over the bound, but all three are in use
    assert all(p.exists() for p in (a, b, c)) and cache.size == 300
    cache.release(b)
    cache.release(a)  # the order of last use is now c, b, a
    clock.now += 11
    cache.release(c)  # evaluates the bound: the least recently used unpinned entry goes
    assert not b.exists() and a.exists() and c.exists()
    assert cache.size == 200 and cache.evicted == 1


def test_a_released_entry_is_kept_for_a_retry_while_the_cache_has_room(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path, max_bytes=1000, grace_s=0)
    path = add(cache, "source", 100)
    cache.release(path)
    assert cache.lookup("source") == path  # the retry minutes later: no new download
    assert cache.lookup("other") is None


def test_grace_protects_unpinned_paths_just_handed_out(tmp_path: Path) -> None:
    clock = Clock()
    cache = DownloadCache(tmp_path, max_bytes=100, grace_s=60, clock=clock)
    first = add(cache, "first", 100, pin=False)
    second = add(cache, "second", 100, pin=False)
    assert first.exists() and second.exists()  # both within their grace
    clock.now += 61
    add(cache, "third", 100, pin=False)
    assert not first.exists() and not second.exists()


def test_a_file_changed_behind_the_caches_back_is_not_served(tmp_path: Path) -> None:
    cache = DownloadCache(tmp_path, max_bytes=1000)
    path = add(cache, "source", 100)
    cache.release(path)
    path.write_bytes(b"y" * 99)
    assert cache.lookup("source") is None
    assert not path.exists()


def test_directories_of_dead_processes_are_removed_live_ones_kept(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f"{gone.stdout.strip()}-deadbeef"
    stale.mkdir()
    (stale / "leftover").write_bytes(b"x")
    live = tmp_path / f"{os.getppid()}-cafef00d"
    live.mkdir()
    cache = DownloadCache(tmp_path, max_bytes=1000)
    own = cache.directory
    assert not stale.exists() and live.exists() and own.exists()
    cache.close()
    assert not own.exists()
