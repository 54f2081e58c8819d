"""Event wake-ups between the processes of one agent: one eventfd per process.

The supervisor creates them before it forks; a writer pokes the reader it wants to
wake after publishing. Everyone also wakes on a timeout as a safety net, so a lost
poke costs at most one timeout, never correctness.
"""
from __future__ import annotations

import os
import select

from pgwarden.core.shm import SECTIONS


class Wakeups:
    def __init__(self) -> None:
        self._fds = {n: os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for n in SECTIONS}

    def poke(self, name: str) -> None:
        try:
            os.eventfd_write(self._fds[name], 1)
        except BlockingIOError:
            pass  # counter saturated: the reader is already due to wake

    def poke_all(self, except_: str | None = None) -> None:
        for n in self._fds:
            if n != except_:
                self.poke(n)

    def fileno(self, name: str) -> int:
        return self._fds[name]

    def wait(self, name: str, timeout: float) -> bool:
        """Sleep until poked or `timeout` seconds pass. True if poked."""
        fd = self._fds[name]
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
        except InterruptedError:
            return False
        if ready:
            self.drain(name)
            return True
        return False

    def drain(self, name: str) -> None:
        try:
            os.eventfd_read(self._fds[name])
        except BlockingIOError:
            pass

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
