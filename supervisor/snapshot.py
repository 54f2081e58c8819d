"""The decision core's input (Snapshot) and output (Decision): plain frozen data.

The supervisor builds a Snapshot from the shared state each cycle; `decide()` turns it
into a Decision without any I/O; the supervisor publishes the Decision as the intent the
workers converge on. Memory carries what the core must remember between cycles
(its state, when it entered it, the last acquire token): it is returned in the Decision
and handed back in the next Snapshot, so the core itself stays a pure function.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from pgwarden.core.config_model import DynamicConfig
from pgwarden.dcs.model import ClusterView


@dataclass(frozen=True)
class PgView:
    """What the postgres worker last reported."""

    data_dir_state: str = "unknown"  # empty | initialized | invalid | unknown
    running: bool = False
    role: str | None = None  # primary | replica | None
    state: str = "unknown"  # Patroni's state string
    timeline: int | None = None
    wal_position: int | None = None
    sysid: str | None = None
    operation: str | None = None  # a long operation in progress
    last_error: str | None = None
    following: str | None = None
    fresh: bool = False  # the worker's heartbeat is recent
    epoch_done: int = 0
    checkpoint_done: int = 0  # the last pre-switchover CHECKPOINT token the worker finished
    last_lsn: int | None = None  # a cleanly stopped server's shutdown checkpoint LSN
    # stopped cleanly as a primary, no postmaster left: its WAL ends at last_lsn (which is
    # then its wal_position), so it may run for leader and start as the primary
    stopped_as_primary: bool = False
    promote_refused_at: float | None = None  # mono: pre_promote failed (stay out a ttl)
    process_alive: bool = False  # a postmaster process exists (perhaps frozen or not answering)


@dataclass(frozen=True)
class LeaseView:
    """What the lease worker last reported."""

    connected: bool = False
    lease_deadline: float = 0.0  # mono; 0 = never renewed
    holds_leader: bool = False
    acquire_token_done: int = 0
    acquire_result: bool = False
    fresh: bool = False
    first_round_done: bool = True  # the lease worker finished one DCS round (ok or failed)


@dataclass(frozen=True)
class OpState:
    """A one-shot DCS write the supervisor asked the lease worker for."""

    status: str  # pending | ok | failed
    result: Any = None


@dataclass(frozen=True)
class Memory:
    state: str = "init"
    since: float = 0.0  # mono when `state` was entered
    acquire_token: int = 0
    leader_gone_at: float | None = None  # mono when we first saw the cluster unlocked
    pg_down_since: float | None = None  # mono when a primary's PostgreSQL was first seen down
    start_timeout: float | None = None  # a restart's `timeout`: primary_start_timeout for now
    # a decision asked to release the key while the lease worker held it: until the release
    # is seen or a new acquire is asked, the key must not be used to promote or start a
    # primary (the lease worker may act on that older intent after a renewal we observed)
    lock_given_up: bool = False
    # PostgreSQL stopped answering while it was our primary and a decision left the primary
    # state (a demotion by stop): until it answers or its postmaster is gone, it still counts
    # as a possible primary, so the stop and the armed watchdog last beyond that one cycle
    fencing: bool = False
    bootstrap_failed: bool = False
    handover: str | None = None  # switchover phase on the leader: checkpoint | stop
    handover_since: float | None = None  # mono when the current switchover began
    checkpoint_token: int = 0  # the last CHECKPOINT asked of the postgres worker
    vip_hold_until: float | None = None  # mono: after a switchover, keep the VIP until then


@dataclass(frozen=True)
class Snapshot:
    name: str
    now: float
    cluster: ClusterView | None  # None: no current DCS view
    pg: PgView
    lease: LeaseView
    dynamic: DynamicConfig
    memory: Memory
    nofailover: bool = False
    failover_priority: int = 1
    safety_margin: float = 5.0
    demote_lead: float = 1.0  # start demoting this long before lease_deadline - safety_margin
    watchdog_ready: bool = True  # armed, or not needed (mode off / automatic without a device)
    watchdog_required_failed: bool = False
    ops: dict[str, OpState] = field(default_factory=dict)
    shutdown: bool = False  # SIGTERM received
    vip_held: bool = False  # the network worker reports the VIP on this host
    race_settle: float = 1.0  # seconds to let peers refresh their WAL position before a race
    wall: float = 0.0  # epoch seconds (scheduled switchovers are wall-clock times)
    failsafe_leader: str | None = None  # a primary whose failsafe ping we accepted < ttl ago
    restart_timeout: float | None = None  # `timeout` of the restart asked through the API


@dataclass(frozen=True)
class Decision:
    action: str  # the name of the transition taken
    reason: str  # one sentence for operators and tests
    memory: Memory
    pg_role: str = "none"  # primary | replica | stopped | none (leave as it is)
    leader: str | None = None  # whom a replica follows
    bootstrap: str | None = None  # initdb | basebackup
    stop_mode: str = "fast"
    recover: bool = False  # a crashed primary may be started again in place
    lock_want: bool = False
    ops: tuple[tuple[str, dict[str, Any]], ...] = ()  # (kind, args) to enqueue unless pending
    clear_ops: tuple[str, ...] = ()  # op kinds whose results were consumed
    vip: bool = False
    watchdog: str = "disarmed"
    exit_code: int | None = None  # the agent should exit (after a clean stop) with this code
    checkpoint_token: int = 0  # ask the postgres worker for a CHECKPOINT (before a handover)
    release_lsn: int | None = None  # write this final LSN to `status` before releasing the key
    vip_hold_until: float | None = None  # keep (never add) the VIP until then: a hand-off

    @property
    def state(self) -> str:
        return self.memory.state


def moved(memory: Memory, state: str, now: float, **changes: Any) -> Memory:
    """Memory for entering `state` (keeps `since` when the state does not change)."""
    since = memory.since if memory.state == state else now
    return replace(memory, state=state, since=since, **changes)
