"""A node of the soak and chaos runs, seen only through what an operator sees.

A :class:`Node` is a ``mimrelay up`` process this run started in a data directory of its own, or a
running node it was pointed at (its data directory). Everything else is read from the node's
public interfaces: ``<data_dir>/node.json`` (pids, URLs, the servers' state, each service's
metrics and health URLs), the services' ``/healthz`` and ``/metrics``, the Mim API, and the
``mimrelay status`` and ``mimrelay export`` commands. ``node.json`` is read again each time, so a
process restarted by the node is followed to its new pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from relay.embedded import free_port

__all__ = ["NODE_ENV", "Node", "Stored", "get", "healthz"]

#: What a node of these runs is given beside the operator's environment: the proof-of-work
#: minimum its objects are made at, loopback peers allowed, and one search process per miner.
NODE_ENV: Final = {
    "PYTHONUNBUFFERED": "1",
    "MIM_LOG_FORMAT": "json",
    "MIM_MINER_WORKERS": "1",
    "MIM_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
    "MIM_SYNCER_SCHEME": "http",
}
_START_SECONDS: Final = 240.0
_STOP_SECONDS: Final = 90.0

#: ``(kind, fingerprint) -> versions stored`` (one each, unless something is stored twice).
Stored = dict[tuple[str, str], list[int]]


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``: status and body, ``(0, b"")`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status), bytes(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError):
        return 0, b""


def healthz(url: str) -> tuple[bool, str]:
    """Whether a ``/healthz`` answers 200, and its reason when it does not."""
    status, body = get(url, timeout=3.0)
    if status == 200:
        return True, ""
    try:
        reason = str(json.loads(body).get("reason", status))
    except (ValueError, AttributeError):
        reason = f"status {status}" if status else "unreachable"
    return False, reason


class Node:
    """One node, named ``A`` or ``B`` in the output; see the module docstring."""

    def __init__(self, name: str, data_dir: Path, proc: subprocess.Popen[bytes] | None = None):
        self.name = name
        self.data_dir = data_dir.absolute()
        self.proc = proc
        self.local_port = 0  # the local API's port, when this run chose it

    # --- starting and stopping ---------------------------------------------------------------

    @classmethod
    def start(cls, name: str, data_dir: Path, env: Mapping[str, str], validators: int) -> Node:
        """``mimrelay up`` in ``data_dir`` on free loopback ports, its output in ``up.log``."""
        data_dir.mkdir(parents=True, exist_ok=True)
        local_port = free_port()
        argv = [sys.executable, "-m", "relay.cli", "up", "--data-dir", str(data_dir)]
        argv += ["--host", "127.0.0.1", "--port", str(free_port()), "--metrics-port-base", "0"]
        argv += ["--validators", str(validators), "--miners", "1"]
        full = {
            **os.environ, **NODE_ENV, "MIM_GATEWAY_LOCAL_PORT": str(local_port),
            "MIM_NODE_NATS_PROFILE_PORT": str(free_port()), **env,
        }  # fmt: skip
        for variable in ("MIM_NATS_URL", "MIM_DATABASE_URL", "MIM_DATA_DIR"):
            full.pop(variable, None)
        with (data_dir.parent / f"{name}-up.log").open("ab") as out:
            proc = subprocess.Popen(
                argv, env=full, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )
        node = cls(name, data_dir, proc)
        node.local_port = local_port
        return node

    def wait_healthy(self, within: float = _START_SECONDS) -> float:
        """Wait until the node runs and every service is healthy; the seconds it took."""
        started = time.monotonic()
        while not self.healthy():
            if self.proc is not None and self.proc.poll() is not None:
                raise SystemExit(f"node {self.name} exited with {self.proc.returncode}")
            if time.monotonic() - started > within:
                raise SystemExit(f"node {self.name} not healthy within {within:.0f} s")
            time.sleep(0.5)
        return time.monotonic() - started

    def stop(self) -> int | None:
        """SIGINT the node this run started (it drains and stops its servers); its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            for pids in self.processes().values():
                for pid in pids:
                    _kill(pid)
            self.proc.kill()
            return self.proc.wait()

    # --- what node.json says -----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The node's ``node.json`` (empty while it is not written yet)."""
        for _ in range(5):
            try:
                state: dict[str, Any] = json.loads((self.data_dir / "node.json").read_text())
                return state
            except FileNotFoundError:
                return {}
            except (OSError, ValueError):
                time.sleep(0.05)
        return {}

    @property
    def api_url(self) -> str:
        return str(self.state().get("api_url", ""))

    def submit_url(self) -> str:
        """Where submissions go: the local API when the node has one, else the public API."""
        state = self.state()
        local = state.get("local_api_url") or (
            f"http://127.0.0.1:{self.local_port}" if self.local_port else ""
        )
        if local and get(f"{local}/v0/status", timeout=2.0)[0]:
            return str(local)
        return str(state.get("api_url", ""))

    def services(self) -> list[dict[str, Any]]:
        services: list[dict[str, Any]] = self.state().get("services", [])
        return services

    def processes(self) -> dict[str, list[int]]:
        """``<node>/<process>`` -> its pids: the supervisor, each server, each service."""
        state, found = self.state(), {}
        if state.get("state") == "running" and state.get("pid"):
            found[f"{self.name}/up"] = [int(state["pid"])]
        for server in ("nats", "postgres"):
            pid = state.get("servers", {}).get(server, {}).get("pid")
            if pid:
                found[f"{self.name}/{server}"] = [int(pid)]
        for service in state.get("services", []):
            if service.get("pid"):
                found[f"{self.name}/{service['name']}"] = [int(service["pid"])]
        return found

    def metrics_urls(self) -> dict[str, str]:
        return {s["name"]: s["metrics_url"] for s in self.services() if s.get("metrics_url")}

    def health(self) -> dict[str, tuple[bool, str]]:
        """Each service's ``/healthz``, and whether each embedded server runs."""
        state = self.state()
        found = {s["name"]: healthz(s["health_url"]) for s in state.get("services", [])}
        for server, entry in state.get("servers", {}).items():
            running = entry.get("state") in ("running", "external")
            found[server] = (running, "" if running else str(entry.get("state")))
        return found

    def healthy(self) -> bool:
        state = self.state()
        if state.get("state") != "running" or not state.get("services"):
            return False
        if get(f"{state['api_url']}/v0/status", timeout=3.0)[0] != 200:
            return False
        return all(ok for ok, _ in self.health().values())

    # --- the node's commands -----------------------------------------------------------------

    def _command(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        state = self.state()
        env = {**os.environ, "MIM_DATA_DIR": str(self.data_dir)}
        env["MIM_NATS_URL"] = str(state.get("nats_url", ""))
        env["MIM_DATABASE_URL"] = str(state.get("database_url", ""))
        env["MIM_STREAM_PREFIX"] = str(state.get("stream_prefix", "MIM"))
        argv = [sys.executable, "-m", "relay.cli", *args]
        return subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def status(self) -> dict[str, Any]:
        """``mimrelay status --json``, with its exit code as ``exit_code``."""
        try:
            done = self._command("status", "--json", "--data-dir", str(self.data_dir))
            report: dict[str, Any] = json.loads(done.stdout)
        except (subprocess.TimeoutExpired, ValueError):
            return {"exit_code": -1}
        report["exit_code"] = done.returncode
        return report

    def stored_count(self) -> int:
        """Objects the node stores (addresses not counted); -1 when it cannot say."""
        objects = self.status().get("objects")
        if not isinstance(objects, dict) or "error" in objects:
            return -1
        return sum(int(n) for kind, n in objects.items() if kind != "address")

    def export(self) -> Stored:
        """Every stored object, through ``mimrelay export --jsonl``."""
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "export.jsonl"
            done = self._command("export", "--jsonl", str(target), timeout=900.0)
            if done.returncode != 0:
                raise SystemExit(f"export of node {self.name} failed: {done.stderr[-500:]}")
            stored: Stored = {}
            with target.open(encoding="utf-8") as lines:
                for line in lines:
                    wrapper = json.loads(line)
                    obj = wrapper["object"]
                    key = (wrapper["kind"], obj["fingerprint"])
                    stored.setdefault(key, []).append(int(obj.get("last_update", 0)))
        return stored


def _kill(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
