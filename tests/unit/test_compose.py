"""docker-compose.yml cannot run here (no Docker engine), so it is kept right by reading it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from pydantic import BaseModel
from typer.main import get_command

from feedbackloop.cli import app
from infra.settings import KafkaSettings, Settings, StackSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _feedbackloop_env(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    found = {}
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        found[name] = {k: str(v) for k, v in env.items() if k.startswith("FEEDBACKLOOP_")}
    return found


def _resolves(env_name: str) -> bool:
    """Whether FEEDBACKLOOP_<SECTION>__<FIELD> names a real field of Settings."""
    parts = env_name.removeprefix("FEEDBACKLOOP_").lower().split("__")
    model: type[BaseModel] = Settings
    for part in parts:
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return True


def test_every_feedbackloop_variable_is_a_setting(compose: dict[str, Any]) -> None:
    names = {name for env in _feedbackloop_env(compose).values() for name in env}
    assert names, "the services should be configured through FEEDBACKLOOP_ variables"
    assert [n for n in names if not _resolves(n)] == []


def test_the_settings_the_services_get_are_valid(compose: dict[str, Any]) -> None:
    for env in _feedbackloop_env(compose).values():
        nested: dict[str, dict[str, str]] = {}
        for name, value in env.items():
            section, field = name.removeprefix("FEEDBACKLOOP_").lower().split("__", 1)
            nested.setdefault(section, {})[field] = value
        settings = Settings.model_validate(nested)
        for section, fields in nested.items():
            for field, value in fields.items():
                parsed = getattr(getattr(settings, section), field)
                shown = parsed.get_secret_value() if hasattr(parsed, "get_secret_value") else parsed
                assert str(shown) == value


def test_ports_agree_with_the_defaults_users_get_without_docker(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def published(service: str) -> set[int]:
        ports = services[service].get("ports", [])
        assert all(str(p).startswith("127.0.0.1:") for p in ports), f"{service} must bind to 127.0.0.1"
        return {int(str(p).split(":")[1]) for p in ports}

    default_bootstrap_port = int(KafkaSettings().bootstrap_servers.rsplit(":", 1)[1])
    assert published("kafka") == {default_bootstrap_port, StackSettings().port}
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"127.0.0.1:{default_bootstrap_port}" in advertised
    internal = services["worker"]["environment"]["FEEDBACKLOOP_KAFKA__BOOTSTRAP_SERVERS"]
    assert internal.replace("kafka:", "INTERNAL://kafka:") in advertised
    clickhouse_url = urlparse(services["worker"]["environment"]["FEEDBACKLOOP_CLICKHOUSE__URL"])
    assert clickhouse_url.port in published("clickhouse")
    collector = services["collector"]["command"]
    assert int(collector[collector.index("--port") + 1]) in published("collector")


def test_service_commands_are_feedbackloop_commands(compose: dict[str, Any]) -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    worker = " ".join(compose["services"]["worker"]["entrypoint"])
    used = set(re.findall(r"feedbackloop (\w+)", worker)) | {compose["services"]["collector"]["command"][0]}
    assert used <= commands


def test_the_image_contains_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    find_section = pyproject.split("[tool.setuptools.packages.find]")[1].split("\n\n")[0]
    packages = re.findall(r'"(\w+)\*"', find_section)
    assert packages
    assert [p for p in packages if f"COPY {p} ./{p}" not in dockerfile] == []
