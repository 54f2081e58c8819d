"""Bounded SQL through psycopg: no call can hang the caller, not even against a frozen server.

A SIGSTOPped server accepts TCP/unix connections (the kernel does) and then never answers:
keepalives and cancel requests do not help, a query blocks forever. So every query runs
under a watchdog timer that shuts the socket down at its deadline, which makes the blocked
libpq call fail at once (measured: 1 ms). Connecting is bounded by libpq's connect_timeout,
whose minimum is 2 s, so a fresh connection needs a budget of at least 2 s; a `Session`
kept open between calls avoids that cost and is bounded by the watchdog alone.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import psycopg
from pgwarden.core.clock import mono
from pgwarden.core.config_model import PostgresConfig
from pgwarden.core.errors import PostgresError
from pgwarden.postgres.conffiles import default_socket_dir

T = TypeVar("T")

MIN_CONNECT_TIMEOUT = 2  # libpq/psycopg raise anything lower to 2 s


@dataclass(frozen=True)
class ConnParams:
    """Where and as whom to connect. `host` is a socket directory (starts with '/') or a host."""

    host: str
    port: int
    user: str
    password: str | None = None
    dbname: str = "postgres"
    application_name: str = "pgwarden"

    def kwargs(self, connect_timeout: float) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "application_name": self.application_name,
            # int(): libpq truncates; never round UP past the caller's budget.
            "connect_timeout": max(MIN_CONNECT_TIMEOUT, int(connect_timeout)),
            # Never read a ~/.pgpass or a service file behind our back.
            "passfile": os.devnull,
        }
        if self.password is not None:
            kw["password"] = self.password
        if not self.host.startswith("/"):
            # TCP: notice a dead peer within seconds even while idle between samples.
            kw.update(keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3)
        return kw

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def one_line(exc: BaseException) -> str:
    """The first meaningful line of a driver error: psycopg messages span several lines."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


class Session:
    """One connection reused across calls; every call is bounded by its own deadline.

    Not thread-safe: one owner (the postgres worker's loop). Any failure closes the
    connection, and the next call reconnects, so a restarted server is picked up by itself.
    """

    def __init__(self, params: ConnParams, timeout: float = 5.0) -> None:
        self.params = params
        self.timeout = timeout
        self._conn: psycopg.Connection[Any] | None = None

    # -- public --------------------------------------------------------------------
    def query(
        self, sql: str, args: Sequence[Any] | None = None, timeout: float | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit) and return its rows ([] for a command)."""

        def run(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
            cur = conn.execute(sql, args, prepare=False)
            return cur.fetchall() if cur.description is not None else []

        return self.call(run, timeout, what=_label(sql))

    def query_one(
        self, sql: str, args: Sequence[Any] | None = None, timeout: float | None = None
    ) -> tuple[Any, ...]:
        rows = self.query(sql, args, timeout)
        if not rows:
            raise PostgresError(f"{_label(sql)}: returned no row")
        return rows[0]

    def call(
        self,
        fn: Callable[[psycopg.Connection[Any]], T],
        timeout: float | None = None,
        what: str = "query",
    ) -> T:
        """Run `fn(conn)` with connecting and all its round trips inside one deadline."""
        budget = self.timeout if timeout is None else timeout
        deadline = mono() + budget
        conn = self._connected(deadline)
        guard = _SocketWatchdog(conn)
        guard.arm(deadline - mono())
        try:
            return fn(conn)
        except psycopg.Error as e:
            self.close()
            if guard.fired:
                raise PostgresError(
                    f"{what}: no answer from {self.params.describe()} within {budget:g} s"
                ) from None
            raise PostgresError(f"{what}: {one_line(e)}") from None
        except BaseException:
            self.close()
            raise
        finally:
            guard.disarm()
            if guard.fired:
                self.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closing a broken connection may complain; it is gone either way.
            with contextlib.suppress(psycopg.Error, OSError):
                conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------
    def _connected(self, deadline: float) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        remaining = deadline - mono()
        try:
            self._conn = psycopg.connect(autocommit=True, **self.params.kwargs(remaining))
        except psycopg.Error as e:
            raise PostgresError(f"cannot connect to {self.params.describe()}: {one_line(e)}") from None
        return self._conn


class _SocketWatchdog:
    """Shuts a connection's socket down if the query outlives its deadline.

    The lock makes 'disarm' and 'fire' exclusive: a timer that fires just after the query
    finished must not kill the connection under the NEXT query.
    """

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._armed = False
        self._timer: threading.Timer | None = None
        self.fired = False

    def arm(self, seconds: float) -> None:
        self._armed = True
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def disarm(self) -> None:
        with self._lock:
            self._armed = False
        if self._timer is not None:
            self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if not self._armed:
                return
            self.fired = True
            try:
                # A dup of the fd: shutdown() acts on the shared socket, while closing our
                # copy leaves libpq's descriptor number valid (no fd reuse race).
                sock = socket.socket(fileno=os.dup(self._conn.pgconn.socket))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()
            except (OSError, psycopg.Error):
                pass  # already closed: the query is failing on its own


def _label(sql: str) -> str:
    """A short name for a statement in error messages."""
    words = sql.split()
    return " ".join(words[:3])[:40] if words else "query"


def run_once(
    params: ConnParams,
    fn: Callable[[psycopg.Connection[Any]], T],
    timeout: float,
    what: str = "query",
) -> T:
    """A one-shot connection: connect, run `fn`, close. Bound: max(timeout, 2 s)."""
    with Session(params, timeout) as session:
        return session.call(fn, timeout, what)



def local_superuser_params(
    cfg: PostgresConfig, socket_dir: str | None = None, application_name: str = "pgwarden"
) -> ConnParams:
    """How the agent reaches its own server as the superuser (Patroni's rules).

    `use_unix_socket`: through the instance's socket directory. Otherwise TCP to the first
    `listen` address, a wildcard meaning loopback.
    """
    if cfg.use_unix_socket:
        host = socket_dir or default_socket_dir(cfg.data_dir)
    else:
        listen = cfg.listen.host.strip()
        host = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            listen, listen
        )
    return ConnParams(
        host=host,
        port=cfg.listen.port,
        user=cfg.superuser.username,
        password=cfg.superuser.password,
        application_name=application_name,
    )
