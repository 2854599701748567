"""``python -m services.gateway``: the public Mim API, run by the shared service runner."""

from __future__ import annotations

from relay.runner import run_service
from services.gateway.service import main
from services.gateway.settings import GatewaySettings

if __name__ == "__main__":
    raise SystemExit(run_service("gateway", GatewaySettings, main))
