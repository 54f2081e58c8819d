"""The HA decision core: one pure function from a Snapshot to a Decision."""
from __future__ import annotations

from dataclasses import replace

from pgwarden.supervisor.decision_kit import pg_is_primary
from pgwarden.supervisor.rules import TRANSITIONS, Transition, maybe_primary
from pgwarden.supervisor.rules_ops import vip_hand_off
from pgwarden.supervisor.snapshot import Decision, Snapshot


def matching_transition(s: Snapshot) -> Transition:
    for t in TRANSITIONS:
        if ("*" in t.from_states or s.memory.state in t.from_states) and t.when(s):
            return t
    raise LookupError(f"no transition from state {s.memory.state!r}")  # the table ends in a catch-all


def decide(s: Snapshot) -> Decision:
    """What to do now, and why, in one sentence. No I/O, no clock: everything is in `s`."""
    if s.memory.state == "stopped":
        return Decision(action="stay_stopped", reason="stopped", memory=s.memory,
                        pg_role="none", exit_code=0 if s.shutdown else None)
    return bookkeeping(s, vip_hand_off(s, vip_first(s, matching_transition(s).act(s))))


def bookkeeping(s: Snapshot, d: Decision) -> Decision:
    """Memory every row shares: whether the key was given up (see Memory.lock_given_up),
    and a primary's down-period clock, which means nothing outside the primary state."""
    m = d.memory
    given_up = s.memory.lock_given_up and s.lease.holds_leader
    if s.lease.holds_leader and not d.lock_want:
        given_up = True
    if m.acquire_token > s.memory.acquire_token:
        given_up = False
    changes: dict[str, object] = {}
    if given_up != m.lock_given_up:
        changes["lock_given_up"] = given_up
    if m.state != "primary" and (m.pg_down_since is not None or m.start_timeout is not None):
        changes.update(pg_down_since=None, start_timeout=None)
    # the intent is read as it is now, not queued: a worker blocked on a frozen server can
    # miss a one-cycle "stop", so the fence of an unanswering primary must hold until done
    fencing = (s.memory.fencing or (maybe_primary(s) and not pg_is_primary(s)
                                    and m.state not in ("primary", "handing_over"))) \
        and s.pg.process_alive and not s.pg.running
    if fencing != m.fencing:
        changes["fencing"] = fencing
    return replace(d, memory=replace(m, **changes)) if changes else d  # type: ignore[arg-type]


def vip_first(s: Snapshot, d: Decision) -> Decision:
    """Rule 2: a primary about to stop being one drops the VIP BEFORE PostgreSQL changes,
    so clients never reach a host that is demoting. PostgreSQL is left as it is (pg_role
    "none") until the network worker reports the VIP gone, a few milliseconds later."""
    demoting = s.pg.running and s.pg.role == "primary" and d.pg_role in ("replica", "stopped")
    if demoting and s.vip_held and not d.vip:
        return replace(d, pg_role="none", reason=f"{d.reason} (dropping the VIP first)")
    return d
