"""Planned switchover and manual failover: reading the `failover` key, pure functions.

The key (Patroni's format) is `{"leader": L, "member": C, "scheduled_at": ISO 8601}`; any
field may be absent. The REST API (or patronictl writing the DCS directly) puts it there;
the current leader hands over, the candidate takes the lock, the new leader clears it.

Who does what:
* the leader L (or any leader, when the key names no leader) hands over when the key is due
  and the candidate (or, without one, some other member) is fit to promote;
* the candidate C takes the lock as soon as the old leader released it and its WAL position
  has reached the old leader's final LSN (written to `status` just before the release), with
  no race-settle delay: the old leader's clean shutdown already sent it everything;
* every other member stays out of the race for a while (`handover_timeout`), so the
  candidate the operator named is the one that wins;
* a leader clears a key that is stale (names another leader), impossible (names itself as
  candidate, or a candidate that is not fit), or done (names the leader as the candidate).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pgwarden.dcs.model import ClusterView, Member


@dataclass(frozen=True)
class FailoverKey:
    leader: str | None
    candidate: str | None
    scheduled_at: float | None  # epoch seconds, None = now
    version: int
    problem: str | None = None  # why the key cannot be acted on (it gets cleared)


def parse_time(text: object) -> tuple[float | None, str | None]:
    """(epoch seconds, None) or (None, why). Time zones are mandatory, as in Patroni."""
    if not isinstance(text, str) or not text.strip():
        return None, "scheduled_at must be an ISO 8601 timestamp"
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None, ("Unable to parse scheduled timestamp. It should be in an unambiguous "
                      "format, e.g. ISO 8601")
    if at.tzinfo is None:
        return None, "Timezone information is mandatory for the scheduled switchover"
    return at.timestamp(), None


def failover_key(cluster: ClusterView | None) -> FailoverKey | None:
    """The decoded key, or None when there is none (or it is empty: Patroni's `{}`)."""
    if cluster is None or not isinstance(cluster.failover.value, dict):
        return None
    v = cluster.failover.value
    leader = v.get("leader") if isinstance(v.get("leader"), str) and v.get("leader") else None
    cand = v.get("member") or v.get("candidate")
    cand = cand if isinstance(cand, str) and cand else None
    if leader is None and cand is None:
        return None if not v else FailoverKey(None, None, None, cluster.failover.version,
                                                 "it names neither a leader nor a candidate")
    at, problem = (None, None)
    if v.get("scheduled_at"):
        at, problem = parse_time(v.get("scheduled_at"))
    return FailoverKey(leader, cand, at, cluster.failover.version, problem)


def candidate_problem(cluster: ClusterView, name: str, leader_wal: int | None,
                      max_lag: int) -> str | None:
    """Why member `name` may not be promoted now, or None when it may."""
    m = cluster.members.get(name)
    if m is None:
        return f"candidate {name} is not a member of the cluster"
    return member_problem(m, leader_wal, max_lag)


def member_problem(m: Member, leader_wal: int | None, max_lag: int) -> str | None:
    if m.nofailover or m.failover_priority <= 0:
        return f"{m.name} is not allowed to promote (nofailover or failover_priority 0)"
    if m.data.get("watchdog_failed"):
        return f"{m.name} is not watchdog capable"
    if m.state != "running" or m.role not in ("replica", "standby_leader", "sync_standby"):
        return f"{m.name} is not a running replica (state {m.state}, role {m.role})"
    if leader_wal is not None:
        if m.xlog_location is None:
            return f"{m.name} has not reported its WAL position"
        lag = leader_wal - m.xlog_location
        if lag > max_lag:
            return (f"{m.name} lags {lag} bytes behind the leader, more than "
                    f"maximum_lag_on_failover ({max_lag})")
    return None


def any_fit_candidate(cluster: ClusterView, me: str, leader_wal: int | None,
                      max_lag: int) -> str | None:
    """The name of some member other than `me` that could take over, or None."""
    for name, m in sorted(cluster.members.items()):
        if name != me and member_problem(m, leader_wal, max_lag) is None:
            return name
    return None
