"""A real Prometheus scraping a running ``mimrelay up`` node, with the deploy files as shipped.

Prometheus runs with a configuration made from ``deploy/prometheus/prometheus-up.yml`` (its
targets file pointed at the node's data directory, 1 s scrape and evaluation intervals) and
``deploy/prometheus/alerts.yml``. The node gets traffic for every dashboard panel: posts through
``POST /api/submit`` and one tampered post, GETs, a proof through the node's miner, and a sync
with a static peer (a stock ``http.server`` serving a signed export of another node's objects).
Everything is then asked through Prometheus' HTTP API, as Grafana and the alert manager would.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mim import canonical, pages, paths
from mim.entities import KINDS, Entity, Post
from mim.signing import SigningKey
from relay.caches import files
from relay.caches.files import Signer
from relay.db import storing
from relay.db.objects import CacheEntry
from relay.embedded import free_port
from relay.node import TARGETS_FILE
from relay.settings import DAY_SECONDS
from tests.deploy.manifests import DEPLOY, load_yaml
from tests.helpers.node import Node, http_get, http_post_json, node_environment, posts, wait_until
from tests.helpers.procs import alive, processes_mentioning
from tests.services.syncer.node import forum
from tests.services.syncer.test_static import static_node_files

PROMETHEUS_BIN = shutil.which("prometheus")
DASHBOARDS = DEPLOY / "grafana" / "dashboards"
RULES = DEPLOY / "prometheus" / "alerts.yml"
WAIT_SECONDS = 60.0

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS_BIN is None,
    reason="the prometheus binary is not installed (Debian: apt-get install prometheus)",
)

# Panel queries that cannot have data on a healthy embedded node, and why.
NO_DATA: dict[tuple[str, str], str] = {
    ("Validator retries /s", "A"): "series appear only after a transient failure (NATS or "
    "database trouble), which a healthy node does not have",
    ("Gateway errors (5xx) /s", "A"): "a healthy gateway answers no 5xx",
    ("Database size", "A"): "postgres-exporter runs in the compose layout only",
    ("Free disk of the data volumes", "A"): "node-exporter runs in the compose layout only",
    ("Purgatory: objects from beyond the horizon /s", "A"): "series appear only when a sync "
    "meets objects older than the node's retention, which a fresh peer's export does not hold",
}

# Grafana's built-in interval variables, replaced by a fixed range as Grafana would.
_GRAFANA_INTERVALS = re.compile(
    r"\$(?:\{__(?:rate_interval|interval|range)\}|__(?:rate_interval|interval|range))"
)
# Dashboard template variables ($var, ${var}, ${var:format}, [[var]]), replaced by a match-all.
_TEMPLATE_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+|\[\[\w+\]\]")


def grafana_to_promql(expr: str) -> str:
    """``expr`` as Grafana sends it: interval variables a fixed range, template variables ``.*``."""
    return _TEMPLATE_VARIABLE.sub(".*", _GRAFANA_INTERVALS.sub("1m", expr))


def panel_queries() -> list[tuple[str, str, str]]:
    """``(panel title, refId, expr)`` of every target of every dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text(encoding="utf-8"))["panels"]:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["refId"], target["expr"]))
    return found


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def test_grafana_variables_become_promql() -> None:
    """Interval variables become a fixed range and template variables a match-all regex."""
    expr = 'rate(x{job=~"$job", i="${inst}", r="[[replica]]"}[$__rate_interval]) + y[${__interval}]'
    assert grafana_to_promql(expr) == 'rate(x{job=~".*", i=".*", r=".*"}[1m]) + y[1m]'


def test_alert_rule_unit_tests_pass() -> None:
    """`promtool test rules` passes on deploy/prometheus/alerts-test.yml: each alert there stays
    quiet on a healthy series and fires, after its wait, on a failing one."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    tests = DEPLOY / "prometheus" / "alerts-test.yml"
    result = subprocess.run(
        [promtool, "test", "rules", str(tests)],
        cwd=tests.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


class Prometheus:
    """A ``prometheus`` process on a free loopback port and its HTTP API."""

    def __init__(self, config: Path, storage: Path, log: Path) -> None:
        assert PROMETHEUS_BIN is not None
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = log
        argv = [
            PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
        ]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful API answer; fails the test naming the error otherwise."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = http_get(f"{self.url}/api/v1/{path}{query}")
        answer = json.loads(body) if body else {}
        assert status == 200, f"{path} {params}: HTTP {status} {answer}"
        assert answer.get("status") == "success", f"{path} {params}: {answer}"
        return answer["data"]

    def query(self, expr: str) -> list[Any]:
        data = self.api("query", query=expr)
        result: list[Any] = data["result"] if data["resultType"] == "vector" else [data["result"]]
        return result

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"prometheus did not stop on SIGTERM:\n{self.log.read_text()[-3000:]}")


def prometheus_config(data_dir: Path, out: Path) -> Path:
    """``prometheus-up.yml`` with absolute paths to the node's targets file and the rules."""
    config = load_yaml(DEPLOY / "prometheus" / "prometheus-up.yml")
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    assert config["rule_files"] == [RULES.name]
    config["rule_files"] = [str(RULES)]
    for job in config["scrape_configs"]:
        for sd in job["file_sd_configs"]:
            assert [Path(f).name for f in sd["files"]] == [TARGETS_FILE]
            sd.update(files=[str(data_dir / TARGETS_FILE)], refresh_interval="1s")
    out.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    return out


def write_static_peer(root: Path) -> list[Entity]:
    """Another node's objects, exported as a static node (type 255) under ``root``."""
    key = SigningKey.generate(secrets.token_bytes(32))
    now = int(time.time())
    objects = forum(now, "peer")
    signer = Signer(key, 1, pages.NODE_TYPE_STATIC)
    for kind in KINDS:
        rows = [
            (CacheEntry(row.fingerprint, row.creation, row.last_update, row.board, row.thread,
                        row.target, obj.creation), canonical.encode(obj))
            for obj in sorted(objects, key=lambda o: (o.creation, o.fingerprint))
            if obj.kind == kind
            for row in [storing.row_of(obj)]
        ]  # fmt: skip
        head = (now - 14 * DAY_SECONDS, now + 1)
        built = files.object_files(kind, rows, *head, signer) if rows else None
        folder = root / paths.endpoint(kind)
        results = [built.result] if built else []
        for name, body in built.files.items() if built else ():
            (folder / results[0].response_url / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / results[0].response_url / name).write_bytes(body)
        index = files.index_file(kind, results, signer, timestamp=now, nonce=secrets.token_hex(32))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / paths.INDEX).write_bytes(index)
    static_node_files(root, key, now)
    return list(objects)


@pytest.fixture
def static_peer(tmp_path: Path) -> Iterator[str]:
    """``python -m http.server`` serving a static peer on a free loopback port; its URL."""
    root = tmp_path / "peer"
    write_static_peer(root)
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(
        [*argv, "--directory", str(root)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until("the static peer", lambda: http_get(f"{url}/v0/node")[0] == 200, timeout=20)
        yield url
    finally:
        server.terminate()
        server.wait(10)


def node_env(peer: str) -> dict[str, str]:
    """An embedded node's environment (as in the `up` test) with one bootstrap peer, and a
    network scan every few seconds that dials loopback addresses, so the peer's address, once
    stored, gets pinged."""
    return node_environment(
        MIM_BOOTSTRAP=peer,
        MIM_ALLOWED_NETWORKS="127.0.0.0/8,::1/128",
        MIM_SYNCER_SCAN_INTERVAL_SECONDS="3",
        MIM_SYNCER_SCAN_SKIP_SECONDS="0",
    )


@pytest.fixture
def node_and_prometheus(tmp_path: Path, static_peer: str) -> Iterator[tuple[Node, Prometheus]]:
    """``mimrelay up`` (bootstrapping from ``static_peer``) and, once it is healthy, a Prometheus
    scraping it (so Prometheus's free port cannot be one the node has yet to bind); whatever the
    test leaves running is killed at the end."""
    data_dir = tmp_path / "data"
    node = Node(data_dir, free_port(), node_env(static_peer), 1)
    prometheus: Prometheus | None = None
    try:
        node.wait_healthy()
        config = prometheus_config(data_dir, tmp_path / "prometheus.yml")
        prometheus = Prometheus(config, tmp_path / "tsdb", tmp_path / "prometheus.log")
        yield node, prometheus
    finally:
        for proc in (node.proc, prometheus.proc if prometheus is not None else None):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def mine_through_the_node(node: Node) -> dict[str, Any]:
    """``mimrelay mine`` against the node's NATS, so its miner does the work."""
    argv = [sys.executable, "-m", "relay.cli", "mine", "--difficulty", "16", "--no-progress"]
    argv += ["--nats-url", node.state()["nats_url"], "--timeout", "60", "prometheus live test"]
    result = subprocess.run(
        argv, env=node.env, capture_output=True, text=True, timeout=90, check=False
    )
    assert result.returncode == 0, result.stderr
    mined: dict[str, Any] = json.loads(result.stdout)
    return mined


def submit_to_ingest(node: Node, post: Post) -> None:
    """``mimrelay import``: onto the node's ingest stream, past the gateway's own check."""
    argv = [sys.executable, "-m", "relay.cli", "import", "--kind", "post", "-"]
    env = {**node.env, "MIM_NATS_URL": node.state()["nats_url"]}
    result = subprocess.run(
        argv, input=canonical.encode(post), env=env, capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def rejected_post() -> Post:
    """A signed post whose body was changed afterwards: its fingerprint no longer matches."""
    post = posts(1, seed=9)[0]
    assert isinstance(post, Post)
    return replace(post, body="changed after signing")


@pytest.mark.slow
@needs_prometheus
@pytest.mark.timeout(240)
def test_prometheus_scrapes_the_node_and_every_rule_and_panel_query_is_valid(
    node_and_prometheus: tuple[Node, Prometheus],
) -> None:
    """With traffic through the node, Prometheus scrapes every service, loads every alert rule
    healthy, evaluates every rule and panel query without error, and each panel query (save the
    listed ones) returns data; then both stop and leave no process behind."""
    node, prometheus = node_and_prometheus
    services = node.state()["services"]
    replicas = {s["name"] for s in services}
    wait_until("Prometheus ready", lambda: http_get(f"{prometheus.url}/-/ready")[0] == 200)

    # traffic: submissions, one tampered post, GETs, a proof from the miner, a sync (bootstrap)
    node.submit(posts(5, seed=8))
    # the gateway refuses a tampered post at once (422); straight onto the ingest stream, it
    # reaches the validators, whose rejection metrics the dashboard shows
    status, answer = http_post_json(
        f"{node.local}/api/submit",
        [{"kind": "post", "object": json.loads(canonical.encode(rejected_post()))}],
    )
    assert status == 422, answer
    submit_to_ingest(node, rejected_post())
    for path in ("/v0/status", "/v0/node", "/v0/c0/posts/index.json", "/v0/nonexistent"):
        http_get(f"{node.api}{path}")
    assert mine_through_the_node(node)["where"].startswith("service")

    def targets_up() -> list[dict[str, Any]] | None:
        active: list[dict[str, Any]] = prometheus.api("targets", state="active")["activeTargets"]
        scraped = {t["labels"].get("replica") for t in active}
        ok = scraped == replicas and all(t["health"] == "up" for t in active)
        return active if ok else None

    active = wait_until("every service scraped and up", targets_up)
    assert {t["labels"]["job"] for t in active} == {f"mim-{s['service']}" for s in services}

    rules = alert_rules()

    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("rules", type="alert")["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        done = len(loaded) == len(rules) and all(r["health"] != "unknown" for r in loaded)
        return loaded if done else None

    loaded = wait_until("every alert rule evaluated", rules_evaluated)
    assert sorted(r["name"] for r in loaded) == sorted(r["alert"] for r in rules)
    for rule in loaded:
        assert rule["health"] == "ok", rule
        assert not rule.get("lastError"), rule
    for rule in rules:
        prometheus.query(rule["expr"])  # fails the test on any error

    queries = panel_queries()
    assert {key for key in NO_DATA} <= {(title, ref) for title, ref, _ in queries}

    def panels_with_data() -> dict[tuple[str, str], int] | None:
        counts = {
            (title, ref): len(prometheus.query(grafana_to_promql(expr)))
            for title, ref, expr in queries
        }
        empty = [key for key, n in counts.items() if n == 0 and key not in NO_DATA]
        return counts if not empty else None

    deadline = time.monotonic() + WAIT_SECONDS
    counts: dict[tuple[str, str], int] | None = None
    while counts is None and time.monotonic() < deadline:
        counts = panels_with_data()
        if counts is None:
            time.sleep(1)
    if counts is None:
        last = {
            (title, ref): expr
            for title, ref, expr in queries
            if (title, ref) not in NO_DATA and not prometheus.query(grafana_to_promql(expr))
        }
        pytest.fail(f"panel queries without data after {WAIT_SECONDS}s: {last}")
    assert [key for key in NO_DATA if counts[key]] == [], "listed as no data but has some"
    ok_syncs = prometheus.query('sum(mim_syncer_syncs_total{outcome="ok"})')
    assert ok_syncs and float(ok_syncs[0]["value"][1]) >= 1

    state = node.state()
    pids = [s["pid"] for s in state["services"]] + [state["nats_pid"], state["postgres_pid"]]
    assert node.interrupt() == 0
    assert prometheus.stop() == 0
    assert [pid for pid in pids if alive(pid)] == []
    assert processes_mentioning(str(node.data_dir)) == []
    assert processes_mentioning(str(prometheus.log.parent / "tsdb")) == []
