"""Gateway replicas of one node as an operator runs them: ``python -m services.gateway``
processes over one NATS and one database, each on its own API and metrics port."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from relay.embedded import free_port
from tests.helpers.metrics import sample, scrape
from tests.helpers.procs import ServiceProcess

#: The builder lease of replicas made here, short so that tests see a takeover quickly.
LEASE_SECONDS = 3.0
#: The proof of work the tests' objects carry (tests.services.gateway.conftest.DIFFICULTY).
MIN_POW = 2


class Replica:
    """One ``python -m services.gateway`` process, its API and metrics addresses."""

    def __init__(self, proc: ServiceProcess, port: int) -> None:
        self.proc = proc
        self.url = f"http://127.0.0.1:{port}"
        self.metrics_url = str(proc.wait_for("service_started")["metrics_url"])

    def metric(self, name: str) -> float | None:
        return sample(scrape(f"{self.metrics_url}/metrics"), name)

    def health(self) -> tuple[int, dict[str, object]]:
        try:
            with urllib.request.urlopen(f"{self.metrics_url}/healthz", timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    @property
    def building(self) -> bool:
        return self.metric("mim_gateway_cache_builder") == 1


@contextlib.contextmanager
def replica(
    database: str, nats_url: str, prefix: str, data_dir: Path, **extra: str
) -> Iterator[Replica]:
    """A gateway replica of the node on ``database``, ready to serve."""
    port = free_port()
    env = {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": database,
        "MIM_STREAM_PREFIX": prefix,
        "MIM_DATA_DIR": str(data_dir),
        "MIM_MIN_POW": str(MIN_POW),
        "MIM_GATEWAY_HOST": "127.0.0.1",
        "MIM_GATEWAY_PORT": str(port),
        "MIM_PUBLIC_PORT": "8090",  # behind one proxy, every replica announces the same port
        "MIM_GATEWAY_METRICS_PORT": "0",
        "MIM_GATEWAY_CACHE_INTERVAL_SECONDS": "1",
        "MIM_GATEWAY_CACHE_LEASE_SECONDS": str(LEASE_SECONDS),
        "MIM_GATEWAY_LIVE_TAIL_OVERLAP_SECONDS": "1",
        **extra,
    }
    with ServiceProcess(["-m", "services.gateway"], env=env) as proc:
        proc.wait_for("service_ready", timeout=60)
        yield Replica(proc, port)
