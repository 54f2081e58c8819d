"""Pure pieces of the postgres library: slot names, status shaping, pgpass, postmaster.pid."""
import datetime
import os

import pytest
from pgwarden.postgres import datadir, process, status
from pgwarden.postgres.basebackup import pgpass_line
from pgwarden.postgres.slots import slot_name


@pytest.mark.parametrize(
    "member, slot",
    [
        ("node1", "node1"),
        ("Node-1.example.com", "node_1_example_com"),
        ("pg_2", "pg_2"),
        ("a b", "au0032b"),  # Patroni: other characters become u + decimal code point
        ("é", "u0233"),
        ("x" * 80, "x" * 63),
    ],
)
def test_slot_names_match_patroni(member: str, slot: str) -> None:
    assert slot_name(member) == slot


def _row(**over):  # type: ignore[no-untyped-def]
    base = {
        "in_recovery": False, "version": 150018, "sysid": "7714616560370616734",
        "start": datetime.datetime(2026, 1, 2, 10, 0, 0, 100000, tzinfo=datetime.UTC),
        "flush": "0/3000060", "timeline": 1, "receive": None, "replay": None, "replay_ts": None, "paused": False,
        "wr_status": None, "wr_written": None, "wr_host": None, "wr_port": None, "wr_slot": None,
        "restore_command": "", "replication": None, "pending": None,
    }
    base.update(over)
    return tuple(base.values())


def test_primary_sample_shape() -> None:
    rep = [{"usename": "replicator", "application_name": "n2", "client_addr": "127.0.0.1",
            "state": "streaming", "sync_state": "async", "sync_priority": 0, "extra": 1}]
    out = status.from_row(_row(replication=rep))
    assert out["role"] == "primary"
    assert out["xlog"] == {"location": 0x3000060}
    assert out["wal_position"] == 0x3000060
    assert out["timeline"] == 1
    assert out["postmaster_start_time"] == "2026-01-02 10:00:00.100000+00:00"
    assert out["replication_state"] is None
    assert out["replication"] == [{k: v for k, v in rep[0].items() if k != "extra"}]
    assert out["sysid"] == "7714616560370616734"
    assert out["pending_restart"] is False and out["pending_restart_params"] == []
    pending = status.from_row(_row(pending={"max_connections": "100"}))
    assert pending["pending_restart"] and pending["pending_restart_params"] == ["max_connections"]
    assert pending["pending_restart_values"] == {"max_connections": "100"}


def test_streaming_replica_sample_shape() -> None:
    out = status.from_row(_row(
        in_recovery=True, flush=None, timeline=3, receive="0/3000000", replay="0/2FFFF00",
        wr_status="streaming", wr_written="0/3000100", wr_host="10.0.0.1", wr_port=5432,
        wr_slot="n2", paused=False,
    ))
    assert out["role"] == "replica"
    assert out["xlog"] == {"received_location": 0x3000100, "replayed_location": 0x2FFFF00,
                           "replayed_timestamp": None, "paused": False}
    assert out["wal_position"] == 0x3000100
    assert out["replication_state"] == "streaming"
    assert out["wal_receiver"]["sender_host"] == "10.0.0.1"
    assert out["replication"] == []


def test_replica_without_receiver_reports_archive_recovery_only_with_restore_command() -> None:
    lonely = status.from_row(_row(in_recovery=True, flush=None, replay="0/100"))
    assert lonely["replication_state"] is None
    assert lonely["xlog"]["received_location"] == 0x100  # Patroni falls back to replayed
    restoring = status.from_row(_row(in_recovery=True, flush=None, replay="0/100",
                                     restore_command="cp /arch/%f %p"))
    assert restoring["replication_state"] == "in archive recovery"


def test_pgpass_escapes_colons_and_backslashes() -> None:
    assert pgpass_line("h", 5432, "rep", "a:b\\c") == "h:5432:*:rep:a\\:b\\\\c\n"


def test_pidfile_parsing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "postmaster.pid").write_text(
        "4591\n/tmp/pgx/d\n1796198887\n54999\n/tmp/pgx\n\n  2146644         4\nready   \n"
    )
    pf = process.read_pidfile(str(tmp_path))
    assert pf == process.PidFile(4591, "/tmp/pgx/d", 1796198887, 54999, "/tmp/pgx", None, "ready")
    (tmp_path / "postmaster.pid").write_text("45")  # half-written
    assert process.read_pidfile(str(tmp_path)) is None
    os.unlink(tmp_path / "postmaster.pid")
    assert process.read_pidfile(str(tmp_path)) is None


def test_data_dir_states(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "data"
    assert datadir.data_dir_state(str(d)) == "empty"
    d.mkdir()
    assert datadir.data_dir_state(str(d)) == "empty"
    (d / "PG_VERSION").write_text("15\n")
    assert datadir.data_dir_state(str(d)) == "invalid"
    (d / "global").mkdir()
    (d / "global" / "pg_control").write_bytes(b"\0" * 8192)
    assert datadir.data_dir_state(str(d)) == "initialized"
    assert datadir.major_version(str(d)) == 15


def test_controldata_parsing() -> None:
    text = "pg_control version number:            1300\nDatabase system identifier:           7714616560370616734\nDatabase cluster state:               in production\n"
    parsed = datadir.parse_controldata(text)
    assert parsed["Database system identifier"] == "7714616560370616734"
    assert parsed["Database cluster state"] == "in production"
