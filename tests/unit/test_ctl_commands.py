"""pgwardenctl's commands against a fake DCS and fake REST APIs: what is sent, what is
printed, and the exit status a script sees (0 done, 1 failed/refused, 2 usage, 3 pending)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctl_fakes import FakeApi, FakeClock, FakeStore, fenced, isolate_env, make_view, member_data, ok, patroni, run_ctl
from pgwarden.ctl.errors import ApiUnreachable
from pgwarden.ctl.rest import ApiResponse
from pgwarden.dcs.model import ClusterView, Versioned


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate_env(monkeypatch, tmp_path)


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("pgwardenctl: "), err
    return err


# -- reading ---------------------------------------------------------------------------------

def test_list_prints_the_table_and_the_maintenance_line(capsys: Any) -> None:
    r = run_ctl(["list"], FakeStore(make_view(config={"pause": True})), capsys=capsys)
    assert r.code == 0 and r.err == ""
    lines = r.out.splitlines()
    assert lines[0].startswith("+ Cluster: demo (7301234567890123456) ")
    assert lines[-1] == " Maintenance mode: on"


def test_list_json_has_no_service_lines(capsys: Any) -> None:
    r = run_ctl(["list", "-f", "json"], FakeStore(make_view(config={"pause": True})), capsys=capsys)
    assert [row["Member"] for row in json.loads(r.out)] == ["n1", "n2", "n3"]


def test_an_unreachable_dcs_is_one_line_and_exit_1(capsys: Any) -> None:
    store = FakeStore(make_view(), fail="etcd 127.0.0.1:2379: range: no answer within 5.0 s")
    r = run_ctl(["list"], store, capsys=capsys)
    assert r.code == 1 and r.out == ""
    assert _one_line(r.err) == ("pgwardenctl: cannot read cluster demo from the DCS: "
                                "etcd 127.0.0.1:2379: range: no answer within 5.0 s\n")


def test_show_config_prints_yaml_and_fails_without_a_config_key(capsys: Any) -> None:
    r = run_ctl(["show-config"], capsys=capsys)
    assert r.code == 0 and r.out.startswith("loop_wait: 10\nmaximum_lag_on_failover: 1048576\n")
    r = run_ctl(["show-config"], FakeStore(replace(make_view(), config=Versioned())), capsys=capsys)
    assert r.code == 1 and "has no config key" in _one_line(r.err)


def test_dsn_is_the_leaders_unless_a_role_or_member_is_named(capsys: Any) -> None:
    assert run_ctl(["dsn"], capsys=capsys).out == "host=10.0.0.1 port=5432\n"
    assert run_ctl(["dsn", "--role", "replica"], capsys=capsys).out == "host=10.0.0.2 port=5432\n"
    assert run_ctl(["dsn", "-m", "n3"], capsys=capsys).out == "host=10.0.0.3 port=5432\n"
    r = run_ctl(["dsn", "-m", "n9"], capsys=capsys)
    assert r.code == 1 and _one_line(r.err) == "pgwardenctl: cluster demo has no member n9\n"


def test_history_is_a_table_with_patronictls_columns(capsys: Any) -> None:
    view = make_view(history=[[1, 83886240, "no recovery target specified", "2026-01-02T10:00:00+00:00", "n2"]])
    r = run_ctl(["history"], FakeStore(view), capsys=capsys)
    assert r.out.splitlines()[1] == "| TL |      LSN | Reason                       | Timestamp                 | New Leader |"
    assert r.out.splitlines()[3] == "|  1 | 83886240 | no recovery target specified | 2026-01-02T10:00:00+00:00 | n2         |"


def test_version_asks_each_member_and_fails_if_one_does_not_answer(capsys: Any) -> None:
    body = {"state": "running", "server_version": 150008, "patroni": {"version": "4.1.4"},
            "pgwarden": {"version": "0.1.0"}}
    api = (FakeApi().on("n1", "GET", "patroni", ok(json.dumps(body)))
           .on("n2", "GET", "patroni", ok(json.dumps({"server_version": 170002, "patroni": {"version": "4.1.5"}}))))
    r = run_ctl(["version", "demo"], api=api, capsys=capsys)
    assert r.code == 1
    assert r.out.splitlines() == [
        "pgwardenctl version 0.1.0", "",
        "n1: pgwarden 0.1.0 (Patroni 4.1.4 API) PostgreSQL 15.8",
        "n2: Patroni 4.1.5 PostgreSQL 17.2",
        "n3: failed to get version: n3: GET http://n3/patroni failed: Connection refused"]
    assert run_ctl(["version"], capsys=capsys).out == "pgwardenctl version 0.1.0\n"


# -- list --fencing --------------------------------------------------------------------------

def _fencing_api() -> FakeApi:
    """n1 answers (armed, holds the VIP), n2 answers 503 (PostgreSQL down: the body still counts),
    n3's API is down."""
    return (FakeApi().on("n1", "GET", "patroni", fenced(vip=True, restarts={"api": 1, "lease": 2}))
            .on("n2", "GET", "patroni", fenced("automatic", armed=False, lease=None, status=503)))


def test_list_fencing_asks_every_members_patroni_and_a_silent_one_shows_question_marks(capsys: Any) -> None:
    api = _fencing_api()
    plain = run_ctl(["list"], api=api, capsys=capsys)
    assert api.calls == []  # without the flag: the DCS only, no REST call
    r = run_ctl(["list", "--fencing"], api=api, capsys=capsys)
    assert r.code == 0 and r.err == ""
    assert sorted(api.calls) == [("n1", "GET", "patroni", None), ("n2", "GET", "patroni", None),
                                 ("n3", "GET", "patroni", None)]
    lines, before = r.out.splitlines(), plain.out.splitlines()
    # each line starts as the usual table's (up to its closing | or +), then the fencing columns
    assert [line[:len(b) - 1] for line, b in zip(lines, before)] == [b[:-1] for b in before]
    assert lines[1].endswith("| Watchdog             | Fed | Lease | VIP  | Restarts |")
    assert lines[3].endswith("| armed (required)     | 1.2 |  27.5 | held |        3 |")
    assert lines[4].endswith("| disarmed (automatic) |     |       |      |        0 |")
    assert lines[5].endswith("| ?                    |   ? |     ? | ?    |        ? |")


def test_list_fencing_short_flag_with_json_yaml_and_tsv(capsys: Any) -> None:
    rows = json.loads(run_ctl(["list", "-F", "-f", "json"], api=_fencing_api(), capsys=capsys).out)
    assert rows[0]["Member"] == "n1" and rows[0]["Lease"] == 27.5 and rows[0]["Fed"] == 1.2
    assert rows[0]["Restarts"] == 3 and rows[0]["Worker restarts"] == {"api": 1, "lease": 2}
    assert rows[1]["Watchdog"] == "disarmed (automatic)" and "Lease" not in rows[1]  # empty cells left out
    assert rows[2]["Watchdog"] == rows[2]["Lease"] == "?" and rows[2]["State"] == "streaming"
    assert yaml.safe_load(run_ctl(["list", "-F", "-f", "yaml"], api=_fencing_api(), capsys=capsys).out) == rows
    tsv = run_ctl(["list", "-F", "-f", "tsv"], api=_fencing_api(), capsys=capsys).out.splitlines()
    assert tsv[0].endswith("\tWatchdog\tFed\tLease\tVIP\tRestarts")
    assert tsv[1].endswith("\tarmed (required)\t1.2\t27.5\theld\t3")
    assert tsv[3].endswith("\t?\t?\t?\t?\t?")


def test_list_fencing_with_every_api_down_still_prints_every_row(capsys: Any) -> None:
    r = run_ctl(["list", "--fencing", "-f", "json"], capsys=capsys)
    assert r.code == 0 and r.err == ""
    assert [(row["Member"], row["Watchdog"], row["Restarts"]) for row in json.loads(r.out)] == [
        ("n1", "?", "?"), ("n2", "?", "?"), ("n3", "?", "?")]


class _StopAfter(FakeClock):
    """A clock whose n-th sleep is the user's Ctrl-C (how a watch ends)."""

    def __init__(self, sleeps: int) -> None:
        super().__init__()
        self.left = sleeps

    def sleep(self, seconds: float) -> None:
        self.left -= 1
        if self.left <= 0:
            raise KeyboardInterrupt
        super().sleep(seconds)


def test_list_fencing_watch_asks_again_at_each_refresh(capsys: Any) -> None:
    api = (FakeApi().on("n1", "GET", "patroni", fenced(lease=27.46), fenced(lease=25.0))
           .on("n2", "GET", "patroni", fenced()).on("n3", "GET", "patroni", fenced()))
    r = run_ctl(["list", "-F", "-w", "2", "-f", "tsv"], api=api, clock=_StopAfter(2), capsys=capsys)
    assert r.code == 0
    assert len(api.calls) == 6
    leader_rows = [line for line in r.out.splitlines() if line.startswith("demo\tn1\t")]
    assert [row.split("\t")[12] for row in leader_rows] == ["27.5", "25.0"]


# -- switchover / failover -------------------------------------------------------------------

def test_switchover_posts_leader_and_candidate_to_the_leader(capsys: Any) -> None:
    api = FakeApi().on("n1", "POST", "switchover", ok('Successfully switched over to "n2"'))
    r = run_ctl(["switchover", "--candidate", "n2", "--force"], api=api, capsys=capsys)
    assert r.code == 0, r.err
    assert api.calls == [("n1", "POST", "switchover", {"leader": "n1", "candidate": "n2"})]
    assert '2026-01-02 10:00:00.000 Successfully switched over to "n2"' in r.out


def test_a_refused_switchover_exits_1_with_the_apis_reason(capsys: Any) -> None:
    api = FakeApi().on("n1", "POST", "switchover", ok(json.dumps({"error": "candidate name does not match"}), 412))
    r = run_ctl(["switchover", "--candidate", "n2", "--force"], api=api, capsys=capsys)
    assert r.code == 1
    assert _one_line(r.err) == "pgwardenctl: Switchover failed, details: 412, candidate name does not match\n"


def test_a_switchover_still_running_when_the_api_gives_up_exits_3_not_1(capsys: Any) -> None:
    api = FakeApi().on("n1", "POST", "switchover",
                       ok("Switchover status unknown after 20 seconds; operation may still be in progress", 503))
    r = run_ctl(["switchover", "--force"], api=api, capsys=capsys)
    assert r.code == 3 and "still in progress" in _one_line(r.err)
    assert api.calls[0][3] == {"leader": "n1"}  # no candidate: the healthiest replica


def test_an_unreachable_leader_api_falls_back_to_the_failover_key(capsys: Any) -> None:
    store = FakeStore(make_view(failover=""))
    r = run_ctl(["switchover", "--candidate", "n3", "--force"], store, capsys=capsys)
    assert store.writes == [("failover", {"leader": "n1", "member": "n3"}, 8)]
    assert "falling back to DCS" in r.out
    assert r.code == 3  # requested, not yet done


def test_the_fallback_refuses_to_overwrite_a_concurrent_failover_request(capsys: Any) -> None:
    store = FakeStore(make_view(), cas_ok=False)
    r = run_ctl(["switchover", "--candidate", "n3", "--force"], store, capsys=capsys)
    assert r.code == 1 and "the failover key changed meanwhile" in _one_line(r.err)


@pytest.mark.parametrize("argv, view, words", [
    (["switchover", "--force"], make_view(leader=None), "This cluster has no leader"),
    (["switchover", "--leader", "n2", "--force"], make_view(), "Member n2 is not the leader of cluster demo"),
    (["switchover", "--candidate", "n1", "--force"], make_view(), "Member n1 is already the leader"),
    (["switchover", "--candidate", "n3", "--force"],
     make_view({"n1": member_data("n1", "primary"), "n2": member_data("n2"),
                "n3": member_data("n3", tags={"nofailover": True})}), "does not exist in cluster demo or is tagged"),
    (["switchover", "--force"], make_view({"n1": member_data("n1", "primary")}), "No candidates found"),
    (["switchover", "--scheduled", "2030-01-01T10:00+00:00", "--force"], make_view(config={"pause": True}),
     "Can't schedule switchover in the paused state"),
])
def test_switchover_checks_the_cluster_first_and_sends_nothing_when_refused(
        capsys: Any, argv: list[str], view: Any, words: str) -> None:
    r = run_ctl(argv, FakeStore(view), capsys=capsys)
    assert r.code == 1 and words in _one_line(r.err)
    assert r.api.calls == [] and r.store.writes == []


def test_declining_the_question_sends_nothing(capsys: Any) -> None:
    r = run_ctl(["switchover", "--candidate", "n2"], stdin="n\n", capsys=capsys)
    assert r.code == 1 and _one_line(r.err) == "pgwardenctl: Aborting switchover\n"
    assert "Are you sure you want to switchover cluster demo, demoting current leader n1? [y/N]: " in r.out
    assert r.api.calls == []


def test_a_closed_stdin_without_force_says_to_pass_force(capsys: Any) -> None:
    r = run_ctl(["switchover", "--candidate", "n2"], capsys=capsys)
    assert r.code == 1 and "pass --force" in _one_line(r.err) and r.api.calls == []


def test_a_scheduled_switchover_sends_the_time_with_its_zone(capsys: Any) -> None:
    api = FakeApi().on("n1", "POST", "switchover", ok("Switchover scheduled", 202))
    r = run_ctl(["switchover", "--scheduled", "2030-01-01T10:00+02:00", "--force"], api=api, capsys=capsys)
    assert r.code == 0
    assert api.calls[0][3] == {"leader": "n1", "scheduled_at": "2030-01-01T10:00:00+02:00"}


def _handover_views() -> list[Any]:
    before = make_view()
    unlocked = make_view({"n1": member_data("n1", "primary", state="stopping"), "n2": member_data("n2"),
                          "n3": member_data("n3")}, leader=None)
    promoting = make_view({"n1": member_data("n1", state="stopped"), "n2": member_data("n2", state="starting"),
                           "n3": member_data("n3")}, leader="n2")
    done = make_view({"n1": member_data("n1"), "n2": member_data("n2", "primary"), "n3": member_data("n3")},
                     leader="n2")
    return [before, before, unlocked, promoting, done]


def test_switchover_wait_prints_each_change_until_the_new_leader_runs(capsys: Any) -> None:
    store = FakeStore(make_view(), views=_handover_views())
    api = FakeApi().on("n1", "POST", "switchover", ok('Successfully switched over to "n2"'))
    r = run_ctl(["switchover", "--candidate", "n2", "--force", "--wait"], store, api, capsys=capsys)
    assert r.code == 0, r.err
    progress = [line for line in r.out.splitlines() if line.startswith("2026-01-02")]
    assert [p.split(" ", 2)[2] for p in progress if "leader:" in p] == [
        "leader: n1; n1 primary running, n2 replica running, n3 replica running",
        "leader: none; n1 primary stopping, n2 replica running, n3 replica running",
        "leader: n2; n1 replica stopped, n2 replica starting, n3 replica running",
        "leader: n2; n1 replica running, n2 primary running, n3 replica running"]
    assert any(p.endswith("Switchover complete: n2 is the new leader") for p in progress)


def test_switchover_wait_that_runs_out_of_time_exits_3(capsys: Any) -> None:
    api = FakeApi().on("n1", "POST", "switchover",
                       ok("Switchover status unknown after 20 seconds; operation may still be in progress", 503))
    r = run_ctl(["switchover", "--force", "--wait", "--wait-timeout", "5"], api=api, capsys=capsys)
    assert r.code == 3 and "still in progress after 5 s (leader: n1)" in _one_line(r.err)


def test_switchover_wait_stops_at_once_when_the_api_refuses(capsys: Any) -> None:
    api = FakeApi().on("n1", "POST", "switchover", ok("no good candidates have been found", 412))
    r = run_ctl(["switchover", "--force", "--wait"], api=api, capsys=capsys)
    assert r.code == 1 and "Switchover failed, details: 412" in _one_line(r.err)


def test_cancel_deletes_the_scheduled_switchover_at_the_leader(capsys: Any) -> None:
    view = make_view(failover={"leader": "n1", "scheduled_at": "2030-01-01T10:00:00+00:00"})
    api = FakeApi().on("n1", "DELETE", "switchover", ok("scheduled switchover deleted"))
    r = run_ctl(["switchover", "--cancel"], FakeStore(view), api, capsys=capsys)
    assert r.code == 0 and "Success: scheduled switchover deleted" in r.out
    assert api.calls == [("n1", "DELETE", "switchover", None)]


def test_cancel_without_any_api_clears_the_failover_key_with_cas(capsys: Any) -> None:
    store = FakeStore(make_view(failover={"leader": "n1", "scheduled_at": "2030-01-01T10:00:00+00:00"}))
    r = run_ctl(["flush", "demo", "switchover"], store, capsys=capsys)
    assert r.code == 0 and store.writes == [("delete failover", None, 8)]
    assert [c[0] for c in r.api.calls] == ["n1", "n2", "n3"]  # the leader first


def test_failover_needs_a_candidate_when_it_cannot_ask(capsys: Any) -> None:
    r = run_ctl(["failover", "--force"], capsys=capsys)
    assert r.code == 2 and "Failover could be performed only to a specific candidate" in _one_line(r.err)


def test_failover_without_a_leader_posts_to_the_candidate(capsys: Any) -> None:
    view = make_view({"n1": member_data("n1", state="stopped"), "n2": member_data("n2")}, leader=None)
    api = FakeApi().on("n2", "POST", "failover", ok('Successfully failed over to "n2"'))
    r = run_ctl(["failover", "--candidate", "n2", "--force"], FakeStore(view), api, capsys=capsys)
    assert r.code == 0 and api.calls == [("n2", "POST", "failover", {"candidate": "n2"})]


def test_failover_to_an_async_node_in_sync_mode_asks_first(capsys: Any) -> None:
    view = make_view(config={"synchronous_mode": True}, sync={"leader": "n1", "sync_standby": "n2"})
    r = run_ctl(["failover", "--candidate", "n3"], FakeStore(view), stdin="n\n", capsys=capsys)
    assert "asynchronous node n3?" in r.out and r.code == 1 and r.api.calls == []


# -- restart / reload / reinit ---------------------------------------------------------------

def test_restart_posts_to_each_member_with_the_role_guard(capsys: Any) -> None:
    api = FakeApi().on("n2", "POST", "restart", ok("restarted successfully")).on(
        "n3", "POST", "restart", ok("another restart is scheduled", 409))
    r = run_ctl(["restart", "demo", "--role", "replica", "--timeout", "60s", "--force"], api=api, capsys=capsys)
    assert [c[:3] for c in api.calls] == [("n2", "POST", "restart"), ("n3", "POST", "restart")]
    assert api.calls[0][3] == {"role": "replica", "timeout": "60s"}
    assert "Success: restart on member n2" in r.out
    assert "Failed: another restart is already scheduled on member n3" in r.out
    assert r.code == 1  # one member failed


def test_restart_pending_only_picks_flagged_members(capsys: Any) -> None:
    view = make_view({"n1": member_data("n1", "primary"), "n2": member_data("n2", pending_restart=True),
                      "n3": member_data("n3")})
    api = FakeApi().on("n2", "POST", "restart", ok("restarted successfully"))
    r = run_ctl(["restart", "demo", "--pending", "--force"], FakeStore(view), api, capsys=capsys)
    assert r.code == 0 and api.calls == [("n2", "POST", "restart", {"restart_pending": True})]


def test_restart_of_an_unknown_member_is_refused(capsys: Any) -> None:
    r = run_ctl(["restart", "demo", "n7", "--force"], capsys=capsys)
    assert r.code == 1 and "n7 is not a member of cluster demo (members: n1, n2, n3)" in _one_line(r.err)


def test_restart_wait_follows_the_member_until_a_new_postmaster_runs(capsys: Any) -> None:
    api = (FakeApi().on("n2", "GET", "patroni", patroni(start="A"), patroni("stopping", "A"),
                        patroni("starting", "A"), patroni(start="B"))
           .on("n2", "POST", "restart", ok("restarted successfully")))
    r = run_ctl(["restart", "demo", "n2", "--force", "--wait"], api=api, capsys=capsys)
    assert r.code == 0, r.err
    assert "n2: stopping (replica)" in r.out and "n2: running (replica)" in r.out
    assert r.out.rstrip().endswith("Success: restart on member n2")


def test_scheduling_a_restart_while_paused_is_refused(capsys: Any) -> None:
    r = run_ctl(["restart", "demo", "--scheduled", "2030-01-01T10:00+00:00", "--force"],
                FakeStore(make_view(config={"pause": True})), capsys=capsys)
    assert r.code == 1 and "Can't schedule restart in the paused state" in r.err and r.api.calls == []


def test_reload_reports_when_it_will_be_processed(capsys: Any) -> None:
    api = FakeApi().on("n1", "POST", "reload", ok("reload scheduled", 202))
    r = run_ctl(["reload", "demo", "n1", "--force"], api=api, capsys=capsys)
    assert r.code == 0
    assert "Reload request received for member n1 and will be processed within 10 seconds" in r.out


def test_reinit_refuses_the_leader(capsys: Any) -> None:
    r = run_ctl(["reinit", "demo", "n1", "--force"], capsys=capsys)
    assert r.code == 1 and "n1 is the leader of cluster demo: only replicas" in _one_line(r.err)


def test_reinit_offers_to_cancel_one_already_in_progress(capsys: Any) -> None:
    api = FakeApi().on("n2", "POST", "reinitialize", ok("reinitialize already in progress", 503),
                       ok("reinitialize started"))
    r = run_ctl(["reinit", "demo", "n2"], api=api, stdin="y\ny\n", capsys=capsys)
    assert r.code == 0, r.err
    assert [c[3] for c in api.calls] == [{"force": False}, {"force": True}]


def test_reinit_wait_follows_creating_replica_to_running(capsys: Any) -> None:
    api = (FakeApi().on("n2", "GET", "patroni", patroni(start="A"), patroni("creating replica", None),
                        patroni(start="B"))
           .on("n2", "POST", "reinitialize", ok("reinitialize started")))
    r = run_ctl(["reinit", "demo", "n2", "--force", "--wait"], api=api, capsys=capsys)
    assert r.code == 0, r.err
    assert "n2: creating replica (replica)" in r.out and "Reinitialize is completed on: n2" in r.out


def test_reinit_wait_reports_a_failed_rebuild_as_failed(capsys: Any) -> None:
    api = (FakeApi().on("n2", "GET", "patroni", patroni(start="A"), patroni("start failed", None))
           .on("n2", "POST", "reinitialize", ok("reinitialize started")))
    r = run_ctl(["reinit", "demo", "n2", "--force", "--wait"], api=api, capsys=capsys)
    assert r.code == 1 and "reinitialize of n2 failed: PostgreSQL is 'start failed'" in _one_line(r.err)


# -- pause / resume --------------------------------------------------------------------------

def test_pause_patches_the_config_at_the_leader_and_tries_the_next_member(capsys: Any) -> None:
    api = FakeApi().on("n1", "PATCH", "config", ApiUnreachable("n1: no answer")).on(
        "n2", "PATCH", "config", ok("{}"))
    r = run_ctl(["pause"], api=api, capsys=capsys)
    assert r.code == 0 and r.out == "Success: cluster management is paused\n"
    assert [(c[0], c[3]) for c in api.calls] == [("n1", {"pause": True}), ("n2", {"pause": True})]
    assert "n1: no answer; trying the next member" in r.err


def test_resume_sends_null_and_refuses_when_not_paused(capsys: Any) -> None:
    api = FakeApi().on("n1", "PATCH", "config", ok("{}"))
    r = run_ctl(["resume"], FakeStore(make_view(config={"pause": True})), api, capsys=capsys)
    assert r.code == 0 and api.calls[0][3] == {"pause": None}
    r = run_ctl(["resume"], capsys=capsys)
    assert r.code == 1 and _one_line(r.err) == "pgwardenctl: Cluster is not paused\n"


def test_pause_wait_polls_the_members_pause_flags(capsys: Any) -> None:
    paused_some = make_view({"n1": member_data("n1", "primary", pause=True), "n2": member_data("n2"),
                             "n3": member_data("n3", pause=True)})
    paused_all = make_view({n: member_data(n, "primary" if n == "n1" else "replica", pause=True)
                            for n in ("n1", "n2", "n3")})
    store = FakeStore(make_view(), views=[make_view(), paused_some, paused_all])
    api = FakeApi().on("n1", "PATCH", "config", ok("{}"))
    r = run_ctl(["pause", "--wait"], store, api, capsys=capsys)
    assert r.code == 0
    assert "waiting for: n2" in r.out and r.out.endswith("Success: cluster management is paused\n")


# -- edit-config -----------------------------------------------------------------------------

def test_edit_config_set_and_pg_write_with_cas_on_the_version_read(capsys: Any) -> None:
    r = run_ctl(["edit-config", "-s", "loop_wait=5", "-p", "work_mem=8MB", "--force"], capsys=capsys)
    assert r.code == 0 and r.out.endswith("Configuration changed\n")
    (what, value, version), = r.store.writes
    assert what == "config" and version == 5
    assert value["loop_wait"] == 5 and value["postgresql"]["parameters"]["work_mem"] == "8MB"
    assert "-loop_wait: 10\n+loop_wait: 5\n" in r.out


def test_edit_config_reports_a_concurrent_change_and_exits_1(capsys: Any) -> None:
    r = run_ctl(["edit-config", "-s", "loop_wait=5", "--force"], FakeStore(make_view(), cas_ok=False), capsys=capsys)
    assert r.code == 1 and "Config modification aborted due to concurrent changes" in _one_line(r.err)
    assert "Configuration changed" not in r.out


def test_edit_config_with_nothing_to_change_writes_nothing(capsys: Any) -> None:
    r = run_ctl(["edit-config", "-s", "loop_wait=10", "--force"], capsys=capsys)
    assert (r.code, r.out, r.store.writes) == (0, "Not changed\n", [])


def test_edit_config_refuses_values_no_agent_can_use(capsys: Any) -> None:
    r = run_ctl(["edit-config", "-s", "ttl=soon", "--force"], capsys=capsys)
    assert r.code == 2 and "config.ttl" in _one_line(r.err) and r.store.writes == []


def test_edit_config_asks_and_a_no_writes_nothing(capsys: Any) -> None:
    r = run_ctl(["edit-config", "-s", "loop_wait=5"], stdin="no\n", capsys=capsys)
    assert r.code == 1 and "Apply these changes? [y/N]: " in r.out and r.store.writes == []


def test_edit_config_apply_merges_a_yaml_file(capsys: Any, tmp_path: Path) -> None:
    patch = tmp_path / "patch.yml"
    patch.write_text("postgresql:\n  parameters:\n    work_mem: 16MB\nttl: null\n")
    r = run_ctl(["edit-config", "--apply", str(patch), "--force", "-q"], capsys=capsys)
    assert r.code == 0 and r.out == "Configuration changed\n"
    value = r.store.writes[0][1]
    assert "ttl" not in value and value["postgresql"]["parameters"] == {"max_connections": 100, "work_mem": "16MB"}


def test_edit_config_opens_the_editor_on_the_yaml(capsys: Any, tmp_path: Path) -> None:
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/^loop_wait: 10$/loop_wait: 7/' \"$1\"\n")
    editor.chmod(0o755)
    r = run_ctl(["edit-config", "--force"], capsys=capsys, env={"EDITOR": str(editor)})
    assert r.code == 0, r.err
    assert r.store.writes[0][1]["loop_wait"] == 7


def test_a_failing_editor_changes_nothing(capsys: Any) -> None:
    r = run_ctl(["edit-config", "--force"], capsys=capsys, env={"EDITOR": "false"})
    assert r.code == 1 and "exited with status 1: nothing changed" in _one_line(r.err) and r.store.writes == []


# -- remove / flush --------------------------------------------------------------------------

def test_remove_needs_the_name_the_sentence_and_the_leader(capsys: Any) -> None:
    r = run_ctl(["remove", "demo"], stdin="demo\nYes I am aware\nn1\n", capsys=capsys)
    assert r.code == 0 and r.store.deleted
    assert "Removed every key of cluster demo under /service/demo/" in r.out


@pytest.mark.parametrize("answers, words", [
    ("other\n", "Cluster names specified do not match"),
    ("demo\nyes\n", 'You did not exactly type "Yes I am aware"'),
    ("demo\nYes I am aware\nn2\n", "You did not specify the current leader"),
])
def test_remove_stops_at_a_wrong_answer(capsys: Any, answers: str, words: str) -> None:
    r = run_ctl(["remove", "demo"], stdin=answers, capsys=capsys)
    assert r.code == 1 and words in _one_line(r.err) and not r.store.deleted


def test_remove_of_a_cluster_without_keys_says_so(capsys: Any) -> None:
    r = run_ctl(["remove", "demo"], FakeStore(ClusterView()), capsys=capsys)
    assert r.code == 1 and "has no keys under /service/demo/" in _one_line(r.err)


def test_flush_restart_deletes_only_scheduled_restarts(capsys: Any) -> None:
    view = make_view({"n1": member_data("n1", "primary"),
                      "n2": member_data("n2", scheduled_restart={"schedule": "2030-01-01T10:00:00+00:00"})})
    api = FakeApi().on("n2", "DELETE", "restart", ok("scheduled restart deleted"))
    r = run_ctl(["flush", "demo", "restart", "--force"], FakeStore(view), api, capsys=capsys)
    assert r.code == 0 and api.calls == [("n2", "DELETE", "restart", None)]
    assert "No scheduled restart for member n1" in r.out


def test_an_unexpected_bug_is_still_one_line(capsys: Any) -> None:
    def boom() -> ApiResponse:
        raise RuntimeError("kaput")

    api = FakeApi().on("n1", "POST", "reload", boom)
    r = run_ctl(["reload", "demo", "n1", "--force"], api=api, capsys=capsys)
    assert r.code == 1
    assert _one_line(r.err) == ("pgwardenctl: internal error: RuntimeError: kaput "
                                "(set PGWARDENCTL_DEBUG=1 for the traceback)\n")
