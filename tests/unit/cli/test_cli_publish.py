"""Issue 12 point 7: ``publish --wait`` and dead letters: words on stderr, exit code 3."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from harness import PipelineEnv

from pixelpipe.cli import main
from pixelpipe.cli.common import EXIT_DEAD_LETTER
from pixelpipe.schemas.events import DeadLetter, ErrorInfo, Origin
from pixelpipe.streams.client import FinalOutcome


def letter(event_id: str, code: str, message: str, processor: str | None) -> DeadLetter:
    return DeadLetter(
        event_id=event_id, original={}, image_id="img",
        error=ErrorInfo(code=code, class_="x", message=message, processor=processor,
                        retryable=False),
        attempts=(), origin=Origin(topic="pixelpipe.uploads", partition=0, offset=1),
        first_failed_at="2024-01-01T00:00:00Z", dead_lettered_at="2024-01-01T00:00:00Z",
    )


class FakePublisher:
    """Stands in for ``streams.client.Publisher``: outcomes decided by the file's name."""

    def __init__(self, settings: Any) -> None:
        self.ids: dict[str, Path] = {}

    async def __aenter__(self) -> FakePublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def watch_outcomes(self) -> None:
        return None

    async def publish_file(self, path: Path, renditions: Any, *, priority: str) -> Any:
        event_id = f"ev-{path.stem}"
        self.ids[event_id] = path
        return SimpleNamespace(event_id=event_id, event=SimpleNamespace(image_id="img"),
                               partition=0, offset=len(self.ids))

    async def wait_for(self, event_id: str, timeout: float | None = None) -> FinalOutcome:
        if "broken" in event_id:
            return FinalOutcome("dead_letter", letter(event_id, "corrupt_image",
                                                 "not an image:\n  bad header", "decode"))
        if "odd" in event_id:
            return FinalOutcome("dead_letter", letter(event_id, "internal_error", "boom", None))
        return FinalOutcome("processed", letter(event_id, "-", "-", None))


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import pixelpipe.streams.client

    monkeypatch.setattr(pixelpipe.streams.client, "Publisher", FakePublisher)
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a-good", "b-broken", "c-good", "d-odd"):
        (folder / f"{name}.png").write_bytes(b"x")
    return folder


def test_dead_letters_are_told_on_stderr_and_exit_3(runner: CliRunner, images: Path) -> None:
    result = runner.invoke(main, ["publish", str(images), "--wait"])
    assert result.exit_code == EXIT_DEAD_LETTER == 3, result.output
    # the JSON stays on stdout, one line per event, in path order
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [line["status"] for line in lines] == ["processed", "dead_letter", "processed",
                                                 "dead_letter"]
    # and one line per dead letter on stderr: event id, path, code, processor, message
    assert result.stderr.splitlines() == [
        f"pixelpipe: dead letter: ev-b-broken ({images / 'b-broken.png'}): corrupt_image in "
        "decode: not an image: bad header",
        f"pixelpipe: dead letter: ev-d-odd ({images / 'd-odd.png'}): internal_error: boom",
    ]


def test_all_processed_exits_0_and_says_nothing(runner: CliRunner, images: Path) -> None:
    result = runner.invoke(main, ["publish", str(images / "a-good.png"), "--wait"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""


def test_help_documents_the_exit_codes(runner: CliRunner) -> None:
    text = runner.invoke(main, ["--help"]).output
    for line in ("0  ok", "1  error", "2  usage error", "3  publish --wait: at least one event "
                 "ended as a dead letter"):
        assert line in text
    assert "Exits 3 when --wait saw a dead letter" in runner.invoke(
        main, ["publish", "--help"]).output


@pytest.mark.parametrize(("code", "accepted"), [(0, True), (3, True), (2, False), (1, False)])
def test_the_harness_accepts_the_dead_letter_exit_code_not_the_usage_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: int, accepted: bool
) -> None:
    def fake_run(*args: Any, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess(args, code, b"", b"why")

    monkeypatch.setattr(subprocess, "run", fake_run)
    env = PipelineEnv(bootstrap="127.0.0.1:1", root=tmp_path)
    if accepted:
        assert env.cli("publish", "x").returncode == code
    else:
        with pytest.raises(AssertionError):
            env.cli("publish", "x")
