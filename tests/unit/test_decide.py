"""The HA decision core, row by row: every transition of rules.TRANSITIONS has a case."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pgwarden.core.config_model import DynamicConfig
from pgwarden.core.shm import SectionView
from pgwarden.dcs.model import ClusterView, Member, Versioned
from pgwarden.supervisor.decide import decide, matching_transition
from pgwarden.supervisor.observe import pg_view
from pgwarden.supervisor.rules import TRANSITIONS
from pgwarden.supervisor.snapshot import LeaseView, Memory, OpState, PgView, Snapshot

NOW = 1000.0
SYSID = "7300000000000000001"


def member(name: str, role: str = "replica", state: str = "running", xlog: int = 100,
           **tags: Any) -> Member:
    data: dict[str, Any] = {"conn_url": f"postgres://10.0.0.{name[-1]}:5432/postgres",
                            "api_url": f"http://10.0.0.{name[-1]}:8008/patroni",
                            "state": state, "role": role, "xlog_location": xlog}
    if tags:
        data["tags"] = tags
    return Member(name, data)


def cluster(leader: str | None = "n1", initialize: str | None = SYSID,
            members: list[Member] | None = None, optime: int | None = None,
            config_version: int = 5) -> ClusterView:
    ms = members if members is not None else [member("n1", "primary"), member("n2"), member("n3")]
    return ClusterView(initialize=initialize, leader=leader,
                       members={m.name: m for m in ms},
                       config=Versioned({"ttl": 30}, config_version),
                       status=Versioned({"optime": optime} if optime is not None else None, 1))


PRIMARY = PgView(data_dir_state="initialized", running=True, role="primary", state="running",
                 timeline=1, wal_position=200, sysid=SYSID, fresh=True)
REPLICA = replace(PRIMARY, role="replica", wal_position=100)
EMPTY = PgView(data_dir_state="empty", state="stopped", fresh=True)
STOPPED = replace(PRIMARY, running=False, role=None, state="stopped")
CLEANLY_STOPPED_PRIMARY = replace(STOPPED, wal_position=250, last_lsn=250,
                                  stopped_as_primary=True)
HOLDING = LeaseView(connected=True, lease_deadline=NOW + 20, holds_leader=True, fresh=True)
NOT_HOLDING = replace(HOLDING, holds_leader=False)


def snap(name: str = "n2", *, cl: ClusterView | None = None, pg: PgView = REPLICA,
         lease: LeaseView = NOT_HOLDING, state: str = "replica", no_cluster: bool = False,
         **kw: Any) -> Snapshot:
    memory = kw.pop("memory", Memory(state=state, since=NOW - 5))
    dynamic = kw.pop("dynamic", DynamicConfig())
    return Snapshot(name=name, now=NOW, cluster=None if no_cluster else (cl or cluster()),
                    pg=pg, lease=lease, dynamic=dynamic, memory=memory, **kw)


# (expected condition name, snapshot, expected fields of the decision)
CASES: list[tuple[str, Snapshot, dict[str, Any]]] = [
    ("shutdown and PostgreSQL running",
     snap("n1", pg=PRIMARY, lease=HOLDING, state="primary", shutdown=True),
     {"pg_role": "stopped", "lock_want": True, "vip": False, "state": "stopping"}),
    ("shutdown and still holding the leader key",
     snap("n1", pg=STOPPED, lease=HOLDING, state="stopping", shutdown=True),
     {"pg_role": "stopped", "lock_want": False}),
    ("shutdown and PostgreSQL stopped",
     snap("n2", pg=STOPPED, state="stopping", shutdown=True),
     {"exit_code": 0, "state": "stopped"}),
    ("no DCS view, primary, lease deadline not yet reached",
     snap("n1", pg=PRIMARY, lease=replace(HOLDING, connected=False), state="primary",
          no_cluster=True),
     {"pg_role": "primary", "vip": True, "state": "primary"}),
    ("no DCS view and PostgreSQL is a primary",
     snap("n1", pg=PRIMARY, lease=replace(HOLDING, connected=False, lease_deadline=NOW + 4),
          state="primary", no_cluster=True),
     {"pg_role": "replica", "leader": None, "vip": False, "lock_want": False,
      "stop_mode": "immediate"}),
    ("no DCS view",
     snap("n2", lease=replace(NOT_HOLDING, connected=False), no_cluster=True),
     {"pg_role": "none", "vip": False, "state": "replica"}),
    ("data directory of another cluster",
     snap("n2", pg=replace(REPLICA, sysid="123")),
     {"exit_code": 1, "pg_role": "none", "state": "stopped"}),
    ("holding the lock, bootstrap failed",
     snap("n1", cl=cluster(leader="n1", initialize="", members=[member("n1", "uninitialized",
          "initdb failed")]), pg=replace(EMPTY, state="initdb failed"), lease=HOLDING,
          state="bootstrapping"),
     {"lock_want": False, "exit_code": 1, "ops": (("cancel_initialize", {}),)}),
    ("holding the lock, bootstrapping",
     snap("n1", cl=cluster(leader="n1", initialize="", members=[]), pg=EMPTY, lease=HOLDING,
          state="bootstrapping"),
     {"pg_role": "primary", "bootstrap": "initdb", "lock_want": True}),
    ("holding the lock without data",
     snap("n1", pg=EMPTY, lease=HOLDING, state="replica"),
     {"lock_want": False, "pg_role": "stopped"}),
    ("holding the lock, PostgreSQL down past primary_start_timeout",
     snap("n1", pg=STOPPED, lease=HOLDING,
          memory=Memory(state="primary", since=NOW - 400, pg_down_since=NOW - 301)),
     {"lock_want": False, "vip": False}),
    ("holding the lock, PostgreSQL unresponsive past primary_start_timeout, its postmaster "
     "still there",
     snap("n1", pg=replace(STOPPED, process_alive=True), lease=HOLDING,
          memory=Memory(state="primary", since=NOW - 400, pg_down_since=NOW - 301)),
     {"lock_want": True, "pg_role": "stopped", "stop_mode": "immediate", "vip": False}),
    ("holding the lock, PostgreSQL down",
     snap("n1", pg=STOPPED, lease=HOLDING, state="primary"),
     {"pg_role": "primary", "lock_want": True, "recover": True}),
    ("holding the lock, PostgreSQL down, not the running primary",
     snap("n1", pg=replace(STOPPED, state="crashed"), lease=HOLDING, state="replica"),
     {"lock_want": False, "pg_role": "none", "vip": False}),
    ("holding the lock, the required watchdog is not usable",
     snap("n2", cl=cluster(leader="n2"), pg=REPLICA, lease=HOLDING, state="candidate",
          watchdog_ready=False, watchdog_required_failed=True),
     {"lock_want": False, "pg_role": "replica", "vip": False}),
    ("holding the lock, a former primary stopped cleanly, watchdog not armed yet",
     snap("n1", cl=cluster(leader="n1"), pg=CLEANLY_STOPPED_PRIMARY, lease=HOLDING,
          state="candidate", watchdog_ready=False),
     {"pg_role": "none", "watchdog": "armed", "lock_want": True, "state": "candidate"}),
    ("holding the lock, a former primary stopped cleanly",
     snap("n1", cl=cluster(leader="n1"), pg=CLEANLY_STOPPED_PRIMARY, lease=HOLDING,
          state="candidate"),
     {"pg_role": "primary", "watchdog": "armed", "lock_want": True, "vip": True,
      "state": "primary"}),
    ("holding the lock, replica, watchdog not armed yet",
     snap("n2", cl=cluster(leader="n2"), pg=REPLICA, lease=HOLDING, state="candidate",
          watchdog_ready=False),
     {"pg_role": "replica", "watchdog": "armed", "lock_want": True}),
    ("holding the lock, not yet primary",
     snap("n2", cl=cluster(leader="n2"), pg=REPLICA, lease=HOLDING, state="candidate"),
     {"pg_role": "primary", "lock_want": True, "watchdog": "armed", "state": "primary"}),
    ("holding the lock as primary",
     snap("n1", pg=PRIMARY, lease=HOLDING, state="primary"),
     {"pg_role": "primary", "lock_want": True, "vip": True,
      "reason": "no action: I am n1, the leader with the lock"}),
    ("primary while another member holds the lock",
     snap("n2", pg=PRIMARY, state="primary"),
     {"pg_role": "replica", "leader": "n1", "stop_mode": "immediate", "vip": False}),
    ("primary whose lock expired or was lost",
     snap("n1", cl=cluster(leader=None), pg=PRIMARY,
          lease=replace(HOLDING, lease_deadline=NOW + 1), state="primary"),
     {"pg_role": "replica", "lock_want": False, "vip": False}),
    ("another leader, no data, leader running",
     snap("n3", pg=EMPTY, state="init"),
     {"pg_role": "replica", "bootstrap": "basebackup", "leader": "n1", "state": "cloning"}),
    ("another leader, no data, leader not running yet",
     snap("n3", cl=cluster(members=[member("n1", "primary", "starting")]), pg=EMPTY,
          state="init"),
     {"pg_role": "none", "state": "init"}),
    ("cloning in progress",
     snap("n3", cl=cluster(leader=None), pg=replace(EMPTY, operation="basebackup"),
          state="cloning"),
     {"bootstrap": "basebackup", "state": "cloning"}),
    ("another member holds the lock",
     snap("n2"),
     {"pg_role": "replica", "leader": "n1",
      "reason": "no action: I am n2, a secondary, and following a leader (n1)"}),
    ("uninitialized, I won the initialize race",
     snap("n1", cl=cluster(leader=None, initialize=None, members=[]), pg=EMPTY, state="init",
          ops={"initialize_race": OpState("ok", True)}),
     {"lock_want": True, "state": "bootstrapping", "acquire_token": 1}),
    ("uninitialized, initialize race lost",
     snap("n2", cl=cluster(leader=None, initialize=None, members=[]), pg=EMPTY, state="init",
          ops={"initialize_race": OpState("ok", False)}),
     {"lock_want": False, "clear_ops": ("initialize_race",)}),
    ("uninitialized cluster",
     snap("n1", cl=cluster(leader=None, initialize=None, members=[]), pg=EMPTY, state="init"),
     {"ops": (("initialize_race", {"sysid": ""}),), "lock_want": False}),
    ("bootstrap in progress elsewhere",
     snap("n2", cl=cluster(leader=None, initialize="", members=[]), pg=EMPTY, state="init"),
     {"pg_role": "none", "lock_want": False}),
    ("no leader and no data",
     snap("n3", cl=cluster(leader=None), pg=EMPTY, state="init"),
     {"pg_role": "none", "lock_want": False}),
    ("no leader, I am not eligible",
     snap("n2", cl=cluster(leader=None), nofailover=True),
     {"pg_role": "replica", "lock_want": False, "state": "candidate"}),
    ("no leader, a peer is healthier",
     snap("n2", cl=cluster(leader=None, members=[member("n2"), member("n3", xlog=150)])),
     {"pg_role": "replica", "lock_want": False}),
    ("no leader, peers may not have reported yet",
     snap("n2", cl=cluster(leader=None, members=[member("n2"), member("n3", xlog=50)])),
     {"lock_want": False, "state": "candidate"}),
    ("no leader, I am the healthiest",
     snap("n2", cl=cluster(leader=None, members=[member("n2"), member("n3", xlog=50)]),
          memory=Memory(state="candidate", since=NOW - 5, leader_gone_at=NOW - 2)),
     {"lock_want": True, "acquire_token": 1, "pg_role": "replica"}),
]


def with_failover(cl: ClusterView, **value: Any) -> ClusterView:
    return replace(cl, failover=Versioned(value, 7))


PAUSED = DynamicConfig(pause=True)
SWITCH_TO_N2 = with_failover(cluster(), leader="n1", member="n2")
NO_LEADER_SWITCH = with_failover(cluster(leader=None, members=[member("n1", "replica", "stopped"),
                                                                  member("n2"), member("n3")],
                                          optime=100), leader="n1", member="n2")

CASES += [
    ("starting, the lease worker has not finished its first DCS round",
     snap("n1", pg=PRIMARY, lease=replace(NOT_HOLDING, connected=False, first_round_done=False),
          state="init", no_cluster=True),
     {"pg_role": "none", "lock_want": False, "state": "init"}),
    ("the leader key names me but is not confirmed, PostgreSQL a running primary",
     snap("n1", pg=PRIMARY, lease=NOT_HOLDING, state="init"),
     {"pg_role": "primary", "lock_want": True, "acquire_token": 1, "state": "candidate"}),
    ("taking my own leader key back, the lease worker has not answered yet",
     snap("n1", pg=PRIMARY, lease=NOT_HOLDING,
          memory=Memory(state="candidate", since=NOW - 0.1, acquire_token=1),
          cl=cluster(leader="n1", members=[member("n1", role="primary"),
                                           member("n2", xlog=300)])),
     {"pg_role": "primary", "lock_want": True, "acquire_token": 1, "state": "candidate"}),
    ("paused, no DCS view",
     snap("n1", pg=PRIMARY, lease=replace(HOLDING, connected=False), state="primary",
          no_cluster=True, dynamic=PAUSED),
     {"pg_role": "none", "watchdog": "disarmed", "lock_want": True}),
    ("handing over, PostgreSQL stopped",
     snap("n1", cl=SWITCH_TO_N2, pg=replace(STOPPED, last_lsn=250), lease=HOLDING,
          memory=Memory(state="handing_over", since=NOW - 1, handover="stop")),
     {"lock_want": False, "release_lsn": 250, "state": "replica", "pg_role": "stopped"}),
    ("holding the lock as primary, a switchover is due",
     snap("n1", cl=SWITCH_TO_N2, pg=PRIMARY, lease=HOLDING, state="primary"),
     {"pg_role": "primary", "checkpoint_token": 1, "vip": True, "lock_want": True,
      "state": "handing_over"}),
    ("handing over, PostgreSQL stopping",
     snap("n1", cl=cluster(), pg=replace(PRIMARY, operation="stop"), lease=HOLDING,
          memory=Memory(state="handing_over", since=NOW - 1, handover="stop")),
     {"pg_role": "stopped", "vip": True, "lock_want": True}),
    ("holding the lock, PostgreSQL restarting on request",
     snap("n1", pg=replace(STOPPED, operation="restart"), lease=HOLDING, state="primary"),
     {"pg_role": "none", "lock_want": True, "vip": True}),
    ("paused, holding the lock as primary",
     snap("n1", pg=PRIMARY, lease=HOLDING, state="primary", dynamic=PAUSED),
     {"pg_role": "none", "lock_want": True, "watchdog": "disarmed"}),
    ("paused, holding the lock, PostgreSQL not running",
     snap("n1", pg=STOPPED, lease=HOLDING, state="primary", dynamic=PAUSED),
     {"pg_role": "none", "lock_want": False, "watchdog": "disarmed"}),
    ("paused, holding the lock, PostgreSQL not a running primary",
     snap("n1", pg=replace(STOPPED, process_alive=True), lease=HOLDING, state="primary",
          dynamic=PAUSED),
     {"pg_role": "none", "lock_want": True, "watchdog": "disarmed", "state": "primary"}),
    ("paused, running as primary, no leader",
     snap("n1", cl=cluster(leader=None), pg=PRIMARY, state="primary", dynamic=PAUSED),
     {"pg_role": "none", "lock_want": True, "acquire_token": 1, "state": "primary"}),
    ("paused",
     snap("n2", cl=cluster(leader=None), dynamic=PAUSED),
     {"pg_role": "none", "lock_want": False}),
    ("no leader, a switchover names me, I have its last WAL",
     snap("n2", cl=NO_LEADER_SWITCH, state="replica"),
     {"lock_want": True, "acquire_token": 1, "pg_role": "replica"}),
    ("no leader, a switchover names me, WAL still arriving",
     snap("n2", cl=replace(NO_LEADER_SWITCH, status=Versioned({"optime": 150}, 2)),
          state="replica"),
     {"lock_want": False, "pg_role": "replica", "state": "candidate"}),
    ("holding the lock, pre_promote refused the promotion",
     snap("n2", cl=cluster(leader="n2"), pg=replace(REPLICA, promote_refused_at=NOW - 1),
          lease=HOLDING, state="candidate"),
     {"lock_want": False, "pg_role": "replica"}),
    ("no leader, a failsafe primary pinged me less than ttl ago",
     snap("n2", cl=cluster(leader=None), dynamic=DynamicConfig(failsafe_mode=True),
          failsafe_leader="n1"),
     {"lock_want": False, "pg_role": "none"}),
    ("no leader, a switchover names another member",
     snap("n3", cl=NO_LEADER_SWITCH, pg=replace(REPLICA, wal_position=100), state="replica"),
     {"lock_want": False, "pg_role": "none"}),
]

@pytest.mark.parametrize("condition,s,expected", CASES, ids=[c[0] for c in CASES])
def test_row(condition: str, s: Snapshot, expected: dict[str, Any]) -> None:
    assert matching_transition(s).condition == condition
    d = decide(s)
    for key, want in expected.items():
        if key == "state":
            got: Any = d.memory.state
        elif key == "acquire_token":
            got = d.memory.acquire_token
        else:
            got = getattr(d, key)
        assert got == want, f"{key}: {got!r} != {want!r} ({d.reason})"
    assert d.reason and "\n" not in d.reason


def test_every_row_has_a_case() -> None:
    assert {c[0] for c in CASES} == {t.condition for t in TRANSITIONS}
    assert len({t.condition for t in TRANSITIONS}) == len(TRANSITIONS)


def test_lower_lag_than_allowed_blocks_the_race() -> None:
    s = snap("n2", cl=cluster(leader=None, members=[member("n2")], optime=100 + 2 * 1048576))
    d = decide(s)
    assert not d.lock_want and "maximum_lag_on_failover" in d.reason


def test_lock_confirmed_but_past_margin_is_not_held() -> None:
    """Rule 1: a lease about to expire (inside the safety margin) does not count as held."""
    lease = replace(HOLDING, lease_deadline=NOW + 5.9)  # safety margin 5, demote lead 1
    d = decide(snap("n1", pg=PRIMARY, lease=lease, state="primary"))
    assert d.pg_role == "replica" and not d.vip


def test_running_primary_never_keeps_writes_when_another_leader_appears() -> None:
    d = decide(snap("n1", cl=cluster(leader="n3"), pg=PRIMARY, lease=HOLDING, state="primary"))
    assert d.pg_role == "replica" and d.leader == "n3" and not d.lock_want


def test_acquire_token_is_not_bumped_while_an_attempt_is_in_flight() -> None:
    mem = Memory(state="candidate", since=NOW - 5, acquire_token=3, leader_gone_at=NOW - 2)
    s = snap("n2", cl=cluster(leader=None, members=[member("n2")]), memory=mem,
             lease=replace(NOT_HOLDING, acquire_token_done=2))
    assert decide(s).memory.acquire_token == 3
    s = replace(s, lease=replace(NOT_HOLDING, acquire_token_done=3))
    assert decide(s).memory.acquire_token == 4


def test_peer_claiming_primary_blocks_the_race() -> None:
    s = snap("n2", cl=cluster(leader=None, members=[member("n1", "primary"), member("n2")]),
             memory=Memory(state="candidate", since=NOW - 5, leader_gone_at=NOW - 2))
    d = decide(s)
    assert not d.lock_want and "running primary" in d.reason


def test_nofailover_peer_with_more_wal_does_not_block_me() -> None:
    s = snap("n2", cl=cluster(leader=None, members=[member("n2"),
                                                    member("n3", xlog=999, nofailover=True)]),
             memory=Memory(state="candidate", since=NOW - 5, leader_gone_at=NOW - 2))
    assert decide(s).lock_want


def test_stopped_state_is_terminal() -> None:
    d = decide(snap("n2", state="stopped"))
    assert d.action == "stay_stopped" and d.pg_role == "none"


def test_primary_start_timeout_zero_fails_over_without_restarting_in_place() -> None:
    s = snap("n1", pg=replace(STOPPED, state="crashed"), lease=HOLDING, state="primary",
             dynamic=DynamicConfig(primary_start_timeout=0))
    d = decide(s)
    assert d.action == "release_lock_for_failover" and not d.lock_want and not d.recover


def test_crashed_primary_restarts_in_place_within_primary_start_timeout() -> None:
    mem = Memory(state="primary", since=NOW - 100, pg_down_since=NOW - 10)
    d = decide(snap("n1", pg=replace(STOPPED, state="crashed"), lease=HOLDING, memory=mem))
    assert d.action == "restart_primary" and d.recover and d.memory.pg_down_since == NOW - 10


def test_the_transition_docs_match_the_table() -> None:
    """docs/ha-transitions.md is generated from the table the code runs: keep them equal."""
    from pathlib import Path

    from pgwarden.supervisor.render_transitions import render

    page = Path(__file__).resolve().parents[2] / "docs" / "ha-transitions.md"
    assert page.read_text() == render(), \
        "regenerate: python -m pgwarden.supervisor.render_transitions > docs/ha-transitions.md"


def test_a_demoting_primary_drops_the_vip_before_postgres_changes() -> None:
    held = snap("n2", pg=PRIMARY, state="primary", vip_held=True)  # n1 holds the lock
    d = decide(held)
    assert d.pg_role == "none" and not d.vip and "dropping the VIP first" in d.reason
    d = decide(replace(held, vip_held=False))
    assert d.pg_role == "replica" and d.leader == "n1"


def test_after_releasing_for_failover_a_crashed_primary_never_promotes_again() -> None:
    """The lock outlives the decision to release it by one DCS round trip: meanwhile the
    node must not flap back to 'promote'."""
    s = snap("n1", pg=replace(STOPPED, state="crashed"), lease=HOLDING, state="primary",
             dynamic=DynamicConfig(primary_start_timeout=0))
    d = decide(s)
    assert d.action == "release_lock_for_failover"
    d2 = decide(replace(s, memory=d.memory))
    assert d2.action == "release_lock_pg_down" and d2.pg_role != "primary" and not d2.lock_want


def test_next_deadline_is_the_race_settle_time_or_the_demotion_deadline() -> None:
    from pgwarden.supervisor.rules import margin_deadline, next_deadline

    mem = Memory(state="candidate", since=NOW, leader_gone_at=NOW - 0.1)
    s = snap("n2", cl=cluster(leader=None), memory=mem, race_settle=0.3)
    assert next_deadline(s) == pytest.approx(NOW + 0.2)
    s = snap("n1", pg=PRIMARY, lease=HOLDING, state="primary")
    assert next_deadline(s) == margin_deadline(s) == NOW + 20 - 5 - 1
    assert next_deadline(snap("n2")) is None


def test_switchover_checkpoint_then_stop() -> None:
    """Phase 1 asks for a CHECKPOINT; once it is done, phase 2 drops the VIP and stops."""
    s = snap("n1", cl=SWITCH_TO_N2, pg=PRIMARY, lease=HOLDING, state="primary")
    d1 = decide(s)
    assert d1.memory.handover == "checkpoint" and d1.pg_role == "primary"
    s2 = replace(s, memory=d1.memory, pg=replace(PRIMARY, checkpoint_done=1), vip_held=True)
    d2 = decide(s2)
    assert d2.memory.handover == "stop" and d2.vip, "the VIP stays while PostgreSQL stops"
    assert d2.pg_role == "stopped" and d2.stop_mode == "fast" and d2.lock_want
    stopped = replace(s2, memory=d2.memory, pg=replace(STOPPED, last_lsn=300))
    d3 = decide(stopped)
    assert not d3.lock_want and d3.release_lsn == 300 and not d3.vip
    assert d3.vip_hold_until == NOW + 2.0, "the VIP is handed off, not dropped into silence"
    # the hand-off ends as soon as the new primary runs
    after = cluster(leader="n2", members=[member("n1", "replica", "stopped"),
                                          member("n2", "primary"), member("n3")])
    d4 = decide(replace(stopped, memory=d3.memory, cluster=after, pg=STOPPED))
    assert d4.vip_hold_until is None and d4.memory.vip_hold_until is None


def test_switchover_to_a_lagging_candidate_clears_the_key() -> None:
    cl = with_failover(cluster(members=[member("n1", "primary", xlog=10**8), member("n2", xlog=1),
                                        member("n3")]), leader="n1", member="n2")
    d = decide(snap("n1", cl=cl, pg=replace(PRIMARY, wal_position=10**8), lease=HOLDING,
                    state="primary"))
    assert d.action == "lead"
    assert d.ops and d.ops[-1][0] == "clear_failover" and "lags" in str(d.ops[-1][1]["why"])


def test_scheduled_switchover_waits_for_its_time() -> None:
    cl = with_failover(cluster(), leader="n1", member="n2",
                       scheduled_at="2030-01-01T00:00:00+00:00")
    s = snap("n1", cl=cl, pg=PRIMARY, lease=HOLDING, state="primary", wall=1.7e9)
    assert decide(s).action == "lead" and not decide(s).ops
    late = replace(s, wall=1.9e9)
    assert decide(late).action == "handover"


def test_new_leader_clears_the_done_switchover() -> None:
    cl = with_failover(cluster(leader="n2", members=[member("n2", "primary"), member("n1")]),
                       leader="n1", member="n2")
    d = decide(snap("n2", cl=cl, pg=PRIMARY, lease=HOLDING, state="primary"))
    assert ("clear_failover", {"version": 7, "why": "the switchover to me is done"}) in d.ops


def test_manual_failover_key_without_leader_makes_the_leader_hand_over() -> None:
    cl = with_failover(cluster(), member="n3")
    assert decide(snap("n1", cl=cl, pg=PRIMARY, lease=HOLDING, state="primary")).action == \
        "handover"


def test_waiting_for_candidate_ends_after_the_handover_timeout() -> None:
    s = snap("n3", cl=NO_LEADER_SWITCH, memory=Memory(state="candidate", since=NOW - 60,
                                                    leader_gone_at=NOW - 31))
    assert decide(s).action != "wait_for_switchover"


def test_failsafe_unlisted_member_may_not_race() -> None:
    cl = replace(cluster(leader=None, members=[member("n2")]),
                 failsafe=Versioned({"n1": "http://a/patroni", "n3": "http://c/patroni"}, 3))
    d = decide(snap("n2", cl=cl, dynamic=DynamicConfig(failsafe_mode=True)))
    assert not d.lock_want and "failsafe" in d.reason


# -- found by the safety review: a missed status sample is not a stopped server ------------

UNANSWERING = replace(STOPPED, process_alive=True, state="unknown")


def test_a_handover_never_releases_the_key_while_the_postmaster_lives() -> None:
    s = snap("n1", cl=SWITCH_TO_N2, pg=UNANSWERING, lease=HOLDING,
             memory=Memory(state="handing_over", since=NOW - 1, handover="checkpoint",
                           checkpoint_token=1))
    d = decide(s)
    assert d.lock_want and d.release_lsn is None, d.reason


def test_an_unclean_stop_drops_the_switchover_instead_of_a_fast_path() -> None:
    s = snap("n1", cl=SWITCH_TO_N2, pg=STOPPED, lease=HOLDING,
             memory=Memory(state="handing_over", since=NOW - 1, handover="stop"))
    d = decide(s)
    assert not d.lock_want and d.release_lsn is None
    assert d.ops and d.ops[0][0] == "clear_failover"


def test_a_scheduled_switchover_gives_no_fast_path_when_the_leader_dies_early() -> None:
    cl = with_failover(cluster(leader=None, members=[member("n2", xlog=160), member("n3", xlog=200)]),
                       leader="n1", member="n2", scheduled_at="2030-01-01T00:00:00+00:00")
    d = decide(snap("n2", cl=cl, pg=replace(REPLICA, wal_position=160), wall=1.7e9))
    assert d.action != "acquire_lock_switchover" and not d.lock_want, d.reason


def test_an_unanswering_primary_is_stopped_when_the_dcs_is_lost_past_the_margin() -> None:
    s = snap("n1", pg=UNANSWERING, state="primary", no_cluster=True,
             lease=replace(HOLDING, connected=False, lease_deadline=NOW + 4))
    d = decide(s)
    assert d.pg_role == "stopped" and d.stop_mode == "immediate" and d.watchdog == "armed"


@pytest.mark.parametrize("name,first", [
    ("dcs lost", snap("n1", pg=UNANSWERING, state="primary", no_cluster=True,
                      lease=replace(HOLDING, connected=False, lease_deadline=NOW + 4))),
    ("another leader", snap("n1", cl=cluster(leader="n2"), pg=UNANSWERING, state="primary")),
])
def test_the_fence_of_an_unanswering_primary_outlasts_the_first_cycle(
        name: str, first: Snapshot) -> None:
    """From the code review: the demotion moved the memory to "replica", so the next cycle
    no longer saw a possible primary, asked nothing of PostgreSQL and disarmed the watchdog.
    The postgres worker, blocked on a sample of the frozen server, could miss the one-cycle
    stop: nothing fenced a server that may wake up and commit."""
    d = decide(first)
    assert (d.pg_role, d.watchdog, d.memory.fencing) == ("stopped", "armed", True), name
    for _ in range(3):
        d = decide(replace(first, memory=d.memory, now=first.now + 1))
        assert (d.pg_role, d.stop_mode, d.watchdog) == ("stopped", "immediate", "armed"), \
            (name, d.action)
    gone = decide(replace(first, memory=d.memory, pg=replace(UNANSWERING, process_alive=False)))
    assert not gone.memory.fencing, gone.action  # the postmaster is gone: fenced


def test_an_unanswering_primary_is_stopped_when_another_member_leads() -> None:
    d = decide(snap("n1", cl=cluster(leader="n2"), pg=UNANSWERING, state="primary"))
    assert d.pg_role == "stopped" and not d.lock_want


@pytest.mark.parametrize("pg", [
    pytest.param(UNANSWERING, id="postmaster alive, not answering"),
    pytest.param(replace(STOPPED, process_alive=True), id="postmaster killed, children exiting"),
    pytest.param(replace(STOPPED, operation="start"), id="a start in flight"),
    pytest.param(REPLICA, id="running as a replica"),
])
def test_paused_leader_neither_restarts_nor_promotes_nor_releases(pg: PgView) -> None:
    """Found in CI: a paused leader whose postmaster was SIGKILLed (children still alive)
    fell through to the crash restart and PostgreSQL came back on its own."""
    d = decide(snap("n1", pg=pg, lease=HOLDING, state="primary", dynamic=PAUSED))
    assert (d.action, d.pg_role, d.lock_want, d.watchdog) == \
        ("hold_lock_paused", "none", True, "disarmed")


def test_shutdown_waits_for_a_postmaster_a_fresh_worker_has_not_sampled_yet() -> None:
    """Found by the restart-intensity scenario: the safe stop exited while PostgreSQL ran."""
    d = decide(snap("n1", pg=replace(STOPPED, process_alive=True), lease=HOLDING,
                    state="stopping", shutdown=True))
    assert d.pg_role == "stopped" and d.lock_want and d.exit_code is None
    d = decide(snap("n1", pg=replace(STOPPED, fresh=False), lease=HOLDING, state="stopping",
                    shutdown=True))
    assert d.pg_role == "stopped" and d.exit_code is None


def test_a_cleanly_stopped_former_primary_runs_for_leader() -> None:
    """The old primary of a switchover whose candidate died: its shutdown checkpoint is its
    position, so once the handover window is over it wins the race (it was not eligible
    without a WAL position, and a 2-node cluster kept no primary)."""
    s = snap("n1", cl=cluster(leader=None, members=[member("n1"), member("n2", xlog=50)]),
             pg=CLEANLY_STOPPED_PRIMARY,
             memory=Memory(state="candidate", since=NOW - 5, leader_gone_at=NOW - 2))
    d = decide(s)
    assert (d.action, d.lock_want, d.memory.acquire_token) == ("acquire_lock", True, 1), \
        d.reason


def test_a_stopped_former_primary_without_its_shutdown_lsn_stays_out() -> None:
    s = snap("n1", cl=cluster(leader=None, members=[member("n1"), member("n2", xlog=50)]),
             pg=replace(STOPPED, wal_position=None),
             memory=Memory(state="candidate", since=NOW - 5, leader_gone_at=NOW - 2))
    assert decide(s).action == "stay_replica_ineligible"


@pytest.mark.parametrize("data,stopped,position", [
    ({"running": False, "pid": None, "last_lsn": 250, "last_lsn_primary": True}, True, 250),
    ({"running": False, "pid": None, "last_lsn": 250, "last_lsn_primary": False}, False, None),
    ({"running": False, "pid": 42, "last_lsn": 250, "last_lsn_primary": True}, False, None),
    ({"running": True, "pid": 42, "wal_position": 300, "last_lsn": None}, False, 300),
    ({"running": False, "pid": None, "last_lsn": "250", "last_lsn_primary": True}, False, None),
])
def test_the_position_of_a_stopped_server(data: dict[str, Any], stopped: bool,
                                          position: int | None) -> None:
    view = pg_view(SectionView("postgres", 1, 1, 1, data), 1, 10.0)
    assert (view.stopped_as_primary, view.wal_position) == (stopped, position)


def test_a_restart_with_a_timeout_fails_over_once_it_is_exceeded() -> None:
    """Patroni's POST /restart `timeout`: it replaces primary_start_timeout for that restart.
    While the restart runs the key is kept and the clock started; once the worker gave up
    (the server still starting) past the timeout, the leader fences it, then releases."""
    restarting = replace(STOPPED, operation="restart", process_alive=True)
    d = decide(snap("n1", pg=restarting, lease=HOLDING, state="primary", restart_timeout=5.0))
    assert (d.action, d.memory.start_timeout, d.memory.pg_down_since) == \
        ("lead_restarting", 5.0, NOW)
    late = replace(d.memory, pg_down_since=NOW - 6)
    starting = replace(STOPPED, process_alive=True, state="starting")
    d = decide(snap("n1", pg=starting, lease=HOLDING, memory=late))
    assert (d.action, d.pg_role, d.stop_mode, d.lock_want) == \
        ("fence_postgres", "stopped", "immediate", True), d.reason
    assert "the restart's timeout" in d.reason
    d = decide(snap("n1", pg=replace(STOPPED, wal_position=None), lease=HOLDING, memory=late))
    assert (d.action, d.lock_want, d.memory.start_timeout) == \
        ("release_lock_for_failover", False, None)
    # within the timeout a failed start is retried in place
    early = replace(late, pg_down_since=NOW - 2)
    d = decide(snap("n1", pg=replace(STOPPED, wal_position=None), lease=HOLDING, memory=early))
    assert (d.action, d.recover) == ("restart_primary", True)
    # without a timeout the restart keeps primary_start_timeout (300 s by default)
    d = decide(snap("n1", pg=restarting, lease=HOLDING, state="primary"))
    assert (d.memory.start_timeout, d.memory.pg_down_since) == (None, None)


def test_leading_again_forgets_a_restarts_timeout() -> None:
    m = Memory(state="primary", since=NOW - 5, pg_down_since=NOW - 2, start_timeout=5.0)
    d = decide(snap("n1", pg=PRIMARY, lease=HOLDING, memory=m))
    assert (d.action, d.memory.start_timeout, d.memory.pg_down_since) == ("lead", None, None)


@pytest.mark.parametrize("state", ["replica", "handing_over", "primary", "init"])
def test_a_cleanly_stopped_primary_starts_only_after_winning_an_election(state: str) -> None:
    """Found by the switchover test: right after a handover released the key the lease
    worker still reported it held, and the old primary started again as a primary while
    the candidate promoted (acknowledged writes lost)."""
    d = decide(snap("n1", cl=cluster(leader="n1"), pg=CLEANLY_STOPPED_PRIMARY, lease=HOLDING,
                    state=state))
    assert d.pg_role != "primary" or d.action == "restart_primary", (d.action, d.reason)
    assert d.action != "start_primary"


def test_a_key_given_up_is_not_used_to_make_a_primary_until_asked_for_again() -> None:
    """From the safety review: a candidate past its margin decides to stay a replica (key
    given up); the lease worker's renewal, already under way, still succeeds. The next
    decision must not promote or start a primary with that key (the lease worker may
    still act on the release), only ask for it again."""
    peers = cluster(leader="n2", members=[member("n2"), member("n3", xlog=300)])
    past_margin = replace(HOLDING, lease_deadline=NOW + 1)
    d = decide(snap("n2", cl=peers, lease=past_margin, state="candidate"))
    assert not d.lock_want and d.memory.lock_given_up, d.action
    mine = cluster(leader="n2", members=[member("n2"), member("n3", xlog=50)])
    renewed = snap("n2", cl=mine, lease=HOLDING, memory=d.memory)
    d2 = decide(renewed)
    assert d2.action not in ("promote", "arm_watchdog", "lead"), d2.action
    assert d2.pg_role != "primary"
    stopped = replace(renewed, pg=CLEANLY_STOPPED_PRIMARY, name="n2")
    assert decide(stopped).action not in ("start_primary", "arm_watchdog")
    # asking for the key again (a new acquire token) makes it usable once more
    asked = decide(replace(renewed, memory=replace(d.memory, leader_gone_at=NOW - 2)))
    assert asked.memory.acquire_token == d.memory.acquire_token + 1
    assert not asked.memory.lock_given_up
    assert decide(replace(renewed, memory=asked.memory)).action in ("arm_watchdog", "promote")


def test_the_given_up_mark_ends_when_the_key_is_gone() -> None:
    m = Memory(state="replica", since=NOW - 5, lock_given_up=True)
    d = decide(snap("n2", lease=NOT_HOLDING, memory=m))
    assert not d.memory.lock_given_up


def test_a_paused_switchover_candidate_still_promotes() -> None:
    d = decide(snap("n2", cl=cluster(leader="n2"), pg=REPLICA, lease=HOLDING, state="candidate",
                    dynamic=PAUSED))
    assert d.action in ("arm_watchdog", "promote"), d.action


def test_a_primary_down_clock_does_not_outlive_the_primary_state() -> None:
    m = Memory(state="primary", since=NOW - 5, pg_down_since=NOW - 2, start_timeout=5.0)
    d = decide(snap("n1", cl=cluster(leader="n2"), pg=STOPPED, memory=m))
    assert d.memory.state != "primary"
    assert (d.memory.pg_down_since, d.memory.start_timeout) == (None, None)
    d = decide(snap("n1", pg=PRIMARY, lease=HOLDING, memory=m, dynamic=PAUSED))
    assert (d.action, d.memory.pg_down_since, d.memory.start_timeout) == \
        ("lead_paused", None, None)


def test_the_old_primary_does_not_race_on_a_view_older_than_its_own_release() -> None:
    """From the safety review: right after a switchover's release the watch cache may still
    show my key. Taken as "someone leads", the old primary fell through to the election
    and, eligible with its shutdown position, could take the key back from the candidate."""
    stale = with_failover(cluster(leader="n1", members=[member("n1", "replica", "stopped"),
                                                        member("n2"), member("n3")],
                                  optime=250), leader="n1", member="n2")
    m = Memory(state="replica", since=NOW - 0.1, leader_gone_at=NOW - 0.1)
    d = decide(snap("n1", cl=stale, pg=CLEANLY_STOPPED_PRIMARY, lease=NOT_HOLDING, memory=m))
    assert (d.action, d.lock_want) == ("wait_for_switchover", False), d.reason
    later = replace(m, leader_gone_at=NOW - 2)  # race settled: still the candidate's turn
    d = decide(snap("n1", cl=stale, pg=CLEANLY_STOPPED_PRIMARY, lease=NOT_HOLDING, memory=later))
    assert (d.action, d.lock_want) == ("wait_for_switchover", False), d.reason
