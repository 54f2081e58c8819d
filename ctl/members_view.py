"""The `list` and `topology` tables, built from one ClusterView exactly as patronictl builds them.

Pure functions: a ClusterView in, columns and rows out. The member facts come from the
same `cluster_body` the REST API serves at /cluster, so `list` and `/cluster` agree.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pgwarden.ctl.fencing_view import fencing_columns, fencing_values
from pgwarden.ctl.output import yaml_text
from pgwarden.dcs.model import ClusterView
from pgwarden.workers.api_status import cluster_body

BASE_COLUMNS = ("Cluster", "Member", "Host", "Role", "State", "TL",
                "Receive LSN", "Receive Lag", "Replay LSN", "Replay Lag")
EXTENDED_COLUMNS = ("Pending restart", "Pending restart reason", "Scheduled restart", "Tags")
ALIGN = {"Receive LSN": "r", "Replay LSN": "r", "Lag": "r", "TL": "r"}
DEFAULT_PG_PORT = 5432
MB = 1024 * 1024


@dataclass(frozen=True)
class MemberTable:
    columns: list[str]
    rows: list[list[Any]]
    title: str
    service_info: list[str]


def initialize_label(view: ClusterView) -> str:
    """The header's bracket: the system identifier, or where the bootstrap is."""
    if view.initialize is None:
        return "uninitialized"
    return view.initialize or "initializing"


def _key(column: str) -> str:
    return column.lower().replace(" ", "_")


def _lag_mb(value: Any) -> Any:
    """Bytes to whole MB (Python's rounding, as patronictl); "unknown" shows as blank."""
    if isinstance(value, int) and not isinstance(value, bool):
        return round(value / MB)
    return "" if value == "unknown" else value


def _restart_reason(member: dict[str, Any], shorten: bool) -> str:
    lines = []
    for param, values in (member.get("pending_restart_reason") or {}).items():
        values = values if isinstance(values, dict) else {}
        text = f"{param}: {values.get('old_value', '')}->{values.get('new_value', '')}"
        lines.append(f"{param}: [hidden - too long]" if shorten and len(text) > 50 else text)
    return "\n".join(lines)


def _scheduled_restart(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    text = str(value.get("schedule", ""))
    if "postgres_version" in value:
        text += f" if version < {value['postgres_version']}"
    return text


def _row_values(member: dict[str, Any], cluster: str, fmt: str, append_port: bool) -> dict[str, Any]:
    receive_lsn, replay_lsn = member.get("receive_lsn", ""), member.get("replay_lsn", "")
    receive_lag, replay_lag = member.get("receive_lag", ""), member.get("replay_lag", "")
    lsn = member.get("lsn", "")
    # A member that publishes only xlog_location (older agents): show it in the right column.
    if receive_lsn == "unknown" and replay_lsn == "unknown" and lsn and lsn != "unknown":
        if member.get("state") == "streaming":
            receive_lsn, receive_lag = lsn, member.get("lag", "")
        else:
            replay_lsn, replay_lag = lsn, member.get("lag", "")
    host = member.get("host", "")
    if append_port and host and member.get("port"):
        host = f"{host}:{member['port']}"
    return {
        "cluster": cluster, "member": member["name"], "host": host,
        "role": str(member.get("role", "")).replace("_", " ").title(),
        "state": member.get("state", ""), "tl": member.get("timeline", ""),
        "receive_lsn": receive_lsn, "receive_lag": _lag_mb(receive_lag),
        "replay_lsn": replay_lsn, "replay_lag": _lag_mb(replay_lag),
        "pending_restart": "*" if member.get("pending_restart") else "",
        "pending_restart_reason": _restart_reason(member, fmt in ("pretty", "topology")),
        "scheduled_restart": _scheduled_restart(member.get("scheduled_restart", "")),
        "tags": member.get("tags", ""),
    }


def member_table(view: ClusterView, cluster: str, fmt: str = "pretty", extended: bool = False,
                 fencing: Mapping[str, dict[str, Any] | None] | None = None) -> MemberTable:
    """Columns and rows of `list` (fmt pretty/tsv/json/yaml) or `topology` (fmt "topology").

    `fencing` (`list --fencing`): each member's GET /patroni body, None if it did not answer;
    its columns come after patronictl's, which stay exactly as they are.
    """
    body = cluster_body(view, cluster)
    shown = [m for m in body["members"] if "host" in m]
    columns = list(BASE_COLUMNS)
    for column in EXTENDED_COLUMNS:
        if extended or any(m.get(_key(column)) for m in shown):
            columns.append(column)
    # host:port when someone is on a non-default port or two members share a host
    append_port = (any(m.get("port", DEFAULT_PG_PORT) != DEFAULT_PG_PORT for m in shown)
                   or len({m["host"] for m in shown}) < len(shown))
    ordered = topology_order(body["members"]) if fmt == "topology" else iter(body["members"])
    rows: list[list[Any]] = []
    ordered_names: list[str] = []
    for member in ordered:
        ordered_names.append(member["name"])
        values = _row_values(member, cluster, fmt, append_port)
        rows.append([values.get(_key(c), "") for c in columns])
    _format_tags(columns, rows, fmt)
    if fencing is not None:
        extra = fencing_columns(fmt)
        for member, row in zip(ordered_names, rows):
            cells = fencing_values(fencing.get(member), fmt)
            row.extend(cells[c] for c in extra)
        columns += extra
    title = f" Cluster: {cluster} ({initialize_label(view)}) "
    if fmt in ("pretty", "topology"):
        # The title names the cluster; both lag columns are just "Lag" under their LSN.
        columns = ["Lag" if c in ("Receive Lag", "Replay Lag") else c for c in columns[1:]]
        rows = [r[1:] for r in rows]
    return MemberTable(columns, rows, title, service_info(body))


def _format_tags(columns: list[str], rows: list[list[Any]], fmt: str) -> None:
    """Tags as YAML text in tables (block style in pretty, flow style in tsv/topology)."""
    if fmt in ("json", "yaml", "yml") or "Tags" not in columns:
        return
    i = columns.index("Tags")
    for row in rows:
        if row[i]:
            row[i] = yaml_text(row[i], flow=fmt != "pretty").strip()


def service_info(body: dict[str, Any]) -> list[str]:
    """Lines printed under the table: maintenance mode and a scheduled switchover."""
    info: list[str] = []
    if body.get("pause"):
        info.append("Maintenance mode: on")
    switchover = body.get("scheduled_switchover")
    if isinstance(switchover, dict):
        text = f"Switchover scheduled at: {switchover.get('at')}"
        for name in ("from", "to"):
            if name in switchover:
                text += f"\n{name:>24}: {switchover[name]}"
        info.append(text)
    return info


def topology_order(members: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The leader, then each member under the one it replicates from, names indented by level.

    A replica follows its `replicatefrom` tag when that names another replica, else the leader.
    """
    leader = next((m for m in members if str(m.get("role", "")).endswith("leader")), None)
    replicas = {m["name"] for m in members if m is not leader}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for m in members:
        if m is leader:
            continue
        parent = (m.get("tags") or {}).get("replicatefrom")
        if not (parent and parent != m["name"] and parent in replicas):
            parent = leader["name"] if leader else None
        children[parent].append(m)

    shown: set[str] = set()

    def walk(name: str | None, level: int) -> Iterator[dict[str, Any]]:
        for child in children.get(name, []):
            if child["name"] in shown:  # a replicatefrom loop: show each member once
                continue
            shown.add(child["name"])
            yield {**child, "name": "  " * (level - 1) + "+ " + child["name"]}
            yield from walk(child["name"], level + 1)

    if leader is not None:
        yield dict(leader)
    yield from walk(leader["name"] if leader else None, 1)
    # Members only reachable through a replicatefrom loop still get a row, under the leader.
    for m in members:
        if m is not leader and m["name"] not in shown:
            yield {**m, "name": "+ " + m["name"]}


def history_rows(view: ClusterView) -> list[list[Any]]:
    """The history key as rows of TL, LSN, Reason, Timestamp, New Leader (short entries padded)."""
    entries = view.history.value if isinstance(view.history.value, list) else []
    rows = []
    for entry in entries:
        row = list(entry) if isinstance(entry, list) else [entry]
        rows.append(row + [""] * (5 - len(row)))
    return rows
