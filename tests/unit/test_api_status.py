"""The /patroni and /cluster bodies built from shared-state sections (docs/shared-state.md)."""
from __future__ import annotations

from typing import Any

import pytest

from pgwarden.core.config_model import (
    Config,
    Credentials,
    DynamicConfig,
    HostPort,
    PostgresConfig,
    RestApiConfig,
    WatchdogConfig,
)
from pgwarden.core.shm import SectionView
from pgwarden.core.version import PATRONI_COMPAT_VERSION, __version__
from pgwarden.dcs.model import ClusterView, Member, Versioned
from pgwarden.workers.api_status import (
    Snapshot,
    cluster_body,
    format_lsn,
    node_status,
    parse_conn_url,
    patroni_body,
)

NOW = 10_000.0  # mono seconds
WALL = 1_767_348_000.0


def make_config(name: str = "n1", tags: dict[str, Any] | None = None) -> Config:
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
        watchdog=WatchdogConfig(), tags=tags if tags is not None else {"zone": "a"}, vip=None,
    )


def member(name: str, role: str, ip: str, **data: Any) -> dict[str, Any]:
    base = {"conn_url": f"postgres://{ip}:5432/postgres", "api_url": f"http://{ip}:8008/patroni",
            "state": "running", "role": role, "version": __version__, "timeline": 5}
    return Member(name, {**base, **data}, version=3, lease=7).to_dict()


def cluster(leader: str | None = "n1", optime: int | None = 0x4000060) -> dict[str, Any]:
    return ClusterView(
        initialize="7301234567890123456",
        config=Versioned({"ttl": 30, "loop_wait": 10}, 2),
        leader=leader,
        members={
            "n2": Member.from_dict(member("n2", "replica", "10.0.0.2", xlog_location=0x4000000,
                                          receive_lsn=0x4000000, replay_lsn=0x3F00000,
                                          replication_state="streaming")),
            "n1": Member.from_dict(member("n1", "primary", "10.0.0.1", xlog_location=0x4000060)),
        },
        status=Versioned({"optime": optime} if optime is not None else None, 4),
    ).to_dict()


def supervisor(paused: bool = False, ttl: int = 30) -> dict[str, Any]:
    return {
        "state": "primary",
        "decision": {"action": "none", "reason": "no action: I am (n1), the leader with the lock", "at": WALL},
        "intent": {"epoch": 3, "pg": {"role": "primary"}, "lock": {"want": True, "acquire_token": 1}},
        "dynamic": {"ttl": ttl, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576},
        "workers": {}, "paused": paused, "shutdown": False, "started_at": WALL - 100,
        "last_cycle": NOW - 0.3,
    }


def lease(holds: bool = True, leader: str | None = "n1", cluster_age: float = 1.0,
          deadline_in: float = 25.0, optime: int | None = 0x4000060) -> dict[str, Any]:
    return {
        "connected": True, "last_error": None, "lease_id": 7, "ttl": 30,
        "renewed_at": NOW - 5, "lease_deadline": NOW + deadline_in,
        "holds_leader": holds, "leader_checked_at": NOW - 1,
        "acquire_token_done": 1, "acquire_result": True,
        "cluster": cluster(leader, optime), "cluster_at": NOW - cluster_age,
        "dcs_last_seen": WALL - 1.5, "ops_done": {},
    }


def pg_primary(**over: Any) -> dict[str, Any]:
    return {
        "state": "running", "data_dir_state": "initialized", "running": True, "pid": 4242,
        "postmaster_start_time": "2026-01-02 10:00:00.1+00:00", "role": "primary", "timeline": 5,
        "server_version": 160004, "sysid": "7301234567890123456", "xlog": {"location": 0x4000060},
        "wal_position": 0x4000060, "replication_state": None,
        "replication": [{"usename": "replicator", "application_name": "n2", "client_addr": "10.0.0.2",
                         "state": "streaming", "sync_state": "async", "sync_priority": 0}],
        "following": None, "operation": None, "last_error": None, "sampled_at": NOW - 0.5,
        "epoch_done": 3, "pending_restart": False, **over,
    }


def pg_replica(**over: Any) -> dict[str, Any]:
    return pg_primary(
        role="replica", xlog={"received_location": 0x4000000, "replayed_location": 0x3F00000,
                              "replayed_timestamp": None, "paused": False},
        wal_position=0x4000000, replication_state="streaming", replication=[], following="n1", **over,
    )


def snap(postgres: dict[str, Any] | None = None, pg_age: float = 0.5, sup_age: float = 0.3,
         **sections: Any) -> Snapshot:
    return Snapshot(
        supervisor=sections.get("supervisor", supervisor()),
        lease=sections.get("lease", lease()),
        postgres=postgres if postgres is not None else pg_primary(),
        watchdog=sections.get("watchdog", {"mode": "automatic", "device": "/dev/watchdog", "armed": True,
                                           "timeout": 25, "last_feed": NOW - 1, "failed": False,
                                           "reason": None}),
        network=sections.get("network", {"vip": "10.0.0.100", "interface": "eth0", "held": True,
                                         "last_change": NOW - 50, "reason": None}),
        beats={"supervisor": NOW - sup_age, "lease": NOW - 0.2, "postgres": NOW - pg_age,
               "watchdog": NOW - 0.1, "network": NOW - 0.1},
    )


def body(s: Snapshot, config: Config | None = None) -> dict[str, Any]:
    cfg = config or make_config()
    return patroni_body(s, node_status(s, NOW, cfg), NOW)


# -- /patroni ---------------------------------------------------------------------------


def test_primary_body_has_patronis_fields() -> None:
    b = body(snap())
    assert b == {
        "state": "running",
        "postmaster_start_time": "2026-01-02 10:00:00.1+00:00",
        "role": "primary",
        "server_version": 160004,
        "xlog": {"location": 0x4000060},
        "timeline": 5,
        "replication": pg_primary()["replication"],
        "dcs_last_seen": int(WALL - 1.5),
        "tags": {"zone": "a"},
        "database_system_identifier": "7301234567890123456",
        "patroni": {"version": PATRONI_COMPAT_VERSION, "scope": "demo", "name": "n1"},
        "pgwarden": {
            "version": __version__,
            "decision_reason": "no action: I am (n1), the leader with the lock",
            "vip_held": True,
            "vip_holder": "n1",
            "lease_deadline_in": 25.0,
            "watchdog_mode": "automatic",
            "watchdog_armed": True,
            "watchdog_since_feed": 1.0,
            "watchdog_reason": None,
            "worker_restarts": {},
        },
    }


def test_replica_body() -> None:
    s = snap(pg_replica(), lease=lease(holds=False))
    b = body(s, make_config("n2"))
    assert b["role"] == "replica"
    assert b["xlog"] == {"received_location": 0x4000000, "replayed_location": 0x3F00000,
                         "replayed_timestamp": None, "paused": False}
    assert b["replication_state"] == "streaming"
    assert "replication" not in b  # Patroni leaves out an empty list
    assert "cluster_unlocked" not in b
    assert b["patroni"]["name"] == "n2"


@pytest.mark.parametrize("state", ["stopped", "crashed", "creating replica", "initdb failed"])
def test_body_shrinks_when_postgres_cannot_be_queried(state: str) -> None:
    b = body(snap(pg_primary(state=state, running=False)))
    assert b["state"] == state and b["role"] == "primary"
    for detail in ("xlog", "postmaster_start_time", "server_version", "timeline", "replication"):
        assert detail not in b


def test_stale_postgres_sample_reports_unknown() -> None:
    b = body(snap(pg_age=30.0))
    assert b["state"] == "unknown"
    assert "xlog" not in b


def test_never_published_postgres_section() -> None:
    s = Snapshot(supervisor=supervisor(), lease=lease(), beats={"supervisor": NOW})
    b = body(s)
    assert (b["state"], b["role"]) == ("unknown", "uninitialized")


def test_stale_lease_section_means_no_dcs_view() -> None:
    s = snap(lease=lease(cluster_age=31.0))
    st = node_status(s, NOW, make_config())
    assert st.view is None and not st.holds_leader
    assert body(s)["cluster_unlocked"] is True


def test_ttl_for_staleness_comes_from_the_dynamic_config() -> None:
    s = snap(lease=lease(cluster_age=25.0), supervisor=supervisor(ttl=20))
    assert node_status(s, NOW, make_config()).view is None


@pytest.mark.parametrize(
    "lease_data,holds",
    [
        (lease(), True),
        (lease(holds=False), False),
        (lease(leader="n2"), False),  # the view disagrees with the lease worker's flag
        (lease(leader=None), False),
        (lease(deadline_in=-0.1), False),  # our lease may already have expired
        # the DCS view aged out during an outage: only failsafe mode keeps us the leader
        (lease(cluster_age=31.0), False),
        (dict(lease(cluster_age=31.0, deadline_in=-5.0), failsafe_active=True,
              failsafe_deadline=NOW + 20), True),
        (dict(lease(cluster_age=31.0, deadline_in=-5.0), failsafe_active=True,
              failsafe_deadline=NOW - 1), False),
    ],
)
def test_holds_leader(lease_data: dict[str, Any], holds: bool) -> None:
    assert node_status(snap(lease=lease_data), NOW, make_config()).holds_leader is holds


def test_cluster_unlocked_when_no_one_holds_the_key() -> None:
    assert body(snap(lease=lease(holds=False, leader=None)))["cluster_unlocked"] is True


def test_pause_watchdog_and_pending_restart_flags() -> None:
    s = snap(pg_primary(pending_restart=True), supervisor=supervisor(paused=True),
             watchdog={"mode": "required", "armed": False, "failed": True})
    b = body(s)
    assert b["pause"] is True
    assert b["watchdog_failed"] is True
    assert b["pending_restart"] is True
    assert b["pgwarden"]["watchdog_armed"] is False
    plain = body(snap())
    assert not {"pause", "watchdog_failed", "pending_restart"} & set(plain)


def workers(**restarts: int) -> dict[str, Any]:
    return {n: {"pid": 100 + i, "restarts": restarts.get(n, 0), "last_restart": None, "alive": True}
            for i, n in enumerate(("lease", "postgres", "api", "watchdog", "network"))}


def test_fencing_state_of_a_replica_not_fed() -> None:
    sup = supervisor()
    sup["workers"] = workers(lease=2, watchdog=1)
    s = snap(pg_replica(), supervisor=sup, lease=lease(holds=False, deadline_in=-2.5),
             watchdog={"mode": "required", "device": "/dev/watchdog", "armed": False,
                       "timeout": None, "last_feed": NOW - 42.0, "failed": False,
                       "reason": "not feeding the watchdog: lease deadline too close"},
             network={"vip": "10.0.0.100", "interface": "eth0", "held": False})
    pw = body(s, make_config("n2"))["pgwarden"]
    assert pw["watchdog_mode"] == "required" and pw["watchdog_armed"] is False
    assert pw["watchdog_since_feed"] == 42.0
    assert pw["watchdog_reason"] == "not feeding the watchdog: lease deadline too close"
    assert pw["lease_deadline_in"] == -2.5  # expired: negative, not hidden
    assert pw["vip_held"] is False and pw["vip_holder"] == "n1"  # the leader key's holder
    assert pw["worker_restarts"] == {"api": 0, "lease": 2, "network": 0, "postgres": 0,
                                     "watchdog": 1}


@pytest.mark.parametrize("network,leader,holder", [
    ({"vip": "10.0.0.100", "held": True}, "n1", "n1"),
    ({"vip": "10.0.0.100", "held": False}, "n2", "n2"),
    ({"vip": "10.0.0.100", "held": False}, "n1", None),  # our key, VIP not up yet: no one
    ({"vip": "10.0.0.100", "held": False}, None, None),
    ({"vip": None, "held": False}, "n1", None),  # no VIP configured
    ({}, "n2", None),  # network section torn or never published
])
def test_vip_holder_as_far_as_known(network: dict[str, Any], leader: str | None,
                                    holder: str | None) -> None:
    s = snap(network=network, lease=lease(holds=leader == "n1", leader=leader))
    assert body(s)["pgwarden"]["vip_holder"] == holder


def test_unknown_fencing_facts_are_null() -> None:
    ls = lease()
    ls["lease_deadline"] = 0.0  # the lease worker never held a lease
    s = snap(lease=ls, watchdog={}, supervisor={**supervisor(), "workers": "garbage"})
    pw = body(s)["pgwarden"]
    assert (pw["lease_deadline_in"], pw["watchdog_mode"], pw["watchdog_since_feed"]) == (None, None, None)
    assert pw["watchdog_armed"] is False and pw["worker_restarts"] == {}


@pytest.mark.parametrize("mode,sync_standby,field", [
    (True, "n2", "sync_standby"),
    ("on", "N1,n2", "sync_standby"),  # case-insensitive, like synchronous_standby_names
    ("quorum", "n2", "quorum_standby"),
    (False, "n2", None),  # /sync left over from an earlier synchronous_mode
    (True, "n3", None),
])
def test_sync_and_quorum_standby_flags(mode: Any, sync_standby: str, field: str | None) -> None:
    ls = lease(holds=False)
    ls["cluster"]["config"]["value"]["synchronous_mode"] = mode
    ls["cluster"]["sync"] = {"value": {"leader": "n1", "sync_standby": sync_standby}, "version": 5}
    b = body(snap(pg_replica(), lease=ls), make_config("n2"))
    flags = {k for k in ("sync_standby", "quorum_standby") if k in b}
    assert flags == ({field} if field else set())
    if field:
        assert b[field] is True


def test_sync_flag_only_on_a_queryable_replica() -> None:
    ls = lease()
    ls["cluster"]["config"]["value"]["synchronous_mode"] = True
    ls["cluster"]["sync"] = {"value": {"leader": "n1", "sync_standby": "n1"}, "version": 5}
    assert "sync_standby" not in body(snap(lease=ls))  # the primary is not its own standby


def test_failsafe_active_flag_follows_the_supervisor() -> None:
    assert body(snap(supervisor={**supervisor(), "failsafe_active": True}))["failsafe_mode_is_active"] is True
    assert "failsafe_mode_is_active" not in body(snap())


def test_pause_falls_back_to_the_dcs_config() -> None:
    sup = supervisor()
    del sup["paused"]
    ls = lease()
    ls["cluster"]["config"]["value"]["pause"] = True
    assert body(snap(supervisor=sup, lease=ls))["pause"] is True


def test_tags_follow_the_supervisors_effective_config() -> None:
    sup = supervisor()
    sup["config"] = {"tags": {"nofailover": True}}
    assert body(snap(supervisor=sup))["tags"] == {"nofailover": True}
    assert "tags" not in body(snap(), make_config(tags={}))


def test_liveness_age_is_the_last_decision_cycle() -> None:
    sup = supervisor()
    sup["last_cycle"] = NOW - 40.0
    assert node_status(snap(supervisor=sup, sup_age=0.1), NOW, make_config()).supervisor_age == 40.0
    del sup["last_cycle"]  # an older supervisor: fall back to the section heartbeat
    assert node_status(snap(supervisor=sup, sup_age=7.0), NOW, make_config()).supervisor_age == 7.0


def test_snapshot_from_views_reads_torn_sections_as_empty() -> None:
    views = {
        "postgres": SectionView("postgres", 1, 1, int((NOW - 1) * 1e9), pg_primary(), torn=True),
        "lease": SectionView("lease", 2, 1, int((NOW - 2) * 1e9), lease()),
        "supervisor": SectionView("supervisor", 3, 1, 0, {}),
    }
    s = Snapshot.from_views(views)
    assert s.postgres == {} and s.lease["holds_leader"] is True
    assert s.age("lease", NOW) == pytest.approx(2.0)
    assert s.age("supervisor", NOW) == float("inf")


# -- /cluster ---------------------------------------------------------------------------


def test_cluster_body_matches_patronis_shape() -> None:
    view = ClusterView.from_dict(cluster())
    assert cluster_body(view, "demo") == {
        "members": [
            {"name": "n1", "role": "leader", "state": "running", "api_url": "http://10.0.0.1:8008/patroni",
             "host": "10.0.0.1", "port": 5432, "timeline": 5},
            {"name": "n2", "role": "replica", "state": "streaming", "api_url": "http://10.0.0.2:8008/patroni",
             "host": "10.0.0.2", "port": 5432, "timeline": 5,
             "receive_lsn": "0/4000000", "receive_lag": 0x60,
             "replay_lsn": "0/3F00000", "replay_lag": 0x4000060 - 0x3F00000,
             "lsn": "0/4000000", "lag": 0x60},
        ],
        "scope": "demo",
    }


def test_cluster_lags_without_optime_or_lsn_are_unknown() -> None:
    raw = cluster(optime=None)
    del raw["members"]["n2"]["data"]["replay_lsn"]
    n2 = cluster_body(ClusterView.from_dict(raw), "demo")["members"][1]
    assert (n2["receive_lsn"], n2["receive_lag"]) == ("0/4000000", "unknown")
    assert (n2["replay_lsn"], n2["replay_lag"]) == ("unknown", "unknown")


def test_cluster_member_ahead_of_optime_has_zero_lag() -> None:
    n2 = cluster_body(ClusterView.from_dict(cluster(optime=0x10)), "demo")["members"][1]
    assert n2["lag"] == 0


def test_cluster_without_leader_reports_everyone_as_replica() -> None:
    members = cluster_body(ClusterView.from_dict(cluster(leader=None)), "demo")["members"]
    assert [m["role"] for m in members] == ["replica", "replica"]
    assert members[0]["state"] == "running"  # no replication_state: falls back to state
    assert "lsn" in members[0]


def test_cluster_pause_sync_and_scheduled_switchover() -> None:
    raw = cluster()
    raw["config"]["value"].update({"pause": True, "synchronous_mode": True})
    raw["sync"] = {"value": {"leader": "n1", "sync_standby": "N2"}, "version": 5}
    raw["failover"] = {"value": {"leader": "n1", "member": "n2",
                                 "scheduled_at": "2026-09-24T10:36:00+02:00"}, "version": 6}
    b = cluster_body(ClusterView.from_dict(raw), "demo")
    assert b["pause"] is True
    assert b["members"][1]["role"] == "sync_standby"
    assert b["scheduled_switchover"] == {"at": "2026-09-24T10:36:00+02:00", "from": "n1", "to": "n2"}


def test_cluster_copies_optional_member_fields() -> None:
    raw = cluster()
    raw["members"]["n2"]["data"].update({"tags": {"nofailover": True}, "pending_restart": True})
    n2 = cluster_body(ClusterView.from_dict(raw), "demo")["members"][1]
    assert n2["tags"] == {"nofailover": True} and n2["pending_restart"] is True


@pytest.mark.parametrize(
    "lsn,text", [(0, "0/0"), (0x4000060, "0/4000060"), (0x100000000, "1/0"), (0x1A00000FF, "1/A00000FF")]
)
def test_format_lsn(lsn: int, text: str) -> None:
    assert format_lsn(lsn) == text


@pytest.mark.parametrize(
    "url,parsed",
    [
        ("postgres://10.0.0.2:5433/postgres", ("10.0.0.2", 5433)),
        ("postgres://db2/postgres", ("db2", 5432)),
        ("postgres://[fd00::2]:5432/postgres", ("fd00::2", 5432)),
        ("postgres://host:notaport/x", (None, None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_parse_conn_url(url: str | None, parsed: tuple[str | None, int | None]) -> None:
    assert parse_conn_url(url) == parsed
