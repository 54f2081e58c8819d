"""Running PostgreSQL's programs as the database user, bounded in time."""
import os
import time

import pytest
from pgwarden.core.config_model import Credentials, HostPort, PostgresConfig
from pgwarden.core.errors import PostgresError
from pgwarden.postgres import runas
from pgwarden.postgres.query import local_superuser_params


def test_programs_run_as_the_database_user() -> None:
    user = runas.db_user()
    assert user.switch == (os.geteuid() == 0)
    out = runas.run(["id", "-u"], 5).stdout.strip()
    assert int(out) == user.uid
    groups = runas.run(["id", "-G"], 5).stdout.split()
    if user.switch:
        assert "0" not in groups  # root's groups are dropped too


def test_our_pg_variables_do_not_leak() -> None:
    os.environ["PGPASSWORD"] = "leak"
    try:
        env = runas.run(["env"], 5).stdout
    finally:
        del os.environ["PGPASSWORD"]
    assert "PGPASSWORD" not in env
    assert f"HOME={runas.db_user().home}" in env


def test_a_hung_program_is_killed_at_its_timeout() -> None:
    t = time.monotonic()
    with pytest.raises(PostgresError, match="did not finish within 0.3 s"):
        runas.run(["sh", "-c", "sleep 30 & sleep 30"], 0.3, what="sleeper")
    assert time.monotonic() - t < 2


def test_failure_reports_the_error_line_not_the_last_line() -> None:
    script = "echo 'x: error: the cause' >&2; echo 'a remark after it' >&2; exit 3"
    with pytest.raises(PostgresError, match=r"tool failed \(exit 3\): x: error: the cause"):
        runas.run(["sh", "-c", script], 5, what="tool")
    assert runas.run(["sh", "-c", "exit 4"], 5, check=False).returncode == 4


def test_secret_files_are_private_and_readable_by_the_database_user(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = runas.temp_db_file("secret\n", directory=str(tmp_path))
    try:
        st = os.stat(path)
        assert st.st_mode & 0o777 == 0o600
        assert st.st_uid == runas.db_user().uid
    finally:
        os.unlink(path)


def test_write_db_file_reports_changes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "f.conf")
    assert runas.write_db_file(path, "a\n")
    assert not runas.write_db_file(path, "a\n")
    assert runas.write_db_file(path, "b\n")
    assert os.stat(path).st_uid == runas.db_user().uid
    assert [p for p in os.listdir(tmp_path) if p.startswith(".pgwarden-")] == []


def _cfg(listen: str, unix: bool) -> PostgresConfig:
    return PostgresConfig(
        data_dir="/var/lib/postgresql/15/main", bin_dir="/usr/lib/postgresql/15/bin",
        listen=HostPort(listen, 5432), listen_addresses=listen,
        connect_address=HostPort("10.0.0.5", 5432), superuser=Credentials("postgres", "pw"),
        replication=Credentials("replicator", "rp"), use_unix_socket=unix,
    )


@pytest.mark.parametrize(
    "listen, unix, host",
    [
        ("0.0.0.0", False, "127.0.0.1"),
        ("*", False, "127.0.0.1"),
        ("::", False, "::1"),
        ("10.0.0.5", False, "10.0.0.5"),
        ("0.0.0.0", True, "/var/lib/postgresql/15"),
    ],
)
def test_how_the_agent_reaches_its_own_server(listen: str, unix: bool, host: str) -> None:
    p = local_superuser_params(_cfg(listen, unix))
    assert (p.host, p.port, p.user, p.password) == (host, 5432, "postgres", "pw")
