"""The S3 blob store: the local store's content-addressed layout in a bucket, through obstore.

Selected by ``PIXELPIPE_DATA=s3://bucket/prefix`` (``storage.open_store``); the endpoint is
``PIXELPIPE_S3_ENDPOINT`` (else ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, read with
the other settings; else AWS). Credentials
and region are the standard AWS variables, read by ``Settings.from_env`` from the same mapping
as every other setting (the process environment by default) and given to the client
explicitly: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` as a static
credential provider (so no credential of the process environment mixes in), ``AWS_REGION`` as
the ``region`` option; with ``AWS_PROFILE`` set, the named profile through boto3's credential
chain (obstore's ``Boto3CredentialProvider``; needs ``pip install boto3``; obstore has no
profile option of its own). Without credentials in the settings, the client's own chain: web
identity, the container or instance metadata.

Keys under the prefix (the local store's layout, ``local.py``)::

    <prefix>/sources/ab/ab12...ef          a source, named by the sha256 of its bytes
    <prefix>/outputs/cd/cd34...90.webp     an output, named by its derived key

and URIs ``s3://bucket/<prefix>/sources/ab/ab12...ef``. An upload may also name any other key
of the same bucket (a source another service wrote itself); a URI of another bucket, or any
other scheme, is ``forbidden_source``.

Integrity:

- **Writes are create-only** (``If-None-Match: *``): a racing writer cannot clobber a blob,
  and a second write of the same key gets 412, which means "already written": success. For
  an output the result then describes the bytes that *are* stored (their recorded sha256, read
  with a 1-byte ranged GET), so a processed event never claims bytes the bucket does not hold.
- **Checked on write** by the server: every PUT carries ``x-amz-checksum-sha256`` (and a
  signed payload hash); a body that arrives different is refused (400 ``BadDigest``, measured
  with versitygw), which is ``storage_unavailable`` here and so retried. The sha256 is also
  recorded as object metadata (``x-amz-meta-sha256``).
- **Checked on read**: the sha256 of the bytes read against the key (a source) and against the
  recorded sha256 (every blob written here); a difference is ``checksum_mismatch``. The size
  is checked with a HEAD against ``max_bytes`` before a byte is downloaded, and counted again
  while downloading.

Every failure of the client is ``StorageUnavailable`` (retryable) or ``SourceMissing``: never a
raw client error (``storage_error``). Requests have a timeout and retries with backoff
(``PIXELPIPE_S3_TIMEOUT``, ``PIXELPIPE_S3_RETRIES``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

from pixelpipe.config import Settings, check_s3_url
from pixelpipe.errors import (
    ChecksumMismatch,
    ConfigError,
    ForbiddenSource,
    ImageTooLarge,
    PixelpipeError,
    SourceMissing,
    StorageUnavailable,
)
from pixelpipe.storage.cache import DownloadCache
from pixelpipe.storage.local import sha256_bytes

if TYPE_CHECKING:
    from obstore.store import (
        ClientConfig,
        RetryConfig,
        S3Config,
        S3Credential,
        S3CredentialProvider,
        S3Store,
    )

log = logging.getLogger(__name__)

SCHEME = "s3"
_CHUNK = 1024 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_USERINFO = re.compile(r"//[^/@\s]*@")
#: metadata key of the recorded sha256 (``x-amz-meta-sha256``)
META_SHA256 = "sha256"
_CONTENT_TYPES = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png",
                  "webp": "image/webp", "avif": "image/avif", "gif": "image/gif",
                  "tif": "image/tiff", "tiff": "image/tiff"}
T = TypeVar("T")


# ----------------------------------------------------------------------------- naming (pure)


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing ``/``; may be empty)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """``s3://bucket[/prefix]`` -> location; ``ConfigError`` for anything else."""
        check_s3_url(url)
        rest = url.strip()[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        return cls(bucket=bucket, prefix="/".join(p for p in prefix.split("/") if p))

    @property
    def url(self) -> str:
        return f"{SCHEME}://{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}://{self.bucket}"

    def key(self, relative: str) -> str:
        """The object key of a path relative to the prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def source_key(self, sha256: str) -> str:
        return self.key(f"sources/{sha256[:2]}/{sha256}")

    def output_key(self, key: str, extension: str) -> str:
        return self.key(f"outputs/{key[:2]}/{key}.{extension}")

    def output_folder(self, key: str) -> str:
        return self.key(f"outputs/{key[:2]}")

    def uri(self, object_key: str) -> str:
        return f"{SCHEME}://{self.bucket}/{object_key}"

    def source_sha_of(self, object_key: str) -> str | None:
        """The sha256 a key of this store's own layout names (``<prefix>/sources/ab/<sha>``),
        or None for any other key."""
        head = self.key("sources/")
        if not object_key.startswith(head):
            return None
        shard, _, sha = object_key[len(head):].partition("/")
        if _SHA256.match(sha) and shard == sha[:2]:
            return sha
        return None

    def key_of_uri(self, uri: str) -> str:
        """The object key an ``s3://`` URI names in this bucket; ``ForbiddenSource`` for
        another scheme, another bucket, or a key that is empty, has ``.``/``..``/empty
        segments, a query or a fragment, or control characters."""
        bucket, object_key = parse_s3_uri(uri)
        if bucket != self.bucket:
            raise ForbiddenSource(
                f"source {uri!r:.200} is outside the blob store (bucket {bucket!r}; this "
                f"store is {self.url})", processor="fetch")
        return object_key


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key), the key percent-decoded; ``ForbiddenSource``
    unless it is a well-formed S3 URI of one object."""
    parts = urlsplit(uri)
    if parts.scheme != SCHEME:
        raise ForbiddenSource(
            f"source URI scheme {parts.scheme or '(none)'!r} is not allowed by an S3 blob "
            f"store: {uri!r:.200}", processor="fetch")
    if parts.query or parts.fragment or "?" in uri or "#" in uri:
        raise ForbiddenSource(f"S3 URI with a query or fragment: {uri!r:.200}", processor="fetch")
    bucket = parts.netloc
    object_key = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not bucket or "@" in bucket or ":" in bucket:
        raise ForbiddenSource(f"S3 URI without a plain bucket: {uri!r:.200}", processor="fetch")
    segments = object_key.split("/")
    if (not object_key or len(object_key.encode()) > 1024
            or any(s in ("", ".", "..") for s in segments)
            or any(ord(c) < 32 or c in "\\\x7f" for c in object_key)):
        raise ForbiddenSource(f"bad S3 object key in {uri!r:.200}", processor="fetch")
    return bucket, object_key


def content_type_of(extension: str) -> str:
    return _CONTENT_TYPES.get(extension.lower(), "application/octet-stream")


# ----------------------------------------------------------------------- errors (pure)


def _message_of(exc: BaseException) -> str:
    """The first line of a client error, without any user:secret@ and at most 300 chars."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _USERINFO.sub("//", text)[:300]


def storage_error(exc: BaseException, action: str, what: str, *,
                  processor: str = "fetch") -> PixelpipeError:
    """The pixelpipe error for a failure of the S3 client (or the local cache) while doing
    ``action`` on ``what``: a missing object is ``SourceMissing``, everything else (refused
    credentials, timeouts, connection errors, server errors, a full disk) is
    ``StorageUnavailable``, which is retried. Our own errors pass through unchanged."""
    if isinstance(exc, PixelpipeError):
        return exc
    from obstore import exceptions as ox

    if isinstance(exc, FileNotFoundError | ox.NotFoundError):
        return SourceMissing(f"{what} does not exist in the S3 store", processor=processor)
    if isinstance(exc, ox.PermissionDeniedError | ox.UnauthenticatedError):
        return StorageUnavailable(
            f"S3 refused to {action} {what} (credentials or permissions): {_message_of(exc)}",
            processor=processor)
    return StorageUnavailable(f"S3 {action} of {what} failed: {type(exc).__name__}: "
                              f"{_message_of(exc)}", processor=processor)


def _guard(action: str, what: str, processor: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except PixelpipeError:
        raise
    except Exception as exc:
        raise storage_error(exc, action, what, processor=processor) from exc


# ------------------------------------------------------------------------------ the store


@dataclass(frozen=True, slots=True)
class S3StoredBlob:
    """A blob as stored in S3: its URI, object key, sha256 and size."""

    uri: str
    key: str
    sha256: str
    size: int


class StaticCredentials:
    """An obstore credential provider returning the settings' own keys: it wins over every
    credential the client would find in the process environment (and a session token of the
    environment never joins the settings' keys). Never shows the secrets."""

    __slots__ = ("_access_key_id", "_secret_access_key", "_session_token")

    def __init__(self, access_key_id: str, secret_access_key: str, session_token: str = "") -> None:
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._session_token = session_token

    def __call__(self) -> S3Credential:
        return {"access_key_id": self._access_key_id,
                "secret_access_key": self._secret_access_key,
                "token": self._session_token or None, "expires_at": None}

    def __repr__(self) -> str:
        return "StaticCredentials(<hidden>)"


def _credential_provider(*, access_key_id: str, secret_access_key: str, session_token: str,
                         region: str, profile: str) -> S3CredentialProvider | None:
    """The provider of explicit credentials: the profile's (boto3), or the static keys, or None
    (the client's own chain)."""
    if profile:
        try:
            import boto3
            from obstore.auth.boto3 import Boto3CredentialProvider
        except ImportError:
            raise ConfigError(f"AWS_PROFILE={profile}: profile credentials need boto3 "
                              "(pip install boto3), or set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY") from None
        try:
            return Boto3CredentialProvider(boto3.Session(profile_name=profile,
                                                         region_name=region or None))
        except Exception as exc:  # an unknown profile, one without credentials
            raise ConfigError(f"AWS_PROFILE={profile}: {_message_of(exc)}") from exc
    if bool(access_key_id) != bool(secret_access_key):
        raise ConfigError("S3 credentials need both AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY (only one is set)")
    if access_key_id:
        return StaticCredentials(access_key_id, secret_access_key, session_token)
    return None


def _client(location: S3Location, *, endpoint: str, timeout_s: float, retries: int,
            access_key_id: str = "", secret_access_key: str = "", session_token: str = "",
            region: str = "", profile: str = "") -> S3Store:
    from obstore.store import S3Store

    client_options: ClientConfig = {
        "timeout": f"{timeout_s:g}s",
        "connect_timeout": f"{min(timeout_s, 5.0):g}s",
    }
    # The endpoint comes from the settings (``PIXELPIPE_S3_ENDPOINT``, or the AWS endpoint
    # variables of the same mapping). Without one, obstore still reads the AWS endpoint
    # variables of this process's environment itself, so plain http is allowed for those too.
    fallback = os.environ.get("AWS_ENDPOINT_URL_S3", "") or os.environ.get("AWS_ENDPOINT_URL", "")
    if (endpoint or fallback).startswith("http://"):
        client_options["allow_http"] = True
    retry_config: RetryConfig = {
        "max_retries": retries,
        "retry_timeout": timedelta(seconds=timeout_s),
        "backoff": {"init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(seconds=2), "base": 2.0},
    }
    config: S3Config = {"checksum_algorithm": "sha256"}
    if endpoint:
        config["endpoint"] = endpoint
        config["virtual_hosted_style_request"] = False  # S3-compatible servers: path style
    if region:
        config["region"] = region
    provider = _credential_provider(access_key_id=access_key_id,
                                    secret_access_key=secret_access_key,
                                    session_token=session_token, region=region,
                                    profile=profile.strip())
    try:
        return S3Store(location.bucket, config=config, client_options=client_options,
                       retry_config=retry_config, credential_provider=provider)
    except Exception as exc:  # a bad option value: say which store, never the secrets
        raise ConfigError(f"cannot set up the S3 store {location.url}: {_message_of(exc)}") from exc


class S3BlobStore:
    """Blobs in an S3 bucket under a prefix; sources downloaded to a bounded local cache.

    Blocking methods, safe from many threads at once (the callers' ``asyncio.to_thread``)."""

    #: ``open_source`` may download the source
    opens_in_place = False

    def __init__(self, location: S3Location, *, cache_dir: Path, cache_bytes: int = 1 << 30,
                 endpoint: str = "", timeout_s: float = 30.0, retries: int = 3,
                 access_key_id: str = "", secret_access_key: str = "", session_token: str = "",
                 region: str = "", profile: str = "", client: S3Store | None = None) -> None:
        """Credentials, region and profile ('' : the client's own, from the process
        environment or instance metadata) are given to the client explicitly."""
        self.location = location
        self.endpoint = endpoint
        self.cache = DownloadCache(cache_dir, cache_bytes)
        self._client = client or _client(
            location, endpoint=endpoint, timeout_s=timeout_s, retries=retries,
            access_key_id=access_key_id, secret_access_key=secret_access_key,
            session_token=session_token, region=region, profile=profile)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        return cls(S3Location.parse(settings.data_url),
                   cache_dir=Path(settings.state_dir) / "s3-cache",
                   cache_bytes=settings.s3_cache_mb * 1024 * 1024,
                   endpoint=settings.s3_endpoint, timeout_s=settings.s3_timeout_s,
                   retries=settings.s3_retries, access_key_id=settings.s3_access_key_id,
                   secret_access_key=settings.s3_secret_access_key,
                   session_token=settings.s3_session_token, region=settings.s3_region,
                   profile=settings.s3_profile)

    def __repr__(self) -> str:  # never the credentials (the client holds them, not us)
        return f"S3BlobStore({self.location.url!r}, endpoint={self.endpoint or '(default)'!r})"

    # ----------------------------------------------------------------- naming

    def source_uri(self, sha256: str) -> str:
        return self.location.uri(self.location.source_key(sha256))

    def output_uri(self, key: str, extension: str) -> str:
        return self.location.uri(self.location.output_key(key, extension))

    # ----------------------------------------------------------------- reading

    def open_source(self, uri: str, *, max_bytes: int) -> Path:
        """HEAD (size against ``max_bytes``), then a verified download to the cache (or the
        cached copy of the same object version); the path is pinned until
        ``release_source``."""
        import obstore

        object_key = self.location.key_of_uri(uri)
        meta = _guard("read", repr(uri), "fetch", lambda: obstore.head(self._client, object_key))
        size = int(meta["size"])
        if size > max_bytes:  # checked here, before a byte is downloaded
            raise ImageTooLarge(f"source is {size} bytes; the limit is {max_bytes}",
                                processor="decode")
        etag = meta.get("e_tag")
        name = _cache_name(object_key, etag, size)
        if name is not None and (cached := self.cache.lookup(name)) is not None:
            return cached
        return self._download(uri, object_key, etag, size, max_bytes, name, pin=True)

    def release_source(self, path: Path) -> None:
        self.cache.release(path)

    def read(self, uri: str) -> bytes:
        """A blob's bytes, verified like ``open_source`` verifies a download."""
        import obstore

        object_key = self.location.key_of_uri(uri)

        def get() -> tuple[bytes, dict[str, Any]]:
            result = obstore.get(self._client, object_key)
            return bytes(result.bytes()), dict(result.attributes)

        data, attributes = _guard("read", repr(uri), "fetch", get)
        self._verify(uri, object_key, sha256_bytes(data), attributes)
        return data

    def find_output(self, key: str) -> tuple[str, Path] | None:
        """The stored output with ``key`` (any extension): one LIST of its shard starting
        after the key, then a verified download. An output whose bytes no longer match their
        recorded sha256 is deleted (it is derived: the render writes it again) and None is
        returned."""
        import obstore

        folder = self.location.output_folder(key)
        stem = f"{folder}/{key}."

        def first_match() -> dict[str, Any] | None:
            stream = obstore.list(self._client, prefix=folder, offset=f"{folder}/{key}",
                                  chunk_size=8)
            for chunk in stream:
                for meta in chunk:
                    if str(meta["path"]).startswith(stem):
                        return dict(meta)
                    return None
            return None

        found = _guard("list", f"outputs of key {key[:12]}...", "fetch", first_match)
        if found is None:
            return None
        object_key = str(found["path"])
        uri = self.location.uri(object_key)
        size = int(found["size"])
        name = _cache_name(object_key, found.get("e_tag"), size)
        if name is not None and (cached := self.cache.lookup(name)) is not None:
            self.cache.release(cached)  # not pinned: the caller reads it at once
            return uri, cached
        try:
            path = self._download(uri, object_key, found.get("e_tag"), size, None, name,
                                  pin=False)
        except ChecksumMismatch as error:
            log.warning("deleting corrupt output %s: %s", uri, error)
            _guard("delete", repr(uri), "store", lambda: obstore.delete(self._client, object_key))
            return None
        except SourceMissing:
            return None  # deleted since it was listed
        return uri, path

    def _download(self, uri: str, object_key: str, etag: str | None, size: int,
                  max_bytes: int | None, name: str | None, *, pin: bool) -> Path:
        import obstore

        options: dict[str, Any] = {"if_match": etag} if etag else {}
        fd, tmp = self.cache.temp_file()
        digest = hashlib.sha256()
        try:
            with os.fdopen(fd, "wb") as handle:
                def fetch() -> dict[str, Any]:
                    result = obstore.get(self._client, object_key, options=options)  # type: ignore[arg-type]
                    received = 0
                    for chunk in result.stream(min_chunk_size=_CHUNK):
                        received += len(chunk)
                        if max_bytes is not None and received > max_bytes:
                            raise ImageTooLarge(f"source grew past the limit of {max_bytes} "
                                                "bytes while downloading", processor="decode")
                        digest.update(chunk)
                        handle.write(chunk)
                    if received != size:
                        raise StorageUnavailable(
                            f"S3 read of {uri!r}: {received} bytes arrived, HEAD said {size}",
                            processor="fetch")
                    return dict(result.attributes)

                attributes = _guard("read", repr(uri), "fetch", fetch)
            self._verify(uri, object_key, digest.hexdigest(), attributes)
            final_name = name or f"x-{os.urandom(8).hex()}"
            return _guard("cache", repr(uri), "fetch",
                          lambda: self.cache.insert(final_name, tmp, size, pin=pin))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _verify(self, uri: str, object_key: str, actual: str,
                attributes: dict[str, Any]) -> None:
        """The bytes read against the key's own sha256 (a source) and the recorded one."""
        named = self.location.source_sha_of(object_key)
        if named is not None and actual != named:
            raise ChecksumMismatch(f"stored source {uri!r:.200} is corrupt: its bytes hash to "
                                   f"{actual[:12]}..., its key says {named[:12]}...",
                                   processor="fetch")
        recorded = attributes.get(META_SHA256)
        if isinstance(recorded, str) and _SHA256.match(recorded) and actual != recorded:
            raise ChecksumMismatch(f"stored blob {uri!r:.200} is corrupt: its bytes hash to "
                                   f"{actual[:12]}..., written as {recorded[:12]}...",
                                   processor="fetch")

    # ----------------------------------------------------------------- writing

    def put_source(self, data: bytes) -> S3StoredBlob:
        """Create-only; a source already stored (412) is left as it is, after a HEAD checks
        its size."""
        import obstore

        sha = sha256_bytes(data)
        object_key = self.location.source_key(sha)
        uri = self.location.uri(object_key)
        if not self._put_create(object_key, uri, data, sha, "application/octet-stream"):
            meta = _guard("read", repr(uri), "store", lambda: obstore.head(self._client, object_key))
            if int(meta["size"]) != len(data):
                raise ChecksumMismatch(f"stored source {uri!r:.200} is {meta['size']} bytes, "
                                       f"its content is {len(data)}", processor="store")
        return S3StoredBlob(uri=uri, key=object_key, sha256=sha, size=len(data))

    def put_output(self, key: str, extension: str, data: bytes) -> S3StoredBlob:
        """Create-only; when the key is already written (a redelivery, a racing worker), the
        result is the stored object's recorded sha256 and size."""
        sha = sha256_bytes(data)
        object_key = self.location.output_key(key, extension)
        uri = self.location.uri(object_key)
        if self._put_create(object_key, uri, data, sha, content_type_of(extension)):
            return S3StoredBlob(uri=uri, key=object_key, sha256=sha, size=len(data))
        stored_sha, size = self._recorded(uri, object_key)
        return S3StoredBlob(uri=uri, key=object_key, sha256=stored_sha, size=size)

    def _put_create(self, object_key: str, uri: str, data: bytes, sha: str,
                    content_type: str) -> bool:
        """True: written; False: the key already existed (412)."""
        import obstore
        from obstore import exceptions as ox

        attributes: dict[str, str] = {"Content-Type": content_type, META_SHA256: sha}
        try:
            obstore.put(self._client, object_key, data, mode="create", attributes=attributes)
        except (ox.AlreadyExistsError, ox.PreconditionError):
            return False
        except Exception as exc:
            raise storage_error(exc, "write", repr(uri), processor="store") from exc
        return True

    def _recorded(self, uri: str, object_key: str) -> tuple[str, int]:
        """(recorded sha256, size) of a stored object: one ranged GET of its first byte reads
        the metadata; an object written without it is read whole and hashed."""
        import obstore

        def meta() -> tuple[dict[str, Any], int]:
            result = obstore.get(self._client, object_key, options={"range": (0, 1)})
            return dict(result.attributes), int(result.meta["size"])

        attributes, size = _guard("read", repr(uri), "store", meta)
        recorded = attributes.get(META_SHA256)
        if isinstance(recorded, str) and _SHA256.match(recorded):
            return recorded, size
        data = _guard("read", repr(uri), "store",
                      lambda: bytes(obstore.get(self._client, object_key).bytes()))
        return sha256_bytes(data), len(data)

    def delete_output(self, uri: str) -> None:
        """Delete one output of this store (``store verify --repair`` of a corrupt one, which
        create-only writes would otherwise keep). Sources are immutable: refused."""
        import obstore

        object_key = self.location.key_of_uri(uri)
        if not object_key.startswith(self.location.key("outputs/")):
            raise ForbiddenSource(f"{uri!r:.200} is not an output: sources are never deleted",
                                  processor="store")
        _guard("delete", repr(uri), "store", lambda: obstore.delete(self._client, object_key))

    def close(self) -> None:
        self.cache.close()


def _cache_name(object_key: str, etag: object, size: int) -> str | None:
    """A cache file name for one version of an object (None: no ETag, not cacheable)."""
    if not isinstance(etag, str) or not etag:
        return None
    return hashlib.sha256(f"{object_key}\0{etag}\0{size}".encode()).hexdigest()
