"""`python -m services.gateway` as an operator runs it."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.helpers.procs import ServiceProcess


def test_sigterm_drains_and_exits_zero(nats_url: str, fresh_database: str, tmp_path: Path) -> None:
    """On SIGTERM the gateway finishes its shutdown and exits 0, not by the signal."""
    env = {
        **os.environ,
        "MIM_NATS_URL": nats_url,
        "MIM_DATABASE_URL": fresh_database,
        "MIM_DATA_DIR": str(tmp_path),
        "MIM_GATEWAY_PORT": "0",
        "MIM_GATEWAY_LOCAL_PORT": "0",
        "MIM_GATEWAY_METRICS_PORT": "0",
    }
    with ServiceProcess(["-m", "services.gateway"], env=env) as gateway:
        gateway.wait_for("gateway_ready", timeout=60)
        gateway.send(signal.SIGTERM)
        assert gateway.wait(timeout=60) == 0
        gateway.wait_for("shutdown_complete", timeout=5)
