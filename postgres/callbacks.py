"""Run the operator's scripts: Patroni's `postgresql.callbacks` and `postgresql.pre_promote`.

A callback tells outside tooling what PostgreSQL just did (`<command...> <action> <role>
<scope>`, as Patroni calls it). It runs in the background and must never hold up a failover,
so `fire` returns at once. Callbacks are serialised the way Patroni's CallbackExecutor does
it: a new one kills the previous one still running (what it was reporting is stale), except
that `on_reload` has its own lane, so a reload never kills an `on_role_change` that is moving
an address. `pre_promote` is synchronous: its failure aborts the promotion.

Every script runs without a shell, as the database OS user (the account PostgreSQL runs as,
see runas.py), from "/", with stdin from /dev/null, in a process group of its own (so a kill
reaches what it forked), bounded by `postgresql.callback_timeout`. Its output is logged line
by line. Nothing here raises into the caller.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pgwarden.core.clock import mono
from pgwarden.core.config_model import Config
from pgwarden.core.errors import PgwardenError
from pgwarden.postgres import runas

ACTIONS = ("on_start", "on_stop", "on_restart", "on_reload", "on_role_change")
ROLES = ("primary", "replica", "standby_leader", "demoted")  # what Patroni passes
DEFAULT_GRACE = 1.0  # seconds between SIGTERM and SIGKILL
_REAP_WAIT = 5.0  # after SIGKILL; only a process stuck in the kernel takes longer
_MAX_LINE = 4096  # a longer line is logged in pieces, so output without newlines stays bounded
_READ_SIZE = 65536
_DRAIN_TIME = 0.2  # after the exit, how long to read what a left-behind child still writes
SHUTDOWN = "pgwarden shut down"  # the cancel cause at close()

PopenKwargs = Callable[[], dict[str, Any]]
Environment = Callable[[], dict[str, str]]


@dataclass(frozen=True)
class Outcome:
    """How one run ended. `returncode` is None when it could not start or was killed by us."""

    returncode: int | None
    last_line: str  # the last non-empty line of its output ("" when silent)
    error: str | None = None  # could not start: the reason
    timed_out: bool = False
    cancelled: bool = False  # superseded, or we are closing
    started: bool = True  # False: cancelled before it could start


class _Run:
    """One child process: output logged, a deadline, cancellable from another thread."""

    def __init__(self, label: str, argv: Sequence[str], timeout: float, grace: float,
                 log: logging.Logger) -> None:
        self.label = label
        self.argv = list(argv)
        self.timeout = timeout
        self.grace = grace
        self.log = log
        self._lock = threading.Lock()
        self.cancel_cause: str | None = None  # "on_stop came", SHUTDOWN
        # While it runs, cancel() writes a byte to this pipe so the select() in _supervise
        # wakes at once (-1: not running, the reason alone is enough).
        self._wake_r = self._wake_w = -1
        self._last = ""
        self._partial = b""

    def cancel(self, cause: str) -> None:
        with self._lock:
            if self.cancel_cause is None:
                self.cancel_cause = cause
            if self._wake_w >= 0:
                try:
                    os.write(self._wake_w, b"x")
                except BlockingIOError:
                    pass  # already woken

    def execute(self, popen_kwargs: PopenKwargs, env: Environment) -> Outcome:
        """Start, log the output until the end, reap."""
        with self._lock:
            if self.cancel_cause is not None:
                return Outcome(None, "", cancelled=True, started=False)
            self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            try:
                proc = self._spawn(popen_kwargs, env)
            except _CannotStart as e:
                return Outcome(None, "", error=str(e))
            return self._supervise(proc)
        finally:
            with self._lock:
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r = self._wake_w = -1

    def _spawn(self, popen_kwargs: PopenKwargs, env: Environment) -> subprocess.Popen[bytes]:
        try:
            # cast: with **popen_kwargs() typeshed cannot tell which overload (bytes or str)
            return cast("subprocess.Popen[bytes]", subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # one stream keeps the lines in the order written
                text=False,  # bytes: a line is decoded once complete, never half a character
                env=env(),
                cwd="/",  # the database user may not be able to enter our directory
                start_new_session=True,
                **popen_kwargs(),
            ))
        except OSError as e:
            raise _CannotStart(f"cannot run {self.argv[0]}: {e.strerror or e}") from None
        except (subprocess.SubprocessError, ValueError, PgwardenError) as e:
            raise _CannotStart(f"cannot run {self.argv[0]}: {e}") from None

    def _supervise(self, proc: subprocess.Popen[bytes]) -> Outcome:
        assert proc.stdout is not None
        out_fd = proc.stdout.fileno()
        # A pidfd is readable once the child exits but leaves it unreaped: the zombie keeps
        # its pid, so signalling its process group can never hit a recycled pid.
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError as e:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.stdout.close()
            self._reap(proc)
            return Outcome(None, "", error=f"cannot watch {self.argv[0]}: {e.strerror or e}")
        deadline = mono() + self.timeout
        timed_out = cancelled = False
        try:
            out_open = True
            while True:
                remaining = deadline - mono()
                if remaining <= 0:
                    timed_out = True
                    break
                fds = [self._wake_r, pidfd] + ([out_fd] if out_open else [])
                ready, _, _ = select.select(fds, [], [], remaining)
                if out_fd in ready:
                    out_open = self._read(out_fd)
                if pidfd in ready:
                    # What it wrote before exiting is in the pipe; a child it left behind may
                    # keep the pipe open, so read what is there and no longer wait for EOF.
                    self._drain(out_fd)
                    break
                if self._wake_r in ready:
                    cancelled = True
                    break
            if timed_out or cancelled:
                self._terminate(proc.pid, pidfd)
                self._drain(out_fd)
        finally:
            os.close(pidfd)
            proc.stdout.close()
            self._flush()
            returncode = self._reap(proc)
        if timed_out or cancelled:
            returncode = None
        return Outcome(returncode, self._last, timed_out=timed_out, cancelled=cancelled)

    def _terminate(self, pgid: int, pidfd: int) -> None:
        """SIGTERM the group, SIGKILL what is left after the grace (as Patroni kills children)."""
        _signal_group(pgid, signal.SIGTERM)
        select.select([pidfd], [], [], self.grace)
        _signal_group(pgid, signal.SIGKILL)  # also reaches children that outlived the leader
        select.select([pidfd], [], [], _REAP_WAIT)

    def _reap(self, proc: subprocess.Popen[bytes]) -> int | None:
        try:
            return proc.wait(timeout=_REAP_WAIT)
        except subprocess.TimeoutExpired:
            # Stuck in the kernel even after SIGKILL: reap it whenever it dies, not now.
            self.log.warning("callback %s (pid %d) does not die: left to a reaper thread",
                             self.label, proc.pid)
            threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
            return None

    def _read(self, fd: int) -> bool:
        """Read one chunk and log its complete lines. False at end of output."""
        try:
            chunk = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self._partial += chunk
        *lines, self._partial = self._partial.split(b"\n")
        if len(self._partial) > _MAX_LINE:  # no newline in sight: log what we have
            lines.append(self._partial)
            self._partial = b""
        for line in lines:
            for start in range(0, len(line), _MAX_LINE):
                self._log_line(line[start:start + _MAX_LINE])
        return True

    def _drain(self, fd: int) -> None:
        """Log what is already in the pipe; bounded, as a left-behind child may write forever."""
        os.set_blocking(fd, False)
        until = mono() + _DRAIN_TIME
        while mono() < until and select.select([fd], [], [], 0)[0] and self._read(fd):
            pass

    def _flush(self) -> None:
        if self._partial:
            self._log_line(self._partial)
            self._partial = b""

    def _log_line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", errors="replace").rstrip()
        if line:
            self._last = line
            self.log.info("callback %s: %s", self.label, line)


class _CannotStart(Exception):
    """The program could not be started (missing, not executable, no such user)."""


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # gone, or a setuid program in the group: nothing more we can do


class _Lane:
    """One callback at a time (Patroni's CallbackExecutor): the newest wins.

    A callback that is still running when the next one comes is killed; one that has not
    started yet is dropped. A thread of its own runs them, so `submit` returns at once.
    """

    def __init__(self, name: str, runner: CallbackRunner) -> None:
        self.name = name
        self.runner = runner
        self.cond = threading.Condition()
        self.pending: _Run | None = None
        self.current: _Run | None = None
        self.thread: threading.Thread | None = None
        self.closed = False

    def submit(self, run: _Run) -> None:
        with self.cond:
            if self.closed:
                return
            if self.pending is not None:
                self.runner.log.warning("callback %s dropped: %s came before it started",
                                        self.pending.label, run.label)
            if self.current is not None:
                self.current.cancel(f"{run.label} came")
            self.pending = run
            if self.thread is None:
                self.thread = threading.Thread(target=self._loop, name=f"callbacks-{self.name}",
                                               daemon=True)
                self.thread.start()
            self.cond.notify()

    def _loop(self) -> None:
        while True:
            with self.cond:
                while self.pending is None and not self.closed:
                    self.cond.wait()
                if self.closed:
                    return
                run, self.pending = self.pending, None
                self.current = run
            assert run is not None
            try:
                self.runner.report(run, run.execute(self.runner.popen_kwargs, self.runner.env))
            except Exception:  # the lane must survive anything
                self.runner.log.exception("callback %s: unexpected failure", run.label)
            finally:
                with self.cond:
                    self.current = None
                    self.cond.notify_all()

    def close(self, timeout: float) -> None:
        with self.cond:
            self.closed = True
            self.pending = None
            if self.current is not None:
                self.current.cancel(SHUTDOWN)
            self.cond.notify_all()
            thread = self.thread
        if thread is not None:
            thread.join(timeout)


class CallbackRunner:
    """The callbacks and pre_promote of one member. Thread-safe; no method raises.

    `popen_kwargs` and `env` default to running as the database OS user (runas.py);
    `grace` is the time between SIGTERM and SIGKILL when a run is killed.
    """

    def __init__(self, config: Config, log: logging.Logger, *,
                 popen_kwargs: PopenKwargs = runas.popen_kwargs,
                 env: Environment = runas.db_env, grace: float = DEFAULT_GRACE) -> None:
        self.log = log
        self.popen_kwargs = popen_kwargs
        self.env = env
        self.grace = grace
        self._lock = threading.Lock()
        self._config = config
        # on_reload has a lane of its own, as in Patroni: a reload must not kill the
        # on_role_change that may be moving an address right now.
        self._lanes = {"reload": _Lane("reload", self), "other": _Lane("other", self)}
        self._pre_lock = threading.Lock()  # one pre_promote at a time
        self._pre_run: _Run | None = None
        self._closed = False

    def configure(self, config: Config) -> None:
        """Use a reloaded configuration for the callbacks fired from now on."""
        with self._lock:
            self._config = config

    def fire(self, action: str, role: str) -> None:
        """Run the `action` callback in the background, if one is configured; return at once.

        Called as `<command...> <action> <role> <scope>`. `role` is one of ROLES.
        """
        try:
            self._fire(action, role)
        except Exception:  # a callback must never break the caller
            self.log.exception("callback %s: could not be started", action)

    def _fire(self, action: str, role: str) -> None:
        if action not in ACTIONS:
            self.log.error("callback %r is not one of %s: ignored", action, ", ".join(ACTIONS))
            return
        with self._lock:
            if self._closed:
                return
            pg, scope = self._config.postgresql, self._config.scope
        command = pg.callbacks.get(action)
        if not command:
            return  # Patroni leaves a running callback alone when this one is not configured
        run = _Run(action, [*command, action, role, scope], pg.callback_timeout, self.grace,
                   self.log)
        self._lanes["reload" if action == "on_reload" else "other"].submit(run)

    def pre_promote(self) -> tuple[bool, str]:
        """Run pre_promote and wait for it: (True, why) lets the promotion go on.

        As Patroni, without arguments. Any failure - an exit other than 0, a timeout, a
        program that cannot start - returns (False, one-line reason): do not promote.
        """
        try:
            return self._pre_promote()
        except Exception as e:  # the caller needs an answer, not a traceback
            self.log.exception("pre_promote: unexpected failure")
            return False, f"pre_promote failed: {e}"

    def _pre_promote(self) -> tuple[bool, str]:
        with self._pre_lock:
            with self._lock:
                if self._closed:
                    return False, f"pre_promote not run: {SHUTDOWN}"
                pg = self._config.postgresql
                if not pg.pre_promote:
                    return True, "no pre_promote script configured"
                run = self._pre_run = _Run("pre_promote", pg.pre_promote, pg.callback_timeout,
                                           self.grace, self.log)
            try:
                outcome = run.execute(self.popen_kwargs, self.env)
            finally:
                with self._lock:
                    self._pre_run = None
        ok, reason = _pre_promote_verdict(outcome, pg.callback_timeout)
        (self.log.info if ok else self.log.warning)("%s", reason)
        return ok, reason

    def report(self, run: _Run, outcome: Outcome) -> None:
        """Log how a background callback ended, in one line."""
        if outcome.error:
            self.log.error("callback %s: %s", run.label, outcome.error)
        elif outcome.timed_out:
            self.log.warning("callback %s did not finish within %g s "
                             "(postgresql.callback_timeout): killed", run.label, run.timeout)
        elif not outcome.started:
            self.log.warning("callback %s dropped: %s before it started", run.label,
                             run.cancel_cause)
        elif outcome.cancelled:
            self.log.warning("callback %s killed: %s while it was still running", run.label,
                             run.cancel_cause)
        elif outcome.returncode == 0:
            self.log.info("callback %s finished", run.label)
        else:
            self.log.warning("callback %s %s", run.label, _exit_text(outcome))

    def close(self) -> None:
        """Kill what still runs and stop the lanes (worker exit). Idempotent."""
        with self._lock:
            self._closed = True
            pre = self._pre_run
        if pre is not None:
            pre.cancel(SHUTDOWN)
        for lane in self._lanes.values():
            lane.close(timeout=self.grace + _REAP_WAIT + 1.0)


def _exit_text(outcome: Outcome) -> str:
    code = outcome.returncode
    if code is not None and code < 0:
        try:
            text = f"was killed by {signal.Signals(-code).name}"
        except ValueError:  # a real-time signal has no name
            text = f"was killed by signal {-code}"
    else:
        text = f"exited with {code}"
    return f"{text}: {outcome.last_line}" if outcome.last_line else text


def _pre_promote_verdict(outcome: Outcome, timeout: float) -> tuple[bool, str]:
    if outcome.error:
        return False, f"pre_promote {outcome.error}"
    if outcome.timed_out:
        return False, (f"pre_promote did not finish within {timeout:g} s "
                       "(postgresql.callback_timeout): killed")
    if outcome.cancelled:
        return False, f"pre_promote killed: {SHUTDOWN} while it was still running"
    if outcome.returncode == 0:
        return True, "pre_promote exited with 0"
    return False, f"pre_promote {_exit_text(outcome)}"
