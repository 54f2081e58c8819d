"""Local operations asked through the REST API: restart (now or scheduled), reload,
reinitialize. The api worker lists requests in its section; the supervisor takes each id
once, answers it in its own section (`requests_done`), and turns accepted ones into tokens
of the intent that the postgres worker carries out (`pg.restart`, `pg.reinit`).

Answers use Patroni's status codes and texts (patronictl prints them, and matches the
suffix " already in progress"). A request id is never answered twice, so a restarted api
worker or supervisor can not run one restart two times.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pgwarden.supervisor.switchover import parse_time

KEEP_DONE = 64


@dataclass
class PendingOp:
    kind: str  # restart | reinit
    request_id: str
    token: int
    started: float  # wall
    timeout: float | None = None


@dataclass
class LocalRequests:
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict)
    done: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    restart_token: int = 0
    reinit_token: int = 0
    reinit_force: bool = False
    pending: list[PendingOp] = field(default_factory=list)
    scheduled_restart: dict[str, Any] | None = None  # {"schedule", "at", "args"}
    reload_wanted: bool = False
    skipped_restart: bool = False  # the last scheduled restart was not needed any more

    # -- answers --------------------------------------------------------------------

    def answer(self, request_id: str, code: int, text: str) -> None:
        self.done[request_id] = {"code": code, "text": text}
        while len(self.done) > KEEP_DONE:
            self.done.popitem(last=False)

    # -- intake ---------------------------------------------------------------------

    def absorb(self, requests: Any, pg: dict[str, Any], is_leader: bool,
               cluster_has_leader: bool, paused: bool, wall: float) -> None:
        """Take every request id not seen before; answer at once what can be answered."""
        if not isinstance(requests, list):
            return
        for r in requests:
            if not isinstance(r, dict) or not isinstance(r.get("id"), str):
                continue
            rid = r["id"]
            if rid in self.seen:
                continue
            self.seen[rid] = None
            while len(self.seen) > KEEP_DONE * 4:
                self.seen.popitem(last=False)
            args = r.get("args") if isinstance(r.get("args"), dict) else {}
            kind = r.get("kind")
            if kind == "reload":
                self.reload_wanted = True
                self.answer(rid, 202, "reload scheduled")
            elif kind == "restart":
                self._restart(rid, args, pg, is_leader, paused, wall)
            elif kind == "cancel_restart":
                if self.scheduled_restart is None:
                    self.answer(rid, 404, "no restarts are scheduled")
                else:
                    self.scheduled_restart = None
                    self.answer(rid, 200, "scheduled restart deleted")
            elif kind == "reinitialize":
                self._reinit(rid, args, pg, is_leader, cluster_has_leader)
            else:
                self.answer(rid, 400, f"unknown request kind {kind!r}")

    def _busy(self, pg: dict[str, Any]) -> str | None:
        op = pg.get("operation")
        if isinstance(op, dict) and op.get("name"):
            return f"{op['name']} already in progress"
        if self.pending:  # restarts and reinits only
            kind = self.pending[0].kind
            return f"{'reinitialize' if kind == 'reinit' else kind} already in progress"
        return None

    def _restart(self, rid: str, args: dict[str, Any], pg: dict[str, Any], is_leader: bool,
                 paused: bool, wall: float) -> None:
        if "schedule" in args:
            if paused:
                # Patroni answers 500; a 5xx from us means a bug, so: 400
                self.answer(rid, 400, "Can't schedule restart in the paused state")
                return
            at, why = parse_time(args.get("schedule"))
            if at is None:
                self.answer(rid, 400 if "Timezone" in str(why) else 422,
                            str(why).replace("switchover", "restart"))
                return
            if at < wall - 1:
                self.answer(rid, 422, "Cannot schedule restart in the past")
                return
            if self.scheduled_restart is not None:
                self.answer(rid, 409, "Another restart is already scheduled")
                return
            rest = {k: v for k, v in args.items() if k != "schedule"}
            # Patroni's rule: a restart that already happened by the scheduled time (the
            # postmaster started since) is not repeated
            self.scheduled_restart = {"schedule": args["schedule"], "at": at, "args": rest,
                                      "postmaster_start_time": pg.get("postmaster_start_time")}
            self.answer(rid, 202, "Restart scheduled")
            return
        self.start_restart(rid, args, pg, is_leader, wall)

    def start_restart(self, rid: str | None, args: dict[str, Any], pg: dict[str, Any],
                      is_leader: bool, wall: float) -> bool:
        problem = self._busy(pg)
        if problem is None and pg.get("state") == "starting":
            problem = "postgres is still starting"
        if problem is None and not restart_matches(args, pg, is_leader):
            problem = "restart conditions are not satisfied"
        if problem is None and not pg.get("pid"):
            problem = "postgres is not running"
        if problem is not None:
            if rid is not None:
                self.answer(rid, 503, problem)
            return False
        self.restart_token += 1
        timeout = args.get("timeout")
        self.pending.append(PendingOp("restart", rid or "", self.restart_token, wall,
                                      float(timeout) if isinstance(timeout, (int, float)) else None))
        return True

    def _reinit(self, rid: str, args: dict[str, Any], pg: dict[str, Any], is_leader: bool,
                cluster_has_leader: bool) -> None:
        force = args.get("force") is True
        if is_leader:
            self.answer(rid, 503, "I am the leader, can not reinitialize")
            return
        if not cluster_has_leader:
            self.answer(rid, 503, "Cluster has no leader, can not reinitialize")
            return
        busy = self._busy(pg)
        if busy is not None and not force:
            self.answer(rid, 503, busy)
            return
        self.reinit_token += 1
        self.reinit_force = force
        self.pending.append(PendingOp("reinit", rid, self.reinit_token, 0.0))

    # -- progress -------------------------------------------------------------------

    def tick(self, pg: dict[str, Any], is_leader: bool, wall: float) -> None:
        """Answer finished operations; fire a scheduled restart whose time came."""
        for op in list(self.pending):
            key = "restart_done" if op.kind == "restart" else "reinit_done"
            done = pg.get(key)
            if isinstance(done, dict) and int(done.get("token") or 0) >= op.token:
                self.pending.remove(op)
                if not op.request_id:
                    continue
                if op.kind == "reinit":
                    # answered once the data is wiped: the clone follows, watched by `state`
                    self.answer(op.request_id, 200 if done.get("ok") else 503,
                                "reinitialize started" if done.get("ok")
                                else f"reinitialize failed: {done.get('error')}")
                else:
                    self.answer(op.request_id, 200 if done.get("ok") else 503,
                                "restarted successfully" if done.get("ok") else
                                "postgres is still starting" if done.get("still_starting")
                                else "restart failed")
        sched = self.scheduled_restart
        if sched is not None and wall >= float(sched["at"]):
            self.scheduled_restart = None
            started = sched.get("postmaster_start_time")
            if started and pg.get("postmaster_start_time") not in (None, started):
                self.skipped_restart = True  # restarted meanwhile: nothing left to apply
                return
            self.start_restart(None, sched["args"], pg, is_leader, wall)

    def restart_timeout(self) -> float | None:
        """The `timeout` of the restart now asked of the postgres worker, if it has one."""
        return next((op.timeout for op in self.pending
                     if op.kind == "restart" and op.token == self.restart_token), None)

    def intent(self) -> dict[str, Any]:
        return {"restart": {"token": self.restart_token, "timeout": self.restart_timeout()},
                "reinit": {"token": self.reinit_token, "force": self.reinit_force}}

    def published(self) -> dict[str, Any]:
        sched = self.scheduled_restart
        return {
            "requests_done": dict(self.done),
            "scheduled_restart": None if sched is None else
            {"schedule": sched["schedule"], **sched["args"],
             **({"postmaster_start_time": sched["postmaster_start_time"]}
                if sched.get("postmaster_start_time") else {})},
        }


def restart_matches(args: dict[str, Any], pg: dict[str, Any], is_leader: bool) -> bool:
    """Patroni's restart filters: role, postgres_version (restart only older servers) and
    restart_pending (only when a setting waits for a restart)."""
    role = args.get("role")
    if role is not None:
        mine = "primary" if is_leader else "replica"
        if role in ("master",):
            role = "primary"
        if role != mine:
            return False
    version = args.get("postgres_version")
    if version is not None:
        want = postgres_version_int(str(version))
        have = pg.get("server_version")
        if want is None or not isinstance(have, int) or have >= want:
            return False
    if args.get("restart_pending") is True and not pg.get("pending_restart"):
        return False
    return True


def postgres_version_int(text: str) -> int | None:
    """'15.2' -> 150002, '9.6.3' -> 90603; None when it is not a version."""
    parts = text.strip().split(".")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        return None
    if not nums or len(nums) > 3:
        return None
    if nums[0] >= 10:
        return nums[0] * 10000 + (nums[1] if len(nums) > 1 else 0)
    while len(nums) < 3:
        nums.append(0)
    return nums[0] * 10000 + nums[1] * 100 + nums[2]


def validate_restart_args(args: dict[str, Any]) -> str | None:
    """The API's 400 checks, before anything reaches the supervisor (Patroni's texts)."""
    for k, v in args.items():
        if k == "schedule":
            continue
        if k == "role":
            if v not in ("primary", "master", "standby_leader", "replica"):
                return "PostgreSQL role should be either primary, standby_leader, or replica"
        elif k == "postgres_version":
            if not isinstance(v, str) or postgres_version_int(v) is None:
                return f"{v!r} is not a valid PostgreSQL version number"
        elif k == "timeout":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                return "Timeout should be a positive number of seconds"
        elif k == "restart_pending":
            if not isinstance(v, bool):
                return "restart_pending should be true or false"
        else:
            return f"Unknown filter for the scheduled restart: {k}"
    return None
