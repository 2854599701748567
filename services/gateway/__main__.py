"""``python -m services.gateway``: settings → logging → uvicorn serving the app.

uvicorn owns the signals: on SIGTERM it stops accepting, lets in-flight requests finish, and the
app's lifespan then cancels the cache task and drains NATS and the pool.
"""

from __future__ import annotations

import sys

import uvicorn

from relay import SettingsError
from relay.logging import configure
from relay.settings import load
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.gateway.tls import ensure_certificate


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
