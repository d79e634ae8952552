"""The worker pool: hard timeouts kill and replace a process, crashes are retryable errors,
errors from children keep their class and processor."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest
from imaging_samples import encode, photo_like, png_bomb

from pixelpipe.errors import (
    ERROR_CLASSES,
    ImageTooLarge,
    InvalidOperation,
    PixelpipeError,
    ProcessingTimeout,
    UnsupportedFormat,
    WorkerCrashed,
)
from pixelpipe.imaging import ImagePool, Limits, parse_operations
from pixelpipe.imaging.ops.debug import DEBUG_ENV

OPS = parse_operations(["resize:width=32"])


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pool") / "photo.png"
    path.write_bytes(encode(photo_like(96, 64), ".png"))
    return path


@pytest.fixture(scope="module")
def debug_env() -> Iterator[None]:
    # set before the pool spawns its children, which inherit the environment
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(DEBUG_ENV, "1")
        yield


@pytest.fixture(scope="module")
async def pool(debug_env: None) -> AsyncIterator[ImagePool]:
    pool = ImagePool(workers=1, task_timeout_s=3, max_tasks_per_child=50, memory_limit_mb=2048)
    yield pool
    await pool.aclose(timeout=5)


def _worker_pids() -> list[int]:
    children = psutil.Process().children(recursive=False)
    return [c.pid for c in children if "resource_tracker" not in " ".join(c.cmdline())]


def test_errors_pickle_with_class_and_processor() -> None:
    for cls in ERROR_CLASSES.values():
        error = cls("boom", processor="resize")
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is cls and copy.processor == "resize" and str(copy) == "boom"


async def test_pool_renders(pool: ImagePool, source: Path) -> None:
    result = await pool.run(str(source), OPS, Limits())
    assert (result.width, result.height, result.format) == (32, 21, "png")


async def test_child_errors_come_back_as_the_same_class(
    pool: ImagePool, source: Path, tmp_path: Path
) -> None:
    text = tmp_path / "notes.jpg"
    text.write_bytes(b"not an image at all")
    with pytest.raises(UnsupportedFormat) as info:
        await pool.run(str(text), OPS, Limits())
    assert info.value.processor == "decode"
    with pytest.raises(InvalidOperation) as invalid:
        await pool.run(str(source), parse_operations(["crop:x=500,y=0,width=1,height=1"]))
    assert invalid.value.processor == "crop"


async def test_task_past_the_timeout_kills_its_process_and_the_next_is_served(
    pool: ImagePool, source: Path
) -> None:
    # Given a worker busy with a task that would block for a minute
    await pool.run(str(source), OPS, Limits())
    before = set(_worker_pids())
    hang = parse_operations(["debug-sleep:seconds=60"])
    # When it passes the 3 s hard timeout
    started = asyncio.get_running_loop().time()
    with pytest.raises(ProcessingTimeout) as info:
        await pool.run(str(source), hang, Limits())
    elapsed = asyncio.get_running_loop().time() - started
    # Then it fails as retryable processing_timeout in about the timeout, not the minute
    assert info.value.retryable and 2.5 < elapsed < 15
    # and the pool goes on serving with a new process
    result = await pool.run(str(source), OPS, Limits())
    assert result.width == 32
    assert set(_worker_pids()) - before, "the hung process was not replaced"


async def test_killed_worker_is_a_retryable_crash(pool: ImagePool, source: Path) -> None:
    # Given a task in flight
    task = asyncio.ensure_future(
        pool.run(str(source), parse_operations(["debug-sleep:seconds=2"]), Limits())
    )
    await asyncio.sleep(0.8)
    # When its process is killed (as the OOM killer would)
    for pid in _worker_pids():
        psutil.Process(pid).kill()
    # Then the task fails with worker_crashed, and the next is served
    with pytest.raises(WorkerCrashed) as info:
        await task
    assert info.value.retryable and "SIGKILL" in str(info.value)
    assert (await pool.run(str(source), OPS, Limits())).width == 32


async def test_memory_cap_turns_a_runaway_allocation_into_worker_crashed(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(7_000, 7_000))  # 147 MB once decoded, within the pixel limit
    async with ImagePool(workers=1, task_timeout_s=30, memory_limit_mb=400) as small:
        with pytest.raises(WorkerCrashed):
            await small.run(str(bomb), OPS, Limits())
        with pytest.raises(ImageTooLarge):  # and the limits still answer from the header
            await small.run(str(bomb), OPS, Limits(max_pixels=1_000_000))


async def test_errors_raised_are_all_pixelpipe_errors(pool: ImagePool, tmp_path: Path) -> None:
    with pytest.raises(PixelpipeError):
        await pool.run(str(tmp_path / "missing.png"), OPS, Limits())
