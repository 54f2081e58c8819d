"""PostgreSQL client calls with hard time bounds, for the lab's probe and writer.

libpq (and psycopg) never wait less than 2 s for a connection, and a query to a frozen
(SIGSTOPped) server blocks forever despite keepalives and cancel requests. Here:
* `connect()` runs psycopg's connect in a helper thread and gives up after `timeout`
  (any value, e.g. 1 s); a connection that completes after we gave up is closed.
* `Guard` shuts the connection's socket down at a deadline (measured: unblocks the waiting
  call in about 1 ms); the connection is then broken and must be thrown away.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg


class ConnectTimeout(psycopg.OperationalError):
    pass


def connect(host: str, port: int, *, user: str, password: str | None, dbname: str = "postgres",
            timeout: float = 1.0, autocommit: bool = True,
            application_name: str = "pgwarden-lab") -> psycopg.Connection[Any]:
    box: dict[str, Any] = {}
    lock = threading.Lock()

    def attempt() -> None:
        try:
            conn = psycopg.connect(host=host, port=port, user=user, password=password,
                                   dbname=dbname, autocommit=autocommit,
                                   connect_timeout=max(2, int(timeout + 1)),
                                   application_name=application_name)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            with lock:
                box["error"] = e
            return
        with lock:
            if box.get("abandoned"):
                conn.close()
            else:
                box["conn"] = conn

    t = threading.Thread(target=attempt, name=f"connect {host}:{port}", daemon=True)
    t.start()
    t.join(timeout)
    with lock:
        if "conn" in box:
            return box["conn"]  # type: ignore[no-any-return]
        if "error" in box:
            raise box["error"]
        box["abandoned"] = True
    raise ConnectTimeout(f"connection to {host}:{port} timed out after {timeout:g} s")


def shutdown_socket(conn: psycopg.Connection[Any]) -> None:
    """Break `conn` at the socket level: a call blocked on it returns with an error."""
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:
        return
    try:
        s = socket.socket(fileno=os.dup(fd))
    except OSError:
        return
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        s.close()


class Guard:
    """One background thread that breaks an armed connection once its deadline passes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._conn: psycopg.Connection[Any] | None = None
        self._deadline = 0.0
        self._token = 0
        self.fired = False
        threading.Thread(target=self._run, name="pg-guard", daemon=True).start()

    @contextmanager
    def deadline(self, conn: psycopg.Connection[Any], timeout: float) -> Iterator[None]:
        with self._cond:
            self._token += 1
            self._conn, self._deadline, self.fired = conn, time.monotonic() + timeout, False
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._token += 1
                self._conn = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._conn is None:
                    self._cond.wait()
                token, left = self._token, self._deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                conn = self._conn
                if token != self._token or conn is None:
                    continue
                self.fired = True
                self._conn = None
                shutdown_socket(conn)


def query(conn: psycopg.Connection[Any], sql: str, params: Any = None, *, timeout: float,
          guard: Guard) -> tuple[list[tuple[Any, ...]], int]:
    """Run one statement within `timeout`; (rows, rowcount). On a timeout the connection is
    broken and psycopg raises OperationalError."""
    with guard.deadline(conn, timeout):
        cur = conn.execute(sql, params)
        rows = cur.fetchall() if cur.description else []
        return rows, cur.rowcount
