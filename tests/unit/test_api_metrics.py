"""`GET /metrics` rendered from shared-state sections, parsed back with prometheus-client's own
parser and checked row by row: Patroni 4.1's metric names and values (PATRONI-COMPAT 2.4) and
pgwarden's fencing metrics."""
from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgwarden.core.config_model import (
    Config,
    Credentials,
    DynamicConfig,
    HostPort,
    PostgresConfig,
    RestApiConfig,
    WatchdogConfig,
)
from pgwarden.core.shm import SectionView, SharedState
from pgwarden.dcs.model import ClusterView, Member, Versioned
from pgwarden.workers.api_metrics import CONTENT_TYPE, padded_version, render_metrics
from pgwarden.workers.api_server import ApiApp
from pgwarden.workers.api_status import Snapshot

NOW = 10_000.0  # mono seconds
WALL = 1_767_348_000.0
START = "2026-01-02 10:00:00.5+00:00"
START_EPOCH = 1_767_348_000.5
REPLAYED = "2026-01-02 10:05:00+00:00"
REPLAYED_EPOCH = 1_767_348_300.0

# PATRONI-COMPAT.md section 2.4: every name Patroni 4.1 serves. Dashboards and alert rules
# written for Patroni query exactly these.
PATRONI_METRICS = (
    "patroni_version", "patroni_postgres_running", "patroni_postmaster_start_time",
    "patroni_primary", "patroni_xlog_location", "patroni_standby_leader", "patroni_replica",
    "patroni_sync_standby", "patroni_quorum_standby", "patroni_xlog_received_location",
    "patroni_xlog_replayed_location", "patroni_xlog_replayed_timestamp", "patroni_xlog_paused",
    "patroni_postgres_streaming", "patroni_postgres_in_archive_recovery",
    "patroni_postgres_server_version", "patroni_cluster_unlocked",
    "patroni_failsafe_mode_is_active", "patroni_failsafe_mode_enabled", "patroni_failsafe_member",
    "patroni_postgres_timeline", "patroni_dcs_last_seen", "patroni_pending_restart",
    "patroni_is_paused", "patroni_failover_priority", "patroni_postgres_state",
)


# -- sections as the workers publish them (docs/shared-state.md) ---------------------------


def make_config(name: str = "n1", tags: dict[str, Any] | None = None,
                watchdog_mode: str = "automatic") -> Config:
    return Config(
        scope="demo", namespace="service", name=name,
        restapi=RestApiConfig(HostPort("127.0.0.1", 8008), HostPort("10.0.0.1", 8008)),
        etcd3_hosts=(HostPort("127.0.0.1", 2379),),
        bootstrap_dcs=DynamicConfig(),
        postgresql=PostgresConfig(
            data_dir="/var/lib/postgresql/data", bin_dir="/usr/lib/postgresql/16/bin",
            listen=HostPort("0.0.0.0", 5432), listen_addresses="0.0.0.0",
            connect_address=HostPort("10.0.0.1", 5432),
            superuser=Credentials("postgres"), replication=Credentials("replicator"),
        ),
        watchdog=WatchdogConfig(mode=watchdog_mode), tags=tags if tags is not None else {},
        vip=None,
    )


def cluster(leader: str | None = "n1", config: dict[str, Any] | None = None,
            sync: dict[str, Any] | None = None, failsafe: dict[str, Any] | None = None) -> dict[str, Any]:
    def m(name: str, role: str) -> Member:
        return Member(name, {"conn_url": f"postgres://{name}:5432/postgres",
                             "api_url": f"http://{name}:8008/patroni", "state": "running",
                             "role": role, "timeline": 5})

    return ClusterView(
        initialize="7301234567890123456",
        config=Versioned({"ttl": 30, "loop_wait": 10, **(config or {})}, 2),
        leader=leader,
        members={"n1": m("n1", "primary"), "n2": m("n2", "replica")},
        sync=Versioned(sync, 5) if sync is not None else Versioned(),
        failsafe=Versioned(failsafe, 6) if failsafe is not None else Versioned(),
        status=Versioned({"optime": 0x4000060}, 4),
    ).to_dict()


def supervisor(**over: Any) -> dict[str, Any]:
    return {
        "state": "primary",
        "decision": {"action": "none", "reason": "no action: I am (n1), the leader with the lock",
                     "at": WALL},
        "dynamic": {"ttl": 30, "loop_wait": 10, "retry_timeout": 10,
                    "maximum_lag_on_failover": 1048576, "failsafe_mode": False},
        "workers": {n: {"pid": 100 + i, "restarts": 0, "last_restart": None, "alive": True}
                    for i, n in enumerate(("lease", "postgres", "api", "watchdog", "network"))},
        "paused": False, "shutdown": False, "started_at": WALL - 100, "last_cycle": NOW - 0.3,
        **over,
    }


def lease(holds: bool = True, deadline_in: float = 25.0, **cluster_args: Any) -> dict[str, Any]:
    return {
        "connected": True, "lease_id": 7, "ttl": 30, "renewed_at": NOW - 5,
        "lease_deadline": NOW + deadline_in, "holds_leader": holds, "leader_checked_at": NOW - 1,
        "cluster": cluster(**cluster_args), "cluster_at": NOW - 1.0, "dcs_last_seen": WALL - 2,
        "ops_done": {},
    }


def pg_primary(**over: Any) -> dict[str, Any]:
    return {
        "state": "running", "running": True, "pid": 4242, "postmaster_start_time": START,
        "role": "primary", "timeline": 5, "server_version": 160004,
        "sysid": "7301234567890123456", "xlog": {"location": 0x4000060},
        "wal_position": 0x4000060, "replication_state": None, "replication": [],
        "pending_restart": False, **over,
    }


def pg_replica(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "role": "replica", "xlog": {"received_location": 0x4000000, "replayed_location": 0x3F00000,
                                    "replayed_timestamp": REPLAYED, "paused": False},
        "wal_position": 0x4000000, "replication_state": "streaming", "following": "n1",
    }
    return pg_primary(**{**fields, **over})


def watchdog(**over: Any) -> dict[str, Any]:
    return {"mode": "automatic", "device": "/dev/watchdog", "armed": True, "usable": True,
            "timeout": 25, "last_feed": NOW - 1.5, "failed": False, "reason": None, **over}


def network(**over: Any) -> dict[str, Any]:
    return {"vip": "10.0.0.100", "interface": "eth0", "held": True, "last_change": NOW - 50,
            "reason": "held: running primary", **over}


def snap(postgres: dict[str, Any] | None = None, pg_age: float = 0.5,
         beats: dict[str, float] | None = None, **sections: Any) -> Snapshot:
    return Snapshot(
        supervisor=sections.get("supervisor", supervisor()),
        lease=sections.get("lease", lease()),
        postgres=postgres if postgres is not None else pg_primary(),
        watchdog=sections.get("watchdog", watchdog()),
        network=sections.get("network", network()),
        beats=beats if beats is not None else {
            "supervisor": NOW - 0.3, "lease": NOW - 0.2, "postgres": NOW - pg_age,
            "watchdog": NOW - 0.1, "network": NOW - 0.1},
    )


def replica_snap(**over: Any) -> Snapshot:
    args: dict[str, Any] = {"lease": lease(holds=False), "network": network(held=False),
                            "watchdog": watchdog(armed=False)}
    args.update(over)
    return snap(args.pop("postgres", pg_replica()), **args)


# -- parsing the output back ---------------------------------------------------------------

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(s: Snapshot, config: Config | None = None) -> tuple[dict[str, str], Samples]:
    """({family: type}, {(sample name, labels): value}) of the rendered text."""
    text = render_metrics(s, NOW, config or make_config()).decode()
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def value(samples: Samples, name: str, node: str = "n1", **labels: str) -> float | None:
    return samples.get((name, frozenset({"scope": "demo", "name": node, **labels}.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# -- Patroni's metrics ---------------------------------------------------------------------


@pytest.mark.parametrize("role,s,config", [
    ("primary", snap(), make_config()),
    ("replica", replica_snap(), make_config("n2")),
])
def test_every_patroni_metric_is_served_for_a_running_node(role: str, s: Snapshot,
                                                            config: Config) -> None:
    types, samples = scrape(s, config)
    missing = set(PATRONI_METRICS) - names(samples)
    assert not missing, f"{role}: missing {sorted(missing)}"
    for name in PATRONI_METRICS:
        assert types[name] == "gauge", name  # see api_metrics.py on Patroni's three "counters"


def test_every_series_carries_scope_and_name() -> None:
    _, samples = scrape(snap())
    for (name, labels) in samples:
        d = dict(labels)
        assert (d["scope"], d["name"]) == ("demo", "n1"), name


PRIMARY_VALUES: dict[str, float | None] = {
    "patroni_version": float(padded_version("4.1.4")),
    "patroni_postgres_running": 1, "patroni_postmaster_start_time": START_EPOCH,
    "patroni_primary": 1, "patroni_replica": 0, "patroni_standby_leader": 0,
    "patroni_xlog_location": 0x4000060, "patroni_xlog_received_location": 0,
    "patroni_xlog_replayed_location": 0, "patroni_xlog_replayed_timestamp": 0,
    "patroni_xlog_paused": 0, "patroni_postgres_streaming": 0,
    "patroni_postgres_in_archive_recovery": 0, "patroni_postgres_server_version": 160004,
    "patroni_cluster_unlocked": 0, "patroni_postgres_timeline": 5,
    "patroni_dcs_last_seen": WALL - 2, "patroni_pending_restart": 0, "patroni_is_paused": 0,
    "patroni_failover_priority": 1, "patroni_postgres_state": 5,
    "patroni_sync_standby": 0, "patroni_quorum_standby": 0,
    "patroni_failsafe_mode_is_active": 0, "patroni_failsafe_mode_enabled": 0,
    "patroni_failsafe_member": 0,
}

ROWS: list[tuple[str, Snapshot, Config, dict[str, float | None]]] = [
    ("running primary holding the lock", snap(), make_config(), PRIMARY_VALUES),
    ("streaming replica", replica_snap(), make_config("n2"), {
        "patroni_primary": 0, "patroni_replica": 1, "patroni_xlog_location": 0,
        "patroni_xlog_received_location": 0x4000000, "patroni_xlog_replayed_location": 0x3F00000,
        "patroni_xlog_replayed_timestamp": REPLAYED_EPOCH, "patroni_postgres_streaming": 1,
        "patroni_postgres_in_archive_recovery": 0, "patroni_cluster_unlocked": 0,
        "patroni_postgres_state": 5}),
    ("replica in archive recovery with replay paused",
     replica_snap(postgres=pg_replica(
         replication_state="in archive recovery",
         xlog={"received_location": None, "replayed_location": 0x3F00000,
               "replayed_timestamp": None, "paused": True})),
     make_config("n2"), {
        "patroni_postgres_streaming": 0, "patroni_postgres_in_archive_recovery": 1,
        "patroni_xlog_paused": 1, "patroni_xlog_received_location": 0,
        "patroni_xlog_replayed_timestamp": 0}),
    # Patroni shrinks its status to {state, role} when PostgreSQL cannot be queried, and
    # leaves out the two streaming metrics since it no longer knows the server version.
    ("stopped primary", snap(pg_primary(state="stopped", running=False)), make_config(), {
        "patroni_postgres_running": 0, "patroni_postgres_state": 12, "patroni_primary": 1,
        "patroni_postmaster_start_time": 0, "patroni_xlog_location": 0,
        "patroni_postgres_server_version": 0, "patroni_postgres_timeline": 0,
        "patroni_postgres_streaming": None, "patroni_postgres_in_archive_recovery": None}),
    ("crashed", snap(pg_primary(state="crashed", running=False)), make_config(),
     {"patroni_postgres_state": 14, "patroni_postgres_running": 0}),
    ("creating replica", replica_snap(postgres=pg_replica(state="creating replica", running=False)),
     make_config("n2"), {"patroni_postgres_state": 4, "patroni_replica": 1}),
    ("stale postgres sample: state unknown, as Patroni after a failed status query",
     snap(pg_age=30.0), make_config(), {
        "patroni_postgres_running": 0, "patroni_postgres_state": -1,
        "patroni_xlog_location": 0, "patroni_postgres_streaming": None}),
    ("no one holds the leader key", snap(lease=lease(holds=False, leader=None)), make_config(),
     {"patroni_cluster_unlocked": 1, "pgwarden_lease_holder": 0}),
    ("paused in the supervisor's dynamic config", snap(supervisor=supervisor(paused=True)),
     make_config(), {"patroni_is_paused": 1, "pgwarden_paused": 1}),
    ("pending restart", snap(pg_primary(pending_restart=True)), make_config(),
     {"patroni_pending_restart": 1}),
    ("failsafe enabled, active, and this node in the /failsafe key",
     snap(supervisor=supervisor(
         failsafe_active=True,
         dynamic={"ttl": 30, "loop_wait": 10, "failsafe_mode": True}),
         lease=lease(failsafe={"n1": "http://n1:8008/patroni", "n2": "http://n2:8008/patroni"})),
     make_config(), {"patroni_failsafe_mode_enabled": 1, "patroni_failsafe_mode_is_active": 1,
                     "patroni_failsafe_member": 1}),
    ("failsafe enabled in the DCS config, not yet applied, node not in /failsafe",
     snap(supervisor=supervisor(dynamic={"ttl": 30}),
          lease=lease(config={"failsafe_mode": True}, failsafe={"n2": "http://n2:8008/patroni"})),
     make_config(), {"patroni_failsafe_mode_enabled": 1, "patroni_failsafe_mode_is_active": 0,
                     "patroni_failsafe_member": 0}),
    ("listed in /sync (synchronous_mode on)",
     replica_snap(lease=lease(holds=False, config={"synchronous_mode": True},
                              sync={"leader": "n1", "sync_standby": "N2"})),
     make_config("n2"), {"patroni_sync_standby": 1, "patroni_quorum_standby": 0}),
    ("listed in /sync (synchronous_mode quorum)",
     replica_snap(lease=lease(holds=False, config={"synchronous_mode": "quorum"},
                              sync={"leader": "n1", "sync_standby": "n2"})),
     make_config("n2"), {"patroni_sync_standby": 0, "patroni_quorum_standby": 1}),
    ("/sync is ignored when synchronous_mode is off",
     replica_snap(lease=lease(holds=False, sync={"leader": "n1", "sync_standby": "n2"})),
     make_config("n2"), {"patroni_sync_standby": 0}),
    ("nofailover tag", snap(), make_config(tags={"nofailover": "on", "failover_priority": 3}),
     {"patroni_failover_priority": 0}),
    ("failover_priority tag", snap(), make_config(tags={"failover_priority": 3}),
     {"patroni_failover_priority": 3}),
    ("tags follow the supervisor's effective config",
     snap(supervisor=supervisor(config={"tags": {"failover_priority": 0}})), make_config(),
     {"patroni_failover_priority": 0}),
]


@pytest.mark.parametrize("what,s,config,expected", ROWS, ids=[r[0] for r in ROWS])
def test_patroni_metric_values(what: str, s: Snapshot, config: Config,
                               expected: dict[str, float | None]) -> None:
    _, samples = scrape(s, config)
    got = {name: value(samples, name, config.name) for name in expected}
    assert got == pytest.approx(expected)


def test_torn_and_missing_sections_still_render() -> None:
    """A writer killed mid-write leaves its section torn (read as empty): the scrape must
    still answer, with 'unknown' facts rendered the way Patroni renders a failed query."""
    views = {name: SectionView(name, 1, 1, int((NOW - 0.5) * 1e9), {}, torn=True)
             for name in ("supervisor", "lease", "postgres", "watchdog", "network")}
    s = Snapshot.from_views(views)
    assert s.postgres == {} and s.lease == {}
    _, samples = scrape(s, make_config(watchdog_mode="required"))
    assert value(samples, "patroni_postgres_state") == -1
    assert value(samples, "patroni_postgres_running") == 0
    assert value(samples, "patroni_cluster_unlocked") == 1
    assert value(samples, "patroni_dcs_last_seen") == 0
    assert "patroni_postgres_streaming" not in names(samples)
    # pgwarden's: unknown facts have no sample rather than a made-up value
    assert not names(samples) & {"pgwarden_lease_seconds_remaining",
                                 "pgwarden_watchdog_seconds_since_feed",
                                 "pgwarden_worker_up", "pgwarden_worker_restarts_total"}
    assert value(samples, "pgwarden_lease_holder") == 0
    assert value(samples, "pgwarden_watchdog_mode", mode="required") == 1  # from the config
    assert value(samples, "pgwarden_supervisor_seconds_since_cycle") == pytest.approx(0.5)


# -- pgwarden's metrics --------------------------------------------------------------------


def test_fencing_metrics_of_an_armed_primary() -> None:
    _, samples = scrape(snap())
    assert value(samples, "pgwarden_lease_seconds_remaining") == pytest.approx(25.0)
    assert value(samples, "pgwarden_lease_holder") == 1
    assert value(samples, "pgwarden_watchdog_armed") == 1
    assert value(samples, "pgwarden_watchdog_seconds_since_feed") == pytest.approx(1.5)
    assert [value(samples, "pgwarden_watchdog_mode", mode=m)
            for m in ("off", "automatic", "required")] == [0, 1, 0]
    assert value(samples, "pgwarden_vip_held") == 1
    assert value(samples, "pgwarden_paused") == 0
    assert value(samples, "pgwarden_supervisor_seconds_since_cycle") == pytest.approx(0.3)


def test_fencing_metrics_of_a_replica() -> None:
    _, samples = scrape(replica_snap(watchdog=watchdog(armed=False, mode="off", last_feed=None)),
                        make_config("n2"))
    assert value(samples, "pgwarden_lease_holder", "n2") == 0
    assert value(samples, "pgwarden_watchdog_armed", "n2") == 0
    assert value(samples, "pgwarden_watchdog_mode", "n2", mode="off") == 1
    assert value(samples, "pgwarden_vip_held", "n2") == 0
    assert "pgwarden_watchdog_seconds_since_feed" not in names(samples)  # never fed


@pytest.mark.parametrize("deadline_in,expected", [(25.0, 25.0), (-3.5, -3.5)])
def test_lease_seconds_remaining_goes_negative_once_expired(deadline_in: float,
                                                            expected: float) -> None:
    _, samples = scrape(snap(lease=lease(deadline_in=deadline_in)))
    assert value(samples, "pgwarden_lease_seconds_remaining") == pytest.approx(expected)
    # an expired lease is no longer held, whatever the lease worker last said
    assert value(samples, "pgwarden_lease_holder") == (1 if expected > 0 else 0)


def test_no_lease_yet_has_no_remaining_seconds() -> None:
    ls = lease()
    ls["lease_deadline"] = 0.0  # the lease worker's "never renewed"
    _, samples = scrape(snap(lease=ls))
    assert "pgwarden_lease_seconds_remaining" not in names(samples)


def test_worker_restarts_and_up() -> None:
    sup = supervisor()
    sup["workers"]["lease"].update(restarts=2, pid=300)
    sup["workers"]["network"].update(alive=False, pid=0, restarts=1)
    # the watchdog worker is alive but has not beaten for 30 s (frozen): not up
    beats = {"supervisor": NOW - 0.3, "lease": NOW - 0.2, "postgres": NOW - 0.5,
             "watchdog": NOW - 30.0, "network": NOW - 0.1}
    types, samples = scrape(snap(supervisor=sup, beats=beats))
    assert types["pgwarden_worker_restarts"] == "counter"
    restarts = {w: value(samples, "pgwarden_worker_restarts_total", worker=w)
                for w in sup["workers"]}
    assert restarts == {"lease": 2, "postgres": 0, "api": 0, "watchdog": 0, "network": 1}
    up = {w: value(samples, "pgwarden_worker_up", worker=w) for w in sup["workers"]}
    assert up == {"lease": 1, "postgres": 1, "api": 1, "watchdog": 0, "network": 0}


def test_decisions_by_action() -> None:
    s = snap(supervisor=supervisor(decision_counts={"none": 120, "promote": 1, "demote": 2}))
    types, samples = scrape(s)
    assert types["pgwarden_decisions"] == "counter"
    assert {a: value(samples, "pgwarden_decisions_total", action=a)
            for a in ("none", "promote", "demote")} == {"none": 120, "promote": 1, "demote": 2}


def test_failover_and_switchover_durations() -> None:
    s = snap(supervisor=supervisor(durations={
        "failover": {"count": 2, "sum": 7.5, "last": 3.25},
        "switchover": {"count": 1, "sum": 0.4, "last": 0.4}}))
    types, samples = scrape(s)
    assert types["pgwarden_failover_duration_seconds"] == "summary"
    assert value(samples, "pgwarden_failover_duration_seconds_count") == 2
    assert value(samples, "pgwarden_failover_duration_seconds_sum") == 7.5
    assert value(samples, "pgwarden_last_failover_duration_seconds") == 3.25
    assert value(samples, "pgwarden_switchover_duration_seconds_count") == 1
    assert value(samples, "pgwarden_last_switchover_duration_seconds") == pytest.approx(0.4)


def test_counts_and_durations_absent_until_the_supervisor_publishes_them() -> None:
    _, samples = scrape(snap())
    assert not {n for n in names(samples) if n.startswith(("pgwarden_decisions",
                                                          "pgwarden_failover",
                                                          "pgwarden_switchover",
                                                          "pgwarden_last_"))}


def test_malformed_supervisor_values_are_skipped_not_fatal() -> None:
    s = snap(supervisor=supervisor(decision_counts={"none": "many"}, workers=["not", "a dict"],
                                   durations={"failover": {"count": 1}}))
    _, samples = scrape(s)
    assert "pgwarden_decisions_total" not in names(samples)
    assert "pgwarden_failover_duration_seconds_count" not in names(samples)
    assert "pgwarden_worker_up" not in names(samples)


# -- the route -----------------------------------------------------------------------------


def test_get_metrics_route_serves_the_text_format() -> None:
    shm = SharedState.create(None)  # anonymous: nothing left behind in /dev/shm
    try:
        shm.claim("postgres")
        shm.publish("postgres", pg_primary())
        response = ApiApp(make_config(), shm).handle("GET", "/metrics")
    finally:
        shm.close()
    assert response.code == 200
    assert dict(response.headers)["Content-Type"] == CONTENT_TYPE
    families = {f.name for f in text_string_to_metric_families(response.body.decode())}
    assert set(PATRONI_METRICS) <= families
