"""Observing the lab: roles, the primary, health, the VIP's holder, streaming, lag, status.

All of it as a client sees it (REST API and SQL from the client namespace), except the VIP,
which is read off each host's eth0 (the truth the neighbour tables will follow).
"""
from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from pgwarden.lab import netns
from pgwarden.lab.common import alive, log_tail, wait_until
from pgwarden.lab.labaccess import LabAccess
from pgwarden.lab.labstate import ETCD_CLIENT_PORT


class LabObserve(LabAccess):
    def live_db_hosts(self) -> list[str]:
        return [h for h in self.db_hosts if h not in self.state["crashed"]]

    def roles(self, hosts: Sequence[str] | None = None) -> dict[str, str | None]:
        """{host: 'primary' / 'replica' / ... (role of a running server per /patroni), None
        when its API does not answer or PostgreSQL is not running}."""
        out: dict[str, str | None] = {}
        for host in hosts if hosts is not None else self.live_db_hosts():
            status, body = self.api_get(host, "/patroni", timeout=1.0)
            if status and isinstance(body, dict) and body.get("state") == "running":
                out[host] = body.get("role")
            else:
                out[host] = None
        return out

    def primary(self, hosts: Sequence[str] | None = None) -> str | None:
        """The one host answering 200 on GET /primary (None if none or several)."""
        hs = hosts if hosts is not None else self.live_db_hosts()
        ps = [h for h in hs if self.api_get(h, "/primary", timeout=1.0)[0] == 200]
        return ps[0] if len(ps) == 1 else None

    def healthy(self, hosts: Sequence[str] | None = None) -> str | None:
        """The primary's name once exactly one of `hosts` (default: all not crashed) is
        primary and every other one answers /replica with 200."""
        hs = list(hosts if hosts is not None else self.live_db_hosts())
        codes = {h: (self.api_get(h, "/primary", timeout=1.0)[0],
                     self.api_get(h, "/replica", timeout=1.0)[0]) for h in hs}
        ps = [h for h, (p, _) in codes.items() if p == 200]
        rs = [h for h, (_, r) in codes.items() if r == 200]
        return ps[0] if len(ps) == 1 and len(rs) == len(hs) - 1 else None

    def vip_holders(self) -> list[str]:
        return [h for h in self.db_hosts
                if any(a.split("/")[0] == self.vip for a in netns.addresses(self.ns(h)))]

    def vip_holder(self) -> str | None:
        holders = self.vip_holders()
        return holders[0] if len(holders) == 1 else None

    def mac_of(self, host: str, dev: str = "eth0") -> str | None:
        """The hardware address of a host's interface."""
        out = netns.ip("-j", "link", "show", "dev", dev, ns=self.ns(host), check=False)
        try:
            data = json.loads(out.stdout) if out.returncode == 0 else []
        except ValueError:
            return None
        return str(data[0]["address"]) if data and data[0].get("address") else None

    def neighbour(self, address: str, via: str = "client") -> tuple[str | None, str | None]:
        """(MAC, NUD state) of `via`'s neighbour entry for `address` ((None, None): none).
        After a failover the client's entry for the VIP must name the new holder's MAC."""
        out = netns.ip("-j", "-4", "neigh", "show", address, "dev", "eth0", ns=self.ns(via),
                       check=False)
        try:
            data = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
        except ValueError:
            return None, None
        if not data:
            return None, None
        state = data[0].get("state")
        return data[0].get("lladdr"), ",".join(state) if isinstance(state, list) else state

    def timeline(self, host: str) -> int | None:
        """The timeline a host's PostgreSQL runs on, per /patroni."""
        status, body = self.api_get(host, "/patroni", timeout=1.0)
        if status and isinstance(body, dict) and body.get("timeline") is not None:
            return int(body["timeline"])
        return None

    def streaming(self, primary: str) -> list[str]:
        """Names (application_name) streaming from `primary`, per pg_stat_replication."""
        rows = self.sql(primary, "SELECT application_name FROM pg_stat_replication "
                        "WHERE state = 'streaming' ORDER BY 1", check=False)
        return [r[0] for r in rows]

    def lags(self) -> dict[str, Any]:
        """{member: lag in bytes (or 'unknown')} from GET /cluster of any answering host."""
        for host in self.live_db_hosts():
            if host in self.state["partitioned"]:
                continue
            status, body = self.api_get(host, "/cluster", timeout=1.0)
            if status == 200 and isinstance(body, dict):
                return {m["name"]: m.get("lag", 0 if m.get("role") == "leader" else None)
                        for m in body.get("members", [])}
        return {}

    def status(self) -> dict[str, Any]:
        self._reload()
        lags = self.lags()
        hosts = []
        for name, h in self.hosts.items():
            entry: dict[str, Any] = {"host": name, "kind": h["kind"], "ns": h["ns"],
                                     "address": h["address"],
                                     "crashed": name in self.state["crashed"],
                                     "partitioned": name in self.state["partitioned"],
                                     "frozen": self.state["frozen"].get(name, {}).get("what", [])}
            frozen = self.state["frozen"].get(name)
            if frozen and not any(alive(p) for p in frozen["pids"]):
                entry["frozen"] = []  # the frozen processes are gone (fenced, crashed)
            if h["kind"] == "db":
                code, body = 0, None
                if name not in self.state["crashed"]:
                    # A partitioned host is asked from inside its own namespace: its own view.
                    via = name if name in self.state["partitioned"] else "client"
                    code, body = self.api_get(name, "/patroni", timeout=1.0, via=via)
                body = body if isinstance(body, dict) else {}
                entry.update({
                    "agent": self.agent_alive(name),
                    "emulator": self.pid_of(name, "emulator") is not None,
                    "api": code,
                    "role": body.get("role"), "state": body.get("state"),
                    "vip": self.vip in [a.split("/")[0] for a in netns.addresses(h["ns"])],
                    "lag": lags.get(name) if body.get("state") == "running" else None,
                    "decision": (body.get("pgwarden") or {}).get("decision_reason"),
                })
            elif h["kind"] == "dcs":
                entry["etcd"] = self.pid_of(name, "etcd") is not None
                entry["etcd_healthy"] = (self.api_get(name, "/health", port=ETCD_CLIENT_PORT,
                                                      timeout=1.0)[1] or {}).get("health") == "true"
            else:
                entry["writer"] = self.pid_of(name, "writer") is not None
            hosts.append(entry)
        return {"prefix": self.prefix, "lab_dir": str(self.lab_dir), "scope": self.scope,
                "subnet": self.state["subnet"], "vip": self.state["vip"],
                "watchdog_mode": self.state["watchdog_mode"], "hosts": hosts}

    def wait_until(self, cond: Callable[[], Any], timeout: float, what: str,
                   step: float = 0.25) -> Any:
        return wait_until(cond, timeout, what, step, dump=self.debug_dump)

    def debug_dump(self, lines: int = 30) -> str:
        parts = []
        for host in self.db_hosts:
            parts.append(f"--- {host} agent log tail ---\n{log_tail(self.log_path(host), lines)}")
        return "\n".join(parts)
