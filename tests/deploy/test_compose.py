"""docker-compose.yml and deploy/Dockerfile, checked against the code (no Docker engine here)."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

import pytest

from relay.embedded import find_nats_server
from relay.settings import load
from tests.deploy.manifests import (
    DEPLOY,
    env_names,
    go_size,
    load_yaml,
    node_env_names,
    runnable,
    settings_class,
)
from tests.helpers.procs import REPO

COMPOSE = REPO / "docker-compose.yml"
NATS_CONFIGS = REPO / "deploy" / "nats"
CLUSTER_ENV = REPO / "deploy" / "compose" / "nats-cluster.env"
NATS_MEMBERS = ("nats", "nats-2", "nats-3")
OURS = ("store", "validator", "miner", "gateway")
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?]))?([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def _resolve(value: str) -> str:
    """``value`` as compose would expand it with defaults used and required secrets set."""

    def sub(match: re.Match[str]) -> str:
        op, rest = match.group(2), match.group(3)
        return rest if op == "-" else "secret"

    return _INTERPOLATION.sub(sub, value)


def _module(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[:2] == ["python", "-m"], command
    return str(command[2])


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", text)
    assert match, text
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_every_service_command_is_a_runnable_entry_point(compose: dict[str, Any]) -> None:
    """Each mimrelay service in compose runs `python -m <module>` that exists in this code."""
    services = compose["services"]
    assert set(OURS) <= set(services)
    for name in OURS:
        module = _module(services[name])
        assert runnable(module), f"{name}: python -m {module} has nothing to run"
        assert module == f"services.{name}"


def test_every_environment_variable_is_a_real_setting_with_a_valid_value(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every MIM_* variable compose sets is read by that service's settings, and loads cleanly."""
    for name in OURS:
        service = compose["services"][name]
        cls = settings_class(_module(service))
        known = env_names(cls) | node_env_names() | {"PYTHONUNBUFFERED"}
        env = {k: _resolve(str(v)) for k, v in service["environment"].items()}
        unknown = sorted(set(env) - known)
        assert unknown == [], f"{name} sets variables no setting reads: {unknown}"
        for key in env_names(cls) | node_env_names():
            monkeypatch.delenv(key, raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        load(cls)  # raises SettingsError naming the variable if a value is invalid


def test_ports_healthchecks_and_scrape_targets_agree(compose: dict[str, Any]) -> None:
    """Each service's metrics port is the one its healthcheck probes and Prometheus scrapes."""
    prometheus = load_yaml(REPO / "deploy" / "prometheus" / "prometheus.yml")
    scraped = {
        job["job_name"]: (sd["names"][0], sd["port"])
        for job in prometheus["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
    }
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    exposed = {
        int(p) for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.M) for p in line.split()
    }
    for name in OURS:
        service = compose["services"][name]
        port = int(service["environment"][f"MIM_{name.upper()}_METRICS_PORT"])
        assert f"127.0.0.1:{port}/healthz" in " ".join(service["healthcheck"]["test"])
        assert scraped[f"mim-{name}"] == (name, port)
        assert port in exposed
    gateway = compose["services"]["gateway"]
    api_port = int(gateway["environment"]["MIM_GATEWAY_PORT"])
    assert api_port in exposed
    proxy = compose["services"]["proxy"]
    conf = (REPO / "deploy" / "nginx" / "mimrelay.conf").read_text()
    listen = re.search(r"^\s*listen (\d+);", conf, re.M)
    assert listen is not None
    assert [_resolve(p).rsplit(":", 1)[1] for p in proxy["ports"]] == [listen.group(1)]
    assert re.findall(r"^\s*server (\S+):(\d+)\b", conf, re.M) == [("gateway", str(api_port))]
    mounted = {v.split(":")[0]: v.split(":")[1] for v in proxy["volumes"]}
    assert mounted["./deploy/nginx/mimrelay.conf"] == "/etc/nginx/conf.d/default.conf"


def test_production_rules_health_volumes_secrets_and_scaling(compose: dict[str, Any]) -> None:
    """Every container has a healthcheck and waits on healthy dependencies, data sits on named
    volumes, secrets are required, validators, miners, syncers and gateways can be scaled
    (several gateways by default, behind the proxy, which waits for them), and stop waits for the
    drain."""
    services = compose["services"]
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert dependency in services
    for name in ("validator", "miner", "syncer", "gateway"):
        assert "container_name" not in services[name]
        assert "ports" not in services[name]
    assert services["gateway"]["deploy"]["replicas"] >= 2
    assert services["proxy"]["depends_on"] == {"gateway": {"condition": "service_healthy"}}
    for name in OURS:
        service = services[name]
        grace = float(service["environment"][f"MIM_{name.upper()}_SHUTDOWN_GRACE_SECONDS"])
        # the runner may take grace + 5 s cancelling + 10 s closing
        assert _seconds(service["stop_grace_period"]) > grace + 15, name
    named = set(compose["volumes"])
    assert {"nats-data:/data"} <= set(services["nats"]["volumes"])
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert {"nats-data", "postgres-data"} <= named
    text = COMPOSE.read_text()
    for secret in ("POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"):
        uses = re.findall(r"\$\{" + secret + r"(:?[-?]?)", text)
        assert uses and set(uses) == {":?"}, f"{secret} must be required everywhere: {uses}"
    assert services["nats"]["command"] == ["--config", "/etc/nats/${NATS_LAYOUT:-single}.conf"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )


def _env_file(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


@pytest.mark.parametrize("layout", ["single", "cluster"])
def test_the_nats_configurations_are_valid_with_jetstream_on_the_volume(layout: str) -> None:
    """Each NATS configuration the compose file can mount passes ``nats-server -t`` (the real
    binary), runs JetStream in the directory the data volume is mounted on, and takes the 16 MiB
    messages the validators judge."""
    path = NATS_CONFIGS / f"{layout}.conf"
    env = {**os.environ, "NATS_SERVER_NAME": "nats-1"}
    checked = subprocess.run(
        [str(find_nats_server()), "-t", "-c", str(path)], env=env, capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stderr.decode()
    text = path.read_text()
    assert re.search(r"jetstream \{\s*store_dir: /data\s*\}", text)
    assert "max_payload: 16MB" in text


def test_the_cluster_profile_runs_three_members_and_the_node_on_all_three(
    compose: dict[str, Any],
) -> None:
    """deploy/compose/nats-cluster.env turns on the profile that adds two members, mounts the
    cluster configuration on all three, each with its own name and volume, routes each to every
    member, and points every service at the three with three replicas of each stream."""
    env = _env_file(CLUSTER_ENV.read_text())
    services = compose["services"]
    assert env["COMPOSE_PROFILES"] == "nats-cluster" and env["NATS_LAYOUT"] == "cluster"
    assert "profiles" not in services["nats"]
    for name in NATS_MEMBERS[1:]:
        assert services[name]["profiles"] == ["nats-cluster"]
        assert services[name]["command"] == ["--config", "/etc/nats/cluster.conf"]
    names = {services[m]["environment"]["NATS_SERVER_NAME"] for m in NATS_MEMBERS}
    volumes = {services[m]["volumes"][0] for m in NATS_MEMBERS}
    assert len(names) == 3 and len(volumes) == 3 and all(v.endswith(":/data") for v in volumes)
    assert {v.split(":")[0] for v in volumes} <= set(compose["volumes"])
    routes = re.findall(r"nats-route://([\w-]+):6222", (NATS_CONFIGS / "cluster.conf").read_text())
    assert sorted(routes) == sorted(NATS_MEMBERS)
    assert env["MIM_NATS_URL"].split(",") == [f"nats://{m}:4222" for m in NATS_MEMBERS]
    assert env["MIM_STREAM_REPLICAS"] == "3"
    for name in OURS:
        environment = services[name]["environment"]
        assert environment["MIM_NATS_URL"] == "${MIM_NATS_URL:-nats://nats:4222}"
        assert environment["MIM_STREAM_REPLICAS"] == "${MIM_STREAM_REPLICAS:-1}"


def test_each_nats_member_collects_well_before_its_memory_limit(compose: dict[str, Any]) -> None:
    """Every NATS member's container has a hard memory limit, and its Go runtime a soft one
    between 70% and 85% of it, so the server collects and hands memory back before the kernel
    would kill it."""
    for name in NATS_MEMBERS:
        service = compose["services"][name]
        soft = go_size(_resolve(str(service["environment"]["GOMEMLIMIT"])))
        hard = _compose_bytes(_resolve(str(service["mem_limit"])))
        assert 0.7 * hard <= soft <= 0.85 * hard, (name, soft, hard)


def _compose_bytes(text: str) -> int:
    """A compose byte value: digits and one of b, k, m, g (binary units)."""
    found = re.fullmatch(r"(\d+)([bkmg])", text)
    assert found is not None, text
    return int(str(found[1])) << 10 * "bkmg".index(str(found[2]))


def test_the_operators_api_stays_inside_the_gateway_container(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's local API listens on the container's loopback on a port compose publishes
    nowhere (the gateway publishes none; its proxy passes on the public port alone), public
    submission is off, and NATS is 2.11 or later (per-key times to live)."""
    gateway = compose["services"]["gateway"]
    env = {k: _resolve(str(v)) for k, v in gateway["environment"].items()}
    for key in env_names(settings_class("services.gateway")) | node_env_names():
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load(settings_class("services.gateway"))
    assert settings.local_host == "127.0.0.1"  # type: ignore[attr-defined]
    assert not settings.public_submit  # type: ignore[attr-defined]
    assert "ports" not in gateway  # the proxy publishes the API, and only the public listener
    upstream = re.findall(r"server gateway:(\d+)", (DEPLOY / "nginx" / "mimrelay.conf").read_text())
    assert upstream == [str(settings.gateway_port)]  # type: ignore[attr-defined]
    assert settings.local_port != settings.gateway_port  # type: ignore[attr-defined]
    image = compose["services"]["nats"]["image"]
    major, minor = (int(n) for n in image.split(":")[1].split("-")[0].split(".")[:2])
    assert (major, minor) >= (2, 11), image
