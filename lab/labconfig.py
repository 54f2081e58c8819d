"""The agent config file the lab writes for one database host (a pure function of lab.json)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pgwarden.lab.common import agent_config
from pgwarden.lab.labstate import API_PORT, ETCD_CLIENT_PORT, PG_PORT, db_names


def host_config(state: dict[str, Any], host: str) -> dict[str, Any]:
    """The YAML document of `host`'s agent (Patroni's keys plus `vip`)."""
    h = state["hosts"][host]
    o = state["options"]
    host_dir = Path(h["dir"])
    addr, subnet = h["address"], state["subnet"]
    params: dict[str, Any] = {"shared_buffers": "16MB", "wal_keep_size": "64MB",
                              "max_connections": 50,
                              # A SIGKILLed postmaster leaves its posix segments in the
                              # machine-wide /dev/shm (a real power cut clears it); mmap
                              # keeps them in the data dir, cleaned at start and by down.
                              "dynamic_shared_memory_type": "mmap",
                              # who took a row: the writer's table defaults to this
                              "pgwarden_lab.node": host}
    if o["sync"]:
        params["synchronous_standby_names"] = f"ANY 1 ({', '.join(db_names(state))})"
    dcs_extra: dict[str, Any] = {}
    if o["primary_start_timeout"] is not None:
        dcs_extra["primary_start_timeout"] = o["primary_start_timeout"]
    dcs = state["hosts"]["dcs"]["address"]
    return agent_config(
        scope=state["scope"], name=host,
        restapi=f"{addr}:{API_PORT}",
        # Every address of the namespace: its own, and the VIP whenever it holds it.
        pg_listen=f"0.0.0.0:{PG_PORT}", pg_connect=f"{addr}:{PG_PORT}",
        data_dir=host_dir / "data",
        etcd_hosts=[f"{dcs}:{ETCD_CLIENT_PORT}"],
        ttl=o["ttl"], loop_wait=o["loop_wait"], retry_timeout=o["retry_timeout"],
        dcs_postgresql={"use_pg_rewind": True, "use_slots": True,
                        "parameters": {"max_connections": 50, "wal_keep_size": "64MB"}},
        dcs_extra=dcs_extra,
        postgresql_extra={"use_pg_rewind": True,
                          "remove_data_directory_on_rewind_failure": True},
        pg_parameters=params,
        pg_hba=["local all all trust",
                "host all all 127.0.0.1/32 scram-sha-256",
                f"host replication replicator {subnet} scram-sha-256",
                f"host all all {subnet} scram-sha-256"],
        watchdog={"mode": state["watchdog_mode"],
                  "device": str(host_dir / "watchdog"),
                  "safety_margin": o["safety_margin"]},
        vip={"address": state["vip"], "interface": "eth0"},
    )
