"""``python -m services.gateway``: settings → logging → uvicorn serving the app.

uvicorn owns the signals: on SIGTERM it stops accepting, lets in-flight requests finish, and the
app's lifespan then cancels the cache task and drains NATS and the pool.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import uvicorn

from relay import SettingsError
from relay.logging import configure
from relay.settings import load
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.gateway.tls import ensure_certificate


def _after_drain(signum: int, frame: FrameType | None) -> None:
    """Runs only for the signal uvicorn re-raises once it has shut down; nothing is left to do."""


def main() -> int:
    try:
        settings = load(GatewaySettings)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure("gateway", settings)
    ssl: dict[str, str] = {}
    if settings.tls:
        cert, key = ensure_certificate(settings.data_dir / "gateway-tls")
        ssl = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again with the handlers it found at
    # start restored. With these no-op handlers that second delivery is harmless, so a drained
    # gateway exits 0 like every other service instead of dying by the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _after_drain)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        **ssl,  # type: ignore[arg-type]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
