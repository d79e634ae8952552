"""The S3 store's pure parts: the s3:// setting, key layout, URI parsing, error mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
from obstore import exceptions as ox

from pixelpipe.config import Settings
from pixelpipe.errors import (
    ChecksumMismatch,
    ConfigError,
    ForbiddenSource,
    SourceMissing,
    StorageUnavailable,
)
from pixelpipe.storage import LocalBlobStore, open_store
from pixelpipe.storage.base import BlobStore
from pixelpipe.storage.s3 import (
    S3BlobStore,
    S3Location,
    content_type_of,
    parse_s3_uri,
    storage_error,
)

SHA = "ab" + "0" * 62
KEY = "cd" + "1" * 62


# ------------------------------------------------------------------------------ settings


def test_an_s3_data_setting_keeps_its_url_and_the_local_dir_its_default() -> None:
    settings = Settings.from_env({"PIXELPIPE_DATA": "s3://media/pixelpipe/prod",
                                  "PIXELPIPE_S3_ENDPOINT": "http://127.0.0.1:7070",
                                  "PIXELPIPE_S3_TIMEOUT": "10s", "PIXELPIPE_S3_RETRIES": "5",
                                  "PIXELPIPE_S3_CACHE_MB": "64"})
    assert settings.data_url == "s3://media/pixelpipe/prod"  # not folded to s3:/ by Path
    assert settings.data_location == "s3://media/pixelpipe/prod"
    assert settings.s3_endpoint == "http://127.0.0.1:7070"
    assert (settings.s3_timeout_s, settings.s3_retries, settings.s3_cache_mb) == (10.0, 5, 64)
    local = Settings.from_env({"PIXELPIPE_DATA": "/srv/blobs"})
    assert (local.data_url, local.data_dir, local.data_location) == ("", Path("/srv/blobs"),
                                                                     "/srv/blobs")


def test_a_data_dir_override_may_name_s3_and_a_directory_override_wins_over_env() -> None:
    assert Settings.from_env({}, data_dir="s3://media/x").data_url == "s3://media/x"
    settings = Settings.from_env({"PIXELPIPE_DATA": "s3://media/x"}, data_dir="/tmp/blobs")
    assert (settings.data_url, settings.data_dir) == ("", Path("/tmp/blobs"))


@pytest.mark.parametrize("url", ["s3://", "s3://A_B/x", "s3://ab/x", "s3://-bucket/x",
                                 "s3://bucket/../x", "s3://bucket/a/./b", "s3://bucket/x?y"])
def test_a_bad_s3_url_fails_in_one_line(url: str) -> None:
    with pytest.raises(ConfigError, match="PIXELPIPE_DATA"):
        Settings.from_env({"PIXELPIPE_DATA": url})


def test_open_store_picks_the_store_from_the_settings(tmp_path: Path) -> None:
    local = open_store(Settings.from_env({}, data_dir=tmp_path))
    assert isinstance(local, LocalBlobStore)
    assert isinstance(local, BlobStore)
    s3 = open_store(Settings.from_env({"PIXELPIPE_DATA": "s3://media/pp",
                                       "PIXELPIPE_S3_ENDPOINT": "http://127.0.0.1:1",
                                       "PIXELPIPE_DATADIR": str(tmp_path)}))
    assert isinstance(s3, S3BlobStore)
    assert isinstance(s3, BlobStore)
    assert s3.cache.root == tmp_path / "s3-cache"
    assert not s3.cache.root.exists()  # made on the first download only (not by a publisher)


def test_the_store_repr_names_no_credentials(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE123")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key-0123456789")
    store = S3BlobStore(S3Location("media", "pp"), cache_dir=tmp_path,
                        endpoint="http://127.0.0.1:1")
    text = repr(store) + repr(store._client)
    assert "media" in text
    assert "AKIDEXAMPLE123" not in text and "very-secret" not in text


# ------------------------------------------------------------------------------ layout


def test_the_key_layout_is_the_local_stores_under_the_prefix() -> None:
    location = S3Location.parse("s3://media//pixelpipe/prod/")
    assert location == S3Location("media", "pixelpipe/prod")
    assert location.url == "s3://media/pixelpipe/prod"
    assert location.source_key(SHA) == f"pixelpipe/prod/sources/ab/{SHA}"
    assert location.output_key(KEY, "webp") == f"pixelpipe/prod/outputs/cd/{KEY}.webp"
    assert location.uri(location.source_key(SHA)) == f"s3://media/pixelpipe/prod/sources/ab/{SHA}"
    bare = S3Location.parse("s3://media")
    assert bare.source_key(SHA) == f"sources/ab/{SHA}"
    # the same relative layout as the local store's blob:// URIs
    local = LocalBlobStore("/nonexistent")
    assert local.source_uri(SHA).removeprefix("blob://") == bare.source_key(SHA)
    assert local.output_uri(KEY, "png").removeprefix("blob://") == bare.output_key(KEY, "png")


def test_source_sha_of_recognises_only_the_stores_own_source_keys() -> None:
    location = S3Location("media", "pp")
    assert location.source_sha_of(f"pp/sources/ab/{SHA}") == SHA
    assert location.source_sha_of(f"pp/sources/cd/{SHA}") is None  # wrong shard
    assert location.source_sha_of(f"other/sources/ab/{SHA}") is None
    assert location.source_sha_of("pp/sources/ab/not-a-sha") is None
    assert location.source_sha_of(f"pp/outputs/ab/{SHA}") is None


def test_uris_of_the_bucket_resolve_to_keys_anything_else_is_forbidden() -> None:
    location = S3Location("media", "pp")
    assert location.key_of_uri(f"s3://media/pp/sources/ab/{SHA}") == f"pp/sources/ab/{SHA}"
    # another service's own key in the same bucket: allowed, checked by its sha256 later
    assert location.key_of_uri("s3://media/uploads/2026/photo%20one.jpg") == \
        "uploads/2026/photo one.jpg"
    with pytest.raises(ForbiddenSource, match="outside the blob store"):
        location.key_of_uri("s3://other-bucket/pp/sources/ab/x")


@pytest.mark.parametrize("uri", [
    "blob://sources/ab/x", "file:///etc/passwd", "http://media/x", "/etc/passwd", "",
    "s3://media", "s3://media/", "s3://media/a//b", "s3://media/a/../b", "s3://media/./a",
    "s3://media/a?versionId=1", "s3://media/a#frag", "s3://user@media/a", "s3://media:80/a",
    "s3://media/a%00b", "s3://media/a%2F..%2Fb", "s3://media/" + "k" * 1025,
])
def test_malformed_or_foreign_uris_are_forbidden_sources(uri: str) -> None:
    with pytest.raises(ForbiddenSource):
        parse_s3_uri(uri)


def test_content_types_follow_the_extension() -> None:
    assert content_type_of("webp") == "image/webp"
    assert content_type_of("JPG") == "image/jpeg"
    assert content_type_of("bin") == "application/octet-stream"


# ------------------------------------------------------------------------------ errors


def test_a_missing_object_is_source_missing() -> None:
    for exc in (FileNotFoundError("Object at location x not found"), ox.NotFoundError("gone")):
        error = storage_error(exc, "read", "'s3://media/x'")
        assert isinstance(error, SourceMissing)
        assert error.code == "source_missing" and error.retryable


@pytest.mark.parametrize("exc", [
    ox.PermissionDeniedError("403 Forbidden"), ox.UnauthenticatedError("401"),
    ox.GenericError("Generic S3 error: HTTP error: error sending request\nDebug source: ..."),
    ox.NotSupportedError("nope"), TimeoutError("timed out"), ConnectionResetError("reset"),
    OSError(28, "No space left on device"), RuntimeError("anything else"),
])
def test_every_other_client_failure_is_storage_unavailable(exc: Exception) -> None:
    error = storage_error(exc, "write", "'s3://media/x'", processor="store")
    assert isinstance(error, StorageUnavailable)
    assert error.code == "storage_unavailable" and error.retryable
    assert error.processor == "store"
    assert "\n" not in str(error) and len(str(error)) < 400


def test_error_messages_drop_userinfo_and_our_own_errors_pass_through() -> None:
    error = storage_error(ox.GenericError("error sending request for http://key:secret@host/x"),
                          "read", "x")
    assert "secret" not in str(error)
    mine = ChecksumMismatch("corrupt")
    assert storage_error(mine, "read", "x") is mine
