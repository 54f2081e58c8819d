"""The postmaster as a process: stop modes, crash detection, adoption, a frozen server,
and the failure paths of bootstrap. Real PostgreSQL 15; every instance stopped afterwards."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from typing import Any

import pytest
from pgwarden.core.errors import PostgresError
from pgwarden.postgres import (
    basebackup,
    conffiles,
    datadir,
    initdb,
    process,
    query,
    runas,
    slots,
    status,
)
from test_postgres_flow import BIN_DIR, REPLICATION, SUPERUSER, Lab, free_port, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def lab() -> Any:
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.cleanup()


@pytest.mark.parametrize("mode", ["smart", "fast", "immediate"])
def test_stop_modes_leave_a_restartable_data_dir(lab: Lab, mode: str) -> None:
    n = lab.init_primary("n1")
    t = time.monotonic()
    assert n.postmaster.stop(mode, 10)
    took = time.monotonic() - t
    assert not n.postmaster.is_running()
    assert not os.path.exists(os.path.join(n.data_dir, "postmaster.pid"))
    assert n.postmaster.poll() == 0 if mode != "immediate" else n.postmaster.poll() is not None
    # Straight back up (after immediate: crash recovery) on the same data dir.
    n.postmaster.start()
    assert n.postmaster.wait_ready(10), n.postmaster.last_log_line()
    assert status.sample(n.params, 2)["role"] == "primary"
    print(f"\nstop {mode}: {took * 1000:.0f} ms")


def test_a_killed_postmaster_is_noticed_at_once_and_restarts(lab: Lab) -> None:
    n = lab.init_primary("n1")
    pm = n.postmaster
    exit_fd = pm.exit_fd()
    assert exit_fd is not None and not select.select([exit_fd], [], [], 0)[0]
    os.kill(pm.pid, signal.SIGKILL)
    t = time.monotonic()
    assert select.select([exit_fd], [], [], 1.0)[0]  # the pidfd wakes a select loop
    while pm.poll() is None:
        assert time.monotonic() - t < 0.5
        time.sleep(0.001)
    noticed = time.monotonic() - t
    assert pm.poll() == -signal.SIGKILL
    assert not pm.is_running()
    print(f"\ncrash noticed after {noticed * 1000:.1f} ms")
    # postmaster.pid is stale now and orphaned backends may still be exiting: start() copes.
    assert os.path.exists(os.path.join(n.data_dir, "postmaster.pid"))
    pm.start()
    assert pm.wait_ready(10), pm.last_log_line()
    assert status.sample(n.params, 2)["role"] == "primary"


def test_backends_orphaned_by_a_killed_postmaster_are_fenced(lab: Lab) -> None:
    """A frozen backend outlives its SIGKILLed postmaster and could finish a commit when it
    wakes: kill() on a dead postmaster kills what it left behind, and only that."""
    n = lab.init_primary("n1")
    other = lab.init_primary("n2")  # another server's processes must be left alone
    pm = n.postmaster
    with query.Session(n.params, timeout=2.0) as session:
        backend = int(session.query("SELECT pg_backend_pid()")[0][0])
        assert process.orphans(n.data_dir) == []  # a live postmaster's children are not
        os.kill(backend, signal.SIGSTOP)
        try:
            os.kill(pm.pid, signal.SIGKILL)
            wait_for("the postmaster gone", lambda: pm.poll() is not None, 5)
            left = process.orphans(n.data_dir)
            assert backend in [p.pid for p in left]
            pm.kill()
            wait_for("the orphans gone", lambda: not process.orphans(n.data_dir), 10)
        finally:
            try:
                os.kill(backend, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert other.postmaster.is_running()
    assert status.sample(other.params, 2)["role"] == "primary"
    pm.start()  # nothing of the old server holds the data dir any more
    assert pm.wait_ready(10), pm.last_log_line()


def _pg_ctl_start(n: Any) -> None:
    """Start a postmaster that is NOT our child (as a previous agent would have left it)."""
    cmd = [os.path.join(BIN_DIR, "pg_ctl"), "start", "-w", "-D", n.data_dir, "-l", n.data_dir + ".log"]
    runas.run(cmd, 20, what="pg_ctl start")


def test_adopt_a_running_postmaster_and_stop_it(lab: Lab) -> None:
    n = lab.init_primary("n1")
    assert n.postmaster.stop("fast", 10)
    _pg_ctl_start(n)
    pm = process.Postmaster(BIN_DIR, n.data_dir)
    n.postmaster = pm  # so cleanup stops it if an assertion fails
    assert pm.adopt()
    assert pm.adopted and pm.is_running() and pm.status() == "ready"
    # A second start is refused: it would fight the running one for the data dir.
    other = process.Postmaster(BIN_DIR, n.data_dir)
    with pytest.raises(PostgresError, match="already runs"):
        other.start()
    pm.reload()
    assert status.sample(n.params, 2)["role"] == "primary"
    t = time.monotonic()
    assert pm.stop("fast", 10)
    took = time.monotonic() - t
    assert pm.poll() == process.UNKNOWN_EXIT
    assert not os.path.exists(os.path.join(n.data_dir, "postmaster.pid"))
    assert not pm.adopt()  # nothing left to adopt
    print(f"\nadopted postmaster stopped (pid gone) in {took * 1000:.0f} ms")


def test_adopted_postmaster_crash_is_noticed_and_the_stale_pidfile_ignored(lab: Lab) -> None:
    n = lab.init_primary("n1")
    assert n.postmaster.stop("fast", 10)
    _pg_ctl_start(n)
    pm = process.Postmaster(BIN_DIR, n.data_dir)
    n.postmaster = pm
    assert pm.adopt()
    fd = pm.exit_fd()
    assert fd is not None
    old_pid = pm.pid
    os.kill(old_pid, signal.SIGKILL)
    assert select.select([fd], [], [], 1.0)[0]
    assert pm.poll() == process.UNKNOWN_EXIT
    # The leftover postmaster.pid names a dead (maybe not yet reaped) process: nothing to adopt.
    assert os.path.exists(os.path.join(n.data_dir, "postmaster.pid"))
    assert not process.Postmaster(BIN_DIR, n.data_dir).adopt()
    lingering = os.path.exists(f"/proc/{old_pid}")
    # PostgreSQL takes a zombie for a live postmaster; start() waits for PID 1 to reap it.
    t = time.monotonic()
    pm.start()
    waited = time.monotonic() - t
    assert pm.wait_ready(10), pm.last_log_line()
    print(f"\nkilled adopted postmaster: zombie lingering={lingering}, start waited {waited:.2f} s")


def test_a_recycled_pid_in_postmaster_pid_is_not_taken_for_a_postmaster(lab: Lab) -> None:
    n = lab.init_primary("n1")
    assert n.postmaster.stop("fast", 10)
    # A live process of the database user now holds the pid the file names.
    sleeper = subprocess.Popen(["sleep", "30"], **runas.popen_kwargs())
    try:
        with open(os.path.join(n.data_dir, "postmaster.pid"), "w") as f:
            f.write(f"{sleeper.pid}\n{n.data_dir}\n{int(time.time())}\n{n.port}\n{lab.base}\n\n0 0\nready   \n")
        runas.chown_to_db(os.path.join(n.data_dir, "postmaster.pid"))
        assert process.find_postmaster(n.data_dir) is None
        assert not process.Postmaster(BIN_DIR, n.data_dir).adopt()
        n.postmaster.start()  # PostgreSQL alone would refuse: "lock file already exists"
        assert n.postmaster.wait_ready(10), n.postmaster.last_log_line()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_frozen_server_cannot_hang_a_sample(lab: Lab) -> None:
    n = lab.init_primary("n1")
    with query.Session(n.params, timeout=1.0) as session:
        assert status.sample(session, 1.0)["role"] == "primary"
        n.freeze()
        try:
            t = time.monotonic()
            with pytest.raises(PostgresError, match="no answer"):
                status.sample(session, 1.0)
            kept = time.monotonic() - t
            t = time.monotonic()
            with pytest.raises(PostgresError):
                status.sample(n.params, 2.0)  # a fresh connection: connect_timeout's 2 s minimum
            fresh = time.monotonic() - t
            # A stop request is queued, not acted on, while the postmaster is stopped.
            assert not n.postmaster.stop("fast", 0.3)
        finally:
            n.thaw()
        print(f"\nfrozen: open session failed after {kept:.2f} s, new connection after {fresh:.2f} s")
        assert kept < 1.0 + 1.0
        assert fresh < 2.0 + 1.0
    # The queued fast stop runs as soon as the server can move again.
    assert n.postmaster.wait_exit(10)


def test_failed_start_is_reported_with_the_log_line(lab: Lab) -> None:
    n = lab.init_primary("n1")
    assert n.postmaster.stop("fast", 10)
    n.postmaster.start(["-c", "no_such_setting=1"])
    with pytest.raises(PostgresError, match="no_such_setting"):
        n.postmaster.wait_ready(10)


def test_bootstrap_refuses_a_non_empty_dir_and_cleans_a_failed_copy(lab: Lab) -> None:
    n = lab.init_primary("n1")
    with pytest.raises(PostgresError, match="not empty"):
        initdb.initdb(BIN_DIR, n.data_dir, SUPERUSER)
    target = os.path.join(lab.base, "copy")
    with pytest.raises(PostgresError, match="pg_basebackup failed"):
        basebackup.basebackup(BIN_DIR, target, "127.0.0.1", free_port(), REPLICATION)
    assert datadir.data_dir_state(target) == "empty" and not os.path.exists(target)
    # A slot that does not exist on the source fails the copy, which is removed again.
    with pytest.raises(PostgresError, match="pg_basebackup failed"):
        basebackup.basebackup(BIN_DIR, target, "127.0.0.1", n.port, REPLICATION, slot="nobody")
    assert datadir.data_dir_state(target) == "empty"
    # A wrong password fails too, and never shows up on a command line.
    wrong = type(REPLICATION)(REPLICATION.username, "wrong")
    with pytest.raises(PostgresError, match="password authentication failed"):
        basebackup.basebackup(BIN_DIR, target, "127.0.0.1", n.port, wrong)


def test_slots_follow_the_member_list(lab: Lab) -> None:
    n = lab.init_primary("n1")
    with query.Session(n.params) as s:
        s.query("SELECT pg_create_physical_replication_slot('keep_me')")
        first = slots.sync_slots(s, ["Node-2", "node3"], managed=["Node-2", "node3"])
        assert first == slots.SlotSync(created=("node3", "node_2"))
        assert slots.sync_slots(s, ["Node-2", "node3"], ignore=["keep_me"]) == slots.SlotSync()
        # Only slots of the managed members may go; 'keep_me' belongs to someone else.
        gone = slots.sync_slots(s, ["Node-2"], managed=["Node-2", "node3"])
        assert gone == slots.SlotSync(dropped=("node3",))
        # Patroni's rule (managed=None): every other physical slot goes, except `ignore`.
        assert slots.sync_slots(s, [], ignore=["keep_me"]).dropped == ("node_2",)
        assert [x["name"] for x in slots.list_slots(s)] == ["keep_me"]


def test_create_roles_is_idempotent_and_sets_passwords(lab: Lab) -> None:
    n = lab.init_primary("n1")
    initdb.create_roles(n.params, SUPERUSER, REPLICATION)  # second run: ALTER, no error
    with query.Session(n.params) as s:
        row = s.query_one(
            "SELECT rolreplication, rolcanlogin, rolpassword LIKE 'SCRAM-SHA-256$%%'"
            " FROM pg_authid WHERE rolname = %s", (REPLICATION.username,)
        )
        assert row == (True, True, True)
    bad = query.ConnParams(n.params.host, n.port, SUPERUSER.username, "not the password")
    with pytest.raises(PostgresError, match="password authentication failed"):
        status.sample(bad, 2)


def test_reload_applies_settings_and_flags_the_ones_needing_a_restart(lab: Lab) -> None:
    n = lab.init_primary("n1")
    settings = conffiles.build_settings(
        listen_addresses="127.0.0.1", port=n.port, socket_dir=n.socket_dir,
        parameters={"work_mem": "7MB", "max_connections": 42},
    )
    change = conffiles.configure(n.data_dir, settings, standby=False)
    assert change.restart and set(change.params) == {"work_mem", "max_connections"}
    n.postmaster.reload()
    with query.Session(n.params) as s:
        wait_for("the reload", lambda: s.query_one("SHOW work_mem")[0] == "7MB", 5)
        sampled = status.sample(s, 2)
    assert sampled["pending_restart"] and sampled["pending_restart_params"] == ["max_connections"]
