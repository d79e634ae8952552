"""Replay the fuzz corpus (benchmarks/fuzz/corpus) through the fuzz oracles.

Every file is a past finding or a seed input; each must end in an allowed outcome (a valid
event / operation / render, or the input error its target allows). Findings listed in
``corpus/known_open.json`` are known and not fixed yet: they are expected to fail (strictly,
so a fix shows up as XPASS and the entry can be removed). Renders run in one child process
with an address-space cap and a timeout, as in the fuzz run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))
import fuzz_oracles as oracles  # noqa: E402

OPEN = oracles.known_open()


def _cases(target: str) -> list[object]:
    cases: list[object] = []
    for path in oracles.corpus_files(target):
        key = f"{target}/{path.name}"
        marks = ([pytest.mark.xfail(reason=OPEN[key], strict=True)] if key in OPEN else [])
        cases.append(pytest.param(path, id=path.name, marks=marks))
    return cases


@pytest.fixture(scope="module")
def render_child() -> Iterator[oracles.RenderChild]:
    oracles.env_for_fuzzing()
    with oracles.RenderChild() as child:
        yield child


def test_the_corpus_has_every_target_and_stays_small() -> None:
    files = [p for t in oracles.TARGETS for p in oracles.corpus_files(t)]
    assert all(oracles.corpus_files(t) for t in oracles.TARGETS)
    assert max(p.stat().st_size for p in files) <= 20 * 1024
    assert sum(p.stat().st_size for p in files) <= 300 * 1024
    names = {f"{p.parent.name}/{p.name}" for p in files}
    assert set(OPEN) <= names, "known_open.json names a file that is not in the corpus"


@pytest.mark.parametrize("path", _cases("codec"))
def test_codec_corpus(path: Path) -> None:
    finding = oracles.check_codec(path.read_bytes())
    assert finding is None, finding.detail if finding else ""


@pytest.mark.parametrize("path", _cases("spec"))
def test_spec_corpus(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIXELPIPE_ENABLE_DEBUG_OPS", raising=False)
    finding = oracles.check_spec(oracles.load_json(path.read_bytes()))
    assert finding is None, finding.detail if finding else ""


@pytest.mark.parametrize("path", _cases("decode"))
def test_decode_corpus(path: Path, render_child: oracles.RenderChild) -> None:
    finding = oracles.check_decode(path.read_bytes(), render_child)
    assert finding is None, finding.detail if finding else ""
