"""The postmaster as a process: start it as our child, adopt a running one, signal, stop.

Starting `postgres -D data_dir` ourselves (not through pg_ctl) makes the postmaster our
child: its exit is known at once (SIGCHLD / poll()), with its exit status. A postmaster left
running by a previous agent (systemd KillMode=process) is adopted from postmaster.pid,
identified by (pid, create_time) so a recycled pid is never mistaken for it.

All signals go through a pidfd (Linux >= 5.3): once opened, it names that one process even
if the pid is recycled, and it becomes readable when the process exits, so an adopted
postmaster's exit is also noticed without polling (`exit_fd()`).
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Literal

import psutil
from pgwarden.core.clock import mono
from pgwarden.core.errors import PostgresError
from pgwarden.postgres import runas

StopMode = Literal["smart", "fast", "immediate"]
_STOP_SIGNALS: dict[str, signal.Signals] = {
    "smart": signal.SIGTERM,  # wait for clients to disconnect
    "fast": signal.SIGINT,  # abort sessions, checkpoint, exit
    "immediate": signal.SIGQUIT,  # exit at once; crash recovery at the next start
}
UNKNOWN_EXIT = -1000  # poll() of an adopted postmaster that exited: its status is not ours to read
_POLL_INTERVAL = 0.01
_LINGER_TIMEOUT = 5.0  # a non-child's pid lingers ~1 s here (PID 1 is not a real init)


@dataclass(frozen=True)
class PidFile:
    """postmaster.pid, written by the postmaster (see src/include/utils/pidfile.h)."""

    pid: int
    data_dir: str
    start_time: int  # epoch seconds, truncated
    port: int | None
    socket_dir: str | None
    listen_addr: str | None
    status: str | None  # "starting", "stopping", "ready", "standby" (line 8)


def orphans(data_dir: str) -> list[psutil.Process]:
    """Processes of a PostgreSQL server on `data_dir` whose postmaster is gone. Nothing while
    a live postmaster owns the data dir (its children match leftover_processes too)."""
    return [] if find_postmaster(data_dir) is not None else leftover_processes(data_dir)


def kill_orphans(data_dir: str) -> int:
    """SIGKILL what orphans() finds (a stopped process dies of it too); how many."""
    killed = 0
    for p in orphans(data_dir):
        try:
            p.send_signal(signal.SIGKILL)  # psutil checks the pid was not reused
            killed += 1
        except psutil.Error:
            pass
    return killed


def read_pidfile(data_dir: str) -> PidFile | None:
    """The parsed postmaster.pid, or None if absent or unreadable (e.g. half-written)."""
    try:
        with open(os.path.join(data_dir, "postmaster.pid"), encoding="utf-8") as f:
            lines = f.read().splitlines()
        pid, start = int(lines[0]), int(lines[2])
    except (OSError, ValueError, IndexError):
        return None

    def line(i: int) -> str | None:
        return lines[i].strip() if len(lines) > i and lines[i].strip() else None

    port = line(3)
    return PidFile(
        pid=pid,
        data_dir=lines[1] if len(lines) > 1 else "",
        start_time=start,
        port=int(port) if port and port.isdigit() else None,
        socket_dir=line(4),
        listen_addr=line(5),
        status=line(7),
    )


def find_postmaster(data_dir: str) -> psutil.Process | None:
    """The live postmaster of `data_dir` per postmaster.pid, or None (no file, stale file)."""
    pf = read_pidfile(data_dir)
    if pf is None:
        return None
    kind, proc = _classify(pf, data_dir)
    return proc if kind == "running" else None


def _classify(pf: PidFile, data_dir: str) -> tuple[str, psutil.Process | None]:
    """'running' (that postmaster is alive), 'zombie' (dead, pid not yet reaped), or 'stale'."""
    try:
        proc = psutil.Process(pf.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return "zombie", proc
        if proc.name() not in ("postgres", "postmaster"):
            return "stale", None
        # A backend also runs `postgres` in data_dir; only the postmaster started when the
        # pid file says. The cwd check is the stronger one (immune to wall-clock steps).
        time_ok = -2.0 <= proc.create_time() - pf.start_time <= 3.0
        try:
            cwd_ok: bool | None = _same_path(proc.cwd(), data_dir)
        except psutil.AccessDenied:
            cwd_ok = None
        if cwd_ok is False or not (cwd_ok or time_ok):
            return "stale", None
        if proc.ppid() > 1 and _is_postgres_of(psutil.Process(proc.ppid()), data_dir):
            return "stale", None  # a backend of this data dir (its parent is a postmaster)
        return "running", proc
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return "stale", None
    except psutil.AccessDenied:
        # Not ours to inspect (another user's process reused the pid): not our postmaster.
        return "stale", None


def _is_postgres_of(proc: psutil.Process, data_dir: str) -> bool:
    try:
        return proc.name() == "postgres" and _same_path(proc.cwd(), data_dir)
    except psutil.Error:
        return False


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def leftover_processes(data_dir: str) -> list[psutil.Process]:
    """Live postgres processes working in `data_dir` (orphaned backends of a killed postmaster).

    They still hold the old shared memory; PostgreSQL refuses to start until they are gone.
    The directory is compared by device and inode (the kernel resolves symlinks; a server in
    another mount namespace, a container, may show the same path for another directory).
    """
    try:
        want = os.stat(data_dir)
    except OSError:
        return []
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] != "postgres" or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            st = os.stat(f"/proc/{proc.pid}/cwd")
        except (psutil.Error, OSError):
            continue  # gone, or not ours to look at
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            found.append(proc)
    return found


class Postmaster:
    """One data directory's postmaster, started by us or adopted. Single owner, no threads."""

    def __init__(self, bin_dir: str, data_dir: str, log_path: str | None = None) -> None:
        self.bin_dir = bin_dir
        self.data_dir = os.path.abspath(data_dir)
        # The postmaster's stderr (logging_collector may take over later). Outside the data
        # dir, so pg_basebackup/pg_rewind never copy one member's log onto another.
        self.log_path = log_path or self.data_dir.rstrip("/") + ".log"
        self._child: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._exit: int | None = None
        self.pid: int | None = None
        self.create_time: float | None = None
        self.adopted = False

    # -- lifecycle -----------------------------------------------------------------
    def start(self, args: Sequence[str] = (), lock_timeout: float = _LINGER_TIMEOUT) -> int:
        """Start `postgres -D data_dir [args]` as our child; return its pid (not yet ready).

        Refuses when a postmaster already runs on the data dir (adopt it instead). A
        postmaster.pid left by a killed postmaster is handled: we wait (up to `lock_timeout`)
        for its unreaped pid and its orphaned backends to vanish, as PostgreSQL would
        otherwise refuse with "lock file already exists" or "shared memory still in use".
        """
        if self.is_running():
            raise PostgresError(f"postgres already runs on {self.data_dir} (pid {self.pid})")
        self._wait_for_stale_lock(lock_timeout)
        # Our copy of the log fd is closed once the child has its own.
        with self._open_log() as log:
            child = self._spawn(log, args)
        self._forget()
        self._child, self.pid, self.adopted = child, child.pid, False
        self._pidfd = os.pidfd_open(child.pid)
        try:
            self.create_time = psutil.Process(child.pid).create_time()
        except psutil.Error:
            self.create_time = None  # it already exited; poll() will tell
        return child.pid

    def adopt(self) -> bool:
        """Take over a postmaster already running on the data dir (per postmaster.pid).

        False if none runs (no file, or a stale file of a dead process or a recycled pid).
        """
        proc = find_postmaster(self.data_dir)
        if proc is None:
            return False
        try:
            pidfd = os.pidfd_open(proc.pid)
            # Re-check after opening the pidfd: from now on the fd pins THIS process.
            if not proc.is_running():
                os.close(pidfd)
                return False
        except (ProcessLookupError, psutil.Error):
            return False
        self._forget()
        self._pidfd, self.pid, self.adopted = pidfd, proc.pid, True
        self.create_time = proc.create_time()
        return True

    def wait_ready(self, timeout: float) -> bool:
        """Wait until it accepts connections ('ready', or 'standby' for a hot standby).

        True when ready, False on timeout (a replica may take long to reach consistency);
        raises PostgresError if the postmaster exits meanwhile, with its last log line.
        """
        deadline = mono() + timeout
        while True:
            code = self.poll()
            if code is not None:
                raise PostgresError(
                    f"postgres exited during startup (code {code}): {self.last_log_line()}"
                )
            pf = read_pidfile(self.data_dir)
            if pf is not None and pf.pid == self.pid and pf.status in ("ready", "standby"):
                return True
            if mono() >= deadline:
                return False
            time.sleep(_POLL_INTERVAL)

    def stop(self, mode: StopMode = "fast", timeout: float = 60.0) -> bool:
        """Ask the postmaster to stop in `mode`; True once it is gone, False on timeout.

        Gone means: exited AND its pid is no longer present, so an immediate start on the same
        data dir cannot trip over the lock file. A frozen (SIGSTOPped) postmaster ignores
        every mode: escalate with kill() when this returns False.
        """
        if self.pid is None:
            return True
        if self.poll() is None:
            self._signal(_STOP_SIGNALS[mode])
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster AND its children: the last resort, and a fence. Backends
        notice a dead postmaster only when they run, so a frozen (SIGSTOPped) backend left
        behind could wake later and finish a commit: nothing of the server may survive.
        With the postmaster already dead, its orphaned processes are killed instead."""
        if self.pid is None or self.poll() is not None:
            kill_orphans(self.data_dir)
            return
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            children = []
        self._signal(signal.SIGKILL)
        for child in children:
            try:
                child.send_signal(signal.SIGKILL)  # psutil checks the pid was not reused
            except psutil.Error:
                pass

    def frozen(self) -> bool:
        """The postmaster is stopped (SIGSTOP, a debugger): no stop mode can reach it."""
        if self.pid is None:
            return False
        try:
            return psutil.Process(self.pid).status() == psutil.STATUS_STOPPED
        except psutil.Error:
            return False

    def reload(self) -> None:
        """SIGHUP: re-read postgresql.conf and pg_hba.conf."""
        if self.poll() is not None:
            raise PostgresError("cannot reload: postgres is not running")
        self._signal(signal.SIGHUP)

    def wait_exit(self, timeout: float) -> bool:
        """Wait until the postmaster has exited and its lock on the data dir is free.

        Free: postmaster.pid removed (every clean stop, even immediate), or its pid gone.
        After a SIGKILL the file stays, and a non-child's pid stays a zombie until PID 1
        reaps it (~1 s here; PostgreSQL takes a zombie for a live postmaster): wait for that
        too, up to a few seconds beyond `timeout`. False on timeout.
        """
        deadline = mono() + timeout
        if self._pidfd is not None:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            if not poller.poll(max(0.0, deadline - mono()) * 1000):
                return False
        while self.poll() is None or self._lock_held():
            if mono() >= deadline + (_LINGER_TIMEOUT if self.adopted else 0):
                return False
            time.sleep(_POLL_INTERVAL)
        return True

    def _lock_held(self) -> bool:
        if not self.adopted:
            return False  # our child is reaped by poll(): its pid is gone already
        pf = read_pidfile(self.data_dir)
        return pf is not None and pf.pid == self.pid and _pid_present(self.pid)

    # -- state ---------------------------------------------------------------------
    def poll(self) -> int | None:
        """None while running; else its exit status (negative = signal, as in Popen), or
        UNKNOWN_EXIT for an adopted postmaster, whose status only its parent can read."""
        if self._exit is not None:
            return self._exit
        if self._child is not None:
            code = self._child.poll()
            if code is not None:
                self._exit = code
                self._close_pidfd()
            return code
        if self._pidfd is not None and _fd_readable(self._pidfd):
            self._exit = UNKNOWN_EXIT
            self._close_pidfd()
            return self._exit
        return None

    def is_running(self) -> bool:
        return self.pid is not None and self.poll() is None

    def exit_fd(self) -> int | None:
        """A pidfd that becomes readable when the postmaster exits (for select/poll loops).

        For our child, SIGCHLD also works; the pidfd covers an adopted postmaster as well.
        Owned by this object: do not close it.
        """
        return self._pidfd if self.is_running() else None

    def status(self) -> str | None:
        """The postmaster's own status line: starting, ready, standby, stopping (or None)."""
        pf = read_pidfile(self.data_dir)
        return pf.status if pf is not None and pf.pid == self.pid else None

    def last_log_line(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
                return runas.last_line(f.read().decode("utf-8", "replace"))
        except OSError:
            return "no log"

    def close(self) -> None:
        """Release the pidfd; PostgreSQL keeps running (an agent restart must not stop it)."""
        self._close_pidfd()

    # -- internals -----------------------------------------------------------------
    def _signal(self, sig: signal.Signals) -> None:
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            elif self._child is not None:
                self._child.send_signal(sig)
        except ProcessLookupError:
            pass  # exited in the meantime: poll() will report it

    def _spawn(self, log: IO[bytes], args: Sequence[str]) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                [os.path.join(self.bin_dir, "postgres"), "-D", self.data_dir, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=runas.db_env(),
                # Own session: a Ctrl-C or SIGTERM aimed at the agent's process group must not
                # reach PostgreSQL (it has its own stop modes, chosen by us).
                start_new_session=True,
                **runas.popen_kwargs(),
            )
        except OSError as e:
            raise PostgresError(f"cannot start postgres: {e.strerror}") from None

    def _forget(self) -> None:
        self._close_pidfd()
        self._child, self._exit, self.pid, self.create_time = None, None, None, None

    def _close_pidfd(self) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is not None:
            os.close(fd)

    def _open_log(self) -> IO[bytes]:
        try:
            log = open(self.log_path, "ab")  # noqa: SIM115 - the caller closes it (with-block)
        except OSError as e:
            raise PostgresError(f"cannot open the postgres log {self.log_path}: {e.strerror}") from None
        runas.chown_to_db(self.log_path)
        return log

    def _wait_for_stale_lock(self, timeout: float) -> None:
        pf = read_pidfile(self.data_dir)
        if pf is None:
            return
        deadline = mono() + timeout
        while True:
            kind, _ = _classify(pf, self.data_dir)
            if kind == "running":
                raise PostgresError(
                    f"a postmaster (pid {pf.pid}) already runs on {self.data_dir}: adopt it"
                )
            leftovers = leftover_processes(self.data_dir) if kind == "stale" else []
            if kind == "stale" and not leftovers:
                if _pid_present(pf.pid):
                    # The pid now belongs to an unrelated process of the postgres user:
                    # PostgreSQL would take it for a live postmaster. The file is ours to clear.
                    _unlink(os.path.join(self.data_dir, "postmaster.pid"))
                return
            if mono() >= deadline:
                pids = [pf.pid] if kind == "zombie" else [p.pid for p in leftovers]
                raise PostgresError(
                    f"processes of a previous postmaster on {self.data_dir} are still present "
                    f"(pids {pids}) after {timeout:g} s; retry when they are gone"
                )
            time.sleep(_POLL_INTERVAL)


def _fd_readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _pid_present(pid: int | None) -> bool:
    return pid is not None and psutil.pid_exists(pid)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
