"""The worker's bearer token on the real worker (issue 14, security): ``/status`` and the
dashboard's data refuse a request without it; the probes and ``/metrics`` stay open; and the
token appears nowhere: not in the log, ``/status``, the heartbeats or ``pixelpipe status``."""

from __future__ import annotations

import urllib.error
import urllib.request

import orjson
import pytest
from harness import PipelineEnv, read_to_end, wait_until

from pixelpipe.streams.topics import workers_topic

pytestmark = [pytest.mark.broker]

TOKEN = "pp-t0ken-4f1c9e"  # a made-up secret, looked for everywhere afterwards


def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_token_guards_the_data_and_appears_nowhere(pipeline: PipelineEnv) -> None:
    worker = pipeline.start_worker("guarded", PIXELPIPE_WEB_TOKEN=TOKEN, PIXELPIPE_HEARTBEAT="1s")
    try:
        port = worker.web_port
        for path in ("/status", "/dashboard/data"):
            assert get(port, path)[0] == 401
            assert get(port, path, "wrong")[0] == 401
            status, body = get(port, path, TOKEN)
            assert status == 200 and TOKEN.encode() not in body
        for path in ("/health", "/ready", "/metrics", "/dashboard"):
            assert get(port, path)[0] == 200, path
        wait_until(lambda: len(read_to_end(pipeline.bootstrap,
                                           [workers_topic(pipeline.prefix)])) >= 2, 30,
                   "two heartbeats")
        beats = read_to_end(pipeline.bootstrap, [workers_topic(pipeline.prefix)])
        assert all(TOKEN.encode() not in (r.value or b"") for r in beats)
        status_out = pipeline.cli("status", "--json").stdout
        assert orjson.loads(status_out)["workers"] and TOKEN.encode() not in status_out
    finally:
        worker.stop()
    assert TOKEN not in worker.log()
