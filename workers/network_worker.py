"""The network worker (foundation version): reports that it holds no VIP.

Adding and removing the floating VIP over netlink, under ARCHITECTURE.md rule 2, arrives
with the VIP issue; until then the worker never touches an interface.
"""
from __future__ import annotations

import signal
from typing import Any

from pgwarden.workers.context import WorkerContext


def run(ctx: WorkerContext) -> int:
    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True
        ctx.wakeups.poke("network")

    signal.signal(signal.SIGTERM, on_term)
    ctx.shm.claim("network")
    vip = ctx.config.vip
    ctx.publish({"vip": vip.address if vip else None, "interface": vip.interface if vip else None,
                 "held": False, "last_change": None,
                 "reason": "no vip configured" if vip is None else "VIP management not built yet"})
    while not stop:
        ctx.wakeups.wait("network", 1.0)
        ctx.shm.beat("network")
    return 0
