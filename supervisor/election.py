"""Who may take the lock when the leader key is gone: pure functions over a Snapshot.

A member races only if it is eligible (not nofailover, watchdog usable when required,
has data, lag within maximum_lag_on_failover against the last optime the leader wrote to
`status`) and no eligible peer is healthier (a higher WAL position, or the same position and
a higher failover_priority), and no peer still claims to be a running primary. The
create-if-absent leader key makes sure only one of several racers wins.
"""
from __future__ import annotations

from pgwarden.dcs.model import Member
from pgwarden.supervisor.snapshot import Snapshot


def eligibility_problem(s: Snapshot) -> str | None:
    """Why I may not take the lock, or None when I may."""
    if s.nofailover or s.failover_priority <= 0:
        return "I am tagged nofailover (or failover_priority 0)"
    if s.watchdog_required_failed:
        return "the watchdog is required but not usable"
    listed = s.cluster.failsafe.value if s.cluster is not None else None
    if s.dynamic.failsafe_mode and isinstance(listed, dict) and listed and s.name not in listed:
        return "failsafe mode is on and I am not listed in the failsafe key"
    refused = s.pg.promote_refused_at
    if refused is not None and s.now - refused < s.dynamic.ttl:
        return "my pre_promote script refused a promotion less than ttl ago"
    if s.pg.data_dir_state != "initialized":
        return "I have no data directory to promote"
    if s.pg.wal_position is None:
        return "my WAL position is not known yet"
    optime = s.cluster.optime if s.cluster else None
    if optime is not None:
        lag = optime - s.pg.wal_position
        if lag > s.dynamic.maximum_lag_on_failover:
            return (f"my lag of {lag} bytes exceeds maximum_lag_on_failover "
                    f"({s.dynamic.maximum_lag_on_failover})")
    return None


def _peer_eligible(m: Member) -> bool:
    return not m.nofailover and m.failover_priority > 0 and m.state != "stopped"


def better_peer(s: Snapshot) -> str | None:
    """A sentence naming a peer that should win instead of me, or None."""
    if s.cluster is None:
        return None
    mine = s.pg.wal_position or 0
    for name, m in sorted(s.cluster.members.items()):
        if name == s.name:
            continue
        if m.role == "primary" and m.state == "running":
            return f"{name} still reports itself as a running primary"
        if not _peer_eligible(m):
            continue
        theirs = m.xlog_location
        if theirs is None:
            continue
        if theirs > mine:
            return f"{name} has a higher WAL position ({theirs} > {mine})"
        if theirs == mine and m.failover_priority > s.failover_priority:
            return f"{name} has the same WAL position and a higher failover_priority"
    return None
