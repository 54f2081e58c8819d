"""The network worker's reading of the shared state: rule 2's inputs, or a doubt.

Pure over SectionViews (no clock, no I/O) so the doubt cases are testable. Any section that
is torn, never published or stale is a doubt, and a doubt means "drop the VIP": the lease
deadline bounds a dead lease worker on its own, but a frozen supervisor or postgres worker
would otherwise leave an old "vip: true" / "role: primary" standing.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgwarden.core import timing
from pgwarden.core.shm import SectionView
from pgwarden.netroute.rules import may_hold_vip

DEFAULT_MARGIN = 5.0  # Patroni's safety_margin default, used only to pace the loop


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    paused: bool  # known to be paused: leave the VIP as it is
    reason: str
    hold_until: float | None  # lease_deadline - safety_margin, when known
    safety_margin: float


def stale_after(supervisor: dict[str, Any]) -> float:
    """The supervisor's own threshold for a stale section (core/timing.stale_after)."""
    dyn = supervisor.get("dynamic")
    loop_wait = dyn.get("loop_wait") if isinstance(dyn, dict) else None
    if isinstance(loop_wait, (int, float)) and not isinstance(loop_wait, bool):
        return timing.stale_after(float(loop_wait))
    return timing.stale_after(0.0)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _doubt(view: SectionView, now_ns: int, max_age: float) -> str | None:
    if view.torn:
        return f"the {view.name} section is torn (its writer died mid-write)"
    if view.heartbeat_ns == 0 or not view.data:
        return f"the {view.name} worker has not published yet"
    if view.age(now_ns) > max_age:
        return f"the {view.name} section is stale (no heartbeat for over {max_age:.0f} s)"
    return None


def evaluate(sup: SectionView, lease: SectionView, pg: SectionView,
             now: float, now_ns: int) -> Verdict:
    margin_raw = sup.data.get("safety_margin")
    margin = float(margin_raw) if _number(margin_raw) else DEFAULT_MARGIN
    max_age = stale_after(sup.data)
    for view in (sup, lease, pg):
        why = _doubt(view, now_ns, max_age)
        if why is not None:
            return Verdict(False, False, why, None, margin)
    if not _number(margin_raw):
        return Verdict(False, False, "the supervisor published no safety_margin", None, margin)
    paused = sup.data.get("paused") is True
    intent = sup.data.get("intent")
    intent_vip = isinstance(intent, dict) and intent.get("vip") is True
    deadline = timing.authority_deadline(lease.data)  # failsafe mode may extend the lease
    pg_intent = intent.get("pg") if isinstance(intent, dict) else None
    under_lock = transition_under_lock(pg_intent, pg.data, intent_vip)
    allowed, reason = may_hold_vip(intent_vip, pg.data.get("running") is True,
                                   pg.data.get("role"), now, deadline, margin, paused,
                                   restarting_in_place=under_lock is not None)
    if allowed and lease.data.get("holds_leader") is not True:
        allowed, reason = False, "the lease worker does not confirm that we hold the leader key"
    if allowed and under_lock is not None:
        reason = under_lock
    hold = intent.get("vip_hold_until") if isinstance(intent, dict) else None
    if not allowed and not paused and handing_off(hold, now, pg.data):
        # keep, never add (the `paused` verdict means "leave as it is"): see handing_off
        return Verdict(False, True, "switchover hand-off: the VIP stays, answering with "
                       "refusals, until the new primary holds it", None, margin)
    return Verdict(allowed, paused, reason, deadline - margin, margin)


def transition_under_lock(pg_intent: Any, pg: dict[str, Any], intent_vip: bool) -> str | None:
    """The moments where this host's PostgreSQL is not (yet, or for an instant no longer) a
    running primary but the VIP may stay or come, because we hold the lock and nobody else can
    take writes: a client then gets an instant refusal or "read-only" instead of a SYN lost to
    a missing address and a 1 s retransmission. None: no such moment, rule 2 as written.
    The lease deadline and the lease worker's confirmation are still required (evaluate)."""
    if not isinstance(pg_intent, dict):
        return None
    op = pg.get("operation")
    op_name = op.get("name") if isinstance(op, dict) else None
    if pg_intent.get("recover") is True and pg_intent.get("role") == "primary" \
            and pg.get("state") in ("crashed", "starting", "running"):
        return "the primary is being restarted in place under a confirmed lease"
    if op_name == "restart" and pg.get("role") != "replica":
        return "the primary is being restarted on request under a confirmed lease"
    if pg_intent.get("role") == "primary" and intent_vip and pg.get("running") is True \
            and pg.get("role") == "replica":
        # vip-manager's rule, the VIP follows the key: writes land once promotion completes
        return "being promoted under a confirmed lease: the VIP follows the leader key"
    if op_name == "stop" and intent_vip:
        # a switchover's clean shutdown: clients get "shutting down" at once
        return "the primary is stopping cleanly for a switchover under a confirmed lease"
    return None


def handing_off(hold_until: Any, now: float, pg: dict[str, Any]) -> bool:
    """After a switchover released the key, the old primary keeps an address it already has
    for a moment (at most until `hold_until`, and the supervisor ends it as soon as the new
    primary runs): a client's connection attempt then gets "refused" or "read-only" at once
    and retries, instead of a SYN lost to an address nobody has (a 1 s TCP retransmission).
    Safe: PostgreSQL here is not a running primary, so nothing written through it can be
    acknowledged; the new primary's gratuitous ARP moves clients away."""
    if not _number(hold_until) or not now < float(hold_until):
        return False
    return not (pg.get("running") is True and pg.get("role") == "primary")
