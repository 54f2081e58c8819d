"""Three real agents on loopback: bootstrap, streaming, handover on SIGTERM, worker restarts.

Real etcd, real PostgreSQL 15, real pgwarden processes (n3 runs as the postgres OS user, n1
and n2 as root, so both ways of running the agent are covered).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgwarden.core.shm import shm_path
from pgwarden.lab.loopback import SUPERUSER_PASSWORD, LoopbackCluster

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    # Not pytest's tmp_path: /tmp/pytest-of-root is private to root, and PostgreSQL (and the
    # agent run as postgres) must traverse the path to their data directories.
    base = Path(tempfile.mkdtemp(prefix="pgwarden-itest-", dir="/tmp"))
    c = LoopbackCluster(base, size=3, scope=f"itest{os.getpid()}",
                        postgres_user_nodes=("n3",))
    try:
        c.start_all()
        c.wait_until(lambda: _healthy(c), BOOT_TIMEOUT, "one primary and two streaming replicas")
        yield c
    finally:
        c.close()
        shutil.rmtree(base, ignore_errors=True)


def _healthy(c: LoopbackCluster, names: tuple[str, ...] | None = None) -> str | None:
    """The primary's name once exactly one member is primary and the others are replicas."""
    roles = c.roles()
    if names is not None:
        roles = {n: r for n, r in roles.items() if n in names}
    primaries = [n for n, (p, _) in roles.items() if p == 200]
    replicas = [n for n, (_, r) in roles.items() if r == 200]
    if len(primaries) == 1 and len(replicas) == len(roles) - 1:
        return primaries[0]
    return None


def _sql(c: LoopbackCluster, name: str, query: str, args: tuple = ()) -> list[tuple]:
    node = c.nodes[name]
    with psycopg.connect(host="127.0.0.1", port=node.pg_port, user="postgres",
                         password=SUPERUSER_PASSWORD, dbname="postgres", connect_timeout=3,
                         autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description else []


def _try_sql(c: LoopbackCluster, name: str, query: str) -> list[tuple] | None:
    """None while the replica has not replayed what the query needs yet."""
    try:
        return _sql(c, name, query)
    except psycopg.Error:
        return None



def test_bootstrap_elects_one_primary_and_both_replicas_stream(cluster: LoopbackCluster) -> None:
    primary = _healthy(cluster)
    assert primary is not None
    replicas = sorted(n for n in cluster.nodes if n != primary)
    streaming = cluster.wait_until(
        lambda: sorted(r[0] for r in _sql(cluster, primary,
                       "SELECT application_name FROM pg_stat_replication "
                       "WHERE state = 'streaming'")) == replicas,
        60, "both replicas in pg_stat_replication")
    assert streaming

    _sql(cluster, primary, "CREATE TABLE IF NOT EXISTS t (id int primary key, note text)")
    _sql(cluster, primary, "INSERT INTO t VALUES (1, 'written on the primary')")
    for r in replicas:
        cluster.wait_until(
            lambda r=r: _try_sql(cluster, r, "SELECT note FROM t WHERE id = 1")
            == [("written on the primary",)], 30, f"the row on {r}")
        assert _sql(cluster, r, "SELECT pg_is_in_recovery()") == [(True,)]

    # exactly one /primary, the others /replica; /patroni says the same
    codes = cluster.roles()
    assert [n for n, (p, _) in codes.items() if p == 200] == [primary]
    assert sorted(n for n, (_, r) in codes.items() if r == 200) == replicas
    status, body = cluster.nodes[primary].get("/patroni")
    assert status == 200 and body["role"] == "primary" and body["state"] == "running"


def test_dcs_keys_are_patronis(cluster: LoopbackCluster) -> None:
    primary = _healthy(cluster)
    assert cluster.etcd_get("leader") == primary  # the plain name, not JSON
    sysid = _sql(cluster, primary, "SELECT system_identifier::text FROM pg_control_system()")
    cluster.wait_until(lambda: cluster.etcd_get("initialize") == sysid[0][0], 30,
                       "initialize = sysid")
    config = json.loads(cluster.etcd_get("config") or "{}")
    assert config["ttl"] == cluster.ttl and config["loop_wait"] == cluster.loop_wait
    for name in cluster.nodes:
        raw = cluster.etcd_get(f"members/{name}")
        assert raw is not None
        m = json.loads(raw)
        node = cluster.nodes[name]
        assert m["conn_url"] == f"postgres://127.0.0.1:{node.pg_port}/postgres"
        assert m["api_url"] == f"http://127.0.0.1:{node.api_port}/patroni"
        assert m["state"] == "running"
        assert m["role"] == ("primary" if name == primary else "replica")
        assert isinstance(m["xlog_location"], int) and isinstance(m["timeline"], int)


def test_metrics_endpoint_answers_on_every_member(cluster: LoopbackCluster) -> None:
    primary = _healthy(cluster)
    assert primary is not None
    for name, node in cluster.nodes.items():
        with urllib.request.urlopen(node.api + "/metrics", timeout=5) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            text = r.read().decode()
        every = [s for f in text_string_to_metric_families(text) for s in f.samples]
        assert all((s.labels["scope"], s.labels["name"]) == (cluster.scope, name) for s in every)
        samples = {s.name: s for s in every if len(s.labels) == 2}  # the per-node series
        up = {s.labels["worker"]: s.value for s in every if s.name == "pgwarden_worker_up"}
        assert len(up) >= 5 and set(up.values()) == {1.0}, up
        assert any(s.name == "pgwarden_decisions_total" and s.value >= 1 for s in every)
        is_primary = 1.0 if name == primary else 0.0
        assert samples["patroni_postgres_running"].value == 1.0
        assert samples["patroni_primary"].value == is_primary
        assert samples["patroni_replica"].value == 1.0 - is_primary
        assert samples["pgwarden_lease_holder"].value == is_primary
        assert 0 < samples["pgwarden_lease_seconds_remaining"].value <= cluster.ttl
        assert samples["patroni_postgres_timeline"].value >= 1


def test_worker_killed_is_restarted_and_the_cluster_keeps_its_primary(
        cluster: LoopbackCluster) -> None:
    primary = _healthy(cluster)
    assert primary is not None
    node = cluster.nodes[primary]
    for worker in ("api", "network", "watchdog", "lease", "postgres"):
        before = _state(cluster, primary)["supervisor"]["data"]["workers"][worker]
        os.kill(before["pid"], signal.SIGKILL)

        def restarted() -> dict | None:
            w = _state(cluster, primary)["supervisor"]["data"]["workers"][worker]
            return w if w["restarts"] == before["restarts"] + 1 and w["alive"] \
                and w["pid"] != before["pid"] else None

        after = cluster.wait_until(restarted, 30, f"worker {worker} restarted")
        assert after["pid"] != before["pid"]
        cluster.wait_until(lambda: _healthy(cluster) == primary, 60,
                           f"{primary} still the primary after {worker} restart")
    assert "restarted worker lease" in node.log_text()
    assert "restarted worker postgres" in node.log_text()


def test_a_second_agent_for_the_same_member_refuses_to_start(cluster: LoopbackCluster) -> None:
    node = cluster.nodes["n1"]
    out = subprocess.run([sys.executable, "-m", "pgwarden.supervisor.main",
                          str(node.config_path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert "already runs for member n1" in out.stderr
    assert _healthy(cluster) is not None  # the running agent was not disturbed


def test_sigterm_on_the_primary_hands_over_and_leaves_nothing(cluster: LoopbackCluster) -> None:
    primary = _healthy(cluster)
    assert primary is not None
    state = _state(cluster, primary)
    pids = [w["pid"] for w in state["supervisor"]["data"]["workers"].values()]
    postmaster = state["postgres"]["data"]["pid"]
    agent = cluster.agent_pid(primary)
    t0 = time.monotonic()
    cluster.signal_agent(primary, signal.SIGTERM)
    rc = cluster.wait_agent_exit(primary, 90)
    assert rc == 0, cluster.debug_dump()
    others = tuple(n for n in cluster.nodes if n != primary)
    new = cluster.wait_until(lambda: _healthy(cluster, others), 60, "a new primary")
    took = time.monotonic() - t0
    assert new != primary
    # the new primary takes writes
    _sql(cluster, new, "INSERT INTO t VALUES (2, 'after the handover')")
    # the stopped node left nothing behind
    for pid in [agent, postmaster, *pids]:
        assert not _alive(pid), f"pid {pid} still alive"
    assert not os.path.exists(shm_path(cluster.scope, primary))
    assert took < 60
    print(f"\nhandover after SIGTERM: new primary {new} answering /primary after {took:.2f} s")


def _state(c: LoopbackCluster, name: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "pgwarden.supervisor.main", "state",
                          str(c.nodes[name].config_path)], capture_output=True, text=True,
                         timeout=10)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
