"""The watchdog worker: owns the watchdog device and enforces ARCHITECTURE.md rule 3.

Modes are Patroni's: `off` never opens a device; `automatic` uses one when it can be opened
and carries on without it otherwise; `required` reports `failed` when no device is usable,
and the decision core then never takes the leader key.

* Arm (open the device, set W = core.timing.watchdog_timeout) when the intent says
  "armed". Opening is itself a ping, so arming obeys the same rule as feeding.
* Feed right after each lease renewal, and only while `fencing.rules.may_feed` holds:
  `now + W <= lease_deadline` and fresh supervisor and postgres heartbeats. Renewals only
  poke the supervisor, so an armed worker also polls the lease section several times a second.
* Disarm (magic close) only when the intent says "disarmed" AND PostgreSQL is no longer a
  running primary AND the VIP is not held.
* On SIGTERM: magic close if disarming is allowed, else exit WITHOUT it, so the host is
  reset (a primary whose agent dies must be fenced). Killed with the supervisor
  (PDEATHSIG), the kernel closes the fd without 'V' and the watchdog fires: intended.
* A restarted worker whose predecessor died armed re-opens the device at once, so it can
  keep feeding (or disarm) before the predecessor's timer runs out.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgwarden.core.clock import mono_ns
from pgwarden.core.shm import SectionView
from pgwarden.core.timing import authority_deadline, watchdog_timeout
from pgwarden.fencing.device import WatchdogDevice, WatchdogError, make_device, probe
from pgwarden.fencing.rules import (
    arming_timeout,
    cause_of,
    heartbeat_max_age,
    may_disarm,
    may_feed,
    poll_interval,
    renew_interval,
    should_arm,
    timeout_problem,
)
from pgwarden.workers.context import WorkerContext

DeviceFactory = Callable[[str, str], WatchdogDevice]  # (mode, path) -> device
ARM_RETRY = 5.0  # a failed open (EBUSY, EACCES) is retried this often while wanted
ARM_ERROR_COOLDOWN = 30.0  # then forgotten when no longer wanted, so `usable` is re-probed
IDLE_WAKE = 1.0


@dataclass(frozen=True)
class Readings:
    """What one step needs from the other sections, read once."""

    now: float
    intent: str | None
    paused: bool
    wanted: int  # W
    ttl: float
    renew_interval: float
    max_age: float
    renewed_at: float
    lease_deadline: float | None
    supervisor_age: float
    postgres_age: float
    primary_running: bool | None  # None: unknown (stale section)
    vip_held: bool | None


class WatchdogWorker:
    def __init__(self, ctx: WorkerContext, device_factory: DeviceFactory = make_device) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.device_factory = device_factory
        self.mode = ctx.config.watchdog.mode
        self.path = ctx.config.watchdog.device
        self.device: WatchdogDevice | None = None
        self.armed = False
        self.requested: int | None = None  # the timeout last asked of the device
        self.effective: int | None = None  # what the device runs with
        self.fed_renewal = 0.0  # the renewed_at covered by the last feed (or the arming)
        self.last_feed: float | None = None
        self.arm_error: str | None = None
        self.arm_error_at = 0.0
        self.reason: str | None = None
        self.logged: set[str] = set()
        self.last_published: dict[str, Any] | None = None
        self.adopt = False
        self.stop = False

    # -- the loop ---------------------------------------------------------------------

    def start(self) -> None:
        previous = self.ctx.shm.read("watchdog").data
        # a predecessor that died armed left the timer running: take it over, see docstring
        self.adopt = bool(previous.get("armed")) and previous.get("device") == self.path
        if self.adopt:
            self.effective = self.requested = previous.get("timeout")
        self.ctx.shm.claim("watchdog")
        if self.adopt:
            self.take_over()  # before the first publication, which must not say "disarmed"
        self.publish()

    def loop(self) -> None:
        while not self.stop:
            if self.ctx.refresh_config():
                self.mode = self.ctx.config.watchdog.mode
                if not self.armed:
                    self.path = self.ctx.config.watchdog.device
            r = self.read()
            self.step(r)
            self.publish()
            self.ctx.wakeups.wait("watchdog", self.wake_after(r))
            self.ctx.shm.beat("watchdog")

    def wake_after(self, r: Readings) -> float:
        if self.armed or should_arm(r.intent, self.mode, r.paused):
            return poll_interval(self.effective or r.wanted)
        return IDLE_WAKE

    def finish(self) -> None:
        """The exit path (SIGTERM): disarm only if allowed, else leave the timer running."""
        if not self.armed or self.device is None:
            return
        r = self.read()
        ok, why = may_disarm(should_arm(r.intent, self.mode, r.paused), r.primary_running,
                             r.vip_held)
        if ok:
            self.disarm(why)
            self.publish()
            return
        self.log.critical("stopping while the watchdog is armed (%s): exiting WITHOUT "
                          "disarming it, the host resets within %s s unless a new watchdog "
                          "worker takes over", why, self.effective)
        self.device.abandon()

    # -- sensing ----------------------------------------------------------------------

    def read(self) -> Readings:
        shm, cfg = self.ctx.shm, self.ctx.config
        now_ns = mono_ns()
        sup = shm.read("supervisor")
        dyn = sup.data.get("dynamic") or {}
        ttl = float(dyn.get("ttl", cfg.bootstrap_dcs.ttl))
        loop_wait = float(dyn.get("loop_wait", cfg.bootstrap_dcs.loop_wait))
        max_age = heartbeat_max_age(loop_wait)
        lease = shm.read("lease")
        pg = shm.read("postgres")
        net = shm.read("network")
        # the lease's deadline, or the failsafe one while every member accepted our pings
        deadline = None if lease.torn else (authority_deadline(lease.data) or None)
        pg_data = _fresh(pg, now_ns, max_age)
        net_data = _fresh(net, now_ns, max_age)
        return Readings(
            now=now_ns / 1e9,
            intent=(sup.data.get("intent") or {}).get("watchdog"),
            paused=bool(sup.data.get("paused")),
            wanted=int(sup.data.get("watchdog_timeout")
                       or watchdog_timeout(cfg, cfg.bootstrap_dcs)),
            ttl=ttl,
            renew_interval=renew_interval(ttl, loop_wait),
            max_age=max_age,
            renewed_at=0.0 if lease.torn else confirmed_at(lease.data, ttl),
            lease_deadline=float(deadline) if deadline else None,
            supervisor_age=float("inf") if sup.torn else sup.age(now_ns),
            postgres_age=float("inf") if pg.torn else pg.age(now_ns),
            primary_running=primary_running(pg_data),
            vip_held=None if net_data is None else bool(net_data.get("held")),
        )

    # -- deciding ---------------------------------------------------------------------

    def step(self, r: Readings) -> None:
        want = should_arm(r.intent, self.mode, r.paused)
        if self.adopt:
            self.take_over()
        if self.armed:
            self.maybe_feed(r)
            if not want:
                ok, why = may_disarm(want, r.primary_running, r.vip_held)
                if ok and self.device is not None and not self.device.can_disarm:
                    # closing would not stop it: keep feeding rather than reset a healthy host
                    self.once("nowayout", "the watchdog cannot be disarmed (no magic close, or "
                              "nowayout): keeping it armed and fed")
                elif ok:
                    self.disarm(why)
                else:
                    self.once("keep", f"keeping the watchdog armed: {why}")
        elif want:
            self.maybe_arm(r)
        else:
            self.logged.discard("keep")
            if self.arm_error and r.now - self.arm_error_at > ARM_ERROR_COOLDOWN:
                self.arm_error = None

    def maybe_arm(self, r: Readings) -> None:
        if self.arm_error and r.now - self.arm_error_at < ARM_RETRY:
            return
        problem = probe(self.path)
        if problem:
            self.fail(r.now, problem)
            return
        first = arming_timeout(r.now, r.wanted, r.lease_deadline)
        if first is None:
            self.refuse("arm-wait", "waiting for a lease renewal before arming: the lease "
                        "deadline is too close (or unknown)")
            return
        ok, why = may_feed(r.now, first, r.lease_deadline, r.supervisor_age, r.postgres_age,
                           r.max_age)
        if not ok:
            self.refuse("arm:" + cause_of(why), f"not arming yet: {why}")
            return
        device = self.device_factory(self.mode, self.path)
        try:
            device.open()
            effective = device.set_timeout(first)
        except WatchdogError as e:
            if device.is_open:
                device.close()
            self.fail(r.now, str(e))
            return
        # W itself must be workable; a shortened first period only has to be known
        problem = timeout_problem(effective, r.ttl, r.renew_interval) if first == r.wanted \
            else (None if effective is not None else "the device does not report its timeout")
        if problem is None and effective is not None and effective > first:
            # the driver would not shorten the first period: the arm overshot the lease
            device.close()
            self.refuse("arm-long", f"not arming yet: the device kept a {effective} s timeout, "
                        "which would outlive the lease; waiting for a renewal")
            return
        if problem is not None:
            disarmed = device.close()
            self.fail(r.now, problem if disarmed else
                      f"{problem} (and it could not be disarmed: the host will reset)")
            return
        self.device, self.armed = device, True
        self.requested, self.effective = first, effective
        self.fed_renewal, self.last_feed = r.renewed_at, r.now
        self.arm_error, self.reason = None, None
        self.logged.clear()
        self.log.info("watchdog %s armed: effective timeout %s s (W = %d s, ttl %g s); %s",
                      self.path, effective, r.wanted, r.ttl, _describe(device))

    def take_over(self) -> None:
        device = self.device_factory(self.mode, self.path)
        try:
            device.open()  # no ping when the timer still runs (kernel and emulator alike)
        except WatchdogError as e:
            self.refuse("adopt", f"cannot re-open the armed watchdog left by my predecessor: {e}")
            return
        self.adopt = False
        self.device, self.armed, self.fed_renewal = device, True, 0.0
        self.log.warning("re-opened %s, left armed by the previous watchdog worker", self.path)

    def maybe_feed(self, r: Readings) -> None:
        if r.renewed_at <= self.fed_renewal or self.device is None:
            return  # no renewal since the last feed: nothing vouches for more time
        change = self.requested != r.wanted  # the first period was short, or W changed
        timeout = r.wanted if change or self.effective is None else self.effective
        ok, why = may_feed(r.now, timeout, r.lease_deadline, r.supervisor_age, r.postgres_age,
                           r.max_age)
        if not ok:
            self.refuse("feed:" + cause_of(why), f"not feeding the watchdog: {why}")
            return
        try:
            if change:
                effective = self.device.set_timeout(r.wanted)  # SETTIMEOUT pings too
                self.requested, self.effective = r.wanted, effective
                problem = timeout_problem(effective, r.ttl, r.renew_interval)
                if problem:
                    self.log.error("watchdog timeout changed to %s s: %s", effective, problem)
                else:
                    self.log.info("watchdog timeout now %s s", effective)
            else:
                self.device.keepalive()
        except WatchdogError as e:
            self.refuse("feed-error", f"feeding the watchdog failed: {e}")
            return
        self.fed_renewal, self.last_feed = r.renewed_at, r.now
        self.reason = None
        self.logged = {k for k in self.logged if not k.startswith("feed")}  # may recur now

    def disarm(self, why: str) -> None:
        device, self.device = self.device, None
        self.armed = False
        self.requested = self.effective = None
        self.logged.clear()
        if device is not None and device.close():
            self.log.info("watchdog disarmed: %s", why)
        else:
            self.reason = "the device could not be disarmed: the host will reset"
            self.log.error("%s", self.reason)

    # -- reporting --------------------------------------------------------------------

    def refuse(self, cause: str, reason: str) -> None:
        """A transient no (not feeding, not arming yet): published, logged once per cause."""
        self.reason = reason
        self.once(cause, reason)

    def fail(self, now: float, error: str) -> None:
        """The device cannot be used: usable=false (and failed=true in required mode)."""
        if error != self.arm_error:
            level = self.log.error if self.mode == "required" else self.log.warning
            level("watchdog %s not usable: %s", self.path, error)
        self.arm_error, self.arm_error_at, self.reason = error, now, error

    def once(self, key: str, message: str) -> None:
        if key not in self.logged:
            self.logged.add(key)
            self.log.warning("%s", message)

    def usable(self) -> tuple[bool, str | None]:
        if self.mode == "off":
            return False, "watchdog disabled by configuration"
        if self.armed:
            return True, self.reason
        if self.arm_error:
            return False, self.arm_error
        problem = probe(self.path)
        return problem is None, problem or self.reason

    def publish(self) -> None:
        usable, reason = self.usable()
        data = {"mode": self.mode, "device": self.path, "armed": self.armed, "usable": usable,
                "timeout": self.effective if self.armed else None, "last_feed": self.last_feed,
                "failed": self.mode == "required" and not usable, "reason": reason}
        prev = self.last_published
        if prev is not None and {**prev, "last_feed": None} == {**data, "last_feed": None}:
            if prev["last_feed"] != data["last_feed"]:
                self.ctx.shm.publish("watchdog", data)  # a feed alone wakes nobody
            self.last_published = data
            return
        self.last_published = data
        self.ctx.publish(data)


def _describe(device: WatchdogDevice) -> str:
    d = device.describe()
    return ", ".join(f"{k} {v}" for k, v in d.items()
                     if k in ("kind", "identity", "options", "nowayout") and v is not None)


def _fresh(view: SectionView, now_ns: int, max_age: float) -> dict[str, Any] | None:
    if view.torn or view.age(now_ns) >= max_age:
        return None
    return view.data


def primary_running(pg: dict[str, Any] | None) -> bool | None:
    """True: a running primary. None (unknown, the unsafe answer): no fresh section.
    False: anything else, a postmaster that does not answer included (the decision core
    keeps the watchdog armed by its intent while it fences such a server)."""
    if pg is None:
        return None
    # counting a silent postmaster as unknown kept a normally demoted host armed and unfed
    # through a DCS outage, and its watchdog reset it (found by the fencing lab scenarios)
    return pg.get("running") is True and pg.get("role") == "primary"


def confirmed_at(lease: dict[str, Any], ttl: float) -> float:
    """When our leadership was last confirmed: the last lease renewal, or the last failsafe
    round every member accepted (its deadline minus the ttl it was granted for). A feed
    needs a confirmation newer than the last feed; without the failsafe one, a primary that
    failsafe mode keeps would be reset by its own watchdog (found by the lab scenario)."""
    renewed = lease.get("renewed_at")
    best = float(renewed) if isinstance(renewed, (int, float)) and not isinstance(renewed, bool) else 0.0
    fs = lease.get("failsafe_deadline")
    granted = lease.get("ttl")
    if isinstance(fs, (int, float)) and not isinstance(fs, bool) and fs > 0:
        span = float(granted) if isinstance(granted, (int, float)) and granted > 0 else ttl
        best = max(best, float(fs) - span)
    return best


def run(ctx: WorkerContext) -> int:
    worker = WatchdogWorker(ctx)

    def on_term(*_: Any) -> None:
        worker.stop = True
        ctx.wakeups.poke("watchdog")

    signal.signal(signal.SIGTERM, on_term)
    worker.start()
    try:
        worker.loop()
    finally:
        worker.finish()
    return 0
