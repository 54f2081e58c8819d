"""A request runner that lives inside one lab namespace (usually `client`).

The root namespace has no route to the lab (and must never get one), so HTTP and SQL to lab
addresses are made from inside: the lab starts `ip netns exec NS python -m pgwarden.lab.probe`
once and talks JSON lines over its stdin/stdout. One request per line, one answer per line:

  {"id": 1, "op": "http", "url": "http://10.1.2.1:8008/patroni", "timeout": 2}
    -> {"id": 1, "status": 200, "body": {...}}           (status 0 + "error": no answer)
  {"id": 2, "op": "sql", "host": "10.1.2.1", "port": 5432, "user": "postgres",
   "password": "...", "query": "SELECT 1", "params": [], "timeout": 5}
    -> {"id": 2, "rows": [[1]], "rowcount": 1}           (or "error" and "sqlstate")
  {"id": 3, "op": "tcp", "host": "10.1.2.200", "port": 2379, "timeout": 1}
    -> {"id": 3, "ok": true}                             (or false + "error")
"""
from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from typing import Any

from pgwarden.lab.common import parse_json


def http(req: dict[str, Any]) -> dict[str, Any]:
    data = req.get("body")
    raw = None if data is None else json.dumps(data).encode()
    r = urllib.request.Request(req["url"], data=raw, method=req.get("method", "GET"),
                               headers={"Content-Type": "application/json"} if raw else {})
    try:
        with urllib.request.urlopen(r, timeout=float(req.get("timeout", 2.0))) as resp:
            body = resp.read()
            return {"status": resp.status, "body": _body(body)}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": _body(e.read())}
    except (urllib.error.URLError, OSError, ValueError) as e:
        return {"status": 0, "body": None, "error": str(getattr(e, "reason", e))}


def _body(raw: bytes) -> Any:
    parsed = parse_json(raw)
    return parsed if parsed is not None else raw.decode(errors="replace")


_guard = None


def sql(req: dict[str, Any]) -> dict[str, Any]:
    import psycopg  # noqa: PLC0415 - HTTP-only probes skip the import

    from pgwarden.lab import pgconn  # noqa: PLC0415

    global _guard
    if _guard is None:
        _guard = pgconn.Guard()
    timeout = float(req.get("timeout", 5.0))
    try:
        conn = pgconn.connect(req["host"], int(req.get("port", 5432)), user=req["user"],
                              password=req.get("password"), dbname=req.get("dbname", "postgres"),
                              timeout=min(timeout, float(req.get("connect_timeout", 2.0))))
    except psycopg.Error as e:
        return {"error": str(e).strip(), "sqlstate": getattr(e, "sqlstate", None)}
    try:
        rows, rowcount = pgconn.query(conn, req["query"], req.get("params") or None,
                                      timeout=timeout, guard=_guard)
        return {"rows": [list(r) for r in rows], "rowcount": rowcount}
    except psycopg.Error as e:
        return {"error": str(e).strip(), "sqlstate": getattr(e, "sqlstate", None)}
    finally:
        conn.close()


def tcp(req: dict[str, Any]) -> dict[str, Any]:
    try:
        with socket.create_connection((req["host"], int(req["port"])),
                                      timeout=float(req.get("timeout", 1.0))):
            return {"ok": True}
    except OSError as e:
        return {"ok": False, "error": str(e)}


OPS = {"http": http, "sql": sql, "tcp": tcp}


def main() -> int:
    for line in sys.stdin:
        if not line.strip():
            continue
        req: Any = {}
        try:
            req = json.loads(line)
            op = OPS[req["op"]]
            ans = op(req)
        except Exception as e:  # noqa: BLE001 - every request gets an answer
            ans = {"error": f"{type(e).__name__}: {e}"}
        ans["id"] = req.get("id") if isinstance(req, dict) else None
        sys.stdout.write(json.dumps(ans, default=str) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
