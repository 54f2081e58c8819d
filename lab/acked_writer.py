"""The recording writer for the split-brain checker (lab/splitbrain.py): one INSERT of a
client-chosen sequence number every 10 ms, each attempt an outcome record (a JSON line).

Run by the lab in the client namespace (`Lab.start_acked_writer()`), inside a host
(`pgwarden.lab.splitcheck.spawn_acked_writer`), or by hand against any server:

  ip netns exec P-client .venv/bin/python -m pgwarden.lab.acked_writer --host 10.a.b.100 \
      --log /tmp/acked.jsonl --duration 30          # password from $PGPASSWORD
  .venv/bin/python -m pgwarden.lab.acked_writer --dsn 'host=/tmp port=5432' --log -

The table (created if needed) and the statement:

  CREATE TABLE lab_acked (seq bigint PRIMARY KEY, node text DEFAULT <host>,
                          timeline int DEFAULT <timeline>, at timestamptz DEFAULT now())
  INSERT INTO lab_acked (seq) VALUES ($1) RETURNING node, host(inet_server_addr()), timeline

The sequence number is the client's, so a refused or unknown attempt can be looked for
afterwards. Host and timeline come back from the committing INSERT itself, so they are those of
the server that committed it, not of whoever holds the VIP a moment later:
* host: `pgwarden_lab.node` (the lab sets it per host in postgresql.conf), else the server's
  address (through a VIP that is the VIP's: elsewhere give --node-sql), else "local:<port>";
* timeline: the first 8 hex digits of `pg_walfile_name(pg_current_wal_insert_lsn())`, the
  timeline WAL is being inserted on now, which is the timeline the commit record goes to
  (`pg_control_checkpoint()` lags: it shows the timeline of the last checkpoint, which after a
  promotion is the old one until the end-of-recovery checkpoint completes; measured on
  PostgreSQL 15 right after `pg_ctl promote`: 1 there, 2 here). On a standby the INSERT fails
  with 25006 (read-only) before these defaults are evaluated.

Each line (times are CLOCK_MONOTONIC seconds, the same clock in every namespace):

  {"seq": 7, "outcome": "acked", "phase": "insert", "target": "10.1.2.100", "host": "n1",
   "server": "10.1.2.100", "timeline": 2, "t_start": 812.0101, "t_send": 812.0102,
   "t_ack": 812.0121, "t_end": 812.0121, "wall": 1733130000.12}

outcome:
* "acked": the INSERT returned its row: committed (autocommit).
* "refused": certainly not committed: no connection could be made (phase "connect"), the table
  could not be created (phase "create": the INSERT was never sent), or the server answered the
  INSERT with an error on a healthy connection (read-only standby, ...). `error`, `sqlstate`.
* "unknown": the INSERT was sent and no answer came (connection lost, our statement timeout,
  the server terminating the session): it may or may not be committed.
After any failure the next attempt starts on a fresh connection, and a connection the server
closed while idle (its FATAL on shutdown) is replaced before sending, so that closing is never
mistaken for an unknown outcome. Lines with "event" are the start and stop markers.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from pgwarden.lab import pgconn
from pgwarden.lab.splitbrain import ACKED, OUTCOMES, REFUSED, UNKNOWN, Write
from pgwarden.lab.writer import Writer, classify, run_until_signalled

TABLE = "lab_acked"
# the lab's per-host setting; else the server's address; else (a Unix socket) its port
NODE_SQL = ("coalesce(nullif(current_setting('pgwarden_lab.node', true), ''), "
            "host(inet_server_addr()), 'local:' || current_setting('port'))")
TIMELINE_SQL = "('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))::bit(32)::int"
TABLE_SQL = ("CREATE TABLE IF NOT EXISTS {table} (seq bigint PRIMARY KEY, "
             "node text DEFAULT {node}, timeline int DEFAULT {timeline}, "
             "at timestamptz NOT NULL DEFAULT now())")
INSERT_SQL = ("INSERT INTO {table} (seq) VALUES (%s) "
              "RETURNING node, host(inet_server_addr()), timeline")
UNDEFINED_TABLE = "42P01"


def closed_while_idle(conn: psycopg.Connection[Any]) -> bool:
    """An idle connection has nothing to read unless the server said goodbye (a FATAL on
    shutdown, then EOF). Sending into it would make a certain refusal look unknown."""
    try:
        fd = conn.pgconn.socket
    except psycopg.OperationalError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class AckedWriter(Writer):
    """lab/writer.py's loop (pacing, markers, signals) with outcome records per sequence number."""

    def __init__(self, args: argparse.Namespace, out: IO[str]) -> None:
        super().__init__(args, out)
        self.counts = {o: 0 for o in OUTCOMES}
        self.seq = int(args.first_seq)
        self.insert_sql = INSERT_SQL.format(table=args.table)
        self.notices: list[str] = []

    def _connect(self) -> psycopg.Connection[Any]:
        a = self.args
        conn = pgconn.connect(a.host, a.port, user=a.user, password=self.password,
                              dbname=a.dbname, timeout=a.connect_timeout,
                              application_name="pgwarden-lab-acked-writer")
        # a WARNING such as "canceling wait for synchronous replication" belongs in the record
        conn.add_notice_handler(lambda d: self.notices.append(str(d.message_primary)))
        return conn

    def attempt(self) -> dict[str, Any]:
        a = self.args
        rec: dict[str, Any] = {"seq": self.seq, "target": a.host, "host": None, "server": None,
                               "timeline": None, "t_start": _now(), "t_send": None,
                               "t_ack": None, "wall": round(time.time(), 6)}
        self.seq += 1
        self.notices.clear()
        if self.conn is not None and closed_while_idle(self.conn):
            self._drop()
        if self.conn is None:
            rec["phase"] = "connect"
            try:
                self.conn = self._connect()
            except Exception as e:  # noqa: BLE001 - every failure is a recorded attempt
                return self._end(rec, REFUSED, e)
        if not self.table_ready:
            rec["phase"] = "create"
            try:
                pgconn.query(self.conn, TABLE_SQL.format(table=a.table, node=a.node_sql,
                                                         timeline=TIMELINE_SQL),
                             timeout=a.statement_timeout, guard=self.guard)
                self.table_ready = True
            except psycopg.Error as e:
                return self._end(rec, REFUSED, e)  # the INSERT was never sent
        rec["phase"] = "insert"
        self.notices.clear()  # only the INSERT's own (the CREATE says "already exists")
        rec["t_send"] = _now()
        try:
            rows, _ = pgconn.query(self.conn, self.insert_sql, (rec["seq"],),
                                   timeout=a.statement_timeout, guard=self.guard)
        except psycopg.Error as e:
            healthy = not self.conn.broken and not self.guard.fired
            if self.guard.fired:
                rec["timeout"] = True
            if getattr(e, "sqlstate", None) == UNDEFINED_TABLE:
                self.table_ready = False  # a new primary that never got the CREATE (async)
            return self._end(rec, REFUSED if classify(e, healthy) == "failed" else UNKNOWN, e)
        rec["host"], rec["server"], rec["timeline"] = rows[0]
        return self._end(rec, ACKED, None)

    def _end(self, rec: dict[str, Any], outcome: str,
             error: BaseException | None) -> dict[str, Any]:
        rec["t_end"] = _now()
        if outcome == ACKED:
            rec["t_ack"] = rec["t_end"]
        else:
            self._drop()  # a fresh connection next time: the VIP may be elsewhere by then
        if self.notices:
            rec["notices"] = list(self.notices)
        rec["outcome"] = outcome
        if error is not None:
            rec["error"] = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            sqlstate = getattr(error, "sqlstate", None)
            if sqlstate:
                rec["sqlstate"] = sqlstate
        self.counts[outcome] += 1
        return rec


def _now() -> float:
    return round(time.clock_gettime(time.CLOCK_MONOTONIC), 6)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgwarden-lab-acked-writer",
                                description=__doc__.split("\n")[0])
    p.add_argument("--host", default=None, help="address to write to (the VIP or one host)")
    p.add_argument("--dsn", default=None,
                   help="a libpq connection string instead of --host/--port/--user/--dbname")
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--user", default="postgres")
    p.add_argument("--password", default=None, help="default: $PGPASSWORD")
    p.add_argument("--dbname", default="postgres")
    p.add_argument("--table", default=TABLE)
    p.add_argument("--node-sql", default=NODE_SQL,
                   help="SQL naming the host that commits a row (through a VIP outside the lab "
                        "the address is the VIP's: use e.g. a custom setting set per host)")
    p.add_argument("--first-seq", type=int, default=1,
                   help="first sequence number; writers sharing a table need disjoint ranges")
    p.add_argument("--interval", type=float, default=0.01, help="seconds between attempts")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--connect-timeout", type=float, default=1.0)
    p.add_argument("--statement-timeout", type=float, default=2.0)
    p.add_argument("--log", default="-", help="JSONL output file ('-': stdout)")
    return p


def _apply_dsn(args: argparse.Namespace) -> None:
    """Only host, port, user, password and dbname of the DSN are used (pgconn.connect's)."""
    d = conninfo_to_dict(args.dsn)
    args.host = d.get("host", args.host or "localhost")
    args.port = int(d.get("port", args.port))
    args.user = d.get("user", args.user)
    args.password = d.get("password", args.password)
    args.dbname = d.get("dbname", args.dbname)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.dsn:
        _apply_dsn(args)
    if not args.host:
        print("acked_writer: give --host or --dsn", file=sys.stderr)
        return 2
    return run_until_signalled(args, AckedWriter, "acked_writer",
                               lambda w: ", ".join(f"{w.counts[o]} {o}" for o in OUTCOMES))


def read_log(*paths: str | Path) -> list[Write]:
    """The attempts of one or more acked_writer logs, for splitbrain.check (a missing log is
    empty: the writer may not have started)."""
    out = []
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if "outcome" in rec:
                    out.append(Write.from_dict(rec))
    return out


if __name__ == "__main__":
    sys.exit(main())
