"""Builds the decision core's Snapshot from the shared-state sections (the only input)."""
from __future__ import annotations

from typing import Any

from pgwarden.core.config_model import Config, DynamicConfig
from pgwarden.core.shm import SectionView
from pgwarden.core.timing import authority_deadline, demote_lead, safety_margin, stale_after
from pgwarden.dcs.model import ClusterView
from pgwarden.supervisor.snapshot import LeaseView, Memory, OpState, PgView, Snapshot


def fresh(view: SectionView, now_ns: int, max_age: float) -> bool:
    return not view.torn and view.heartbeat_ns > 0 and view.age(now_ns) <= max_age


def pg_view(v: SectionView, now_ns: int, max_age: float) -> PgView:
    d = v.data
    op = d.get("operation")
    return PgView(
        data_dir_state=d.get("data_dir_state", "unknown"),
        running=bool(d.get("running")),
        role=d.get("role"),
        state=d.get("state", "unknown"),
        timeline=d.get("timeline"),
        wal_position=_wal_position(d),
        stopped_as_primary=_stopped_as_primary(d),
        sysid=d.get("sysid"),
        operation=op.get("name") if isinstance(op, dict) else None,
        last_error=d.get("last_error"),
        following=d.get("following"),
        fresh=fresh(v, now_ns, max_age),
        epoch_done=d.get("epoch_done", 0),
        checkpoint_done=int(d.get("checkpoint_done") or 0),
        last_lsn=d.get("last_lsn") if isinstance(d.get("last_lsn"), int) else None,
        promote_refused_at=float(d["promote_refused_at"])
        if isinstance(d.get("promote_refused_at"), (int, float)) else None,
        process_alive=isinstance(d.get("pid"), int) and not isinstance(d.get("pid"), bool),
    )


def _stopped_as_primary(d: dict[str, Any]) -> bool:
    """A former primary stopped cleanly, no postmaster left. Without counting its shutdown
    checkpoint as its position, the old primary of a switchover whose candidate died could
    never run for leader: a 2-node cluster kept no primary."""
    return (not d.get("running") and d.get("pid") is None and d.get("last_lsn_primary") is True
            and isinstance(d.get("last_lsn"), int) and not isinstance(d.get("wal_position"), int))


def _wal_position(d: dict[str, Any]) -> int | None:
    """The sampled position; for a former primary stopped cleanly, its shutdown checkpoint
    (which ends its WAL)."""
    if _stopped_as_primary(d):
        return int(d["last_lsn"])
    pos = d.get("wal_position")
    return pos if isinstance(pos, int) and not isinstance(pos, bool) else None


def lease_view(v: SectionView, now_ns: int, max_age: float) -> LeaseView:
    d = v.data
    return LeaseView(
        connected=bool(d.get("connected")),
        lease_deadline=authority_deadline(d),  # failsafe mode may extend the lease
        holds_leader=bool(d.get("holds_leader")),
        acquire_token_done=int(d.get("acquire_token_done") or 0),
        acquire_result=bool(d.get("acquire_result")),
        fresh=fresh(v, now_ns, max_age),
        # a fresh lease worker publishes once before its first DCS call: nothing known yet
        first_round_done=bool(d.get("connected")) or d.get("last_error") is not None,
    )


def cluster_view(lease: SectionView, now: float, ttl: float) -> ClusterView | None:
    """The lease worker's view, if it is recent enough to act on (younger than ttl)."""
    d = lease.data
    raw = d.get("cluster")
    at = d.get("cluster_at")
    if lease.torn or not isinstance(raw, dict) or not isinstance(at, (int, float)):
        return None
    if now - at > ttl:
        return None
    return ClusterView.from_dict(raw)


def watchdog_flags(v: SectionView) -> tuple[bool, bool]:
    """(ready for promotion, required-but-failed)."""
    d = v.data
    mode = d.get("mode", "off")
    failed = bool(d.get("failed"))
    if mode == "off":
        return True, False
    if mode == "required":
        return bool(d.get("armed")), failed
    # automatic: use it when it works, carry on without it when it does not
    return bool(d.get("armed")) or failed or not d.get("usable", False), False


def build_snapshot(cfg: Config, dynamic: DynamicConfig, sections: dict[str, SectionView],
                   memory: Memory, ops: dict[str, OpState], now: float, now_ns: int,
                   shutdown: bool, wall: float = 0.0) -> Snapshot:
    stale = stale_after(float(dynamic.loop_wait))
    lease_sec = sections["lease"]
    ready, wd_failed = watchdog_flags(sections["watchdog"])
    return Snapshot(
        name=cfg.name,
        now=now,
        cluster=cluster_view(lease_sec, now, float(dynamic.ttl)),
        pg=pg_view(sections["postgres"], now_ns, stale),
        lease=lease_view(lease_sec, now_ns, stale),
        dynamic=dynamic,
        memory=memory,
        nofailover=cfg.nofailover,
        failover_priority=_priority(cfg.tags),
        safety_margin=safety_margin(cfg, dynamic),
        demote_lead=demote_lead(safety_margin(cfg, dynamic)),
        watchdog_ready=ready,
        watchdog_required_failed=wd_failed,
        ops=ops,
        shutdown=shutdown,
        # only a live network worker can hold up a demotion: a dead one must never block it
        vip_held=bool(sections["network"].data.get("held"))
        and fresh(sections["network"], now_ns, stale),
        race_settle=min(1.0, dynamic.ttl / 10),
        wall=wall,
        failsafe_leader=failsafe_leader(sections.get("api"), now, dynamic),
    )


def failsafe_leader(api: SectionView | None, now: float, dynamic: DynamicConfig) -> str | None:
    """The primary that pinged us through POST /failsafe less than ttl ago, if any: we
    promised it not to race until then (workers/failsafe.py)."""
    if api is None or api.torn or not dynamic.failsafe_mode:
        return None
    ping = api.data.get("failsafe_ping")
    if not isinstance(ping, dict) or not isinstance(ping.get("at"), (int, float)):
        return None
    name = ping.get("name")
    return name if isinstance(name, str) and now - float(ping["at"]) < dynamic.ttl else None


def _priority(tags: dict[str, Any]) -> int:
    try:
        return int(tags.get("failover_priority", 1))
    except (TypeError, ValueError):
        return 1
