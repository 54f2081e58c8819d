"""The network worker: owns the floating VIP under ARCHITECTURE.md rule 2.

It holds the VIP only while the supervisor's intent places it here, PostgreSQL is a running
primary and `now < lease_deadline - safety_margin`, and drops it FIRST on any doubt (rule
false, a torn or stale section, a netlink error). Nobody pokes us when the lease deadline
passes, so the loop wakes at least every min(0.2 s, safety_margin/4) and, while holding,
exactly at `lease_deadline - safety_margin`.

Exit paths (vip-manager#19/#268/#326): SIGTERM and any exception remove the VIP before the
worker exits; a SIGKILL cannot be handled, so a restarted worker removes a stale VIP first.
Paused (for now): the VIP is neither added nor removed, but SIGTERM still removes it.
"""
from __future__ import annotations

import logging
import signal
from typing import Any

from pgwarden.core.clock import mono, mono_ns
from pgwarden.core.config_model import VipConfig
from pgwarden.netroute.garp import GarpBurst, send_burst
from pgwarden.netroute.rules import vip_action
from pgwarden.netroute.vip import VipManager
from pgwarden.workers.context import WorkerContext
from pgwarden.workers.network_inputs import Verdict, evaluate

MAX_PERIOD = 0.2
MIN_PERIOD = 0.02  # a zero safety_margin must not turn the loop into a busy spin
RECHECK = 1.0  # seconds between netlink checks while the interface already matches the verdict


def period(safety_margin: float) -> float:
    return max(MIN_PERIOD, min(MAX_PERIOD, safety_margin / 4))


class NetworkWorker:
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.log = ctx.log
        self.stop = False
        self.vip: VipConfig | None = None
        self.mgr: VipManager | None = None
        self.burst: GarpBurst | None = None
        self.held = False
        self.checked_at = 0.0  # when netlink last confirmed `held`
        self.reason = "starting"
        self.last_change: float | None = None
        self.published: dict[str, Any] | None = None

    # -- setup ------------------------------------------------------------------------

    def _open(self, vip: VipConfig | None) -> None:
        """Switch to `vip` (start or reload): the previous VIP, if any, is removed first."""
        self._drop("the VIP configuration changed")
        if self.mgr is not None:
            self.mgr.close()
            self.mgr = None
        self.vip = vip
        if vip is None:
            self._set(False, "no vip configured")
            return
        try:
            self.mgr = VipManager(vip.interface, vip.address, vip.prefixlen)
        except Exception as e:  # noqa: BLE001 - no netlink socket: step() retries
            self._set(True, f"cannot open a netlink socket to check for a stale VIP: {e}")
            return
        try:
            self.mgr.ensure_absent_at_start()
            self.checked_at = mono()
            self._set(False, "started: no stale VIP on the interface")
        except Exception as e:  # noqa: BLE001 - the loop retries the removal on its doubt path
            self._set(True, f"cannot make sure no stale VIP is left: {e}")

    # -- actions ----------------------------------------------------------------------

    def _cancel_burst(self) -> None:
        if self.burst is not None:
            self.burst.cancel()
            self.burst = None

    def _drop(self, reason: str) -> None:
        """Remove the VIP now (cancelling any announcement first). Never raises."""
        self._cancel_burst()
        if self.mgr is None:
            return
        try:
            if self.mgr.remove():
                self.log.warning("VIP %s removed from %s: %s", self.mgr.address,
                                 self.mgr.interface, reason)
            self.checked_at = mono()
            self._set(False, reason)
        except Exception as e:  # noqa: BLE001 - VipError, or anything pyroute2 raises
            self.checked_at = 0.0  # retry next time round
            # Unknown whether it is still there: report held (conservative for readers
            # such as the watchdog, which must not disarm while the VIP may be up).
            self._set(True, f"{reason}; removing the VIP failed: {e}")

    def _hold(self, reason: str) -> None:
        assert self.mgr is not None
        self.mgr.add()
        self._cancel_burst()
        self.burst = send_burst(self.mgr.interface, self.mgr.address)
        self._set(True, reason)

    def step(self) -> Verdict | None:
        """One evaluation: read the sections, converge the interface, publish."""
        if self.mgr is None:
            if self.vip is not None:
                self._open(self.vip)  # the netlink handle could not be opened: retry
            self._publish()
            return None
        now = mono()
        v = evaluate(self.ctx.shm.read("supervisor"), self.ctx.shm.read("lease"),
                     self.ctx.shm.read("postgres"), now, mono_ns())
        # Netlink is asked at once whenever the verdict disagrees with what we hold, and
        # otherwise every RECHECK seconds (a VIP deleted or added behind our back), which
        # keeps an idle worker's CPU near zero at a 0.2 s wake-up period.
        recheck = now - self.checked_at >= RECHECK
        if not v.allowed and not v.paused:
            if self.held or recheck:
                self._drop(v.reason)  # first: before anything else can go wrong
            else:
                self._set(False, v.reason)
        elif not recheck and (v.paused or self.held):  # allowed and held, or paused: as is
            self._set(self.held, v.reason)
        else:
            try:
                present = self.mgr.holds()
                self.checked_at = now
                if vip_action(v.allowed, v.paused, present) == "add":
                    self._hold(v.reason)
                else:
                    self._set(present, v.reason)
            except Exception as e:  # noqa: BLE001 - any error is a doubt: drop first
                self._drop(f"network error: {e}")
        self._publish()
        return v

    # -- state ------------------------------------------------------------------------

    def _set(self, held: bool, reason: str) -> None:
        if held != self.held:
            self.last_change = mono()
        self.held, self.reason = held, reason

    def _publish(self) -> None:
        data = {"vip": self.vip.address if self.vip else None,
                "interface": self.vip.interface if self.vip else None,
                "held": self.held, "last_change": self.last_change, "reason": self.reason}
        if data != self.published:
            if self.published is None or (data["held"], data["reason"]) != (
                    self.published["held"], self.published["reason"]):
                self.log.log(_level(self.reason), "VIP %s %s: %s", data["vip"],
                             "held" if self.held else "not held", self.reason)
            self.published = data
            self.ctx.publish(data)  # pokes the supervisor: only on change
        else:
            self.ctx.shm.beat("network")

    def _timeout(self, v: Verdict | None) -> float:
        if v is None:
            return 1.0
        t = period(v.safety_margin)
        if v.allowed and self.held and v.hold_until is not None:
            t = min(t, max(0.0, v.hold_until - mono()))  # wake exactly at the boundary
        return t

    # -- loop -------------------------------------------------------------------------

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        self.ctx.shm.claim("network")
        try:
            self._open(self.ctx.config.vip)
            self._publish()
            while not self.stop:
                v = self.step()
                self.ctx.wakeups.wait("network", self._timeout(v))
                if self.ctx.refresh_config() and self.ctx.config.vip != self.vip:
                    self._open(self.ctx.config.vip)
        finally:
            self._drop("the network worker is stopping")
            self._publish()
            if self.mgr is not None:
                self.mgr.close()
        return 0

    def _on_term(self, *_: Any) -> None:
        self.stop = True
        self.ctx.wakeups.poke("network")


def _level(reason: str) -> int:
    """Errors and unreadable sections are warnings; the rule's own verdicts are news."""
    trouble = (reason.startswith(("network error", "cannot")) or " section " in reason
               or "failed" in reason)
    return logging.WARNING if trouble else logging.INFO


def run(ctx: WorkerContext) -> int:
    return NetworkWorker(ctx).run()
