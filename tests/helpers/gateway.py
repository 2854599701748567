"""A gateway run as an operator runs it, a well-behaved client beside it, and what they measure.

``gateway(...)`` starts ``python -m services.gateway`` on free ports with the given settings and
yields a :class:`Gateway`: its URLs, its process (resident memory from ``/proc``) and health.
``Polite`` is a well-behaved remote (its own loopback address) asking for the node page over and
over in a thread while a test attacks; its :class:`Manners` say how every request went.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from mim import canonical, pages
from mim import pow as mim_pow
from mim.entities import Filter
from mim.signing import SigningKey
from tests.helpers.procs import ServiceProcess

#: Where the well-behaved client connects from: a remote of its own.
POLITE_ADDRESS = "127.0.0.250"


@dataclass
class Gateway:
    """A running gateway process."""

    proc: ServiceProcess
    url: str
    local: str
    metrics: str

    def rss(self) -> int:
        """Resident memory of the process now, in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def health(self) -> int:
        """The status of ``/healthz`` on the metrics port."""
        try:
            with urllib.request.urlopen(f"{self.metrics}/healthz", timeout=5) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of ``name`` (0 if it is not there)."""
        with urllib.request.urlopen(f"{self.metrics}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            head, _, value = line.rpartition(" ")
            if head in (name, f"{name}{{{want}}}"):
                return float(value)
        return 0.0


@contextmanager
def gateway(
    nats_url: str, database: str, prefix: str, data_dir: Path, **settings: str
) -> Iterator[Gateway]:
    """``python -m services.gateway`` with ``settings`` (``MIM_*`` variables) on free ports."""
    env = {
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": database,
        "MIM_STREAM_PREFIX": prefix,
        "MIM_DATA_DIR": str(data_dir),
        "MIM_GATEWAY_HOST": "127.0.0.1",
        "MIM_GATEWAY_PORT": "0",
        "MIM_GATEWAY_LOCAL_PORT": "0",
        "MIM_GATEWAY_METRICS_PORT": "0",
        "MIM_GATEWAY_SHUTDOWN_GRACE_SECONDS": "2",
        "MIM_CONNECT_ATTEMPTS": "5",
        **settings,
    }
    with ServiceProcess(["-m", "services.gateway"], env=env) as proc:
        started = proc.wait_for("service_started", timeout=30)
        ports = proc.wait_for("gateway_listening", timeout=60)
        metrics = started["metrics_url"].removesuffix("/metrics")
        yield Gateway(
            proc,
            f"http://127.0.0.1:{ports['public']}",
            f"http://127.0.0.1:{ports['local']}",
            metrics,
        )
        proc.terminate()
        assert proc.wait(timeout=30) == 0, proc.stderr[-2000:]


@dataclass
class Manners:
    """How a well-behaved client's requests went."""

    statuses: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def worst(self) -> float:
        return max(self.seconds, default=0.0)

    @property
    def failed(self) -> list[int]:
        return [s for s in self.statuses if s != 200]

    def __repr__(self) -> str:
        return (
            f"Manners({len(self.statuses)} requests, failed {self.failed[:10]},"
            f" worst {self.worst:.3f} s)"
        )


class Polite:
    """A well-behaved remote asking for ``path`` every ``pause`` seconds until the block ends."""

    def __init__(self, url: str, path: str = "/v0/node", pause: float = 0.1) -> None:
        self._url = url
        self._path = path
        self._pause = pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.manners = Manners()

    def _run(self) -> None:
        transport = httpx.HTTPTransport(local_address=POLITE_ADDRESS, retries=0)
        with httpx.Client(base_url=self._url, transport=transport, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    status = client.get(self._path).status_code
                except httpx.HTTPError:
                    status = 0
                self.manners.seconds.append(time.perf_counter() - started)
                self.manners.statuses.append(status)
                self._stop.wait(self._pause)

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.manners.statuses and time.monotonic() < deadline:
            time.sleep(0.02)  # its lease is taken before the attack starts
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(30)


PEER = SigningKey.generate(bytes(range(90, 122)))
MINT = mim_pow.local_minter(random.Random(13).randrange)
#: The request proof of work the hostile tests run the gateway with (MIM_GATEWAY_POST_MIN_POW).
REQUEST_POW = 1


def request(
    endpoint: str,
    filters: tuple[Filter, ...] | None = None,
    *,
    key: SigningKey = PEER,
    nonce: str | None = None,
) -> bytes:
    """A signed POST request page to ``endpoint`` (``node``, ``posts``...), as a remote sends it."""
    base = pages.prefill(
        key.public_hex,
        port=7000,
        node_type=2,
        nonce=nonce or secrets.token_hex(32),
        now=int(time.time()),
    )
    page = dataclasses.replace(base, entity=endpoint, endpoint=endpoint, filters=filters)
    return canonical.encode(pages.build_request(page, key, MINT, difficulty=REQUEST_POW))


def error_of(answer: httpx.Response) -> dict[str, str]:
    """The ``error`` of a refusal."""
    body: dict[str, dict[str, str]] = answer.json()
    return body["error"]
