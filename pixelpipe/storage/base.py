"""What a blob store is to its callers (the worker's upload processor, the publisher).

Two implementations: ``local.LocalBlobStore`` (a directory, ``blob://`` URIs) and
``s3.S3BlobStore`` (an S3 bucket and prefix, ``s3://`` URIs), chosen by ``open_store`` from
``PIXELPIPE_DATA``. The methods are **blocking**: callers run them in a thread
(``asyncio.to_thread``), as they always did for the local store; the S3 store's client
(obstore) releases the GIL while it waits on the network.

The image pool's child processes open a source by its **file path**, so ``open_source``
returns a local path for both: the local store's own file, or the S3 store's verified download
in a cache under the worker's state directory. ``release_source`` tells the store the caller
is done with that path (a no-op for the local store; the S3 cache may then evict it).

``opens_in_place`` says whether ``open_source`` only looks at a file already on this machine
(the local store: one ``stat``) and so may be called on the event loop: a thread hop costs
the worker more CPU than that ``stat`` (measured in ``benchmarks/pipeline/RESULTS.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable


class StoredInfo(Protocol):
    """What a write returns: the blob's URI, sha256 and size (``local.StoredBlob`` has them,
    and the path on disk besides)."""

    @property
    def uri(self) -> str: ...

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...


@runtime_checkable
class BlobStore(Protocol):
    """The content-addressed claim-check store (see ``local.py`` for the layout)."""

    #: ``open_source`` never downloads or reads: cheap enough for the event loop
    opens_in_place: bool

    def source_uri(self, sha256: str) -> str:
        """The URI of the source whose bytes have this sha256."""
        ...

    def output_uri(self, key: str, extension: str) -> str:
        """The URI of the output with this derived key (``local.output_key``)."""
        ...

    def open_source(self, uri: str, *, max_bytes: int) -> Path:
        """A local path holding the source's bytes, checked against ``max_bytes`` before any
        byte is read. Raises ``ForbiddenSource``, ``SourceMissing``, ``ImageTooLarge``,
        ``ChecksumMismatch`` (a stored copy that is not what it was) or
        ``StorageUnavailable``."""
        ...

    def release_source(self, path: Path) -> None:
        """The caller is done with a path ``open_source`` returned."""
        ...

    def put_source(self, data: bytes) -> StoredInfo:
        """Store source bytes under their sha256; a source already there is left as it is."""
        ...

    def put_output(self, key: str, extension: str, data: bytes) -> StoredInfo:
        """Store an output under its derived key; writing the same key again is harmless
        (the result describes the bytes that are stored)."""
        ...

    def find_output(self, key: str) -> tuple[str, Path] | None:
        """(URI, local path of its bytes) of the stored output with ``key``, or None."""
        ...

    def read(self, uri: str) -> bytes:
        """The bytes of a blob of this store."""
        ...

    def close(self) -> None:
        """Release what the store holds (the S3 store's download cache)."""
        ...
