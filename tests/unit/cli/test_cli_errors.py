"""Issue 12 point 3: every user error is one line on stderr, a non-zero exit, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from pixelpipe.cli import main
from pixelpipe.config import Settings, bootstrap_from_url
from pixelpipe.errors import ConfigError

BAD_BROKER = "kafka://127.0.0.1:notaport"


def one_line_error(result: Result) -> str:
    """The single stderr line of a command that failed as a user error should."""
    assert result.exit_code == 1, (result.exit_code, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pixelpipe: error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("command", [
    ["consume"],
    ["breaker", "status"],
    ["breaker", "open", "resize"],
    ["dlq", "list"],
    ["dlq", "stats"],
])
def test_a_broker_url_with_a_bad_port_is_one_line_in_every_command(
    runner: CliRunner, command: list[str]
) -> None:
    result = runner.invoke(main, [*command, "--broker", BAD_BROKER])
    line = one_line_error(result)
    assert "'notaport'" in line and "--broker" in line and "PIXELPIPE_KAFKA" in line


def test_publish_with_a_bad_broker_port_is_one_line(runner: CliRunner, tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"not really a png")
    result = runner.invoke(main, ["publish", str(image), "--broker", BAD_BROKER])
    assert "'notaport'" in one_line_error(result)


def test_a_bad_port_in_the_environment_is_one_line(runner: CliRunner) -> None:
    result = runner.invoke(main, ["consume"], env={"PIXELPIPE_KAFKA": BAD_BROKER})
    assert "PIXELPIPE_KAFKA" in one_line_error(result)


@pytest.mark.parametrize("url", ["kafka://h:notaport", "kafka://:9092", "kafka://h:70000",
                                 "kafka://a:9092,kafka://b:x"])
def test_bad_broker_addresses_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        bootstrap_from_url(url)
    with pytest.raises(ConfigError):
        Settings.from_env({"PIXELPIPE_KAFKA": url})


@pytest.mark.parametrize(("url", "servers"), [
    ("kafka://127.0.0.1:9092", "127.0.0.1:9092"),
    ("kafka://a:9092;b:9093", "a:9092,b:9093"),
    ("kafka://a:1,kafka://b:2/", "a:1,b:2"),
    ("kafka://[::1]:9092", "[::1]:9092"),
    ("kafka://localhost", "localhost"),
    ("127.0.0.1:19092", "127.0.0.1:19092"),
])
def test_good_broker_addresses_still_parse(url: str, servers: str) -> None:
    assert bootstrap_from_url(url) == servers


def test_a_bad_broker_port_in_a_real_process_prints_one_line() -> None:
    # the whole process, as a user runs it: nothing but the one line, exit 1
    result = subprocess.run(
        [sys.executable, "-m", "pixelpipe", "consume", "--broker", BAD_BROKER],
        capture_output=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == b""
    assert len(result.stderr.decode().splitlines()) == 1, result.stderr.decode()


# --------------------------------------------------------------------------- worker web port


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Replaces the faust worker: records the settings it would have run with."""
    import pixelpipe.agents.worker

    runs: list[Settings] = []

    def fake_run_worker(settings: Settings, *, loglevel: str = "info") -> None:
        runs.append(settings)

    monkeypatch.setattr(pixelpipe.agents.worker, "run_worker", fake_run_worker)
    return runs


def test_a_worker_whose_web_port_is_taken_says_so_in_one_line(
    runner: CliRunner, taken_port: int, started: list[Settings]
) -> None:
    result = runner.invoke(main, ["worker", "--web-port", str(taken_port)])
    line = one_line_error(result)
    assert f"web port {taken_port}" in line and "already in use" in line
    assert "--web-port" in line and "PIXELPIPE_WEB_PORT" in line
    assert started == []  # faust never started


def test_a_web_port_taken_through_the_environment_is_one_line_too(
    runner: CliRunner, taken_port: int, started: list[Settings]
) -> None:
    result = runner.invoke(main, ["worker"], env={"PIXELPIPE_WEB_PORT": str(taken_port)})
    assert "PIXELPIPE_WEB_PORT" in one_line_error(result)
    assert started == []


def test_a_worker_with_a_free_web_port_starts(runner: CliRunner, started: list[Settings]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    result = runner.invoke(main, ["worker", "--web-port", str(port)])
    assert result.exit_code == 0, result.output
    assert [s.web_port for s in started] == [port]


# --------------------------------------------------------------------------- --debug


@pytest.fixture
def broken_consumer(monkeypatch: pytest.MonkeyPatch) -> None:
    import pixelpipe.streams.client

    class Broken:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(pixelpipe.streams.client, "ProcessedConsumer", Broken)


def test_an_unexpected_error_is_one_line_with_a_hint(
    runner: CliRunner, broken_consumer: None
) -> None:
    line = one_line_error(runner.invoke(main, ["consume"]))
    assert "RuntimeError: boom second line" in line and "--debug" in line


@pytest.mark.parametrize(("args", "env"), [
    (["--debug", "consume"], {}),
    (["consume"], {"PIXELPIPE_DEBUG": "1"}),
])
def test_debug_keeps_the_traceback(
    runner: CliRunner, broken_consumer: None, args: list[str], env: dict[str, str]
) -> None:
    result = runner.invoke(main, args, env=env)
    assert isinstance(result.exception, RuntimeError)
    runner.invoke(main, ["--help"])  # back to the default for the other tests


def test_usage_errors_keep_clicks_exit_code(runner: CliRunner) -> None:
    assert runner.invoke(main, ["consume", "--limit", "many"]).exit_code == 2


def test_a_worker_bound_beyond_loopback_without_a_token_refuses_in_one_line(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("PIXELPIPE_WEB_HOST", "0.0.0.0")
    monkeypatch.delenv("PIXELPIPE_WEB_TOKEN", raising=False)
    result = runner.invoke(main, ["worker", "--web-port", str(port)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "PIXELPIPE_WEB_TOKEN" in result.stderr
    assert "Traceback" not in result.output
