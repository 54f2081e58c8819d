"""Rule 2 of ARCHITECTURE.md as pure functions: may this host hold the floating VIP now?

The network worker evaluates these on every wake-up. They take plain values (no shared
state, no clock) so every row can be tested, including the exact deadline boundary.
"""
from __future__ import annotations

from typing import Literal

VipAction = Literal["add", "remove", "keep"]


def may_hold_vip(intent_vip: bool, pg_running: bool, pg_role: str | None, now: float,
                 lease_deadline: float, safety_margin: float,
                 paused: bool, restarting_in_place: bool = False) -> tuple[bool, str]:
    """(allowed, one-sentence reason).

    Allowed only if the supervisor's intent wants the VIP here AND PostgreSQL is a running
    primary AND `now < lease_deadline - safety_margin` (strictly: at the boundary the lease
    may already be gone from etcd's point of view, so we must not answer on the VIP).

    `restarting_in_place`: the supervisor is restarting this host's crashed primary in place,
    under the lock (intent `recover`). The VIP stays: no other host can be primary while we
    hold the lock, and a client then gets an instant "connection refused" instead of a lost
    SYN and a 1 s retransmission, so writes resume as soon as PostgreSQL is back.

    When `paused` is true the answer is (False, "paused: ...") and it means neither add nor
    remove: the VIP is left where it is (see `vip_action`). The lead decides final pause
    semantics; this keeps Patroni's "pause = hands off" for now.
    """
    if paused:
        return False, "cluster paused: the VIP is left as it is (neither added nor removed)"
    if intent_vip is not True:
        return False, "the supervisor's intent does not place the VIP on this host"
    if restarting_in_place is not True:
        if pg_running is not True:
            return False, "PostgreSQL is not running"
        if pg_role != "primary":
            return False, f"PostgreSQL is not a primary (role {pg_role!r})"
    # `not (a < b)` rather than `a >= b`: a NaN anywhere must deny, never allow.
    if not now < lease_deadline - safety_margin:
        return False, "the lease is not confirmed beyond lease_deadline - safety_margin"
    if restarting_in_place is True:
        return True, "the primary is being restarted in place under a confirmed lease"
    return True, "running primary with a confirmed lease: the VIP belongs here"


def vip_action(allowed: bool, paused: bool, present: bool) -> VipAction:
    """What to do with the interface, given the rule's verdict and what is on it now."""
    if paused:
        return "keep"
    if allowed:
        return "keep" if present else "add"
    return "remove" if present else "keep"
