"""The fencing rules (ARCHITECTURE.md rule 3) as pure functions: no clock, no I/O.

The invariant they keep: a watchdog pinged at time t with timeout W fires at t + W at the
latest, so feeding only when `t + W <= lease_deadline` means a host that stops feeding
(frozen, isolated, its agent dead) is reset before its lease can expire, hence before any
replica can take the leader key. Every time is CLOCK_MONOTONIC seconds.
"""
from __future__ import annotations

from pgwarden.core.timing import renew_interval, stale_after  # noqa: F401 (re-export)

import math

# Causes of a refusal, the first word(s) of the reason: the worker logs once per cause.
CAUSE_NO_LEASE = "no lease"
CAUSE_DEADLINE = "lease deadline too close"
CAUSE_SUPERVISOR = "supervisor heartbeat stale"
CAUSE_POSTGRES = "postgres heartbeat stale"


def may_feed(now: float, timeout: float, lease_deadline: float | None,
             supervisor_age: float, postgres_age: float, max_age: float) -> tuple[bool, str]:
    """May the watchdog be pinged now with this timeout? (ok, one-sentence reason)."""
    if not lease_deadline or lease_deadline <= 0:
        return False, f"{CAUSE_NO_LEASE}: there is no confirmed lease to cover a feed"
    if now + timeout > lease_deadline:
        return False, (f"{CAUSE_DEADLINE}: feeding now would let the watchdog run "
                       f"{now + timeout - lease_deadline:.3f} s past the lease deadline")
    if not supervisor_age < max_age:
        return False, (f"{CAUSE_SUPERVISOR}: the supervisor has not beaten for "
                       f"{supervisor_age:.1f} s (limit {max_age:.1f} s)")
    if not postgres_age < max_age:
        return False, (f"{CAUSE_POSTGRES}: the postgres worker has not beaten for "
                       f"{postgres_age:.1f} s (limit {max_age:.1f} s)")
    return True, (f"feeding: the watchdog fires by {now + timeout:.3f}, "
                  f"{lease_deadline - now - timeout:.3f} s before the lease deadline")


def cause_of(reason: str) -> str:
    return reason.split(":", 1)[0]


def should_arm(intent_watchdog: str | None, mode: str, paused: bool) -> bool:
    """Armed only when the decision core asks for it, the mode allows it and the cluster is
    not paused (Patroni disables its watchdog in maintenance mode)."""
    return intent_watchdog == "armed" and mode != "off" and not paused


def may_disarm(want_armed: bool, primary_running: bool | None,
               vip_held: bool | None) -> tuple[bool, str]:
    """Disarm only after PostgreSQL stopped being primary AND the VIP is gone (rule 3).

    None means "not known" (a stale or torn section), which counts as the unsafe answer.
    """
    if want_armed:
        return False, "the decision core wants the watchdog armed"
    if primary_running is not False:
        return False, ("PostgreSQL still runs as primary" if primary_running
                       else "PostgreSQL's state is unknown (stale postgres section)")
    if vip_held is not False:
        return False, ("the VIP is still held" if vip_held
                       else "the VIP's state is unknown (stale network section)")
    return True, "PostgreSQL is not a running primary and the VIP is not held"


def arming_timeout(now: float, timeout: int, lease_deadline: float | None) -> int | None:
    """The timeout to arm with now: `timeout`, or less when the lease ends sooner.

    Opening the device is itself a feed, so arming must also keep `now + t <= deadline`.
    Shortening the first period (restored at the next feed) avoids waiting up to one
    renewal interval before a promotion. None: too close to the deadline, wait for a renewal.
    """
    if not lease_deadline or lease_deadline <= now:
        return None
    whole = math.floor(lease_deadline - now)
    t = min(timeout, whole)
    return t if t >= 1 else None


FEED_SLACK = 1.0  # renewal RPC + poll delay we allow between a renewal and its feed


def timeout_problem(effective: int | None, ttl: float, renew_interval: float) -> str | None:
    """Why an effective device timeout cannot be used (None: usable).

    It must leave FEED_SLACK between a renewal and the lease deadline (else `may_feed` could
    never pass), and be longer than a renewal interval (else a healthy primary resets).
    """
    if effective is None:
        return "the device does not report its timeout, so feeding cannot be bounded"
    if effective + FEED_SLACK > ttl:
        return (f"the watchdog timeout {effective} s leaves less than {FEED_SLACK:g} s to feed "
                f"it before the lease deadline (ttl {ttl:g} s): raise watchdog.safety_margin")
    if effective <= renew_interval:
        return (f"the watchdog timeout {effective} s is not longer than the lease renewal "
                f"interval {renew_interval:g} s: it would reset a healthy primary")
    return None


def heartbeat_max_age(loop_wait: float) -> float:
    """Heartbeats older than this stop feeding: the decision core's own staleness limit
    (core/timing.stale_after), so the watchdog gives up when the brain would."""
    return stale_after(loop_wait)


def poll_interval(timeout: float) -> float:
    """How often an armed worker looks for a renewal (renewals only poke the supervisor)."""
    return max(0.02, min(0.2, timeout / 4))
