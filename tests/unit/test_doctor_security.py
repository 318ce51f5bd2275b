"""``feedbackloop doctor`` reports the security settings in use -- Kafka TLS and SASL, ClickHouse
over https -- and what is wrong with them, and never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from feedbackloop.doctor import Status, clickhouse_security_check, security_check
from infra.settings import ClickHouseSettings, KafkaSettings
from tests.support.tls import CLIENT_KEY_PASSWORD, Certificates, make_certificates

SASL_SECRET = "sasl-secret-doctor-1"
#: A ClickHouse user and password, as they come in a url.
USER = "fl:ch-secret-doctor"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """One throw-away PKI for this module."""
    return make_certificates(tmp_path_factory.mktemp("pki"))


def _kafka(certs: Certificates, **changes: object) -> KafkaSettings:
    values: dict[str, object] = {
        "bootstrap_servers": "kafka-1.example.com:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "fl",
        "sasl_password": SecretStr(SASL_SECRET),
        "ssl_ca_file": certs.ca,
        "ssl_cert_file": certs.client_cert,
        "ssl_key_file": certs.client_key,
        "ssl_key_password": SecretStr(CLIENT_KEY_PASSWORD),
        **changes,
    }
    return KafkaSettings.model_validate(values)


def test_the_kafka_security_in_use_is_reported(certs: Certificates) -> None:
    check = security_check(_kafka(certs))
    assert check.status is Status.ok, check
    assert "SASL_SSL" in check.detail
    assert "SASL SCRAM-SHA-256 as fl" in check.detail
    assert f"the CA in {certs.ca}" in check.detail
    assert "host names checked" in check.detail
    assert f"client certificate {certs.client_cert}" in check.detail
    assert SASL_SECRET not in repr(check)
    assert CLIENT_KEY_PASSWORD not in repr(check)


@pytest.mark.parametrize(
    ("changes", "status", "says"),
    [
        ({"ssl_ca_file": Path("/nonexistent/ca.pem")}, Status.fail, "cannot read FEEDBACKLOOP_KAFKA__SSL_CA"),
        ({"ssl_key_password": SecretStr("wrong-password")}, Status.fail, "do not load"),
        ({"security_protocol": "SASL_PLAINTEXT"}, Status.fail, "does not use TLS"),
        ({"ssl_check_hostname": False}, Status.warn, "SSL_CHECK_HOSTNAME=true"),
        ({"sasl_mechanism": "GSSAPI"}, Status.fail, "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        (
            {"security_protocol": "SASL_PLAINTEXT", "ssl_ca_file": None, "ssl_cert_file": None,
             "ssl_key_file": None, "ssl_key_password": None},
            Status.warn,
            "unencrypted",
        ),
    ],
)  # fmt: skip
def test_what_is_wrong_with_kafka_security(
    certs: Certificates, changes: dict[str, object], status: Status, says: str
) -> None:
    check = security_check(_kafka(certs, **changes))
    assert check.status is status, check
    assert says in check.detail + check.fix
    assert SASL_SECRET not in repr(check)


def test_the_system_cas_when_no_ca_is_given(certs: Certificates) -> None:
    check = security_check(_kafka(certs, ssl_ca_file=None))
    assert check.status is Status.ok
    assert "the system's CAs" in check.detail


@pytest.mark.parametrize(
    ("settings", "status", "says"),
    [
        (ClickHouseSettings(), Status.ok, "embedded (chdb)"),
        (ClickHouseSettings(url=f"http://{USER}@127.0.0.1:8123"), Status.ok, "local or private"),
        (ClickHouseSettings(url=f"http://{USER}@clickhouse:8123"), Status.ok, "with a password"),
        (ClickHouseSettings(url=f"http://{USER}@ch.example.com:8123"), Status.warn, "unencrypted"),
        (ClickHouseSettings(url=f"https://{USER}@ch.example.com", verify=False), Status.warn, "NOT"),
        (ClickHouseSettings(url="https://ch.example.com", ca_cert=Path("/none.pem")), Status.fail, "CA_CERT"),
        (ClickHouseSettings(url=f"https://{USER}@ch.example.com"), Status.ok, "the system's CAs"),
    ],
)  # fmt: skip
def test_the_clickhouse_transport_is_reported(
    settings: ClickHouseSettings, status: Status, says: str
) -> None:
    check = clickhouse_security_check(settings)
    assert check.status is status, check
    assert says in check.detail + check.fix
    assert "ch-secret-doctor" not in repr(check)


def test_the_clickhouse_ca_in_use_is_named(certs: Certificates) -> None:
    check = clickhouse_security_check(
        ClickHouseSettings(url="https://fl:pw@ch.example.com", ca_cert=certs.ca)
    )
    assert check.status is Status.ok
    assert f"the CA in {certs.ca}" in check.detail
    assert "https to https://fl:***@ch.example.com" in check.detail
