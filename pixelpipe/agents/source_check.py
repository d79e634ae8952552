"""An upload's source, opened and checked against its event before anything renders it.

The size is checked here, against the event and the limit. The sha256 is checked where the
source's bytes are read anyway: by the image process that renders it, before decoding
(``ImagePool.run_many(expected_sha256=...)``), so a source is read once and hashed off the
event loop's process. This module hashes it only when nothing rendered it (``verify_here``),
and not at all when the same file, unchanged, was verified recently (``VerifiedHashes``: a
retry or a replay).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from pixelpipe.agents import stages
from pixelpipe.agents.faults import FaultInjector
from pixelpipe.errors import ChecksumMismatch, ImageTooLarge
from pixelpipe.imaging import Limits
from pixelpipe.schemas import UploadEvent
from pixelpipe.storage.base import BlobStore
from pixelpipe.storage.local import FileKey, VerifiedHashes, file_key


@dataclass(frozen=True, slots=True)
class OpenedSource:
    """An upload's source on local disk: ``key`` is its ``VerifiedHashes`` key as opened;
    ``verified``: that file was found to have the event's sha256 recently (a retry)."""

    path: Path
    key: FileKey
    verified: bool


def check_digest(actual: str, claimed: str) -> None:
    if actual != claimed:
        raise ChecksumMismatch.of_source(actual, claimed)


class SourceChecker:
    """Opens sources from ``store`` and remembers which files were verified."""

    def __init__(self, store: BlobStore, limits: Limits, faults: FaultInjector) -> None:
        self.store = store
        self.limits = limits
        self.faults = faults
        #: sources hashed recently: a retry or replay of the same file is not hashed again
        self.hashes = VerifiedHashes()

    async def open(self, upload: UploadEvent) -> OpenedSource:
        """The source on local disk, its size checked against the event and the limit (the
        caller releases it with ``store.release_source``)."""
        self.faults.check("fetch")
        if self.faults.active and (delay := self.faults.delay_for("fetch")):
            await asyncio.sleep(delay)
        if self.store.opens_in_place:  # a stat: cheaper here than a thread hop
            path = self.store.open_source(upload.source.uri, max_bytes=self.limits.max_bytes)
        else:  # the S3 store downloads here
            path = await asyncio.to_thread(self.store.open_source, upload.source.uri,
                                           max_bytes=self.limits.max_bytes)
        try:
            info = path.stat()
            if upload.source.size > self.limits.max_bytes:
                raise ImageTooLarge(
                    f"source declares {upload.source.size} bytes; the limit is "
                    f"{self.limits.max_bytes}",
                    processor="decode",
                )
            if info.st_size != upload.source.size:
                raise ChecksumMismatch(
                    f"source is {info.st_size} bytes, the event says {upload.source.size}",
                    processor="fetch",
                )
            key = file_key(info)
            known = self.hashes.known(key)
            if known is not None:
                check_digest(known, upload.source.sha256)
        except BaseException:  # whatever the store it came from, it is not used
            self.store.release_source(path)
            raise
        return OpenedSource(path, key, verified=known is not None)

    async def verify_here(self, upload: UploadEvent, source: OpenedSource) -> None:
        """Check the source's sha256 in this process (nothing rendered it)."""
        with stages.timed("source"):
            # hashlib releases the GIL on large buffers: a thread keeps the event loop free.
            actual = await asyncio.to_thread(self.hashes.sha256, source.path)
        check_digest(actual, upload.source.sha256)

    def verified_by_render(self, upload: UploadEvent, source: OpenedSource) -> None:
        """An image process read the source and found the event's sha256: remember it for a
        retry, if the file is still the one opened (the same key before and after its read)."""
        with contextlib.suppress(OSError):
            if file_key(source.path.stat()) == source.key:
                self.hashes.remember(source.key, upload.source.sha256)
