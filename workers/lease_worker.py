"""The lease worker: the agent's only DCS session.

It keeps one lease alive on its own schedule (independent of the HA loop), holds or
releases the leader key as the intent says, runs the one-shot writes the supervisor asks
for, keeps members/<name> current, and publishes the cluster view kept by the watch.

Safety: `renewed_at` is the time a successful renewal was SENT, so `lease_deadline =
renewed_at + ttl` is never later than etcd's own expiry. The leader key is only ever
created on an explicit acquire token (rule 4: promotion follows a decision to race), and
`holds_leader` turns false the moment the watch shows another owner.
"""
from __future__ import annotations

import signal
import threading
import time
from collections import OrderedDict
from typing import Any

from pgwarden.core.clock import mono, wall
from pgwarden.core.errors import DCSError
from pgwarden.core.timing import renew_interval
from pgwarden.dcs.base import DCS
from pgwarden.dcs.model import ClusterView, cluster_prefix
from pgwarden.postgres.timeline_history import history_key_value
from pgwarden.workers import failsafe
from pgwarden.workers.context import WorkerContext
from pgwarden.workers.member_data import member_data


def make_dcs(ctx: WorkerContext, ttl: int, timeout: float) -> DCS:
    from pgwarden.dcs.etcd3 import Etcd3DCS  # imports grpc: only in the lease worker

    cfg = ctx.config
    return Etcd3DCS([(h.host, h.port) for h in cfg.etcd3_hosts],
                    cluster_prefix(cfg.namespace, cfg.scope), ttl, timeout)


class LeaseWorker:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.name = ctx.config.name
        self.stop = False
        dyn = self._dynamic()
        self.ttl = int(dyn.get("ttl", ctx.config.bootstrap_dcs.ttl))
        self.dcs = make_dcs(ctx, self.ttl, self._call_timeout(dyn))
        self.renewed_at = 0.0
        self.lease_ok = False
        self.holds = False
        self.leader_checked_at = 0.0
        self.token_done = 0
        self.acquire_result = False
        self.connected = False
        self.last_error: str | None = None
        self.view: ClusterView | None = None
        self.view_at = 0.0
        self.dcs_last_seen: float | None = None
        self.ops_done: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.last_member: dict[str, Any] | None = None
        self.member_lease = 0
        self.last_status: dict[str, Any] | None = None
        self.last_history: list[Any] | None = None
        self.status_at = 0.0
        self.last_published: dict[str, Any] | None = None
        self.watching = False
        # failsafe mode (workers/failsafe.py): rounds of pings run in a thread of their own
        self.failsafe_deadline = 0.0
        self.failsafe_active = False
        self.failsafe_note: str | None = None
        self.failsafe_round_at = 0.0
        self.failsafe_thread: threading.Thread | None = None
        self.last_failsafe_key: dict[str, str] | None = None
        self.publish_lock = threading.Lock()
        self.failsafe_lock = threading.Lock()

    def _dynamic(self) -> dict[str, Any]:
        return self.ctx.shm.read("supervisor").data.get("dynamic") or {}

    def _call_timeout(self, dyn: dict[str, Any]) -> float:
        ttl = float(dyn.get("ttl", self.ctx.config.bootstrap_dcs.ttl))
        retry = float(dyn.get("retry_timeout", self.ctx.config.bootstrap_dcs.retry_timeout))
        return max(0.5, min(retry, ttl / 4))

    def _renew_interval(self) -> float:
        dyn = self._dynamic()
        loop_wait = float(dyn.get("loop_wait", self.ctx.config.bootstrap_dcs.loop_wait))
        return renew_interval(self.ttl, loop_wait)

    # -- the loop ---------------------------------------------------------------------

    def resume(self) -> None:
        """Take over from a previous lease worker of this agent (it crashed or was killed):
        same lease, same leader key, same one-shot operations done. Without this a worker
        restart would look like a lost lock and demote a healthy primary."""
        prev = self.ctx.shm.read("lease")
        d = prev.data
        if prev.torn or not d.get("lease_id"):
            return
        self.dcs.adopt_lease(int(d["lease_id"]))
        self.lease_ok = True
        self.ttl = int(d.get("ttl") or self.ttl)
        self.renewed_at = float(d.get("renewed_at") or 0.0)
        self.holds = bool(d.get("holds_leader"))
        self.leader_checked_at = float(d.get("leader_checked_at") or 0.0)
        self.token_done = int(d.get("acquire_token_done") or 0)
        self.acquire_result = bool(d.get("acquire_result"))
        self.connected = bool(d.get("connected"))
        self.ops_done.update(d.get("ops_done") or {})
        self.ctx.log.info("resuming lease %x (leader key %s)", self.dcs.lease_id,
                          "held" if self.holds else "not held")

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        self.resume()
        threading.Thread(target=self._failsafe_watch, name="failsafe-watch", daemon=True).start()
        self.ctx.shm.claim("lease")
        self.publish(force=True)
        next_renew = 0.0
        while not self.stop:
            now = mono()
            self.ctx.refresh_config()
            try:
                if not self.watching:
                    self.dcs.start_watch(lambda _v: self.ctx.wakeups.poke("lease"))
                    self.watching = True
                if now >= next_renew or not self.lease_ok:
                    self.renew()
                    next_renew = mono() + self._renew_interval()
                self.refresh_view()
                self.handle_lock()
                self.run_ops()
                self.touch_member()
                self.write_status()
                self.write_history()
                self.write_failsafe()
                self.connected = True
                self.last_error = None
                # only a renewal proves the DCS is back: a pass served from the watch's cache
                # must not end failsafe while etcd is still out
                if self.failsafe_active and mono() - self.renewed_at < self._renew_interval():
                    self.ctx.log.info("the DCS is back: failsafe mode no longer needed")
                    self.failsafe_active, self.failsafe_deadline = False, 0.0
            except DCSError as e:
                if self.connected or self.last_error != str(e):
                    self.ctx.log.warning("DCS call failed: %s", e)
                self.connected = False
                self.last_error = str(e)
                next_renew = min(next_renew, mono() + 0.5)
                self.maybe_failsafe_round()
            self.publish()
            wait = max(0.05, min(next_renew - mono(), 1.0))
            self.ctx.wakeups.wait("lease", wait)
        self.shutdown()
        return 0

    def _on_term(self, *_: Any) -> None:
        self.stop = True
        self.ctx.wakeups.poke("lease")

    def shutdown(self) -> None:
        try:
            if self.holds and not self.ctx.intent().get("lock", {}).get("want"):
                self.dcs.release_leader(self.name)
        except DCSError:
            pass
        self.dcs.close()

    # -- steps ------------------------------------------------------------------------

    def renew(self) -> None:
        dyn = self._dynamic()
        ttl = int(dyn.get("ttl", self.ttl))
        if ttl != self.ttl or not self.lease_ok:
            self.ttl = ttl
            self.dcs.set_ttl(ttl)
            sent = mono()
            self.dcs.grant_lease()
            self.lease_ok, self.renewed_at = True, sent
            self.last_member = None  # re-attach the member key to the new lease
            return
        sent = mono()
        if self.dcs.refresh_lease():
            self.renewed_at = sent
        else:
            self.ctx.log.warning("my DCS lease expired: granting a new one")
            kept_by_failsafe = self.holds and self.failsafe_deadline > mono()
            self.lease_ok = False
            self.holds = False
            sent = mono()
            self.dcs.grant_lease()
            self.lease_ok, self.renewed_at = True, sent
            self.last_member = None
            if kept_by_failsafe:
                # every member promised not to race: take the key back on the new lease
                # (ensure_leader re-creates it if absent, and says False if anyone has it)
                self.holds = self.dcs.ensure_leader(self.name)
                self.leader_checked_at = sent
                self.ctx.log.info("leader key %s after the failsafe period",
                                  "re-created" if self.holds else "lost")
        if self.holds:
            self.holds = self.dcs.ensure_leader(self.name)
            self.leader_checked_at = sent
            if not self.holds:
                self.ctx.log.warning("the leader key is no longer mine")

    def refresh_view(self) -> None:
        view = self.dcs.cached_cluster()
        if view is None:
            view = self.dcs.read_cluster()
        if self.view is None or view.revision != self.view.revision:
            for p in view.problems:
                self.ctx.log.warning("DCS: %s", p)
        self.view, self.view_at, self.dcs_last_seen = view, mono(), wall()
        if self.holds and view.leader not in (None, self.name):
            self.ctx.log.warning("%s holds the leader key now", view.leader)
            self.holds = False

    def handle_lock(self) -> None:
        lock = self.ctx.intent().get("lock") or {}
        want, token = bool(lock.get("want")), int(lock.get("acquire_token") or 0)
        if want and token > self.token_done and not self.holds:
            sent = mono()
            if self.view is not None and self.view.leader == self.name:
                # our own key from before a restart (same member, a new lease): ensure_leader
                # re-attaches it, and says False if the key changed hands meanwhile
                self.acquire_result = self.dcs.ensure_leader(self.name)
            else:
                self.acquire_result = self.dcs.acquire_leader(self.name)
            self.token_done = token
            self.holds = self.acquire_result
            self.leader_checked_at = sent
            self.ctx.log.info("leader key %s", "acquired" if self.holds else "taken by another member")
            if self.holds:
                self.view = self.dcs.read_cluster()
                self.view_at = mono()
        elif self.holds and not want:
            lsn = lock.get("release_lsn")
            if isinstance(lsn, int) and not isinstance(lsn, bool):
                # a planned switchover: the candidate promotes only once it has received
                # everything up to our final LSN, so it must be readable before the key goes
                self.dcs.set_status(self._status_value(lsn))
                self.ctx.log.info("final LSN %d written to status", lsn)
            self.dcs.release_leader(self.name)
            self.holds = False
            self.ctx.log.info("leader key released")
            self.view = self.dcs.read_cluster()
            self.view_at = mono()

    def run_ops(self) -> None:
        for op in self.ctx.intent().get("dcs_ops") or []:
            key = str(op.get("id"))
            if key in self.ops_done:
                continue
            try:
                result = self.execute(op.get("op", ""), op.get("args") or {})
                self.ops_done[key] = {"ok": True, "result": result, "error": None}
            except DCSError:
                raise
            except Exception as e:  # noqa: BLE001 - a bad op must not kill the session
                self.ops_done[key] = {"ok": False, "result": None, "error": str(e)}
            while len(self.ops_done) > 50:
                self.ops_done.popitem(last=False)

    def execute(self, kind: str, args: dict[str, Any]) -> Any:
        if kind == "initialize_race":
            return self.dcs.initialize(str(args.get("sysid", "")), create=True)
        if kind == "initialize_sysid":
            view = self.dcs.read_cluster()
            if view.initialize == args["sysid"]:
                return True
            if view.initialize is None:
                return self.dcs.initialize(args["sysid"], create=True)
            return self.dcs.initialize(args["sysid"], create=False, version=view.initialize_version)
        if kind == "write_config":
            return self.dcs.set_config(self.ctx.config.bootstrap_dcs.raw, 0)
        if kind == "clear_failover":
            view = self.dcs.read_cluster()
            if view.failover.version != args.get("version"):
                return False  # changed since the decision: it is someone's new request
            self.ctx.log.info("removing the failover key: %s", args.get("why"))
            return self.dcs.delete_failover(int(args["version"]))
        if kind == "cancel_initialize":
            view = self.dcs.read_cluster()
            if view.initialize == "":
                return self.dcs.delete_initialize(view.initialize_version)
            return False
        raise ValueError(f"unknown DCS operation {kind!r}")

    def touch_member(self) -> None:
        pg = self.ctx.shm.read("postgres").data
        sup = self.ctx.supervisor()
        paused = bool((sup.get("dynamic") or {}).get("pause"))
        data = member_data(self.ctx.config, pg, paused, sup.get("scheduled_restart"))
        if data != self.last_member or self.member_lease != self.dcs.lease_id:
            self.dcs.touch_member(self.name, data)
            self.last_member, self.member_lease = data, self.dcs.lease_id

    def write_status(self) -> None:
        """The leader keeps `status.optime` current (patronictl's lag columns use it)."""
        if not self.holds:
            return
        pg = self.ctx.shm.read("postgres").data
        if pg.get("role") != "primary" or pg.get("wal_position") is None:
            return
        status = self._status_value(pg["wal_position"])
        if status != self.last_status and mono() - self.status_at >= 1.0:
            self.dcs.set_status(status)
            self.last_status, self.status_at = status, mono()

    def _status_value(self, optime: int) -> dict[str, Any]:
        return {"optime": optime, "slots": {}, "retain_slots": sorted(
            n for n in (self.view.members if self.view else {}))}

    def write_history(self) -> None:
        """After a promotion the new leader records it in `history` (patronictl history,
        GET /history), from its timeline's .history file."""
        if not self.holds or self.view is None:
            return
        pg = self.ctx.shm.read("postgres").data
        th = pg.get("timeline_history")
        if pg.get("role") != "primary" or not isinstance(th, dict):
            return
        previous = self.view.history.value if isinstance(self.view.history.value, list) else []
        keep = self._dynamic().get("raw", {}).get("max_timelines_history")
        value = history_key_value(previous, th, self.name,
                                  keep if isinstance(keep, int) and keep > 0 else None)
        if value != previous and value != self.last_history:
            self.dcs.set_history(value)
            self.last_history = value

    # -- failsafe mode ----------------------------------------------------------------

    def _failsafe_mode(self) -> bool:
        return bool(self._dynamic().get("failsafe_mode"))

    def write_failsafe(self) -> None:
        """The leader keeps `failsafe` = {name: api_url} of the members, as Patroni does."""
        if not self.holds or self.view is None:
            return
        want = failsafe.topology(self.view) if self._failsafe_mode() else {}
        have = failsafe.listed(self.view)
        if want != have and want != self.last_failsafe_key:
            self.dcs.set_failsafe(want)
            self.last_failsafe_key = want

    def _failsafe_watch(self) -> None:
        """Start failsafe rounds as soon as a renewal is overdue, not only once a DCS call
        has failed: the main loop may sit in a call for its whole timeout, and a hang that
        begins just before a renewal would otherwise be noticed after the demotion point."""
        while not self.stop:
            overdue = self.renewed_at and mono() - self.renewed_at > self._renew_interval() + 0.3
            if not self.connected or overdue:
                try:
                    self.maybe_failsafe_round()
                except Exception as e:  # noqa: BLE001 - the watcher must outlive a bad round
                    self.ctx.log.warning("failsafe round could not start: %s", e)
            time.sleep(0.2)

    def maybe_failsafe_round(self) -> None:
        """DCS unreachable while holding the key: ask every listed member to confirm."""
        pg = self.ctx.shm.read("postgres").data
        if not (self.holds and self._failsafe_mode() and pg.get("role") == "primary"
                and pg.get("running")):
            return
        peers = failsafe.listed(self.view)
        if self.name not in peers:
            self.failsafe_note = "not listed in the failsafe key: failsafe does not apply"
            return
        with self.failsafe_lock:  # the main loop and the watcher both start rounds
            if self.failsafe_thread is not None and self.failsafe_thread.is_alive():
                return
            if mono() - self.failsafe_round_at < min(1.0, self._renew_interval()):
                return
            self.failsafe_round_at = sent = mono()  # also spaces rounds: no second one now
        me = self.view.members.get(self.name) if self.view else None
        body = {"name": self.name, "conn_url": me.conn_url if me else None,
                "api_url": peers[self.name], "slots": {}}
        others = {n: u for n, u in peers.items() if n != self.name}
        timeout = float(self._dynamic().get("failsafe_timeout") or 2)

        def round_() -> None:
            ok, results = failsafe.ping_all(self.ctx.config, others, body, timeout)
            if ok:
                self.failsafe_deadline = max(self.failsafe_deadline, sent + self.ttl)
                if not self.failsafe_active:
                    self.ctx.log.warning(
                        "DCS is not accessible: continuing as the leader because failsafe "
                        "mode is enabled and all %d other members accepted", len(others))
                self.failsafe_active = True
                # now, not after the main loop's next DCS call (which blocks while the DCS
                # is out): the supervisor must see the extended deadline before its margin
                self.publish()
            else:
                bad = ", ".join(f"{n}: {r}" for n, r in sorted(results.items()) if r != "accepted")
                if self.failsafe_active or self.failsafe_note != bad:
                    self.ctx.log.warning("failsafe round failed (%s): the lease deadline "
                                         "stands", bad)
                self.failsafe_active, self.failsafe_note = False, bad
            self.ctx.wakeups.poke("lease")

        thread = threading.Thread(target=round_, name="failsafe", daemon=True)
        with self.failsafe_lock:
            self.failsafe_thread = thread
        thread.start()

    def publish(self, force: bool = False) -> None:
        with self.publish_lock:  # the failsafe thread publishes too: one writer at a time
            self._publish(force)

    def _publish(self, force: bool) -> None:
        data = {
            "connected": self.connected,
            "last_error": self.last_error,
            "lease_id": self.dcs.lease_id,
            "ttl": self.ttl,
            "renewed_at": self.renewed_at,
            "lease_deadline": self.renewed_at + self.ttl if self.renewed_at else 0.0,
            "holds_leader": self.holds,
            "leader_checked_at": self.leader_checked_at,
            "acquire_token_done": self.token_done,
            "acquire_result": self.acquire_result,
            "cluster": self.view.to_dict() if self.view else None,
            "cluster_at": self.view_at if self.view else None,
            "dcs_last_seen": self.dcs_last_seen,
            "ops_done": dict(self.ops_done),
            "failsafe_deadline": self.failsafe_deadline if self.failsafe_active else 0.0,
            "failsafe_active": self.failsafe_active,
        }
        # cluster_at moves every loop; compare without it so unchanged views don't wake anyone
        key = {k: v for k, v in data.items() if k != "cluster_at"}
        if force or key != self.last_published:
            self.last_published = key
            self.ctx.publish(data)
        else:
            self.ctx.shm.publish("lease", data)  # keep cluster_at fresh without a poke


def run(ctx: WorkerContext) -> int:
    return LeaseWorker(ctx).run()
