"""The web server beyond loopback needs a bearer token, and the token stays secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pixelpipe.agents.web import bearer_guard
from pixelpipe.config import Settings
from pixelpipe.errors import ConfigError


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.internal"])
def test_a_worker_bound_beyond_loopback_needs_a_token(host: str) -> None:
    with pytest.raises(ConfigError, match="PIXELPIPE_WEB_TOKEN"):
        Settings(web_host=host).check_web_exposure()
    Settings(web_host=host, web_token="t0ken").check_web_exposure()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_needs_none(host: str) -> None:
    Settings(web_host=host).check_web_exposure()


def test_the_token_is_in_no_repr_and_is_read_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret-value\n")
    settings = Settings.from_env({"PIXELPIPE_WEB_TOKEN_FILE": str(secret)})
    assert settings.web_token == "s3cret-value"
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"PIXELPIPE_WEB_TOKEN_FILE": str(tmp_path / "missing")})
    assert "missing" in str(refused.value)


class Request:
    def __init__(self, headers: dict[str, Any]) -> None:
        self.headers = headers


def test_the_guard_wants_exactly_the_bearer_token() -> None:
    assert bearer_guard(Settings()) is None  # no token: open (loopback)
    allowed = bearer_guard(Settings(web_token="t0ken"))
    assert allowed is not None
    assert allowed(Request({"Authorization": "Bearer t0ken"}))
    for wrong in ({}, {"Authorization": "Bearer t0ke"}, {"Authorization": "t0ken"},
                  {"Authorization": "Bearer t0ken "}, {"Authorization": "Basic t0ken"}):
        assert not allowed(Request(wrong))
