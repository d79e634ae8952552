"""The demo keeps to its own namespace, says why when its worker dies, leaves no stale results
(issue 12, points 1 and 8)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import pixelpipe.demo as demo
from pixelpipe.config import Settings
from pixelpipe.errors import BrokerUnavailable, OutcomeTimeout


def test_the_demo_gets_its_own_prefix_app_id_and_a_free_port() -> None:
    base = Settings(topic_prefix="pixelpipe", app_id="pixelpipe", web_port=6066)
    one, two = demo.isolated(base), demo.isolated(base)
    assert one.topic_prefix.startswith("pixelpipe-demo-") and one.topic_prefix != two.topic_prefix
    assert one.app_id.startswith("pixelpipe-demo-") and one.app_id != base.app_id
    assert one.web_port not in (0, 6066)


class NeverAnswers:
    async def wait_for(self, event_id: str, timeout: float | None = None) -> None:
        await asyncio.sleep(0)
        raise OutcomeTimeout("nothing yet")


async def test_a_dead_worker_is_noticed_and_named_in_one_line(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text("starting\npixelpipe: error: port 6066 is taken; use --web-port\n")
    worker = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    worker.wait()
    with pytest.raises(demo.DemoFailed) as failed:
        await demo._outcome(NeverAnswers(), "e1", worker, log, timeout=300)  # type: ignore[arg-type]
    message = str(failed.value)
    assert "exited with code 3" in message and "port 6066 is taken" in message
    assert "\n" not in message


def test_a_stale_results_file_is_removed_even_when_the_demo_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / ".pixelpipe" / "demo" / "results.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"from": "an earlier run"}\n')

    async def no_broker(settings: Settings) -> bool:
        return False

    monkeypatch.setattr(demo, "_broker_answers", no_broker)
    monkeypatch.setattr(demo, "find_kafka_sh", lambda checkout=None: None)
    with pytest.raises(BrokerUnavailable):
        demo.run_demo(Settings())
    assert not stale.exists()
