"""Fakes for pgwardenctl's unit tests: a cluster store, members' REST APIs, a clock.

Not a test module: imported by tests/unit/test_ctl_*.py.
"""
from __future__ import annotations

import copy
import datetime
import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pgwarden.core.errors import DCSError
from pgwarden.ctl.context import Ctx
from pgwarden.ctl.errors import ApiUnreachable
from pgwarden.ctl.main import main
from pgwarden.ctl.rest import ApiResponse
from pgwarden.ctl.settings import Settings
from pgwarden.dcs.model import ClusterView, Member

SYSID = "7301234567890123456"
CONFIG = {"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576,
          "postgresql": {"parameters": {"max_connections": 100}, "use_slots": True}}


def member_data(name: str, role: str = "replica", port: int = 5432, **extra: Any) -> dict[str, Any]:
    """A member key as a pgwarden agent writes it (10.0.0.N, API on 8008)."""
    n = int(name.lstrip("n") or 1)
    data: dict[str, Any] = {
        "conn_url": f"postgres://10.0.0.{n}:{port}/postgres",
        "api_url": f"http://10.0.0.{n}:8008/patroni",
        "state": "running", "role": role, "version": "4.1.4", "timeline": 3,
    }
    if role == "primary":
        data["xlog_location"] = 0x5000060
    else:
        data.update(receive_lsn=0x5000060, replay_lsn=0x5000060, xlog_location=0x5000060,
                    replication_state="streaming")
    data.update(extra)
    return data


def make_view(members: dict[str, dict[str, Any]] | None = None, leader: str | None = "n1",
              config: dict[str, Any] | None = None, initialize: str | None = SYSID,
              **keys: Any) -> ClusterView:
    """A view decoded from raw key values, as the etcd client would build it."""
    if members is None:
        members = {"n1": member_data("n1", "primary"), "n2": member_data("n2"), "n3": member_data("n3")}
    items: dict[str, tuple[str, int, int]] = {}
    rev = 10
    for name, data in members.items():
        items[f"members/{name}"] = (json.dumps(data), rev, 7)
        rev += 1
    if leader is not None:
        items["leader"] = (leader, rev, 7)
    if initialize is not None:
        items["initialize"] = (initialize, 2, 0)
    items["config"] = (json.dumps(CONFIG if config is None else config), 5, 0)
    items.setdefault("status", (json.dumps({"optime": 0x5000060}), 6, 0))
    for key, value in keys.items():
        items[key] = (value if isinstance(value, str) else json.dumps(value), 8, 0)
    return ClusterView.from_kv(items, rev)


@dataclass
class FakeStore:
    """The DCS: a current view, recorded writes, optional failures."""

    view: ClusterView
    prefix: str = "/service/demo/"
    fail: str | None = None  # a DCSError message for every call
    cas_ok: bool = True
    writes: list[tuple[str, Any, int]] = field(default_factory=list)
    views: list[ClusterView] = field(default_factory=list)  # successive reads, then `view` forever
    deleted: bool = False
    closed: bool = False

    def read_cluster(self) -> ClusterView:
        if self.fail:
            raise DCSError(self.fail)
        if self.views:
            self.view = self.views.pop(0)
        return self.view

    def _write(self, what: str, value: Any, version: int) -> bool:
        if self.fail:
            raise DCSError(self.fail)
        self.writes.append((what, value, version))
        return self.cas_ok

    def set_config(self, value: dict[str, Any], version: int) -> bool:
        return self._write("config", value, version)

    def set_failover(self, value: dict[str, Any], version: int) -> bool:
        return self._write("failover", value, version)

    def delete_failover(self, version: int) -> bool:
        return self._write("delete failover", None, version)

    def delete_cluster(self) -> None:
        self.deleted = True

    def close(self) -> None:
        self.closed = True


Reply = ApiResponse | Exception | Callable[[], ApiResponse]


@dataclass
class FakeApi:
    """Members' REST APIs: replies by (member, METHOD, endpoint); records every call."""

    replies: dict[tuple[str, str, str], Reply | list[Reply]] = field(default_factory=dict)
    calls: list[tuple[str, str, str, Any]] = field(default_factory=list)

    def on(self, member: str, method: str, endpoint: str, *replies: Reply) -> FakeApi:
        self.replies[(member, method, endpoint)] = list(replies) if len(replies) > 1 else replies[0]
        return self

    def request(self, member: Member, method: str, endpoint: str, body: Any = None,
                timeout: float | None = None) -> ApiResponse:
        self.calls.append((member.name, method, endpoint, copy.deepcopy(body)))
        reply = self.replies.get((member.name, method, endpoint))
        if isinstance(reply, list):
            reply = reply.pop(0) if len(reply) > 1 else reply[0]
        if reply is None:
            raise ApiUnreachable(f"{member.name}: {method} http://{member.name}/{endpoint} failed: Connection refused")
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply()
        return reply


def ok(text: str = "", status: int = 200) -> ApiResponse:
    return ApiResponse(status, text)


def patroni(state: str = "running", start: str = "2026-01-02 10:00:00+00", role: str = "replica") -> ApiResponse:
    return ApiResponse(200, json.dumps({"state": state, "role": role, "postmaster_start_time": start}))


def fenced(mode: str | None = "required", armed: bool = True, since_feed: float | None = 1.25,
           lease: float | None = 27.46, vip: bool = False, restarts: dict[str, int] | None = None,
           status: int = 200) -> ApiResponse:
    """GET /patroni as a pgwarden agent answers it: the fencing state under the `pgwarden` key."""
    own = {"version": "0.1.0", "decision_reason": "no action", "watchdog_mode": mode, "watchdog_armed": armed,
           "watchdog_since_feed": since_feed, "watchdog_reason": None, "lease_deadline_in": lease,
           "vip_held": vip, "vip_holder": "n1" if vip else None,
           "worker_restarts": {"api": 0, "lease": 0} if restarts is None else restarts}
    return ApiResponse(status, json.dumps({"state": "running", "role": "replica", "pgwarden": own}))


class FakeClock:
    """Monotonic time that advances only when the command sleeps."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept = 0.0

    def mono(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        self.slept += seconds


@dataclass
class Result:
    code: int
    out: str
    err: str
    store: FakeStore
    api: FakeApi


def run_ctl(argv: list[str], store: FakeStore | None = None, api: FakeApi | None = None,
            stdin: str = "", capsys: Any = None, env: dict[str, str] | None = None,
            clock: FakeClock | None = None) -> Result:
    """Run pgwardenctl's main with fakes; stdout/stderr from pytest's capsys."""
    store = store or FakeStore(make_view())
    api = api or FakeApi()
    clock = clock or FakeClock()

    def make_ctx(settings: Settings, force: bool) -> Ctx:
        return Ctx(settings, stdin=io.StringIO(stdin), env=env or {}, store_factory=lambda s, c: store,
                   api=api, mono=clock.mono, sleep=clock.sleep, force=force,
                   now=lambda: datetime.datetime(2026, 1, 2, 10, 0, 0))

    code = main(["--dcs-url", "etcd3://127.0.0.1:2379", "--scope", "demo", *argv], make_ctx)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err, store, api)


def isolate_env(monkeypatch: Any, home: Any) -> None:
    """No config file, DCS URL or agent override from the machine running the tests."""
    import os

    monkeypatch.setenv("HOME", str(home))
    for var in list(os.environ):
        if var.startswith(("PATRONI_", "PGWARDEN_")) or var in (
                "DCS_URL", "PGWARDENCTL_CONFIG_FILE", "PATRONICTL_CONFIG_FILE", "PGWARDENCTL_DEBUG"):
            monkeypatch.delenv(var, raising=False)
