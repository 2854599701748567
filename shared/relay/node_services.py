"""The service replicas of a ``mimrelay up`` node, as child processes kept running.

Contract:

- Each replica runs as ``python -m <module> <args>`` in a session of its own, with the node's
  connection URLs and its own metrics port in its environment, logging to our stdout; on Linux it
  gets SIGTERM when the supervisor dies.
- ``poll()`` notices a replica that exited and starts it again after the pause of its
  :class:`relay.restarts.Backoff` (``service_exited``, then ``service_started``). A replica exiting
  with status 2 (bad settings) sets ``failure`` instead: restarting it would not help.
- ``stop()`` sends SIGTERM to every replica (they drain), passes on each further signal the
  supervisor receives, and kills the process group of any still running after the timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from relay.embedded.process import death_signal
from relay.logging import get_logger
from relay.restarts import Backoff

__all__ = ["EXIT_BAD_SETTINGS", "Replica", "Replicas", "ServiceSpec"]

EXIT_BAD_SETTINGS: Final = 2  # relay.runner's exit status for invalid settings
_TICK_SECONDS: Final = 0.1

_log = get_logger("relay.node")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One replica to run: ``python -m <module> <args>`` with ``env`` added."""

    name: str  # "validator-2"
    service: str  # "validator"
    module: str
    metrics_port: int
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, *self.args]


class Replica:
    """A replica and the process currently running it, with its restart state."""

    def __init__(self, spec: ServiceSpec, backoff: Backoff) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.backoff = backoff
        self.next_start: float | None = 0.0  # due now

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the child's process group (its worker processes too)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def state(self) -> dict[str, Any]:
        """This replica's entry in ``node.json``."""
        port = self.spec.metrics_port
        return {
            "name": self.spec.name,
            "service": self.spec.service,
            "pid": self.proc.pid if self.proc else None,
            "metrics_url": f"http://127.0.0.1:{port}/metrics",
            "health_url": f"http://127.0.0.1:{port}/healthz",
            "restarts": self.restarts,
        }


class Replicas:
    """Every replica of the node; see the module docstring."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        new_backoff: Callable[[], Backoff],
        signals: Callable[[], int],
    ) -> None:
        self.all = [Replica(spec, new_backoff()) for spec in specs]
        self.env: dict[str, str] = {}
        self.failure: str | None = None
        self._signals = signals

    def _start(self, replica: Replica) -> None:
        replica.proc = subprocess.Popen(
            replica.spec.argv,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **replica.spec.env},
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            # only calls prctl(2) between fork and exec; see death_signal
            preexec_fn=death_signal(signal.SIGTERM),  # noqa: PLW1509
        )
        replica.started_at = time.monotonic()
        replica.next_start = None
        _log.info(
            "service_started", name=replica.spec.name, pid=replica.proc.pid,
            metrics_port=replica.spec.metrics_port, restarts=replica.restarts,
        )  # fmt: skip

    def poll(self, stopping: Callable[[], bool]) -> bool:
        """Restart what exited and start what is due; True if anything changed."""
        now = time.monotonic()
        changed = False
        for replica in self.all:
            if replica.proc is not None and replica.next_start is None:
                status = replica.proc.poll()
                if status is not None:
                    self._exited(replica, status, now)
                    changed = True
            if stopping() or self.failure is not None:
                return changed
            if replica.next_start is not None and now >= replica.next_start:
                self._start(replica)
                changed = True
        return changed

    def _exited(self, replica: Replica, status: int, now: float) -> None:
        replica.kill_group()
        if status == EXIT_BAD_SETTINGS:
            self.failure = f"{replica.spec.name} refused its settings (exit status 2)"
            _log.error("service_misconfigured", name=replica.spec.name, exit_code=status)
            return
        pause = replica.backoff.exited(now - replica.started_at)
        replica.next_start = now + pause
        replica.restarts += 1
        _log.warning(
            "service_exited", name=replica.spec.name,
            pid=replica.proc.pid if replica.proc else None,
            exit_code=status, restart_in_s=round(pause, 3), restarts=replica.restarts,
        )  # fmt: skip

    def stop(self, timeout: float) -> None:
        """SIGTERM every replica, pass on further signals, kill what is left after ``timeout``."""
        running = [r for r in self.all if r.running]
        for replica in running:
            assert replica.proc is not None
            with contextlib.suppress(ProcessLookupError):
                replica.proc.send_signal(signal.SIGTERM)
        forwarded = self._signals()
        deadline = time.monotonic() + timeout
        while any(r.running for r in running) and time.monotonic() < deadline:
            if self._signals() > forwarded:  # a further signal: pass it on (hurry)
                forwarded = self._signals()
                for replica in running:
                    if replica.running and replica.proc is not None:
                        with contextlib.suppress(ProcessLookupError):
                            replica.proc.send_signal(signal.SIGTERM)
            time.sleep(_TICK_SECONDS)
        for replica in self.all:
            self._reap(replica)

    @staticmethod
    def _reap(replica: Replica) -> None:
        killed = replica.running
        replica.kill_group()
        if replica.proc is None:
            return
        replica.proc.wait()
        if killed:
            _log.warning("service_killed", name=replica.spec.name, pid=replica.proc.pid)
        else:
            _log.info("service_stopped", name=replica.spec.name, exit_code=replica.proc.returncode)
