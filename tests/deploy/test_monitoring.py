"""Prometheus configuration, alert rules and Grafana dashboards, checked against the code."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.manifests import (
    DEPLOY,
    STANDARD_METRICS,
    exported_metrics,
    load_yaml,
    metric_names,
)

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"


def _rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _panel_queries() -> list[tuple[str, str]]:
    queries = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                queries.append((f"{path.name}: {panel['title']}", target["expr"]))
    return queries


def test_metric_name_extraction_reads_promql() -> None:
    """The PromQL reader finds selected metrics and skips functions, labels and keywords."""
    expr = (
        "histogram_quantile(0.95, sum by (le, route) (rate(mim_gateway_request_duration_seconds"
        '_bucket{route="x"}[5m]))) / on (job) up and bool max without (instance) (m_b)'
    )
    assert metric_names(expr) == {"mim_gateway_request_duration_seconds_bucket", "up", "m_b"}


def test_every_alert_rule_uses_only_metrics_that_exist() -> None:
    """Each alert selects only metrics a service declares or a named standard exporter exports."""
    known = exported_metrics() | STANDARD_METRICS
    rules = _rules()
    assert {r["alert"] for r in rules} >= {
        "MimStageDown",
        "MimIngestBacklogGrowing",
        "MimRejectionRateSpike",
        "MimStoreWriteErrors",
        "MimDiskNearFull",
        "MimDependencyDown",
        "MimCachesStale",
        "MimTaskFailed",
        "MimServiceRestarting",
        "MimFileDescriptorsNearLimit",
    }
    for rule in rules:
        used = metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= known, f"{rule['alert']} uses unknown metrics {sorted(used - known)}"
        assert rule["annotations"]["summary"]


def test_every_dashboard_panel_uses_only_metrics_that_exist() -> None:
    """Each Grafana panel query selects only metrics the services (or named exporters) export,
    and every panel reads the provisioned Prometheus data source."""
    known = exported_metrics() | STANDARD_METRICS
    queries = _panel_queries()
    assert len(queries) >= 10
    for where, expr in queries:
        used = metric_names(expr)
        assert used, where
        assert used <= known, f"{where} uses unknown metrics {sorted(used - known)}"
    datasource = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uid = datasource["datasources"][0]["uid"]
    for path in (GRAFANA / "dashboards").glob("*.json"):
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"]["uid"] == uid, panel["title"]


def test_dashboard_provider_points_where_compose_mounts_the_dashboards() -> None:
    """Grafana's dashboard provider reads the folder compose mounts deploy/grafana/dashboards on."""
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "mimrelay.yml")
    path = provider["providers"][0]["options"]["path"]
    compose = load_yaml(DEPLOY.parent / "docker-compose.yml")
    assert f"./deploy/grafana/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]


def test_every_service_has_a_scrape_job_in_both_layouts() -> None:
    """Compose's Prometheus scrapes each service; the `up` layout reads the targets file `up`
    writes."""
    compose_jobs = {
        j["job_name"] for j in load_yaml(PROMETHEUS / "prometheus.yml")["scrape_configs"]
    }
    services = {p.parent.name for p in (DEPLOY.parent / "services").glob("*/__main__.py")}
    assert {f"mim-{s}" for s in services if s != "syncer"} <= compose_jobs
    up = load_yaml(PROMETHEUS / "prometheus-up.yml")
    files = [f for j in up["scrape_configs"] for sd in j["file_sd_configs"] for f in sd["files"]]
    assert [Path(f).name for f in files] == ["prometheus-targets.json"]


@pytest.mark.parametrize(
    ("what", "path"),
    [
        ("config", PROMETHEUS / "prometheus.yml"),
        ("config", PROMETHEUS / "prometheus-up.yml"),
        ("rules", PROMETHEUS / "alerts.yml"),
    ],
    ids=["compose-config", "up-config", "rules"],
)
def test_promtool_accepts_the_config_and_rules(what: str, path: Path) -> None:
    """`promtool check` passes on both Prometheus configurations and the alert rules."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", what, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
