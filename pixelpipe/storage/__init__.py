"""Blob stores (the claim check): sources and outputs live here, events carry their URIs.

A local directory (``local.LocalBlobStore``, ``blob://`` URIs) or an S3 bucket
(``s3.S3BlobStore``, ``s3://`` URIs), both behind ``base.BlobStore``; ``open_store`` picks one
from the settings (``PIXELPIPE_DATA``).
"""

from __future__ import annotations

from pixelpipe.config import Settings
from pixelpipe.storage.base import BlobStore, StoredInfo
from pixelpipe.storage.local import (
    LocalBlobStore,
    StoredBlob,
    VerifiedHashes,
    output_key,
    sha256_file,
)


def open_store(settings: Settings) -> BlobStore:
    """The store ``settings`` name: ``s3://bucket/prefix`` (``settings.data_url``) or the
    local directory ``settings.data_dir``. The S3 store's downloads go under
    ``settings.state_dir``."""
    if settings.data_url:
        from pixelpipe.storage.s3 import S3BlobStore  # the client loads only when used

        return S3BlobStore.from_settings(settings)
    return LocalBlobStore(settings.data_dir)


__all__ = ["BlobStore", "LocalBlobStore", "StoredBlob", "StoredInfo", "VerifiedHashes",
           "open_store", "output_key", "sha256_file"]
