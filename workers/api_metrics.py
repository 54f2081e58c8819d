"""`GET /metrics`: Patroni 4.1's Prometheus metrics plus pgwarden's fencing metrics.

Pure like api_status.py: a Snapshot, `now` (CLOCK_MONOTONIC) and the Config in, the response
body out. The Patroni metrics are derived from the very `/patroni` body this node serves
(`patroni_body`), the way Patroni derives them from its own status, so a dashboard and a
health check can never disagree about the same node.

Rendering goes through prometheus-client's text encoder with a registry built for the one
request, holding one collector over the Snapshot: nothing global and no multiprocess-mode
files, because every value is read from the shared state at request time anyway.

One deliberate difference in format: Patroni declares `patroni_xlog_location`,
`patroni_xlog_received_location` and `patroni_xlog_replayed_location` as `counter`, but a
counter rendered by prometheus-client (and by OpenMetrics rules) is named `<name>_total`,
which would rename the series existing dashboards and alert rules query. We keep the names
and declare them `gauge`: PromQL does not read TYPE lines, and a position that drops to 0
when the node changes role is no counter anyway.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import CollectorRegistry

from pgwarden.core.config_model import Config
from pgwarden.core.version import PATRONI_COMPAT_VERSION
from pgwarden.workers.api_status import (
    SECTION_STALE_AFTER,
    NodeStatus,
    Snapshot,
    as_dict,
    as_int,
    as_number,
    is_truthy_tag,
    node_status,
    patroni_body,
)

# The 0.0.4 text format is what generate_latest writes and what every Prometheus scrapes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Patroni 4.1's numbering of its PostgreSQL states (`PostgresqlState`). Alert rules compare
# against these numbers, and Patroni promises never to renumber them; -1 is any other state.
POSTGRES_STATE_INDEX: dict[str, int] = {
    "initializing new cluster": 0,
    "initdb failed": 1,
    "running custom bootstrap script": 2,
    "custom bootstrap failed": 3,
    "creating replica": 4,
    "running": 5,
    "starting": 6,
    "starting after custom bootstrap": 7,
    "start failed": 8,
    "restarting": 9,
    "restart failed": 10,
    "stopping": 11,
    "stopped": 12,
    "stop failed": 13,
    "crashed": 14,
}

WATCHDOG_MODES: tuple[str, ...] = ("off", "automatic", "required")
DURATION_KINDS: tuple[str, ...] = ("failover", "switchover")

# Patroni emits these two only for PostgreSQL 9.6+, i.e. only when it knows the version.
STREAMING_METRICS_FROM_VERSION = 90600

BASE_LABELS: tuple[str, ...] = ("scope", "name")


def render_metrics(snap: Snapshot, now: float, config: Config) -> bytes:
    """The `/metrics` body in the Prometheus text format (send it with CONTENT_TYPE)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap, now, config))
    return generate_latest(registry)


class SnapshotCollector:
    """A prometheus-client collector over one Snapshot; lives for one request."""

    def __init__(self, snap: Snapshot, now: float, config: Config) -> None:
        self.snap = snap
        self.now = now
        self.config = config

    def collect(self) -> Iterator[Metric]:
        status = node_status(self.snap, self.now, self.config)
        body = patroni_body(self.snap, status, self.now)
        labels = (status.scope, status.name)
        for name, doc, value in patroni_rows(self.snap, status, body):
            yield gauge(name, doc, value, labels)
        yield from pgwarden_metrics(self.snap, status, self.now, self.config, labels)


# -- Patroni's metrics --------------------------------------------------------------------

Row = tuple[str, str, float]


def patroni_rows(snap: Snapshot, status: NodeStatus, body: Mapping[str, Any]) -> list[Row]:
    """(name, HELP, value) of every Patroni 4.1 metric, computed as Patroni computes them
    from its status document, with the HELP texts dashboards show as descriptions."""
    xlog = as_dict(body.get("xlog"))
    role = body.get("role")
    server_version = as_int(body.get("server_version")) or 0
    rows: list[Row] = [
        ("patroni_version", "Patroni semver without periods.",
         float(padded_version(PATRONI_COMPAT_VERSION))),
        ("patroni_postgres_running", "Value is 1 if Postgres is running, 0 otherwise.",
         flag(body.get("state") == "running")),
        ("patroni_postmaster_start_time", "Epoch seconds since Postgres started.",
         epoch_of(body.get("postmaster_start_time"))),
        ("patroni_primary", "Value is 1 if this node is the leader, 0 otherwise.",
         flag(role == "primary")),
        ("patroni_xlog_location", ("Current location of the Postgres transaction log, "
                                   "0 if this node is not the leader."), float(as_int(xlog.get("location")) or 0)),
        ("patroni_standby_leader", "Value is 1 if this node is the standby_leader, 0 otherwise.",
         flag(role == "standby_leader")),
        ("patroni_replica", "Value is 1 if this node is a replica, 0 otherwise.",
         flag(role == "replica")),
        ("patroni_sync_standby", "Value is 1 if this node is a sync standby, 0 otherwise.",
         flag(body.get("sync_standby") is True)),
        ("patroni_quorum_standby", "Value is 1 if this node is a quorum standby, 0 otherwise.",
         flag(body.get("quorum_standby") is True)),
        ("patroni_xlog_received_location", ("Current location of the received Postgres "
                                            "transaction log, 0 if this node is not a replica."),
         float(as_int(xlog.get("received_location")) or 0)),
        ("patroni_xlog_replayed_location", ("Current location of the replayed Postgres "
                                            "transaction log, 0 if this node is not a replica."),
         float(as_int(xlog.get("replayed_location")) or 0)),
        ("patroni_xlog_replayed_timestamp", ("Current timestamp of the replayed Postgres "
                                             "transaction log, 0 if null."), epoch_of(xlog.get("replayed_timestamp"))),
        ("patroni_xlog_paused", "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
         flag(xlog.get("paused") is True)),
    ]
    if server_version >= STREAMING_METRICS_FROM_VERSION:
        rows += [
            ("patroni_postgres_streaming", "Value is 1 if Postgres is streaming, 0 otherwise.",
             flag(body.get("replication_state") == "streaming")),
            ("patroni_postgres_in_archive_recovery", ("Value is 1 if Postgres is replicating "
                                                      "from archive, 0 otherwise."),
             flag(body.get("replication_state") == "in archive recovery")),
        ]
    rows += [
        ("patroni_postgres_server_version", "Version of Postgres (if running), 0 otherwise.",
         float(server_version)),
        ("patroni_cluster_unlocked", "Value is 1 if the cluster is unlocked, 0 if locked.",
         flag(body.get("cluster_unlocked") is True)),
        ("patroni_failsafe_mode_is_active", ("Value is 1 if failsafe mode is active, "
                                             "0 if inactive."), flag(body.get("failsafe_mode_is_active") is True)),
        ("patroni_failsafe_mode_enabled", "Value is 1 if failsafe_mode is enabled, 0 otherwise.",
         flag(failsafe_mode_enabled(snap, status))),
        ("patroni_failsafe_member", ("Value is 1 if this node is a member of failsafe, "
                                     "0 otherwise."), flag(failsafe_member(status))),
        ("patroni_postgres_timeline", "Postgres timeline of this node (if running), 0 otherwise.",
         float(as_int(body.get("timeline")) or 0)),
        ("patroni_dcs_last_seen", ("Epoch timestamp when DCS was last contacted successfully "
                                   "by Patroni."), float(as_number(body.get("dcs_last_seen")) or 0)),
        ("patroni_pending_restart", "Value is 1 if the node needs a restart, 0 otherwise.",
         flag(body.get("pending_restart") is True)),
        ("patroni_is_paused", "Value is 1 if auto failover is disabled, 0 otherwise.",
         flag(body.get("pause") is True)),
        ("patroni_failover_priority", ("Failover priority of this node (0 if it may never be "
                                       "promoted)."), float(failover_priority(status.tags))),
        ("patroni_postgres_state", "Numeric representation of Postgres state. Values: "
         + ", ".join(f"{i}={s}" for s, i in POSTGRES_STATE_INDEX.items()) + ", -1=other.",
         float(POSTGRES_STATE_INDEX.get(str(body.get("state")), -1))),
    ]
    return rows


def padded_version(version: str) -> int:
    """Patroni's version metric: each part padded to two digits, e.g. 4.1.4 -> 040104."""
    parts = [p for p in version.split(".") if p.isdigit()]
    return int("".join(p.zfill(2) for p in parts) or 0)


def epoch_of(timestamp: Any) -> float:
    """Epoch seconds of a PostgreSQL timestamptz as the postgres worker publishes it
    (`str(datetime)`, e.g. 2026-01-02 10:00:00.1+00:00); 0 when null, as Patroni reports."""
    if not isinstance(timestamp, str) or not timestamp:
        return 0.0
    try:
        return datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        return 0.0


def failsafe_mode_enabled(snap: Snapshot, status: NodeStatus) -> bool:
    """`failsafe_mode` of the dynamic config as the supervisor applied it, else the DCS view."""
    applied = as_dict(snap.supervisor.get("dynamic")).get("failsafe_mode")
    if isinstance(applied, bool):
        return applied
    return status.view is not None and is_truthy_tag(as_dict(status.view.config.value).get("failsafe_mode"))


def failsafe_member(status: NodeStatus) -> bool:
    """This node is listed in the `/failsafe` key (the topology the primary last wrote)."""
    return status.view is not None and status.name in as_dict(status.view.failsafe.value)


def failover_priority(tags: Mapping[str, Any]) -> int:
    """0 for a `nofailover` node, else the `failover_priority` tag (default 1), as Patroni."""
    if is_truthy_tag(tags.get("nofailover")):
        return 0
    try:
        return int(tags.get("failover_priority", 1))
    except (TypeError, ValueError):
        return 1


# -- pgwarden's own -----------------------------------------------------------------------


def pgwarden_metrics(snap: Snapshot, status: NodeStatus, now: float, config: Config,
                     labels: tuple[str, str]) -> Iterator[Metric]:
    """The fencing state Patroni has no metric for; a fact that is unknown has no sample."""
    deadline = as_number(snap.lease.get("lease_deadline"))
    if deadline is not None and deadline > 0:  # 0: the lease worker never held a lease
        yield gauge("pgwarden_lease_seconds_remaining",
                    "Seconds until this node's DCS lease expires unless renewed "
                    "(negative once expired).", deadline - now, labels)
    yield gauge("pgwarden_lease_holder", "Value is 1 if this node holds the leader key, "
                "0 otherwise.", flag(status.holds_leader), labels)

    wd = snap.watchdog
    yield gauge("pgwarden_watchdog_armed", "Value is 1 if the watchdog device is open and "
                "ticking, 0 otherwise.", flag(wd.get("armed") is True), labels)
    mode = wd.get("mode") if isinstance(wd.get("mode"), str) else config.watchdog.mode
    modes = WATCHDOG_MODES if mode in WATCHDOG_MODES else (*WATCHDOG_MODES, str(mode))
    wd_mode = GaugeMetricFamily("pgwarden_watchdog_mode", "Value is 1 for the configured "
                                "watchdog mode, 0 for the others.", labels=[*BASE_LABELS, "mode"])
    for m in modes:
        wd_mode.add_metric([*labels, m], flag(m == mode))
    yield wd_mode
    last_feed = as_number(wd.get("last_feed"))
    if last_feed is not None:
        yield gauge("pgwarden_watchdog_seconds_since_feed", "Seconds since the watchdog was "
                    "last fed (or armed).", now - last_feed, labels)

    yield gauge("pgwarden_vip_held", "Value is 1 if the VIP may be on this host (a failed "
                "removal counts as held), 0 otherwise.", flag(snap.network.get("held") is True),
                labels)
    yield from worker_metrics(snap, now, labels)
    yield gauge("pgwarden_supervisor_seconds_since_cycle", "Seconds since the supervisor's "
                "last decision cycle.", status.supervisor_age, labels)

    counts = as_dict(snap.supervisor.get("decision_counts"))
    if counts:
        decisions = CounterMetricFamily("pgwarden_decisions", "Times the decision core turned "
                                        "to each action, since the agent started.",
                                        labels=[*BASE_LABELS, "action"])
        for action in sorted(counts):
            n = as_number(counts[action])
            if n is not None:
                decisions.add_metric([*labels, str(action)], n)
        yield decisions
    yield from duration_metrics(snap, labels)
    yield gauge("pgwarden_paused", "Value is 1 if the cluster is paused (no automatic "
                "action), 0 otherwise.", flag(status.paused), labels)


def worker_up(snap: Snapshot, name: str, worker: Mapping[str, Any], now: float) -> bool:
    """Alive by the supervisor's count, and beating if we read its section.

    A worker that is alive but frozen (SIGSTOP, a hang) stops beating long before the
    supervisor kills it; for fencing that is as good as dead, so it reads as down.
    """
    if worker.get("alive") is not True:
        return False
    return name not in snap.beats or snap.age(name, now) <= SECTION_STALE_AFTER


def worker_metrics(snap: Snapshot, now: float, labels: tuple[str, str]) -> Iterator[Metric]:
    workers = {n: as_dict(w) for n, w in as_dict(snap.supervisor.get("workers")).items()}
    if not workers:
        return
    restarts = CounterMetricFamily("pgwarden_worker_restarts", "Restarts of each worker "
                                   "process by the supervisor, since the agent started.",
                                   labels=[*BASE_LABELS, "worker"])
    up = GaugeMetricFamily("pgwarden_worker_up", "Value is 1 if the worker process is alive "
                           "and beating, 0 otherwise.", labels=[*BASE_LABELS, "worker"])
    for name in sorted(workers):
        restarts.add_metric([*labels, name], float(as_int(workers[name].get("restarts")) or 0))
        up.add_metric([*labels, name], flag(worker_up(snap, name, workers[name], now)))
    yield restarts
    yield up


def duration_metrics(snap: Snapshot, labels: tuple[str, str]) -> Iterator[Metric]:
    """Failover and switchover durations as summaries (count and sum: rate(sum)/rate(count)
    is the mean), plus the last one as a gauge."""
    durations = as_dict(snap.supervisor.get("durations"))
    for kind in DURATION_KINDS:
        d = as_dict(durations.get(kind))
        count, total = as_int(d.get("count")), as_number(d.get("sum"))
        if count is not None and total is not None:
            s = SummaryMetricFamily(f"pgwarden_{kind}_duration_seconds", f"Seconds from the "
                                    f"old leader's key going away to this node leading, for "
                                    f"each {kind} it won since the agent started.",
                                    labels=list(BASE_LABELS))
            s.add_metric(list(labels), count, total)
            yield s
        last = as_number(d.get("last"))
        if last is not None:
            yield gauge(f"pgwarden_last_{kind}_duration_seconds",
                        f"Seconds the last {kind} this node won took.", last, labels)


# -- helpers ------------------------------------------------------------------------------


def gauge(name: str, doc: str, value: float, labels: tuple[str, str]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=list(BASE_LABELS))
    g.add_metric(list(labels), value)
    return g


def flag(value: bool) -> float:
    return 1.0 if value else 0.0
