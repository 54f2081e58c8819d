"""Patroni's DCS value formats, read and written exactly as Patroni 4 does."""
from __future__ import annotations

from typing import Any

import orjson
import pytest
from pgwarden.dcs.model import ClusterView, Member, cluster_prefix, dumps

PATRONI_MEMBER = (
    '{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni",'
    '"state":"running","role":"replica","version":"4.1.4","xlog_location":50331800,'
    '"receive_lsn":50331800,"replay_lsn":50331800,"replication_state":"streaming","timeline":3,'
    '"tags":{"nofailover":false}}'
)


def view(**values: str) -> ClusterView:
    """A view from raw values, as an etcd range would give them (version = position + 10)."""
    items = {k.replace("__", "/"): (v, i + 10, 0) for i, (k, v) in enumerate(values.items())}
    return ClusterView.from_kv(items, 99)


def test_prefix_is_patronis_base_path() -> None:
    assert cluster_prefix("service", "demo") == "/service/demo/"
    assert cluster_prefix("/service/", "demo") == "/service/demo/"
    assert cluster_prefix("", "demo") == "/service/demo/"


def test_member_json_as_patroni_writes_it() -> None:
    v = view(members__n1=PATRONI_MEMBER)
    m = v.members["n1"]
    assert (m.conn_url, m.api_url) == ("postgres://10.0.0.2:5432/postgres", "http://10.0.0.2:8008/patroni")
    assert (m.state, m.role, m.xlog_location, m.timeline) == ("running", "replica", 50331800, 3)
    assert m.tags == {"nofailover": False} and not m.nofailover
    assert m.version == 10 and v.problems == ()
    # we write it back byte for byte: compact JSON, keys in insertion order
    assert dumps(orjson.loads(PATRONI_MEMBER)) == PATRONI_MEMBER


def test_member_defaults_and_odd_fields_never_raise() -> None:
    m = view(members__n2='{"tags":{"nofailover":"on","failover_priority":"x"},"timeline":true}').members["n2"]
    assert (m.role, m.state, m.api_url, m.timeline) == ("uninitialized", "unknown", None, None)
    assert m.nofailover and m.failover_priority == 1


def test_leader_is_the_plain_name() -> None:
    v = ClusterView.from_kv({"leader": ("n1", 7, 0x1234)}, 8)
    assert (v.leader, v.leader_version, v.leader_lease) == ("n1", 7, 0x1234)
    assert view(leader="").leader is None
    assert view().leader is None


@pytest.mark.parametrize("raw, expected", [(None, None), ("", ""), ("7301234567890123456", "7301234567890123456")])
def test_initialize_absent_bootstrapping_or_sysid(raw: str | None, expected: str | None) -> None:
    v = view() if raw is None else view(initialize=raw)
    assert v.initialize == expected
    assert v.initialize_version == (0 if raw is None else 10)


def test_failover_json_with_patronis_field_names() -> None:
    raw = '{"leader":"n1","member":"n2","scheduled_at":"2026-01-01T10:00:00+00:00"}'
    v = view(failover=raw)
    assert v.failover.value == {"leader": "n1", "member": "n2", "scheduled_at": "2026-01-01T10:00:00+00:00"}
    assert v.failover.version == 10 and v.problems == ()


@pytest.mark.parametrize("raw, expected", [
    ("n1:n2", {"leader": "n1", "member": "n2"}),
    (" n1 : n2 ", {"leader": "n1", "member": "n2"}),
    (":n2", {"leader": None, "member": "n2"}),
    ("n1", {"leader": "n1", "member": None}),
])
def test_failover_legacy_leader_colon_candidate(raw: str, expected: dict[str, Any]) -> None:
    v = view(failover=raw)
    assert v.failover.value == expected and v.problems == ()


@pytest.mark.parametrize("raw", ["", "{}"])
def test_failover_empty_means_nothing_requested(raw: str) -> None:
    v = view(failover=raw)
    assert not v.failover.value and v.failover.version == 10 and v.problems == ()


@pytest.mark.parametrize("key, raw", [
    ("config", "{not json"),
    ("config", "[1,2]"),
    ("sync", "null"),
    ("status", '"text"'),
    ("failsafe", "\u00ff\u0000garbage"),
    ("failover", '{"leader": '),
    ("failover", "42"),
    ("history", '{"a":1}'),
    ("members__n3", "not json"),
    ("members__n4", "[]"),
])
def test_malformed_values_read_as_absent_with_a_problem(key: str, raw: str) -> None:
    v = view(**{key: raw})
    assert len(v.problems) == 1
    if key.startswith("members"):
        assert v.members == {}
    elif key == "history":
        assert v.history.value == []
    else:
        assert getattr(v, key).value is None


def test_config_sync_status_history_failsafe() -> None:
    v = view(
        config='{"ttl":30,"loop_wait":10,"postgresql":{"use_pg_rewind":true}}',
        sync='{"leader":"n0","sync_standby":"n1,n2","quorum":1}',
        status='{"optime":67108960,"slots":{"n1":67108960},"retain_slots":["n0","n1"]}',
        history='[[1,25165984,"no recovery target specified","2026-01-01T10:00:00+00:00","n0"]]',
        failsafe='{"n0":"http://10.0.0.1:8008/patroni"}',
    )
    assert v.config.value["ttl"] == 30 and v.config.version == 10
    assert v.sync.value == {"leader": "n0", "sync_standby": "n1,n2", "quorum": 1}
    assert v.optime == 67108960
    assert v.history.value[0][4] == "n0"
    assert v.failsafe.value == {"n0": "http://10.0.0.1:8008/patroni"}
    assert v.problems == ()


def test_optime_ignores_non_integers() -> None:
    assert view(status='{"optime":true}').optime is None
    assert view(status='{"optime":"12"}').optime is None


def test_unknown_keys_are_ignored() -> None:
    v = view(optime__leader="123", members__="{}", foo="bar")
    assert v.members == {} and v.problems == ()


def test_to_dict_from_dict_round_trip() -> None:
    v = ClusterView.from_kv({
        "initialize": ("7301", 2, 0),
        "config": ('{"ttl":30}', 3, 0),
        "leader": ("n1", 4, 77),
        "members/n1": (PATRONI_MEMBER, 5, 77),
        "members/n2": ('{"role":"replica"}', 6, 78),
        "failover": ("n1:n2", 7, 0),
        "sync": ('{"leader":"n1","sync_standby":"n2"}', 8, 0),
        "history": ("[[1,2,\"r\",\"t\",\"n1\"]]", 9, 0),
        "status": ('{"optime":5}', 10, 0),
        "failsafe": ("{bad", 11, 0),
    }, 12)
    assert v.problems  # the bad failsafe value survives the trip too
    d = v.to_dict()
    assert ClusterView.from_dict(orjson.loads(orjson.dumps(d))) == v
    assert Member.from_dict(v.members["n1"].to_dict()) == v.members["n1"]


def test_from_dict_of_an_empty_dict_is_an_empty_view() -> None:
    assert ClusterView.from_dict({}) == ClusterView()
