"""The REST API's operations: switchover, failover, restart, reload, reinitialize, the
dynamic configuration and the history. Patroni's paths, bodies, status codes and texts
(patronictl prints them and matches some), with pgwarden's own checks where Patroni is weak:
a candidate that lags more than maximum_lag_on_failover is refused before anything is
written, and a new configuration is validated before it reaches the DCS.

Two ways out of this process:
* the cluster-wide keys (`failover`, `config`) are written here, through a DCS client of the
  api worker's own (no lease, compare-and-swap writes only), as Patroni's API does;
* local operations (restart, reload, reinitialize) are requests to this node's supervisor
  through the shared state (`RequestChannel`): the api section lists them, the supervisor
  answers each id once in its section, and the handler waits for that answer.
"""
from __future__ import annotations

import itertools
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from pgwarden.core.config import dynamic_from_dict
from pgwarden.core.errors import ConfigError, DCSError
from pgwarden.dcs.model import ClusterView, cluster_prefix
from pgwarden.supervisor.requests import validate_restart_args
from pgwarden.supervisor.switchover import candidate_problem, member_problem, parse_time
from pgwarden.workers.api_status import dcs_view

# api_server imports this module only inside its route hook, so no import cycle here
from pgwarden.workers.api_server import ApiError, json_response, text_response

if TYPE_CHECKING:
    from pgwarden.core.shm import SharedState
    from pgwarden.dcs.base import DCS
    from pgwarden.workers.api_server import ApiApp, Request, Response

POLL = 0.05
SWITCHOVER_WAIT = 30.0  # how long POST /switchover waits for the new leader before answering
REQUEST_WAIT = 10.0  # local requests answered at once (reload, reinitialize, schedules)
RESTART_WAIT = 120.0  # a restart without a timeout of its own


class RequestChannel:
    """Requests from the API's handler threads to the supervisor, through the api section."""

    KEEP = 32

    def __init__(self, app: "ApiApp", poke: Callable[[], None]) -> None:
        self.app = app
        self.poke = poke
        self.lock = threading.Lock()
        self.items: list[dict[str, Any]] = []
        self.base: dict[str, Any] = {}
        self.ids = itertools.count(1)
        self.prefix = f"{os.getpid()}-{int(time.time() * 1000)}"
        # the last POST /failsafe accepted. A promise made before this api worker was
        # restarted still binds the node (no race for ttl after it): it is read back from
        # the section the previous worker published, on the same monotonic clock
        self.failsafe_ping: dict[str, Any] | None = inherited_failsafe_ping(app.shm)

    def publish(self, base: dict[str, Any] | None = None) -> None:
        """Publish the api section: the worker's own fields plus the open requests."""
        with self.lock:
            if base is not None:
                self.base = dict(base)
            self.app.shm.publish("api", dict(self.base, requests=list(self.items),
                                             failsafe_ping=self.failsafe_ping))

    def submit(self, kind: str, args: dict[str, Any]) -> str:
        rid = f"{self.prefix}-{next(self.ids)}"
        with self.lock:
            self.items.append({"id": rid, "kind": kind, "args": args})
            del self.items[:-self.KEEP]
        self.publish()
        self.poke()
        return rid

    def wait(self, rid: str, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while True:
            done = self.app.shm.read("supervisor").data.get("requests_done") or {}
            if isinstance(done.get(rid), dict):
                return done[rid]
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL)


def inherited_failsafe_ping(shm: "SharedState") -> dict[str, Any] | None:
    previous = shm.read("api")
    ping = None if previous.torn else previous.data.get("failsafe_ping")
    if isinstance(ping, dict) and isinstance(ping.get("name"), str) \
            and isinstance(ping.get("at"), (int, float)):
        return ping
    return None


class Actions:
    """The handlers; one instance per ApiApp."""

    def __init__(self, app: "ApiApp") -> None:
        self.app = app
        # set by the api worker: wakes the supervisor at once (requests, config changes)
        self.wake_supervisor: Callable[[], None] = lambda: None
        self.channel = RequestChannel(app, self.poke)
        self._dcs: DCS | None = None
        self._dcs_lock = threading.Lock()

    # -- plumbing -----------------------------------------------------------------------

    def poke(self) -> None:
        self.wake_supervisor()

    def dcs(self) -> "DCS":
        """The api worker's own DCS client, made on first use (grpc is imported only then,
        after the fork). Per-call deadlines keep a frozen etcd from pinning a handler."""
        with self._dcs_lock:
            if self._dcs is None:
                from pgwarden.dcs.etcd3 import Etcd3DCS

                cfg = self.app.config
                timeout = max(1.0, min(float(cfg.bootstrap_dcs.retry_timeout), 5.0))
                self._dcs = Etcd3DCS([(h.host, h.port) for h in cfg.etcd3_hosts],
                                     cluster_prefix(cfg.namespace, cfg.scope),
                                     int(cfg.bootstrap_dcs.ttl), timeout)
            return self._dcs

    def warm_up(self) -> None:
        """Create the DCS client and read once, so the first operation is not slowed."""
        try:
            self.fresh()
        except Exception:  # noqa: BLE001 - best effort; a real request reports the error
            pass

    def fresh(self) -> ClusterView:
        return self.dcs().read_cluster()

    def fresh_view(self) -> ClusterView:
        """A fresh read for a handler: a DCS out of reach answers 503 with the reason."""
        try:
            return self.fresh()
        except DCSError as e:
            raise ApiError(503, f"DCS is not accessible: {e}") from None

    def cached(self) -> ClusterView | None:
        lease = self.app.shm.read("lease").data
        sup = self.app.shm.read("supervisor").data
        from pgwarden.workers.api_status import Snapshot, dynamic_setting

        snap = Snapshot(supervisor=sup, lease=lease)
        return dcs_view(snap, self.app.clock(), dynamic_setting(snap, self.app.config, "ttl"))

    def dynamic(self) -> dict[str, Any]:
        dyn = self.app.shm.read("supervisor").data.get("dynamic")
        return dyn if isinstance(dyn, dict) else {}

    # -- switchover and failover ------------------------------------------------------

    def post_switchover(self, request: "Request") -> "Response":
        return self._failover(request, "switchover")

    def post_failover(self, request: "Request") -> "Response":
        return self._failover(request, "failover")

    def _failover(self, request: "Request", action: str) -> "Response":

        body = request.json_object()
        leader = body.get("leader") or None
        candidate = body.get("candidate") or body.get("member") or None
        scheduled = body.get("scheduled_at") or None
        for field, v in (("leader", leader), ("candidate", candidate)):
            if v is not None and not isinstance(v, str):
                return text_response(400, f"{field} must be a member name (a string)")
        cluster = self.fresh_view()
        paused = isinstance(cluster.config.value, dict) and cluster.config.value.get("pause") is True
        if action == "failover" and not candidate:
            return text_response(400, "Failover could be performed only to a specific candidate")
        if action == "switchover" and not leader:
            return text_response(400, "Switchover could be performed only from a specific leader")
        at: float | None = None
        if scheduled:
            if action == "failover":
                return text_response(400, "Failover can't be scheduled")
            if paused:
                return text_response(400, "Can't schedule switchover in the paused state")
            at, why = parse_time(scheduled)
            if at is None:
                return text_response(400 if "Timezone" in str(why) else 422, str(why))
            if at < time.time():
                return text_response(422, "Cannot schedule switchover in the past")
        if paused and not candidate:
            return text_response(
                400, "Switchover is possible only to a specific candidate in a paused state")
        if action == "failover" and leader:
            action = "switchover"  # Patroni: a failover naming the leader is a switchover
        if leader is not None and leader == candidate:
            return text_response(400, "Switchover target and source are the same")
        if at is None:
            problem = self.failover_problem(cluster, leader, candidate, action)
            if problem is not None:
                return text_response(412, problem)
        value: dict[str, Any] = {}
        if leader:
            value["leader"] = leader
        if candidate:
            value["member"] = candidate
        if scheduled:
            value["scheduled_at"] = scheduled
        try:
            written = self.dcs().set_failover(value, cluster.failover.version)
        except DCSError:
            written = False
        if not written:
            return text_response(503, "failed to write failover key into DCS")
        self.poke()
        if at is not None:
            return text_response(202, f"{action.title()} scheduled")
        code, text = self.wait_for_new_leader(cluster.leader, candidate, action)
        return text_response(code, text)

    def failover_problem(self, cluster: ClusterView, leader: str | None,
                         candidate: str | None, action: str) -> str | None:
        """Patroni's precondition texts (412), plus the lag check Patroni leaves to the
        leader's next cycle (where the key is then dropped without a word to the caller)."""
        if leader and cluster.leader != leader:
            return "leader name does not match"
        dyn = cluster.config.value if isinstance(cluster.config.value, dict) else {}
        try:
            max_lag = int(dyn.get("maximum_lag_on_failover", 1048576))
        except (TypeError, ValueError):
            max_lag = 1048576
        leader_wal = self._leader_wal(cluster)
        if candidate:
            if candidate not in cluster.members:
                return "candidate does not exists"
            problem = candidate_problem(cluster, candidate, leader_wal, max_lag)
            return None if problem is None else f"{action} is not possible: {problem}"
        others = [m for n, m in sorted(cluster.members.items())
                  if n != cluster.leader and m.api_url]
        if not others:
            return f"{action} is not possible: cluster does not have members except leader"
        if all(member_problem(m, leader_wal, max_lag) is not None for m in others):
            return f"{action} is not possible: no good candidates have been found"
        return None

    @staticmethod
    def _leader_wal(cluster: ClusterView) -> int | None:
        if cluster.leader and cluster.leader in cluster.members:
            loc = cluster.members[cluster.leader].xlog_location
            if loc is not None:
                return max(loc, cluster.optime or 0)
        return cluster.optime

    def wait_for_new_leader(self, old: str | None, candidate: str | None,
                            action: str) -> tuple[int, str]:
        """Watch this node's cached view (kept current by the lease worker's watch) until
        another member holds the key. A slow switchover is reported as still in progress,
        never as failed; failed means the key was cleared with the old leader in place."""
        deadline = time.monotonic() + SWITCHOVER_WAIT
        seen_key = False
        while time.monotonic() < deadline:
            view = self.cached()
            if view is not None:
                if view.leader is not None and view.leader != old:
                    if not candidate or candidate == view.leader:
                        return 200, f'Successfully {action[:-4]}ed over to "{view.leader}"'
                    return 200, (f'{action[:-4].title()}ed over to "{view.leader}" instead '
                                 f'of "{candidate}"')
                has_key = isinstance(view.failover.value, dict) and bool(view.failover.value)
                seen_key = seen_key or has_key
                if seen_key and not has_key and view.leader == old:
                    return 503, f"{action.title()} failed"
            time.sleep(POLL)
        return 503, (f"{action.title()} status unknown after {SWITCHOVER_WAIT:g} seconds; "
                     "operation may still be in progress")

    def delete_switchover(self, request: "Request") -> "Response":

        cluster = self.fresh_view()
        value = cluster.failover.value
        if not (isinstance(value, dict) and value.get("scheduled_at")):
            return text_response(404, "no switchover is scheduled")
        try:
            ok = self.dcs().delete_failover(cluster.failover.version)
        except DCSError:
            ok = False
        if not ok:
            return text_response(409, "the failover key changed meanwhile; read it again")
        return text_response(200, "scheduled switchover deleted")

    # -- configuration and history ----------------------------------------------------

    def get_config(self, request: "Request") -> "Response":

        cluster = self.fresh_view()
        if not isinstance(cluster.config.value, dict) or not cluster.config.version:
            return text_response(502, "the config key does not exist")
        return json_response(200, cluster.config.value)

    def patch_config(self, request: "Request") -> "Response":

        patch = request.json_object()
        cluster = self.fresh_view()
        if not isinstance(cluster.config.value, dict) or not cluster.config.version:
            return text_response(503, "the config key does not exist")
        data = merge_patch(cluster.config.value, patch)
        problem = config_problem(data)
        if problem is not None:
            return text_response(400, problem)
        if data != cluster.config.value:
            try:
                ok = self.dcs().set_config(data, cluster.config.version)
            except DCSError:
                ok = False
            if not ok:
                return text_response(409, "the config key changed meanwhile; read it again")
        self.poke()
        return json_response(200, data)

    def put_config(self, request: "Request") -> "Response":

        data = request.json_object()
        problem = config_problem(data)
        if problem is not None:
            return text_response(400, problem)
        for _ in range(3):  # unconditional, as Patroni: retry a CAS lost to a concurrent write
            try:
                cluster = self.fresh()
                if cluster.config.value == data:
                    return json_response(200, data)
                if self.dcs().set_config(data, cluster.config.version):
                    self.poke()
                    return json_response(200, data)
            except DCSError as e:
                return text_response(502, f"writing the config key failed: {e}")
        return text_response(502, "writing the config key failed: it kept changing")

    def get_history(self, request: "Request") -> "Response":

        view = self.cached()
        if view is None:
            view = self.fresh_view()
        value = view.history.value if isinstance(view.history.value, list) else []
        return json_response(200, value)

    # -- failsafe -----------------------------------------------------------------------

    def _failsafe_on(self) -> bool:
        return self.dynamic().get("failsafe_mode") is True

    def get_failsafe(self, request: "Request") -> "Response":

        if not self._failsafe_on():
            return text_response(502, "failsafe mode is not enabled")
        view = self.cached()
        value = view.failsafe.value if view is not None else None
        return json_response(200, value if isinstance(value, dict) else {})

    def post_failsafe(self, request: "Request") -> "Response":
        """A primary that lost the DCS asks us not to race: accept unless we are a primary
        ourselves. The supervisor keeps us out of the race for ttl after this."""

        body = request.json_object()
        if not self._failsafe_on():
            return text_response(502, "failsafe mode is not enabled")
        name = body.get("name")
        if not isinstance(name, str) or not name:
            return text_response(400, "the body must name the pinging member: {\"name\": ...}")
        pg = self.app.shm.read("postgres").data
        lease = self.app.shm.read("lease").data
        leading = (pg.get("running") and pg.get("role") == "primary") \
            or lease.get("holds_leader") is True
        if leading and name != self.app.config.name:
            # Patroni answers 500; a 5xx here would read as our bug, and any non-200 refuses.
            # Holding the key (even before the promotion) refuses too: two members must never
            # both be vouched for.
            return text_response(409, "Running as a leader")
        with self.channel.lock:
            self.channel.failsafe_ping = {"name": name, "at": self.app.clock(),
                                          "api_url": body.get("api_url"),
                                          "conn_url": body.get("conn_url")}
        self.channel.publish()
        self.poke()
        return text_response(200, "Accepted")

    # -- local operations ---------------------------------------------------------------

    def _local(self, kind: str, args: dict[str, Any], wait: float) -> "Response":

        rid = self.channel.submit(kind, args)
        answer = self.channel.wait(rid, wait)
        if answer is None:
            return text_response(503, f"{kind} requested; no answer from the agent within "
                                      f"{wait:g} s: it may still be in progress")
        code = answer.get("code")
        if not isinstance(code, int) or isinstance(code, bool) or not 200 <= code < 600:
            return text_response(503, f"{kind}: the agent gave an unreadable answer")
        return text_response(code, str(answer.get("text") or ""))

    def post_restart(self, request: "Request") -> "Response":

        body = request.json_object(optional=True)
        if "timeout" in body:
            body["timeout"] = seconds(body["timeout"])
        problem = validate_restart_args(body)
        if problem is not None:
            return text_response(400, problem)
        wait = REQUEST_WAIT if "schedule" in body else float(body.get("timeout") or RESTART_WAIT)
        return self._local("restart", body, wait + 5.0)

    def delete_restart(self, request: "Request") -> "Response":
        return self._local("cancel_restart", {}, REQUEST_WAIT)

    def post_reload(self, request: "Request") -> "Response":
        return self._local("reload", {}, REQUEST_WAIT)

    def post_reinitialize(self, request: "Request") -> "Response":
        body = request.json_object(optional=True)
        force = body.get("force") is True or str(body.get("force")).lower() in ("true", "1", "yes", "on")
        return self._local("reinitialize", {"force": force}, REQUEST_WAIT + 60.0)


def merge_patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Patroni's PATCH semantics: a recursive merge where `null` deletes the key."""
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_patch(out[k], v)
        else:
            out[k] = v
    return out


def config_problem(data: dict[str, Any]) -> str | None:
    """A configuration that every agent would refuse should never reach the DCS."""
    try:
        dynamic_from_dict(data, repair=False)
    except ConfigError as e:
        return f"invalid configuration: {e}"
    return None


def seconds(value: Any) -> Any:
    """'30', '30s', '2min', 30 -> seconds as a number; anything else unchanged (and refused)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    for unit, factor in (("ms", 0.001), ("min", 60.0), ("s", 1.0), ("h", 3600.0), ("d", 86400.0)):
        if text.endswith(unit):
            text, mult = text[: -len(unit)].strip(), factor
            break
    else:
        mult = 1.0
    try:
        return float(text) * mult
    except ValueError:
        return value


def action_routes(app: "ApiApp") -> dict[tuple[str, str], Callable[..., Any]]:
    """(method, path) -> handler for every mutating or DCS-reading endpoint."""
    actions = Actions(app)
    app.actions = actions  # type: ignore[attr-defined]  # the worker publishes through it
    return {
        ("POST", "/switchover"): actions.post_switchover,
        ("DELETE", "/switchover"): actions.delete_switchover,
        ("POST", "/failover"): actions.post_failover,
        ("GET", "/config"): actions.get_config,
        ("PATCH", "/config"): actions.patch_config,
        ("PUT", "/config"): actions.put_config,
        ("GET", "/history"): actions.get_history,
        ("POST", "/restart"): actions.post_restart,
        ("DELETE", "/restart"): actions.delete_restart,
        ("POST", "/reload"): actions.post_reload,
        ("POST", "/reinitialize"): actions.post_reinitialize,
        ("GET", "/failsafe"): actions.get_failsafe,
        ("POST", "/failsafe"): actions.post_failsafe,
    }
