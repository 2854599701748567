"""``mimrelay up`` end to end, as an operator runs it: a real node of child processes.

One test walks the node's life (start, submit, kill -9 a service, Ctrl-C, start again), because
each step needs the state the previous one left; the README test checks the documented commands.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mim import canonical
from mim import pow as mim_pow
from mim.create import create
from mim.entities import Provable
from mim.signing import SigningKey
from relay.embedded import free_port
from tests.helpers.procs import REPO, alive

DIFFICULTY = 6
KEY = SigningKey.generate(bytes(range(7, 39)))
WAIT_SECONDS = 60.0


def _wait(what: str, check: Callable[[], Any], timeout: float = WAIT_SECONDS) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def _post_json(url: str, body: object) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (the node's data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and alive(int(entry.name)):
            found.append(f"{entry.name}: {cmdline}")
    return found


def _posts(count: int, seed: int) -> list[Provable]:
    mint = mim_pow.local_minter(random.Random(seed).randrange)
    now = int(time.time()) - 60
    return [
        create(
            "post",
            {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64, "body": f"up {seed} {n}"},
            KEY,
            DIFFICULTY,
            now + n,
            mint,
        )
        for n in range(count)
    ]


class Node:
    """One ``mimrelay up`` subprocess on ``data_dir``, its output in ``data_dir/../up-N.log``."""

    def __init__(self, data_dir: Path, api_port: int, env: dict[str, str], run: int) -> None:
        self.data_dir = data_dir
        self.api = f"http://127.0.0.1:{api_port}"
        self.env = env
        self.log = data_dir.parent / f"up-{run}.log"
        argv = [sys.executable, "-m", "relay.cli", "up", "--data-dir", str(data_dir)]
        argv += ["--host", "127.0.0.1", "--port", str(api_port), "--metrics-port-base", "0"]
        argv += ["--validators", "2", "--miners", "1"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
            )

    def state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((self.data_dir / "node.json").read_text())
        except (OSError, ValueError):
            return {}
        return state

    def status(self) -> dict[str, Any]:
        result = subprocess.run(
            [sys.executable, "-m", "relay.cli", "status", "--json", "--data-dir", self.data_dir],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        report: dict[str, Any] = json.loads(result.stdout)
        report["exit_code"] = result.returncode
        return report

    def wait_healthy(self) -> dict[str, Any]:
        def healthy() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                pytest.fail(f"mimrelay up exited {self.proc.returncode}:\n{self.log.read_text()}")
            if self.state().get("state") != "running" or _get(f"{self.api}/v0/status")[0] != 200:
                return None
            report = self.status()
            return report if report["exit_code"] == 0 else None

        report: dict[str, Any] = _wait("a healthy node", healthy)
        return report

    def stored(self, kind: str) -> int:
        objects = self.status().get("objects", {})
        return int(objects.get(kind, 0)) if isinstance(objects, dict) else 0

    def submit(self, objects: list[Provable]) -> None:
        body = [{"kind": "post", "object": json.loads(canonical.encode(o))} for o in objects]
        status, answer = _post_json(f"{self.api}/api/submit", body)
        assert status == 202, answer
        assert [r["fingerprint"] for r in answer["queued"]] == [o.fingerprint for o in objects]

    def served(self) -> str:
        """The text of every post cache page the gateway serves right now."""
        status, raw = _get(f"{self.api}/v0/c0/posts/index.json")
        if status != 200:
            return ""
        text = []
        for result in json.loads(raw).get("results", []):
            for n in range(4):
                page_status, page = _get(
                    f"{self.api}/v0/c0/posts/{result['response_url']}/{n}.json"
                )
                if page_status == 200:
                    text.append(page.decode())
        return "\n".join(text)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(WAIT_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"mimrelay up did not stop on SIGINT:\n{self.log.read_text()[-4000:]}")


def node_environment(**extra: str) -> dict[str, str]:
    """Environment of an embedded node with a low proof-of-work minimum and short pauses."""
    env = {k: v for k, v in os.environ.items() if k not in ("MIM_NATS_URL", "MIM_DATABASE_URL")}
    env.update(
        PYTHONUNBUFFERED="1",
        MIM_LOG_FORMAT="json",
        MIM_MIN_POW=str(DIFFICULTY),
        MIM_NODE_STOP_TIMEOUT_SECONDS="20",
        MIM_GATEWAY_CACHE_INTERVAL_SECONDS="1",
        MIM_VALIDATOR_SHUTDOWN_GRACE_SECONDS="2",
        MIM_MINER_WORKERS="1",
        MIM_STORE_SHUTDOWN_GRACE_SECONDS="2",
        MIM_GATEWAY_SHUTDOWN_GRACE_SECONDS="2",
        **extra,
    )
    return env


@pytest.fixture
def node_env(tmp_path: Path) -> dict[str, str]:
    return node_environment(MIM_NODE_RESTART_MIN_SECONDS="0.2")


@pytest.fixture
def nodes(tmp_path: Path, node_env: dict[str, str]) -> Iterator[Callable[[], Node]]:
    """Start ``mimrelay up`` runs on one data directory; any still running is killed at the end."""
    started: list[Node] = []
    data_dir = tmp_path / "data"
    api_port = free_port()

    def start() -> Node:
        node = Node(data_dir, api_port, node_env, len(started) + 1)
        started.append(node)
        return node

    yield start
    for node in started:
        if node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()


@pytest.mark.slow
def test_up_serves_survives_a_killed_service_stops_cleanly_and_keeps_data(
    nodes: Callable[[], Node],
) -> None:
    """Objects submitted to `mimrelay up` are stored and served, survive a kill -9 of a validator,
    Ctrl-C leaves no process behind, and a second `up` on the same data directory still has them.
    """
    node = nodes()
    report = node.wait_healthy()
    names = sorted(s["name"] for s in report["services"])
    assert {"gateway", "store", "validator-1", "validator-2", "miner-1"} <= set(names)

    first = _posts(5, seed=1)
    node.submit(first)
    _wait("5 posts stored", lambda: node.stored("post") == 5)
    served = _wait("the posts served by the gateway", node.served)
    assert all(post.fingerprint in served for post in first)

    state = node.state()
    victim = next(s for s in state["services"] if s["name"] == "validator-1")
    os.kill(victim["pid"], signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = next(s for s in node.state()["services"] if s["name"] == "validator-1")
        return now if now["pid"] != victim["pid"] and now["restarts"] == 1 else None

    again = _wait("validator-1 restarted", restarted)
    assert '"event": "service_exited"' in node.log.read_text()
    node.wait_healthy()
    second = _posts(5, seed=2)
    node.submit(second)
    _wait("10 posts stored", lambda: node.stored("post") == 10)

    state = node.state()
    pids = [s["pid"] for s in state["services"]] + [state["nats_pid"], state["postgres_pid"]]
    assert again["pid"] in pids
    assert node.interrupt() == 0
    assert [pid for pid in pids if alive(pid)] == []
    assert _processes_mentioning(str(node.data_dir)) == []
    assert node.state()["state"] == "stopped"

    node = nodes()
    report = node.wait_healthy()
    assert report["objects"] == {"post": 10}
    assert node.interrupt() == 0


def test_readme_commands_are_the_scripts_ci_and_run_use() -> None:
    """The README's first two commands are `./scripts/run` (which runs `mimrelay up`) and
    `./scripts/test`, and `.ci/run` runs exactly the latter."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands[:2] == ["./scripts/run", "./scripts/test"]
    run = (REPO / "scripts" / "run").read_text()
    assert re.search(r"^exec \.venv/bin/mimrelay up\b", run, re.MULTILINE)
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^\./scripts/test\b", ci, re.MULTILINE)
