"""The lab's client writer: one INSERT every 10 ms, every attempt logged as a JSON line.

Run inside the client namespace (the lab does it: `Lab.start_writer()` or
`python -m pgwarden.lab writer start`), or by hand:

  ip netns exec P-client .venv/bin/python -m pgwarden.lab.writer --host 10.a.b.100 \
      --password ... --log /tmp/writes.jsonl --duration 30

It connects to --host (the VIP, or one host), creates the table if needed

  CREATE TABLE lab_writes (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(),
                           host text DEFAULT host(inet_server_addr()),
                           node text DEFAULT current_setting('pgwarden_lab.node', true))

(`host` is the address the connection reached, so the VIP when writing through the VIP;
`node` is the member's name, set per host by the lab in postgresql.conf: the column that tells
which server took a row), and inserts `DEFAULT VALUES RETURNING id, host, node` every
--interval seconds, reconnecting after any error (a connection attempt is given up after
--connect-timeout, 1 s; a statement after --statement-timeout, 2 s).

Each attempt is one line (all times from CLOCK_MONOTONIC, which is the same in every
namespace, plus the wall clock):

  {"t": 1234.567, "dt": 0.0021, "wall": 1733130000.12, "outcome": "acked", "phase": "insert",
   "target": "10.1.2.100", "server": "10.1.2.100", "node": "n1", "id": 42}

outcome:
* "acked": the INSERT returned its row (autocommit: the commit was acknowledged).
* "failed": certainly not committed: the connection could not be made, or the server
  answered the statement with an error (read-only replica, ...).
* "unknown": the statement was sent and no answer came (connection lost, timeout, server
  terminated the session): it may or may not be committed. `id` is null.
Lines with an "event" key instead of "outcome" are the start and stop markers; the stop
line carries the totals. Stops on SIGTERM/SIGINT or after --duration.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import IO, Any, Callable

import psycopg

from pgwarden.lab import pgconn

# SQLSTATE classes after which the statement's fate is unknown: connection exceptions,
# operator intervention (admin shutdown, crash shutdown), insufficient resources, system
# and internal errors. Any other error is the server's definite "no" to the statement.
_UNKNOWN_CLASSES = ("08", "57", "53", "58", "XX")

TABLE_SQL = ("CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, "
             "at timestamptz NOT NULL DEFAULT now(), "
             "host text DEFAULT host(inet_server_addr()), "
             "node text DEFAULT current_setting('pgwarden_lab.node', true))")


def classify(error: BaseException, conn_ok: bool) -> str:
    """'failed' when the server definitely refused the statement, else 'unknown'."""
    sqlstate = getattr(error, "sqlstate", None)
    if conn_ok and sqlstate and not sqlstate.startswith(_UNKNOWN_CLASSES):
        return "failed"
    return "unknown"


def _conn_ok(conn: psycopg.Connection[Any]) -> bool:
    return not conn.closed and conn.info.status == psycopg.pq.ConnStatus.OK \
        and not conn.broken


class Writer:
    def __init__(self, args: argparse.Namespace, out: IO[str]) -> None:
        self.args = args
        self.out = out
        self.guard = pgconn.Guard()
        self.conn: psycopg.Connection[Any] | None = None
        self.table_ready = False
        self.stop = False
        self.counts = {"acked": 0, "failed": 0, "unknown": 0}
        self.password = args.password if args.password is not None else os.environ.get("PGPASSWORD")
        self.insert_sql = f"INSERT INTO {args.table} DEFAULT VALUES RETURNING id, host, node"

    def emit(self, rec: dict[str, Any]) -> None:
        self.out.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def _drop(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may complain
                pass
            self.conn = None

    def attempt(self) -> dict[str, Any]:
        a = self.args
        t0 = time.monotonic()
        rec: dict[str, Any] = {"t": round(t0, 6), "wall": round(time.time(), 6),
                               "target": a.host, "server": None, "node": None, "id": None}
        if self.conn is None:
            rec["phase"] = "connect"
            try:
                self.conn = pgconn.connect(a.host, a.port, user=a.user, password=self.password,
                                           dbname=a.dbname, timeout=a.connect_timeout,
                                           application_name="pgwarden-lab-writer")
            except Exception as e:  # noqa: BLE001 - every failure is a logged attempt
                return self._done(rec, t0, "failed", e)
        if not self.table_ready:
            rec["phase"] = "create"
            try:
                pgconn.query(self.conn, TABLE_SQL.format(table=a.table), timeout=a.statement_timeout,
                             guard=self.guard)
                self.table_ready = True
            except psycopg.Error as e:
                ok = _conn_ok(self.conn)
                if not ok:
                    self._drop()
                return self._done(rec, t0, "failed", e)
        rec["phase"] = "insert"
        try:
            rows, _ = pgconn.query(self.conn, self.insert_sql, timeout=a.statement_timeout,
                                   guard=self.guard)
        except psycopg.Error as e:
            ok = _conn_ok(self.conn) and not self.guard.fired
            outcome = classify(e, ok)
            if self.guard.fired:
                rec["timeout"] = True
            if not ok:
                self._drop()
            return self._done(rec, t0, outcome, e)
        rec["id"], rec["server"], rec["node"] = rows[0]
        return self._done(rec, t0, "acked", None)

    def _done(self, rec: dict[str, Any], t0: float, outcome: str,
              error: BaseException | None) -> dict[str, Any]:
        rec["dt"] = round(time.monotonic() - t0, 6)
        rec["outcome"] = outcome
        if error is not None:
            rec["error"] = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            sqlstate = getattr(error, "sqlstate", None)
            if sqlstate:
                rec["sqlstate"] = sqlstate
        self.counts[outcome] += 1
        return rec

    def run(self) -> int:
        a = self.args
        start = time.monotonic()
        end = start + a.duration if a.duration else None
        self.emit({"event": "start", "t": round(start, 6), "wall": round(time.time(), 6),
                   "target": a.host, "port": a.port, "table": a.table, "interval": a.interval,
                   "pid": os.getpid()})
        tick = start
        while not self.stop and (end is None or time.monotonic() < end):
            self.emit(self.attempt())
            tick += a.interval
            now = time.monotonic()
            if tick > now:
                time.sleep(tick - now)
            elif now - tick > a.interval:
                tick = now  # fell behind (a slow connect): keep the pace, no burst
        self._drop()
        stop = time.monotonic()
        self.emit({"event": "stop", "t": round(stop, 6), "wall": round(time.time(), 6),
                   "elapsed": round(stop - start, 3), **self.counts})
        return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgwarden-lab-writer", description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True, help="address to write to (the VIP or one host)")
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--user", default="postgres")
    p.add_argument("--password", default=None, help="default: $PGPASSWORD")
    p.add_argument("--dbname", default="postgres")
    p.add_argument("--table", default="lab_writes")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between attempts")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--connect-timeout", type=float, default=1.0)
    p.add_argument("--statement-timeout", type=float, default=2.0)
    p.add_argument("--log", default="-", help="JSONL output file ('-': stdout)")
    return p


def run_until_signalled(args: argparse.Namespace, make: Callable[..., Any], prog: str,
                        summary: Callable[[Any], str]) -> int:
    """The command-line body both writers share: check the table name, open the log, run
    until SIGTERM/SIGINT, close the log, print a one-line summary on stderr."""
    if not args.table.replace("_", "").isalnum():
        print(f"{prog}: bad table name {args.table!r}", file=sys.stderr)
        return 2
    out: IO[str] = sys.stdout if args.log == "-" else open(args.log, "a", buffering=1)
    w = make(args, out)

    def on_signal(*_: Any) -> None:
        w.stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        rc = int(w.run())
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"{prog}: {summary(w)}", file=sys.stderr)
    return rc


def main(argv: list[str] | None = None) -> int:
    return run_until_signalled(
        parser().parse_args(argv), Writer, "writer",
        lambda w: f"{w.counts['acked']} acked, {w.counts['failed']} failed, "
                  f"{w.counts['unknown']} unknown")


def read_log(path: str) -> list[dict[str, Any]]:
    """The attempt records of a writer log (start/stop markers left out)."""
    out = []
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if "outcome" in rec:
                out.append(rec)
    return out


if __name__ == "__main__":
    sys.exit(main())
