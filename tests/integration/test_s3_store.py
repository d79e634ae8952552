"""The S3 blob store against a real S3 server (versitygw, started by the session like the
broker): create-only writes, checksums on write and read, the HEAD size check, failures."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_server import S3Server

from pixelpipe.config import Settings
from pixelpipe.errors import (
    ChecksumMismatch,
    ForbiddenSource,
    ImageTooLarge,
    SourceMissing,
    StorageUnavailable,
)
from pixelpipe.storage import open_store
from pixelpipe.storage.local import output_key
from pixelpipe.storage.s3 import S3BlobStore, S3Location

KEY = output_key("e" * 64, "resize:width=8", None)


@pytest.fixture
def store(s3_server: S3Server, tmp_path: Path) -> Iterator[S3BlobStore]:
    settings = Settings.from_env({"PIXELPIPE_DATA": s3_server.url(),
                                  "PIXELPIPE_S3_ENDPOINT": s3_server.endpoint,
                                  "PIXELPIPE_DATADIR": str(tmp_path / "state")})
    opened = open_store(settings)
    assert isinstance(opened, S3BlobStore)
    yield opened
    opened.close()


def plain(s3_server: S3Server, call: str, **params: Any) -> dict[str, Any]:
    """One call of a second, independent S3 client (aiobotocore), e.g. to corrupt an object."""
    from aiobotocore.session import get_session
    from botocore.config import Config

    async def run() -> dict[str, Any]:
        async with get_session().create_client(
                "s3", endpoint_url=s3_server.endpoint, region_name=s3_server.region,
                aws_access_key_id=s3_server.access_key,
                aws_secret_access_key=s3_server.secret_key,
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1})) as c:
            response: dict[str, Any] = await getattr(c, call)(Bucket=s3_server.bucket, **params)
            if "Body" in response:
                async with response["Body"] as body:
                    response["Body"] = await body.read()
            return response

    return asyncio.run(run())


def key_of(store: S3BlobStore, uri: str) -> str:
    return store.location.key_of_uri(uri)


# ------------------------------------------------------------------------ create-only writes


def test_a_second_put_of_an_output_is_a_no_op_success(store: S3BlobStore,
                                                     s3_server: S3Server) -> None:
    first = store.put_output(KEY, "webp", b"rendered once")
    assert first.uri == f"{store.location.url}/outputs/{KEY[:2]}/{KEY}.webp"
    again = store.put_output(KEY, "webp", b"rendered once")
    assert again == first
    # another encoder build made other bytes for the same request: the stored ones stay, and
    # the result describes them, not the bytes that were not written
    other = store.put_output(KEY, "webp", b"rendered differently")
    assert (other.sha256, other.size) == (first.sha256, first.size)
    body = plain(s3_server, "get_object", Key=key_of(store, first.uri))["Body"]
    assert body == b"rendered once"


def test_eight_racing_puts_of_one_key_leave_one_body_and_no_error(store: S3BlobStore,
                                                                  s3_server: S3Server) -> None:
    bodies = [f"body {i} ".encode() * 20_000 for i in range(8)]
    results: list[Any] = [None] * 8
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def put(i: int) -> None:
        start.wait()
        try:
            results[i] = store.put_output(KEY, "png", bodies[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    stored = plain(s3_server, "get_object", Key=key_of(store, results[0].uri))["Body"]
    assert stored in bodies
    winner = hashlib.sha256(stored).hexdigest()
    assert {r.sha256 for r in results} == {winner}  # every writer reports the stored bytes
    assert {r.size for r in results} == {len(stored)}


def test_sources_are_content_addressed_create_only_and_checked_by_the_server(
        store: S3BlobStore, s3_server: S3Server) -> None:
    data = os.urandom(200_000)
    blob = store.put_source(data)
    sha = hashlib.sha256(data).hexdigest()
    assert (blob.sha256, blob.size) == (sha, len(data))
    assert blob.uri == f"{store.location.url}/sources/{sha[:2]}/{sha}"
    assert store.put_source(data) == blob  # 412: already there, left as it is
    head = plain(s3_server, "head_object", Key=key_of(store, blob.uri), ChecksumMode="ENABLED")
    # the write carried x-amz-checksum-sha256, which the server stored (and checked)
    assert head["ChecksumSHA256"] == base64.b64encode(bytes.fromhex(sha)).decode()
    assert head["Metadata"]["sha256"] == sha
    # what a body that arrives different gets: refused (400 BadDigest), so never stored
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        plain(s3_server, "put_object", Key=f"{store.location.prefix}/bad-digest", Body=data,
              ChecksumSHA256=base64.b64encode(hashlib.sha256(b"other").digest()).decode())
    assert refused.value.response["Error"]["Code"] == "BadDigest"


# ------------------------------------------------------------------------------ reading


def test_open_source_downloads_a_verified_copy_and_a_retry_reuses_it(store: S3BlobStore) -> None:
    data = os.urandom(300_000)
    blob = store.put_source(data)
    path = store.open_source(blob.uri, max_bytes=1_000_000)
    assert path.read_bytes() == data
    assert path.is_relative_to(store.cache.root)
    store.release_source(path)
    assert store.open_source(blob.uri, max_bytes=1_000_000) == path  # cached: no download
    store.release_source(path)
    assert store.read(blob.uri) == data


def test_the_size_is_checked_with_head_before_any_download(store: S3BlobStore) -> None:
    blob = store.put_source(os.urandom(50_000))
    with pytest.raises(ImageTooLarge, match="50000 bytes; the limit is 49999"):
        store.open_source(blob.uri, max_bytes=49_999)
    assert len(store.cache) == 0
    assert not any(store.cache.root.rglob(".part-*"))  # not even a partial download


def test_a_corrupted_source_object_is_caught_on_read(store: S3BlobStore,
                                                     s3_server: S3Server) -> None:
    data = os.urandom(100_000)
    blob = store.put_source(data)
    # bit rot on the server's disk: same size, other bytes, behind the server's back
    s3_server.object_file(key_of(store, blob.uri)).write_bytes(os.urandom(len(data)))
    with pytest.raises(ChecksumMismatch, match="is corrupt"):
        store.open_source(blob.uri, max_bytes=1_000_000)
    with pytest.raises(ChecksumMismatch):
        store.read(blob.uri)
    assert len(store.cache) == 0  # nothing corrupt is served from the cache


def test_an_object_replaced_by_a_plain_client_is_caught_by_its_recorded_sha(
        store: S3BlobStore, s3_server: S3Server) -> None:
    good = store.put_output(KEY, "jpg", b"the real output bytes")
    assert store.find_output(KEY) is not None
    # another client overwrites it with other bytes but keeps our metadata
    plain(s3_server, "put_object", Key=key_of(store, good.uri), Body=b"tampered bytes here!!",
          Metadata={"sha256": good.sha256})
    with pytest.raises(ChecksumMismatch, match="written as"):
        store.read(good.uri)
    # find_output (a retry serving stored renditions) does not serve it: it deletes the corrupt
    # output, so the render writes it again
    store.cache.close()
    assert store.find_output(KEY) is None
    again = store.put_output(KEY, "jpg", b"the real output bytes")
    assert again.sha256 == good.sha256
    found = store.find_output(KEY)
    assert found is not None and found[0] == good.uri
    assert found[1].read_bytes() == b"the real output bytes"


def test_find_output_finds_any_extension_and_only_its_own_key(store: S3BlobStore) -> None:
    assert store.find_output(KEY) is None
    neighbour = KEY[:-1] + ("0" if KEY[-1] != "0" else "1")
    store.put_output(neighbour, "png", b"not ours")
    assert store.find_output(KEY) is None
    stored = store.put_output(KEY, "avif", b"ours")
    found = store.find_output(KEY)
    assert found is not None and found[0] == stored.uri


def test_a_source_another_service_wrote_is_read_under_the_same_limits(
        store: S3BlobStore, s3_server: S3Server) -> None:
    data = os.urandom(70_000)
    key = f"{store.location.prefix}-ext/uploads/photo 1.jpg"
    plain(s3_server, "put_object", Key=key, Body=data)
    uri = f"s3://{s3_server.bucket}/{key.replace(' ', '%20')}"
    path = store.open_source(uri, max_bytes=100_000)
    assert path.read_bytes() == data
    store.release_source(path)
    with pytest.raises(ImageTooLarge):
        store.open_source(uri, max_bytes=69_999)


def test_missing_foreign_and_unreachable(store: S3BlobStore, s3_server: S3Server,
                                         tmp_path: Path) -> None:
    with pytest.raises(SourceMissing):
        store.open_source(store.source_uri("0" * 64), max_bytes=100)
    with pytest.raises(ForbiddenSource):
        store.open_source(f"s3://another-bucket/{store.location.prefix}/x", max_bytes=100)
    with pytest.raises(ForbiddenSource):
        store.open_source("blob://sources/00/" + "0" * 64, max_bytes=100)
    with pytest.raises(ForbiddenSource, match="sources are never deleted"):
        store.delete_output(store.source_uri("0" * 64))
    # nothing listens there: every call is storage_unavailable, after retries, in bounded time
    down = S3BlobStore(S3Location(s3_server.bucket, "x"), cache_dir=tmp_path / "c",
                       endpoint="http://127.0.0.1:9", timeout_s=2, retries=1)
    began = time.monotonic()
    for call in (lambda: down.put_source(b"x"), lambda: down.put_output(KEY, "png", b"x"),
                 lambda: down.open_source(down.source_uri("0" * 64), max_bytes=10),
                 lambda: down.find_output(KEY)):
        with pytest.raises(StorageUnavailable):
            call()
    assert time.monotonic() - began < 30
    # refused credentials are storage_unavailable too (an operator fixes them; then retried)
    os.environ["AWS_SECRET_ACCESS_KEY"], secret = "wrong", os.environ["AWS_SECRET_ACCESS_KEY"]
    try:
        refused = S3BlobStore(S3Location(s3_server.bucket, "x"), cache_dir=tmp_path / "d",
                              endpoint=s3_server.endpoint, retries=0)
    finally:
        os.environ["AWS_SECRET_ACCESS_KEY"] = secret
    with pytest.raises(StorageUnavailable, match="credentials or permissions") as denied:
        refused.put_source(b"x")
    assert "wrong" not in str(denied.value) and secret not in str(denied.value)


# ------------------------------------------------------------------------------ credentials


def test_credentials_only_in_the_settings_mapping_write_and_read(
        s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library user's ``Settings.from_env(mapping)`` in a process without (or with other)
    AWS variables: the store uses the mapping's credentials and region."""
    aws = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_TOKEN",
           "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")
    for name in aws:
        monkeypatch.delenv(name, raising=False)
    mapping = {"PIXELPIPE_DATA": s3_server.url(), "PIXELPIPE_DATADIR": str(tmp_path / "state"),
               "PIXELPIPE_S3_TIMEOUT": "5s", "PIXELPIPE_S3_RETRIES": "0",
               **s3_server.client_env()}
    assert mapping["AWS_SECRET_ACCESS_KEY"] and not any(name in os.environ for name in aws)
    store = open_store(Settings.from_env(mapping))
    assert isinstance(store, S3BlobStore)
    try:
        blob = store.put_source(b"credentials from the mapping")
        assert store.read(blob.uri) == b"credentials from the mapping"
    finally:
        store.close()
    # other credentials in the environment do not win over (or mix with) the mapping's
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOTHERKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "other-secret")
    other = open_store(Settings.from_env({**mapping, "PIXELPIPE_DATADIR": str(tmp_path / "o")}))
    assert isinstance(other, S3BlobStore)
    try:
        assert other.read(blob.uri) == b"credentials from the mapping"
    finally:
        other.close()
