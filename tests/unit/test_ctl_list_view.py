"""`list`/`topology` rows from a constructed ClusterView: the same columns and cells as patronictl
(the pretty table below is what patronictl 4.1.5 prints for the same rows)."""
from __future__ import annotations

import json
from typing import Any

import yaml

from ctl_fakes import SYSID, make_view, member_data
from pgwarden.ctl.fencing_view import FENCING_ALIGN, fencing_values, watchdog_text
from pgwarden.ctl.members_view import (
    ALIGN,
    BASE_COLUMNS,
    history_rows,
    initialize_label,
    member_table,
    topology_order,
)

BASE_KEYS = set(BASE_COLUMNS)
from pgwarden.ctl.output import format_rows


def _text(view: Any, fmt: str = "pretty", extended: bool = False) -> str:
    t = member_table(view, "demo", fmt, extended)
    return format_rows(t.columns, t.rows, "pretty" if fmt == "topology" else fmt, t.title, ALIGN)


def test_pretty_list_names_the_cluster_and_its_system_id_and_shows_lag_in_mb() -> None:
    view = make_view({"n1": member_data("n1", "primary"),
                      "n2": member_data("n2", receive_lsn=0x5000060 - 3 * 1024 * 1024)},
                     status={"optime": 0x5000060})
    assert _text(view) == f"""\
+ Cluster: demo ({SYSID}) ----+----+-------------+-----+------------+-----+
| Member | Host     | Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag |
+--------+----------+---------+-----------+----+-------------+-----+------------+-----+
| n1     | 10.0.0.1 | Leader  | running   |  3 |             |     |            |     |
| n2     | 10.0.0.2 | Replica | streaming |  3 |   0/4D00060 |   3 |  0/5000060 |   0 |
+--------+----------+---------+-----------+----+-------------+-----+------------+-----+"""


def test_host_gets_the_port_when_a_member_is_not_on_5432() -> None:
    view = make_view({"n1": member_data("n1", "primary"), "n2": member_data("n2", port=5433)})
    rows = member_table(view, "demo", "json").rows
    assert [r[2] for r in rows] == ["10.0.0.1:5432", "10.0.0.2:5433"]


def test_json_rows_keep_every_column_name_and_raw_types_for_scripts() -> None:
    view = make_view({"n1": member_data("n1", "primary", tags={"nofailover": False}),
                      "n2": member_data("n2", tags={"clonefrom": True})})
    t = member_table(view, "demo", "json")
    rows = json.loads(format_rows(t.columns, t.rows, "json", t.title))
    assert rows[0] == {"Cluster": "demo", "Member": "n1", "Host": "10.0.0.1", "Role": "Leader",
                       "State": "running", "TL": 3, "Tags": {"nofailover": False}}
    assert rows[1]["Receive Lag"] == 0 and rows[1]["Replay LSN"] == "0/5000060"
    assert rows[1]["Tags"] == {"clonefrom": True}


def test_yaml_is_the_json_rows_as_yaml() -> None:
    view = make_view()
    t = member_table(view, "demo", "yaml")
    assert yaml.safe_load(format_rows(t.columns, t.rows, "yaml", t.title)) == \
        json.loads(format_rows(t.columns, t.rows, "json", t.title))


def test_tsv_keeps_the_cluster_column_and_writes_tags_as_flow_yaml() -> None:
    view = make_view({"n1": member_data("n1", "primary", tags={"nofailover": False})})
    t = member_table(view, "demo", "tsv")
    assert format_rows(t.columns, t.rows, "tsv").splitlines() == [
        "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag\tTags",
        "demo\tn1\t10.0.0.1\tLeader\trunning\t3\t\t\t\t\t{nofailover: false}"]


def test_sync_standbys_and_standby_leaders_get_patronis_role_names() -> None:
    sync = make_view(config={"synchronous_mode": True}, sync={"leader": "n1", "sync_standby": "n2"})
    assert [r[2] for r in member_table(sync, "demo").rows] == ["Leader", "Sync Standby", "Replica"]
    standby = make_view({"n1": member_data("n1", "standby_leader")}, config={"standby_cluster": {"host": "x"}})
    assert member_table(standby, "demo").rows[0][2] == "Standby Leader"


def test_pending_and_scheduled_restart_columns_appear_when_a_member_has_one() -> None:
    view = make_view({"n1": member_data("n1", "primary"),
                      "n2": member_data("n2", pending_restart=True,
                                        pending_restart_reason={"shared_buffers": {"old_value": "16MB",
                                                                                   "new_value": "32MB"}},
                                        scheduled_restart={"schedule": "2026-01-02T10:00:00+00:00",
                                                           "postgres_version": "15.9"})})
    t = member_table(view, "demo")
    assert t.columns[-3:] == ["Pending restart", "Pending restart reason", "Scheduled restart"]
    assert t.rows[1][-3:] == ["*", "shared_buffers: 16MB->32MB", "2026-01-02T10:00:00+00:00 if version < 15.9"]
    assert t.rows[0][-3:] == ["", "", ""]


def test_extended_shows_the_optional_columns_even_when_empty() -> None:
    t = member_table(make_view({"n1": member_data("n1", "primary")}), "demo", extended=True)
    assert t.columns[-4:] == ["Pending restart", "Pending restart reason", "Scheduled restart", "Tags"]


def test_unknown_lag_without_the_leaders_optime_is_blank_not_zero() -> None:
    view = make_view(status="")
    replica = member_table(view, "demo").rows[1]
    assert replica[5:9] == ["0/5000060", "", "0/5000060", ""]


def test_service_lines_tell_maintenance_mode_and_a_scheduled_switchover() -> None:
    view = make_view(config={"pause": True},
                     failover={"leader": "n1", "member": "n2", "scheduled_at": "2026-09-24T10:36:00+02:00"})
    assert member_table(view, "demo").service_info == [
        "Maintenance mode: on",
        "Switchover scheduled at: 2026-09-24T10:36:00+02:00\n                    from: n1\n                      to: n2"]


def test_header_says_uninitialized_or_initializing_without_a_system_id() -> None:
    assert initialize_label(make_view(initialize=None)) == "uninitialized"
    assert initialize_label(make_view(initialize="")) == "initializing"
    assert member_table(make_view(initialize=None, members={}, leader=None), "demo").title == \
        " Cluster: demo (uninitialized) "


def test_topology_nests_cascading_replicas_under_their_replicatefrom_member() -> None:
    view = make_view({"n1": member_data("n1", "primary"), "n2": member_data("n2"),
                      "n3": member_data("n3", tags={"replicatefrom": "n2"}),
                      "n4": member_data("n4", tags={"replicatefrom": "n3"})})
    names = [r[0] for r in member_table(view, "demo", "topology").rows]
    assert names == ["n1", "+ n2", "  + n3", "    + n4"]


def test_topology_without_a_leader_and_with_a_replicatefrom_loop_still_shows_everyone_once() -> None:
    members = [{"name": "a", "role": "replica", "tags": {"replicatefrom": "b"}},
               {"name": "b", "role": "replica", "tags": {"replicatefrom": "a"}},
               {"name": "c", "role": "replica"}]
    assert [m["name"] for m in topology_order(members)] == ["+ c", "+ a", "+ b"]


def test_history_rows_are_padded_to_five_columns() -> None:
    view = make_view(history=[[1, 50331800, "no recovery target specified"],
                              [2, 83886240, "no recovery target specified", "2026-01-02T10:00:00+00:00", "n2"]])
    assert history_rows(view) == [
        [1, 50331800, "no recovery target specified", "", ""],
        [2, 83886240, "no recovery target specified", "2026-01-02T10:00:00+00:00", "n2"]]


# -- list --fencing: columns from each member's GET /patroni `pgwarden` key --------------------

def _own(**fields: Any) -> dict[str, Any]:
    own = {"watchdog_mode": "required", "watchdog_armed": True, "watchdog_since_feed": 1.25,
           "lease_deadline_in": 27.46, "vip_held": False, "worker_restarts": {"api": 0, "lease": 0}}
    return {"state": "running", "pgwarden": {**own, **fields}}


def test_fencing_columns_follow_patronictls_and_a_silent_member_shows_question_marks() -> None:
    view = make_view()
    bodies = {"n1": _own(vip_held=True, worker_restarts={"api": 1, "lease": 2}),
              "n2": _own(watchdog_mode="automatic", watchdog_armed=False, lease_deadline_in=None),
              "n3": None}
    t = member_table(view, "demo", fencing=bodies)
    assert format_rows(t.columns, t.rows, "pretty", t.title, {**ALIGN, **FENCING_ALIGN}) == f"""\
+ Cluster: demo ({SYSID}) ----+----+-------------+-----+------------+-----+----------------------+-----+-------+------+----------+
| Member | Host     | Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag | Watchdog             | Fed | Lease | VIP  | Restarts |
+--------+----------+---------+-----------+----+-------------+-----+------------+-----+----------------------+-----+-------+------+----------+
| n1     | 10.0.0.1 | Leader  | running   |  3 |             |     |            |     | armed (required)     | 1.2 |  27.5 | held |        3 |
| n2     | 10.0.0.2 | Replica | streaming |  3 |   0/5000060 |   0 |  0/5000060 |   0 | disarmed (automatic) |     |       |      |        0 |
| n3     | 10.0.0.3 | Replica | streaming |  3 |   0/5000060 |   0 |  0/5000060 |   0 | ?                    |   ? |     ? | ?    |        ? |
+--------+----------+---------+-----------+----+-------------+-----+------------+-----+----------------------+-----+-------+------+----------+"""


def test_without_fencing_the_table_is_untouched() -> None:
    view = make_view()
    plain = member_table(view, "demo")
    assert "Watchdog" not in plain.columns and len(plain.rows[0]) == len(plain.columns) == 9


def test_fencing_cells_for_each_watchdog_state() -> None:
    assert watchdog_text({"watchdog_mode": "off", "watchdog_armed": False}) == "off"
    assert watchdog_text({"watchdog_mode": "required", "watchdog_armed": True}) == "armed (required)"
    assert watchdog_text({"watchdog_mode": "automatic", "watchdog_armed": False}) == "disarmed (automatic)"
    assert watchdog_text({"watchdog_mode": None}) == ""
    # seconds since the last feed only while armed (a disarmed device's last feed is history)
    assert fencing_values(_own(watchdog_armed=False, watchdog_since_feed=300.0))["Fed"] == ""
    assert fencing_values(_own(watchdog_mode="off", watchdog_armed=False, watchdog_since_feed=None)) == {
        "Watchdog": "off", "Fed": "", "Lease": "27.5", "VIP": "", "Restarts": 0}


def test_an_expired_lease_is_negative_and_rounding_never_shows_minus_zero() -> None:
    assert fencing_values(_own(lease_deadline_in=-3.26))["Lease"] == "-3.3"
    assert fencing_values(_own(lease_deadline_in=-0.04))["Lease"] == "0.0"
    assert fencing_values(_own(lease_deadline_in=-0.04), "json")["Lease"] == 0.0


def test_a_patroni_member_answers_without_a_pgwarden_key_and_gets_blank_cells() -> None:
    assert fencing_values({"state": "running", "patroni": {"version": "4.1.5"}}) == {
        "Watchdog": "", "Fed": "", "Lease": "", "VIP": "", "Restarts": ""}


def test_fencing_in_json_keeps_numbers_and_adds_the_restarts_per_worker() -> None:
    view = make_view({"n1": member_data("n1", "primary"), "n2": member_data("n2")})
    bodies = {"n1": _own(vip_held=True, worker_restarts={"api": 1, "lease": 2}), "n2": None}
    t = member_table(view, "demo", "json", fencing=bodies)
    rows = json.loads(format_rows(t.columns, t.rows, "json", t.title))
    assert {k: v for k, v in rows[0].items() if k not in BASE_KEYS} == {
        "Watchdog": "armed (required)", "Fed": 1.2, "Lease": 27.5, "VIP": "held", "Restarts": 3,
        "Worker restarts": {"api": 1, "lease": 2}}
    assert {k: v for k, v in rows[1].items() if k not in BASE_KEYS} == {
        "Watchdog": "?", "Fed": "?", "Lease": "?", "VIP": "?", "Restarts": "?"}
    ty = member_table(view, "demo", "yaml", fencing=bodies)
    assert yaml.safe_load(format_rows(ty.columns, ty.rows, "yaml", ty.title)) == rows


def test_fencing_in_tsv_is_text_with_blank_cells() -> None:
    view = make_view({"n1": member_data("n1", "primary")})
    t = member_table(view, "demo", "tsv", fencing={"n1": _own()})
    assert format_rows(t.columns, t.rows, "tsv").splitlines() == [
        "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag"
        "\tWatchdog\tFed\tLease\tVIP\tRestarts",
        "demo\tn1\t10.0.0.1\tLeader\trunning\t3\t\t\t\t\tarmed (required)\t1.2\t27.5\t\t0"]
