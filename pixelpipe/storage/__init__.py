"""Blob stores (the claim check): sources and outputs live here, events carry their URIs.

Today a local directory (``local.LocalBlobStore``); an S3-compatible store lands beside it.
"""

from pixelpipe.storage.local import (
    LocalBlobStore,
    StoredBlob,
    VerifiedHashes,
    output_key,
    sha256_file,
)

__all__ = ["LocalBlobStore", "StoredBlob", "VerifiedHashes", "output_key", "sha256_file"]
