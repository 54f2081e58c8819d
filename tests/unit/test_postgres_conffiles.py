"""postgresql.conf / standby.signal / pg_hba.conf generation: what we write and what it means."""
import os
import re

import pytest
from pgwarden.core.config_model import Credentials, HostPort, PostgresConfig
from pgwarden.core.errors import PostgresError
from pgwarden.postgres import conffiles, hba
from pgwarden.postgres.conffiles import ConfChange, Upstream


def settings(**kw):  # type: ignore[no-untyped-def]
    args = {"listen_addresses": "127.0.0.1", "port": 5433, "socket_dir": "/srv/pg"}
    args.update(kw)
    return conffiles.build_settings(**args)


def test_primary_gets_ha_defaults_and_no_streaming_wiring() -> None:
    s = settings()
    assert s["listen_addresses"] == "127.0.0.1"
    assert s["port"] == "5433"
    assert s["unix_socket_directories"] == "/srv/pg"
    assert s["hot_standby"] == "on"
    assert s["wal_level"] == "replica"
    assert s["max_wal_senders"] == "10"
    assert s["max_replication_slots"] == "10"
    assert s["wal_keep_size"] == "128MB"
    assert "primary_conninfo" not in s and "primary_slot_name" not in s


def test_replica_gets_primary_conninfo_and_slot() -> None:
    up = Upstream("10.0.0.1", 5432, "replicator", "node-2", password="secret", connect_timeout=3)
    s = settings(upstream=up, slot="node_2")
    assert s["primary_conninfo"] == (
        "host='10.0.0.1' port='5432' user='replicator' password='secret' "
        "application_name='node-2' connect_timeout='3'"
    )
    assert s["primary_slot_name"] == "node_2"


def test_passfile_replaces_password_in_conninfo() -> None:
    up = Upstream("h", 1, "u", "n", password="secret", passfile="/var/lib/pg/.pgpass")
    info = conffiles.primary_conninfo(up)
    assert "passfile='/var/lib/pg/.pgpass'" in info and "secret" not in info


def test_conninfo_escapes_quotes_and_backslashes() -> None:
    assert conffiles.conninfo_quote("a'b\\c") == "'a\\'b\\\\c'"


def test_user_parameters_override_defaults_but_not_what_we_own() -> None:
    s = settings(
        parameters={
            "max_wal_senders": 20,
            "wal_level": "logical",
            "shared_buffers": "256MB",
            "port": 9999,
            "primary_conninfo": "host=evil",
            "hot_standby": False,
            "unix_socket_directories": "/var/run/postgresql",
            "log_connections": True,
        }
    )
    assert s["max_wal_senders"] == "20"
    assert s["wal_level"] == "logical"
    assert s["shared_buffers"] == "256MB"
    assert s["port"] == "5433"
    assert s["hot_standby"] == "on"
    assert "primary_conninfo" not in s
    assert s["unix_socket_directories"] == "/srv/pg, /var/run/postgresql"
    assert s["log_connections"] == "on"


def test_wal_level_minimal_is_raised_to_replica() -> None:
    assert settings(parameters={"wal_level": "minimal"})["wal_level"] == "replica"


def test_too_long_socket_dir_is_refused_with_a_sentence() -> None:
    with pytest.raises(PostgresError, match="too long"):
        settings(socket_dir="/" + "x" * 100)


def test_default_socket_dir_is_the_data_dirs_parent() -> None:
    assert conffiles.default_socket_dir("/var/lib/postgresql/15/main") == "/var/lib/postgresql/15"
    assert conffiles.default_socket_dir("/var/lib/postgresql/15/main/") == "/var/lib/postgresql/15"


def test_render_includes_base_conf_first_and_round_trips() -> None:
    s = settings(
        upstream=Upstream("h", 1, "u", "n", password="p'a\\ss:w\"rd"),
        parameters={"application_name": "it's"},
    )
    text = conffiles.render_postgresql_conf(s)
    body = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert body[0] == "include 'postgresql.base.conf'"
    for line in body[1:]:
        assert re.fullmatch(r"[a-z_]+ = '.*'", line), line
    assert conffiles.parse_postgresql_conf(text) == s


def test_conf_value_quoting_follows_the_guc_lexer() -> None:
    # '' is a quote; a backslash must be doubled or the lexer eats it.
    assert conffiles.quote_conf_value("a'b\\c") == "'a''b\\\\c'"


def test_a_file_we_did_not_write_is_not_parsed() -> None:
    assert conffiles.parse_postgresql_conf("max_connections = 100\n") is None


def test_diff_reload_versus_restart() -> None:
    old = settings()
    assert conffiles.diff_settings(old, old) == ConfChange()
    reload_only = conffiles.diff_settings(old, settings(parameters={"work_mem": "8MB"}))
    assert reload_only == ConfChange(True, False, ("work_mem",))
    restart = conffiles.diff_settings(old, settings(port=5434))
    assert restart == ConfChange(True, True, ("port",))
    # PostgreSQL >= 13 reloads primary_conninfo: following a new leader needs no restart.
    up = Upstream("h", 1, "u", "n")
    follow = conffiles.diff_settings(settings(upstream=up), settings(upstream=Upstream("h2", 1, "u", "n")))
    assert follow == ConfChange(True, False, ("primary_conninfo",))
    assert conffiles.diff_settings(None, old).restart


def test_change_merging() -> None:
    a = ConfChange(True, False, ("x",))
    b = ConfChange(True, True, ("y", "x"))
    assert a | b == ConfChange(True, True, ("x", "y"))
    assert ConfChange() | ConfChange() == ConfChange()


def test_default_hba_is_loopback_only_and_uses_passwords() -> None:
    text = hba.render_pg_hba([], password_auth=True)
    rules = [ln.split() for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert {r[-1] for r in rules} == {"scram-sha-256"}
    addresses = {r[3] for r in rules if r[0] == "host"}
    assert addresses == {"127.0.0.1/32", "::1/128"}
    assert {r[1] for r in rules} == {"all", "replication"}
    assert {r[-1] for r in (ln.split() for ln in hba.default_hba_lines(False))} == {"trust"}


def test_configured_hba_lines_are_written_verbatim() -> None:
    text = hba.render_pg_hba(["host all all 10.0.0.0/8 scram-sha-256", "  ", "local all all peer"])
    assert text.splitlines()[1:] == ["host all all 10.0.0.0/8 scram-sha-256", "local all all peer"]


def _initdb_like(data_dir: str) -> None:
    os.makedirs(data_dir)
    with open(os.path.join(data_dir, "postgresql.conf"), "w") as f:
        f.write("max_connections = 100\n")


def test_configure_is_idempotent_and_keeps_the_original_as_base(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = str(tmp_path / "data")
    _initdb_like(d)
    first = conffiles.configure(d, settings(), standby=False)
    assert first.changed and first.restart
    with open(os.path.join(d, "postgresql.base.conf")) as f:
        assert f.read() == "max_connections = 100\n"
    with open(os.path.join(d, "postgresql.conf")) as f:
        assert f.read().startswith(conffiles.MARKER)
    assert conffiles.configure(d, settings(), standby=False) == ConfChange()
    # The base is taken once: ours is never mistaken for an original.
    with open(os.path.join(d, "postgresql.base.conf")) as f:
        assert f.read() == "max_connections = 100\n"
    assert oct(os.stat(os.path.join(d, "postgresql.conf")).st_mode & 0o777) == "0o600"


def test_turning_into_a_replica_and_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = str(tmp_path / "data")
    _initdb_like(d)
    conffiles.configure(d, settings(), standby=False)
    up = Upstream("h", 1, "u", "n")
    to_replica = conffiles.configure(d, settings(upstream=up, slot="n"), standby=True)
    assert to_replica.restart  # standby.signal only acts at start
    assert set(to_replica.params) == {"primary_conninfo", "primary_slot_name", "standby.signal"}
    assert os.path.exists(os.path.join(d, "standby.signal"))
    follow = conffiles.configure(d, settings(upstream=Upstream("h2", 1, "u", "n"), slot="n"), standby=True)
    assert follow == ConfChange(True, False, ("primary_conninfo",))
    back = conffiles.configure(d, settings(), standby=False)
    assert back.restart and not os.path.exists(os.path.join(d, "standby.signal"))


def test_hba_change_needs_a_reload_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = str(tmp_path / "data")
    _initdb_like(d)
    conffiles.configure(d, settings(), standby=False)
    change = conffiles.configure(d, settings(), standby=False, hba_lines=["local all all peer"])
    assert change == ConfChange(True, False, ("pg_hba.conf",))


def test_settings_from_config() -> None:
    cfg = PostgresConfig(
        data_dir="/var/lib/postgresql/15/main",
        bin_dir="/usr/lib/postgresql/15/bin",
        listen=HostPort("0.0.0.0", 5432),
        listen_addresses="0.0.0.0,::",
        connect_address=HostPort("10.0.0.5", 5432),
        superuser=Credentials("postgres", "x"),
        replication=Credentials("replicator", "y"),
        parameters={"max_connections": 200},
    )
    s = conffiles.settings_from_config(cfg)
    assert s["listen_addresses"] == "0.0.0.0,::"
    assert s["port"] == "5432"
    assert s["max_connections"] == "200"
    assert s["unix_socket_directories"] == "/var/lib/postgresql/15"
    assert "max_connections" not in conffiles.settings_from_config(cfg, parameters={})
