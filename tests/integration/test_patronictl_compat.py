"""Real `patronictl` (Patroni 4.1, from its own venv) reads a pgwarden cluster.

Three pgwarden agents on loopback with real etcd and PostgreSQL 15; patronictl gets nothing
but a config naming the etcd endpoint, the scope and the namespace, exactly as an operator
would point it at a Patroni cluster. Only read-only commands here: `list` (table and JSON),
`topology`, `show-config`, `history`, `version` (the one that calls our REST API) and `dsn`.
Every check is on what patronictl prints, compared with what PostgreSQL itself says.

The Patroni venv is built by `make test` (target `.venv-patroni/.installed`); without it the
tests fail rather than skip, so a missing compat check can never pass unnoticed.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterator

import psycopg
import pytest
import yaml

from patronictl_util import Ctl, ctl_cluster
from patronictl_util import need as _need
from patronictl_util import one_primary as _primary
from patronictl_util import table_header as _table_header
from patronictl_util import table_rows as _table_rows
from pgwarden.core.version import PATRONI_COMPAT_VERSION
from pgwarden.lab.loopback import SUPERUSER_PASSWORD, LoopbackCluster
from pgwarden.postgres.lsn import parse_lsn

pytestmark = pytest.mark.integration

LSN_RE = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")


@pytest.fixture(scope="module")
def pctl() -> Iterator[Ctl | None]:
    # None without patronictl: nothing is booted and each test fails through _need()
    with ctl_cluster("pgwarden-pctl-", f"pctl{os.getpid()}") as ctl:
        yield ctl


def _sql(c: LoopbackCluster, name: str, query: str) -> list[tuple[Any, ...]]:
    node = c.nodes[name]
    with psycopg.connect(host="127.0.0.1", port=node.pg_port, user="postgres",
                         password=SUPERUSER_PASSWORD, dbname="postgres", connect_timeout=3,
                         autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _list_json(ctl: Ctl) -> list[dict[str, Any]]:
    out = ctl.run("list", "--format", "json")
    rows = json.loads(out)
    assert isinstance(rows, list), out
    return rows


def _settled_list(ctl: Ctl) -> list[dict[str, Any]] | None:
    """`list` rows once every member is listed, one Leader, the rest streaming Replicas.

    Right after boot a replica's member key may still say "starting" for a loop or two.
    """
    rows = _list_json(ctl)
    settled = (sorted(r.get("Member", "") for r in rows) == sorted(ctl.cluster.nodes)
               and sorted(r.get("Role", "") for r in rows) == ["Leader", "Replica", "Replica"]
               and all(r.get("State") == ("running" if r["Role"] == "Leader" else "streaming")
                       for r in rows))
    return rows if settled else None


def test_list_json_shows_every_member_with_roles_states_and_numeric_lag(pctl: Ctl | None) -> None:
    ctl = _need(pctl)
    c = ctl.cluster
    rows = c.wait_until(lambda: _settled_list(ctl), 30,
                        "patronictl list: a Leader and two streaming Replicas")
    primary = _primary(c)
    assert primary is not None
    tl = _sql(c, primary, "SELECT timeline_id FROM pg_control_checkpoint()")[0][0]
    current = parse_lsn(_sql(c, primary, "SELECT pg_current_wal_lsn()::text")[0][0])

    by_name = {r["Member"]: r for r in rows}
    assert by_name[primary]["Role"] == "Leader" and by_name[primary]["State"] == "running"
    for name, row in by_name.items():
        node = c.nodes[name]
        assert row["Cluster"] == c.scope
        assert row["Host"] == f"127.0.0.1:{node.pg_port}"  # parsed from our conn_url
        assert row["TL"] == tl and isinstance(row["TL"], int)
        assert row["Tags"] == {"nofailover": False}
        if name == primary:
            continue
        assert row["Role"] == "Replica" and row["State"] == "streaming"
        for col in ("Receive", "Replay"):
            lsn, lag = row[f"{col} LSN"], row[f"{col} Lag"]
            # Lag is bytes behind /status optime: a number, never "unknown" on a healthy cluster
            assert isinstance(lag, int) and not isinstance(lag, bool) and lag >= 0, row
            assert LSN_RE.match(lsn), row
            # a real position: past initdb's WAL, not ahead of what the primary has written
            assert 0 < parse_lsn(lsn) <= current, (row, current)


def test_list_table_has_the_cluster_header_with_the_system_identifier(pctl: Ctl | None) -> None:
    ctl = _need(pctl)
    c = ctl.cluster
    primary = _primary(c)
    assert primary is not None
    sysid = _sql(c, primary, "SELECT system_identifier::text FROM pg_control_system()")[0][0]
    out = ctl.run("list")
    header = out.splitlines()[0]
    assert header.startswith(f"+ Cluster: {c.scope} ({sysid}) "), out
    assert _table_header(out)[:9] == ["Member", "Host", "Role", "State", "TL",
                           "Receive LSN", "Lag", "Replay LSN", "Lag"], out
    rows = {r[0]: r for r in _table_rows(out)}
    assert sorted(rows) == sorted(c.nodes), out
    assert rows[primary][2] == "Leader", out


def test_topology_puts_the_replicas_under_the_leader(pctl: Ctl | None) -> None:
    ctl = _need(pctl)
    c = ctl.cluster
    primary = _primary(c)
    assert primary is not None
    out = ctl.run("topology")
    assert out.splitlines()[0].startswith(f"+ Cluster: {c.scope} ("), out
    members = [r[0] for r in _table_rows(out)]
    # the leader first, then its replicas indented with "+ " (no replicatefrom tags here)
    assert members[0] == primary, out
    assert sorted(members[1:]) == sorted(f"+ {n}" for n in c.nodes if n != primary), out


def test_show_config_prints_our_bootstrap_dcs_config(pctl: Ctl | None) -> None:
    ctl = _need(pctl)
    c = ctl.cluster
    out = ctl.run("show-config")
    shown = yaml.safe_load(out)
    expected = c.config_for(c.nodes["n1"])["bootstrap"]["dcs"]
    assert shown == expected, out
    assert shown["ttl"] == c.ttl and shown["loop_wait"] == c.loop_wait


def test_history_reads_without_error(pctl: Ctl | None) -> None:
    ctl = _need(pctl)
    out = ctl.run("history")
    assert _table_header(out) == ["TL", "LSN", "Reason", "Timestamp", "New Leader"], out
    raw = ctl.cluster.etcd_get("history")
    written = json.loads(raw) if raw else []
    rows = _table_rows(out)
    # a fresh cluster has had no promotion: empty; otherwise one row per entry we wrote
    assert len(rows) == len(written), (out, raw)
    for row, entry in zip(rows, written):
        assert row[0] == str(entry[0]) and row[1] == str(entry[1]), (out, raw)


def test_version_reads_every_members_patroni_endpoint(pctl: Ctl | None) -> None:
    ctl = _need(pctl)
    c = ctl.cluster
    # With the cluster name, patronictl does GET <api_url> (our /patroni) on each member and
    # prints patroni.version and server_version from the body.
    out = ctl.run("version", c.scope)
    lines = out.splitlines()
    assert lines[0].startswith("patronictl version 4.1."), out
    pg_version = _sql(c, "n1", "SHOW server_version")[0][0].split()[0]
    for name in c.nodes:
        expected = f"{name}: Patroni {PATRONI_COMPAT_VERSION} PostgreSQL {pg_version}"
        assert expected in lines, (expected, out)


def test_dsn_gives_each_members_address(pctl: Ctl | None) -> None:
    ctl = _need(pctl)
    c = ctl.cluster
    primary = _primary(c)
    assert primary is not None
    for name, node in c.nodes.items():
        assert ctl.run("dsn", c.scope, "--member", name).strip() == \
            f"host=127.0.0.1 port={node.pg_port}"
    # no member given: the leader's
    assert ctl.run("dsn").strip() == f"host=127.0.0.1 port={c.nodes[primary].pg_port}"
