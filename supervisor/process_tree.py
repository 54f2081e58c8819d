"""Forks the workers, restarts them by policy, and stops them.

Erlang-style restart intensity: more than `intensity` restarts of any workers within
`period` seconds means something is persistently wrong, and the node stops safely rather
than flapping. Each child asks the kernel to SIGKILL it when the supervisor dies
(PR_SET_PDEATHSIG), so no worker outlives its parent: in particular a watchdog feeder
never keeps feeding for a dead agent.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from pgwarden.core.clock import mono

PR_SET_PDEATHSIG = 1
log = logging.getLogger("pgwarden.supervisor")


class RestartIntensityExceeded(Exception):
    """Too many worker restarts in the window: the node must stop safely."""


@dataclass
class WorkerSlot:
    name: str
    target: Callable[[], int | None]  # runs in the child; its return value is the exit code
    death_signal: int = signal.SIGKILL  # what the kernel sends the child when we die
    pid: int = 0
    restarts: int = 0
    last_restart: float | None = None  # wall clock, for display
    started_mono: float = 0.0
    exit_status: int | None = None
    history: deque[float] = field(default_factory=deque)


def _set_pdeathsig(sig: int = signal.SIGKILL) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


class ProcessTree:
    def __init__(self, intensity: int = 5, period: float = 60.0) -> None:
        self.slots: dict[str, WorkerSlot] = {}
        self.intensity = intensity
        self.period = period
        self._restart_times: deque[float] = deque()
        self._parent = os.getpid()

    def add(self, name: str, target: Callable[[], int | None],
            death_signal: int = signal.SIGKILL) -> None:
        self.slots[name] = WorkerSlot(name, target, death_signal)

    def start_all(self) -> None:
        gc.freeze()  # keep the parent's objects out of the children's GC: pages stay shared
        for slot in self.slots.values():
            self._spawn(slot)

    def _spawn(self, slot: WorkerSlot) -> None:
        pid = os.fork()
        if pid == 0:  # child
            code = 70
            try:
                _set_pdeathsig(slot.death_signal)
                if os.getppid() != self._parent:  # the parent died before prctl took effect
                    os._exit(70)
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                rc = slot.target()
                code = 0 if rc is None else int(rc)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 - log anything, then die with a code
                logging.getLogger(f"pgwarden.{slot.name}").exception("worker crashed")
                code = 70
            finally:
                logging.shutdown()
                os._exit(code)
        slot.pid = pid
        slot.started_mono = mono()
        slot.exit_status = None

    def reap(self) -> list[WorkerSlot]:
        """Collect exited children; return their slots (pid set to 0)."""
        dead: list[WorkerSlot] = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            for slot in self.slots.values():
                if slot.pid == pid:
                    slot.pid = 0
                    slot.exit_status = os.waitstatus_to_exitcode(status)
                    dead.append(slot)
        return dead

    def restart(self, slot: WorkerSlot) -> None:
        now = mono()
        self._restart_times.append(now)
        while self._restart_times and now - self._restart_times[0] > self.period:
            self._restart_times.popleft()
        if len(self._restart_times) > self.intensity:
            raise RestartIntensityExceeded(
                f"more than {self.intensity} worker restarts within {self.period:.0f} s "
                f"(last: {slot.name}, exit status {slot.exit_status})")
        slot.restarts += 1
        slot.last_restart = time.time()
        self._spawn(slot)
        log.warning("restarted worker %s (pid %d, exit status of the previous one: %s, "
                    "restart #%d)", slot.name, slot.pid, slot.exit_status, slot.restarts)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        slot = self.slots[name]
        if slot.pid:
            try:
                os.kill(slot.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, names: list[str], timeout: float = 10.0) -> None:
        """SIGTERM the named workers, wait, SIGKILL what is left; reap them all."""
        targets = [self.slots[n] for n in names if self.slots[n].pid]
        for slot in targets:
            self.kill(slot.name, signal.SIGTERM)
        deadline = mono() + timeout
        while any(s.pid for s in targets) and mono() < deadline:
            self.reap()
            time.sleep(0.02)
        for slot in targets:
            if slot.pid:
                log.warning("worker %s did not stop within %.0f s: killing it", slot.name, timeout)
                self.kill(slot.name)
        while any(s.pid for s in targets):
            self.reap()
            time.sleep(0.01)

    def status(self) -> dict[str, dict[str, object]]:
        return {
            n: {"pid": s.pid, "restarts": s.restarts, "last_restart": s.last_restart,
                "alive": s.pid != 0}
            for n, s in self.slots.items()
        }
