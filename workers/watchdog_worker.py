"""The watchdog worker (foundation version): reports the watchdog mode and usability.

The real device layer and the feeding rule (ARCHITECTURE.md rule 3) arrive with the
fencing issue. Until then this worker never opens a device: with mode `off` or
`automatic` the node runs without a watchdog (as Patroni's automatic mode does when no
device can be opened); with `required` it reports `failed`, so the decision core never
lets this node take the lock.
"""
from __future__ import annotations

import os
import signal
from typing import Any

from pgwarden.workers.context import WorkerContext


def run(ctx: WorkerContext) -> int:
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True
        ctx.wakeups.poke("watchdog")

    signal.signal(signal.SIGTERM, on_term)
    ctx.shm.claim("watchdog")
    wd = ctx.config.watchdog
    usable = False  # no device driver yet: see the module docstring
    reason = ("watchdog disabled by configuration" if wd.mode == "off" else
              f"no watchdog device support yet (device {wd.device} not opened)")
    ctx.publish({"mode": wd.mode, "device": wd.device, "armed": False, "usable": usable,
                 "timeout": None, "last_feed": None,
                 "failed": wd.mode == "required" and not usable, "reason": reason})
    while not stop:
        ctx.wakeups.wait("watchdog", 1.0)
        ctx.shm.beat("watchdog")
    return 0
