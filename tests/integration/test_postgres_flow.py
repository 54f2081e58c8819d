"""The whole PostgreSQL life cycle on real PostgreSQL 15, once as root and once as `postgres`.

initdb -> start -> roles -> sample (primary) -> slot -> basebackup -> replica streams ->
a row crosses -> promote (timed) -> the new primary writes -> stop.

Also runnable as a script (`python test_postgres_flow.py BASE_DIR`): the root test runs it
through `runuser -u postgres` to prove the library works when the agent itself runs as the
database user. `Lab` is shared with the other test_postgres_* modules.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import pytest
from pgwarden.core.config_model import Credentials
from pgwarden.postgres import (
    basebackup,
    conffiles,
    datadir,
    initdb,
    process,
    promote,
    query,
    runas,
    slots,
    status,
)

pytestmark = pytest.mark.integration

BIN_DIR = "/usr/lib/postgresql/15/bin"
VENV_PYTHON = "/work/main/.venv/bin/python"
# Quotes, backslashes and colons: the passwords go through conninfo, postgresql.conf and
# pgpass quoting on their way to a real server.
SUPERUSER = Credentials("postgres", "su'per\\pw:1")
REPLICATION = Credentials("replicator", "re:pl'i\\ca\"tor")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    name: str
    data_dir: str
    port: int
    socket_dir: str
    postmaster: process.Postmaster
    params: query.ConnParams
    frozen: list[int] = field(default_factory=list)

    def settings(self, upstream: Node | None = None) -> dict[str, str]:
        up = None
        if upstream is not None:
            up = conffiles.Upstream(
                "127.0.0.1", upstream.port, REPLICATION.username, self.name,
                password=REPLICATION.password,
            )
        return conffiles.build_settings(
            listen_addresses="127.0.0.1",
            port=self.port,
            socket_dir=self.socket_dir,
            upstream=up,
            slot=slots.slot_name(self.name) if upstream is not None else None,
        )

    def freeze(self) -> None:
        """SIGSTOP the postmaster and every child of it: a hung server, not a dead one."""
        procs = [psutil.Process(self.postmaster.pid)]
        procs += procs[0].children(recursive=True)
        for p in procs:
            os.kill(p.pid, signal.SIGSTOP)
            self.frozen.append(p.pid)

    def thaw(self) -> None:
        for pid in self.frozen:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.frozen.clear()


class Lab:
    """A private directory with PostgreSQL instances in it; cleanup() stops all of them."""

    def __init__(self, base: str | None = None) -> None:
        if base is None:
            # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, the postgres user cannot enter.
            base = tempfile.mkdtemp(prefix="pgw-test-", dir="/tmp")
        self.base = base
        os.chmod(base, 0o755)
        runas.chown_to_db(base)
        self.nodes: list[Node] = []

    def node(self, name: str) -> Node:
        data_dir = os.path.join(self.base, name)
        port = free_port()
        n = Node(
            name, data_dir, port, self.base, process.Postmaster(BIN_DIR, data_dir),
            query.ConnParams(self.base, port, SUPERUSER.username, SUPERUSER.password),
        )
        self.nodes.append(n)
        return n

    def init_primary(self, name: str) -> Node:
        n = self.node(name)
        initdb.initdb(BIN_DIR, n.data_dir, SUPERUSER, extra_args=["--no-sync"])
        conffiles.configure(n.data_dir, n.settings(), standby=False)
        n.postmaster.start()
        assert n.postmaster.wait_ready(10), n.postmaster.last_log_line()
        initdb.create_roles(n.params, SUPERUSER, REPLICATION)
        return n

    def cleanup(self) -> None:
        """Stop everything started here, even after a failed test, then remove the files."""
        for n in self.nodes:
            n.thaw()  # a stopped process ignores every stop mode
            pm = n.postmaster
            if pm.is_running() and not pm.stop("immediate", 5):
                pm.kill()
                pm.wait_exit(5)
            pm.close()
        # Postmasters started by another process (pg_ctl, the runuser script) are not our
        # Postmaster objects: find them by their data dir's postmaster.pid.
        for entry in os.listdir(self.base) if os.path.isdir(self.base) else []:
            path = os.path.join(self.base, entry)
            proc = process.find_postmaster(path) if os.path.isdir(path) else None
            if proc is not None:
                for p in [proc] + proc.children(recursive=True):
                    try:
                        p.send_signal(signal.SIGCONT)
                    except psutil.Error:
                        pass
                proc.send_signal(signal.SIGQUIT)
                try:
                    proc.wait(5)
                except psutil.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def lab() -> Any:
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.cleanup()


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:  # the server may refuse while it comes up
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def rows(params: query.ConnParams, sql: str) -> list[tuple[Any, ...]]:
    with query.Session(params) as session:
        return session.query(sql)


def run_flow(lab: Lab) -> dict[str, Any]:
    """The life cycle; returns facts and timings for the caller to assert and print."""
    facts: dict[str, Any] = {"euid": os.geteuid()}
    t = time.monotonic()
    n1 = lab.init_primary("n1")
    facts["bootstrap_s"] = time.monotonic() - t
    facts["postmaster_uid"] = psutil.Process(n1.postmaster.pid).uids().real
    s1 = status.sample(n1.params, 2)
    facts["primary_sample"] = s1
    facts["controldata_sysid"] = datadir.read_sysid(BIN_DIR, n1.data_dir)

    facts["slots_created"] = list(slots.sync_slots(n1.params, ["n2"]).created)
    n2 = lab.node("n2")
    t = time.monotonic()
    basebackup.basebackup(BIN_DIR, n2.data_dir, "127.0.0.1", n1.port, REPLICATION, slot="n2")
    facts["basebackup_s"] = time.monotonic() - t
    conffiles.configure(n2.data_dir, n2.settings(upstream=n1), standby=True)
    n2.postmaster.start()
    assert n2.postmaster.wait_ready(10), n2.postmaster.last_log_line()
    facts["replica_sample"] = wait_for(
        "the replica to stream",
        lambda: (s := status.sample(n2.params, 2))["replication_state"] == "streaming" and s,
    )
    facts["primary_replication"] = wait_for(
        "the primary to see the replica", lambda: status.sample(n1.params, 2)["replication"]
    )
    # A slot in use is never dropped, even when its member is no longer wanted.
    facts["busy_slot"] = list(slots.sync_slots(n1.params, [], managed=["n2"]).busy)

    with query.Session(n1.params) as s1_session:
        s1_session.query("CREATE TABLE flow (v text)")
        s1_session.query("INSERT INTO flow VALUES (%s)", ("crossed",))
    facts["row_on_replica"] = wait_for(
        "the row on the replica",
        lambda: rows(n2.params, "SELECT v FROM flow"),
    )[0][0]

    with query.Session(n2.params) as s2_session:
        facts["promote_s"] = promote.promote(s2_session, timeout=10)
        s2_session.query("INSERT INTO flow VALUES ('written on the new primary')")
        facts["new_primary_sample"] = status.sample(s2_session, 2)
    facts["standby_signal_left"] = os.path.exists(os.path.join(n2.data_dir, "standby.signal"))

    t = time.monotonic()
    facts["stopped"] = [n.postmaster.stop("fast", 10) for n in (n2, n1)]
    facts["stop_s"] = time.monotonic() - t
    facts["pidfiles_left"] = [
        os.path.exists(os.path.join(n.data_dir, "postmaster.pid")) for n in (n1, n2)
    ]
    return facts


def check_flow(facts: dict[str, Any]) -> None:
    db_uid = runas.db_user().uid
    assert facts["postmaster_uid"] == db_uid
    p = facts["primary_sample"]
    assert p["role"] == "primary" and p["timeline"] == 1
    assert p["server_version"] // 10000 == 15
    assert p["sysid"] == facts["controldata_sysid"]
    assert p["xlog"]["location"] == p["wal_position"] > 0
    assert facts["slots_created"] == ["n2"]
    r = facts["replica_sample"]
    assert r["role"] == "replica" and r["sysid"] == p["sysid"]
    assert r["wal_receiver"]["slot_name"] == "n2"
    assert r["xlog"]["received_location"] >= p["xlog"]["location"]
    (row,) = facts["primary_replication"]
    assert row["application_name"] == "n2" and row["usename"] == REPLICATION.username
    assert row["state"] == "streaming"
    assert facts["busy_slot"] == ["n2"]
    assert facts["row_on_replica"] == "crossed"
    assert 0 < facts["promote_s"] < 5
    np_ = facts["new_primary_sample"]
    assert np_["role"] == "primary" and np_["timeline"] == 2
    assert not facts["standby_signal_left"]
    assert facts["stopped"] == [True, True]
    assert facts["pidfiles_left"] == [False, False]


def test_flow_as_root(lab: Lab) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (drops to the postgres user for PostgreSQL)")
    facts = run_flow(lab)
    check_flow(facts)
    print(
        f"\nas root: bootstrap {facts['bootstrap_s']:.2f} s, basebackup "
        f"{facts['basebackup_s']:.2f} s, promote {facts['promote_s'] * 1000:.0f} ms, "
        f"stop {facts['stop_s']:.2f} s"
    )


def test_flow_as_the_postgres_user(lab: Lab) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to the postgres user")
    done = subprocess.run(
        ["runuser", "-u", runas.DB_OS_USER, "--", VENV_PYTHON, os.path.abspath(__file__), lab.base],
        check=False, capture_output=True, text=True, timeout=60, cwd="/",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["euid"] == runas.db_user().uid  # the script really ran as postgres
    check_flow(facts)
    print(
        f"\nas postgres: bootstrap {facts['bootstrap_s']:.2f} s, basebackup "
        f"{facts['basebackup_s']:.2f} s, promote {facts['promote_s'] * 1000:.0f} ms, "
        f"stop {facts['stop_s']:.2f} s"
    )


def _script(base: str) -> int:
    """Entry point when run as the postgres user: JSON facts on the last stdout line."""
    the_lab = Lab(base)
    try:
        facts = run_flow(the_lab)
    finally:
        for n in the_lab.nodes:
            if n.postmaster.is_running() and not n.postmaster.stop("immediate", 5):
                n.postmaster.kill()
    print(json.dumps(facts, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(_script(sys.argv[1]))
