"""Timing rules every process must agree on (one source, so actuators and the brain match)."""
from __future__ import annotations

from typing import Any

from pgwarden.core.config_model import Config, DynamicConfig


def safety_margin(cfg: Config, dynamic: DynamicConfig) -> float:
    """Patroni's watchdog.safety_margin; -1 means half the ttl.

    pgwarden also uses it for rule 1 and rule 2 of ARCHITECTURE.md: a primary stops being
    writable, and drops the VIP, at `lease_deadline - safety_margin`.
    """
    m = cfg.watchdog.safety_margin
    return dynamic.ttl / 2 if m == -1 else float(max(m, 0))


def watchdog_timeout(cfg: Config, dynamic: DynamicConfig) -> int:
    """W = ttl - safety_margin (Patroni), at least 1 s, so W <= T - margin (rule 3)."""
    return max(1, int(dynamic.ttl - safety_margin(cfg, dynamic)))


def renew_interval(ttl: float, loop_wait: float) -> float:
    """How often the lease worker renews its lease: on its own schedule, at least four times
    per ttl, so one slow renewal never costs the lock."""
    return max(0.2, min(ttl / 4, loop_wait))


def stale_after(loop_wait: float) -> float:
    """A worker section older than this is stale (the brain and the watchdog agree on it)."""
    return max(3.0, loop_wait + 2.0)


def demote_lead(margin: float) -> float:
    """How long before `lease_deadline - safety_margin` a primary that cannot renew starts
    demoting, so it stops cleanly before the watchdog (fed until then) would reset it."""
    return min(1.0, margin / 2)


def authority_deadline(lease: dict[str, Any]) -> float:
    """Until when this node may act as the leader, from the lease section: the etcd lease's
    deadline, or later while failsafe mode holds it up (every listed member accepted our
    ping, and none of them races for `ttl` after receiving it). 0.0 when unknown."""
    best = 0.0
    for key in ("lease_deadline", "failsafe_deadline"):
        v = lease.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v > best:
            best = float(v)
    return best
