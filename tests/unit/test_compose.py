"""docker-compose.yml and the image cannot run here (no Docker engine), so they are kept right by
reading them; deploy/smoke.sh runs them where Docker is."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from pydantic import BaseModel
from typer.main import get_command

from feedbackloop.cli import app
from feedbackloop.doctor import MIN_CLICKHOUSE_VERSION, parse_version
from infra.settings import KafkaSettings, Settings, StackSettings, split_password

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _feedbackloop_env(compose: dict[str, Any]) -> dict[str, dict[str, str]]:
    found = {"image": _image_env()}
    for name, service in compose["services"].items():
        env = service.get("environment") or {}
        found[name] = {k: str(v) for k, v in env.items() if k.startswith("FEEDBACKLOOP_")}
    return found


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text().replace("\\\n", " ")


def _image_env() -> dict[str, str]:
    """The FEEDBACKLOOP_ variables the Dockerfile's ENV lines set."""
    pairs = [m for line in _dockerfile().splitlines() if line.startswith("ENV ") for m in line[4:].split()]
    return dict(p.split("=", 1) for p in pairs if p.startswith("FEEDBACKLOOP_"))


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
                if (section, field) == ("clickhouse", "url"):  # the password is held apart from the url
                    url, password = split_password(value)
                    assert settings.clickhouse.password is None or password is not None
                    held = settings.clickhouse.password
                    assert (held.get_secret_value() if held is not None else None) == password
                    value = url
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
    services = compose["services"]
    worker = " ".join(services["worker"]["entrypoint"])
    health = " ".join(services["worker"]["healthcheck"]["test"][1:])
    used = set(re.findall(r"feedbackloop (\w+)", f"{worker} {health}")) | {
        services["collector"]["command"][0]
    }
    assert {"doctor", "migrate", "worker", "collector"} <= used <= commands


def test_the_image_contains_every_package() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    find_section = pyproject.split("[tool.setuptools.packages.find]")[1].split("\n\n")[0]
    packages = re.findall(r'"(\w+)\*"', find_section)
    assert packages
    assert [p for p in packages if f"COPY {p} ./{p}" not in dockerfile] == []


# ------------------------------------------------------------------ image: who writes where

STATE = "/var/lib/feedbackloop"


def test_the_image_runs_as_a_fixed_non_root_user_that_owns_its_state_folder() -> None:
    dockerfile = _dockerfile()
    user = re.search(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert user is not None
    assert user.group(1) not in ("root", "0")
    assert re.search(rf"useradd --uid (\d+) .*{user.group(1)}", dockerfile), "a fixed uid, for bind mounts"
    assert re.search(rf"install -d -o {user.group(1)} -g {user.group(1)} .*{STATE}", dockerfile)
    # Relative defaults (chdb, .env, the stack home) resolve in the working directory: make it ours.
    workdirs = re.findall(r"^WORKDIR (\S+)$", dockerfile, re.MULTILINE)
    assert workdirs[-1] == STATE
    assert dockerfile.index(f"WORKDIR {STATE}") < dockerfile.index(f"USER {user.group(1)}")


def test_everything_the_image_writes_is_under_its_state_folder(compose: dict[str, Any]) -> None:
    image = _image_env()
    for name in (
        "FEEDBACKLOOP_PIPELINE__DATA_DIR",
        "FEEDBACKLOOP_PRODUCER__SPOOL_DIR",
        "FEEDBACKLOOP_STACK__HOME",
    ):
        assert image[name].startswith(STATE), name
    for service in ("worker", "collector"):
        mounts = compose["services"][service]["volumes"]
        assert any(str(m).endswith(f":{STATE}") for m in mounts), f"{service} needs a volume at {STATE}"
        for name, value in _feedbackloop_env(compose)[service].items():
            if name.endswith(("_DIR", "__HOME")):
                assert value.startswith(STATE), f"{service}: {name} must be on its volume"
    named = {str(m).split(":")[0] for svc in compose["services"].values() for m in svc.get("volumes", [])}
    assert {v for v in named if not v.startswith(".")} <= set(compose["volumes"])


# ------------------------------------------------------------------ health, readiness, versions


def test_every_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check, f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL")
        assert {"interval", "timeout", "retries"} <= set(check)


def test_the_worker_waits_for_kafka_and_clickhouse(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "clickhouse": {"condition": "service_healthy"},
    }
    # depends_on only orders the first start; a restarted worker waits itself, before it migrates.
    steps = worker["entrypoint"][-1].split("&&")
    assert "doctor --scope reachable --wait" in steps[0]
    assert "migrate" in steps[1]
    assert "exec feedbackloop worker" in steps[-1]
    assert compose["services"]["collector"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def _tag(compose: dict[str, Any], service: str) -> str:
    return str(compose["services"][service]["image"]).rsplit(":", 1)[1]


def test_the_clickhouse_server_is_of_the_generation_chdb_embeds(compose: dict[str, Any]) -> None:
    import chdb

    engine = parse_version(chdb.engine_version)[:2]
    tag = parse_version(_tag(compose, "clickhouse"))
    assert tag[:2] == engine, f"compose pins ClickHouse {tag}, the tests run on chdb's {engine}"
    assert tag[:2] >= MIN_CLICKHOUSE_VERSION
    readme = (ROOT / "README.md").read_text()
    assert f"ClickHouse server {'.'.join(map(str, MIN_CLICKHOUSE_VERSION))} or newer" in readme


def test_kafka_is_the_version_the_local_stack_runs(compose: dict[str, Any]) -> None:
    assert _tag(compose, "kafka") == StackSettings().kafka_version


# ------------------------------------------------------------------ Grafana

#: The macros the grafana-clickhouse-datasource plugin documents (its README, "Macros").
DOCUMENTED_MACROS = {
    "$__dateFilter",
    "$__timeFilter",
    "$__timeFilter_ms",
    "$__dateTimeFilter",
    "$__dt",
    "$__fromTime",
    "$__toTime",
    "$__fromTime_ms",
    "$__toTime_ms",
    "$__interval_s",
    "$__timeInterval",
    "$__timeInterval_ms",
    "$__conditionalAll",
    "$__adHocFilters",
}


def _dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))]


def _datasource() -> dict[str, Any]:
    provisioning = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/clickhouse.yaml").read_text()
    )
    (datasource,) = provisioning["datasources"]
    return dict(datasource)


def test_dashboard_queries_use_only_the_datasources_documented_macros() -> None:
    used = set()
    for dashboard in _dashboards():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                used |= set(re.findall(r"\$__\w+", target["rawSql"]))
    assert used
    assert used <= DOCUMENTED_MACROS


def test_every_panel_reads_the_provisioned_datasource_and_known_variables() -> None:
    datasource = _datasource()
    for dashboard in _dashboards():
        variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
        for panel in dashboard["panels"]:
            assert panel["datasource"] == {"type": datasource["type"], "uid": datasource["uid"]}, panel[
                "title"
            ]
            for target in panel.get("targets", []):
                assert set(re.findall(r"\$\{(\w+)\}", target["rawSql"])) <= variables


def test_grafana_reads_the_clickhouse_the_worker_writes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker_url = urlparse(services["worker"]["environment"]["FEEDBACKLOOP_CLICKHOUSE__URL"])
    data = _datasource()["jsonData"]
    assert (data["host"], int(data["port"]), data["protocol"]) == (
        worker_url.hostname,
        worker_url.port,
        "http",
    )
    assert data["username"] == worker_url.username
    assert _datasource()["secureJsonData"]["password"] == worker_url.password
    assert data["defaultDatabase"] == services["worker"]["environment"]["FEEDBACKLOOP_CLICKHOUSE__DATABASE"]
    for dashboard in _dashboards():
        database = {v["name"]: v.get("query") for v in dashboard["templating"]["list"]}.get("database")
        assert database in (None, data["defaultDatabase"])
    plugin = services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    assert re.fullmatch(rf"{_datasource()['type']} \d+\.\d+\.\d+", plugin), "pin the plugin"
    mounts = services["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./deploy/grafana/dashboards:/etc/grafana/dashboards:ro" in mounts


# ------------------------------------------------------------------ deploy/smoke.sh


def test_the_smoke_script_expects_the_demos_ground_truth() -> None:
    from feedbackloop.demo import demo_history, demo_workload
    from tests.support.oracle import expected_outcomes, expected_regeneration_rates

    script = (ROOT / "deploy" / "smoke.sh").read_text()
    assert os.access(ROOT / "deploy" / "smoke.sh", os.X_OK)
    block = re.search(r"EXPECTED_RATES=\$'(.*?)'", script, re.DOTALL)
    assert block is not None
    expected = [tuple(line.split("\\t")) for line in block.group(1).splitlines()]
    # What `feedbackloop demo` publishes with its defaults (feedbackloop/demo.py): the experiment's
    # traffic and the weeks of history before it (other versions, so the experiment's rates stay exact).
    now = datetime.now(UTC)
    workload = demo_workload(now=now)
    outcomes = expected_outcomes(workload)
    for week in demo_history(workload, now).history.weeks:
        outcomes.update(expected_outcomes(week))
    truth = expected_regeneration_rates(outcomes)
    assert expected == [(v, str(n), str(r)) for v, (n, r, _rate) in sorted(truth.items())]
    assert truth["v1.0"][:2] == (4996, 1740)
    assert truth["v1.1"][:2] == (1004, 178)
    for step in ("up -d --build --wait", "doctor --running", "worker demo", "demo.regeneration_rates"):
        assert step in script
