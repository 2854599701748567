"""deploy/kubernetes/, parsed and checked against the code (no cluster here)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_settings import BaseSettings

from relay.settings import load
from tests.deploy.manifests import (
    DEPLOY,
    env_names,
    go_size,
    node_env_names,
    runnable,
    settings_class,
    yaml,
)

KUBE = DEPLOY / "kubernetes"
HELM_VALUES = DEPLOY / "nats" / "helm-values.yaml"
SERVICES = {"gateway", "store", "validator", "miner", "syncer"}
SECRET_DSN = "postgresql://mimrelay:secret@postgres:5432/mimrelay"
# the runner may take grace + 5 s cancelling + 10 s closing NATS and the pool
CLOSE_EXTRA_SECONDS = 15


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc:
            yield doc


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    return data


@pytest.fixture(scope="module")
def objects(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    return [doc for name in kustomization["resources"] for doc in _documents(KUBE / name)]


def _of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, deployment["metadata"]["name"]
    container: dict[str, Any] = containers[0]
    return container


def _module(container: dict[str, Any]) -> str:
    command = container["command"]
    assert command[:2] == ["python", "-m"], command
    return str(command[2])


def _environment(
    container: dict[str, Any], configmaps: dict[str, dict[str, Any]]
) -> dict[str, str]:
    """The variables the container gets, secrets replaced by a sample value."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= {k: str(v) for k, v in configmaps[source["configMapRef"]["name"]]["data"].items()}
    for item in container.get("env", []):
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("mimrelay-database", "url"), item
            env[item["name"]] = SECRET_DSN
        else:
            env[item["name"]] = str(item["value"])
    return env


def _settings(
    deployment: dict[str, Any],
    configmaps: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> BaseSettings:
    container = _container(deployment)
    cls = settings_class(_module(container))
    for key in env_names(cls) | node_env_names():
        monkeypatch.delenv(key, raising=False)
    for key, value in _environment(container, configmaps).items():
        monkeypatch.setenv(key, value)
    return load(cls)


def test_kustomization_lists_every_manifest_and_everything_sits_in_the_namespace(
    kustomization: dict[str, Any], objects: list[dict[str, Any]]
) -> None:
    """Every YAML file in deploy/kubernetes is a listed resource, and every namespaced object is
    in the one namespace the kustomization and namespace.yaml name."""
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    namespace = kustomization["namespace"]
    assert list(_of_kind(objects, "Namespace")) == [namespace]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]


def test_every_service_runs_a_real_entry_point(objects: list[dict[str, Any]]) -> None:
    """There is one Deployment per service and each runs `python -m <module>` that exists."""
    deployments = _of_kind(objects, "Deployment")
    assert set(deployments) == SERVICES
    for name, deployment in deployments.items():
        container = _container(deployment)
        module = _module(container)
        assert runnable(module), f"{name}: python -m {module} has nothing to run"
        assert module == f"services.{name}"


def test_every_variable_is_a_real_setting_with_a_valid_value(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable a Deployment or the ConfigMap sets is read by that service's settings and
    loads cleanly; the database URL comes only from the Secret."""
    configmaps = _of_kind(objects, "ConfigMap")
    assert set(configmaps["mimrelay-node"]["data"]) <= node_env_names()
    assert "MIM_DATABASE_URL" not in configmaps["mimrelay-node"]["data"]
    for name, deployment in _of_kind(objects, "Deployment").items():
        container = _container(deployment)
        cls = settings_class(_module(container))
        env = _environment(container, configmaps)
        unknown = sorted(set(env) - env_names(cls) - node_env_names())
        assert unknown == [], f"{name} sets variables no setting reads: {unknown}"
        assert env["MIM_DATABASE_URL"] == SECRET_DSN, name
        _settings(deployment, configmaps, monkeypatch)


def test_ports_probes_and_scrape_annotations_match_the_settings(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `metrics` port is each service's metrics-port setting; readiness and startup probe
    /healthz and liveness /metrics on it; Prometheus is told that port; the gateway's `api` port
    is its API port and the Service sends traffic there."""
    configmaps = _of_kind(objects, "ConfigMap")
    deployments = _of_kind(objects, "Deployment")
    for name, deployment in deployments.items():
        settings = _settings(deployment, configmaps, monkeypatch)
        container = _container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == settings.metrics_port != 0, name  # type: ignore[attr-defined]
        assert settings.metrics_host == "0.0.0.0", name  # type: ignore[attr-defined]
        for probe, path in (
            ("readinessProbe", "/healthz"),
            ("startupProbe", "/healthz"),
            ("livenessProbe", "/metrics"),
        ):
            assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, (name, probe)
        notes = deployment["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/port"] == str(ports["metrics"]), name
        assert notes["prometheus.io/path"] == "/metrics", name
    gateway = deployments["gateway"]
    gateway_settings = _settings(gateway, configmaps, monkeypatch)
    api = {p["name"]: p["containerPort"] for p in _container(gateway)["ports"]}["api"]
    assert api == gateway_settings.gateway_port  # type: ignore[attr-defined]
    service = _of_kind(objects, "Service")["gateway"]
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["api"]


def test_every_deployment_has_resources_and_a_grace_longer_than_the_drain(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Deployment requests and limits CPU and memory, and the kubelet waits longer than the
    service's shutdown grace plus the runner's closing time before it kills; the miner runs as
    many processes as its CPU limit allows, and a validator replica is given one core."""
    configmaps = _of_kind(objects, "ConfigMap")
    for name, deployment in _of_kind(objects, "Deployment").items():
        resources = _container(deployment)["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[bound]), (name, bound)
        settings = _settings(deployment, configmaps, monkeypatch)
        grace = settings.shutdown_grace_seconds  # type: ignore[attr-defined]
        period = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period > grace + CLOSE_EXTRA_SECONDS, name
        if name == "miner":
            workers = settings.process_workers  # type: ignore[attr-defined]
            assert workers == int(resources["limits"]["cpu"]), name
        if name == "validator":  # one process on one core: replicas, not processes, scale it
            assert int(resources["limits"]["cpu"]) == 1


def test_syncers_scale_out_and_nats_is_a_three_server_cluster_keeping_every_stream_thrice(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The syncer Deployment runs several replicas and may overlap old and new ones on a rollout
    (its leases keep each remote to one); the NATS chart's values make three servers one
    JetStream cluster on volumes, of a version that expires lease entries, taking the largest
    object in one message, with a Go memory limit a fifth under their pods'; the node keeps each
    stream on all of them."""
    configmaps = _of_kind(objects, "ConfigMap")
    syncer = _of_kind(objects, "Deployment")["syncer"]
    assert syncer["spec"]["replicas"] >= 2
    assert syncer["spec"]["strategy"]["type"] == "RollingUpdate"
    settings = _settings(syncer, configmaps, monkeypatch)
    values = yaml.safe_load(HELM_VALUES.read_text(encoding="utf-8"))
    cluster, jetstream = values["config"]["cluster"], values["config"]["jetstream"]
    assert cluster["enabled"] is True and cluster["replicas"] == 3
    assert jetstream["enabled"] is True and jetstream["fileStore"]["pvc"]["enabled"] is True
    assert settings.stream_replicas == cluster["replicas"]  # type: ignore[attr-defined]
    major, minor = (
        int(n) for n in values["container"]["image"]["tag"].split("-")[0].split(".")[:2]
    )
    assert (major, minor) >= (2, 11)
    validator = _of_kind(objects, "Deployment")["validator"]
    max_object = _settings(validator, configmaps, monkeypatch).max_object_bytes  # type: ignore[attr-defined]
    assert values["config"]["merge"]["max_payload"] >= max_object
    # Go's memory limit below the pod's, with room for what the runtime does not count
    container = values["container"]
    soft = go_size(container["env"]["GOMEMLIMIT"])
    hard = _quantity(container["merge"]["resources"]["limits"]["memory"])
    assert 0.7 * hard <= soft <= 0.85 * hard


def _quantity(text: str) -> int:
    """A Kubernetes memory quantity in binary units (``2Gi``)."""
    found = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)", text)
    assert found is not None, text
    return int(str(found[1])) << 10 * (["Ki", "Mi", "Gi", "Ti"].index(str(found[2])) + 1)


def test_autoscalers_scale_validators_miners_and_gateways_on_cpu(
    objects: list[dict[str, Any]],
) -> None:
    """The autoscalers are autoscaling/v2, target the validator, miner and gateway Deployments,
    scale on CPU utilisation (which those Deployments request), and never below one replica;
    the gateways never below two, the replica count their Deployment starts with."""
    deployments = _of_kind(objects, "Deployment")
    hpas = {o["metadata"]["name"]: o for o in objects if o["kind"] == "HorizontalPodAutoscaler"}
    assert set(hpas) == {"validator", "miner", "gateway"}
    assert hpas["gateway"]["spec"]["minReplicas"] == deployments["gateway"]["spec"]["replicas"] >= 2
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        spec = hpa["spec"]
        target = spec["scaleTargetRef"]
        assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
        assert target["name"] in deployments
        assert "cpu" in _container(deployments[target["name"]])["resources"]["requests"]
        assert [m["resource"]["name"] for m in spec["metrics"]] == ["cpu"], name
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]


def test_the_operators_api_stays_inside_the_gateway_pod(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway's local API listens on the pod's loopback, on a port no container port or
    Service names, and public submission is off: writes go through `kubectl exec` or a token."""
    configmaps = _of_kind(objects, "ConfigMap")
    gateway = _of_kind(objects, "Deployment")["gateway"]
    settings = _settings(gateway, configmaps, monkeypatch)
    assert settings.local_host == "127.0.0.1"  # type: ignore[attr-defined]
    assert not settings.public_submit  # type: ignore[attr-defined]
    exposed = {p["containerPort"] for p in _container(gateway)["ports"]}
    assert settings.local_port not in exposed  # type: ignore[attr-defined]
    assert settings.local_port != settings.gateway_port  # type: ignore[attr-defined]
