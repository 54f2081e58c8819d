"""Signals for the long verbs (demo, bench): the lab they built must go whatever stops them.

Ctrl-C raises KeyboardInterrupt, which `finally` handles; SIGTERM and SIGHUP (a closed
terminal, a `timeout` wrapper) would kill the process before any `finally`, so they are
turned into KeyboardInterrupt too. During teardown all three are ignored: a second Ctrl-C
there would leave half a lab behind.
"""
from __future__ import annotations

import contextlib
import signal
from types import FrameType
from typing import Any, Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def _handlers(handler: Any) -> Iterator[None]:
    old: dict[int, Any] = {}
    try:
        for s in _SIGNALS:
            old[s] = signal.signal(s, handler)
    except ValueError:
        pass  # not the main thread: signals stay as they are
    try:
        yield
    finally:
        for signum, h in old.items():
            signal.signal(signum, h)


def interruptible() -> contextlib.AbstractContextManager[None]:
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt inside the block."""
    return _handlers(_raise)


def shielded() -> contextlib.AbstractContextManager[None]:
    """SIGINT, SIGTERM and SIGHUP are ignored inside the block (teardown)."""
    return _handlers(signal.SIG_IGN)
