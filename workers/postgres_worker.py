"""The postgres worker: owns the postmaster and converges it on the supervisor's intent.

Sensors: the postmaster's exit (a pidfd, so a crash is known at once), and a bounded status
sample every second. Actuators: initdb, pg_basebackup, start, stop, promote, demote, follow a
new leader (primary_conninfo is reloadable in PostgreSQL >= 13), replication slots.

Long operations run in one background thread at a time ("operation" in the section) while
the loop keeps beating, so the supervisor never mistakes a long basebackup for a hang. While
an operation runs the loop does not touch the Postmaster object (single owner).

Last line of defence (ARCHITECTURE.md rule 4): the worker promotes only while the lease
section says this agent holds the leader key, whatever the intent says.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Any, Callable

from pgwarden.core.clock import mono
from pgwarden.core.errors import PostgresError
from pgwarden.postgres import conffiles
from pgwarden.postgres.basebackup import basebackup
from pgwarden.postgres.callbacks import CallbackRunner
from pgwarden.postgres.datadir import clear_data_dir, controldata, data_dir_state, read_sysid
from pgwarden.postgres.lsn import parse_lsn_or_none
from pgwarden.postgres.initdb import create_roles, initdb
from pgwarden.postgres.process import Postmaster, kill_orphans
from pgwarden.postgres.promote import promote
from pgwarden.postgres.rewind import PRIMARY_STATES, SourceNotReady, cluster_state, rewind
from pgwarden.postgres.query import ConnParams, Session
from pgwarden.postgres.slots import slot_name, sync_slots
from pgwarden.postgres.timeline_history import read_history
from pgwarden.postgres.status import sample
from pgwarden.workers.context import WorkerContext

SAMPLE_EVERY = 1.0
SERVING_OPS = ("promote", "checkpoint")  # operations during which the server keeps serving
# Patroni's state strings after a failed operation (initdb/basebackup clean up after
# themselves, so the data dir is empty again and the member can retry).
FAILED_STATE = {"initdb": "initdb failed", "basebackup": "stopped", "start": "start failed",
                "demote": "stopped", "stop": "stop failed", "rejoin": "start failed",
                "restart": "restart failed", "reinitialize": "stopped"}
START_TIMEOUT = 60.0


class StillStarting(PostgresError):
    """The postmaster runs but did not accept connections in time (recovery may go on)."""


class PostgresWorker:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config.postgresql
        self.log = ctx.log
        self.pm = Postmaster(self.cfg.bin_dir, self.cfg.data_dir)
        self.socket_dir = conffiles.default_socket_dir(self.cfg.data_dir)
        self.conn = ConnParams(host=self.socket_dir, port=self.cfg.listen.port,
                               user=self.cfg.superuser.username,
                               password=self.cfg.superuser.password,
                               application_name="pgwarden")
        self.session = Session(self.conn, timeout=2.0)
        self.stop = False
        self.state = "stopped"
        self.status: dict[str, Any] = {}
        self.last_error: str | None = None
        self.following: str | None = None
        self.sysid: str | None = None
        self.op: threading.Thread | None = None
        self.op_name: str | None = None
        self.op_started = 0.0
        self.op_error: str | None = None
        self.op_still_starting = False  # the operation ended waiting for a slow start
        self.op_finished = threading.Event()
        self.expect_exit = False  # we asked the postmaster to stop
        self.crashed_as_primary = False  # restart only when the supervisor says `recover`
        self.need_checkpoint = False
        self._history_cache: tuple[int | None, dict[str, Any] | None] = (None, None)
        self.control_state: str | None = None  # pg_control's cluster state, while stopped
        self.sampled_at = 0.0
        self.epoch_done = 0
        self.slots_checked_at = 0.0
        self.last_pub: dict[str, Any] | None = None
        self.last_lsn: int | None = None  # shutdown checkpoint LSN after a clean stop
        self.last_lsn_primary = False  # ... and that stop was a primary's ("shut down")
        self.callbacks = CallbackRunner(ctx.config, self.log)
        self.role_changed = False  # demoted in this process's lifetime (on_role_change)
        self.promote_refused_at: float | None = None  # mono of the last failed pre_promote
        # tokens of the operator's operations (intent pg.restart / pg.reinit / checkpoint),
        # carried over from a previous incarnation of this worker so none runs twice
        prev = ctx.shm.read("postgres").data
        self.checkpoint_done = int(prev.get("checkpoint_done") or 0)
        self.restart_done: dict[str, Any] = prev.get("restart_done") or {"token": 0}
        self.reinit_done: dict[str, Any] = prev.get("reinit_done") or {"token": 0}
        if not prev:
            intent = self.ctx.intent().get("pg") or {}
            # a fresh agent: tokens the supervisor already holds are not ours to replay
            self.restart_done = {"token": int((intent.get("restart") or {}).get("token") or 0)}
            self.reinit_done = {"token": int((intent.get("reinit") or {}).get("token") or 0)}

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        self.ctx.shm.claim("postgres")
        if self.pm.adopt():
            self.log.info("adopted the running postmaster (pid %s)", self.pm.pid)
            self.state = "running"
        self.publish()
        while not self.stop:
            if self.op is not None:
                self._check_op()
            else:
                if self.ctx.refresh_config():
                    self.cfg = self.ctx.config.postgresql
                    self.callbacks.configure(self.ctx.config)
                self._check_postmaster()
                intent = self.ctx.intent()
                epoch = int(intent.get("epoch") or 0)
                if epoch != self.epoch_done:
                    # a new intent (e.g. the leader vanished): peers compare WAL positions
                    # right now, so report a fresh one at once rather than within a second
                    self.sampled_at = 0.0
                try:
                    if not self.operator_ops(intent.get("pg") or {}):
                        self.converge(intent)
                except PostgresError as e:
                    self._error(str(e))
                else:
                    self.epoch_done = epoch
            if self.op is None and mono() - self.sampled_at >= SAMPLE_EVERY:
                # beat first: a frozen server costs the sample its whole timeout, and the
                # heartbeat must not age by the sample plus the wait (watchdog, VIP, hang check)
                self.ctx.shm.beat("postgres")
                self.take_sample()
            self.publish()
            self._wait(0.2 if self.op is not None else SAMPLE_EVERY)
        # Leave PostgreSQL running: the supervisor stops it through the intent on a clean
        # shutdown; a restarted worker adopts it (KillMode=process semantics).
        if self.op is not None:
            self.op.join(timeout=5)
        self.callbacks.close()
        self.session.close()
        return 0

    def _on_term(self, *_: Any) -> None:
        self.stop = True
        self.ctx.wakeups.poke("postgres")

    def _wait(self, timeout: float) -> None:
        import select

        fds = [self.ctx.wakeups.fileno("postgres")]
        exit_fd = self.pm.exit_fd() if self.op is None else None
        if exit_fd is not None:
            fds.append(exit_fd)
        try:
            ready, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        if fds[0] in ready:
            self.ctx.wakeups.drain("postgres")

    def _error(self, message: str) -> None:
        if message != self.last_error:
            self.log.error("%s", message)
        self.last_error = message

    # -- sensing ----------------------------------------------------------------------

    def _check_postmaster(self) -> None:
        if self.pm.pid is None:
            return
        code = self.pm.poll()
        if code is None:
            return
        self.control_state = None
        if self.expect_exit:
            self.state = "stopped"
        else:
            self.state = "crashed"
            self.crashed_as_primary = self.status.get("role") == "primary"
            self.log.error("PostgreSQL exited unexpectedly (code %s): %s", code,
                           self.pm.last_log_line())
            # its backends outlive it until they next run: a frozen one could still finish
            # a commit later. Fence them now (the next start would also wait for them).
            killed = kill_orphans(self.cfg.data_dir)
            if killed:
                self.log.warning("killed %d process(es) the dead postmaster left behind", killed)
        self.expect_exit = False
        self.pm.close()
        self.pm = Postmaster(self.cfg.bin_dir, self.cfg.data_dir)
        self.status = {}
        self.session.close()

    def running(self) -> bool:
        return self.pm.pid is not None and self.pm.is_running()

    def take_sample(self) -> None:
        self.sampled_at = mono()
        if not self.running():
            self.status = {}
            return
        try:
            self.status = sample(self.session, timeout=2.0)
            self.sysid = self.status.get("sysid") or self.sysid
            if self.state in ("starting", "crashed", "stopped", "unknown"):
                self.state = "running"
            if self.last_error and self.last_error.startswith("status sample"):
                self.last_error = None
        except PostgresError as e:
            # A server that cannot answer (starting, frozen, overloaded): keep what we know
            # of the process, drop what we knew of its role.
            self.status = {}
            if self.state == "running":
                self.state = "starting" if not self.pm.adopted else "unknown"
            self.last_error = f"status sample: {e}"

    # -- converging -------------------------------------------------------------------

    def operator_ops(self, pg: dict[str, Any]) -> bool:
        """Restart, reinitialize and the pre-switchover CHECKPOINT: operations the operator
        (or a switchover) asked for by token. True if one was started."""
        role = pg.get("role") or "none"
        if role == "stopped" or (role == "replica" and self.status.get("role") == "primary"):
            return False  # a stop or a demotion comes first; the tokens wait
        reinit = pg.get("reinit") or {}
        if int(reinit.get("token") or 0) > int(self.reinit_done.get("token") or 0):
            self.begin("reinitialize", lambda: self._reinitialize(int(reinit["token"])),
                       state="stopping")
            return True
        restart = pg.get("restart") or {}
        if int(restart.get("token") or 0) > int(self.restart_done.get("token") or 0):
            timeout = restart.get("timeout")
            self.begin("restart", lambda: self._restart(
                int(restart["token"]), float(timeout) if isinstance(timeout, (int, float)) else None),
                       state="restarting")
            return True
        token = int(pg.get("checkpoint_token") or 0)
        if token > self.checkpoint_done and self.running() and self.status.get("role") == "primary":
            self.begin("checkpoint", lambda: self._checkpoint(token))
            return True
        return False

    def converge(self, intent: dict[str, Any]) -> None:
        pg = intent.get("pg") or {}
        role = pg.get("role") or "none"
        if role == "none":
            return
        dds = data_dir_state(self.cfg.data_dir)
        if role == "stopped":
            if self.running():
                was = self.status.get("role") or "unknown"

                def stop() -> None:
                    self._stop(pg.get("stop_mode") or "fast")
                    self.callbacks.fire("on_stop", was)
                    # a primary stopped for a switchover comes back as a replica: that
                    # start is a role change (Patroni's on_role_change replica)
                    self.role_changed = self.role_changed or was == "primary"
                self.begin("stop", stop)
            return
        if dds == "empty":
            if self.running():
                return  # a postmaster with an emptied data dir: leave it to the operator
            if pg.get("bootstrap") == "initdb" and role == "primary":
                self.begin("initdb", self._bootstrap_new, state="initializing new cluster")
            elif pg.get("bootstrap") == "basebackup" and pg.get("leader_conn"):
                self.begin("basebackup", lambda: self._clone(pg), state="creating replica")
            return
        if dds != "initialized":
            self._error(f"data directory {self.cfg.data_dir} is not a valid PostgreSQL data "
                        "directory: move it away to let pgwarden rebuild this member")
            return
        if self.sysid is None:
            self.sysid = read_sysid(self.cfg.bin_dir, self.cfg.data_dir)
        if role == "primary":
            self._converge_primary(pg)
        elif role == "replica":
            self._converge_replica(pg)

    def _converge_primary(self, pg: dict[str, Any]) -> None:
        if not self.running():
            if self.crashed_as_primary and not pg.get("recover"):
                return  # a crashed primary restarts in place only on the supervisor's word
            if not self._lease_confirms_lock():
                # rule 4, as for a promotion: a primary starts only under a confirmed key
                self._error("not starting as the primary: the lease worker does not confirm "
                            "the leader key")
                return
            self._configure(standby=False, upstream=None)
            self.begin("start", lambda: self._start_then("primary"), state="starting")
            return
        if self.status.get("role") == "replica":
            if not self._lease_confirms_lock():
                self._error("not promoting: the lease worker does not confirm the leader key")
                return
            # standby.signal stays: the promotion removes it itself (and dies if it is
            # already gone); postgresql.conf is rewritten for a primary right after
            self.begin("promote", self._promote, state="running")
            return
        if self.status.get("role") == "primary":
            if self.need_checkpoint:
                self._sync_slots()
                self.begin("checkpoint", self._checkpoint)
                return
            change = self._configure(standby=False, upstream=None)
            if change.restart and change.params != ("standby.signal",):
                self.log.info("settings needing a restart changed: %s", ", ".join(change.params))
            self._sync_slots()

    def _converge_replica(self, pg: dict[str, Any]) -> None:
        leader = pg.get("leader")
        conn = pg.get("leader_conn")
        upstream = self._upstream(conn) if leader and conn else None
        if self.running() and self.status.get("role") == "primary":
            mode = pg.get("stop_mode") or "fast"
            self.begin("demote", lambda: self._demote(mode), state="stopping")
            return
        if not self.running():
            if self._last_role_primary():
                # a former primary may hold WAL the new leader never saw: rejoin through
                # pg_rewind, which needs the leader; without one, stay down (not writable)
                if upstream is None:
                    self.state = "stopped"
                    return
                self.begin("rejoin", lambda: self._rejoin(upstream, leader), state="starting")
                return
            self._configure(standby=True, upstream=upstream)
            self.following = leader if upstream else None
            self.begin("start", lambda: self._start_then("replica"), state="starting")
            return
        if self.status.get("role") == "replica":
            change = self._configure(standby=True, upstream=upstream)
            if change.changed:
                self.following = leader if upstream else None
                self.log.info("now following %s", leader or "nobody")

    def _last_role_primary(self) -> bool:
        if os.path.exists(os.path.join(self.cfg.data_dir, "backup_label")):
            return False  # a fresh base backup: pg_control shows its source, a primary
        if self.control_state is None:
            self.control_state = cluster_state(self.cfg.bin_dir, self.cfg.data_dir)
        return self.control_state in PRIMARY_STATES

    def _lease_confirms_lock(self) -> bool:
        lease = self.ctx.shm.read("lease").data
        deadline = float(lease.get("lease_deadline") or 0.0)
        return bool(lease.get("holds_leader")) and mono() < deadline

    def _upstream(self, conn: dict[str, Any]) -> conffiles.Upstream:
        rep = self.cfg.replication
        return conffiles.Upstream(host=str(conn["host"]), port=int(conn["port"]),
                                  user=rep.username, application_name=self.ctx.config.name,
                                  password=rep.password)

    def _settings(self, upstream: conffiles.Upstream | None) -> dict[str, str]:
        dyn = self.ctx.shm.read("supervisor").data.get("dynamic") or {}
        params = dict(dyn.get("postgresql_parameters") or {})
        params.update(self.cfg.parameters)
        use_slots = dyn.get("use_slots", True)
        slot = slot_name(self.ctx.config.name) if upstream is not None and use_slots else None
        return conffiles.settings_from_config(self.cfg, upstream=upstream, slot=slot,
                                              parameters=params, socket_dir=self.socket_dir)

    def _configure(self, standby: bool, upstream: conffiles.Upstream | None,
                   reload_now: bool = True) -> conffiles.ConfChange:
        change = conffiles.configure(self.cfg.data_dir, self._settings(upstream), standby=standby,
                                     hba_lines=self.cfg.pg_hba)
        if change.changed and reload_now and self.running():
            # primary_conninfo and primary_slot_name reload on PostgreSQL >= 13; parameters
            # that need a restart wait for one (reported as pending_restart)
            self.pm.reload()
            self.callbacks.fire("on_reload", self.status.get("role") or "unknown")
        return change

    def _sync_slots(self, force: bool = False) -> None:
        if not force and mono() - self.slots_checked_at < 5.0:
            return
        self.slots_checked_at = mono()
        dyn = self.ctx.shm.read("supervisor").data.get("dynamic") or {}
        if not dyn.get("use_slots", True):
            return
        lease = self.ctx.shm.read("lease").data
        cluster = lease.get("cluster") or {}
        names = set(cluster.get("members") or {})
        # Only a current view that shows ourselves is complete enough to drop slots by:
        # an empty or stale list would drop every replica's slot.
        if not lease.get("connected") or self.ctx.config.name not in names:
            return
        members = sorted(names - {self.ctx.config.name})
        try:
            res = sync_slots(self.session, members, timeout=2.0)
            if res.created or res.dropped:
                self.log.info("replication slots: created %s, dropped %s",
                              list(res.created), list(res.dropped))
        except PostgresError as e:
            self._error(f"replication slots: {e}")

    # -- operations (run in the background thread) -----------------------------------

    def begin(self, name: str, fn: Callable[[], None], state: str | None = None) -> None:
        if self.op is not None:
            return
        self.op_name, self.op_started = name, mono()
        if state:
            self.state = state
        self.log.info("%s: starting", name)

        def body() -> None:
            try:
                fn()
                self.op_error = None
            except Exception as e:  # noqa: BLE001 - reported through the section
                self.op_error = str(e) or type(e).__name__
                self.op_still_starting = isinstance(e, StillStarting)
            finally:
                # finished BEFORE the poke: the woken loop must not find the thread "alive"
                # and sleep its 0.2 s poll (measured in the switchover benchmark)
                self.op_finished.set()
                self.ctx.wakeups.poke("postgres")  # report the outcome now, not a poll later

        self.op_finished.clear()
        self.op_error = None
        self.op_still_starting = False
        self.op = threading.Thread(target=body, name=f"pg-{name}", daemon=True)
        self.op.start()

    def _check_op(self) -> None:
        assert self.op is not None
        if not self.op_finished.is_set():
            return
        self.op.join()
        name, took = self.op_name, mono() - self.op_started
        self.op, self.op_name = None, None
        if name == "restart" and self.restart_done.get("pending"):
            self.restart_done = {"token": self.restart_done["pending"], "ok": not self.op_error,
                                 "still_starting": self.op_still_starting,
                                 "error": self.op_error}
        if name == "reinitialize" and self.reinit_done.get("pending"):
            self.reinit_done = {"token": self.reinit_done["pending"], "ok": not self.op_error,
                                "error": self.op_error}
        if self.op_error:
            self._error(f"{name} failed: {self.op_error}")
            # a start that is only slow goes on: Patroni's "starting", not a failure state
            self.state = "starting" if self.op_still_starting else \
                FAILED_STATE.get(name or "", self.state)
        else:
            self.log.info("%s: done in %.2f s", name, took)
            if self.last_error and self.last_error.startswith(f"{name} failed"):
                self.last_error = None
        self.sampled_at = 0.0  # sample right away
        self.ctx.wakeups.poke("supervisor")

    def _start(self, timeout: float | None = None) -> None:
        self.expect_exit = False
        self.crashed_as_primary = False
        self.control_state = None
        self.last_lsn, self.last_lsn_primary = None, False
        self.pm.start()
        limit = START_TIMEOUT if timeout is None else timeout
        if not self.pm.wait_ready(limit):
            raise StillStarting(f"PostgreSQL did not accept connections within {limit:g} s")
        self.state = "running"

    def _start_then(self, role: str) -> None:
        self._start()
        self.callbacks.fire("on_start", role)

    def _stop(self, mode: str) -> None:
        self.state = "stopping"
        self.expect_exit = True
        if self.pm.frozen():
            # a frozen server ignores every stop mode; the decision to stop it is a fence
            self.log.error("PostgreSQL is frozen (stopped processes): killing it and its "
                           "children")
            self.pm.kill()
            self.pm.wait_exit(30.0)
        elif not self.pm.stop(mode, timeout=60.0 if mode == "fast" else 10.0):  # type: ignore[arg-type]
            if not self.pm.stop("immediate", timeout=10.0):
                # a frozen postmaster ignores every stop mode: it is fenced by SIGKILL
                self.log.error("PostgreSQL did not stop: killing the postmaster")
                self.pm.kill()
                self.pm.wait_exit(30.0)
        self.state = "stopped"
        self.status = {}
        self.control_state = None
        self.last_lsn, self.last_lsn_primary = self._shutdown_lsn()

    def _shutdown_lsn(self) -> tuple[int | None, bool]:
        """After a clean shutdown pg_control's latest checkpoint is the end of this server's
        WAL: a switchover candidate that has received it has every committed write. Also
        whether the server was a primary (a standby's checkpoint is only a restartpoint)."""
        try:
            ctl = controldata(self.cfg.bin_dir, self.cfg.data_dir)
        except Exception as e:  # noqa: BLE001 - reported, the switchover then waits a while
            self.log.warning("cannot read pg_control after the stop: %s", e)
            return None, False
        state = ctl.get("Database cluster state")
        self.control_state = state  # read once: the next converge asks for it too
        if state not in ("shut down", "shut down in recovery"):
            return None, False
        lsn = parse_lsn_or_none(ctl.get("Latest checkpoint location"))
        return lsn, lsn is not None and state == "shut down"

    def _fresh_postmaster(self) -> None:
        """Within an operation: forget the stopped postmaster so the next start is clean."""
        self.pm.poll()
        self.pm.close()
        self.pm = Postmaster(self.cfg.bin_dir, self.cfg.data_dir)
        self.expect_exit = False
        self.session.close()

    def _restart(self, token: int, timeout: float | None = None) -> None:
        """A restart asked through the API: same role, same files, new postmaster (applies
        settings that need a restart). The supervisor keeps the lock meanwhile. `timeout`
        (the request's) bounds the wait for connections: past it the supervisor's
        primary_start_timeout rules take over, with `timeout` in its place (Patroni's)."""
        self.restart_done = dict(self.restart_done, pending=token)
        was_primary = self.status.get("role") == "primary"
        if self.running():
            self._stop("fast")
        self._fresh_postmaster()
        self.state = "restarting"
        if was_primary and not self._lease_confirms_lock():
            # the key was lost while we were stopped: a primary must not come back on its own
            self.state = "stopped"
            raise PostgresError("restart aborted after the stop: the leader key is no longer "
                                "confirmed, PostgreSQL stays stopped")
        self._start(timeout)
        self.log.info("restarted PostgreSQL%s on request", " (primary)" if was_primary else "")
        self.callbacks.fire("on_restart", "primary" if was_primary else "replica")

    def _reinitialize(self, token: int) -> None:
        """Wipe this replica's data; the supervisor's next decision clones it afresh."""
        self.reinit_done = dict(self.reinit_done, pending=token)
        if self.running():
            self._stop("immediate")
        self._fresh_postmaster()
        clear_data_dir(self.cfg.data_dir, remove_dir=False)
        self.sysid = None
        self.following = None
        self.last_lsn, self.last_lsn_primary = None, False
        self.state = "stopped"
        self.log.info("data directory removed for a reinitialize; cloning follows")

    def _bootstrap_new(self) -> None:
        initdb(self.cfg.bin_dir, self.cfg.data_dir, self.cfg.superuser)
        self._configure(standby=False, upstream=None, reload_now=False)
        self._start()
        create_roles(self.conn, self.cfg.superuser, self.cfg.replication)
        self.sysid = read_sysid(self.cfg.bin_dir, self.cfg.data_dir)
        self.callbacks.fire("on_start", "primary")

    def _clone(self, pg: dict[str, Any]) -> None:
        conn = pg["leader_conn"]
        # pg_basebackup streams its WAL through a temporary slot of its own; the member's
        # permanent slot is created by the leader within seconds and used once we stream
        basebackup(self.cfg.bin_dir, self.cfg.data_dir, str(conn["host"]), int(conn["port"]),
                   self.cfg.replication, slot=None)
        upstream = self._upstream(conn)
        self._configure(standby=True, upstream=upstream, reload_now=False)
        self.following = pg.get("leader")
        self._start()
        self.callbacks.fire("on_start", "replica")

    def _promote(self) -> None:
        ok, reason = self.callbacks.pre_promote()
        if not ok:
            # the supervisor releases the key and stays out of the race for a ttl
            self.promote_refused_at = mono()
            raise PostgresError(f"promotion aborted: {reason}")
        if not self._lease_confirms_lock():  # pre_promote may have run for a while
            raise PostgresError("promotion aborted: the leader key was lost during pre_promote")
        # The other members' slots, created on the standby before it leaves recovery (they
        # survive the promotion): replicas re-pointed at us find their slot at once instead
        # of failing and retrying after wal_retrieve_retry_interval (5 s measured).
        self._sync_slots(force=True)
        took = promote(self.conn, timeout=30.0)
        self.callbacks.fire("on_role_change", "primary")
        self.log.info("promoted in %.3f s", took)
        self.following = None
        self.need_checkpoint = True
        self.slots_checked_at = 0.0  # replicas reconnect at once: have their slots ready

    def _checkpoint(self, token: int = 0) -> None:
        """After a promotion pg_control keeps the old timeline until the next checkpoint,
        and pg_rewind reads the new leader's timeline from pg_control: checkpoint now.
        Before a switchover (`token`): so the shutdown checkpoint has little left to do."""
        with Session(self.conn, timeout=120.0) as session:
            session.query("CHECKPOINT")
        self.need_checkpoint = False
        if token:
            self.checkpoint_done = token

    def _demote(self, mode: str) -> None:
        """Stop writes now; the next converge brings the server back as a replica
        (through pg_rewind, as for any former primary)."""
        self._stop(mode)
        self.following = None
        self.callbacks.fire("on_stop", "demoted")
        self.role_changed = True

    def _rejoin(self, upstream: conffiles.Upstream, leader: str | None) -> None:
        # pg_rewind may change the data dir: it is no longer what the clean primary
        # shutdown left, so it may not run for leader on that position any more
        self.last_lsn_primary = False
        dyn = self.ctx.supervisor().get("dynamic") or {}
        if dyn.get("use_pg_rewind"):
            try:
                outcome = rewind(self.cfg.bin_dir, self.cfg.data_dir, upstream.host,
                                 upstream.port, self.cfg.superuser)
                self.log.info("pg_rewind from %s: %s", leader, outcome)
            except SourceNotReady:
                raise  # retried on the next converge; the data stays
            except Exception as e:
                raw = self.ctx.config.raw.get("postgresql") or {}
                if raw.get("remove_data_directory_on_rewind_failure"):
                    self.log.error("pg_rewind failed (%s): removing the data directory for "
                                   "a fresh basebackup", e)
                    clear_data_dir(self.cfg.data_dir, remove_dir=False)
                    self.sysid = None
                    return
                raise PostgresError(f"pg_rewind failed ({e}); set "
                                    "postgresql.remove_data_directory_on_rewind_failure or "
                                    "reinitialize this member") from None
        self._configure(standby=True, upstream=upstream, reload_now=False)
        self.following = leader
        self._start()
        self.callbacks.fire("on_role_change" if self.role_changed else "on_start", "replica")
        self.role_changed = False

    # -- reporting --------------------------------------------------------------------

    def _timeline_history(self, st: dict[str, Any]) -> dict[str, Any] | None:
        """The current timeline's history file (a primary after a promotion), read once."""
        tl = st.get("timeline")
        if st.get("role") != "primary" or not isinstance(tl, int) or tl <= 1:
            return None
        if self._history_cache[0] != tl:
            self._history_cache = (tl, read_history(self.cfg.data_dir, tl))
        return self._history_cache[1]

    def _pending_reason(self, st: dict[str, Any]) -> dict[str, Any] | None:
        """Patroni's pending_restart_reason: {param: {old_value, new_value}}."""
        running = st.get("pending_restart_values")
        if not st.get("pending_restart") or not isinstance(running, dict):
            return None
        try:
            wanted = self._settings(None)
        except Exception:  # noqa: BLE001 - the reason is informative only
            wanted = {}
        return {k: {"old_value": v, "new_value": wanted.get(k)} for k, v in sorted(running.items())}

    def publish(self) -> None:
        st = self.status
        # "running" means: the postmaster lives AND answered the last sample, so its role
        # is known. During an operation only SERVING_OPS keep a server that answers.
        running = (self.op is None and bool(st) and self.running()) or \
            self.op_name in SERVING_OPS
        data: dict[str, Any] = {
            "state": self.state,
            "data_dir_state": data_dir_state(self.cfg.data_dir),
            "running": running,
            "pid": self.pm.pid,
            "postmaster_start_time": st.get("postmaster_start_time"),
            "role": st.get("role") or ("uninitialized" if not self.sysid else None),
            "timeline": st.get("timeline"),
            "server_version": st.get("server_version"),
            "sysid": st.get("sysid") or self.sysid,
            "xlog": st.get("xlog"),
            "wal_position": st.get("wal_position"),
            "replication_state": st.get("replication_state"),
            "replication": st.get("replication") or [],
            "following": self.following,
            "operation": {"name": self.op_name, "started": self.op_started} if self.op else None,
            "last_error": self.last_error,
            "sampled_at": self.sampled_at,
            "epoch_done": self.epoch_done,
            "pending_restart": bool(st.get("pending_restart")),
            "pending_restart_reason": self._pending_reason(st),
            "checkpoint_done": self.checkpoint_done,
            "restart_done": self.restart_done,
            "reinit_done": self.reinit_done,
            "last_lsn": self.last_lsn,
            "last_lsn_primary": self.last_lsn_primary,
            "promote_refused_at": self.promote_refused_at,
            "timeline_history": self._timeline_history(st),
        }
        if data != self.last_pub:
            self.last_pub = data
            self.ctx.publish(data)
            self.ctx.wakeups.poke("lease")  # the member key mirrors this section
            self.ctx.wakeups.poke("network")  # the VIP rule reads it
        else:
            self.ctx.shm.beat("postgres")


def run(ctx: WorkerContext) -> int:
    return PostgresWorker(ctx).run()
