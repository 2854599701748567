"""A ``mimrelay up`` node run as an operator runs it, for the tests that need a whole node.

``Node`` starts one ``mimrelay up`` subprocess; ``node_environment`` is the environment it is
given, ``posts`` what is submitted to it, and ``wait_until``, ``http_get`` and ``http_post_json``
the polling and plain HTTP the tests use on it and its neighbours.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from mim import canonical
from mim.entities import Provable
from mim.signing import SigningKey
from relay.embedded import free_port
from tests.helpers.objects import signed_posts
from tests.helpers.procs import REPO

#: The proof-of-work minimum the node is run with, and the work of the posts made for it.
DIFFICULTY = 6
KEY = SigningKey.generate(bytes(range(7, 39)))
WAIT_SECONDS = 60.0


def wait_until(
    what: str,
    check: Callable[[], Any],
    timeout: float = WAIT_SECONDS,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (and what
    ``explain`` says then, if given) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    detail = f"; {explain()}" if explain is not None else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}{detail}")


def http_get(url: str) -> tuple[int, bytes]:
    """GET ``url``: its status and body; ``(0, b"")`` if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


def http_post_json(url: str, body: object) -> tuple[int, Any]:
    """POST ``body`` as JSON to ``url``: its status and the decoded JSON (the text on an error)."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def posts(count: int, seed: int) -> list[Provable]:
    """``count`` posts by ``KEY`` at the node's minimum work, made in the last minute; the same
    ``seed`` makes the same bodies."""
    return signed_posts(
        count, seed, key=KEY, difficulty=DIFFICULTY, start=int(time.time()) - 60, label=f"up {seed}"
    )


class Node:
    """One ``mimrelay up`` subprocess on ``data_dir``, its output in ``data_dir/../up-N.log``."""

    def __init__(
        self,
        data_dir: Path,
        api_port: int,
        env: dict[str, str],
        run: int,
        replicas: Sequence[str] = ("--validators", "2", "--miners", "1"),
    ) -> None:
        self.data_dir = data_dir
        self.api = f"http://127.0.0.1:{api_port}"
        self.local = f"http://127.0.0.1:{env['MIM_GATEWAY_LOCAL_PORT']}"  # the operator's API
        self.env = env
        self.log = data_dir.parent / f"up-{run}.log"
        argv = [sys.executable, "-m", "relay.cli", "up", "--data-dir", str(data_dir)]
        argv += ["--host", "127.0.0.1", "--port", str(api_port), "--metrics-port-base", "0"]
        argv += replicas
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
        """Wait for ``mimrelay status`` to say healthy; on a timeout, fail saying what was not."""
        why = "the node never wrote that it is running"

        def healthy() -> dict[str, Any] | None:
            nonlocal why
            if self.proc.poll() is not None:
                pytest.fail(f"mimrelay up exited {self.proc.returncode}:\n{self.log.read_text()}")
            if self.state().get("state") != "running":
                return None
            code, body = http_get(f"{self.api}/v0/status")
            report = self.status() if code == 200 else {}
            if report.get("exit_code") == 0:
                return report
            why = f"mimrelay status said: {_unwell(report)}" if report else (
                f"GET {self.api}/v0/status answered {code}: {body[:300]!r}"
            )  # fmt: skip
            return None

        def explain() -> str:
            return f"last, {why}\nits log ends:\n{self.log.read_text(errors='replace')[-4000:]}"

        report: dict[str, Any] = wait_until("a healthy node", healthy, explain=explain)
        return report

    def stored(self, kind: str) -> int:
        objects = self.status().get("objects", {})
        return int(objects.get(kind, 0)) if isinstance(objects, dict) else 0

    def submit(self, objects: list[Provable]) -> None:
        body = [{"kind": "post", "object": json.loads(canonical.encode(o))} for o in objects]
        status, answer = http_post_json(f"{self.local}/api/submit", body)
        assert status == 202, answer
        assert [r["fingerprint"] for r in answer["queued"]] == [o.fingerprint for o in objects]

    def served(self) -> str:
        """The text of every post cache page the gateway serves right now."""
        status, raw = http_get(f"{self.api}/v0/c0/posts/index.json")
        if status != 200:
            return ""
        text = []
        for result in json.loads(raw).get("results", []):
            for n in range(4):
                page_status, page = http_get(
                    f"{self.api}/v0/c0/posts/{result['response_url']}/{n}.json"
                )
                if page_status == 200:
                    text.append(page.decode())
        return "\n".join(text)

    def serving(self, objects: Sequence[Provable]) -> str:
        """What :meth:`served` gives once it holds every one of ``objects``, else ``""``: a cache
        built while only some of them were stored is served until the next generation."""
        text = self.served()
        return text if all(o.fingerprint in text for o in objects) else ""

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
        MIM_GATEWAY_LIVE_TAIL_OVERLAP_SECONDS="1",  # caches take objects a second after they commit
        MIM_VALIDATOR_SHUTDOWN_GRACE_SECONDS="2",
        MIM_MINER_WORKERS="1",
        MIM_STORE_SHUTDOWN_GRACE_SECONDS="2",
        MIM_GATEWAY_SHUTDOWN_GRACE_SECONDS="2",
        MIM_GATEWAY_LOCAL_PORT=str(free_port()),
        **extra,
    )
    return env


def _unwell(report: dict[str, Any]) -> str:
    """What a ``mimrelay status --json`` report names as down or unhealthy."""
    servers = [f"{s['name']} down ({s.get('reason')})" for s in report.get("servers", [])
               if not s.get("up")]  # fmt: skip
    services = [f"{s['name']} unhealthy ({s.get('reason', s.get('status'))})"
                for s in report.get("services", []) if not s.get("healthy")]  # fmt: skip
    return "; ".join(servers + services) or json.dumps(report)[:2000]
