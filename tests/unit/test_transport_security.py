"""Kafka TLS and SASL reach every client, and ClickHouse over https verifies its server.

No TLS broker runs here, so the Kafka side is checked on the configurations the clients are built
from (and librdkafka is made to read the files), plus a real TLS handshake with the context Faust
gets. The ClickHouse side talks to a real TLS listener (``tests/support/tls.py``).
"""

from __future__ import annotations

import ast
import socket
import ssl
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from infra.clickhouse import connect, server_options
from infra.kafka import client_config, ssl_context
from infra.settings import ClickHouseSettings, KafkaSettings, ProducerSettings, Settings
from producers.sender.process import sender_config
from stream_processors.app import create_app
from tests.support.tls import CLIENT_KEY_PASSWORD, Certificates, TlsServer, make_certificates

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("feedbackloop", "reporting", "producers", "stream_processors", "sinks", "experiments", "infra")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """One throw-away PKI for this module."""
    return make_certificates(tmp_path_factory.mktemp("pki"))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _secure(certs: Certificates, **changes: object) -> KafkaSettings:
    values: dict[str, object] = {
        "bootstrap_servers": f"127.0.0.1:{_closed_port()}",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "scram-sha-512",
        "sasl_username": "fl-worker",
        "sasl_password": SecretStr("sasl-secret-0001"),
        "ssl_ca_file": certs.ca,
        "ssl_cert_file": certs.client_cert,
        "ssl_key_file": certs.client_key,
        "ssl_key_password": SecretStr(CLIENT_KEY_PASSWORD),
        **changes,
    }
    return KafkaSettings.model_validate(values)


# ----------------------------------------------------------------------------- confluent-kafka


def test_client_config_carries_tls_and_sasl(certs: Certificates) -> None:
    config = client_config(_secure(certs), **{"group.id": "g"})
    assert config["security.protocol"] == "SASL_SSL"
    assert (config["sasl.mechanism"], config["sasl.username"]) == ("SCRAM-SHA-512", "fl-worker")
    assert config["sasl.password"] == "sasl-secret-0001"
    assert config["ssl.ca.location"] == str(certs.ca)
    assert config["ssl.certificate.location"] == str(certs.client_cert)
    assert config["ssl.key.location"] == str(certs.client_key)
    assert config["ssl.key.password"] == CLIENT_KEY_PASSWORD
    assert config["enable.ssl.certificate.verification"] is True
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    assert config["group.id"] == "g"
    unchecked = client_config(_secure(certs, ssl_check_hostname=False))
    assert unchecked["ssl.endpoint.identification.algorithm"] == "none"


def test_relative_tls_paths_become_absolute(certs: Certificates, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(certs.ca.parent)
    config = client_config(_secure(certs, ssl_ca_file=Path("ca.pem")))
    assert config["ssl.ca.location"] == str(certs.ca)


def test_secrets_stay_out_of_configurations_that_do_not_use_them(certs: Certificates) -> None:
    plain = client_config(_secure(certs, security_protocol="PLAINTEXT"))
    assert not any(key.startswith(("sasl.", "ssl.")) for key in plain)
    tls_only = client_config(_secure(certs, security_protocol="SSL"))
    assert "sasl.password" not in tls_only
    assert tls_only["ssl.key.password"] == CLIENT_KEY_PASSWORD


def test_a_certificate_needs_its_key() -> None:
    with pytest.raises(ValueError, match="ssl_key_file go together"):
        KafkaSettings(ssl_cert_file=Path("client.pem"))


def test_librdkafka_reads_the_files_every_client_is_given(certs: Certificates) -> None:
    """Producer, consumer and admin client: built from the configuration with the CA, the client
    certificate and its encrypted key, they load them; a missing CA or a wrong key password stops
    the client from being made at all (so the keys really reach librdkafka)."""
    kafka = _secure(certs)
    clients = [
        Producer(client_config(kafka)),
        Consumer(client_config(kafka, **{"group.id": "g"})),
        AdminClient(client_config(kafka)),
    ]
    assert len(clients) == 3
    with pytest.raises(KafkaException, match=r"ssl\.ca\.location|No such file"):
        Producer(client_config(_secure(certs, ssl_ca_file=certs.ca.parent / "missing.pem")))
    with pytest.raises(KafkaException, match=r"(?i)key|decrypt|password"):
        Consumer(client_config(_secure(certs, ssl_key_password=SecretStr("wrong")), **{"group.id": "g"}))


def _constructors(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("Producer", "Consumer", "AdminClient")
    ]


def _assigned(tree: ast.AST) -> dict[str, list[str]]:
    """What each plain name is assigned in a module (the source of every value)."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, []).append(ast.unparse(node.value))
    return found


def test_every_kafka_client_is_built_from_client_config() -> None:
    """No producer, consumer or admin client of ours is configured by hand: a new one that bypassed
    ``client_config`` would connect without TLS and SASL."""
    bypassing = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            assigned = _assigned(tree)
            for call in _constructors(tree):
                source = ast.unparse(call.args[0]) if call.args else ""
                named = bool(call.args) and isinstance(call.args[0], ast.Name)
                sources = assigned.get(source, [source]) if named else [source]
                # The SDK's sender process builds on client_config's dict, sent down its pipe (below).
                if all("client_config(" in s or "self.settings.kafka_config" in s for s in sources):
                    continue
                bypassing.append(f"{path.relative_to(ROOT)}:{call.lineno}: {ast.unparse(call)}")
    assert bypassing == []


def test_the_sdk_sender_process_gets_the_security_settings(certs: Certificates, tmp_path: Path) -> None:
    config = sender_config(_secure(certs), ProducerSettings(spool_dir=tmp_path))
    sent = config.to_dict()["kafka_config"]  # what goes down the pipe to the sender process
    assert sent["security.protocol"] == "SASL_SSL"
    assert sent["sasl.password"] == "sasl-secret-0001"
    assert sent["ssl.ca.location"] == str(certs.ca)
    assert sent["ssl.key.password"] == CLIENT_KEY_PASSWORD
    assert "sasl-secret-0001" not in repr(config)


# ----------------------------------------------------------------------------- Faust (aiokafka)


def _faust_auth(kafka: KafkaSettings, tmp_path: Path) -> dict[str, object]:
    """What Faust hands its aiokafka consumer and producer: it builds both with exactly this call."""
    settings = Settings().model_copy(
        update={"kafka": kafka, "pipeline": Settings().pipeline.model_copy(update={"data_dir": tmp_path})}
    )
    app, _pipeline = create_app(settings)
    # Faust's producer takes the same credentials (its _settings_auth makes the same call).
    assert getattr(app.producer, "credentials", None) is app.conf.broker_credentials
    return dict(credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context))


def test_faust_authenticates_and_encrypts_like_every_other_client(
    certs: Certificates, tmp_path: Path
) -> None:
    auth = _faust_auth(_secure(certs), tmp_path)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("fl-worker", "sasl-secret-0001")
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert any("feedbackloop test ca" in str(ca.get("subject")) for ca in context.get_ca_certs())


def test_faust_without_sasl(certs: Certificates, tmp_path: Path) -> None:
    assert _faust_auth(_secure(certs, security_protocol="SSL"), tmp_path)["security_protocol"] == "SSL"
    plain = _faust_auth(_secure(certs, security_protocol="PLAINTEXT"), tmp_path)
    assert plain == {"security_protocol": "PLAINTEXT"}
    sasl = _faust_auth(_secure(certs, security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN"), tmp_path)
    assert (sasl["security_protocol"], sasl["sasl_mechanism"], sasl["ssl_context"]) == (
        "SASL_PLAINTEXT",
        "PLAIN",
        None,
    )


def _handshake(context: ssl.SSLContext, port: int, host: str = "127.0.0.1") -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as conn,
    ):
        conn.sendall(b"hello")


def test_the_tls_context_verifies_the_broker_and_presents_the_client_certificate(certs: Certificates) -> None:
    """A real handshake with a server that demands a client certificate (as a broker with mTLS does)."""
    context = ssl_context(_secure(certs))
    assert context is not None
    with TlsServer(certs, require_client_cert=True).running() as server:
        _handshake(context, server.port)
    assert server.received == [b"hello"]
    assert "feedbackloop-client" in server.client_subjects[0]

    strangers = ssl_context(_secure(certs, ssl_ca_file=certs.other_ca))
    assert strangers is not None
    with TlsServer(certs).running() as server, pytest.raises(ssl.SSLCertVerificationError):
        _handshake(strangers, server.port)
    assert server.received == []

    with TlsServer(certs).running() as server, pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _handshake(context, server.port, host="kafka.example.com")  # not a name the certificate has
    unchecked = ssl_context(_secure(certs, ssl_check_hostname=False))
    assert unchecked is not None
    with TlsServer(certs).running() as server:
        _handshake(unchecked, server.port, host="kafka.example.com")
    assert server.received == [b"hello"]


def test_no_tls_context_without_tls(certs: Certificates) -> None:
    assert ssl_context(_secure(certs, security_protocol="SASL_PLAINTEXT")) is None


# ----------------------------------------------------------------------------- ClickHouse


def test_server_options_name_the_interface_and_keep_the_password_apart(certs: Certificates) -> None:
    settings = ClickHouseSettings(url="https://fl:ch%40secret@ch.example.com/", ca_cert=certs.ca)
    options = server_options(settings)
    assert options["interface"] == "https"
    assert options["dsn"] == "https://fl@ch.example.com/"
    assert options["password"] == "ch@secret"
    assert (options["verify"], options["ca_cert"]) == (True, str(certs.ca))
    plain = server_options(ClickHouseSettings(url="http://fl@127.0.0.1:8123", ca_cert=certs.ca))
    assert plain == {"dsn": "http://fl@127.0.0.1:8123", "interface": "http"}


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_https_is_spoken_and_the_server_verified(certs: Certificates) -> None:
    """Before, an ``https://`` url on a port other than 443/8443 was spoken to in plain http, with
    the password in the clear. Now: TLS, the server verified against the CA, the password sent
    inside it."""
    url = "https://fl:ch-secret-42@127.0.0.1:{port}"
    with TlsServer(certs).running() as server, pytest.raises(Exception, match="404"):
        connect(ClickHouseSettings(url=url.format(port=server.port), ca_cert=certs.ca), connect_timeout=3)
    assert server.handshake_errors == []
    assert server.received[0].startswith(b"POST /")
    assert b"Authorization: Basic Zmw6Y2gtc2VjcmV0LTQy" in server.received[0]  # fl:ch-secret-42

    with TlsServer(certs).running() as server, pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        connect(
            ClickHouseSettings(url=url.format(port=server.port), ca_cert=certs.other_ca), connect_timeout=3
        )
    assert server.received == []

    with TlsServer(certs).running() as server, pytest.raises(Exception, match="404"):
        connect(ClickHouseSettings(url=url.format(port=server.port), verify=False), connect_timeout=3)
    assert server.received
