"""The metrics and health HTTP server every service runs, and ``mim_build_info``.

Registry policy: services declare their collectors at the top of ``services/<name>/metrics.py``
on prometheus-client's default ``REGISTRY`` (which also carries the process and platform
collectors), and the server serves that registry. Each service is its own process, so there is no
clash; a test that wants an isolated view passes its own ``CollectorRegistry`` to
``start_metrics_server`` and scrapes the returned ``url``.

The server answers:

- ``GET /metrics``: the registry in Prometheus text format;
- ``GET /healthz``: ``200`` with ``{"status": "ok", ...}`` when the service says it is ready,
  ``503`` with the reason otherwise. Compose and ``mimrelay up`` use this as the health check.

It runs in a daemon thread (scrapes never touch the event loop), binds port 0 to a free port, and
``stop()`` closes the socket and joins the thread.
"""

from __future__ import annotations

import importlib.metadata
import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any, Self
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, make_wsgi_app

__all__ = [
    "BUILD_INFO",
    "DEPENDENCY_UP",
    "MEMORY_RETURNED",
    "TASK_FAILURES",
    "HealthCheck",
    "MetricsServer",
    "set_build_info",
    "start_metrics_server",
    "version",
]

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]
"""Returns ``(ready, details)``; details are rendered as the JSON body of ``/healthz``."""

BUILD_INFO = Gauge(
    "mim_build_info",
    "Always 1; labels name the running service and the mimrelay version.",
    ["service", "version"],
)

DEPENDENCY_UP = Gauge(
    "mim_dependency_up",
    "1 while the service reaches the dependency (nats, postgres), 0 while it does not.",
    ["dependency"],
)


MEMORY_RETURNED = Counter(
    "mim_memory_returned_bytes",
    "Bytes the resident size fell by when freed heap memory was handed back to the system"
    " (`MIM_MEMORY_TRIM_SECONDS`).",
)


TASK_FAILURES = Counter(
    "mim_task_failures_total",
    "Tracked background tasks that ended with an exception (the service then stops), by task.",
    ["task"],
)


def version() -> str:
    """The installed mimrelay version, or ``unknown`` when running from a bare checkout."""
    try:
        return importlib.metadata.version("mimrelay")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def set_build_info(service: str) -> None:
    """Set ``mim_build_info{service, version} 1`` on the default registry."""
    BUILD_INFO.labels(service=service, version=version()).set(1)


def _always_ready() -> tuple[bool, dict[str, Any]]:
    return True, {}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


def _app(registry: CollectorRegistry, health: HealthCheck) -> Any:
    metrics_app = make_wsgi_app(registry)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            try:
                ready, details = health()
            except Exception as exc:  # a broken check must answer 503, not kill the thread
                ready, details = False, {"reason": f"health check failed: {exc!r}"}
            body = json.dumps({"status": "ok" if ready else "unavailable", **details}).encode()
            status = "200 OK" if ready else "503 Service Unavailable"
            start_response(
                status,
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    return app


class MetricsServer:
    """A running metrics/health server; see ``start_metrics_server``."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port: int = server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:9102``."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def health_url(self) -> str:
        return f"{self.url}/healthz"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the socket and join the thread."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_metrics_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    registry: CollectorRegistry = REGISTRY,
    health: HealthCheck = _always_ready,
) -> MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` on ``host:port`` in a daemon thread.

    ``port=0`` binds a free port; the bound one is ``server.port``.
    """
    server = make_server(host, port, _app(registry, health), _Server, handler_class=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name=f"metrics-{server.server_address[1]}",
        daemon=True,
    )
    thread.start()
    return MetricsServer(server, thread, host)
