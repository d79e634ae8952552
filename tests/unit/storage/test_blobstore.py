"""The local blob store: content addressing, idempotent keys, no escape from the root."""

from __future__ import annotations

from pathlib import Path

import pytest

from pixelpipe.errors import ForbiddenSource, ImageTooLarge, SourceMissing, StorageUnavailable
from pixelpipe.storage.local import LocalBlobStore, output_key, sha256_bytes


def test_sources_are_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    first = store.put_source(b"hello")
    second = store.put_source(b"hello")
    assert first == second
    assert first.sha256 == sha256_bytes(b"hello")
    assert store.read(first.uri) == b"hello"
    assert store.open_source(first.uri, max_bytes=100) == first.path.resolve()


def test_output_keys_depend_on_source_spec_and_degradation_only() -> None:
    key = output_key("a" * 64, "resize:width=8", None)
    assert key == output_key("a" * 64, "resize:width=8", "full")
    assert key != output_key("a" * 64, "resize:width=9", None)
    assert key != output_key("b" * 64, "resize:width=8", None)
    assert key != output_key("a" * 64, "resize:width=8", "basic")


def test_writing_an_output_twice_leaves_one_file_and_no_temp_files(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    one = store.put_output("k" * 64, "webp", b"data")
    two = store.put_output("k" * 64, "webp", b"data")
    assert one == two
    assert [p.name for p in one.path.parent.iterdir()] == [one.path.name]


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "blob://../../etc/passwd",
        "blob://sources/../../../etc/passwd",
        "http://example.com/a.jpg",
        "s3://bucket/key",
        "/etc/passwd",
        "sources/ab/cd",
        "blob:///etc/passwd",
    ],
)
def test_uris_outside_the_store_are_forbidden(tmp_path: Path, uri: str) -> None:
    with pytest.raises(ForbiddenSource) as info:
        LocalBlobStore(tmp_path).resolve(uri)
    assert info.value.code == "forbidden_source"


def test_a_symlink_pointing_out_of_the_store_is_forbidden(tmp_path: Path) -> None:
    root = tmp_path / "store"
    (root / "sources").mkdir(parents=True)
    (root / "sources" / "evil").symlink_to("/etc/hostname")
    with pytest.raises(ForbiddenSource):
        LocalBlobStore(root).open_source("blob://sources/evil", max_bytes=10**6)


def test_a_file_uri_inside_the_store_is_allowed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob = store.put_source(b"x")
    assert store.resolve(f"file://{blob.path}") == blob.path.resolve()


def test_missing_and_oversized_sources_have_their_codes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(SourceMissing):
        store.open_source("blob://sources/00/" + "0" * 64, max_bytes=10)
    blob = store.put_source(b"x" * 100)
    with pytest.raises(ImageTooLarge):
        store.open_source(blob.uri, max_bytes=10)


def test_a_store_path_that_is_a_file_is_storage_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "store"
    blocker.write_bytes(b"not a directory")
    with pytest.raises(StorageUnavailable) as info:
        LocalBlobStore(blocker).put_output("k" * 64, "png", b"x")
    assert info.value.retryable
