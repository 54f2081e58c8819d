"""Bring a former primary back as a replica of the new leader: crash recovery, pg_rewind.

A data directory whose last role was primary (pg_control says "in production" after a
crash or an immediate stop, "shut down" after a clean stop) may hold WAL the new leader
never received: its timeline diverged. pg_rewind rewinds it to the fork point (it answers
"no rewind required" when there is nothing to undo). pg_rewind wants a cleanly shut down
target, so a crashed one first runs crash recovery in single-user mode.
"""
from __future__ import annotations

import os
import time

from pgwarden.core.clock import mono
from pgwarden.core.config_model import Credentials
from pgwarden.core.errors import PostgresError
from pgwarden.postgres import runas
from pgwarden.postgres.basebackup import pgpass_line
from pgwarden.postgres.conffiles import conninfo_quote
from pgwarden.postgres.datadir import controldata
from pgwarden.postgres.query import ConnParams, run_once

class SourceNotReady(PostgresError):
    """The leader cannot serve pg_rewind yet (still promoting, unreachable): retry later.
    Never a reason to throw this member's data away."""


PRIMARY_STATES = ("in production", "shut down")  # pg_control states of a (former) primary
CRASHED_STATES = ("in production", "in crash recovery", "shutting down")


def cluster_state(bin_dir: str, data_dir: str) -> str:
    """pg_control's 'Database cluster state' (e.g. 'shut down in recovery')."""
    return controldata(bin_dir, data_dir).get("Database cluster state", "unknown")


def was_primary(bin_dir: str, data_dir: str) -> bool:
    return cluster_state(bin_dir, data_dir) in PRIMARY_STATES


def crash_recovery(bin_dir: str, data_dir: str, timeout: float = 300.0) -> None:
    """Replay WAL to a consistent state and shut down cleanly (single-user mode, no clients).

    standby.signal must be absent: a single-user server refuses standby mode.
    """
    try:
        os.unlink(os.path.join(data_dir, "standby.signal"))
    except FileNotFoundError:
        pass
    runas.run([os.path.join(bin_dir, "postgres"), "--single", "-D", data_dir,
               "-c", "archive_mode=off", "-c", "hot_standby=off", "postgres"],
              timeout, what="crash recovery (single-user mode)")


# The source's current timeline (from its WAL position) and the one its pg_control knows.
_TIMELINES_SQL = """
SELECT ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(
            pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int,
       (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())
"""


def ensure_source_checkpointed(source: ConnParams, wait: float = 10.0) -> None:
    """pg_rewind reads the source's timeline from its pg_control, which a promoted server only
    updates at its next checkpoint: before that pg_rewind wrongly answers "no rewind
    required" and the rejoined replica can never stream. Wait for the new leader's own
    post-promotion checkpoint, then ask for one ourselves."""
    deadline = mono() + wait
    while True:
        in_recovery = run_once(source, lambda c: c.execute(
            "SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0], 5.0, what="the leader")
        if in_recovery:
            # the new leader holds the key but has not finished promoting yet
            if mono() >= deadline:
                raise SourceNotReady("the leader is still promoting; retrying the rejoin later")
            time.sleep(0.2)
            continue
        current, in_control = run_once(
            source, lambda c: c.execute(_TIMELINES_SQL, prepare=False).fetchone(), 5.0,
            what="the leader's timeline")
        if in_control >= current:
            return
        if mono() >= deadline:
            run_once(source, lambda c: c.execute("CHECKPOINT"), 60.0, what="CHECKPOINT")
            return
        time.sleep(0.2)


def rewind(bin_dir: str, data_dir: str, host: str, port: int, user: Credentials,
           timeout: float = 600.0) -> str:
    """pg_rewind the data dir from the leader at host:port; return pg_rewind's last line."""
    try:
        ensure_source_checkpointed(ConnParams(host=host, port=port, user=user.username,
                                              password=user.password,
                                              application_name="pgwarden_rewind"))
    except SourceNotReady:
        raise
    except PostgresError as e:
        raise SourceNotReady(f"the leader is not reachable for pg_rewind: {e}") from None
    if cluster_state(bin_dir, data_dir) in CRASHED_STATES:
        crash_recovery(bin_dir, data_dir)
    parent = os.path.dirname(os.path.abspath(data_dir))
    passfile = runas.temp_db_file(pgpass_line(host, port, user.username, user.password or ""),
                                  directory=parent) if user.password is not None else None
    source = " ".join(f"{k}={conninfo_quote(v)}" for k, v in [
        ("host", host), ("port", str(port)), ("user", user.username), ("dbname", "postgres"),
        ("connect_timeout", "5"), ("passfile", passfile or os.devnull)])
    try:
        result = runas.run([os.path.join(bin_dir, "pg_rewind"), "--target-pgdata", data_dir,
                            "--source-server", source],
                           timeout, what="pg_rewind")
    finally:
        if passfile:
            os.unlink(passfile)
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
    if not lines:
        raise PostgresError("pg_rewind printed nothing")
    return lines[-1].replace("pg_rewind: ", "")
