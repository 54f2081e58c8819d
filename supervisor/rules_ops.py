"""Conditions and actions of the operator-driven rows of the HA table: planned switchover,
manual failover, pause (maintenance mode) and a restart requested through the API.

Kept apart from rules.py (the automatic rows) so each file stays readable; the table itself,
with its order, lives in rules.py.
"""
from __future__ import annotations

from dataclasses import replace

from pgwarden.supervisor.decision_kit import (
    acquire_memory,
    gone_at,
    gone_memory,
    no_leader,
    pg_is_primary,
)
from pgwarden.supervisor.decision_kit import build as _d
from pgwarden.supervisor.election import eligibility_problem
from pgwarden.supervisor.snapshot import Decision, Snapshot, moved
from pgwarden.supervisor.switchover import (
    FailoverKey,
    any_fit_candidate,
    candidate_problem,
    failover_key,
)

# The leader's pre-shutdown CHECKPOINT makes the shutdown checkpoint (taken while nothing
# can write) nearly empty; if it takes longer than this, stop anyway.
CHECKPOINT_BUDGET = 10.0
# After releasing the key the old primary keeps the VIP at most this long, until the new
# primary runs (workers/network_inputs.handing_off).
VIP_HOLD = 2.0


def handover_timeout(s: Snapshot) -> float:
    """How long members other than the named candidate stay out of the race after the old
    leader released the key: long enough for a healthy candidate, short enough that a
    candidate dying mid-switchover costs no more than a normal failover."""
    return float(max(s.dynamic.ttl, 5))


# -- the failover key on the leader ----------------------------------------------------


def _due_key(s: Snapshot) -> FailoverKey | None:
    """The key when it asks me, the leader, to hand over now."""
    key = failover_key(s.cluster)
    if key is None or key.problem or key.leader not in (None, s.name) or key.candidate == s.name:
        return None
    if key.scheduled_at is not None and key.scheduled_at > s.wall:
        return None
    return key


def target_problem(s: Snapshot, key: FailoverKey) -> str | None:
    """Why the handover the key asks for cannot happen, or None."""
    assert s.cluster is not None
    wal, max_lag = s.pg.wal_position, s.dynamic.maximum_lag_on_failover
    if key.candidate:
        return candidate_problem(s.cluster, key.candidate, wal, max_lag)
    if any_fit_candidate(s.cluster, s.name, wal, max_lag) is None:
        return "no other member is a running replica fit to promote"
    return None


def key_to_clear(s: Snapshot) -> str | None:
    """As the leader: why the failover key must be removed, or None to leave it."""
    key = failover_key(s.cluster)
    if key is None:
        return None  # absent, or Patroni's cleared form `{}`
    if key.problem:
        return f"the failover key is invalid: {key.problem}"
    if key.candidate == s.name:
        return "the switchover to me is done" if key.leader != s.name else \
            "the failover key names me as both leader and candidate"
    if key.leader not in (None, s.name):
        return f"the failover key names {key.leader} as the leader, but I am the leader"
    due = _due_key(s)
    if due is not None and (why := target_problem(s, due)) is not None:
        return f"switchover refused: {why}"
    return None


def clear_ops(s: Snapshot) -> tuple[tuple[str, dict[str, object]], ...]:
    why = key_to_clear(s)
    if why is None or s.cluster is None:
        return ()
    return (("clear_failover", {"version": s.cluster.failover.version, "why": why}),)


def switchover_due(s: Snapshot) -> bool:
    key = _due_key(s)
    return key is not None and target_problem(s, key) is None


def act_handover(s: Snapshot) -> Decision:
    """Phase 1 (checkpoint): a CHECKPOINT while still serving, so the shutdown checkpoint
    has almost nothing to flush. Phase 2 (stop): a fast shutdown, which sends every WAL
    record to the connected replicas before it ends. The VIP stays during the shutdown and
    the hand-off after it (vip_hand_off), so clients get refusals at once instead of an
    address nobody answers, until the new primary's gratuitous ARP moves them."""
    key = _due_key(s)
    to = key.candidate if key and key.candidate else "the healthiest replica"
    m = s.memory
    since = m.handover_since if m.handover_since is not None else s.now
    phase, token = m.handover or "checkpoint", m.checkpoint_token
    if phase == "checkpoint":
        if m.handover is None:
            token += 1
        elif s.pg.checkpoint_done >= token or s.now - since >= CHECKPOINT_BUDGET:
            phase = "stop"
    memory = replace(moved(m, "handing_over", s.now), handover=phase, handover_since=since,
                     checkpoint_token=token)
    if phase == "stop" and memory.vip_hold_until is None:
        # from the end of the shutdown on (the hold never applies to a running primary);
        # act_handover_release shortens it to VIP_HOLD after the key is released
        memory = replace(memory, vip_hold_until=s.now + CHECKPOINT_BUDGET + 60.0)
    if phase == "checkpoint":
        return _d(s, "handover", "handing_over",
                  f"switchover to {to}: checkpointing before the shutdown",
                  pg_role="primary", lock_want=True, vip=True, watchdog="armed",
                  checkpoint_token=token, memory=memory)
    return _d(s, "handover", "handing_over",
              f"switchover to {to}: stopping PostgreSQL cleanly",
              pg_role="stopped", stop_mode="fast", lock_want=True, vip=True,
              watchdog="armed", memory=memory)


def act_handover_stopping(s: Snapshot) -> Decision:
    return _d(s, "handover", "handing_over",
              "switchover: waiting for PostgreSQL to stop before releasing the leader key",
              pg_role="stopped", stop_mode="fast", lock_want=True, vip=True, watchdog="armed")



def act_handover_release(s: Snapshot) -> Decision:
    lsn = s.pg.last_lsn
    if lsn is None:
        # no clean shutdown, so no final LSN to hand over: the named candidate gets no fast
        # path (it could be behind); drop the request and let the healthiest member win
        version = s.cluster.failover.version if s.cluster else 0
        return _d(s, "release_lock_for_switchover", "replica",
                  "switchover: PostgreSQL did not stop cleanly (no final LSN): releasing the "
                  "leader key for a normal election and dropping the switchover request",
                  pg_role="stopped", lock_want=False, vip=False,
                  ops=(("clear_failover", {"version": version, "why": "no final LSN"}),),
                  memory=replace(moved(s.memory, "replica", s.now), handover=None,
                                 handover_since=None, leader_gone_at=s.now,
                                 vip_hold_until=None))
    return _d(s, "release_lock_for_switchover", "replica",
              f"switchover: PostgreSQL stopped cleanly at LSN {lsn}; releasing the leader key",
              pg_role="stopped", lock_want=False, vip=False, release_lsn=lsn,
              memory=replace(moved(s.memory, "replica", s.now), handover=None,
                             handover_since=None, leader_gone_at=s.now,
                             vip_hold_until=s.now + VIP_HOLD))


def successor_runs(s: Snapshot) -> bool:
    """Another member holds the key and reports itself as a running primary."""
    c = s.cluster
    if c is None or c.leader in (None, s.name) or c.leader not in c.members:
        return False
    m = c.members[c.leader]
    return m.role == "primary" and m.state == "running"


def vip_hand_off(s: Snapshot, d: Decision) -> Decision:
    """Carry the hand-off window of act_handover_release through whatever the next
    decisions are, until it expires or the new primary runs."""
    until = d.memory.vip_hold_until
    if until is None:
        return d
    aborted = d.memory.state != "handing_over" and until - s.now > VIP_HOLD  # never released
    if s.now >= until or successor_runs(s) or s.shutdown or d.action == "lead" or aborted:
        return replace(d, memory=replace(d.memory, vip_hold_until=None))
    return replace(d, vip_hold_until=until)


def handover_stopped(s: Snapshot) -> bool:
    """Positive evidence that the old primary can take no more writes: the stop phase was
    reached and the postmaster is gone (not merely a missed status sample)."""
    return (s.memory.handover == "stop" and s.lease.holds_leader and not s.pg.running
            and not s.pg.process_alive and s.pg.operation is None)


# -- the failover key on the other members ----------------------------------------------


def _in_force(s: Snapshot, key: FailoverKey) -> bool:
    """A scheduled switchover says nothing about a leader lost before its time."""
    return key.problem is None and (key.scheduled_at is None or key.scheduled_at <= s.wall)


def named_candidate(s: Snapshot) -> bool:
    """No leader, and the key names me as the candidate of a switchover or failover, within
    the handover window (after it, the normal election decides)."""
    key = failover_key(s.cluster)
    gone = gone_at(s)
    return (no_leader(s) and key is not None and _in_force(s, key)
            and key.candidate == s.name and key.leader != s.name
            and s.now - gone < handover_timeout(s))


def caught_up(s: Snapshot) -> bool:
    """My WAL position reached the old leader's final LSN (its `status` optime), or the
    old leader did not wait to write one and a ttl passed."""
    optime = s.cluster.optime if s.cluster else None
    mine = s.pg.wal_position
    return mine is not None and (optime is None or mine >= optime)


def may_take_over_as_candidate(s: Snapshot) -> bool:
    return named_candidate(s) and eligibility_problem(s) is None and caught_up(s)


def waiting_for_candidate(s: Snapshot) -> bool:
    """Stay out of the race: the key names another candidate (or I am the leader who just
    handed over), and the candidate has not had its time yet."""
    key = failover_key(s.cluster)
    if not no_leader(s) or key is None or not _in_force(s, key):
        return False
    other = key.candidate not in (None, s.name) or (key.candidate is None and key.leader == s.name)
    if not other:
        return False
    gone = gone_at(s)
    return s.now - gone < handover_timeout(s)


def act_wait_catch_up(s: Snapshot) -> Decision:
    return _d(s, "wait_for_wal", "candidate",
              f"a switchover names me: waiting to receive the old leader's last WAL "
              f"(I am at {s.pg.wal_position}, it stopped at {s.cluster.optime if s.cluster else None})",
              pg_role="replica", leader=None, memory=gone_memory(s, "candidate"))


def act_wait_candidate(s: Snapshot) -> Decision:
    key = failover_key(s.cluster)
    who = key.candidate if key and key.candidate else "another member"
    return _d(s, "wait_for_switchover", s.memory.state if s.memory.state != "primary" else "replica",
              f"a switchover to {who} is in progress: not racing for the leader key",
              pg_role="none", memory=gone_memory(
                  s, s.memory.state if s.memory.state not in ("primary", "handing_over")
                  else "replica"))


# -- failsafe ---------------------------------------------------------------------------


def failsafe_hold(s: Snapshot) -> bool:
    """No leader key, but a primary pinged us in failsafe mode less than ttl ago."""
    return no_leader(s) and s.failsafe_leader not in (None, s.name) and not pg_is_primary(s)


def act_wait_failsafe(s: Snapshot) -> Decision:
    return _d(s, "wait_for_failsafe_leader", "replica" if s.memory.state != "init" else "init",
              f"{s.failsafe_leader} runs as the primary in failsafe mode and I accepted its "
              "ping: not racing for the leader key", pg_role="none")


# -- pause ------------------------------------------------------------------------------


def paused(s: Snapshot) -> bool:
    return s.dynamic.pause


def act_paused_lead(s: Snapshot) -> Decision:
    return _d(s, "lead_paused", "primary",
              f"paused: I am {s.name}, the leader with the lock; no automatic action",
              pg_role="none", lock_want=True, vip=True, watchdog="disarmed",
              ops=clear_ops(s),
              memory=moved(s.memory, "primary", s.now, pg_down_since=None, start_timeout=None))


def act_paused_release(s: Snapshot) -> Decision:
    return _d(s, "release_lock_paused", "replica",
              "paused: PostgreSQL is not running on the leader; releasing the leader key "
              "(no automatic restart or failover while paused)",
              pg_role="none", lock_want=False, vip=s.vip_held, watchdog="disarmed")


def act_paused_hold(s: Snapshot) -> Decision:
    what = ("runs as a replica" if s.pg.running else
            f"is busy ({s.pg.operation})" if s.pg.operation else "does not answer")
    return _d(s, "hold_lock_paused", s.memory.state,
              f"paused: PostgreSQL on the leader {what}; keeping the leader key, no "
              "automatic restart or promotion while paused",
              pg_role="none", lock_want=True, vip=s.vip_held, watchdog="disarmed")


def act_paused_take_lock(s: Snapshot) -> Decision:
    return _d(s, "acquire_lock_paused", "primary",
              "paused: PostgreSQL runs as a primary and the cluster has no leader; taking "
              "the leader key back (nothing is promoted or demoted)",
              pg_role="none", lock_want=True, vip=s.vip_held, watchdog="disarmed",
              memory=replace(acquire_memory(s), state="primary"))


def act_paused_idle(s: Snapshot) -> Decision:
    follows = s.pg.running and s.pg.role == "replica" and s.cluster is not None \
        and s.cluster.leader not in (None, s.name)
    keep = s.memory.state if s.memory.state in ("init", "replica", "primary") else "replica"
    return _d(s, "paused", keep,
              "paused: no automatic action" + (f" (following {s.cluster.leader})"
                                                if follows and s.cluster else ""),
              pg_role="replica" if follows else "none",
              leader=s.cluster.leader if follows and s.cluster else None,
              lock_want=s.lease.holds_leader and pg_is_primary(s), vip=s.vip_held,
              watchdog="disarmed")


def act_paused_no_dcs(s: Snapshot) -> Decision:
    return _d(s, "wait_for_dcs_paused", s.memory.state,
              "paused and the DCS is not accessible: no action (PostgreSQL is left as it is)",
              pg_role="none", lock_want=s.lease.holds_leader, vip=s.vip_held,
              watchdog="disarmed")


# -- a restart the operator asked for ---------------------------------------------------


def act_lead_restarting(s: Snapshot) -> Decision:
    # with a `timeout`, the restart's down period counts against it instead of
    # primary_start_timeout: past it the leader fences and fails over (Patroni's)
    memory = moved(s.memory, "primary", s.now, start_timeout=None) \
        if s.restart_timeout is None else moved(
        s.memory, "primary", s.now, start_timeout=s.restart_timeout,
        pg_down_since=s.memory.pg_down_since if s.memory.pg_down_since is not None else s.now)
    return _d(s, "lead_restarting", "primary",
              "restarting PostgreSQL on request; keeping the leader key"
              + (f" (timeout {s.restart_timeout:g} s)" if s.restart_timeout is not None else ""),
              memory=memory, pg_role="none", lock_want=True, vip=True,
              watchdog="disarmed" if paused(s) else "armed")
