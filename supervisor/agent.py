"""The supervisor: creates the shared state, forks the workers, runs the HA loop.

Each cycle: reap and restart dead workers (by policy), kill hung ones, read every section,
build a Snapshot, `decide()`, publish the Decision as the intent, poke the workers when
the intent changed. The loop wakes on any worker's poke, on a signal, or after one second.
"""
from __future__ import annotations

import importlib
from dataclasses import replace
import os
import logging
import signal
from typing import Any, Callable
from urllib.parse import urlsplit

from pgwarden.core.clock import mono, mono_ns, wall
from pgwarden.core.config import dynamic_from_dict, load_config
from pgwarden.core.config_model import Config, DynamicConfig
from pgwarden.core.errors import ConfigError
from pgwarden.core.shm import SectionView, SharedState, shm_path
from pgwarden.core.timing import safety_margin, watchdog_timeout
from pgwarden.core.wakeup import Wakeups
from pgwarden.dcs.model import ClusterView
from pgwarden.supervisor.decide import decide
from pgwarden.supervisor.rules import next_deadline
from pgwarden.supervisor.observe import build_snapshot, cluster_view
from pgwarden.supervisor.process_tree import ProcessTree, RestartIntensityExceeded
from pgwarden.supervisor.requests import LocalRequests
from pgwarden.supervisor.switchover import failover_key
from pgwarden.supervisor.sdnotify import notify
from pgwarden.supervisor.snapshot import Decision, Memory, OpState
from pgwarden.workers.context import WorkerContext

WORKERS = ("lease", "postgres", "api", "watchdog", "network")
EXIT_INTENSITY = 3  # the node stopped because workers kept dying
log = logging.getLogger("pgwarden.supervisor")


class OpsLedger:
    """One-shot DCS writes asked of the lease worker, and their results by kind."""

    def __init__(self) -> None:
        self.next_id = 1
        self.pending: dict[str, dict[str, Any]] = {}  # kind -> {"id", "op", "args"}
        self.states: dict[str, OpState] = {}

    def request(self, kind: str, args: dict[str, Any]) -> None:
        if kind in self.pending:
            return
        self.pending[kind] = {"id": self.next_id, "op": kind, "args": args}
        self.states[kind] = OpState("pending")
        self.next_id += 1

    def absorb(self, done: dict[str, Any]) -> None:
        for kind, op in list(self.pending.items()):
            res = done.get(str(op["id"]))
            if isinstance(res, dict):
                self.states[kind] = OpState("ok" if res.get("ok") else "failed", res.get("result"))
                del self.pending[kind]

    def clear(self, kind: str) -> None:
        self.states.pop(kind, None)

    def as_list(self) -> list[dict[str, Any]]:
        return sorted(self.pending.values(), key=lambda o: o["id"])


class Agent:
    def __init__(self, cfg: Config, shm_file: str | None = None,
                 intensity: int = 5, period: float = 60.0) -> None:
        self.cfg = cfg
        path = shm_file or shm_path(cfg.scope, cfg.name)
        refuse_if_running(path, cfg)
        self.shm = SharedState.create(path)
        self.wakeups = Wakeups()
        self.tree = ProcessTree(intensity=intensity, period=period)
        self.memory = Memory(since=mono())
        self.ledger = OpsLedger()
        self.requests = LocalRequests()
        self.failsafe_active = False
        self.decision_counts: dict[str, int] = {}
        self.durations: dict[str, dict[str, float]] = {}
        self._promotion: tuple[str, float] | None = None  # (failover|switchover, started mono)
        self.epoch = 0
        self.last_intent: dict[str, Any] | None = None
        self.shutdown = False
        self.shutdown_deadline: float | None = None
        self.reload_requested = False
        self.exit_code = 0
        self.exit_reason = ""
        self.decision: Decision | None = None
        self.next_deadline: float | None = None
        self.dynamic: DynamicConfig = cfg.bootstrap_dcs
        self._last_logged: tuple[str, str, float] = ("", "", 0.0)
        self.started_at = wall()
        self.config_generation = 0
        self._dyn_version = -1
        self._dyn_cache: DynamicConfig | None = None
        self.worker_modules = {n: importlib.import_module(f"pgwarden.workers.{n}_worker")
                               for n in WORKERS}

    # -- lifecycle --------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        self.shm.claim("supervisor")
        self._publish(self._intent_dict(None), None)
        for name in WORKERS:
            # The network worker gets SIGTERM when the supervisor dies, so it drops the VIP
            # on its way out (vip-manager#354: a VIP must never outlive its agent). The others
            # die at once: a dead agent's watchdog must not be fed, nor magically closed.
            death = signal.SIGTERM if name == "network" else signal.SIGKILL
            self.tree.add(name, self._worker_target(name), death)
        self.tree.start_all()
        log.info("started workers: %s", ", ".join(
            f"{n}={s.pid}" for n, s in self.tree.slots.items()))
        notify("READY=1")
        try:
            while True:
                self.wakeups.wait("supervisor", timeout=self._sleep_for())
                self._tend_workers()
                if self.reload_requested:
                    self._reload()
                d = self._cycle()
                notify("WATCHDOG=1")
                if d.exit_code is not None:
                    if self.exit_code == 0:
                        self.exit_code = d.exit_code
                    break
                if self.shutdown_deadline is not None and mono() > self.shutdown_deadline:
                    log.error("clean stop did not finish in time: exiting anyway")
                    self.exit_code = self.exit_code or 1
                    break
        finally:
            notify("STOPPING=1")
            self.tree.stop(list(WORKERS))
            self.shm.close()
            self.wakeups.close()
        if self.exit_reason:
            log.error("stopped: %s", self.exit_reason)
        log.info("pgwarden %s exits with status %d", self.cfg.name, self.exit_code)
        return self.exit_code

    def _sleep_for(self) -> float:
        """At most a second, and no later than the next time-based condition of the table."""
        if self.next_deadline is None:
            return 1.0
        return min(1.0, max(0.005, self.next_deadline - mono() + 0.002))

    def _worker_target(self, name: str) -> Callable[[], int | None]:
        def target() -> int | None:
            ctx = WorkerContext(name, self.cfg, self.shm, self.wakeups,
                                logging.getLogger(f"pgwarden.{name}"))
            return self.worker_modules[name].run(ctx)
        return target

    def _install_signals(self) -> None:
        def on_term(signum: int, _frame: Any) -> None:
            self.request_shutdown(f"received signal {signal.Signals(signum).name}")

        def on_hup(_signum: int, _frame: Any) -> None:
            self.reload_requested = True
            self.wakeups.poke("supervisor")

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGCHLD, lambda *_: self.wakeups.poke("supervisor"))

    def request_shutdown(self, why: str, code: int = 0) -> None:
        if not self.shutdown:
            log.info("shutting down: %s", why)
            self.shutdown = True
            self.shutdown_deadline = mono() + 60.0
        if code and not self.exit_code:
            self.exit_code = code
        self.wakeups.poke("supervisor")

    def _reload(self) -> None:
        self.reload_requested = False
        if not self.cfg.path:
            return
        try:
            new = load_config(self.cfg.path)
        except ConfigError as e:
            log.error("reload refused, keeping the running configuration: %s", e)
            return
        if (new.scope, new.name) != (self.cfg.scope, self.cfg.name):
            log.error("reload refused: scope and name cannot change on a running agent")
            return
        self.cfg = new
        self.config_generation += 1
        self.last_intent = None  # republish: workers re-read the file on the new generation
        log.info("reloaded %s (configuration generation %d)", new.path, self.config_generation)

    # -- workers ----------------------------------------------------------------------

    def _tend_workers(self) -> None:
        for slot in self.tree.reap():
            log.warning("worker %s exited with status %s", slot.name, slot.exit_status)
            if self.shutdown and not self._needed_for_stop(slot.name):
                continue
            try:
                self.tree.restart(slot)
            except RestartIntensityExceeded as e:
                self.exit_reason = str(e)
                log.error("%s: stopping the node safely", e)
                self.tree.intensity = 10**9  # let the safe stop restart what it needs
                self.request_shutdown(str(e), EXIT_INTENSITY)
                if self._needed_for_stop(slot.name):
                    # the safe stop needs this very worker (the postgres worker stops
                    # PostgreSQL, the lease worker releases the key): one more start
                    self.tree.restart(slot)
        hang = max(10.0, float(self.dynamic.ttl))  # from the last cycle: no extra read
        now = mono()
        for name in WORKERS:
            slot = self.tree.slots[name]
            view = self.shm.read(name)
            if slot.pid and now - slot.started_mono > hang and view.age() > hang:
                log.error("worker %s has not beaten for %.0f s: killing it", name, view.age())
                self.tree.kill(name)

    def _needed_for_stop(self, name: str) -> bool:
        return name in ("lease", "postgres", "network", "watchdog")

    # -- the HA cycle -----------------------------------------------------------------

    def _dynamic(self, lease: SectionView | None = None) -> DynamicConfig:
        lease = lease or self.shm.read("lease")
        view = cluster_view(lease, mono(), float(self.cfg.bootstrap_dcs.ttl) * 4)
        if view is not None and isinstance(view.config.value, dict):
            version = view.config.version
            if version != self._dyn_version:
                self._dyn_version = version
                try:
                    self._dyn_cache = dynamic_from_dict(view.config.value, repair=True)
                    for c in self._dyn_cache.corrections:
                        log.warning("DCS config key: %s", c)
                except ConfigError as e:
                    log.warning("ignoring the DCS config key (version %d): %s", version, e)
                    self._dyn_cache = None
            if self._dyn_cache is not None:
                return self._dyn_cache
        return self.cfg.bootstrap_dcs

    def _cycle(self) -> Decision:
        sections = self.shm.read_all()
        self.ledger.absorb(sections["lease"].data.get("ops_done") or {})
        dynamic = self.dynamic = self._dynamic(sections["lease"])
        snap = build_snapshot(self.cfg, dynamic, sections, self.memory, dict(self.ledger.states),
                              mono(), mono_ns(), self.shutdown, wall())
        snap = replace(snap, restart_timeout=self.requests.restart_timeout())
        self._take_requests(sections, snap.cluster, dynamic.pause)
        self.failsafe_active = sections["lease"].data.get("failsafe_active") is True
        d = decide(snap)
        self._count(d, snap.cluster)
        self.next_deadline = next_deadline(replace(snap, memory=d.memory))
        for kind in d.clear_ops:
            self.ledger.clear(kind)
        for kind, args in d.ops:
            self.ledger.request(kind, args)
        self.memory = d.memory
        self.decision = d
        self._log_decision(d)
        self._publish(self._intent_dict(d, snap.cluster), d, dynamic)
        return d

    def _take_requests(self, sections: dict[str, SectionView], cluster: ClusterView | None,
                       paused: bool) -> None:
        """REST API requests for local operations (restart, reload, reinitialize)."""
        pg = sections["postgres"].data
        is_leader = bool(sections["lease"].data.get("holds_leader"))
        has_leader = cluster is not None and cluster.leader is not None
        self.requests.absorb(sections["api"].data.get("requests"), pg, is_leader, has_leader,
                             paused, wall())
        self.requests.tick(pg, is_leader, wall())
        if self.requests.reload_wanted:
            self.requests.reload_wanted = False
            self.reload_requested = True
            self.wakeups.poke("supervisor")

    def _count(self, d: Decision, cluster: ClusterView | None) -> None:
        """Decisions by action, and how long promotions took (for /metrics)."""
        prev = self.decision.action if self.decision else None
        if d.action != prev:
            self.decision_counts[d.action] = self.decision_counts.get(d.action, 0) + 1
        if d.action == "promote" and prev != "promote":
            key = failover_key(cluster)
            kind = "switchover" if key is not None and key.candidate == self.cfg.name else "failover"
            start = self.memory.leader_gone_at if self.memory.leader_gone_at is not None else mono()
            self._promotion = (kind, start)
        elif d.action == "lead" and self._promotion is not None:
            kind, start = self._promotion
            self._promotion = None
            took = max(0.0, mono() - start)
            agg = self.durations.setdefault(kind, {"count": 0, "sum": 0.0, "last": 0.0})
            agg["count"] += 1
            agg["sum"] += took
            agg["last"] = took
            log.info("%s completed: primary %.3f s after the old leader's key went away",
                     kind, took)

    def _log_decision(self, d: Decision) -> None:
        action, reason, at = self._last_logged
        now = mono()
        if d.action != action or (d.reason != reason and now - at > 10):
            log.info("%s", d.reason)
            self._last_logged = (d.action, d.reason, now)

    def _intent_dict(self, d: Decision | None, cluster: ClusterView | None = None) -> dict[str, Any]:
        if d is None:
            return {"pg": {"role": "none", "leader": None, "leader_conn": None, "bootstrap": None,
                           "stop_mode": "fast", "recover": False},
                    "lock": {"want": False, "acquire_token": 0}, "dcs_ops": [], "vip": False,
                    "watchdog": "disarmed"}
        return {
            "pg": {"role": d.pg_role, "leader": d.leader,
                   "leader_conn": _leader_conn(cluster, d.leader),
                   "bootstrap": d.bootstrap, "stop_mode": d.stop_mode, "recover": d.recover,
                   "checkpoint_token": d.checkpoint_token, **self.requests.intent()},
            "lock": {"want": d.lock_want, "acquire_token": d.memory.acquire_token,
                     "release_lsn": d.release_lsn},
            "dcs_ops": self.ledger.as_list(),
            "vip": d.vip,
            "vip_hold_until": d.vip_hold_until,
            "watchdog": d.watchdog,
        }

    def _publish(self, intent: dict[str, Any], d: Decision | None,
                 dynamic: DynamicConfig | None = None) -> None:
        changed = intent != self.last_intent
        if changed:
            self.epoch += 1
            self.last_intent = intent
        dyn = dynamic or self.cfg.bootstrap_dcs
        self.shm.publish("supervisor", {
            "state": self.memory.state,
            "decision": {"action": d.action, "reason": d.reason, "at": wall()} if d else None,
            "intent": dict(intent, epoch=self.epoch),
            "dynamic": {k: v for k, v in vars(dyn).items() if k != "raw"} | {"raw": dyn.raw},
            "workers": self.tree.status(),
            "paused": dyn.pause,
            "safety_margin": safety_margin(self.cfg, dyn),
            "watchdog_timeout": watchdog_timeout(self.cfg, dyn),
            "config_generation": self.config_generation,
            "shutdown": self.shutdown,
            "started_at": self.started_at,
            "last_cycle": mono(),
            "failsafe_active": self.failsafe_active,
            "decision_counts": dict(self.decision_counts),
            "durations": {k: dict(v) for k, v in self.durations.items()},
            **self.requests.published(),
        })
        if changed:
            self.wakeups.poke_all(except_="supervisor")


class AlreadyRunning(Exception):
    """Another agent of the same scope and name runs on this host."""


def refuse_if_running(path: str, cfg: Config) -> None:
    """Two agents for one member would fight over PostgreSQL and the leader key: refuse to
    start while the supervisor recorded in an existing block is alive."""
    if not os.path.exists(path):
        return
    try:
        old = SharedState.attach(path)
    except OSError:
        return
    try:
        pid = old.read("supervisor").pid
    finally:
        old.close(unlink=False)
    if pid and pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            pass
        raise AlreadyRunning(f"another pgwarden agent (pid {pid}) already runs for member "
                             f"{cfg.name} of scope {cfg.scope}: stop it first")


def _leader_conn(cluster: ClusterView | None, leader: str | None) -> dict[str, Any] | None:
    if cluster is None or leader is None or leader not in cluster.members:
        return None
    url = cluster.members[leader].conn_url
    if not url:
        return None
    try:
        parts = urlsplit(url)
        return {"host": parts.hostname, "port": parts.port or 5432}
    except ValueError:
        return None
