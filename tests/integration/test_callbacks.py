"""postgres/callbacks.py with real scripts: the arguments Patroni passes, one callback at a
time, timeouts, pre_promote's verdict, the OS user. Scripts record their argv and
environment in a file; every process and file is cleaned up, also when a test fails."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from pgwarden.core.config import parse_config
from pgwarden.postgres import runas
from pgwarden.postgres.callbacks import ACTIONS, CallbackRunner

pytestmark = pytest.mark.integration

GRACE = 0.3  # SIGTERM -> SIGKILL in these tests (short, so the suite stays fast)
LOGGER = "pgwarden.test.callbacks"

# Records one line per call: the argv, the OS user, and what of the environment matters.
RECORDER = """#!/bin/sh
line="argv="
for a in "$0" "$@"; do line="$line[$a]"; done
printf '%s uid=%s home=%s cwd=%s pgpassword=%s stdin=%s\\n' "$line" "$(id -u)" "$HOME" \\
    "$PWD" "${PGPASSWORD-unset}" "$(cat | wc -c)" >> "{dir}/calls"
echo "to stdout"
echo "to stderr" >&2
"""

# Starts a child that would outlive it, records both pids, then hangs.
SLOW = """#!/bin/sh
{trap}
sleep 60 &
echo "$$ $!" > "{dir}/pids.$1"
wait
echo finished >> "{dir}/calls"
"""

# Sleeps, then records that it finished (a callback that must not be killed).
FINISHES = """#!/bin/sh
sleep {seconds}
echo "finished $1" >> "{dir}/calls"
"""

# Leaves a child behind that keeps its output open for a while.
LEAVES_A_CHILD = """#!/bin/sh
(sleep 5; echo late) &
echo "$!" > "{dir}/pids.$1"
echo done
"""

PRE_PROMOTE_FAILS = """#!/bin/sh
echo "checking the fencing device"
echo "fencing failed: switch 10.0.0.5 unreachable" >&2
exit 1
"""


class Scripts:
    """A directory the database user can use: the scripts and the file they record into."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pgwarden-callbacks-"))
        self.dir.chmod(0o755)
        runas.chown_to_db(str(self.dir))  # scripts run as the database user when we are root
        self.runners: list[CallbackRunner] = []

    def script(self, name: str, text: str, **fmt: Any) -> str:
        path = self.dir / name
        path.write_text(text.replace("{dir}", str(self.dir)).format(**fmt) if fmt
                        else text.replace("{dir}", str(self.dir)))
        path.chmod(0o755)
        return str(path)

    def runner(self, postgresql: dict[str, Any], **kwargs: Any) -> CallbackRunner:
        """A runner for a configuration loaded the real way (so programs are checked)."""
        doc = {
            "scope": "demo",
            "name": "n1",
            "restapi": {"listen": "127.0.0.1:8008"},
            "etcd3": {"hosts": ["127.0.0.1:2379"]},
            "postgresql": {
                "listen": "127.0.0.1:5432",
                "data_dir": "/data",
                "authentication": {"superuser": {"username": "postgres"},
                                   "replication": {"username": "replicator"}},
                **postgresql,
            },
        }
        runner = CallbackRunner(parse_config(doc, env={}), logging.getLogger(LOGGER),
                                grace=GRACE, **kwargs)
        self.runners.append(runner)
        return runner

    def calls(self) -> list[str]:
        try:
            return (self.dir / "calls").read_text().splitlines()
        except FileNotFoundError:
            return []

    def pids(self, action: str) -> list[int]:
        path = self.dir / f"pids.{action}"
        wait_for(lambda: path.exists() and path.read_text().strip() != "", 5)
        return [int(p) for p in path.read_text().split()]

    def cleanup(self) -> None:
        for runner in self.runners:
            runner.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def scripts() -> Iterator[Scripts]:
    s = Scripts()
    try:
        yield s
    finally:
        s.cleanup()


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie left to someone else counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def our_zombies() -> list[int]:
    return [c.pid for c in psutil.Process().children()
            if c.status() == psutil.STATUS_ZOMBIE]


def messages(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and (level is None or r.levelno == level)]


# -- fire ----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_fire_calls_the_command_with_action_role_and_scope(scripts: Scripts, action: str) -> None:
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {action: f"{cb} --flag 'two words'"}})
    started = time.monotonic()
    runner.fire(action, "replica")
    assert time.monotonic() - started < 0.5  # asynchronous
    wait_for(lambda: len(scripts.calls()) == 1, 5)
    assert scripts.calls()[0].startswith(
        f"argv=[{cb}][--flag][two words][{action}][replica][demo] ")


def test_a_list_command_and_a_name_found_in_path(scripts: Scripts,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    scripts.script("record-callback", RECORDER)
    monkeypatch.setenv("PATH", f"{scripts.dir}:{os.environ['PATH']}")
    runner = scripts.runner({"callbacks": {"on_role_change": ["record-callback", "x y"]}})
    runner.fire("on_role_change", "primary")
    wait_for(lambda: len(scripts.calls()) == 1, 5)
    # resolved when the configuration was loaded, so the argv shows the full path
    assert scripts.calls()[0].startswith(
        f"argv=[{scripts.dir}/record-callback][x y][on_role_change][primary][demo] ")


def test_runs_as_the_database_user_without_our_secrets(scripts: Scripts,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "secret")  # ours: must not reach the script
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_start": cb}})
    runner.fire("on_start", "primary")
    wait_for(lambda: len(scripts.calls()) == 1, 5)
    user = runas.db_user()
    assert f" uid={user.uid} home={user.home} cwd=/ pgpassword=unset stdin=0" in scripts.calls()[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root switches to the postgres user")
def test_as_root_a_callback_runs_as_the_postgres_user(scripts: Scripts) -> None:
    import pwd

    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_stop": cb}})
    runner.fire("on_stop", "replica")
    wait_for(lambda: len(scripts.calls()) == 1, 5)
    assert f" uid={pwd.getpwnam('postgres').pw_uid} " in scripts.calls()[0]
    assert " uid=0 " not in scripts.calls()[0]


def test_output_is_logged_line_by_line(scripts: Scripts,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_start": cb}})
    runner.fire("on_start", "primary")
    wait_for(lambda: "callback on_start finished" in messages(caplog), 5)
    info = messages(caplog, logging.INFO)
    assert "callback on_start: to stdout" in info
    assert "callback on_start: to stderr" in info


def test_a_failing_callback_is_logged_with_its_last_line(scripts: Scripts,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    cb = scripts.script("fails.sh", PRE_PROMOTE_FAILS)
    runner = scripts.runner({"callbacks": {"on_stop": cb}})
    runner.fire("on_stop", "primary")
    wait_for(lambda: any("exited" in m for m in messages(caplog)), 5)
    assert messages(caplog, logging.WARNING) == [
        "callback on_stop exited with 1: fencing failed: switch 10.0.0.5 unreachable"]


def test_an_action_without_a_command_does_nothing(scripts: Scripts) -> None:
    cb = scripts.script("slow.sh", SLOW, trap="")
    runner = scripts.runner({"callbacks": {"on_start": cb}})
    runner.fire("on_start", "primary")
    slow_pid, _ = scripts.pids("on_start")
    runner.fire("on_stop", "primary")  # not configured: the running on_start is left alone
    time.sleep(0.3)
    assert not gone(slow_pid)


def test_an_unknown_action_is_logged_not_raised(scripts: Scripts,
                                                caplog: pytest.LogCaptureFixture) -> None:
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_start": cb}})
    runner.fire("on_promote", "primary")
    assert messages(caplog, logging.ERROR) == [
        ("callback 'on_promote' is not one of on_start, on_stop, on_restart, on_reload, "
         "on_role_change: ignored")]


def test_a_program_that_vanished_is_one_logged_line(scripts: Scripts,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_start": cb, "on_stop": cb}})
    os.unlink(cb)  # deleted after the configuration was loaded
    runner.fire("on_start", "primary")
    wait_for(lambda: bool(messages(caplog, logging.ERROR)), 5)
    assert messages(caplog, logging.ERROR) == [
        f"callback on_start: cannot run {cb}: No such file or directory"]
    scripts.script("cb.sh", RECORDER)
    runner.fire("on_stop", "primary")  # the runner still works
    wait_for(lambda: len(scripts.calls()) == 1, 5)


# -- one at a time, and bounded ---------------------------------------------------------------


def test_a_new_callback_kills_the_one_still_running(scripts: Scripts,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    slow = scripts.script("slow.sh", SLOW, trap="")
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_start": slow, "on_role_change": cb}})
    runner.fire("on_start", "replica")
    slow_pid, child_pid = scripts.pids("on_start")
    runner.fire("on_role_change", "primary")
    wait_for(lambda: len(scripts.calls()) == 1, 5)
    assert "[on_role_change][primary][demo]" in scripts.calls()[0]
    # killed and reaped before on_role_change started; what it forked dies with it
    assert gone(slow_pid)
    wait_for(lambda: gone(child_pid), 2)
    assert "callback on_start killed: on_role_change came while it was still running" in \
        messages(caplog, logging.WARNING)


def test_a_callback_ignoring_sigterm_is_killed_after_the_grace(scripts: Scripts) -> None:
    slow = scripts.script("slow.sh", SLOW, trap="trap '' TERM")
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_restart": slow, "on_stop": cb}})
    runner.fire("on_restart", "primary")
    slow_pid, child_pid = scripts.pids("on_restart")
    started = time.monotonic()
    runner.fire("on_stop", "primary")
    wait_for(lambda: len(scripts.calls()) == 1, 5)
    assert time.monotonic() - started >= GRACE  # SIGTERM was ignored: SIGKILL after the grace
    wait_for(lambda: gone(slow_pid) and gone(child_pid), 2)
    assert "finished" not in scripts.calls()


def test_on_reload_does_not_kill_a_running_role_change(scripts: Scripts) -> None:
    finishes = scripts.script("finishes.sh", FINISHES, seconds=0.5)
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_role_change": finishes, "on_reload": cb}})
    runner.fire("on_role_change", "primary")
    time.sleep(0.1)
    runner.fire("on_reload", "primary")
    wait_for(lambda: "finished on_role_change" in scripts.calls(), 5)
    assert any("[on_reload][primary][demo]" in line for line in scripts.calls())


def test_a_child_left_behind_does_not_hold_up_the_callback(
    scripts: Scripts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cb = scripts.script("leaves.sh", LEAVES_A_CHILD)
    runner = scripts.runner({"callbacks": {"on_start": cb}})
    started = time.monotonic()
    runner.fire("on_start", "primary")
    (child_pid,) = scripts.pids("on_start")
    try:
        wait_for(lambda: "callback on_start finished" in messages(caplog), 5)
        assert time.monotonic() - started < 4  # ended with the script, not with its output
        assert "callback on_start: done" in messages(caplog)
        assert not gone(child_pid)  # left alone, as Patroni does
    finally:
        if not gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_the_timeout_kills_a_hung_callback(scripts: Scripts,
                                           caplog: pytest.LogCaptureFixture) -> None:
    slow = scripts.script("slow.sh", SLOW, trap="")
    runner = scripts.runner({"callbacks": {"on_start": slow}, "callback_timeout": 0.5})
    runner.fire("on_start", "primary")
    slow_pid, child_pid = scripts.pids("on_start")
    wait_for(lambda: gone(slow_pid) and gone(child_pid), 5)
    wait_for(lambda: bool(messages(caplog, logging.WARNING)), 5)
    assert messages(caplog, logging.WARNING) == [
        "callback on_start did not finish within 0.5 s (postgresql.callback_timeout): killed"]


def test_callbacks_leave_no_zombies(scripts: Scripts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cb = scripts.script("cb.sh", RECORDER)
    slow = scripts.script("slow.sh", SLOW, trap="")
    runner = scripts.runner({"callbacks": {"on_start": cb, "on_stop": slow, "on_reload": cb},
                             "callback_timeout": 3})
    for action in ("on_start", "on_stop", "on_reload", "on_stop", "on_start"):
        runner.fire(action, "primary")
        time.sleep(0.1)
    wait_for(lambda: messages(caplog, logging.INFO).count("callback on_start finished") >= 1
             and messages(caplog, logging.INFO).count("callback on_reload finished") == 1, 5)
    runner.close()
    assert our_zombies() == []


def test_fire_from_two_threads(scripts: Scripts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_start": cb, "on_stop": cb}})

    def fire_many(action: str) -> None:
        for _ in range(20):
            runner.fire(action, "replica")

    threads = [threading.Thread(target=fire_many, args=(a,)) for a in ("on_start", "on_stop")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    runner.fire("on_start", "primary")  # the newest always runs
    wait_for(lambda: any("[on_start][primary]" in line for line in scripts.calls()), 10)
    runner.close()
    assert our_zombies() == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_close_kills_what_runs_and_later_calls_do_nothing(scripts: Scripts) -> None:
    slow = scripts.script("slow.sh", SLOW, trap="")
    cb = scripts.script("cb.sh", RECORDER)
    runner = scripts.runner({"callbacks": {"on_start": slow, "on_stop": cb}, "pre_promote": cb})
    runner.fire("on_start", "primary")
    slow_pid, child_pid = scripts.pids("on_start")
    runner.close()
    wait_for(lambda: gone(slow_pid) and gone(child_pid), 2)
    runner.fire("on_stop", "primary")
    assert runner.pre_promote() == (False, "pre_promote not run: pgwarden shut down")
    time.sleep(0.2)
    assert scripts.calls() == []
    runner.close()  # idempotent


# -- pre_promote --------------------------------------------------------------------------------


def test_pre_promote_success_runs_without_arguments(scripts: Scripts) -> None:
    cb = scripts.script("pre.sh", RECORDER)
    runner = scripts.runner({"pre_promote": cb})
    assert runner.pre_promote() == (True, "pre_promote exited with 0")
    # synchronous: it has run when the call returns; as Patroni, no action/role/scope
    assert scripts.calls()[0].startswith(f"argv=[{cb}] uid={runas.db_user().uid} ")


def test_pre_promote_failure_gives_its_last_line(scripts: Scripts,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cb = scripts.script("pre.sh", PRE_PROMOTE_FAILS)
    runner = scripts.runner({"pre_promote": cb})
    reason = "pre_promote exited with 1: fencing failed: switch 10.0.0.5 unreachable"
    assert runner.pre_promote() == (False, reason)
    assert reason in messages(caplog, logging.WARNING)
    assert "callback pre_promote: checking the fencing device" in messages(caplog)


def test_pre_promote_timeout_fails_and_kills_it(scripts: Scripts) -> None:
    slow = scripts.script("slow.sh", SLOW, trap="trap '' TERM")
    runner = scripts.runner({"pre_promote": [slow, "pre"], "callback_timeout": 0.5})
    started = time.monotonic()
    ok, reason = runner.pre_promote()
    took = time.monotonic() - started
    assert (ok, reason) == (
        False, "pre_promote did not finish within 0.5 s (postgresql.callback_timeout): killed")
    assert 0.5 <= took < 0.5 + GRACE + 2.0
    slow_pid, child_pid = scripts.pids("pre")
    wait_for(lambda: gone(slow_pid) and gone(child_pid), 2)


def test_pre_promote_not_configured_allows_the_promotion(scripts: Scripts) -> None:
    runner = scripts.runner({})
    assert runner.pre_promote() == (True, "no pre_promote script configured")


def test_pre_promote_that_cannot_start_refuses(scripts: Scripts) -> None:
    cb = scripts.script("pre.sh", RECORDER)
    runner = scripts.runner({"pre_promote": cb})
    os.chmod(cb, stat.S_IRUSR | stat.S_IWUSR)  # not executable any more
    ok, reason = runner.pre_promote()
    assert not ok and reason == f"pre_promote cannot run {cb}: Permission denied"


def test_pre_promote_killed_by_close(scripts: Scripts) -> None:
    slow = scripts.script("slow.sh", SLOW, trap="")
    runner = scripts.runner({"pre_promote": [slow, "pre"]})
    result: list[tuple[bool, str]] = []
    thread = threading.Thread(target=lambda: result.append(runner.pre_promote()))
    thread.start()
    try:
        slow_pid, _ = scripts.pids("pre")
        runner.close()
    finally:
        thread.join(10)
    assert result == [(False, "pre_promote killed: pgwarden shut down while it was still running")]
    assert gone(slow_pid)
