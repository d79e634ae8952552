"""The S3 store's credentials, region and profile come from the settings' mapping (not the
process environment) and reach the client explicitly; no repr shows a secret. No network:
building a store connects to nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pixelpipe.config import Settings
from pixelpipe.errors import ConfigError
from pixelpipe.storage import open_store
from pixelpipe.storage.s3 import S3BlobStore

AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
       "AWS_PROFILE")
KEY_ID = "AKIAMAPPINGKEY0001"
SECRET = "mapping-secret-0123456789abcdef"
TOKEN = "mapping-session-token-fedcba9876"


def mapping(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"PIXELPIPE_DATA": "s3://media/pp", "PIXELPIPE_S3_ENDPOINT": "http://127.0.0.1:1",
            "PIXELPIPE_DATADIR": str(tmp_path), "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
            "AWS_REGION": "eu-west-3", **extra}


@pytest.fixture(autouse=True)
def other_env_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process environment holds other credentials, which must not be used."""
    for name in AWS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT0002")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "environment-token")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")


def test_the_mappings_credentials_and_region_reach_the_client(tmp_path: Path) -> None:
    store = open_store(Settings.from_env(mapping(tmp_path)))
    assert isinstance(store, S3BlobStore)
    client = store._client
    assert client.config["region"] == "eu-west-3"
    provider = client.credential_provider
    assert provider is not None
    assert provider() == {"access_key_id": KEY_ID, "secret_access_key": SECRET,
                          "token": TOKEN, "expires_at": None}
    # keys without a session token: none (not the environment's) is sent with them
    bare = {k: v for k, v in mapping(tmp_path).items() if k != "AWS_SESSION_TOKEN"}
    s3 = open_store(Settings.from_env(bare))
    assert isinstance(s3, S3BlobStore)
    bare_provider = s3._client.credential_provider
    assert bare_provider is not None and bare_provider()["token"] is None


def test_without_a_mapping_the_process_environment_is_read() -> None:
    settings = Settings.from_env()
    assert settings.s3_access_key_id == "AKIAENVIRONMENT0002"
    assert settings.s3_secret_access_key == "environment-secret"
    assert settings.s3_session_token == "environment-token"
    assert settings.s3_region == "ap-south-1"


def test_no_credentials_in_the_mapping_leave_the_clients_own_chain(tmp_path: Path) -> None:
    plain = {k: v for k, v in mapping(tmp_path).items() if not k.startswith("AWS_")}
    store = open_store(Settings.from_env(plain))
    assert isinstance(store, S3BlobStore)
    assert store._client.credential_provider is None
    assert "region" not in store._client.config


def test_no_repr_or_error_shows_a_secret(tmp_path: Path) -> None:
    settings = Settings.from_env(mapping(tmp_path))
    store = open_store(settings)
    assert isinstance(store, S3BlobStore)
    texts = [repr(settings), str(settings), repr(settings.with_(workers=3)), repr(store),
             repr(store._client), repr(store._client.credential_provider)]
    with pytest.raises(ConfigError) as half:
        open_store(Settings.from_env({**mapping(tmp_path), "AWS_SECRET_ACCESS_KEY": ""}))
    texts.append(str(half.value))
    for text in texts:
        assert KEY_ID not in text and SECRET not in text and TOKEN not in text, text
    assert "only one is set" in str(half.value)


def test_the_profile_is_read_from_the_mapping(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # boto3 absent: the profile is refused
    settings = Settings.from_env(mapping(tmp_path, AWS_PROFILE="media-writer"))
    assert settings.s3_profile == "media-writer"
    with pytest.raises(ConfigError, match=r"AWS_PROFILE=media-writer: .*boto3"):
        open_store(settings)


def test_the_endpoint_is_ours_else_the_aws_variables_of_the_same_mapping(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://environment.invalid:9")
    aws = {"AWS_ENDPOINT_URL": "http://generic.invalid:1",
           "AWS_ENDPOINT_URL_S3": "http://s3-specific.invalid:2"}
    assert Settings.from_env({"AWS_ENDPOINT_URL": aws["AWS_ENDPOINT_URL"]}).s3_endpoint == \
        "http://generic.invalid:1"
    assert Settings.from_env(aws).s3_endpoint == "http://s3-specific.invalid:2"
    ours = Settings.from_env({**aws, "PIXELPIPE_S3_ENDPOINT": "http://ours.invalid:3"})
    assert ours.s3_endpoint == "http://ours.invalid:3"
    assert Settings.from_env({}).s3_endpoint == ""  # the process environment is not read
