"""Small pieces every table row uses (rules.py for the automatic rows, rules_ops.py for the
operator's): building a Decision, the facts both files test, and the two memories of a race
(when the leader went away, the acquire token). One copy, so the two tables cannot drift."""
from __future__ import annotations

from pgwarden.supervisor.snapshot import Decision, Memory, Snapshot, moved


def build(s: Snapshot, action: str, state: str, reason: str, **kw: object) -> Decision:
    """A Decision entering `state` (unless a `memory` is given explicitly)."""
    memory = kw.pop("memory", None)
    if not isinstance(memory, Memory):
        memory = moved(s.memory, state, s.now)
    return Decision(action=action, reason=reason, memory=memory, **kw)  # type: ignore[arg-type]


def pg_is_primary(s: Snapshot) -> bool:
    return s.pg.running and s.pg.role == "primary"


def no_leader(s: Snapshot) -> bool:
    """A current view that shows no leader key, or shows mine while I do not hold it: a
    view a moment older than my own release (the watch cache lags the read), or a previous
    incarnation's key (the reclaim rows come first). None view: unknown, not "no leader"."""
    if s.cluster is None:
        return False
    return s.cluster.leader is None or (s.cluster.leader == s.name and not s.lease.holds_leader)


def gone_at(s: Snapshot) -> float:
    """When this member first saw the cluster without a leader (now, if just now)."""
    return s.memory.leader_gone_at if s.memory.leader_gone_at is not None else s.now


def gone_memory(s: Snapshot, state: str) -> Memory:
    return moved(s.memory, state, s.now, leader_gone_at=gone_at(s))


def acquire_memory(s: Snapshot) -> Memory:
    """Ask for one more create-if-absent attempt unless one is already in flight."""
    token = s.memory.acquire_token
    if s.lease.acquire_token_done >= token:
        token += 1
    state = "bootstrapping" if s.memory.state in ("init", "bootstrapping") and \
        s.pg.data_dir_state == "empty" else "candidate"
    return moved(s.memory, state, s.now, acquire_token=token, leader_gone_at=gone_at(s))
