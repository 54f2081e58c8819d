"""Reaching inside the lab: a command in a host's namespace, HTTP, TCP and SQL via probes.

Every request goes from inside a lab namespace (the client's, unless `via` names another),
because the root namespace has no route to the lab and must never get one.
"""
from __future__ import annotations

import subprocess
from typing import Any, Sequence

from pgwarden.lab import netns
from pgwarden.lab.common import SUPERUSER_PASSWORD
from pgwarden.lab.labcore import LabCore
from pgwarden.lab.labstate import API_PORT, PG_PORT, LabError
from pgwarden.lab.probe_client import Probe


class LabAccess(LabCore):
    def exec_in(self, host: str, cmd: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        """Run `cmd` in the host's namespace (text output captured)."""
        return netns.ns_exec(self.ns(host), cmd, **kw)

    def probe(self, host: str = "client") -> Probe:
        ns = self.ns(host)
        if ns not in self._probes:
            self._probes[ns] = Probe(ns, self.python, self.lab_dir / f"probe-{host}.err")
        return self._probes[ns]

    def _close_probes(self) -> None:
        for p in self._probes.values():
            p.close()
        self._probes.clear()

    def api_get(self, target: str, path: str, timeout: float = 2.0,
                port: int = API_PORT, via: str = "client") -> tuple[int, Any]:
        """(status, JSON body) of GET http://<target>:8008<path> from inside the client
        namespace; status 0 when nothing answered."""
        url = f"http://{self.address(target)}:{port}{path}"
        ans = self.probe(via).request({"op": "http", "url": url, "timeout": timeout}, timeout)
        return int(ans.get("status", 0) or 0), ans.get("body")

    def api_request(self, target: str, path: str, method: str = "POST", body: Any = None,
                    timeout: float = 5.0) -> tuple[int, Any]:
        url = f"http://{self.address(target)}:{API_PORT}{path}"
        ans = self.probe().request({"op": "http", "url": url, "method": method, "body": body,
                                    "timeout": timeout}, timeout)
        return int(ans.get("status", 0) or 0), ans.get("body")

    def tcp_check(self, target: str, port: int, via: str = "client",
                  timeout: float = 1.0) -> bool:
        ans = self.probe(via).request({"op": "tcp", "host": self.address(target), "port": port,
                                       "timeout": timeout}, timeout)
        return bool(ans.get("ok"))

    def sql(self, target: str, query: str, params: Sequence[Any] = (), timeout: float = 5.0,
            dbname: str = "postgres", check: bool = True) -> list[list[Any]]:
        """Rows of `query` on a host or the VIP, run from the client namespace as the
        superuser. An error raises LabError (or returns [] with check=False)."""
        ans = self.probe().request({
            "op": "sql", "host": self.address(target), "port": PG_PORT, "user": "postgres",
            "password": SUPERUSER_PASSWORD, "dbname": dbname, "query": query,
            "params": list(params), "timeout": timeout}, timeout + 3)
        if "error" in ans:
            if check:
                raise LabError(f"SQL on {target}: {ans['error']}")
            return []
        return ans["rows"]  # type: ignore[no-any-return]
