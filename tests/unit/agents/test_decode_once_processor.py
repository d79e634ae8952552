"""One failing rendition of an upload: the others are still rendered and stored, the upload
fails with that rendition's own code, and the retry renders only what is missing."""

from __future__ import annotations

from pathlib import Path

from test_upload_processor import ORIGIN, photo, png_of, upload_of

from pixelpipe.agents.faults import FaultInjector
from pixelpipe.agents.upload_processor import Failed, Processed, UploadProcessor
from pixelpipe.imaging import ImagePool, Limits
from pixelpipe.schemas import RenditionRequest
from pixelpipe.storage.local import LocalBlobStore

THREE = (
    RenditionRequest(name="a", operations=("resize:width=48", "format:type=jpeg")),
    RenditionRequest(name="b", operations=("resize:width=32", "blur:sigma=1",
                                           "format:type=png")),
    RenditionRequest(name="c", operations=("resize:width=24", "format:type=webp")),
)


class CountingPool:
    """The real pool, counting tasks and renditions submitted."""

    def __init__(self, pool: ImagePool) -> None:
        self.pool, self.tasks, self.renditions = pool, 0, 0
        self.workers, self.pending = pool.workers, 0

    def has_room(self) -> bool:
        return True

    async def run(self, *args: object, **kwargs: object) -> object:
        self.tasks, self.renditions = self.tasks + 1, self.renditions + 1
        return await self.pool.run(*args, **kwargs)  # type: ignore[arg-type]

    async def run_many(self, path: str, renditions: list[object], limits: Limits,
                       fault: str | None = None, expected_sha256: str | None = None) -> object:
        self.tasks, self.renditions = self.tasks + 1, self.renditions + len(renditions)
        return await self.pool.run_many(path, renditions, limits,  # type: ignore[arg-type]
                                        fault, expected_sha256)


async def test_a_failing_rendition_keeps_the_others_and_the_retry_renders_only_it(
    tmp_path: Path, pool: ImagePool
) -> None:
    store = LocalBlobStore(tmp_path)
    source = store.put_source(png_of(photo(96, 64)))
    counting = CountingPool(pool)
    # blur fails once (its first call), as a flaky processor would
    processor = UploadProcessor(store, counting, Limits(),  # type: ignore[arg-type]
                                faults=FaultInjector.parse("blur:storage_unavailable:1"))
    raw = upload_of(source, renditions=THREE)

    first = await processor.process(raw, ORIGIN)
    assert isinstance(first, Failed) and first.error.code == "storage_unavailable"
    assert first.error.processor == "blur"
    outputs = sorted(p.name for p in (tmp_path / "outputs").rglob("*.*"))
    assert [name.rsplit(".", 1)[1] for name in outputs] == sorted(["jpg", "webp"])
    assert (counting.tasks, counting.renditions) == (1, 2)  # a and c in one task

    again = await processor.process(raw, ORIGIN, attempts=2)
    assert isinstance(again, Processed), again
    assert [r.name for r in again.event.renditions] == ["a", "b", "c"]
    assert (counting.tasks, counting.renditions) == (2, 3)  # only b rendered again
    assert len(list((tmp_path / "outputs").rglob("*.*"))) == 3
