"""The runtime every mimrelay service shares.

Each concern is one module; import the one you need. This package itself imports nothing heavy,
so ``mimrelay --help`` stays fast::

    relay.settings   NodeSettings / ServiceSettings bases, load(), the README configuration table
    relay.logging    structlog set-up: one JSON object per line on stdout
    relay.metrics    the metrics and health HTTP server, mim_build_info
    relay.runner     run_service(): signals, drain, readiness, the service's context
    relay.connect    NATS and PostgreSQL reached with bounded, logged retries
    relay.health     whether a service's NATS and PostgreSQL answer now (for /healthz)
    relay.cpu        a bounded process pool for CPU-bound work
    relay.db         the data layer: schema, migrations, typed queries, one writer per table
    relay.caches     the GET caches of the Mim API, built once per window (gateway, export)
    relay.bus        the JetStream layout: subjects, streams, consumers, headers
    relay.leases     leases in a key-value bucket, each expiring unless renewed (who does what:
                     syncs a remote, runs retention, builds the caches)
    relay.publisher  a batch of JetStream publishes, each confirmed, in one wait
    relay.puller     a pull consumer that keeps messages coming
    relay.embedded   nats-server and PostgreSQL as child processes (``mimrelay up``, the tests)
    relay.cli        the ``mimrelay`` command

Errors of the runtime form one tree, defined here so every module raises from the same root::

    RelayError                  root, never raised directly
    ├── SettingsError           a setting has a bad value (names the variable, value, expected type)
    ├── ServerError             an embedded nats-server or PostgreSQL failed to start
    ├── DependencyUnavailable   NATS or PostgreSQL did not answer within the bounded retries
    ├── BusError                JetStream refused for good: incompatible stream, message too large
    ├── LeaseLost               a lease was taken over or could not be kept; its work was stopped
    ├── AddressRefused          an address names a place we may not store or dial (field, rule)
    └── TransientError          try again later; nothing was lost
        ├── StreamFull          JetStream refused a publish: the stream is at its limits
        ├── StateFull           a bucket of shared request state is at its bound
        └── BusUnavailable      JetStream did not confirm a publish (timeout, no responders)
"""

from __future__ import annotations

__all__ = [
    "AddressRefused",
    "BusError",
    "BusUnavailable",
    "DependencyUnavailable",
    "LeaseLost",
    "RelayError",
    "ServerError",
    "SettingsError",
    "StateFull",
    "StreamFull",
    "TransientError",
]


class RelayError(Exception):
    """Root of every error the runtime raises."""


class SettingsError(RelayError):
    """A setting read from the environment is invalid.

    ``problems`` holds one ``(variable, value, expected)`` triple per bad setting; ``str()`` is a
    message fit to print as is, without a traceback.
    """

    def __init__(self, message: str, problems: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ServerError(RelayError):
    """An embedded server (nats-server, PostgreSQL) could not be started or initialised."""


class DependencyUnavailable(RelayError):
    """A dependency (NATS, PostgreSQL) did not answer within the bounded retries, or refused us."""


class BusError(RelayError):
    """JetStream refused an operation in a way retrying will not cure.

    For example a stream that exists with a configuration that cannot be updated to ours, or a
    message over the server's size limit. ``err_code`` is JetStream's code when there is one.
    """

    def __init__(self, message: str, err_code: int | None = None) -> None:
        super().__init__(message)
        self.err_code = err_code


class LeaseLost(RelayError):
    """A lease (``relay.leases``) was taken over by another holder, or could not be renewed for
    its whole time to live; the work it covered was cancelled."""


class AddressRefused(RelayError):
    """An address names a place the node may not store or dial (``relay.location``).

    ``field`` is the part refused (``location``, ``port``, ``sublocation``), ``rule`` the rule it
    broke (``address.private``, ``address.port`` ...), ``reason`` the refusal in one line.
    """

    def __init__(self, field: str, rule: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.rule = rule
        self.reason = reason

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "reason": self.reason}


class TransientError(RelayError):
    """A failure that retrying later may cure; the operation had no effect."""


class StreamFull(TransientError):
    """JetStream refused a publish because the stream is at its message or byte limit.

    The gateway answers 429; nothing already in the stream was dropped.
    """

    status = 429


class BusUnavailable(TransientError):
    """JetStream did not confirm a publish: timeout, no responders, or a lost connection."""

    status = 503


class StateFull(TransientError):
    """A bucket of shared request state (nonces, leases, containers) is at its bound.

    The gateway answers 503 with ``Retry-After``; nothing already held was dropped.
    """

    status = 503
