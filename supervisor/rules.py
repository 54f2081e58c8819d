"""The HA transitions as data: (from state, condition) -> (action, to state).

`TRANSITIONS` is scanned in order; the first row whose `from_states` contains the current
state (or "*") and whose condition holds is taken, and its `act` builds the Decision.
The same table renders the state diagram in docs/ha-transitions.md
(`python -m pgwarden.supervisor.render_transitions`), and every row has a unit test
(tests/unit/test_decide.py), so the documentation and the tests cannot drift from the code.

Conditions and actions are small pure functions of the Snapshot. Safety-critical rows come
first: shutting down, losing the DCS, losing the lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pgwarden.supervisor.decision_kit import acquire_memory, gone_memory, pg_is_primary
from pgwarden.supervisor.decision_kit import build as _d
from pgwarden.supervisor.election import better_peer, eligibility_problem
from pgwarden.supervisor.rules_ops import (
    CHECKPOINT_BUDGET,
    act_handover,
    act_handover_release,
    act_handover_stopping,
    act_lead_restarting,
    act_paused_hold,
    act_paused_idle,
    act_paused_lead,
    act_paused_no_dcs,
    act_paused_release,
    act_paused_take_lock,
    act_wait_candidate,
    act_wait_catch_up,
    act_wait_failsafe,
    clear_ops,
    failsafe_hold,
    handover_stopped,
    handover_timeout,
    may_take_over_as_candidate,
    named_candidate,
    paused,
    switchover_due,
    waiting_for_candidate,
)
from pgwarden.supervisor.snapshot import Decision, Snapshot, moved
from pgwarden.supervisor.switchover import failover_key

Cond = Callable[[Snapshot], bool]
Act = Callable[[Snapshot], Decision]


@dataclass(frozen=True)
class Transition:
    from_states: tuple[str, ...]  # ("*",) = any state
    condition: str  # a readable name of the condition, shown in the docs
    when: Cond
    action: str
    to_state: str
    act: Act


# -- facts ---------------------------------------------------------------------------


def dcs_ok(s: Snapshot) -> bool:
    return s.cluster is not None and s.lease.connected and s.lease.fresh


def margin_deadline(s: Snapshot) -> float:
    """The instant at which a primary that cannot renew starts demoting: rule 1 wants it
    unwritable by `lease_deadline - safety_margin`; `demote_lead` leaves time to stop cleanly
    before the watchdog (timeout ttl - safety_margin, fed after each renewal) resets the host."""
    return s.lease.lease_deadline - s.safety_margin - s.demote_lead


def i_hold_lock(s: Snapshot) -> bool:
    """The lease worker confirmed the key, in time, and the view shows no one else."""
    if not s.lease.holds_leader or s.now >= margin_deadline(s):
        return False
    return s.cluster is None or s.cluster.leader in (None, s.name)


def lock_usable(s: Snapshot) -> bool:
    """I hold the lock and may make PostgreSQL a primary with it: not after a decision
    gave it up (Memory.lock_given_up) until a new acquire was asked."""
    return i_hold_lock(s) and not s.memory.lock_given_up


def may_start_stopped_primary(s: Snapshot) -> bool:
    """A former primary stopped cleanly, whose key is usable, ready to start."""
    return lock_usable(s) and s.pg.stopped_as_primary and s.pg.fresh \
        and s.pg.operation is None and not s.watchdog_required_failed


def my_key_unconfirmed(s: Snapshot) -> bool:
    """The leader key names me, my lease worker does not hold it, PostgreSQL runs as a
    primary: my previous incarnation's key, to be taken back on the new lease."""
    return s.cluster is not None and s.cluster.leader == s.name \
        and not s.lease.holds_leader and pg_is_primary(s)


def other_leader(s: Snapshot) -> str | None:
    if s.cluster is None or s.cluster.leader in (None, s.name):
        return None
    return s.cluster.leader


def maybe_primary(s: Snapshot) -> bool:
    """A primary, or a server that was ours as the primary and stopped answering while its
    postmaster lives: it may still commit on open sessions, so every rule that fences a
    primary must fence it too."""
    return pg_is_primary(s) or (not s.pg.running and s.pg.process_alive
                                and (s.memory.state in ("primary", "handing_over")
                                     or s.memory.fencing))


def _demote_role(s: Snapshot) -> str:
    """A demoted primary restarts as a replica; one that does not answer is stopped (its
    role is unknown, so only a stop reaches it: immediate, then SIGKILL if frozen)."""
    return "replica" if pg_is_primary(s) else "stopped"


def data_empty(s: Snapshot) -> bool:
    return s.pg.data_dir_state == "empty"


def sysid_mismatch(s: Snapshot) -> bool:
    init = s.cluster.initialize if s.cluster else None
    return bool(init and s.pg.sysid and init != s.pg.sysid)


def leader_member_running(s: Snapshot) -> bool:
    leader = other_leader(s)
    if leader is None or s.cluster is None:
        return False
    m = s.cluster.members.get(leader)
    return m is not None and m.state == "running" and m.conn_url is not None


def op_status(s: Snapshot, kind: str) -> str | None:
    op = s.ops.get(kind)
    return op.status if op else None


def won_initialize(s: Snapshot) -> bool:
    op = s.ops.get("initialize_race")
    return op is not None and op.status == "ok" and op.result is True


# -- decision builders ---------------------------------------------------------------


def _keep_lock_ops(s: Snapshot) -> tuple[tuple[str, dict[str, object]], ...]:
    """Writes a fresh leader owes the cluster: the sysid and the bootstrap config."""
    ops: list[tuple[str, dict[str, object]]] = []
    c = s.cluster
    if c is None:
        return ()
    if s.pg.sysid and (c.initialize in (None, "")):
        ops.append(("initialize_sysid", {"sysid": s.pg.sysid}))
    if c.config.version == 0:
        ops.append(("write_config", {}))
    return tuple(ops)


# shutting down ------------------------------------------------------------------------


def act_shutdown_stop_pg(s: Snapshot) -> Decision:
    return _d(s, "stop_postgres", "stopping",
              "shutting down: stopping PostgreSQL before releasing the leader key",
              pg_role="stopped", stop_mode="fast", lock_want=s.lease.holds_leader,
              vip=False, watchdog="armed" if s.lease.holds_leader else "disarmed")


def act_shutdown_release(s: Snapshot) -> Decision:
    return _d(s, "release_lock", "stopping",
              "shutting down: PostgreSQL is stopped, releasing the leader key",
              pg_role="stopped", lock_want=False)


def act_shutdown_done(s: Snapshot) -> Decision:
    return _d(s, "exit", "stopped", "shut down cleanly", pg_role="stopped", exit_code=0)


# no DCS ------------------------------------------------------------------------------


def act_wait_lease_worker(s: Snapshot) -> Decision:
    return _d(s, "wait_for_lease_worker", "init",
              "starting: waiting for the lease worker's first DCS round before deciding "
              "anything (a running PostgreSQL is left as it is)", pg_role="none")


def act_reclaim_own_key(s: Snapshot) -> Decision:
    return _d(s, "reclaim_leader_key", "candidate",
              f"the leader key still names me ({s.name}) and PostgreSQL runs as primary: "
              "taking the key back on my new lease (adopting the running primary)",
              pg_role="primary", lock_want=True, watchdog="armed", **_acquire(s))


def act_dcs_lost_keep_primary(s: Snapshot) -> Decision:
    left = margin_deadline(s) - s.now
    return _d(s, "keep_primary_without_dcs", "primary",
              f"DCS is not accessible; keeping the primary for {left:.1f} s more, until the "
              "lease deadline minus the safety margin",
              pg_role="primary", lock_want=True, vip=True, watchdog="armed")


def act_dcs_lost_demote(s: Snapshot) -> Decision:
    return _d(s, "demote_offline", "replica",
              "demoting: the leader key could not be renewed before the lease deadline "
              "minus the safety margin",
              pg_role=_demote_role(s), leader=None, stop_mode="immediate", lock_want=False,
              vip=False, watchdog="armed" if not pg_is_primary(s) else "disarmed")


def act_dcs_lost_wait(s: Snapshot) -> Decision:
    keep = s.memory.state if s.memory.state not in ("primary", "candidate") else "replica"
    return _d(s, "wait_for_dcs", keep,
              "DCS is not accessible; no action (a replica keeps replicating)",
              pg_role="none" if not pg_is_primary(s) else "replica", leader=s.pg.following)


# foreign data ------------------------------------------------------------------------


def act_sysid_mismatch(s: Snapshot) -> Decision:
    init = s.cluster.initialize if s.cluster else None
    return _d(s, "refuse_foreign_data", "stopped",
              f"the data directory belongs to another cluster (system identifier {s.pg.sysid}, "
              f"the cluster's is {init}): move it away to rebuild this member, or fix `scope`",
              pg_role="none", exit_code=1)


# holding the lock --------------------------------------------------------------------


def act_bootstrap_initdb(s: Snapshot) -> Decision:
    return _d(s, "bootstrap", "bootstrapping",
              f"bootstrapping a new cluster: I am {s.name}, I won the initialize race",
              pg_role="primary", bootstrap="initdb", lock_want=True, watchdog="armed")


def act_bootstrap_failed(s: Snapshot) -> Decision:
    return _d(s, "cancel_bootstrap", "stopped",
              f"bootstrap failed ({s.pg.last_error or s.pg.state}); releasing the leader key "
              "and removing the initialize key so another member can try",
              pg_role="stopped", lock_want=False, ops=(("cancel_initialize", {}),),
              exit_code=1, memory=moved(s.memory, "stopped", s.now, bootstrap_failed=True))


def act_release_without_data(s: Snapshot) -> Decision:
    return _d(s, "release_lock_no_data", "init",
              "I hold the leader key but have no data directory: releasing it",
              pg_role="stopped", lock_want=False)


def act_restart_crashed_primary(s: Snapshot) -> Decision:
    down = s.memory.pg_down_since if s.memory.pg_down_since is not None else s.now
    return _d(s, "restart_primary", "primary",
              f"PostgreSQL is not running on the leader ({s.now - down:.1f} s); starting it "
              "in place ({1} {0:g} s)".format(*start_limit(s)),
              pg_role="primary", recover=True, lock_want=True, watchdog="armed", vip=True,
              memory=moved(s.memory, "primary", s.now, pg_down_since=down))


def act_fence_unresponsive(s: Snapshot) -> Decision:
    return _d(s, "fence_postgres", "primary",
              f"PostgreSQL has not answered within {start_limit(s)[1]} but its postmaster "
              "still exists: stopping it (killing it if frozen) before releasing the leader key",
              pg_role="stopped", stop_mode="immediate", lock_want=True, vip=False,
              watchdog="armed")


def act_primary_start_timeout(s: Snapshot) -> Decision:
    return _d(s, "release_lock_for_failover", "replica",
              f"PostgreSQL did not come back within {start_limit(s)[1]}; releasing the "
              "leader key for a failover",
              pg_role="stopped", lock_want=False, vip=False,
              memory=moved(s.memory, "replica", s.now))


def act_release_pg_down(s: Snapshot) -> Decision:
    return _d(s, "release_lock_pg_down", "replica",
              "I hold the leader key but PostgreSQL is not running and I am not the running "
              "primary: releasing it for a healthy member",
              pg_role="none", lock_want=False, vip=False)


def act_release_pre_promote(s: Snapshot) -> Decision:
    return _d(s, "release_lock_pre_promote", "replica",
              "the pre_promote script refused the promotion: releasing the leader key and "
              "staying out of the race for ttl",
              pg_role="replica", leader=None, lock_want=False, vip=False)


def act_arm_watchdog(s: Snapshot) -> Decision:
    return _d(s, "arm_watchdog", "candidate",
              "I hold the leader key: arming the watchdog before promotion",
              pg_role="replica", leader=None, lock_want=True, watchdog="armed")


def act_arm_watchdog_stopped(s: Snapshot) -> Decision:
    return _d(s, "arm_watchdog", "candidate",
              "I hold the leader key: arming the watchdog before starting my cleanly stopped "
              "former primary", pg_role="none", lock_want=True, watchdog="armed")


def act_start_stopped_primary(s: Snapshot) -> Decision:
    # its WAL ends at its shutdown checkpoint, which won the election: it needs no promotion
    # (same timeline); from here the crashed-primary rows and primary_start_timeout apply
    return _d(s, "start_primary", "primary",
              f"I hold the leader key and my PostgreSQL was a primary stopped cleanly at LSN "
              f"{s.pg.last_lsn}: starting it as the primary",
              pg_role="primary", lock_want=True, watchdog="armed", vip=True,
              ops=_keep_lock_ops(s) + clear_ops(s),
              memory=moved(s.memory, "primary", s.now, pg_down_since=s.now, start_timeout=None))


def act_no_watchdog(s: Snapshot) -> Decision:
    primary = pg_is_primary(s)
    return _d(s, "release_lock_no_watchdog", "replica",
              "the watchdog is required but not usable: "
              + ("demoting and releasing the leader key" if primary
                 else "not promoting, releasing the leader key"),
              pg_role="replica", leader=None, stop_mode="immediate", lock_want=False, vip=False)


def act_promote(s: Snapshot) -> Decision:
    return _d(s, "promote", "primary",
              f"promoting: I am {s.name} and I hold the leader key",
              pg_role="primary", lock_want=True, watchdog="armed", vip=True,
              ops=_keep_lock_ops(s) + clear_ops(s))


def act_lead(s: Snapshot) -> Decision:
    return _d(s, "lead", "primary", f"no action: I am {s.name}, the leader with the lock",
              pg_role="primary", lock_want=True, vip=True, watchdog="armed",
              ops=_keep_lock_ops(s) + clear_ops(s),
              memory=moved(s.memory, "primary", s.now, pg_down_since=None, start_timeout=None,
                           leader_gone_at=None,
                           handover=None, handover_since=None))


def act_lock_lost_demote(s: Snapshot) -> Decision:
    leader = other_leader(s)
    who = f"{leader} holds the leader key" if leader else "my leader key is gone"
    return _d(s, "demote_lock_lost", "replica",
              f"demoting: {who}; stopping writes at once",
              pg_role=_demote_role(s), leader=leader, stop_mode="immediate", lock_want=False,
              vip=False, watchdog="armed" if not pg_is_primary(s) else "disarmed")


# someone else leads ----------------------------------------------------------------


def act_clone(s: Snapshot) -> Decision:
    leader = other_leader(s)
    return _d(s, "clone", "cloning", f"creating a replica from the leader {leader}",
              pg_role="replica", leader=leader, bootstrap="basebackup")


def act_wait_leader_running(s: Snapshot) -> Decision:
    return _d(s, "wait_for_leader", "init",
              f"waiting for the leader {other_leader(s)} to be running before cloning it")


def act_follow(s: Snapshot) -> Decision:
    leader = other_leader(s)
    return _d(s, "follow", "replica",
              f"no action: I am {s.name}, a secondary, and following a leader ({leader})",
              pg_role="replica", leader=leader,
              memory=moved(s.memory, "replica", s.now, leader_gone_at=None))


# nobody leads --------------------------------------------------------------------------


def act_race_initialize(s: Snapshot) -> Decision:
    sysid = s.pg.sysid if s.pg.data_dir_state == "initialized" else ""
    what = "adopting my data directory" if sysid else "racing to bootstrap the cluster"
    return _d(s, "race_initialize", "init", f"the cluster is not initialized: {what}",
              ops=(("initialize_race", {"sysid": sysid or ""}),))


def act_take_lock_to_bootstrap(s: Snapshot) -> Decision:
    return _d(s, "acquire_lock_bootstrap", "bootstrapping",
              "I won the initialize race: taking the leader key before initdb",
              lock_want=True, **_acquire(s))


def act_lost_initialize(s: Snapshot) -> Decision:
    return _d(s, "wait_for_bootstrap", "init",
              "another member is bootstrapping the cluster; waiting for its leader",
              clear_ops=("initialize_race",))


def act_wait_bootstrap(s: Snapshot) -> Decision:
    return _d(s, "wait_for_bootstrap", "init",
              "waiting for the cluster to be bootstrapped by another member")


def act_wait_leader_to_clone(s: Snapshot) -> Decision:
    return _d(s, "wait_for_leader", "init",
              "the cluster has no leader and I have no data: waiting for a leader to clone")


def act_not_eligible(s: Snapshot) -> Decision:
    return _d(s, "stay_replica_ineligible", "candidate",
              f"the cluster has no leader; not racing: {eligibility_problem(s)}",
              pg_role="replica", leader=None, **_gone(s))


def act_not_healthiest(s: Snapshot) -> Decision:
    return _d(s, "stay_replica_not_healthiest", "candidate",
              f"the cluster has no leader; not racing: {better_peer(s)}",
              pg_role="replica", leader=None, **_gone(s))


def act_settle(s: Snapshot) -> Decision:
    return _d(s, "wait_for_peers", "candidate",
              "the cluster has no leader; giving peers a moment to report their WAL position",
              pg_role="replica" if not pg_is_primary(s) else "primary", leader=None,
              lock_want=pg_is_primary(s), **_gone(s))


def act_acquire_switchover(s: Snapshot) -> Decision:
    return _d(s, "acquire_lock_switchover", "candidate",
              "a switchover names me and I have the old leader's last WAL: taking the leader key",
              pg_role="replica", leader=None, lock_want=True, **_acquire(s))


def act_acquire(s: Snapshot) -> Decision:
    return _d(s, "acquire_lock", "candidate",
              "the cluster has no leader and I am the healthiest member: taking the leader key",
              pg_role="primary" if pg_is_primary(s) else "replica", leader=None,
              lock_want=True, **_acquire(s))


def _gone(s: Snapshot) -> dict[str, object]:
    return {"memory": gone_memory(s, "candidate")}


def _acquire(s: Snapshot) -> dict[str, object]:
    return {"memory": acquire_memory(s)}


def next_deadline(s: Snapshot) -> float | None:
    """The next instant at which a time-based condition of the table flips: the race settle
    time and the demotion deadline. The supervisor wakes then, not a loop tick later."""
    times = [margin_deadline(s)] if s.lease.holds_leader else []
    if s.memory.leader_gone_at is not None:
        times.append(s.memory.leader_gone_at + s.race_settle)
        times.append(s.memory.leader_gone_at + handover_timeout(s))
        times.append(s.memory.leader_gone_at + handover_timeout(s) / 2)
    if s.memory.handover_since is not None:
        times.append(s.memory.handover_since + CHECKPOINT_BUDGET)
    key = failover_key(s.cluster)
    if s.lease.holds_leader and key is not None and key.scheduled_at is not None:
        times.append(s.now + (key.scheduled_at - s.wall))
    future = [t for t in times if t > s.now]
    return min(future) if future else None


def settled(s: Snapshot) -> bool:
    gone = s.memory.leader_gone_at
    if s.cluster is not None and not [n for n in s.cluster.members if n != s.name]:
        return True  # alone: nobody to wait for
    return gone is not None and s.now - gone >= s.race_settle


def pg_down_too_long(s: Snapshot) -> bool:
    """primary_start_timeout: 0 means fail over at once, without restarting in place. A
    restart asked with `timeout` puts it in its place for that down period (Patroni's)."""
    down = s.memory.pg_down_since if s.memory.pg_down_since is not None else s.now
    return s.now - down >= start_limit(s)[0]


def start_limit(s: Snapshot) -> tuple[float, str]:
    """How long a leader's PostgreSQL may stay down, and the setting that says so."""
    if s.memory.start_timeout is not None:
        return s.memory.start_timeout, "the restart's timeout"
    return s.dynamic.primary_start_timeout, "primary_start_timeout"


def bootstrap_failed(s: Snapshot) -> bool:
    return s.pg.state in ("initdb failed", "bootstrap failed")


# -- the table -------------------------------------------------------------------------

ANY = ("*",)
ALIVE = ("init", "bootstrapping", "cloning", "replica", "candidate", "primary", "handing_over")

TRANSITIONS: tuple[Transition, ...] = (
    # shutting down: PostgreSQL first, the key after, so two primaries never overlap
    # "running" needs a fresh report of a live postmaster gone: a restarted postgres worker
    # that has not sampled yet reports running false with the postmaster still there
    Transition(ANY, "shutdown and PostgreSQL running",
               lambda s: s.shutdown and (s.pg.running or s.pg.process_alive
                                         or s.pg.operation is not None or not s.pg.fresh),
               "stop_postgres", "stopping", act_shutdown_stop_pg),
    Transition(ANY, "shutdown and still holding the leader key",
               lambda s: s.shutdown and s.lease.holds_leader and dcs_ok(s)
               and s.pg.operation is None and not s.pg.process_alive,
               "release_lock", "stopping", act_shutdown_release),
    Transition(ANY, "shutdown and PostgreSQL stopped", lambda s: s.shutdown,
               "exit", "stopped", act_shutdown_done),
    # a restarted agent: nothing is known until the lease worker has talked to the DCS once
    Transition(("init",), "starting, the lease worker has not finished its first DCS round",
               lambda s: not s.lease.first_round_done,
               "wait_for_lease_worker", "init", act_wait_lease_worker),
    # the DCS is out of reach
    Transition(ALIVE, "paused, no DCS view", lambda s: paused(s) and not dcs_ok(s),
               "wait_for_dcs_paused", "(unchanged)", act_paused_no_dcs),
    Transition(ALIVE, "no DCS view, primary, lease deadline not yet reached",
               lambda s: not dcs_ok(s) and maybe_primary(s) and s.lease.holds_leader
               and s.now < margin_deadline(s),
               "keep_primary_without_dcs", "primary", act_dcs_lost_keep_primary),
    Transition(ALIVE, "no DCS view and PostgreSQL is a primary",
               lambda s: not dcs_ok(s) and maybe_primary(s),
               "demote_offline", "replica", act_dcs_lost_demote),
    Transition(ALIVE, "no DCS view", lambda s: not dcs_ok(s),
               "wait_for_dcs", "(unchanged)", act_dcs_lost_wait),
    # data that is not this cluster's
    Transition(ALIVE, "data directory of another cluster", sysid_mismatch,
               "refuse_foreign_data", "stopped", act_sysid_mismatch),
    # I hold the lock
    Transition(("bootstrapping",), "holding the lock, bootstrap failed",
               lambda s: i_hold_lock(s) and bootstrap_failed(s),
               "cancel_bootstrap", "stopped", act_bootstrap_failed),
    Transition(("bootstrapping",), "holding the lock, bootstrapping",
               lambda s: i_hold_lock(s) and not pg_is_primary(s),
               "bootstrap", "bootstrapping", act_bootstrap_initdb),
    # a planned switchover (or manual failover) away from me
    Transition(("handing_over",), "handing over, PostgreSQL stopped", handover_stopped,
               "release_lock_for_switchover", "replica", act_handover_release),
    Transition(("primary", "handing_over"), "holding the lock as primary, a switchover is due",
               lambda s: i_hold_lock(s) and pg_is_primary(s) and switchover_due(s),
               "handover", "handing_over", act_handover),
    Transition(("handing_over",), "handing over, PostgreSQL stopping",
               lambda s: i_hold_lock(s) and s.memory.handover == "stop",
               "handover", "handing_over", act_handover_stopping),
    # a restart the operator asked for, and maintenance mode
    Transition(("primary",), "holding the lock, PostgreSQL restarting on request",
               lambda s: i_hold_lock(s) and s.pg.operation == "restart",
               "lead_restarting", "primary", act_lead_restarting),
    Transition(ALIVE, "paused, holding the lock as primary",
               lambda s: paused(s) and i_hold_lock(s) and pg_is_primary(s),
               "lead_paused", "primary", act_paused_lead),
    Transition(ALIVE, "paused, holding the lock, PostgreSQL not running",
               lambda s: paused(s) and s.lease.holds_leader and not s.pg.running
               and s.pg.operation is None and not s.pg.process_alive,
               "release_lock_paused", "replica", act_paused_release),
    # without this row a paused leader whose postmaster died with its children still
    # exiting (or that runs as a replica) fell through to the crash restart or promotion
    Transition(ALIVE, "paused, holding the lock, PostgreSQL not a running primary",
               lambda s: paused(s) and s.lease.holds_leader and not pg_is_primary(s)
               and s.memory.state != "candidate",  # a paused switchover's candidate promotes
               "hold_lock_paused", "(unchanged)", act_paused_hold),
    Transition(ALIVE, "paused, running as primary, no leader",
               lambda s: paused(s) and pg_is_primary(s) and not s.lease.holds_leader
               and s.cluster is not None and s.cluster.leader is None,
               "acquire_lock_paused", "primary", act_paused_take_lock),
    Transition(ALIVE, "paused",
               lambda s: paused(s) and not i_hold_lock(s) and not named_candidate(s)
               and not (data_empty(s) and other_leader(s) is not None),
               "paused", "(unchanged)", act_paused_idle),
    Transition(ALIVE, "holding the lock without data",
               lambda s: i_hold_lock(s) and data_empty(s) and s.pg.operation is None,
               "release_lock_no_data", "init", act_release_without_data),
    Transition(("primary",), "holding the lock, PostgreSQL unresponsive past "
               "primary_start_timeout, its postmaster still there",
               lambda s: i_hold_lock(s) and not s.pg.running and pg_down_too_long(s)
               and (s.pg.process_alive or s.pg.operation is not None),
               "fence_postgres", "primary", act_fence_unresponsive),
    Transition(("primary",), "holding the lock, PostgreSQL down past primary_start_timeout",
               lambda s: i_hold_lock(s) and not s.pg.running and pg_down_too_long(s),
               "release_lock_for_failover", "replica", act_primary_start_timeout),
    Transition(("primary",), "holding the lock, PostgreSQL down",
               lambda s: i_hold_lock(s) and not s.pg.running,
               "restart_primary", "primary", act_restart_crashed_primary),
    # only after winning an election ("candidate"): the old primary of a switchover still
    # holds the key for a moment after deciding to release it (found by the switchover test)
    Transition(("candidate",), "holding the lock, a former primary stopped cleanly, watchdog not "
               "armed yet",
               lambda s: may_start_stopped_primary(s) and not s.watchdog_ready,
               "arm_watchdog", "candidate", act_arm_watchdog_stopped),
    Transition(("candidate",), "holding the lock, a former primary stopped cleanly",
               may_start_stopped_primary,
               "start_primary", "primary", act_start_stopped_primary),
    Transition(ALIVE, "holding the lock, PostgreSQL down, not the running primary",
               lambda s: i_hold_lock(s) and not s.pg.running and s.pg.operation is None
               and not s.pg.process_alive,
               "release_lock_pg_down", "replica", act_release_pg_down),
    Transition(ALIVE, "holding the lock, the required watchdog is not usable",
               lambda s: i_hold_lock(s) and s.watchdog_required_failed,
               "release_lock_no_watchdog", "replica", act_no_watchdog),
    Transition(ALIVE, "holding the lock, pre_promote refused the promotion",
               lambda s: i_hold_lock(s) and not pg_is_primary(s)
               and s.pg.promote_refused_at is not None
               and s.now - s.pg.promote_refused_at < s.dynamic.ttl,
               "release_lock_pre_promote", "replica", act_release_pre_promote),
    Transition(ALIVE, "holding the lock, replica, watchdog not armed yet",
               lambda s: lock_usable(s) and not pg_is_primary(s) and not s.watchdog_ready,
               "arm_watchdog", "candidate", act_arm_watchdog),
    Transition(ALIVE, "holding the lock, not yet primary",
               lambda s: lock_usable(s) and not pg_is_primary(s),
               "promote", "primary", act_promote),
    Transition(ALIVE, "holding the lock as primary",
               lambda s: i_hold_lock(s) and (pg_is_primary(s) or not s.memory.lock_given_up),
               "lead", "primary", act_lead),
    # my previous incarnation's key (agent restarted, lease worker started afresh)
    Transition(("init",), "the leader key names me but is not confirmed, PostgreSQL a running "
               "primary",
               my_key_unconfirmed, "reclaim_leader_key", "candidate", act_reclaim_own_key),
    # ... and until the lease worker answers: before this row the next cycle, a few ms later,
    # fell through to the election, which could demote the adopted primary (lab test)
    Transition(("candidate",), "taking my own leader key back, the lease worker has not "
               "answered yet",
               lambda s: my_key_unconfirmed(s)
               and s.memory.acquire_token > s.lease.acquire_token_done,
               "reclaim_leader_key", "candidate", act_reclaim_own_key),
    # I am primary without the lock: someone else has it, or mine is gone
    Transition(ALIVE, "primary while another member holds the lock",
               lambda s: maybe_primary(s) and other_leader(s) is not None,
               "demote_lock_lost", "replica", act_lock_lost_demote),
    # any state: a demotion in progress (VIP first) must not be undone a cycle later
    Transition(ALIVE, "primary whose lock expired or was lost",
               lambda s: maybe_primary(s) and not i_hold_lock(s) and s.lease.holds_leader,
               "demote_lock_lost", "replica", act_lock_lost_demote),
    # another member leads
    Transition(ALIVE, "another leader, no data, leader running",
               lambda s: other_leader(s) is not None and data_empty(s)
               and leader_member_running(s) and s.pg.operation is None,
               "clone", "cloning", act_clone),
    Transition(ALIVE, "another leader, no data, leader not running yet",
               lambda s: other_leader(s) is not None and data_empty(s) and s.pg.operation is None,
               "wait_for_leader", "init", act_wait_leader_running),
    Transition(("cloning",), "cloning in progress", lambda s: s.pg.operation is not None
               or data_empty(s), "clone", "cloning", act_clone),
    Transition(ALIVE, "another member holds the lock", lambda s: other_leader(s) is not None,
               "follow", "replica", act_follow),
    # nobody leads
    Transition(("init", "bootstrapping"), "uninitialized, I won the initialize race",
               lambda s: won_initialize(s) and data_empty(s),
               "acquire_lock_bootstrap", "bootstrapping", act_take_lock_to_bootstrap),
    Transition(("init",), "uninitialized, initialize race lost",
               lambda s: op_status(s, "initialize_race") == "ok" and not won_initialize(s),
               "wait_for_bootstrap", "init", act_lost_initialize),
    Transition(("init",), "uninitialized cluster",
               lambda s: s.cluster is not None and s.cluster.initialize is None
               and op_status(s, "initialize_race") != "pending" and not won_initialize(s),
               "race_initialize", "init", act_race_initialize),
    Transition(ALIVE, "bootstrap in progress elsewhere",
               lambda s: s.cluster is not None and s.cluster.initialize in (None, ""),
               "wait_for_bootstrap", "init", act_wait_bootstrap),
    Transition(ALIVE, "no leader and no data", data_empty,
               "wait_for_leader", "init", act_wait_leader_to_clone),
    Transition(ALIVE, "no leader, a failsafe primary pinged me less than ttl ago",
               failsafe_hold, "wait_for_failsafe_leader", "replica", act_wait_failsafe),
    Transition(ALIVE, "no leader, a switchover names me, I have its last WAL",
               may_take_over_as_candidate,
               "acquire_lock_switchover", "candidate", act_acquire_switchover),
    Transition(ALIVE, "no leader, a switchover names me, WAL still arriving",
               lambda s: named_candidate(s) and eligibility_problem(s) is None,
               "wait_for_wal", "candidate", act_wait_catch_up),
    Transition(ALIVE, "no leader, a switchover names another member",
               waiting_for_candidate,
               "wait_for_switchover", "(unchanged)", act_wait_candidate),
    Transition(ALIVE, "no leader, I am not eligible",
               lambda s: eligibility_problem(s) is not None,
               "stay_replica_ineligible", "candidate", act_not_eligible),
    Transition(ALIVE, "no leader, a peer is healthier", lambda s: better_peer(s) is not None,
               "stay_replica_not_healthiest", "candidate", act_not_healthiest),
    Transition(ALIVE, "no leader, peers may not have reported yet",
               lambda s: not settled(s), "wait_for_peers", "candidate", act_settle),
    Transition(ALIVE, "no leader, I am the healthiest", lambda s: True,
               "acquire_lock", "candidate", act_acquire),
)
