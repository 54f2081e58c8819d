"""pgwardenctl against a real cluster: three pgwarden agents on loopback, etcd, PostgreSQL 15.

Every check compares what pgwardenctl prints or writes with what PostgreSQL or etcd itself
says. The read-only and DCS-writing commands come first; the commands that act through the
members' REST APIs (reload, pause/resume, restart, reinit, switchover, failover, scheduled
switchover) are at the end of the file, since they change the cluster.

pgwardenctl runs as its console script, in a clean environment (its own HOME), with a
patronictl-style config file naming only the etcd endpoint, the scope and the namespace.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from pgwarden.core.version import __version__
from pgwarden.dcs.etcd3 import Etcd3DCS
from pgwarden.dcs.model import ClusterView
from pgwarden.lab.loopback import SUPERUSER_PASSWORD, LoopbackCluster
from pgwarden.postgres.lsn import parse_lsn

pytestmark = pytest.mark.integration

PGWARDENCTL = Path(sys.executable).parent / "pgwardenctl"
PATRONICTL = Path(__file__).resolve().parents[2] / ".venv-patroni" / "bin" / "patronictl"
BOOT_TIMEOUT = 120.0
CTL_TIMEOUT = 120.0
LSN_RE = re.compile(r"^[0-9A-F]{1,8}/[0-9A-F]{1,8}$")


@dataclass
class Env:
    cluster: LoopbackCluster
    config: Path
    home: Path

    @property
    def scope(self) -> str:
        return self.cluster.scope

    def run(self, *args: str, stdin: str | None = None, extra_env: dict[str, str] | None = None,
            tool: Path = PGWARDENCTL) -> subprocess.CompletedProcess[str]:
        """pgwardenctl (or patronictl) with the config file; never raises on a non-zero exit."""
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home),
               "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PGPASSWORD": SUPERUSER_PASSWORD}
        env.update(extra_env or {})
        return subprocess.run([str(tool), "-c", str(self.config), *args], check=False, capture_output=True,
                              text=True, timeout=CTL_TIMEOUT, env=env,
                              input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)

    def ok(self, *args: str, **kw: Any) -> str:
        out = self.run(*args, **kw)
        assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}\n{out.stdout}\n{out.stderr}"
        return out.stdout

    def view(self, scope: str | None = None) -> ClusterView:
        assert self.cluster.etcd is not None
        dcs = Etcd3DCS([self.cluster.etcd.endpoint], f"/service/{scope or self.scope}/", 30, 5.0)
        try:
            return dcs.read_cluster()
        finally:
            dcs.close()


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    # Under /tmp, not pytest's tmp_path: PostgreSQL must traverse the path to its data dir.
    base = Path(tempfile.mkdtemp(prefix="pgwarden-ctl-", dir="/tmp"))
    c = LoopbackCluster(base, size=3, scope=f"ctl{os.getpid()}")
    try:
        c.start_all()
        c.wait_until(lambda: _settled(c), BOOT_TIMEOUT, "one primary and two streaming replicas")
        assert c.etcd is not None
        home = base / "home"
        home.mkdir()
        config = base / "pgwardenctl.yml"
        config.write_text(yaml.safe_dump({"scope": c.scope, "namespace": "/service/",
                                          "etcd3": {"hosts": [c.etcd.endpoint]}}))
        yield Env(c, config, home)
    finally:
        c.close()
        shutil.rmtree(base, ignore_errors=True)


# -- helpers ---------------------------------------------------------------------------------

def _sql(c: LoopbackCluster, name: str, query: str) -> list[tuple[Any, ...]]:
    node = c.nodes[name]
    with psycopg.connect(host="127.0.0.1", port=node.pg_port, user="postgres", password=SUPERUSER_PASSWORD,
                         dbname="postgres", connect_timeout=3, autocommit=True) as conn:
        return conn.execute(query).fetchall()


def _settled(c: LoopbackCluster) -> str | None:
    """The primary's name once one member is primary and every other one streams from it."""
    roles = c.roles()
    primaries = [n for n, (p, _) in roles.items() if p == 200]
    if len(roles) != len(c.nodes) or len(primaries) != 1:
        return None
    try:
        streaming = _sql(c, primaries[0], "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")[0][0]
    except psycopg.Error:
        return None
    return primaries[0] if streaming == len(c.nodes) - 1 else None


def _settled_rows(e: Env) -> list[dict[str, Any]] | None:
    """`list -f json` once it shows a Leader and streaming Replicas only (member keys lag a loop)."""
    rows = json.loads(e.ok("list", "-f", "json"))
    states = sorted((r["Role"], r["State"]) for r in rows)
    expected = [("Leader", "running")] + [("Replica", "streaming")] * (len(e.cluster.nodes) - 1)
    return rows if states == expected else None


def _primary(e: Env) -> str:
    c = e.cluster
    name: str = c.wait_until(lambda: _settled(c), 90, "a settled cluster")
    e.cluster.wait_until(lambda: _settled_rows(e), 30, "list: a Leader and streaming Replicas")
    return name


def _replicas(e: Env, primary: str) -> list[str]:
    return sorted(n for n in e.cluster.nodes if n != primary)


def _table_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in text.splitlines() if line.startswith("|")]


def _one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgwardenctl: "), out.stderr
    return lines[0]


# -- reading the DCS -------------------------------------------------------------------------

def test_list_json_agrees_with_postgresql(env: Env) -> None:
    primary = _primary(env)
    rows = env.cluster.wait_until(lambda: _settled_rows(env), 30, "settled list")
    tl = _sql(env.cluster, primary, "SELECT timeline_id FROM pg_control_checkpoint()")[0][0]
    current = parse_lsn(_sql(env.cluster, primary, "SELECT pg_current_wal_lsn()::text")[0][0])
    for row in rows:
        name = row["Member"]
        in_recovery = _sql(env.cluster, name, "SELECT pg_is_in_recovery()")[0][0]
        assert row["Role"] == ("Replica" if in_recovery else "Leader"), row
        assert row["Cluster"] == env.scope and row["TL"] == tl
        assert row["Host"] == f"127.0.0.1:{env.cluster.nodes[name].pg_port}"
        if name == primary:
            assert "Receive LSN" not in row
            continue
        for col in ("Receive", "Replay"):
            assert LSN_RE.match(row[f"{col} LSN"]) and 0 < parse_lsn(row[f"{col} LSN"]) <= current, row
            assert isinstance(row[f"{col} Lag"], int) and row[f"{col} Lag"] >= 0, row


def test_list_table_shows_what_real_patronictl_shows(env: Env) -> None:
    primary = _primary(env)
    sysid = _sql(env.cluster, primary, "SELECT system_identifier::text FROM pg_control_system()")[0][0]
    ours = env.ok("list")
    assert ours.splitlines()[0].startswith(f"+ Cluster: {env.scope} ({sysid}) ")
    assert _table_rows(ours)[0] == ["Member", "Host", "Role", "State", "TL", "Receive LSN", "Lag",
                                    "Replay LSN", "Lag", "Tags"]
    if not os.access(PATRONICTL, os.X_OK):
        pytest.skip(f"real patronictl not found at {PATRONICTL} (make test builds it)")
    theirs = env.ok("list", tool=PATRONICTL)
    assert ours.splitlines()[0] == theirs.splitlines()[0]
    # member, host, role, state, TL: the same cells (the LSN columns move while we look)
    assert [r[:5] for r in _table_rows(ours)] == [r[:5] for r in _table_rows(theirs)]


def test_list_fencing_shows_each_members_fencing_state_from_its_api(env: Env) -> None:
    primary = _primary(env)
    rows = {r["Member"]: r for r in json.loads(env.ok("list", "--fencing", "-f", "json"))}
    assert sorted(rows) == sorted(env.cluster.nodes)
    for name, row in rows.items():
        # the loopback cluster runs with `watchdog: {mode: off}` and no VIP
        assert row["Watchdog"] == "off" and "Fed" not in row and "VIP" not in row, row
        assert isinstance(row["Worker restarts"], dict) and row["Worker restarts"], row
        assert row["Restarts"] == sum(row["Worker restarts"].values()), row
    lease = rows[primary]["Lease"]
    assert isinstance(lease, float) and 0 < lease <= env.view().config.value.get("ttl", 30), rows[primary]
    table = env.ok("list", "-F")
    assert _table_rows(table)[0][-5:] == ["Watchdog", "Fed", "Lease", "VIP", "Restarts"]


def test_topology_puts_the_replicas_under_the_leader(env: Env) -> None:
    primary = _primary(env)
    names = [r[0] for r in _table_rows(env.ok("topology"))[1:]]
    assert names == [primary] + [f"+ {n}" for n in _replicas(env, primary)]


def test_show_config_prints_the_config_key(env: Env) -> None:
    shown = yaml.safe_load(env.ok("show-config"))
    assert shown == env.view().config.value
    assert shown == env.cluster.config_for(env.cluster.nodes["n1"])["bootstrap"]["dcs"]


def test_edit_config_set_and_pg_change_the_config_key_with_cas(env: Env) -> None:
    before = env.view().config
    out = env.ok("edit-config", "--set", "maximum_lag_on_failover=2097152", "--pg", "work_mem=8MB", "--force")
    assert "-maximum_lag_on_failover: 1048576" in out and "+    work_mem: 8MB" in out
    assert out.rstrip().endswith("Configuration changed")
    after = env.view().config
    assert after.version > before.version
    assert after.value["maximum_lag_on_failover"] == 2097152
    assert after.value["postgresql"]["parameters"]["work_mem"] == "8MB"
    assert env.ok("edit-config", "--pg", "work_mem=8MB", "--force").strip() == "Not changed"
    assert env.view().config.version == after.version


def test_edit_config_loses_nothing_when_the_key_changes_meanwhile(env: Env) -> None:
    # The "editor" first lets someone else change the key, then makes its own edit: our
    # write must fail on the version check instead of overwriting the other change.
    assert env.cluster.etcd is not None
    concurrent = dict(env.view().config.value, pgwardenctl_test_marker=1)
    editor = env.home / "editor.sh"
    editor.write_text(f"""#!/bin/sh
ETCDCTL_API=3 etcdctl --endpoints=http://{env.cluster.etcd.endpoint} put /service/{env.scope}/config '{json.dumps(concurrent)}' >/dev/null
sed -i 's/^loop_wait: .*/loop_wait: 1/' "$1"
""")
    editor.chmod(0o755)
    out = env.run("edit-config", "--force", extra_env={"EDITOR": str(editor)})
    assert out.returncode == 1, out
    assert "Config modification aborted due to concurrent changes" in _one_error_line(out)
    assert env.view().config.value == concurrent
    env.ok("edit-config", "--set", "pgwardenctl_test_marker=", "--force")
    assert "pgwardenctl_test_marker" not in env.view().config.value


def test_history_lists_the_history_key(env: Env) -> None:
    rows = _table_rows(env.ok("history"))
    assert rows[0] == ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
    written = env.view().history.value or []
    assert [r[:2] for r in rows[1:]] == [[str(h[0]), str(h[1])] for h in written]
    assert json.loads(env.ok("history", "-f", "json")) == [
        dict(zip(["TL", "LSN", "Reason", "Timestamp", "New Leader"], h + [""] * (5 - len(h)))) for h in written]


def test_dsn_gives_each_members_address(env: Env) -> None:
    primary = _primary(env)
    for name, node in env.cluster.nodes.items():
        assert env.ok("dsn", "--member", name).strip() == f"host=127.0.0.1 port={node.pg_port}"
    assert env.ok("dsn").strip() == f"host=127.0.0.1 port={env.cluster.nodes[primary].pg_port}"
    out = env.run("dsn", "--member", "nobody")
    assert out.returncode == 1 and "has no member nobody" in _one_error_line(out)


def test_query_runs_on_the_member_asked_for(env: Env) -> None:
    primary = _primary(env)
    replica = _replicas(env, primary)[0]
    sql = "SELECT pg_is_in_recovery(), inet_server_port()"
    assert env.ok("query", "-U", "postgres", "-c", sql).splitlines() == [
        "pg_is_in_recovery\tinet_server_port", f"False\t{env.cluster.nodes[primary].pg_port}"]
    rows = json.loads(env.ok("query", "-U", "postgres", "--member", replica, "--format", "json", "-c", sql))
    assert rows == [{"pg_is_in_recovery": True, "inet_server_port": env.cluster.nodes[replica].pg_port}]
    assert env.ok("query", "-U", "postgres", "--role", "replica", "-c", "SELECT pg_is_in_recovery()") \
        .splitlines()[1] == "True"
    bad = env.run("query", "-U", "postgres", "-c", "SELECT no_such_column")
    assert bad.returncode == 1
    assert "query on " in _one_error_line(bad) and "SQLSTATE 42703" in bad.stderr


def test_version_shows_each_members_agent_and_postgresql(env: Env) -> None:
    lines = env.ok("version", env.scope).splitlines()
    assert lines[0] == f"pgwardenctl version {__version__}"
    pg = _sql(env.cluster, "n1", "SHOW server_version")[0][0].split()[0]
    for name in env.cluster.nodes:
        assert f"{name}: pgwarden {__version__} (Patroni 4.1.4 API) PostgreSQL {pg}" in lines


def test_an_unreachable_dcs_is_one_line_and_exit_1(env: Env) -> None:
    out = env.run("--dcs-url", "etcd3://127.0.0.1:1", "--dcs-timeout", "2", "list")
    assert out.returncode == 1 and out.stdout == ""
    assert "cannot read cluster" in _one_error_line(out) and "127.0.0.1:1" in out.stderr


def test_remove_deletes_every_key_of_a_throwaway_cluster_only(env: Env) -> None:
    assert env.cluster.etcd is not None
    junk = f"junk{os.getpid()}"
    dcs = Etcd3DCS([env.cluster.etcd.endpoint], f"/service/{junk}/", 30, 5.0)
    try:
        assert dcs.initialize("7000000000000000001", create=True)
        assert dcs.set_config({"ttl": 30}, 0)
        dcs.set_history([[1, 100, "no recovery target specified", "2026-01-01T00:00:00+00:00", "j1"]])
        dcs.touch_member("j1", {"conn_url": "postgres://127.0.0.1:1/postgres", "api_url": "http://127.0.0.1:1/patroni",
                                "state": "running", "role": "primary"})
        assert dcs.acquire_leader("j1")
        wrong = env.run("remove", junk, stdin=f"{junk}\nYes I am aware\nj2\n")
        assert wrong.returncode == 1 and "did not specify the current leader" in _one_error_line(wrong)
        assert env.view(junk).leader == "j1"
        out = env.run("remove", junk, stdin=f"{junk}\nYes I am aware\nj1\n")
        assert out.returncode == 0, out
        gone = env.view(junk)
        assert (gone.members, gone.leader, gone.initialize, gone.config.version, gone.history.version) == \
            ({}, None, None, 0, 0)
        assert len(env.view().members) == len(env.cluster.nodes)  # the real cluster is untouched
    finally:
        dcs.close()


# -- actions through the REST API (they change the cluster: keep them last) -----------------

def test_reload_every_member(env: Env) -> None:
    _primary(env)
    out = env.ok("reload", env.scope, "--force")
    for name in env.cluster.nodes:
        assert re.search(rf"(No changes to apply on member {name}|Reload request received for member {name})", out)


def test_pause_then_resume_sets_and_clears_pause_in_the_config_key(env: Env) -> None:
    _primary(env)
    out = env.ok("pause", "--wait")
    assert out.rstrip().endswith("Success: cluster management is paused")
    assert env.view().config.value.get("pause") is True
    assert all(m.data.get("pause") is True for m in env.view().members.values())
    assert " Maintenance mode: on" in env.ok("list").splitlines()
    again = env.run("pause")
    assert again.returncode == 1 and _one_error_line(again) == "pgwardenctl: Cluster is already paused"
    out = env.ok("resume", "--wait")
    assert out.rstrip().endswith("Success: cluster management is resumed")
    assert not env.view().config.value.get("pause")
    assert not any(m.data.get("pause") for m in env.view().members.values())


def _start_time(e: Env, name: str) -> datetime.datetime:
    value: datetime.datetime = _sql(e.cluster, name, "SELECT pg_postmaster_start_time()")[0][0]
    return value


def test_restart_a_replica_starts_a_new_postmaster(env: Env) -> None:
    replica = _replicas(env, _primary(env))[0]
    before = _start_time(env, replica)
    out = env.ok("restart", env.scope, replica, "--force", "--wait")
    assert f"Success: restart on member {replica}" in out
    assert _start_time(env, replica) > before
    assert _sql(env.cluster, replica, "SELECT pg_is_in_recovery()")[0][0] is True


def test_reinit_rebuilds_a_replica(env: Env) -> None:
    primary = _primary(env)
    replica = _replicas(env, primary)[-1]
    # a file only this replica's data dir has: a rebuild from the leader's copy drops it
    marker = env.cluster.nodes[replica].data_dir / "pgwardenctl-reinit-marker"
    marker.write_text("x")
    out = env.ok("reinit", env.scope, replica, "--force", "--wait")
    assert f"Reinitialize is completed on: {replica}" in out
    assert not marker.exists()
    assert _sql(env.cluster, replica, "SELECT pg_is_in_recovery()")[0][0] is True
    assert _primary(env) == primary


def test_switchover_to_a_named_candidate(env: Env) -> None:
    old = _primary(env)
    candidate = _replicas(env, old)[0]
    history = len(env.view().history.value or [])
    out = env.ok("switchover", "--leader", old, "--candidate", candidate, "--force", "--wait")
    assert f"Switchover complete: {candidate} is the new leader" in out
    assert _primary(env) == candidate
    assert _sql(env.cluster, candidate, "SELECT pg_is_in_recovery()")[0][0] is False
    entries = env.cluster.wait_until(lambda: (h := env.view().history.value or []) and len(h) > history and h,
                                     30, "a history entry for the switchover")
    assert entries[-1][4] == candidate
    assert _table_rows(env.ok("history"))[-1][4] == candidate


def test_failover_to_a_named_candidate(env: Env) -> None:
    old = _primary(env)
    candidate = _replicas(env, old)[-1]
    out = env.ok("failover", "--candidate", candidate, "--force", "--wait")
    assert f"Failover complete: {candidate} is the new leader" in out
    assert _primary(env) == candidate


def test_scheduled_switchover_is_listed_then_cancelled(env: Env) -> None:
    leader = _primary(env)
    when = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).replace(microsecond=0)
    env.ok("switchover", "--scheduled", when.isoformat(), "--force")
    failover = env.view().failover.value
    assert failover["leader"] == leader
    assert datetime.datetime.fromisoformat(failover["scheduled_at"]) == when
    assert any(line.startswith(" Switchover scheduled at: ") for line in env.ok("list").splitlines())
    assert "Success" in env.ok("switchover", "--cancel")
    assert not (env.view().failover.value or {}).get("scheduled_at")
    assert _primary(env) == leader
