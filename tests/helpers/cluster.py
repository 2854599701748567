"""A JetStream cluster of real nats-server processes on loopback, for the tests that need one.

``running_nats_cluster()`` starts three members (``n1``, ``n2``, ``n3``), each on free client,
monitoring and route ports, every member routed to every other, and waits until each answers a
full health check (a JetStream meta leader elected, every stream current). A member can be killed
and restarted on its ports and data; ``NatsCluster.url`` names all three for ``MIM_NATS_URL``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from relay.embedded import Cluster, NatsServer, free_port
from tests.helpers.servers import TEST_MAX_FILE_STORE, temp_dir

CLUSTER_NAME = "mimtest"


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (urllib.error.URLError, OSError, ValueError):
        return 0, None


@dataclass
class NatsCluster:
    """The members of one cluster, by server name, with the URLs they were started on."""

    servers: dict[str, NatsServer]
    urls: dict[str, str]
    monitors: dict[str, str]

    @property
    def url(self) -> str:
        """Every member's client URL, comma-separated, as ``MIM_NATS_URL`` takes them."""
        return ",".join(self.urls.values())

    def healthy(self, name: str) -> bool:
        """Whether member ``name`` passes nats-server's full health check (JetStream current)."""
        return _get(f"{self.monitors[name]}/healthz")[0] == 200

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Until every running member passes the full health check."""
        deadline = time.monotonic() + timeout
        while True:
            sick = [n for n, s in self.servers.items() if s.running and not self.healthy(n)]
            if not sick:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"members {sick} not healthy within {timeout}s")
            time.sleep(0.1)

    def jsz(self, name: str) -> dict[str, Any]:
        """Member ``name``'s JetStream report, with every stream and its replicas."""
        status, body = _get(f"{self.monitors[name]}/jsz?streams=true&consumers=true")
        assert status == 200, f"{name} did not report: {status}"
        report: dict[str, Any] = body
        return report


@contextmanager
def running_nats_cluster(size: int = 3) -> Iterator[NatsCluster]:
    """``size`` members routed to each other, in temporary directories removed after."""
    names = [f"n{n + 1}" for n in range(size)]
    route_ports = {name: free_port() for name in names}
    routes = tuple(f"nats-route://127.0.0.1:{port}" for port in route_ports.values())
    with ExitStack() as stack:
        servers: dict[str, NatsServer] = {}
        for name in names:
            path = stack.enter_context(temp_dir(f"mimrelay-{name}-"))
            server = NatsServer(
                path / "nats",
                server_name=name,
                max_file_store=TEST_MAX_FILE_STORE,
                cluster=Cluster(CLUSTER_NAME, route_ports[name], routes),
            )
            stack.callback(server.stop)
            servers[name] = server.start()
        cluster = NatsCluster(
            servers,
            {name: s.url for name, s in servers.items()},
            {name: s.monitor_url for name, s in servers.items()},
        )
        cluster.wait_healthy()
        yield cluster
