"""The broker connection's security settings (issue 14): ``kafka+ssl://`` selects TLS, SASL
user/password/mechanism, the refusal of plaintext to a broker beyond loopback, and the password
kept out of every repr and error message."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from pixelpipe.config import Settings, bootstrap_from_url, broker_uses_tls
from pixelpipe.errors import ConfigError

PASSWORD = "pp-kafka-pa55-9d2e"  # a made-up secret, looked for in every message below

#: a CA certificate (any one will do for loading): made once per session with openssl
_CA_CACHE: dict[str, Path] = {}


@pytest.fixture
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if "ca" not in _CA_CACHE:
        folder = tmp_path_factory.mktemp("ca")
        subprocess.run(
            ["openssl", "req", "-x509", "-new", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=test CA", "-keyout", str(folder / "ca.key"),
             "-out", str(folder / "ca.crt")], check=True, capture_output=True)
        _CA_CACHE["ca"] = folder / "ca.crt"
    return _CA_CACHE["ca"]


def sasl_env(**extra: str) -> dict[str, str]:
    env = {"PIXELPIPE_KAFKA": "kafka+ssl://broker.example:9094",
           "PIXELPIPE_KAFKA_USER": "pixelpipe", "PIXELPIPE_KAFKA_PASSWORD": PASSWORD}
    env.update(extra)
    return env


@pytest.mark.parametrize(("url", "servers", "tls"), [
    ("kafka+ssl://127.0.0.1:9094", "127.0.0.1:9094", True),
    ("kafka+ssl://a:1,kafka+ssl://b:2", "a:1,b:2", True),
    ("kafka+ssl://a:1;b:2", "a:1,b:2", True),
    ("KAFKA+SSL://a:1,b:2/", "a:1,b:2", True),
    ("kafka+ssl://[::1]:9094", "[::1]:9094", True),
    ("kafka://a:1,b:2", "a:1,b:2", False),
    ("127.0.0.1:9092", "127.0.0.1:9092", False),
])
def test_kafka_ssl_urls_parse(url: str, servers: str, tls: bool) -> None:
    assert bootstrap_from_url(url) == servers
    assert broker_uses_tls(url) is tls
    settings = Settings(broker=url, kafka_allow_plaintext=True)
    assert settings.bootstrap_servers == servers and settings.kafka_tls is tls


@pytest.mark.parametrize("url", ["kafka://a:1,kafka+ssl://b:2", "kafka+tls://a:1",
                                 "kafka+ssl://a:notaport"])
def test_bad_or_mixed_urls_are_one_line_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PIXELPIPE_KAFKA": url})
    assert "\n" not in str(caught.value)


def test_credentials_in_the_url_are_refused_and_never_echoed() -> None:
    with pytest.raises(ConfigError, match="PIXELPIPE_KAFKA_USER") as caught:
        Settings.from_env({"PIXELPIPE_KAFKA": f"kafka+ssl://pixelpipe:{PASSWORD}@h:9094"})
    assert PASSWORD not in str(caught.value)


def test_security_protocol_follows_url_and_user() -> None:
    assert Settings.from_env(sasl_env()).kafka_security_protocol == "SASL_SSL"
    assert Settings(broker="kafka+ssl://h:1").kafka_security_protocol == "SSL"
    assert Settings().kafka_security_protocol == "PLAINTEXT"
    local_sasl = Settings(kafka_user="u", kafka_password=PASSWORD)
    assert local_sasl.kafka_security_protocol == "SASL_PLAINTEXT"


def test_mechanism_defaults_to_scram_sha_512_and_is_checked() -> None:
    assert Settings.from_env(sasl_env()).kafka_sasl_mechanism == "SCRAM-SHA-512"
    lower = Settings.from_env(sasl_env(PIXELPIPE_KAFKA_SASL_MECHANISM="scram-sha-256"))
    assert lower.kafka_sasl_mechanism == "SCRAM-SHA-256"
    with pytest.raises(ConfigError, match="PIXELPIPE_KAFKA_SASL_MECHANISM"):
        Settings.from_env(sasl_env(PIXELPIPE_KAFKA_SASL_MECHANISM="GSSAPI"))


@pytest.mark.parametrize("host", ["10.0.0.5", "kafka-1", "broker.example", "[2001:db8::1]",
                                  "0.0.0.0"])
def test_plaintext_beyond_loopback_is_refused_unless_allowed(host: str) -> None:
    env = {"PIXELPIPE_KAFKA": f"kafka://127.0.0.1:9092,kafka://{host}:9092"}
    settings = Settings.from_env(env)
    with pytest.raises(ConfigError, match="PIXELPIPE_KAFKA_ALLOW_PLAINTEXT=1") as caught:
        settings.check_kafka_transport()
    assert "\n" not in str(caught.value)
    Settings.from_env({**env, "PIXELPIPE_KAFKA_ALLOW_PLAINTEXT": "1"}).check_kafka_transport()
    with pytest.raises(ConfigError, match="PIXELPIPE_KAFKA_ALLOW_PLAINTEXT"):
        Settings.from_env({**env, "PIXELPIPE_KAFKA_ALLOW_PLAINTEXT": "maybe"})
    # SASL without TLS is plaintext too
    with pytest.raises(ConfigError):
        Settings.from_env({**env, "PIXELPIPE_KAFKA_USER": "u",
                           "PIXELPIPE_KAFKA_PASSWORD": PASSWORD}).check_kafka_transport()


@pytest.mark.parametrize("url", ["kafka://127.0.0.1:9092", "kafka://127.3.2.1:1",
                                 "kafka://localhost:9092", "kafka://[::1]:9092", "localhost",
                                 "kafka+ssl://broker.example:9094"])
def test_loopback_plaintext_and_any_tls_are_allowed(url: str) -> None:
    Settings.from_env({"PIXELPIPE_KAFKA": url}).check_kafka_transport()


def test_every_client_build_refuses_plaintext_beyond_loopback(tmp_path: Path) -> None:
    from pixelpipe.agents.app import create_app
    from pixelpipe.streams import kafka

    settings = Settings(broker="kafka://10.9.8.7:9092", state_dir=tmp_path)
    for build in (lambda: kafka.producer(settings), lambda: kafka.admin(settings),
                  lambda: kafka.consumer(settings, "t", group=None),
                  lambda: create_app(settings)):
        with pytest.raises(ConfigError, match="refusing an unencrypted"):
            build()


def test_the_password_is_in_no_repr_and_no_error(tmp_path: Path) -> None:
    settings = Settings.from_env(sasl_env())
    assert settings.kafka_password == PASSWORD
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings)
    assert PASSWORD not in repr(settings.with_(workers=3))
    errors = []
    for env in (sasl_env(PIXELPIPE_KAFKA_USER=""), sasl_env(PIXELPIPE_KAFKA_SASL_MECHANISM="X"),
                sasl_env(PIXELPIPE_KAFKA_CA_FILE=str(tmp_path / "missing.pem")),
                sasl_env(PIXELPIPE_KAFKA="kafka://127.0.0.1:9092",
                         PIXELPIPE_KAFKA_CA_FILE=str(tmp_path)),
                sasl_env(PIXELPIPE_WORKERS="0")):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(env)
        errors.append(str(caught.value))
    assert errors and not [e for e in errors if PASSWORD in e or "\n" in e]


def test_user_and_password_come_together() -> None:
    with pytest.raises(ConfigError, match="no password"):
        Settings.from_env(sasl_env(PIXELPIPE_KAFKA_PASSWORD=""))
    with pytest.raises(ConfigError, match="no user"):
        Settings.from_env(sasl_env(PIXELPIPE_KAFKA_USER=""))


def test_the_password_is_read_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "kafka.password"
    secret.write_text(f"{PASSWORD}\n")
    env = sasl_env(PIXELPIPE_KAFKA_PASSWORD="", PIXELPIPE_KAFKA_PASSWORD_FILE=str(secret))
    assert Settings.from_env(env).kafka_password == PASSWORD
    # the file wins over the variable (as PIXELPIPE_WEB_TOKEN_FILE does)
    both = sasl_env(PIXELPIPE_KAFKA_PASSWORD="other", PIXELPIPE_KAFKA_PASSWORD_FILE=str(secret))
    assert Settings.from_env(both).kafka_password == PASSWORD
    missing = sasl_env(PIXELPIPE_KAFKA_PASSWORD_FILE=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"PIXELPIPE_KAFKA_PASSWORD_FILE.*cannot read"):
        Settings.from_env(missing)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        Settings.from_env(sasl_env(PIXELPIPE_KAFKA_PASSWORD_FILE=str(tmp_path / "empty")))


def test_the_ca_file_needs_a_tls_url(ca_file: Path) -> None:
    with pytest.raises(ConfigError, match="not TLS"):
        Settings.from_env({"PIXELPIPE_KAFKA": "kafka://127.0.0.1:9092",
                           "PIXELPIPE_KAFKA_CA_FILE": str(ca_file)})


def test_clients_get_tls_and_sasl_options(ca_file: Path) -> None:
    from pixelpipe.streams import kafka

    settings = Settings.from_env(sasl_env(PIXELPIPE_KAFKA_CA_FILE=str(ca_file)))
    options = kafka.security_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert options["ssl_context"].check_hostname
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "pixelpipe"
    assert options["sasl_plain_password"] == PASSWORD
    assert kafka.security_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert PASSWORD not in kafka.describe_connection(settings)


def test_a_ca_file_that_is_no_pem_is_one_line(tmp_path: Path) -> None:
    from pixelpipe.streams import kafka

    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    settings = Settings.from_env(sasl_env(PIXELPIPE_KAFKA_CA_FILE=str(bogus)))
    with pytest.raises(ConfigError, match="PIXELPIPE_KAFKA_CA_FILE") as caught:
        kafka.producer(settings)
    assert PASSWORD not in str(caught.value) and "\n" not in str(caught.value)


def test_faust_gets_sasl_credentials_over_tls(ca_file: Path, tmp_path: Path) -> None:
    import faust

    from pixelpipe.agents.app import PRODUCER_SCHEME, broker_credentials, create_app
    from pixelpipe.streams import kafka

    settings = Settings.from_env(sasl_env(PIXELPIPE_KAFKA_CA_FILE=str(ca_file)),
                                 state_dir=tmp_path)
    credentials = broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "pixelpipe" and credentials.password == PASSWORD
    assert PASSWORD not in repr(credentials)
    app = create_app(settings)
    assert all(str(url).startswith(f"{PRODUCER_SCHEME}:") for url in app.conf.broker)
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_plain_password"] == PASSWORD
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    tls_only = Settings(broker="kafka+ssl://h:1", kafka_ca_file=str(ca_file), state_dir=tmp_path)
    assert isinstance(broker_credentials(tls_only), faust.SSLCredentials)
    assert broker_credentials(Settings(state_dir=tmp_path)) is None
    assert kafka.security_options(tls_only)["security_protocol"] == "SSL"


def test_the_cli_refuses_plaintext_beyond_loopback_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pixelpipe", "status", "--json"],
        env={"PATH": "/usr/bin:/bin", "PIXELPIPE_KAFKA": "kafka://10.9.8.7:9092",
             "PIXELPIPE_KAFKA_USER": "u", "PIXELPIPE_KAFKA_PASSWORD": PASSWORD},
        capture_output=True, timeout=60, check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert stderr.count("\n") == 1 and "refusing an unencrypted" in stderr
    assert "Traceback" not in stderr and PASSWORD not in stderr + result.stdout.decode()
