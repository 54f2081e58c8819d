"""What the REST API reports: the node status, the `/patroni` body and the `/cluster` body.

Everything here is pure: the server reads each shared-state section once per request and
hands the dicts in (a `Snapshot`), with `now` on CLOCK_MONOTONIC and the Config. So every
field can be tested row by row without a server, a DCS or a PostgreSQL.

Field names and presence rules follow Patroni 4 (`get_postgresql_status`,
`_write_status_response`, `cluster_as_json`), because monitoring, HAProxy and patronictl
parse them; pgwarden-only facts live under a separate `pgwarden` key.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pgwarden.core.config_model import Config
from pgwarden.core.timing import authority_deadline
from pgwarden.core.shm import SectionView
from pgwarden.core.version import PATRONI_COMPAT_VERSION, __version__
from pgwarden.dcs.model import ClusterView

# The shared-state contract: a writer beats at least once per second, so a section this
# old means its writer is stuck or dead and its data can no longer be vouched for.
SECTION_STALE_AFTER = 5.0

# Patroni only queries PostgreSQL (and so reports the detailed fields) in these states.
DETAILED_STATES = frozenset({"running", "restarting", "starting"})

STATUS_SECTIONS: tuple[str, ...] = ("supervisor", "lease", "postgres", "watchdog", "network")


@dataclass(frozen=True)
class Snapshot:
    """One reading of the sections the API needs, plus when each writer last beat (mono s)."""

    supervisor: dict[str, Any] = field(default_factory=dict)
    lease: dict[str, Any] = field(default_factory=dict)
    postgres: dict[str, Any] = field(default_factory=dict)
    watchdog: dict[str, Any] = field(default_factory=dict)
    network: dict[str, Any] = field(default_factory=dict)
    beats: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def from_views(views: Mapping[str, SectionView]) -> Snapshot:
        """Build from `SharedState.read()` results; missing or torn sections read as empty."""

        def data(name: str) -> dict[str, Any]:
            v = views.get(name)
            return dict(v.data) if v is not None and not v.torn else {}

        beats = {n: v.heartbeat_ns / 1e9 for n, v in views.items() if v.heartbeat_ns}
        return Snapshot(
            supervisor=data("supervisor"),
            lease=data("lease"),
            postgres=data("postgres"),
            watchdog=data("watchdog"),
            network=data("network"),
            beats=beats,
        )

    def age(self, section: str, now: float) -> float:
        """Seconds since the section's writer last beat (inf if it never did)."""
        beat = self.beats.get(section)
        return float("inf") if beat is None else now - beat


@dataclass(frozen=True)
class NodeStatus:
    """The facts the health checks decide on, already reconciled across sections."""

    name: str
    scope: str
    state: str  # Patroni's state string as reported ("unknown" when the sample is stale)
    role: str  # "primary" | "replica" | "uninitialized" | ...
    detailed: bool  # PostgreSQL answered recently: xlog & co. are meaningful
    holds_leader: bool
    view: ClusterView | None  # None: no DCS view younger than ttl
    paused: bool
    tags: dict[str, Any]
    replication_state: str | None
    received_location: int | None
    replayed_location: int | None
    ttl: int
    maximum_lag_on_failover: int
    supervisor_age: float  # seconds since the supervisor's last decision cycle

    @property
    def optime(self) -> int | None:
        """The leader's last published WAL position (`/status` optime), if we have a view."""
        return self.view.optime if self.view is not None else None

    @property
    def running(self) -> bool:
        return self.state == "running"


# -- small typed getters: section values are published by other processes, trust nothing --


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def is_truthy_tag(value: Any) -> bool:
    """Patroni's reading of boolean tags: true, or a string such as "on"/"yes"/"1"."""
    return value is True or (isinstance(value, str) and value.lower() in ("true", "on", "yes", "1"))


def dynamic_setting(snap: Snapshot, config: Config, key: str) -> int:
    """A dynamic setting as the supervisor last applied it, else the bootstrap default."""
    value = as_int(as_dict(snap.supervisor.get("dynamic")).get(key))
    return value if value is not None and value >= 0 else int(getattr(config.bootstrap_dcs, key))


def effective_tags(snap: Snapshot, config: Config) -> dict[str, Any]:
    """Tags from the supervisor's effective config (follows reloads), else the loaded Config."""
    tags = as_dict(snap.supervisor.get("config")).get("tags")
    return dict(tags) if isinstance(tags, dict) else dict(config.tags)


def dcs_view(snap: Snapshot, now: float, ttl: int) -> ClusterView | None:
    """The lease worker's cached cluster view, or None when absent or older than ttl.

    Patroni likewise forgets its cached cluster `ttl` seconds after the last good read:
    past that point the leader key may have expired and the view would lie.
    """
    raw = snap.lease.get("cluster")
    at = as_number(snap.lease.get("cluster_at"))
    if not isinstance(raw, dict) or at is None or now - at > ttl:
        return None
    try:
        return ClusterView.from_dict(raw)
    except (KeyError, TypeError, AttributeError, ValueError):
        return None  # a malformed view is no view; the lease worker logs its own problems


def holds_leader(snap: Snapshot, view: ClusterView | None, name: str, now: float) -> bool:
    """We hold the leader key: the lease worker says so, the view agrees, and the lease (or
    failsafe mode) still covers us beyond the safety margin: past that instant rule 1 has the
    node stop answering as primary, and so does its health check."""
    if snap.lease.get("holds_leader") is not True:
        return False
    if view is None:
        # the DCS view aged out: only failsafe mode (every member confirmed) vouches for us,
        # and then we answer as the leader, as Patroni's failsafe primary does
        if snap.lease.get("failsafe_active") is not True:
            return False
    elif view.leader != name:
        return False
    deadline = authority_deadline(snap.lease)
    margin = as_number(snap.supervisor.get("safety_margin")) or 0.0
    if deadline == 0.0:
        return False  # nothing vouches for the key: fail closed
    return deadline - margin > now


def node_status(snap: Snapshot, now: float, config: Config) -> NodeStatus:
    ttl = dynamic_setting(snap, config, "ttl")
    view = dcs_view(snap, now, ttl)
    pg = snap.postgres
    state = str(pg.get("state") or "unknown")
    fresh = snap.age("postgres", now) <= SECTION_STALE_AFTER
    if not fresh and state == "running":
        state = "unknown"  # what Patroni reports when its status query fails
    xlog = pg.get("xlog")
    detailed = fresh and state in DETAILED_STATES and isinstance(xlog, dict)
    xlog_d = as_dict(xlog) if detailed else {}
    paused = snap.supervisor.get("paused")
    if not isinstance(paused, bool):
        paused = view is not None and is_truthy_tag(as_dict(view.config.value).get("pause"))
    rstate = pg.get("replication_state") if detailed else None
    return NodeStatus(
        name=config.name,
        scope=config.scope,
        state=state,
        role=str(pg.get("role") or "uninitialized"),
        detailed=detailed,
        holds_leader=holds_leader(snap, view, config.name, now),
        view=view,
        paused=paused,
        tags=effective_tags(snap, config),
        replication_state=rstate if isinstance(rstate, str) else None,
        received_location=as_int(xlog_d.get("received_location")),
        replayed_location=as_int(xlog_d.get("replayed_location")),
        ttl=ttl,
        maximum_lag_on_failover=dynamic_setting(snap, config, "maximum_lag_on_failover"),
        supervisor_age=supervisor_age(snap, now),
    )


def supervisor_age(snap: Snapshot, now: float) -> float:
    """Seconds since the supervisor's last decision cycle (`last_cycle`), else its heartbeat.

    `last_cycle` is stamped by the decision loop itself, so it stops when the loop hangs
    even if something else kept the section's heartbeat going.
    """
    last_cycle = as_number(snap.supervisor.get("last_cycle"))
    return snap.age("supervisor", now) if last_cycle is None else now - last_cycle


def patroni_body(snap: Snapshot, status: NodeStatus, now: float) -> dict[str, Any]:
    """The `GET /patroni` body (also the body of every GET health check)."""
    pg = snap.postgres
    body: dict[str, Any] = {"state": status.state}
    if status.detailed:
        body["postmaster_start_time"] = pg.get("postmaster_start_time")
        body["role"] = status.role
        body["server_version"] = as_int(pg.get("server_version"))
        body["xlog"] = as_dict(pg.get("xlog"))
        if as_int(pg.get("timeline")) is not None:
            body["timeline"] = pg["timeline"]
        if status.replication_state:
            body["replication_state"] = status.replication_state
        if isinstance(pg.get("replication"), list) and pg["replication"]:
            body["replication"] = pg["replication"]
    else:
        body["role"] = status.role  # Patroni shrinks to {state, role} when it cannot query
    if status.detailed and status.role == "replica" and status.view is not None:
        kind = standby_kind(status.view, status.name)
        if kind is not None:
            body[kind] = True
    if status.paused:
        body["pause"] = True
    if status.view is None or status.view.leader is None:
        body["cluster_unlocked"] = True
    if snap.supervisor.get("failsafe_active") is True:
        body["failsafe_mode_is_active"] = True
    body["dcs_last_seen"] = int(as_number(snap.lease.get("dcs_last_seen")) or 0)
    if status.tags:
        body["tags"] = status.tags
    if isinstance(pg.get("sysid"), str) and pg["sysid"]:
        body["database_system_identifier"] = pg["sysid"]
    if pg.get("pending_restart") is True:
        body["pending_restart"] = True
        if isinstance(pg.get("pending_restart_reason"), dict):
            body["pending_restart_reason"] = pg["pending_restart_reason"]
    if isinstance(snap.supervisor.get("scheduled_restart"), dict):
        body["scheduled_restart"] = snap.supervisor["scheduled_restart"]
    # Patroni tooling gates features on this version: report the Patroni release whose
    # formats we speak; our own version is under "pgwarden".
    body["patroni"] = {"version": PATRONI_COMPAT_VERSION, "scope": status.scope,
                       "name": status.name}
    if snap.watchdog.get("failed") is True:
        body["watchdog_failed"] = True
    body["pgwarden"] = pgwarden_fields(snap, now, status)
    return body


def pgwarden_fields(snap: Snapshot, now: float, status: NodeStatus) -> dict[str, Any]:
    """Facts Patroni has no field for; kept under one key so Patroni parsers ignore them.

    Mostly the fencing state: what an operator checks first when asking "could this node
    still take writes, and what would stop it?".
    """
    deadline = as_number(snap.lease.get("lease_deadline"))
    decision = as_dict(snap.supervisor.get("decision"))
    last_feed = as_number(snap.watchdog.get("last_feed"))
    mode = snap.watchdog.get("mode")
    return {
        "version": __version__,
        "decision_reason": decision.get("reason"),
        "vip_held": snap.network.get("held") is True,
        "vip_holder": vip_holder(snap, status),
        # 0 is the lease worker's "never held a lease": no deadline, not one long past
        "lease_deadline_in": None if not deadline else round(deadline - now, 3),
        "watchdog_mode": mode if isinstance(mode, str) else None,
        "watchdog_armed": snap.watchdog.get("armed") is True,
        "watchdog_since_feed": None if last_feed is None else round(now - last_feed, 3),
        "watchdog_reason": snap.watchdog.get("reason"),
        "worker_restarts": worker_restarts(snap),
    }


def vip_holder(snap: Snapshot, status: NodeStatus) -> str | None:
    """Who holds the VIP as far as this node knows: itself when its network worker says so;
    otherwise the leader key's holder, the only member rule 2 lets hold it (no member
    reports its VIP in the DCS); None without a VIP, a leader, or when that leader is us
    and we do not hold it yet."""
    if not snap.network.get("vip"):
        return None
    if snap.network.get("held") is True:
        return status.name
    leader = status.view.leader if status.view is not None else None
    return leader if leader != status.name else None


def worker_restarts(snap: Snapshot) -> dict[str, int]:
    """{worker: restarts} as the supervisor counts them."""
    workers = as_dict(snap.supervisor.get("workers"))
    return {n: as_int(as_dict(w).get("restarts")) or 0 for n, w in sorted(workers.items())}


# -- /cluster -----------------------------------------------------------------------------


def format_lsn(lsn: int) -> str:
    """PostgreSQL's text form of an LSN: high and low 32 bits in hex, e.g. 0/4000060."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_conn_url(url: str | None) -> tuple[str | None, int | None]:
    """host and port of `postgres://host:port/db` (port 5432 if left out, as libpq does)."""
    if not url:
        return None, None
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None, None
    if not host:
        return None, None
    return host, port if port is not None else 5432


def _sync_names(view: ClusterView) -> set[str]:
    """Members named in `/sync`, when the cluster runs synchronous replication."""
    mode = as_dict(view.config.value).get("synchronous_mode")
    if mode in (None, False) or (isinstance(mode, str) and mode.lower() in ("off", "false")):
        return set()
    listed = as_dict(view.sync.value).get("sync_standby")
    if not isinstance(listed, str):
        return set()
    return {n.strip().lower() for n in listed.split(",") if n.strip()}


def standby_kind(view: ClusterView, name: str) -> str | None:
    """The body flag for a member listed in `/sync`: `sync_standby`, or `quorum_standby` in
    quorum mode (matched case-insensitively, as PostgreSQL reads synchronous_standby_names)."""
    if name.lower() not in _sync_names(view):
        return None
    quorum = as_dict(view.config.value).get("synchronous_mode") == "quorum"
    return "quorum_standby" if quorum else "sync_standby"


def _member_role(view: ClusterView, name: str, sync: set[str]) -> str:
    config = as_dict(view.config.value)
    if name == view.leader:
        standby = as_dict(config.get("standby_cluster"))
        is_standby = any(standby.get(k) for k in ("host", "port", "restore_command"))
        return "standby_leader" if is_standby else "leader"
    if name.lower() in sync:
        return "quorum_standby" if config.get("synchronous_mode") == "quorum" else "sync_standby"
    return "replica"


def _lsn_fields(data: Mapping[str, Any], optime: int | None) -> dict[str, Any]:
    """lsn/lag pairs; a lag is "unknown" without a position or without the leader's optime.

    (Patroni reports 0 when `/status` is missing; "unknown" is the honest answer.)
    """
    out: dict[str, Any] = {}
    for prefix, key in (("receive_", "receive_lsn"), ("replay_", "replay_lsn"), ("", "xlog_location")):
        lsn = as_int(data.get(key))
        if not lsn:
            out[f"{prefix}lsn"] = out[f"{prefix}lag"] = "unknown"
            continue
        out[f"{prefix}lsn"] = format_lsn(lsn)
        out[f"{prefix}lag"] = "unknown" if optime is None else max(0, optime - lsn)
    return out


def cluster_body(view: ClusterView, scope: str) -> dict[str, Any]:
    """The `GET /cluster` body, from a cluster view (`cluster_as_json` in Patroni)."""
    sync = _sync_names(view)
    optime = view.optime
    members: list[dict[str, Any]] = []
    for name in sorted(view.members):
        m = view.members[name]
        role = _member_role(view, name, sync)
        rstate = m.data.get("replication_state") if role != "leader" else None
        member: dict[str, Any] = {
            "name": name,
            "role": role,
            "state": (rstate if isinstance(rstate, str) and rstate else None) or m.data.get("state", ""),
            "api_url": m.api_url,
        }
        host, port = parse_conn_url(m.conn_url)
        if host:
            member["host"] = host
            member["port"] = port
        for key in ("timeline", "pending_restart", "pending_restart_reason", "scheduled_restart", "tags"):
            if key in m.data:
                member[key] = m.data[key]
        if name != view.leader:
            member.update(_lsn_fields(m.data, optime))
        members.append(member)
    body: dict[str, Any] = {"members": members, "scope": scope}
    if is_truthy_tag(as_dict(view.config.value).get("pause")):
        body["pause"] = True
    failover = as_dict(view.failover.value)
    if failover.get("scheduled_at"):
        switchover: dict[str, Any] = {"at": failover["scheduled_at"]}
        if failover.get("leader"):
            switchover["from"] = failover["leader"]
        if failover.get("member"):
            switchover["to"] = failover["member"]
        body["scheduled_switchover"] = switchover
    return body
