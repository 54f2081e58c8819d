"""One status sample of a running server: the SQL-derived fields of the `postgres` section.

One statement, one round trip, so the sample is a consistent moment and cheap enough to take
every second. Fields and formats follow Patroni's `/patroni` (api.py get_postgresql_status):
timestamps are str(datetime), LSNs integers.
"""
from __future__ import annotations

from typing import Any

import psycopg
from pgwarden.postgres.lsn import parse_lsn_or_none
from pgwarden.postgres.query import ConnParams, Session, run_once

# Functions that fail during recovery (pg_current_wal_*, pg_walfile_name) sit in CASE
# branches that only run on a primary. Timeline: on a primary, the timeline of the current
# WAL file is right at once after promotion (pg_control_checkpoint() lags until the next
# checkpoint); on a replica, the WAL receiver's received_tli, else the last restartpoint's.
_SAMPLE_SQL = """
SELECT r.in_recovery,
       pg_catalog.current_setting('server_version_num')::int,
       (SELECT system_identifier FROM pg_catalog.pg_control_system())::text,
       pg_catalog.pg_postmaster_start_time(),
       CASE WHEN r.in_recovery THEN NULL
            ELSE pg_catalog.pg_current_wal_flush_lsn()::text END,
       CASE WHEN r.in_recovery
            THEN COALESCE(w.received_tli,
                          (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()))
            ELSE ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(
                      pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
       pg_catalog.pg_last_wal_receive_lsn()::text,
       pg_catalog.pg_last_wal_replay_lsn()::text,
       pg_catalog.pg_last_xact_replay_timestamp(),
       r.in_recovery AND pg_catalog.pg_is_wal_replay_paused(),
       w.status,
       w.written_lsn::text,
       w.sender_host,
       w.sender_port,
       w.slot_name,
       pg_catalog.current_setting('restore_command'),
       (SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                   'usename', s.usename, 'application_name', s.application_name,
                   'client_addr', s.client_addr, 'state', s.state,
                   'sync_state', s.sync_state, 'sync_priority', s.sync_priority)
                   ORDER BY s.application_name)
          FROM pg_catalog.pg_stat_replication s),
       (SELECT pg_catalog.json_object_agg(name, setting)
          FROM pg_catalog.pg_settings WHERE pending_restart)
  FROM (SELECT pg_catalog.pg_is_in_recovery() AS in_recovery) r
  LEFT JOIN pg_catalog.pg_stat_wal_receiver w ON true
"""


def sample(target: Session | ConnParams, timeout: float = 2.0) -> dict[str, Any]:
    """Sample the server; raise PostgresError (one line) if it cannot answer within `timeout`.

    With a `Session` the bound is `timeout`; with `ConnParams` a fresh connection is made and
    the bound is max(timeout, 2 s) (libpq's minimum connect_timeout).
    """
    if isinstance(target, Session):
        row = target.call(_fetch, timeout, what="status sample")
    else:
        row = run_once(target, _fetch, timeout, what="status sample")
    return from_row(row)


def _fetch(conn: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = conn.execute(_SAMPLE_SQL, prepare=False).fetchone()
    assert row is not None  # the FROM clause always yields one row
    return tuple(row)


def from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    """Shape one result row into the `postgres` section fields (pure, unit-testable)."""
    (in_recovery, version, sysid, start_time, flush_lsn, timeline, receive_lsn, replay_lsn,
     replay_ts, paused, wr_status, wr_written, wr_host, wr_port, wr_slot, restore_command,
     replication, pending) = row
    out: dict[str, Any] = {
        "role": "replica" if in_recovery else "primary",
        "server_version": version,
        "sysid": sysid,
        "postmaster_start_time": None if start_time is None else str(start_time),
        "timeline": timeline,
        "replication": [_replication_row(r) for r in replication or []],
        # Settings changed in the files (and reloaded) that only a restart applies.
        "pending_restart": bool(pending),
        "pending_restart_params": sorted(pending or []),
        "pending_restart_values": dict(pending or {}),
    }
    if in_recovery:
        # The WAL receiver's written position is ahead of pg_last_wal_receive_lsn (flushed);
        # Patroni reports the freshest one, and the replayed one when nothing was received
        # (archive recovery).
        replayed = parse_lsn_or_none(replay_lsn)
        received = parse_lsn_or_none(wr_written) or parse_lsn_or_none(receive_lsn) or replayed
        out["xlog"] = {
            "received_location": received,
            "replayed_location": replayed,
            "replayed_timestamp": None if replay_ts is None else str(replay_ts),
            "paused": bool(paused),
        }
        out["wal_position"] = max(received or 0, replayed or 0)
        # Patroni: 'in archive recovery' only when WAL can come from a restore_command;
        # a replica neither streaming nor restoring reports no replication_state.
        if wr_status == "streaming":
            out["replication_state"] = "streaming"
        elif restore_command:
            out["replication_state"] = "in archive recovery"
        else:
            out["replication_state"] = None
        out["wal_receiver"] = (
            None
            if wr_status is None
            else {"status": wr_status, "sender_host": wr_host, "sender_port": wr_port,
                  "slot_name": wr_slot}
        )
    else:
        location = parse_lsn_or_none(flush_lsn)
        out["xlog"] = {"location": location}
        out["wal_position"] = location
        out["replication_state"] = None
        out["wal_receiver"] = None
    return out


def _replication_row(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "usename": r.get("usename"),
        "application_name": r.get("application_name"),
        "client_addr": r.get("client_addr"),
        "state": r.get("state"),
        "sync_state": r.get("sync_state"),
        "sync_priority": r.get("sync_priority"),
    }
