"""Real `patronictl` (Patroni 4.1, from its own venv) runs a pgwarden cluster through an
operator's day: list, switchovers (to a named candidate and to any), a manual failover,
history, a scheduled switchover listed, flushed and then let fire, pause/resume, edit-config
(Patroni settings and PostgreSQL parameters, one needing a restart), restarts (pending, one
member, scheduled and flushed), reload, and reinit (with and without --wait).

One 3-node loopback cluster (etcd, PostgreSQL 15, pgwarden agents) for the module. Each
test first waits for a healthy cluster and leaves it healthy. Every test checks both what
patronictl prints and the cluster afterwards: who leads, which replicas stream, the DCS keys
patronictl itself reads, and the GET /patroni fields monitoring reads.

patronictl exits 0 after many failed operations (it prints "Failed: ..."), so the checks
are on its output, never on the exit code alone.
"""
from __future__ import annotations

import json
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
import yaml

from patronictl_util import Ctl, ctl_cluster, need, one_primary, table_header, table_rows
from pgwarden.lab.loopback import LoopbackCluster

pytestmark = pytest.mark.integration

HEAL = 60.0  # a healthy cluster again after an operation (a replica re-follows, a clone)
OP_TIMEOUT = 60.0  # patronictl calls that wait on the operation (switchover, restart)
LOOP_WAIT = 2  # the loopback cluster's loop_wait; edit-config changes it and puts it back


@pytest.fixture(scope="module")
def pctl() -> Iterator[Ctl | None]:
    # pg_rewind and slots as an operator would run a cluster that switches over often
    dcs = {"postgresql": {"use_pg_rewind": True, "use_slots": True,
                          "parameters": {"max_connections": 50}}}
    with ctl_cluster("pgwarden-pctlops-", f"pops{os.getpid()}", extra_dcs=dcs) as ctl:
        if ctl is not None:
            wait_healthy(ctl.cluster, 120)
        yield ctl


# -- observation ----------------------------------------------------------------------


def patroni(c: LoopbackCluster, name: str) -> dict[str, Any]:
    code, body = c.nodes[name].get("/patroni")
    assert code == 200 and isinstance(body, dict), (name, code, body)
    return body


def key(c: LoopbackCluster, name: str) -> Any:
    """A DCS key's JSON value as patronictl reads it (None when absent or empty)."""
    raw = c.etcd_get(name)
    return json.loads(raw) if raw else None


def member_keys(c: LoopbackCluster) -> dict[str, dict[str, Any]]:
    return {n: key(c, f"members/{n}") or {} for n in c.nodes}


def healthy(c: LoopbackCluster) -> str | None:
    """The leader's name when the cluster looks healthy to PostgreSQL, to our health
    checks and to patronictl: one primary holding the leader key, both replicas streaming
    from it, and every member key saying running (replicas: streaming)."""
    leader = one_primary(c)
    if leader is None or c.etcd_get("leader") != leader:
        return None
    rows = c.sql(leader, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
    if not rows or rows[0][0] != len(c.nodes) - 1:
        return None
    for name, m in member_keys(c).items():
        if m.get("state") != "running":
            return None
        if name != leader and m.get("replication_state") != "streaming":
            return None
    return leader


def wait_healthy(c: LoopbackCluster, timeout: float = HEAL) -> str:
    return c.wait_until(lambda: healthy(c), timeout, "a healthy cluster")


def replicas(c: LoopbackCluster, leader: str) -> list[str]:
    return sorted(n for n in c.nodes if n != leader)


def list_json(ctl: Ctl, *extra: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(ctl.run("list", "--format", "json", *extra))
    return {r["Member"]: r for r in rows}


def start_times(c: LoopbackCluster) -> dict[str, str | None]:
    return {n: patroni(c, n).get("postmaster_start_time") for n in c.nodes}


def no_failover_key(c: LoopbackCluster) -> bool:
    return not key(c, "failover")


def check_after_promotion(ctl: Ctl, new: str) -> None:
    """After a switchover or failover to `new`: the leader key, the failover key cleared,
    a history entry naming it, and every member on the new timeline in `list`."""
    c = ctl.cluster
    assert c.etcd_get("leader") == new
    c.wait_until(lambda: no_failover_key(c), 15, "the failover key cleared")
    history = key(c, "history")
    assert isinstance(history, list) and history[-1][-1] == new, history
    tl = patroni(c, new)["timeline"]
    assert tl == history[-1][0] + 1, (tl, history)

    # patronictl runs take seconds each on two shared cores: poll the member keys it reads,
    # then check its table once
    c.wait_until(lambda: all(m.get("timeline") == tl for m in member_keys(c).values()), 15,
                 f"every member key on timeline {tl}")
    rows = list_json(ctl)
    assert rows[new]["Role"] == "Leader" and rows[new]["State"] == "running", rows
    for n in replicas(c, new):
        assert rows[n]["Role"] == "Replica" and rows[n]["State"] == "streaming", rows
        assert rows[n]["TL"] == tl, rows


# -- an operator's day ----------------------------------------------------------------


def test_list_shows_every_member_with_role_state_timeline_and_lag(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    leader = wait_healthy(c)
    tl = patroni(c, leader)["timeline"]
    rows = list_json(ctl)
    assert sorted(rows) == sorted(c.nodes)
    assert rows[leader]["Role"] == "Leader" and rows[leader]["State"] == "running"
    for name in replicas(c, leader):
        row = rows[name]
        assert row["Role"] == "Replica" and row["State"] == "streaming", row
        for col in ("Receive Lag", "Replay Lag"):
            lag = row.get(col)  # MB behind status.optime; left out when "unknown"
            assert isinstance(lag, int) and lag >= 0, row
    assert all(r["TL"] == tl for r in rows.values()), rows
    for row in rows.values():
        # the JSON rows leave out empty cells: nothing pends or is scheduled yet
        assert "Pending restart" not in row and "Scheduled restart" not in row, row
        assert row["Tags"] == {"nofailover": False}, row


def test_switchover_to_a_named_candidate(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    old = wait_healthy(c)
    cand = replicas(c, old)[0]
    out = ctl.run("switchover", c.scope, "--leader", old, "--candidate", cand, "--force",
                  timeout=OP_TIMEOUT)
    assert "Current cluster topology" in out, out
    assert f'Successfully switched over to "{cand}"' in out, out
    assert wait_healthy(c) == cand
    check_after_promotion(ctl, cand)
    assert patroni(c, old)["role"] == "replica"


def test_switchover_without_a_candidate(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    old = wait_healthy(c)
    # no cluster name, no leader: patronictl takes both from its config and the DCS
    out = ctl.run("switchover", "--force", timeout=OP_TIMEOUT)
    assert "Successfully switched over to" in out, out
    new = wait_healthy(c)
    assert new != old and f'Successfully switched over to "{new}"' in out, out
    check_after_promotion(ctl, new)


def test_failover_to_a_named_candidate(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    old = wait_healthy(c)
    cand = replicas(c, old)[-1]
    out = ctl.run("failover", c.scope, "--candidate", cand, "--force", timeout=OP_TIMEOUT)
    assert f'Successfully failed over to "{cand}"' in out, out
    assert wait_healthy(c) == cand
    check_after_promotion(ctl, cand)


def test_history_lists_every_promotion(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    leader = wait_healthy(c)
    written = key(c, "history")
    # the module's switchovers and failover above wrote these
    assert isinstance(written, list) and len(written) >= 3, written
    out = ctl.run("history")
    assert table_header(out) == ["TL", "LSN", "Reason", "Timestamp", "New Leader"], out
    rows = table_rows(out)
    assert len(rows) == len(written), out
    for row, entry in zip(rows, written):
        assert row[0] == str(entry[0]) and row[1] == str(entry[1]), (out, written)
        assert row[2] == str(entry[2]) and row[4] == entry[4], (out, written)
    assert [int(r[0]) for r in rows] == sorted({int(r[0]) for r in rows}), out
    assert rows[-1][4] == leader, out


def test_scheduled_switchover_is_listed_flushed_and_then_fires(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    old = wait_healthy(c)
    cand = replicas(c, old)[0]
    try:
        far = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
        out = ctl.run("switchover", c.scope, "--candidate", cand, "--scheduled", far,
                      "--force")
        assert "Switchover scheduled" in out, out
        value = key(c, "failover")
        assert value and value.get("member") == cand and value.get("leader") == old, value
        assert value.get("scheduled_at"), value
        listed = ctl.run("list")
        assert "Switchover scheduled at:" in listed, listed
        assert f"from: {old}" in listed and f"to: {cand}" in listed, listed

        out = ctl.run("flush", c.scope, "switchover")
        assert "Success: scheduled switchover deleted" in out, out
        assert no_failover_key(c)
        assert "No pending scheduled switchover" in ctl.run("flush", c.scope, "switchover")

        soon = (datetime.now(timezone.utc) + timedelta(seconds=6)).isoformat()
        out = ctl.run("switchover", c.scope, "--candidate", cand, "--scheduled", soon,
                      "--force")
        assert "Switchover scheduled" in out, out
        time.sleep(2)
        assert c.etcd_get("leader") == old, "a switchover scheduled 6 s ahead fired early"
        c.wait_until(lambda: healthy(c) == cand, 40, f"the scheduled switchover to {cand}")
        check_after_promotion(ctl, cand)
    finally:
        # never leave a scheduled switchover behind for the tests that follow
        if key(c, "failover"):
            c.nodes[old].request("DELETE", "/switchover")


def test_pause_and_resume_with_wait(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    leader = wait_healthy(c)
    try:
        out = ctl.run("pause", c.scope, "--wait", timeout=OP_TIMEOUT)
        assert "'pause' request sent, waiting until it is recognized by all nodes" in out, out
        assert "Success: cluster management is paused" in out, out
        # --wait printed success after every member key said pause: check that, and more
        assert key(c, "config").get("pause") is True
        assert all(m.get("pause") is True for m in member_keys(c).values()), member_keys(c)
        c.wait_until(lambda: all(patroni(c, n).get("pause") is True for n in c.nodes), 10,
                     "GET /patroni pause on every member")
        assert " Maintenance mode: on" in ctl.run("list").splitlines()
        # while paused our API refuses a switchover without a candidate, as Patroni's does
        out = ctl.run("switchover", c.scope, "--force")
        assert ("Switchover failed, details: 400, Switchover is possible only to a "
                "specific candidate in a paused state") in out, out
        assert healthy(c) == leader

        out = ctl.run("resume", c.scope, "--wait", timeout=OP_TIMEOUT)
        assert "Success: cluster management is resumed" in out, out
        assert "pause" not in key(c, "config")
        assert not any(m.get("pause") for m in member_keys(c).values()), member_keys(c)
        c.wait_until(lambda: not any(patroni(c, n).get("pause") for n in c.nodes), 10,
                     "GET /patroni without pause on every member")
        assert "Maintenance mode" not in ctl.run("list")
    finally:
        if (key(c, "config") or {}).get("pause"):
            c.nodes[leader].request("PATCH", "/config", {"pause": None})
    assert wait_healthy(c) == leader


def test_edit_config_sets_patroni_settings_and_reloadable_parameters(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    leader = wait_healthy(c)
    try:
        out = ctl.run("edit-config", c.scope, "--force", "-s", f"loop_wait={LOOP_WAIT + 1}")
        assert f"-loop_wait: {LOOP_WAIT}" in out and f"+loop_wait: {LOOP_WAIT + 1}" in out, out
        assert "Configuration changed" in out, out
        assert key(c, "config")["loop_wait"] == LOOP_WAIT + 1
        assert yaml.safe_load(ctl.run("show-config"))["loop_wait"] == LOOP_WAIT + 1
        # patronictl reads loop_wait from the config key for its reload message
        out = ctl.run("reload", c.scope, leader, "--force")
        assert (f"Reload request received for member {leader} and will be processed "
                f"within {LOOP_WAIT + 1} seconds") in out, out

        # a parameter PostgreSQL takes on reload: every member applies it, none pends
        out = ctl.run("edit-config", c.scope, "--force", "--pg", "work_mem=8MB")
        assert "Configuration changed" in out, out
        assert key(c, "config")["postgresql"]["parameters"]["work_mem"] == "8MB"
        c.wait_until(lambda: all((c.sql(n, "SHOW work_mem") or [("?",)])[0][0] == "8MB"
                                 for n in c.nodes), 20, "work_mem 8MB on every member")
        assert not any(patroni(c, n).get("pending_restart") for n in c.nodes)
        # a null removes the key (Patroni's edit-config semantics), and the default returns
        out = ctl.run("edit-config", c.scope, "--force", "-p", "work_mem=null",
                      "-s", f"loop_wait={LOOP_WAIT}")
        assert "Configuration changed" in out, out
        assert "work_mem" not in key(c, "config")["postgresql"]["parameters"]
        assert key(c, "config")["loop_wait"] == LOOP_WAIT
        c.wait_until(lambda: all((c.sql(n, "SHOW work_mem") or [("?",)])[0][0] == "4MB"
                                 for n in c.nodes), 20, "work_mem back to 4MB everywhere")
    finally:
        config = key(c, "config") or {}
        if config.get("loop_wait") != LOOP_WAIT or \
                "work_mem" in config.get("postgresql", {}).get("parameters", {}):
            c.nodes[leader].request("PATCH", "/config", {
                "loop_wait": LOOP_WAIT, "postgresql": {"parameters": {"work_mem": None}}})
    assert wait_healthy(c) == leader


def test_edit_config_restart_parameter_then_restart_pending(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    leader = wait_healthy(c)
    out = ctl.run("edit-config", c.scope, "--force", "--pg", "max_connections=60")
    assert "Configuration changed" in out, out
    c.wait_until(lambda: all(patroni(c, n).get("pending_restart") is True for n in c.nodes),
                 30, "GET /patroni pending_restart on every member")
    for n in c.nodes:
        reason = patroni(c, n).get("pending_restart_reason") or {}
        assert reason.get("max_connections", {}).get("new_value") in ("60", 60), (n, reason)
    c.wait_until(lambda: all(m.get("pending_restart") for m in member_keys(c).values()), 15,
                 "pending_restart in every member key")
    rows = list_json(ctl)
    assert all(r.get("Pending restart") == "*" for r in rows.values()), rows
    assert all("max_connections: 50->60" in r.get("Pending restart reason", "")
               for r in rows.values()), rows

    before = start_times(c)
    out = ctl.run("restart", c.scope, "--pending", "--force", timeout=OP_TIMEOUT * 2)
    for n in c.nodes:
        assert f"Success: restart on member {n}" in out, out
    after = start_times(c)
    assert all(after[n] and after[n] != before[n] for n in c.nodes), (before, after)
    assert all((c.sql(n, "SHOW max_connections") or [("?",)])[0][0] == "60" for n in c.nodes)
    c.wait_until(lambda: not any(patroni(c, n).get("pending_restart") for n in c.nodes), 15,
                 "pending_restart cleared in GET /patroni")
    c.wait_until(lambda: not any(m.get("pending_restart") for m in member_keys(c).values()),
                 15, "pending_restart cleared in the member keys")
    assert wait_healthy(c) == leader


def test_restart_one_member_and_a_scheduled_restart_flushed(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    leader = wait_healthy(c)
    replica = replicas(c, leader)[0]
    before = start_times(c)
    # patronictl sends the timeout as the operator typed it (a string)
    out = ctl.run("restart", c.scope, replica, "--timeout", "60", "--force",
                  timeout=OP_TIMEOUT)
    assert f"Success: restart on member {replica}" in out, out
    after = start_times(c)
    assert after[replica] != before[replica], (before, after)
    assert {n: t for n, t in after.items() if n != replica} == \
        {n: t for n, t in before.items() if n != replica}
    assert wait_healthy(c) == leader

    # only servers older than the version given restart: ours is newer, Patroni's 503
    out = ctl.run("restart", c.scope, replica, "--pg-version", "10.0", "--force")
    assert (f"Failed: restart for member {replica}, status code=503, "
            "(restart conditions are not satisfied)") in out, out

    far = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    try:
        out = ctl.run("restart", c.scope, replica, "--scheduled", far, "--pg-version", "99.0",
                      "--force")
        assert f"Success: restart scheduled on member {replica}" in out, out
        scheduled = patroni(c, replica).get("scheduled_restart", {})
        assert scheduled.get("schedule") == far, scheduled
        assert scheduled.get("postgres_version") == "99.0", scheduled
        c.wait_until(lambda: key(c, f"members/{replica}").get("scheduled_restart"), 10,
                     "scheduled_restart in the member key")
        rows = list_json(ctl)
        assert rows[replica].get("Scheduled restart") == f"{far} if version < 99.0", rows
        out = ctl.run("flush", c.scope, replica, "restart", "--force")
        assert f"Success: flush scheduled restart for member {replica}" in out, out
        assert "scheduled_restart" not in patroni(c, replica)
        c.wait_until(lambda: "scheduled_restart" not in key(c, f"members/{replica}"), 10,
                     "scheduled_restart gone from the member key")
    finally:
        c.nodes[replica].request("DELETE", "/restart")
    assert start_times(c)[replica] == after[replica]
    assert wait_healthy(c) == leader


def test_reload_rereads_the_agents_config_file(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    leader = wait_healthy(c)
    replica = replicas(c, leader)[0]
    node = c.nodes[replica]
    original = node.config_path.read_text()
    doc = yaml.safe_load(original)
    doc["tags"] = dict(doc.get("tags") or {}, datacenter="east")
    try:
        node.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        out = ctl.run("reload", c.scope, "--force")
        for n in c.nodes:
            assert (f"Reload request received for member {n} and will be processed within "
                    f"{LOOP_WAIT} seconds") in out, out
        # the new tag reaches GET /patroni, the member key and patronictl's Tags column
        c.wait_until(lambda: patroni(c, replica).get("tags", {}).get("datacenter") == "east",
                     15, "the new tag in GET /patroni")
        c.wait_until(lambda: key(c, f"members/{replica}").get("tags", {}).get("datacenter")
                     == "east", 15, "the new tag in the member key")
        assert list_json(ctl)[replica]["Tags"] == {"nofailover": False, "datacenter": "east"}
    finally:
        node.config_path.write_text(original)
        ctl.run("reload", c.scope, replica, "--force")
    c.wait_until(lambda: "datacenter" not in key(c, f"members/{replica}").get("tags", {}), 15,
                 "the tag gone again after reloading the original file")
    assert wait_healthy(c) == leader


def test_reinit_a_replica(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    leader = wait_healthy(c)
    replica = replicas(c, leader)[0]
    c.sql(leader, "CREATE TABLE IF NOT EXISTS reinit_marker (x int)")
    before = patroni(c, replica)["postmaster_start_time"]
    out = ctl.run("reinit", c.scope, replica, "--force", timeout=OP_TIMEOUT)
    assert f"Success: reinitialize for member {replica}" in out, out
    assert "Waiting for reinitialize" not in out, out
    assert wait_healthy(c) == leader
    c.wait_until(lambda: patroni(c, replica).get("postmaster_start_time") != before, 30,
                 "a new postmaster on the reinitialized replica")
    assert c.sql(replica, "SELECT count(*) FROM reinit_marker") == [(0,)]


def test_reinit_with_wait_returns_once_the_clone_is_done(pctl: Ctl | None) -> None:
    ctl = need(pctl)
    c = ctl.cluster
    leader = wait_healthy(c)
    replica = replicas(c, leader)[-1]
    c.sql(leader, "CREATE TABLE IF NOT EXISTS reinit_wait_marker (x int)")
    before = patroni(c, replica)["postmaster_start_time"]
    out = ctl.run("reinit", c.scope, replica, "--force", "--wait", timeout=OP_TIMEOUT * 2)
    assert f"Success: reinitialize for member {replica}" in out, out
    assert f"Waiting for reinitialize to complete on: {replica}" in out, out
    assert f"Reinitialize is completed on: {replica}" in out, out
    # patronictl stopped waiting when the state left "creating replica": the clone is done
    assert patroni(c, replica)["state"] != "creating replica"
    assert wait_healthy(c) == leader
    assert patroni(c, replica).get("postmaster_start_time") != before
    assert c.sql(replica, "SELECT count(*) FROM reinit_wait_marker") == [(0,)]
    rows = list_json(ctl)
    assert rows[replica]["Role"] == "Replica" and rows[replica]["State"] == "streaming", rows
