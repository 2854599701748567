"""A server binary run as a child process that leads its own process group, and never outlives us.

:class:`ChildServer` is the base of ``NatsServer`` and ``PostgresServer``: it spawns the binary
with its output appended to ``<data_dir>/<what>.log``, stops it politely or kills its whole group,
cleans up after it when it has exited on its own (:meth:`ChildServer.reap`) and starts it again
on the ports it had (:meth:`ChildServer.restart`). Every server still running is stopped at
interpreter exit, and on Linux each gets a parent-death signal in case we are killed outright.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from relay import ServerError

__all__ = [
    "LOG_TAIL_BYTES",
    "POLL_SECONDS",
    "Account",
    "ChildServer",
    "accepts",
    "clean_env",
    "death_signal",
    "free_port",
    "log_tail",
]

#: How often a starting server is checked for readiness.
POLL_SECONDS: Final = 0.05
#: How much of a server's log an error message quotes.
LOG_TAIL_BYTES: Final = 4000
#: How long a restart waits for what is left of the previous process group to be gone.
_GROUP_GONE_SECONDS: Final = 5.0
_PR_SET_PDEATHSIG: Final = 1
#: Where Linux keeps its range of ephemeral ports ("32768\t60999" by default).
_EPHEMERAL_RANGE_FILE: Final = "/proc/sys/net/ipv4/ip_local_port_range"
#: The lowest port :func:`free_port` chooses: above where well-known servers listen.
_FIRST_CHOSEN_PORT: Final = 10000
#: How many ports outside the ephemeral range :func:`free_port` tries before asking for port 0.
_CHOICE_ATTEMPTS: Final = 50


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``, chosen outside the kernel's range of
    ephemeral ports where it can.

    A server is often started seconds after its port is chosen (a node's gateway after its store
    and validator). A port from the ephemeral range can be taken in between by any outgoing
    connection on the machine; one from outside it is taken only by a server that asks for it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low, high = _ephemeral_ports()
    spans = [span for span in (range(_FIRST_CHOSEN_PORT, low), range(high + 1, 65536)) if span]
    for _ in range(_CHOICE_ATTEMPTS if spans else 0):
        span = random.choice(spans)
        with contextlib.suppress(OSError):
            return _bound_port(family, host, random.randrange(span.start, span.stop))
    return _bound_port(family, host, 0)


def _bound_port(family: socket.AddressFamily, host: str, port: int) -> int:
    """The port a TCP socket bound to ``host:port`` got (for 0, the kernel's choice), let go."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))
        bound: int = sock.getsockname()[1]
        return bound


def _ephemeral_ports() -> tuple[int, int]:
    """The first and last port the kernel hands to outgoing connections and to binds of port 0."""
    try:
        low, high = Path(_EPHEMERAL_RANGE_FILE).read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _FIRST_CHOSEN_PORT, 65535  # unknown: the whole range, so port 0 chooses


def accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``host:port`` now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def death_signal(sig: signal.Signals) -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to send ``sig`` to the child when we die (None elsewhere).

    It is tied to the thread that starts the child: start children from a long-lived thread.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    signum = int(sig)

    def set_death_signal() -> None:
        # Runs in the child between fork and exec: no imports, no locks, no logging.
        prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)

    return set_death_signal


def clean_env() -> dict[str, str]:
    """Our environment without libpq's ``PG*`` variables, which would override our arguments."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def log_tail(path: Path) -> str:
    """The last ``LOG_TAIL_BYTES`` of the log at ``path`` ("" if unreadable)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``; [] where /proc cannot tell."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


# Servers still running, stopped at interpreter exit.
_LIVE: set[ChildServer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=10.0)


atexit.register(_stop_all)


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int


class ChildServer:
    """A server binary run as the leader of its own process group."""

    _stop_signal: signal.Signals = signal.SIGTERM
    _what: str = "server"

    def __init__(self, data_dir: Path | str) -> None:
        self.data_dir = Path(data_dir).absolute()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self._what}.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _spawn(
        self,
        argv: list[str],
        *,
        account: Account | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            env={**clean_env(), **(env or {})},
            start_new_session=True,
            # only calls prctl(2) between fork and exec; see death_signal
            preexec_fn=death_signal(self._stop_signal),  # noqa: PLW1509
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=[] if account else None,
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self._proc

    def _failed(self, message: str) -> ServerError:
        return ServerError(f"{message}; last lines of {self.log_path}:\n{log_tail(self.log_path)}")

    def _killpg(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)

    def _reap(self) -> None:
        """Kill what is left of the group, close the log, forget the process."""
        self._killpg(signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        with _LIVE_LOCK:
            _LIVE.discard(self)
        self._after_exit()

    def _after_exit(self) -> None:
        """Hook for subclasses: release what the server held."""

    def _keep_ports(self) -> None:
        """Hook for subclasses: listen where the last start listened, from now on."""

    def reap(self) -> int | None:
        """The exit status of a server that exited on its own, once cleaned up after; else None.

        Cleaning up kills what is left of its process group, closes its log and releases what it
        held (nats-server's lock on its data directory), as ``stop`` does.
        """
        proc = self._proc
        if proc is None or proc.poll() is None:
            return None
        self._reap()
        return proc.returncode

    def restart(self) -> Self:
        """Start again after an exit, on the same data directory and the ports of the last start.

        Clients keep the URLs they have and reconnect by themselves. What is left of the previous
        process group (PostgreSQL's backends outlive a killed postmaster for a moment) is killed
        and waited for first, as the new server would find it in its way.
        """
        if self.running:
            return self
        previous = self._proc
        self.reap()
        if previous is not None:
            deadline = time.monotonic() + _GROUP_GONE_SECONDS
            while _group_members(previous.pid) and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
        self._keep_ports()
        return self.start()

    def stop(self, timeout: float = 10.0) -> int | None:
        """Ask the server to shut down, kill it after ``timeout``; returns its exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self._stop_signal)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._killpg(signal.SIGKILL)
                proc.wait()
        self._reap()
        return proc.returncode

    def kill(self) -> None:
        """Kill the server's whole process group at once (SIGKILL)."""
        proc = self._proc
        if proc is None:
            return
        self._killpg(signal.SIGKILL)
        proc.wait()
        self._reap()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError
