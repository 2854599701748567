"""relay.metrics: /metrics and /healthz served from a thread, stoppable, on a free port."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from relay.metrics import set_build_info, start_metrics_server, version
from tests.helpers.metrics import sample, scrape


def test_port_zero_binds_a_free_port_and_serves_build_info() -> None:
    """The default registry is served with mim_build_info{service,version} = 1."""
    set_build_info("validator")
    with start_metrics_server("127.0.0.1", 0) as server:
        assert server.port > 0
        text = scrape(server.metrics_url)
    assert sample(text, "mim_build_info", service="validator", version=version()) == 1.0
    assert sample(text, "process_cpu_seconds_total") is not None


def test_own_registry_for_isolated_tests() -> None:
    """A test can serve its own registry and read exact values from it."""
    registry = CollectorRegistry()
    handled = Counter("mim_test_handled_total", "Handled.", ["outcome"], registry=registry)
    handled.labels(outcome="ok").inc(3)
    with start_metrics_server(registry=registry) as server:
        text = scrape(server.metrics_url)
    assert sample(text, "mim_test_handled_total", outcome="ok") == 3.0
    assert sample(text, "mim_build_info") is None


def test_healthz_follows_the_check() -> None:
    """/healthz answers 503 with the reason until ready, then 200."""
    state = {"ready": False}

    def health() -> tuple[bool, dict[str, object]]:
        if state["ready"]:
            return True, {"service": "t"}
        return False, {"service": "t", "reason": "starting"}

    with start_metrics_server(health=health) as server:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.health_url, timeout=5)
        assert caught.value.code == 503
        assert json.loads(caught.value.read()) == {
            "status": "unavailable",
            "service": "t",
            "reason": "starting",
        }
        caught.value.close()
        state["ready"] = True
        with urllib.request.urlopen(server.health_url, timeout=5) as response:
            assert response.status == 200
            assert json.loads(response.read()) == {"status": "ok", "service": "t"}


def test_broken_health_check_is_503_not_a_crash() -> None:
    """A health check that raises makes /healthz answer 503; the server keeps serving."""

    def health() -> tuple[bool, dict[str, object]]:
        raise RuntimeError("oops")

    with start_metrics_server(health=health) as server:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.health_url, timeout=5)
        assert caught.value.code == 503
        caught.value.close()
        assert "# HELP" in scrape(server.metrics_url)


def test_stop_releases_the_port() -> None:
    """After stop() nothing listens on the port any more."""
    server = start_metrics_server()
    port = server.port
    server.stop()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
