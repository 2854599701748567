"""`mimrelay create` mines through the miner service when one answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mim import verify
from tests.helpers.procs import parse_lines
from tests.services.miner.conftest import StartMiner


def test_create_uses_a_running_miner(
    start_miner: StartMiner, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With a miner on the node's bus, `create -v` logs that the service did the work, and the
    object it prints verifies at the asked strength; without -v it says nothing on stderr."""
    start_miner()
    env = {**os.environ, "MIM_NATS_URL": nats_url, "MIM_STREAM_PREFIX": stream_prefix}
    key = tmp_path / "k.json"
    subprocess.run([sys.executable, "-m", "relay.cli", "keygen", "--out", str(key)], check=True)
    made = subprocess.run(
        [
            sys.executable, "-m", "relay.cli", "create", "key", "--key", str(key),
            "--difficulty", "12", "--set", "name=alice", "-v",
        ],
        env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    mined = [r for r in parse_lines(made.stderr.decode()) if r.get("event") == "pow_mined"]
    assert [r["where"] for r in mined] == ["service"], made.stderr
    verdict = verify.verify("key", made.stdout, verify.Policy.uniform(12))
    assert verdict.ok, verdict.reason
    assert json.loads(made.stdout)["name"] == "alice"
    quiet = subprocess.run(
        [
            sys.executable, "-m", "relay.cli", "create", "key", "--key", str(key),
            "--difficulty", "8", "--set", "name=bob",
        ],
        env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == b""
