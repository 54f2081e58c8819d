"""The members/<name> JSON this agent publishes, in Patroni 4's format."""
from __future__ import annotations

from typing import Any

from pgwarden.core.config_model import Config
from pgwarden.core.version import PATRONI_COMPAT_VERSION


def member_data(cfg: Config, pg: dict[str, Any], paused: bool,
                scheduled_restart: dict[str, Any] | None = None) -> dict[str, Any]:
    pgc = cfg.postgresql.connect_address
    api = cfg.restapi.connect_address
    role = pg.get("role") or "uninitialized"
    data: dict[str, Any] = {
        "conn_url": f"postgres://{url_host(pgc.host)}:{pgc.port}/postgres",
        # patronictl and peers take the scheme from api_url, so it must say https under TLS
        "api_url": f"{cfg.restapi.scheme}://{url_host(api.host)}:{api.port}/patroni",
        "state": pg.get("state") or "stopped",
        "role": role,
        # Patroni's tools read this as the Patroni version (feature gates): speak theirs
        "version": PATRONI_COMPAT_VERSION,
    }
    if pg.get("running"):
        xlog = pg.get("xlog") or {}
        if pg.get("wal_position") is not None:
            data["xlog_location"] = pg["wal_position"]
        if role == "replica":
            if xlog.get("received_location") is not None:
                data["receive_lsn"] = xlog["received_location"]
            if xlog.get("replayed_location") is not None:
                data["replay_lsn"] = xlog["replayed_location"]
            if pg.get("replication_state"):
                data["replication_state"] = pg["replication_state"]
        if pg.get("timeline") is not None:
            data["timeline"] = pg["timeline"]
    if cfg.tags:
        data["tags"] = cfg.tags
    if pg.get("pending_restart"):
        data["pending_restart"] = True
        if isinstance(pg.get("pending_restart_reason"), dict):
            data["pending_restart_reason"] = pg["pending_restart_reason"]
    if isinstance(scheduled_restart, dict):
        data["scheduled_restart"] = scheduled_restart
    if paused:
        data["pause"] = True
    return data


def url_host(host: str) -> str:
    """An IPv6 literal goes in brackets inside a URL (RFC 3986); names and IPv4 as they are."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
