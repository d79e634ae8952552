"""Issue 12 point 11, the smaller items: a readable message for an upload that is not UTF-8
JSON, ``publish`` of a folder without images, the same clean "cannot reach Kafka" line from
every command, no setuptools warning on install, the broker start time in infra/README.md."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from pixelpipe.cli import main
from pixelpipe.cli.common import describe
from pixelpipe.errors import MalformedEvent
from pixelpipe.schemas.codec import decode_upload

ROOT = Path(__file__).resolve().parents[3]


# --------------------------------------------------------------------------- (a) not JSON at all


@pytest.mark.parametrize(("raw", "words"), [
    # the demo's hostile event: orjson said "str is not valid UTF-8: surrogates not allowed"
    (b"\x00\xffthis is { not json", "not valid JSON: not UTF-8 text: byte 0xff at offset 1"),
    (b'{"image_id": "caf\xc3"}', "not valid JSON: not UTF-8 text: byte 0xc3 at offset 17"),
    (b'{"event_id": ', "not valid JSON: unexpected end of data at byte offset 13"),
    (b"", "not valid JSON: the message is empty"),
])
def test_an_upload_that_is_not_json_says_what_is_wrong_and_where(raw: bytes, words: str) -> None:
    with pytest.raises(MalformedEvent) as info:
        decode_upload(raw)
    assert str(info.value).startswith(words), str(info.value)
    assert "surrogates" not in str(info.value)
    assert info.value.code == "malformed_event"


# --------------------------------------------------------------------------- (b) empty folder


def test_publishing_a_folder_without_images_says_so_and_exits_1(
    runner: CliRunner, tmp_path: Path
) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    result = runner.invoke(main, ["publish", str(empty), "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"pixelpipe: error: no images found under {empty} (looked for ")
    assert ".jpg" in line and "nothing published" in line


# --------------------------------------------------------------------------- (c) cannot reach Kafka


def test_publish_says_cannot_reach_kafka_exactly_as_the_other_commands(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real client against a closed port (nothing listens on 1): no broker needed
    monkeypatch.setenv("PIXELPIPE_DATA", str(tmp_path / "data"))
    image = tmp_path / "a.png"
    image.write_bytes(b"x")
    broker = ["--broker", "kafka://localhost:1"]
    lines = {}
    for command in (["publish", str(image)], ["publish", str(image), "--wait"], ["consume"],
                    ["dlq", "list"]):
        result = runner.invoke(main, [*command, *broker])
        assert result.exit_code == 1, result.output
        (lines[command[0] + str(len(command))],) = result.stderr.splitlines()
    assert set(lines.values()) == {
        "pixelpipe: error: cannot reach Kafka at localhost:1 (KafkaConnectionError)"
    }


def test_a_raw_kafka_error_never_shows_the_socket_family() -> None:
    from aiokafka.errors import KafkaConnectionError

    error = KafkaConnectionError(
        "Unable to bootstrap from [('localhost', 1, <AddressFamily.AF_UNSPEC: 0>), "
        "('::1', 1, <AddressFamily.AF_INET6: 10>)]"
    )
    line = describe(error)
    assert "AddressFamily" not in line
    assert "Unable to bootstrap from [('localhost', 1), ('::1', 1)]" in line


# --------------------------------------------------------------------------- (e) install warning


def test_the_editable_install_uses_a_plain_path_entry_for_pixelpipe_only() -> None:
    """``pip install -e .`` warned "Please be careful with folders ... same name as your
    package": setuptools says so whenever it installs its import finder, which it does for a
    flat layout without an explicit ``package-dir``. With ``"" = "."`` it writes a .pth entry
    instead, and the package discovery still takes pixelpipe and nothing else."""
    from setuptools import find_packages

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"": "."}
    include = config["packages"]["find"]["include"]
    packages = find_packages(str(ROOT), include=include)
    assert "pixelpipe" in packages and "pixelpipe.cli" in packages
    assert all(p == "pixelpipe" or p.startswith("pixelpipe.") for p in packages)


# --------------------------------------------------------------------------- (f) broker start time


def test_infra_readme_gives_the_measured_cold_start() -> None:
    text = " ".join((ROOT / "infra" / "README.md").read_text().split())
    assert "6-7 s" not in text
    assert "about 40 s with an empty Maven cache" in text and "about 15 s" in text
