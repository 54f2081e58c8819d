"""The watchdog emulator in a real network namespace, and the watchdog worker against it.

Each namespace is created here (`pgwt-<pid>-<n>`) and deleted in teardown, whatever
happened. Only processes this file started are ever killed by it; the emulator itself is
what kills the namespace's processes, and a control process outside the namespace proves
it touches nothing else.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pgwarden.core.clock import mono
from pgwarden.core.config_model import (
    Config,
    Credentials,
    DynamicConfig,
    HostPort,
    PostgresConfig,
    RestApiConfig,
    WatchdogConfig,
)
from pgwarden.core.shm import SharedState
from pgwarden.core.wakeup import Wakeups
from pgwarden.fencing.device import LinuxWatchdog
from pgwarden.workers import watchdog_worker
from pgwarden.workers.context import WorkerContext
from pgwarden.workers.watchdog_worker import WatchdogWorker

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

_seq = itertools.count()
ADDRESS = "10.251.7.1/24"  # only ever inside the test's own namespace
TOLERANCE = 0.3


def ip(*args: str) -> str:
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True,
                          timeout=10).stdout


@dataclass
class Lab:
    netns: str
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, *argv: str, in_netns: bool = True) -> subprocess.Popen[bytes]:
        cmd = ["ip", "netns", "exec", self.netns, *argv] if in_netns else list(argv)
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
        self.procs.append(p)
        return p

    def addresses(self) -> list[str]:
        links = json.loads(ip("-j", "-n", self.netns, "addr", "show", "dev", "wdv0"))
        return [f"{a['local']}/{a['prefixlen']}" for link in links for a in link["addr_info"]
                if a["family"] == "inet"]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    name = f"pgwt-{os.getpid()}-{next(_seq)}"
    ip("netns", "add", name)
    lab = Lab(name, tmp_path)
    try:
        ip("-n", name, "link", "add", "wdv0", "type", "veth", "peer", "name", "wdv1")
        ip("-n", name, "link", "set", "wdv0", "up")
        ip("-n", name, "addr", "add", ADDRESS, "dev", "wdv0")
        yield lab
    finally:
        for p in lab.procs:  # only our own children, by pid
            if p.poll() is None:
                p.kill()
            p.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10,
                       check=False)


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    device: str
    log: Path

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def event(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.events() if e["event"] == name), None)

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = mono() + timeout
        while mono() < deadline:
            e = self.event(name)
            if e is not None:
                return e
            time.sleep(0.01)
        raise AssertionError(f"no {name!r} event within {timeout} s: {self.events()}")

    def stop(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=5) == 0
        return self.wait_event("stopped", 1)


def start_emulator(lab: Lab, timeout: float, netns: bool = True) -> Emulator:
    device = str(lab.tmp / f"watchdog{next(_seq)}")
    log = lab.tmp / f"emulator{next(_seq)}.log"
    argv = [sys.executable, "-m", "pgwarden.fencing.emulator", "--device", device,
            "--timeout", str(timeout), "--log", str(log)]
    if netns:
        proc = lab.spawn(*argv, "--netns", lab.netns)  # runs inside, as on a lab host
    else:
        proc = lab.spawn(*argv, in_netns=False)
    emu = Emulator(proc, device, log)
    emu.wait_event("ready", 10)
    return emu


def keepalive_at(wd: LinuxWatchdog) -> float:
    before = mono()
    wd.keepalive()
    return (before + mono()) / 2


# -- the emulator ------------------------------------------------------------------------


def test_expiry_kills_the_namespace_and_flushes_its_addresses(lab: Lab) -> None:
    emu = start_emulator(lab, timeout=1.0)
    sleeper = lab.spawn("sleep", "60")
    control = lab.spawn("sleep", "60", in_netns=False)
    assert lab.addresses() == [ADDRESS]
    wd = LinuxWatchdog(emu.device)
    wd.open()
    for _ in range(3):
        time.sleep(0.3)
        last = keepalive_at(wd)
    wd.abandon()  # closed WITHOUT 'V': still armed, like the kernel
    assert emu.proc.wait(timeout=1.0 + 3) == 0
    fired = emu.wait_event("fired", 1)
    assert abs(fired["last_keepalive"] - last) < 0.05
    assert abs(fired["fired_at"] - last - 1.0) <= TOLERANCE
    assert abs(fired["late_ms"]) < 50
    assert sleeper.wait(timeout=2) == -signal.SIGKILL
    assert sleeper.pid in fired["killed"] and emu.proc.pid not in fired["killed"]
    assert control.poll() is None  # outside the namespace: untouched
    assert set(fired["flushed"]) == {"wdv0", "wdv1"}
    assert lab.addresses() == []
    assert emu.event("closed_armed") is not None
    assert not os.path.exists(emu.device)


def test_keepalives_keep_it_alive_and_magic_close_disarms(lab: Lab) -> None:
    emu = start_emulator(lab, timeout=1.0)
    sleeper = lab.spawn("sleep", "60")
    wd = LinuxWatchdog(emu.device)
    wd.open()
    assert wd.set_timeout(1) == 1
    start = mono()
    while mono() - start < 3.5:  # three and a half timeouts
        wd.keepalive()
        time.sleep(0.25)
    assert emu.proc.poll() is None and emu.event("fired") is None
    assert wd.close() is True  # 'V', then close
    emu.wait_event("disarmed", 1)
    time.sleep(1.0 + 0.6)
    assert emu.proc.poll() is None and emu.event("fired") is None
    assert sleeper.poll() is None and lab.addresses() == [ADDRESS]
    assert emu.stop()["armed"] is False


def test_close_without_v_after_a_disarm_and_rearm_still_fires(lab: Lab) -> None:
    emu = start_emulator(lab, timeout=0.5)
    sleeper = lab.spawn("sleep", "60")
    wd = LinuxWatchdog(emu.device)
    wd.open()
    wd.close()
    emu.wait_event("disarmed", 1)
    fd = os.open(emu.device, os.O_WRONLY | os.O_NONBLOCK)  # a new open arms it again
    os.write(fd, b"V")
    last = mono()
    os.write(fd, b"1")  # a ping after the 'V' cancels the magic close, as in the kernel
    os.close(fd)
    assert emu.proc.wait(timeout=3) == 0
    fired = emu.wait_event("fired", 1)
    assert abs(fired["fired_at"] - last - 0.5) <= TOLERANCE
    assert sleeper.wait(timeout=2) == -signal.SIGKILL


def test_without_netns_it_only_reports_the_expiry(lab: Lab) -> None:
    emu = start_emulator(lab, timeout=0.3, netns=False)
    sleeper = lab.spawn("sleep", "60")
    wd = LinuxWatchdog(emu.device)
    wd.open()
    wd.abandon()
    assert emu.proc.wait(timeout=3) == 0
    fired = emu.wait_event("fired", 1)
    assert fired["killed"] == [] and fired["flushed"] == [] and fired["netns"] is None
    assert sleeper.poll() is None and lab.addresses() == [ADDRESS]


# -- the watchdog worker against the emulator ---------------------------------------------

TTL, LOOP_WAIT, W = 3, 1, 2  # safety_margin 1: W = ttl - 1


def make_config(device: str, mode: str) -> Config:
    return Config(
        scope="wd", namespace="service", name="n1",
        restapi=RestApiConfig(HostPort("127.0.0.1", 8008), HostPort("127.0.0.1", 8008)),
        etcd3_hosts=(HostPort("127.0.0.1", 2379),),
        bootstrap_dcs=DynamicConfig(ttl=TTL, loop_wait=LOOP_WAIT, retry_timeout=1),
        postgresql=PostgresConfig(
            data_dir="/nonexistent", bin_dir="/usr/lib/postgresql/15/bin",
            listen=HostPort("127.0.0.1", 5432), listen_addresses="127.0.0.1",
            connect_address=HostPort("127.0.0.1", 5432),
            superuser=Credentials("postgres"), replication=Credentials("replicator")),
        watchdog=WatchdogConfig(mode=mode, device=device, safety_margin=1),
        tags={}, vip=None,
    )


class Host:
    """The other writers of the shared state, played by the test: a supervisor, a lease
    worker renewing every 0.5 s, a postgres worker and a network worker."""

    def __init__(self, device: str, mode: str = "required",
                 shm: SharedState | None = None, wakeups: Wakeups | None = None) -> None:
        self.shm = shm or SharedState.create(None)
        self.wakeups = wakeups or Wakeups()
        self.ctx = WorkerContext("watchdog", make_config(device, mode), self.shm, self.wakeups,
                                 logging.getLogger("pgwarden.watchdog"))
        self.renewing = True
        self.beating = {"supervisor": True, "postgres": True, "network": True}
        self.renewed_at = 0.0
        self.done = threading.Event()
        self.set_intent("disarmed")
        self.set_postgres(running=True, role="replica")
        self.set_vip(False)
        self.renew()
        self.bg = threading.Thread(target=self._background, daemon=True)
        self.bg.start()
        self.worker: WatchdogWorker | None = None
        self.thread: threading.Thread | None = None

    def set_intent(self, watchdog: str) -> None:
        self.shm.publish("supervisor", {
            "intent": {"epoch": 1, "watchdog": watchdog}, "paused": False,
            "dynamic": {"ttl": TTL, "loop_wait": LOOP_WAIT}, "watchdog_timeout": W})
        self.wakeups.poke("watchdog")

    def set_postgres(self, running: bool, role: str) -> None:
        self.shm.publish("postgres", {"running": running, "role": role, "state": "running"})

    def set_vip(self, held: bool) -> None:
        self.shm.publish("network", {"held": held, "vip": "10.251.7.10"})

    def renew(self) -> None:
        self.renewed_at = mono()
        self.shm.publish("lease", {"renewed_at": self.renewed_at,
                                   "lease_deadline": self.renewed_at + TTL, "ttl": TTL,
                                   "holds_leader": True})

    def _background(self) -> None:
        next_renewal = mono() + 0.5
        while not self.done.wait(0.1):
            for name, on in self.beating.items():
                if on:
                    self.shm.beat(name)
            if self.renewing and mono() >= next_renewal:
                self.renew()
                next_renewal += 0.5

    def start_worker(self) -> WatchdogWorker:
        self.worker = WatchdogWorker(self.ctx)
        self.worker.start()
        self.thread = threading.Thread(target=self.worker.loop, daemon=True)
        self.thread.start()
        return self.worker

    def stop_worker(self) -> None:
        """What SIGTERM does: leave the loop, then the exit path."""
        assert self.worker is not None and self.thread is not None
        self.worker.stop = True
        self.wakeups.poke("watchdog")
        self.thread.join(timeout=5)
        self.worker.finish()

    def section(self) -> dict[str, Any]:
        return self.shm.read("watchdog").data

    def wait_section(self, key: str, value: Any, timeout: float = 2.0) -> dict[str, Any]:
        deadline = mono() + timeout
        while mono() < deadline:
            d = self.section()
            if d.get(key) == value:
                return d
            time.sleep(0.01)
        raise AssertionError(f"watchdog section never had {key}={value!r}: {self.section()}")

    def close(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.stop_worker()
        self.done.set()
        self.bg.join(timeout=2)


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    made: list[Host] = []
    yield made
    for h in made:
        h.close()


def test_worker_arms_feeds_after_renewals_and_fences_when_they_stop(
        lab: Lab, hosts: list[Host], caplog: pytest.LogCaptureFixture) -> None:
    emu = start_emulator(lab, timeout=60, netns=False)
    host = Host(emu.device)
    hosts.append(host)
    caplog.set_level(logging.INFO, logger="pgwarden.watchdog")
    host.start_worker()
    d = host.wait_section("armed", False)
    assert d["usable"] is True and d["failed"] is False and d["mode"] == "required"
    host.set_intent("armed")
    d = host.wait_section("armed", True)
    assert d["timeout"] == W and d["usable"] is True
    assert emu.wait_event("timeout", 1)["timeout"] == W
    assert "effective timeout 2 s" in caplog.text
    time.sleep(2 * W)  # renewals every 0.5 s keep it fed well past the timeout
    assert emu.proc.poll() is None and emu.event("fired") is None
    assert mono() - host.section()["last_feed"] < 1.0
    host.renewing = False  # the DCS is gone: no more renewals
    deadline = host.renewed_at + TTL
    assert emu.proc.wait(timeout=W + 2) == 0
    fired = emu.wait_event("fired", 1)
    assert fired["fired_at"] <= deadline  # reset before the lease could expire (rule 3)
    assert abs(fired["fired_at"] - fired["last_keepalive"] - W) <= TOLERANCE
    assert fired["last_keepalive"] >= host.renewed_at  # the last feed followed the last renewal


def test_worker_stops_feeding_when_the_supervisor_freezes(
        lab: Lab, hosts: list[Host]) -> None:
    emu = start_emulator(lab, timeout=60, netns=False)
    host = Host(emu.device)
    hosts.append(host)
    host.set_intent("armed")
    host.start_worker()
    host.wait_section("armed", True)
    frozen_at = mono()
    host.beating["supervisor"] = False  # the brain froze; the lease worker keeps renewing
    assert emu.proc.wait(timeout=3.0 + W + 2) == 0
    fired = emu.wait_event("fired", 1)
    assert fired["fired_at"] - frozen_at <= 3.0 + W + TOLERANCE  # heartbeat limit + W
    assert "supervisor heartbeat stale" in (host.section()["reason"] or "")


def test_worker_disarms_only_after_demotion_and_vip_release(
        lab: Lab, hosts: list[Host]) -> None:
    emu = start_emulator(lab, timeout=60, netns=False)
    host = Host(emu.device)
    hosts.append(host)
    host.set_intent("armed")
    host.set_postgres(running=True, role="primary")
    host.set_vip(True)
    host.start_worker()
    host.wait_section("armed", True)
    host.set_intent("disarmed")  # the decision core demotes
    time.sleep(W + 0.5)  # still a primary with the VIP: armed, and still fed
    assert host.section()["armed"] is True and emu.event("disarmed") is None
    assert emu.event("fired") is None
    host.set_postgres(running=True, role="replica")  # demoted, but the VIP is still up
    time.sleep(0.5)
    assert host.section()["armed"] is True and emu.event("disarmed") is None
    host.set_vip(False)
    host.wait_section("armed", False)
    emu.wait_event("disarmed", 1)
    host.renewing = False
    time.sleep(W + 0.5)
    assert emu.proc.poll() is None and emu.event("fired") is None
    emu.stop()


def test_worker_exit_fences_a_primary_but_not_a_demoted_node(
        lab: Lab, hosts: list[Host]) -> None:
    primary_emu = start_emulator(lab, timeout=60, netns=False)
    replica_emu = start_emulator(lab, timeout=60, netns=False)
    primary, replica = Host(primary_emu.device), Host(replica_emu.device)
    hosts.extend([primary, replica])
    primary.set_postgres(running=True, role="primary")
    for h in (primary, replica):
        h.set_intent("armed")
        h.start_worker()
        h.wait_section("armed", True)
    replica.set_intent("disarmed")
    replica.wait_section("armed", False)
    replica.set_intent("armed")
    replica.wait_section("armed", True)
    replica.set_intent("disarmed")  # not yet disarmed when SIGTERM arrives: allowed
    primary.stop_worker()  # a primary's agent stops: no magic close
    replica.stop_worker()
    primary_emu.wait_event("closed_armed", 1)
    assert primary_emu.proc.wait(timeout=W + 2) == 0
    assert primary_emu.event("fired") is not None
    assert len([e for e in replica_emu.events() if e["event"] == "disarmed"]) == 2
    time.sleep(0.2)
    assert replica_emu.proc.poll() is None and replica_emu.event("fired") is None
    replica_emu.stop()


def run_worker_process(host: Host) -> int:
    """Fork a real watchdog worker process (`run(ctx)`, its SIGTERM handler included)."""
    pid = os.fork()
    if pid == 0:  # the child: only this thread exists here
        code = 1
        try:
            code = watchdog_worker.run(host.ctx)
        finally:
            os._exit(code)
    return pid


def test_sigterm_fences_a_primary_and_disarms_a_replica(lab: Lab, hosts: list[Host]) -> None:
    primary_emu = start_emulator(lab, timeout=60, netns=False)
    replica_emu = start_emulator(lab, timeout=60, netns=False)
    primary, replica = Host(primary_emu.device), Host(replica_emu.device)
    hosts.extend([primary, replica])
    primary.set_postgres(running=True, role="primary")
    pids = []
    for h in (primary, replica):
        h.set_intent("armed")
        pids.append(run_worker_process(h))
    try:
        for h in (primary, replica):
            h.wait_section("armed", True)
        replica.set_intent("disarmed")  # and it is a replica without the VIP: may disarm
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        for pid in pids:
            assert os.waitpid(pid, 0)[1] == 0
    finally:
        for pid in pids:  # only the children forked above
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    replica_emu.wait_event("disarmed", 1)
    primary_emu.wait_event("closed_armed", 1)
    assert primary_emu.proc.wait(timeout=W + 2) == 0  # the host of a dead primary agent resets
    assert replica_emu.proc.poll() is None and replica_emu.event("fired") is None
    replica_emu.stop()


def test_a_restarted_worker_takes_over_the_armed_device(lab: Lab, hosts: list[Host]) -> None:
    emu = start_emulator(lab, timeout=60, netns=False)
    first = Host(emu.device)
    hosts.append(first)
    first.set_postgres(running=True, role="primary")
    first.set_intent("armed")
    worker = first.start_worker()
    first.wait_section("armed", True)
    # the worker dies (SIGKILL-like): its fd closes without 'V', the timer keeps running
    worker.stop = True
    first.wakeups.poke("watchdog")
    assert first.thread is not None
    first.thread.join(timeout=2)
    assert worker.device is not None
    worker.device.abandon()
    emu.wait_event("closed_armed", 1)
    second = first.start_worker()  # the supervisor restarts it on the same shared state
    first.wait_section("armed", True)
    emu.wait_event("reopened", 1)
    time.sleep(2 * W)
    assert emu.proc.poll() is None and emu.event("fired") is None
    assert second.last_feed is not None and mono() - second.last_feed < 1.0
    emu.stop()


def test_worker_without_a_device_automatic_carries_on_required_fails(
        tmp_path: Path, hosts: list[Host]) -> None:
    missing = str(tmp_path / "watchdog")
    auto = Host(missing, mode="automatic")
    required = Host(missing, mode="required")
    off = Host(missing, mode="off")
    hosts.extend([auto, required, off])
    for h in (auto, required, off):
        h.set_intent("armed")
        h.start_worker()
    d = auto.wait_section("usable", False)
    assert d["failed"] is False and d["armed"] is False and "does not exist" in d["reason"]
    d = required.wait_section("failed", True)
    assert d["usable"] is False and d["armed"] is False
    d = off.wait_section("mode", "off")
    assert d["armed"] is False and d["failed"] is False
    assert d["reason"] == "watchdog disabled by configuration"
