"""Issue 12 point 9: tables never wrap or cut event ids; piped, they are plain aligned columns
(no box characters, one line per row, no 80-column squeeze); on a terminal, a rich table when
it fits and the plain layout when it does not."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from click.testing import CliRunner
from test_cli_dlq_dry_run import MALFORMED, UUID_CORRUPT, UUID_GOOD, FakeReader

import pixelpipe.demo as demo
from pixelpipe.cli import main
from pixelpipe.cli.common import plain_lines, print_table
from pixelpipe.config import Settings

BOX = set("│┃━─┏┓┗┛┡┩└┘┳┻╇┼")
LONG_ID = "3f1c2a9e-1b7d-4c55-9a2e-0d6b1f0c9e11-and-a-suffix-that-makes-it-long"
LONG_TEXT = ("not an image: the decoder found no known header in the first 64 bytes; "
             "[name] is not markup; " * 3).strip()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def no_box(text: str) -> bool:
    return not (set(text) & BOX)


# --------------------------------------------------------------------------- the helper


def test_piped_tables_are_plain_aligned_columns_whatever_their_width() -> None:
    out = io.StringIO()
    print_table(("event id", "tries", "message"), [(LONG_ID, 3, LONG_TEXT), ("e2", 10, "x\ny")],
                title="2 things", wrap={"message"}, right={"tries"}, file=out)
    lines = out.getvalue().splitlines()
    assert no_box(out.getvalue())
    assert len(lines) == 3  # header + one line per row: nothing wraps
    assert lines[0].split() == ["event", "id", "tries", "message"]
    assert lines[1] == f"{LONG_ID}      3  {LONG_TEXT}"
    assert lines[2] == f"{'e2':{len(LONG_ID)}}     10  x y"  # newline in a cell: a space
    assert "2 things" not in out.getvalue()  # the title goes to stderr


def test_an_empty_cell_keeps_its_column() -> None:
    assert plain_lines(("a", "b", "c"), [["1", "-", "3"]]) == ["a  b  c", "1  -  3"]
    out = io.StringIO()
    print_table(("a", "b", "c"), [("1", "", "3"), ("1", None, "3")], file=out)
    assert out.getvalue().splitlines()[1:] == ["1  -  3", "1  -  3"]


def test_a_terminal_wide_enough_gets_a_rich_table_with_ids_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = Terminal()
    print_table(("event id", "message"), [(LONG_ID, LONG_TEXT)], wrap={"message"}, file=out)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # colours off
    assert not no_box(text)
    assert LONG_ID in text  # on one line, uncut
    lines = text.splitlines()
    assert all(len(line) <= 200 for line in lines)
    assert len(lines) > 5  # the free text wrapped to fit instead


def test_a_terminal_too_narrow_for_the_ids_gets_the_plain_layout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    out = Terminal()
    print_table(("event id", "code", "message"), [(LONG_ID, "corrupt_image", LONG_TEXT)],
                wrap={"message"}, file=out)
    text = out.getvalue()
    assert no_box(text) and "…" not in text
    assert text.splitlines()[1].startswith(f"{LONG_ID}  corrupt_image  not an image")


# --------------------------------------------------------------------------- the commands


def test_dlq_list_piped_is_plain_with_whole_ids(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pixelpipe.cli.dlq

    monkeypatch.setattr(pixelpipe.cli.dlq, "DeadLetterReader", FakeReader)
    result = runner.invoke(main, ["dlq", "list"])
    assert result.exit_code == 0, result.stderr
    assert no_box(result.stdout)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("dead-lettered at     event id")
    assert len(lines) == 5  # header + 4 letters, one line each
    assert [line.split()[2] for line in lines[1:]][:3] == [UUID_GOOD, UUID_CORRUPT, MALFORMED]
    assert "4 dead letter(s)" in result.stderr


def test_dlq_stats_piped_is_plain(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    import pixelpipe.cli.dlq

    class StatsReader(FakeReader):
        async def stats(self, where: Any = None) -> dict[str, Any]:
            return {"total": 2, "oldest": "a", "newest": "b", "replayed": 0, "not_replayed": 2,
                    "by_code": {"corrupt_image": 2}, "by_cause": {"corrupt_image": 2},
                    "by_processor": {"decode": 2}, "by_status": {"pending": 2}}

    monkeypatch.setattr(pixelpipe.cli.dlq, "DeadLetterReader", StatsReader)
    result = runner.invoke(main, ["dlq", "stats"])
    assert result.exit_code == 0, result.stderr
    assert no_box(result.stdout)
    assert "code           letters\ncorrupt_image        2\n" in result.stdout


def test_breaker_status_piped_is_plain(runner: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    import pixelpipe.streams.breaker_client

    async def rows(settings: Settings) -> list[dict[str, Any]]:
        return [{"processor": "resize", "state": "open", "failure_rate": 0.5, "slow_rate": 0.0,
                 "calls": 40, "since": "2024-05-01T12:00:00Z", "next_trial": None,
                 "reason": "failure rate 50% over 40 calls, above the 30% threshold"}]

    monkeypatch.setattr(pixelpipe.streams.breaker_client, "breaker_status", rows)
    result = runner.invoke(main, ["breaker", "status"])
    assert result.exit_code == 0, result.stderr
    assert no_box(result.stdout)
    header, row = result.stdout.splitlines()
    assert header.split()[:3] == ["processor", "state", "failure"]
    assert row.split()[:6] == ["resize", "open", "50%", "0%", "40", "2024-05-01T12:00:00Z"]
    assert row.endswith("failure rate 50% over 40 calls, above the 30% threshold")


def demo_rows() -> list[dict[str, Any]]:
    processed = {"renditions": [{"name": "thumbnail", "width": 200, "height": 200,
                                 "format": "jpeg", "size": 5000},
                                {"name": "web", "width": 800, "height": 600, "format": "webp",
                                 "size": 40_000}]}
    dead = {"error": {"message": LONG_TEXT}, "attempts": [{"tier": "1s"}, {"tier": "2s"}]}
    return [
        {"input": "sample-01-landscape.jpg", "what": "a photo", "expected": "processed",
         "got": "processed", "ok": True, "event_id": "e1", "outcome": processed},
        {"input": "not JSON at all", "what": "hostile event", "expected": "malformed_event",
         "got": "malformed_event", "ok": True, "event_id": "e2", "outcome": dead},
        {"input": "truncated.png", "what": "a cut-off file", "expected": "corrupt_image",
         "got": "processed", "ok": False, "event_id": "e3", "outcome": processed},
    ]


def test_the_demo_table_piped_is_plain_and_never_cut(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_run_demo(settings: Settings, *, keep_running: bool, photos: Any,
                      table: demo.TablePrinter | None = None) -> int:
        assert table is not None, "the CLI gives the demo its table printer"
        cells, styles = demo.results_table(demo_rows())
        table(demo.RESULT_COLUMNS, cells, title=demo.TABLE_TITLE, wrap={"details"},
              styles=styles)
        return 0

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    result = runner.invoke(main, ["demo"])
    assert result.exit_code == 0, result.stderr
    assert no_box(result.stdout)
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["input", "what", "result", "as", "expected", "details"]
    assert len(rows) == 3
    assert rows[0].startswith("sample-01-landscape.jpg  a photo")
    assert rows[0].endswith("thumbnail: 200x200 jpeg 4 KiB, web: 800x600 webp 39 KiB")
    assert rows[1].endswith(f"{LONG_TEXT} (attempts: 1s -> 2s)")  # the whole message
    assert "NO (expected corrupt_image)" in rows[2]
    assert demo.TABLE_TITLE in result.stderr


def test_the_demo_marks_unexpected_rows_for_the_terminal() -> None:
    _cells, styles = demo.results_table(demo_rows())
    assert styles == [None, None, "bold red"]
