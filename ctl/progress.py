"""Live progress while an operation runs: a blocking REST call in the background, and a
printer that shows a status line only when it changes.

Patroni's POST /switchover and /restart answer only when done (up to tens of seconds);
running them in a daemon thread lets `--wait` show what the cluster does meanwhile.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from pgwarden.ctl.context import Ctx

T = TypeVar("T")


class BackgroundCall(Generic[T]):
    """`fn()` in a daemon thread (Ctrl-C must never wait for it); its result or exception."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._result: T | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        threading.Thread(target=self._run, name="pgwardenctl-call", daemon=True).start()

    def _run(self) -> None:
        try:
            self._result = self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            self._error = e
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def result(self) -> T:
        """The return value; re-raises the call's exception. Only once `done`."""
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


class ChangePrinter:
    """Prints `<time> <line>` for each line different from the previous one."""

    def __init__(self, ctx: Ctx, prefix: str = "") -> None:
        self.ctx = ctx
        self.prefix = prefix
        self.last: str | None = None

    def show(self, line: str) -> None:
        if line != self.last:
            self.ctx.say(f"{self.ctx.stamp()} {self.prefix}{line}")
            self.last = line
