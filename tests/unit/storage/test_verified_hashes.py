"""VerifiedHashes: a retry does not hash an unchanged source again; a changed one is caught."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pixelpipe.storage.local import VerifiedHashes


def test_an_unchanged_file_is_hashed_once(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_bytes(b"x" * 3_000_000)
    hashes = VerifiedHashes()
    first = hashes.sha256(path)
    assert first == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hashes.sha256(path) == first
    assert hashes.hits == 1


def test_a_file_rewritten_in_place_with_its_old_mtime_is_hashed_again(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_bytes(b"a" * 1000)
    hashes = VerifiedHashes()
    before = hashes.sha256(path)
    info = path.stat()
    with path.open("r+b") as handle:  # same size, same inode
        handle.write(b"b")
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # mtime put back; ctime moves on
    after = hashes.sha256(path)
    assert after != before
    assert after == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hashes.hits == 0


def test_a_replaced_file_is_hashed_again(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_bytes(b"one")
    hashes = VerifiedHashes()
    hashes.sha256(path)
    other = tmp_path / "b"
    other.write_bytes(b"two")
    other.replace(path)
    assert hashes.sha256(path) == hashlib.sha256(b"two").hexdigest()
    assert hashes.hits == 0


def test_an_entry_older_than_max_age_is_hashed_again(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "a"
    path.write_bytes(b"data")
    hashes = VerifiedHashes(max_age_s=600, clock=lambda: now[0])
    hashes.sha256(path)
    now[0] = 599.0
    hashes.sha256(path)
    assert hashes.hits == 1
    now[0] = 1300.0  # bit rot shows in no metadata: after max_age it is read again
    hashes.sha256(path)
    assert hashes.hits == 1


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    hashes = VerifiedHashes(capacity=2)
    paths = []
    for i in range(3):
        path = tmp_path / str(i)
        path.write_bytes(bytes([i]))
        hashes.sha256(path)
        paths.append(path)
    hashes.sha256(paths[0])  # evicted (least recently used)
    assert hashes.hits == 0
    hashes.sha256(paths[2])
    assert hashes.hits == 1
