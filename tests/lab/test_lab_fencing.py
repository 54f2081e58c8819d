"""Fencing, proven in the lab (issue 5's scenarios): a frozen agent, one frozen agent process,
a frozen PostgreSQL, a DCS outage with and without failsafe mode, workers killed below and above
the restart intensity, and the agent SIGKILLed on the primary.

Each test runs against one module-wide lab (3 database hosts, etcd, a client; the lab's
watchdog emulator resets a host when it is not fed) with synchronous replication, a static
`synchronous_standby_names = 'ANY 1 (n1, n2, n3)'`, so an acknowledged write has reached a
replica and losing it is a real failure. Writers record every attempt for the split-brain
checker (lab/splitbrain.py): one through the VIP every 10 ms, and one per database host
against that host's own address every 100 ms, so a host acknowledging writes while another
reigns shows up whether or not it still holds the VIP. A test fails when the checker reports an
overlap, a non-positive handover gap, a lost acknowledged write or a refused write present.

The lab is bootstrapped with asynchronous replication and switched to synchronous once every
replica streams (`Lab.set_sync`): an agent bootstrapping with the static setting waits forever
for its role creation to reach a standby that cannot exist yet (see the module's notes in
docs/fencing.md).

Every test starts from a healthy cluster (`primary` fixture: whatever a previous test left
frozen is thawed, dead hosts are booted, the dynamic config is reset), and the lab is always
torn down. PGWARDEN_FENCING_TIMELINES=FILE appends each measured timeline as a JSON line;
PGWARDEN_FENCING_KEEP=DIR keeps each test's agent, watchdog and writer logs.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pgwarden.lab import netns
from pgwarden.lab.acked_writer import read_log as read_acked_log
from pgwarden.lab.benchstats import log_time
from pgwarden.lab.common import BackgroundPoll
from pgwarden.lab.netlab import Lab, random_prefix
from pgwarden.lab.splitbrain import ACKED, Reign, Report
from pgwarden.lab.splitcheck import check_lab, spawn_acked_writer, stop_process

pytestmark = pytest.mark.lab

# The lab's defaults; the watchdog timeout W = TTL - SAFETY_MARGIN.
TTL, LOOP_WAIT, RETRY_TIMEOUT, SAFETY_MARGIN = 10, 2, 3, 5
WATCHDOG_TIMEOUT = TTL - SAFETY_MARGIN
PRIMARY_START_TIMEOUT = 300  # pgwarden's (and Patroni's) default: the baseline of every test
INTENSITY = 5  # supervisor/agent.py: more than 5 restarts within 60 s stop the node
DIRECT_SEQ = 10**8  # host k's direct writer numbers its writes from k * DIRECT_SEQ
DIRECT_INTERVAL = 0.1  # a replica refuses each write and the writer reconnects: keep it cheap
BASELINE = {"primary_start_timeout": PRIMARY_START_TIMEOUT, "failsafe_mode": False}


class FrozenPostgresNotFenced(AssertionError):
    """The agent let another member promote while its own frozen primary still existed."""


class FailsafePrimaryLost(AssertionError):
    """With failsafe mode on and every member reachable, the primary was still lost."""


class PrimaryEndpointDown(AssertionError):
    """The primary kept by failsafe mode does not answer 200 on GET /primary."""


class UnsafeIntensityStop(AssertionError):
    """Above the restart intensity the node did not stop safely."""


class AdoptionFailed(AssertionError):
    """A restarted agent did not adopt its running primary."""


# -- the lab ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(lab_ready: None) -> Iterator[Lab]:
    prefix = "pgwg" + random_prefix()[4:]
    lab = Lab(prefix, hosts=3, scope=f"lab{prefix}", owned=True, ttl=TTL, loop_wait=LOOP_WAIT,
              retry_timeout=RETRY_TIMEOUT, safety_margin=SAFETY_MARGIN)
    try:
        primary = lab.up(wait=120)
        assert primary is not None
        lab.wait_until(lambda: len(lab.streaming(primary)) == len(lab.db_hosts) - 1, 60,
                       "every replica streaming")
        lab.set_sync(True)
        yield lab
    finally:
        lab.down()


@pytest.fixture
def primary(lab: Lab, request: pytest.FixtureRequest) -> Iterator[str]:
    """A healthy, synchronous cluster whatever the previous test left; its primary."""
    _restore(lab)
    p = _healthy_again(lab)
    yield p
    keep = os.environ.get("PGWARDEN_FENCING_KEEP")
    if keep:
        _keep_logs(lab, Path(keep) / request.node.name)


def _restore(lab: Lab) -> None:
    for host in list(lab.state["frozen"]):
        lab.thaw(host)
    if lab.pid_of("dcs", "etcd") is None:
        lab.restart("dcs")
    for host in lab.db_hosts:
        # a reset host, an agent that exited, or a host whose watchdog no longer resets it
        if not lab.agent_alive(host) or not _emulator_resets(lab, host):
            lab.restart(host)
    lab.wait_until(lambda: _dcs_config(lab) is not None, 30, "etcd answering")
    config = _dcs_config(lab) or {}
    if any(config.get(k) != v for k, v in BASELINE.items()):
        _patch_dcs_config(lab, BASELINE)


def _healthy_again(lab: Lab, timeout: float = 120) -> str:
    """One primary, every other host streaming from it synchronously (a quorum member), the
    VIP on the primary."""
    primary = lab.wait_until(lambda: lab.healthy(), timeout, "a healthy cluster")
    others = sorted(h for h in lab.db_hosts if h != primary)
    lab.wait_until(lambda: lab.streaming(primary) == others, timeout, "every replica streaming")
    lab.wait_until(lambda: _quorum(lab, primary) == others, 30,
                   "every replica a synchronous (quorum) standby")
    lab.wait_until(lambda: lab.vip_holders() == [primary], 30, "the VIP on the primary")
    return primary


def _quorum(lab: Lab, primary: str) -> list[str]:
    rows = lab.sql(primary, "SELECT application_name FROM pg_stat_replication WHERE sync_state "
                   "IN ('quorum', 'sync') ORDER BY 1", check=False)
    return [r[0] for r in rows]


def _emulator_resets(lab: Lab, host: str) -> bool:
    """The host's watchdog emulator runs and would reset the host (it has --netns)."""
    if not lab.state.get("emulator"):
        return True
    pid = lab.pid_of(host, "emulator")
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"--netns" in cmdline


def _keep_logs(lab: Lab, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for host in lab.db_hosts:
        for name in ("pgwarden.log", "watchdog.log", "data.log"):
            src = lab.host_dir(host) / name
            if src.exists():
                shutil.copy(src, dest / f"{host}-{name}")
    for src in lab.host_dir("client").glob("*.jsonl"):
        shutil.copy(src, dest / src.name)


# -- the dynamic configuration in etcd ---------------------------------------------------


def _etcdctl(lab: Lab, *args: str) -> Any:
    endpoint = f"http://{lab.address('dcs')}:2379"
    return lab.exec_in("dcs", ["etcdctl", "--endpoints", endpoint,
                               "--command-timeout=3s", *args], timeout=10)


def _dcs_config(lab: Lab) -> dict[str, Any] | None:
    got = _etcdctl(lab, "get", "--print-value-only", f"/service/{lab.scope}/config")
    try:
        value = json.loads(got.stdout) if got.returncode == 0 else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _patch_dcs_config(lab: Lab, changes: dict[str, Any]) -> None:
    """Change the dynamic configuration in etcd, as `patronictl edit-config` would; every
    agent sees it within a loop."""
    value = _dcs_config(lab)
    assert value is not None, "cannot read the config key"
    value.update(changes)
    put = _etcdctl(lab, "put", f"/service/{lab.scope}/config",
                   json.dumps(value, separators=(",", ":")))
    assert put.returncode == 0, put.stderr
    time.sleep(LOOP_WAIT + 1)


def _leader_key(lab: Lab) -> str | None:
    got = _etcdctl(lab, "get", "--print-value-only", f"/service/{lab.scope}/leader")
    return got.stdout.strip() or None if got.returncode == 0 else None


# -- the writers -------------------------------------------------------------------------


@dataclass
class Writers:
    """The VIP writer (the lab's one client writer) and a direct writer per database host, all
    in the client namespace, on a table of the test's own (sequence numbers restart at 1)."""

    lab: Lab
    table: str
    logs: dict[str, Path] = field(default_factory=dict)  # "vip" or host -> log
    procs: list[Any] = field(default_factory=list)

    def start(self) -> None:
        d = self.lab.host_dir("client")
        self.logs["vip"] = d / f"{self.table}-vip.jsonl"
        self.lab.start_acked_writer("vip", self.logs["vip"], table=self.table, first_seq=1)
        for k, host in enumerate(self.lab.db_hosts, start=1):
            self.logs[host] = d / f"{self.table}-{host}.jsonl"
            self.procs.append(spawn_acked_writer(
                self.lab, "client", self.logs[host], first_seq=k * DIRECT_SEQ, target=host,
                table=self.table, interval=DIRECT_INTERVAL))

    def stop(self) -> None:
        try:
            for proc in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    stop_process(proc)  # one stuck writer must not keep the others running
        finally:
            self.procs.clear()
            self.lab.stop_writer()

    def acks(self, source: str = "vip", host: str | None = None) -> list[Any]:
        return [w for w in read_acked_log(self.logs[source])
                if w.outcome == ACKED and host in (None, w.host)]

    def wait_acks(self, n: int = 50, timeout: float = 30) -> None:
        """Writes acknowledged through the VIP and directly by the primary."""
        self.lab.wait_until(lambda: len(self.acks()) >= n, timeout, "writes through the VIP")

    def first_ack_after(self, t: float, host: str, source: str = "vip") -> float | None:
        ts = [w.t_ack for w in self.acks(source, host) if w.t_ack is not None and w.t_ack > t]
        return min(ts) if ts else None

    def check(self, final: str, fault_time: float) -> Report:
        return check_lab(self.lab, list(self.logs.values()), final, fault_time=fault_time,
                         table=self.table)


@contextlib.contextmanager
def _writers(lab: Lab, table: str) -> Iterator[Writers]:
    w = Writers(lab, table)
    try:
        w.start()
        w.wait_acks()
        yield w
    finally:
        w.stop()


def _judge(report: Report) -> None:
    print("\n" + report.describe(sync=True))
    assert report.ok(sync=True), report.describe(sync=True)
    assert all(h.gap > 0 for h in report.handovers)


def _reign(report: Report, host: str, before: float | None = None,
           after: float | None = None) -> Reign:
    """`host`'s reign that began before (or after) an instant."""
    for r in report.reigns:
        if r.host == host and (before is None or r.first_ack < before) \
                and (after is None or r.first_ack > after):
            return r
    raise AssertionError(f"no reign of {host} (before {before}, after {after}):\n"
                         + report.describe(sync=True))


# -- observing: the VIP, the logs, the lease ---------------------------------------------


class VipWatch(BackgroundPoll):
    """Which hosts carry the VIP, polled every 0.1 s in a thread: (mono, holders) changes."""

    def __init__(self, lab: Lab) -> None:
        super().__init__("vip-watch")
        self.lab = lab
        self.changes: list[tuple[float, tuple[str, ...]]] = []

    def poll(self) -> None:
        t = time.monotonic()
        holders = tuple(self.lab.vip_holders())
        if not self.changes or holders != self.changes[-1][1]:
            self.changes.append((t, holders))

    def left(self, host: str, after: float) -> float | None:
        """When `host` stopped carrying the VIP (first poll without it after `after`)."""
        for t, holders in self.changes:
            if t > after and host not in holders:
                return t
        return None

    def arrived(self, host: str, after: float) -> float | None:
        for t, holders in self.changes:
            if t > after and host in holders:
                return t
        return None

    def max_holders(self) -> int:
        return max((len(h) for _, h in self.changes), default=0)


def _mono_of_log_time(line: str) -> float | None:
    """An agent log line's time (wall clock, to the millisecond) on CLOCK_MONOTONIC."""
    wall = log_time(line)
    return None if wall is None else wall - (time.time() - time.monotonic())


def _log_lines(lab: Lab, host: str, pattern: str, after: float) -> list[str]:
    """The host's agent log lines matching `pattern` after `after` (the log file is appended
    to by every agent that ran on the host)."""
    out = []
    rx = re.compile(pattern)
    with contextlib.suppress(OSError):
        for line in lab.log_path(host).read_text(errors="replace").splitlines():
            t = _mono_of_log_time(line)
            if t is not None and t >= after - 0.001 and rx.search(line):
                out.append(line)
    return out


def _log_times(lab: Lab, host: str, pattern: str, after: float) -> list[float]:
    """CLOCK_MONOTONIC times of the host's agent log lines matching `pattern` after `after`
    (to the millisecond the log has)."""
    return [t for line in _log_lines(lab, host, pattern, after)
            if (t := _mono_of_log_time(line)) is not None]


def _first_log(lab: Lab, host: str, pattern: str, after: float) -> float | None:
    ts = _log_times(lab, host, pattern, after)
    return ts[0] if ts else None


def _watchdog_events(lab: Lab, host: str, event: str, after: float) -> list[dict[str, Any]]:
    out = []
    with contextlib.suppress(OSError):
        for line in (lab.host_dir(host) / "watchdog.log").read_text().splitlines():
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if rec.get("event") == event and float(rec.get("mono", 0)) > after:
                    out.append(rec)
    return out


def _section_age(lab: Lab, host: str, section: str) -> float:
    """Seconds since that process of the host's agent last beat (inf when unknown)."""
    view = lab.agent_section(host, section)
    return float("inf") if view is None else view.age()


def _lease(lab: Lab, host: str) -> dict[str, Any]:
    """The host's agent's lease section as last published (also after the agent was frozen or
    killed)."""
    view = lab.agent_section(host, "lease")
    return {} if view is None else dict(view.data)


class LeaseWatch(BackgroundPoll):
    """The deadline of the lease a host held at the fault, as its agent last published it
    (renewals go on while e.g. only the supervisor is frozen), polled every 0.1 s from the
    shared state. A lease worker restarted later grants a new lease: that one is not the
    lease the other members had to wait for, so it is ignored."""

    def __init__(self, lab: Lab, host: str) -> None:
        super().__init__("lease-watch")
        self.lab, self.host = lab, host
        first = _lease(lab, host)
        self.lease_id = first.get("lease_id")
        self.deadline = float(first.get("lease_deadline") or 0.0)

    def poll(self) -> None:
        d = _lease(self.lab, self.host)
        if d.get("lease_id") == self.lease_id:
            self.deadline = max(self.deadline, float(d.get("lease_deadline") or 0.0))


def _writable_primary(lab: Lab, host: str) -> bool:
    """The host's PostgreSQL answers as a primary (pg_is_in_recovery false)."""
    rows = lab.sql(host, "SELECT pg_is_in_recovery()", check=False, timeout=2)
    return bool(rows) and rows[0][0] is False


def _new_primary(lab: Lab, others: list[str], writers: Writers, after: float,
                 timeout: float) -> str:
    """One of `others` is primary and has acknowledged a write through the VIP."""
    new = lab.wait_until(lambda: lab.healthy(others), timeout, "a new primary")
    lab.wait_until(lambda: writers.first_ack_after(after, new) is not None, 30,
                   f"a write through the VIP acknowledged by {new}")
    return str(new)


def _record_timeline(name: str, timeline: dict[str, Any]) -> None:
    print(f"\ntimeline {name}: " + json.dumps(timeline))
    path = os.environ.get("PGWARDEN_FENCING_TIMELINES")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"scenario": name, **timeline}) + "\n")


def _rel(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 3)


def _settings() -> dict[str, Any]:
    return {"ttl": TTL, "loop_wait": LOOP_WAIT, "retry_timeout": RETRY_TIMEOUT,
            "safety_margin": SAFETY_MARGIN, "watchdog_timeout": WATCHDOG_TIMEOUT,
            "replication": "synchronous ANY 1"}


# -- 1. the whole agent frozen -----------------------------------------------------------


def test_frozen_agent_is_reset_before_its_lease_expires(lab: Lab, primary: str) -> None:
    """Every pgwarden process of the primary SIGSTOPped, PostgreSQL left running: nothing
    feeds the watchdog, which resets the host before the lease can expire; a replica takes
    over after the expiry."""
    old = primary
    others = [h for h in lab.db_hosts if h != old]
    with VipWatch(lab) as vip, _writers(lab, "fence_agent_frozen") as w, \
            LeaseWatch(lab, old) as lease:
        t_fault = time.monotonic()
        lab.freeze(old, "agent")
        new = _new_primary(lab, others, w, t_fault, TTL + 30)
        lease_deadline = lease.deadline
        time.sleep(1)  # the new primary's first writes, and nothing else from the old one
    fired = _watchdog_events(lab, old, "fired", t_fault)
    assert fired, f"the watchdog of {old} did not fire"
    fired_at = float(fired[0]["fired_at"])
    assert lab.postmaster_pid(old) is None  # the reset took PostgreSQL with it
    report = w.check(new, t_fault)
    _judge(report)
    old_reign = _reign(report, old, before=t_fault)
    new_reign = _reign(report, new, after=t_fault)
    gone = _first_log(lab, new, r"the cluster has no leader", t_fault)
    # the order the fencing rules promise: reset, then the lease runs out, then the takeover
    assert fired_at < lease_deadline, (fired_at, lease_deadline)
    assert old_reign.last_ack <= fired_at + 0.2  # (the reset takes some ms to kill all)
    assert new_reign.first_ack > lease_deadline
    _record_timeline("1 agent frozen", {
        "settings": _settings(),
        "fault": 0.0,
        "last_ack_old": _rel(old_reign.last_ack, t_fault),
        "vip_dropped": _rel(vip.left(old, t_fault), t_fault),
        "watchdog_last_feed": _rel(float(fired[0]["last_keepalive"]), t_fault),
        "watchdog_reset": _rel(fired_at, t_fault),
        "lease_deadline": _rel(lease_deadline, t_fault),
        "leader_key_gone_seen_by_new": _rel(gone, t_fault),
        "promote": _rel(_first_log(lab, new, r"promoting: I am", t_fault), t_fault),
        "vip_on_new": _rel(vip.arrived(new, t_fault), t_fault),
        "first_ack_new": _rel(new_reign.first_ack, t_fault),
        "gap": round(new_reign.first_ack - old_reign.last_ack, 3),
    })


# -- 2. one process of the agent frozen --------------------------------------------------


@pytest.mark.parametrize("what", ["supervisor", "lease-worker", "watchdog-worker"])
def test_one_frozen_agent_process_never_leaves_an_unfenced_primary(
        lab: Lab, primary: str, what: str) -> None:
    """Only the supervisor, only the lease worker or only the watchdog worker SIGSTOPped: the
    node is reset by its watchdog or demotes itself before its lease deadline, never stays a
    primary that nothing fences; the cluster ends with one primary."""
    old = primary
    others = [h for h in lab.db_hosts if h != old]
    with VipWatch(lab) as vip, _writers(lab, f"fence_frozen_{what.replace('-', '_')}") as w, \
            LeaseWatch(lab, old) as lease:
        t_fault = time.monotonic()
        assert lab.freeze(old, what), f"no {what} to freeze on {old}"
        new = _new_primary(lab, others, w, t_fault, TTL + 30)
        lease_deadline = lease.deadline
        fired = _watchdog_events(lab, old, "fired", t_fault)
        demote_decided = _first_log(lab, old, r"supervisor: demoting", t_fault)
        demote_done = _first_log(lab, old, r"demote: done", t_fault)
        # fenced one way or the other (the postmaster gone, or a replica now), before the
        # lease could expire
        fenced_at = float(fired[0]["fired_at"]) if fired else demote_done
        assert fenced_at is not None, f"{old} was neither reset nor demoted"
        assert fenced_at < lease_deadline
        assert not _writable_primary(lab, old), f"{old} still runs as a writable primary"
        # a frozen process that wakes up must not make the node a primary again
        lab.thaw(old)
        time.sleep(3)
        live = [h for h in lab.db_hosts if lab.agent_alive(h)]
        assert lab.wait_until(lambda: lab.primary(live), 30, "one primary") == new
    report = w.check(new, t_fault)
    _judge(report)
    assert vip.max_holders() <= 1
    old_reign = _reign(report, old, before=t_fault)
    new_reign = _reign(report, new, after=t_fault)
    assert old_reign.last_ack < fenced_at + 0.2  # (a reset takes some ms to kill everything)
    # rule 1: unwritable by the lease deadline minus the safety margin; the watchdog, fed
    # only once a renewal has been published and seen (tens of ms, polled every 0.2 s), fires
    # that delay after it at the latest
    assert old_reign.last_ack < lease_deadline - SAFETY_MARGIN + 0.5
    how = (f"reset by the watchdog {fenced_at - t_fault:.2f} s" if fired else
           f"demoted itself (decided {_rel(demote_decided, t_fault)} s, done "
           f"{fenced_at - t_fault:.2f} s)")
    print(f"{what} of {old} frozen: {how} after the fault; lease deadline "
          f"{lease_deadline - t_fault:.2f} s; VIP gone {_rel(vip.left(old, t_fault), t_fault)} s; "
          f"last write acknowledged by {old} {old_reign.last_ack - t_fault:.2f} s; {new}'s first "
          f"{new_reign.first_ack - t_fault:.2f} s (gap {new_reign.first_ack - old_reign.last_ack:.2f} s)")


# -- 3. PostgreSQL frozen ----------------------------------------------------------------


def test_frozen_postgres_is_fenced_before_a_replica_promotes(lab: Lab, primary: str) -> None:
    """The primary's postmaster and its children SIGSTOPped while the agent lives: the agent
    keeps answering (its queries are time-bounded), fails over once primary_start_timeout has
    passed, and the frozen database is fenced (killed, or the host reset) before a replica
    promotes. When the frozen server wakes up it must not acknowledge anything."""
    old = primary
    others = [h for h in lab.db_hosts if h != old]
    start_timeout = 10  # 300 s by default: fail over within this test's time budget
    _patch_dcs_config(lab, {"primary_start_timeout": start_timeout})
    pm = lab.postmaster_pid(old)
    assert pm is not None
    pm_gone: list[float] = []
    with VipWatch(lab) as vip, _writers(lab, "fence_pg_frozen") as w:
        t_fault = time.monotonic()
        lab.freeze(old, "postgres")
        # the agent does not hang on its frozen server: its REST API and decisions go on
        time.sleep(4)
        status, _ = lab.api_get(old, "/patroni", timeout=2.0)
        assert status, f"{old}'s REST API did not answer with its PostgreSQL frozen"
        assert _section_age(lab, old, "supervisor") < 3.0, "the supervisor stopped cycling"
        assert _section_age(lab, old, "postgres") < 3.0, "the postgres worker hangs"

        def new_primary_or_pm_gone() -> str | None:
            if not netns.in_ns(pm, lab.ns(old)) and not pm_gone:
                pm_gone.append(time.monotonic())
            return lab.healthy(others)

        new = lab.wait_until(new_primary_or_pm_gone, start_timeout + TTL + 30, "a new primary")
        promoted = _first_log(lab, new, r"promoting: I am", t_fault)
        fenced = _first_log(lab, old, r"postgres: stop: done", t_fault)
        pm_alive_after_promotion = lab.postmaster_pid(old) == pm and not pm_gone
        assert promoted is not None
        # noticed within a sample's timeout (2 s), then primary_start_timeout, then a race
        assert promoted - t_fault < start_timeout + 8
        lab.wait_until(lambda: w.first_ack_after(t_fault, new) is not None, 30,
                       f"a write through the VIP acknowledged by {new}")
        # the stall ends: the old server wakes up (unless it was fenced) and must not take
        # writes; the direct writer to its address is still trying
        lab.thaw(old)
        time.sleep(5)
        _healthy_again(lab, 90)
    report = w.check(new, t_fault)
    _judge(report)
    new_reign = _reign(report, new, after=t_fault)
    print(f"PostgreSQL of {old} frozen: {new} promoted {_rel(promoted, t_fault)} s after, "
          f"first write {new_reign.first_ack - t_fault:.2f} s; VIP gone from {old} at "
          f"{_rel(vip.left(old, t_fault), t_fault)} s; frozen postmaster killed "
          f"{_rel(fenced, t_fault)} s (seen gone {_rel(pm_gone[0] if pm_gone else None, t_fault)}"
          " s)")
    if pm_alive_after_promotion or fenced is None or fenced > promoted:
        lines = "\n".join(_log_lines(lab, old, r"primary_start_timeout|leader key|watchdog|"
                                     r"stop|kill", t_fault)[-12:])
        raise FrozenPostgresNotFenced(
            f"{new} promoted at {_rel(promoted, t_fault)} s, {old}'s frozen postmaster (pid "
            f"{pm}) stopped at {_rel(fenced, t_fault)} s; {old}'s log:\n{lines}")


# -- 4. DCS outage -----------------------------------------------------------------------


def _dcs_outage(lab: Lab) -> float:
    """etcd SIGSTOPped (a hung DCS: calls time out rather than fail fast)."""
    t = time.monotonic()
    lab.freeze("dcs", "all")
    return t


def _dcs_back(lab: Lab) -> float:
    """etcd killed and started again on its data (as after a crash of the DCS host)."""
    lab.crash("dcs")
    lab.restart("dcs")
    return time.monotonic()


def test_dcs_outage_without_failsafe_demotes_before_the_lease_deadline(
        lab: Lab, primary: str) -> None:
    """etcd hung, then killed and restarted: the primary demotes and drops the VIP before its
    lease deadline (rule 1 and 2: at the deadline minus the safety margin); the replicas keep
    running as replicas; when etcd returns the cluster elects a primary again and heals."""
    old = primary
    others = [h for h in lab.db_hosts if h != old]
    with VipWatch(lab) as vip, _writers(lab, "fence_dcs_outage") as w, \
            LeaseWatch(lab, old) as lease:
        t_fault = _dcs_outage(lab)
        time.sleep(1)
        # the replicas still stream from the primary while it is one
        assert sorted(lab.streaming(old)) == others
        lab.wait_until(lambda: not _writable_primary(lab, old), TTL, f"{old} demoted")
        lease_deadline = lease.deadline
        demoted = _first_log(lab, old, r"supervisor: demoting", t_fault)
        assert demoted is not None
        # hold the outage past the lease's expiry: nobody may become primary meanwhile
        lab.wait_until(lambda: time.monotonic() > lease_deadline + 2, TTL + 5, "the lease over")
        for h in lab.db_hosts:
            assert not _writable_primary(lab, h), f"{h} is a primary during the DCS outage"
        # replicas kept running, in recovery, with the data they had
        for h in others:
            assert lab.sql(h, "SELECT pg_is_in_recovery()") == [[True]]
        t_back = _dcs_back(lab)
        new = _healthy_again(lab, 90)
        lab.wait_until(lambda: w.first_ack_after(t_back, new) is not None, 30,
                       f"a write through the VIP acknowledged by {new}")
    report = w.check(new, t_fault)
    _judge(report)
    old_reign = _reign(report, old, before=t_fault)
    new_reign = _reign(report, new, after=t_back)
    vip_left = vip.left(old, t_fault)
    assert vip_left is not None and vip_left < lease_deadline - SAFETY_MARGIN + 0.3
    assert old_reign.last_ack < lease_deadline - SAFETY_MARGIN
    assert demoted < lease_deadline - SAFETY_MARGIN
    assert not _watchdog_events(lab, old, "fired", t_fault)  # it stopped cleanly instead
    _record_timeline("4 DCS outage, no failsafe", {
        "settings": _settings(),
        "fault": 0.0,
        "dcs_call_failed_old": _rel(_first_log(lab, old, r"DCS call failed", t_fault), t_fault),
        "demote_decision": _rel(demoted, t_fault),
        "vip_dropped": _rel(vip_left, t_fault),
        "last_ack_old": _rel(old_reign.last_ack, t_fault),
        "lease_deadline": _rel(lease_deadline, t_fault),
        "watchdog_disarmed": _rel(next((float(e["mono"]) for e in _watchdog_events(
            lab, old, "disarmed", t_fault)), None), t_fault),
        "etcd_back": _rel(t_back, t_fault),
        "new_leader_key": _rel(_first_log(lab, new, r"leader key acquired|resuming lease",
                                          t_back), t_fault),
        "first_ack_new": _rel(new_reign.first_ack, t_fault),
        "new_primary": "same host" if new == old else "another host",
        "gap": round(new_reign.first_ack - old_reign.last_ack, 3),
    })


@pytest.mark.parametrize("phase", [
    pytest.param(0.05, id="hang-just-after-a-renewal"),
    # the first failsafe round must not wait for a DCS call to time out: here that would be
    # renew interval + call timeout (2 + 2.5 s) after the renewal, past the demotion (4 s)
    pytest.param(1.8, id="hang-just-before-a-renewal"),
])
def test_dcs_outage_with_failsafe_keeps_the_primary(lab: Lab, primary: str,
                                                    phase: float) -> None:
    """failsafe_mode on and every member reachable: through an etcd outage longer than the
    ttl the primary keeps running and acknowledging (every other member promised, through
    POST /failsafe, not to race), whenever the hang begins: `phase` seconds after one of the
    primary's lease renewals (they come every 2 s)."""
    old = primary
    _patch_dcs_config(lab, {"failsafe_mode": True})
    lab.wait_until(lambda: _failsafe_key(lab), 15, "the leader writing the failsafe key")
    outage = TTL + 8
    with VipWatch(lab) as vip, _writers(lab, f"fence_dcs_failsafe_{int(phase * 100)}") as w:
        renewed = _next_renewal(lab, old)
        while time.monotonic() < renewed + phase:
            time.sleep(0.005)
        t_fault = _dcs_outage(lab)
        lab.wait_until(lambda: time.monotonic() > t_fault + outage, outage + 5, "the outage")
        demoted = _first_log(lab, old, r"supervisor: demoting", t_fault)
        fired = _watchdog_events(lab, old, "fired", t_fault)
        failsafe = _first_log(lab, old, r"continuing as the leader because failsafe", t_fault)
        call_failed = _first_log(lab, old, r"DCS call failed", t_fault)
        lost = demoted is not None or bool(fired)
        writable = _writable_primary(lab, old)
        # what a load balancer asks (HAProxy's `option httpchk GET /primary`)
        answers_primary = lab.api_get(old, "/primary", timeout=2.0)[0]
        t_back = _dcs_back(lab)
        if fired:
            lab.restart(old)  # reset: boot it again
        final = _healthy_again(lab, 90)
        lab.wait_until(lambda: w.first_ack_after(t_back, final) is not None, 30, "writes again")
    report = w.check(final, t_fault)
    _judge(report)  # no split brain either way
    timings = (f"the hang began {t_fault - renewed:.2f} s after a renewal; after that renewal: "
               f"first DCS call failed {_rel(call_failed, renewed)} s, failsafe confirmed "
               f"{_rel(failsafe, renewed)} s, demotion decided {_rel(demoted, renewed)} s "
               f"(deadline {TTL - SAFETY_MARGIN - min(1.0, SAFETY_MARGIN / 2):g} s), watchdog "
               f"reset {_rel(float(fired[0]['fired_at']), renewed) if fired else None} s "
               f"(last fed {_rel(float(fired[0]['last_keepalive']), renewed) if fired else None}"
               " s)")
    print(f"failsafe, {old}: {timings}")
    if lost:
        raise FailsafePrimaryLost(
            f"{old} " + ("was reset by its watchdog" if fired else "demoted")
            + f" during the outage despite failsafe_mode: {timings}")
    assert writable, f"{old} is no longer a writable primary at the end of the outage"
    assert final == old
    reign = _reign(report, old, before=t_fault)
    assert [r.host for r in report.reigns] == [old]  # one reign, the same timeline
    # it kept acknowledging past the lease's deadline (renewed last before the outage)
    vip_acks = [a.t_ack for a in w.acks("vip") if t_fault < a.t_ack < t_back]
    assert vip_acks and max(vip_acks) > t_fault + TTL + 2
    longest = max(b - a for a, b in itertools.pairwise([t_fault, *vip_acks, t_back]))
    assert vip.left(old, t_fault) is None
    print(f"failsafe: {old} acknowledged {len(vip_acks)} writes through the VIP during a "
          f"{t_back - t_fault:.1f} s etcd outage (longest pause {longest:.2f} s); reign "
          f"{reign.name} throughout; GET /primary answered {answers_primary} at the end")
    if answers_primary != 200:
        raise PrimaryEndpointDown(
            f"{old} kept the primary through the outage but GET /primary answered "
            f"{answers_primary} {outage} s into it: a load balancer checking /primary would "
            "have taken the failsafe primary out of service")


def _next_renewal(lab: Lab, host: str) -> float:
    """Wait for the host's next lease renewal; when it was sent (CLOCK_MONOTONIC)."""
    before = _lease(lab, host).get("renewed_at")
    got = lab.wait_until(lambda: (r := _lease(lab, host).get("renewed_at")) != before and r,
                         10, f"a lease renewal of {host}", step=0.005)
    return float(got)


def _failsafe_key(lab: Lab) -> dict[str, Any] | None:
    got = _etcdctl(lab, "get", "--print-value-only", f"/service/{lab.scope}/failsafe")
    try:
        value = json.loads(got.stdout) if got.returncode == 0 and got.stdout.strip() else None
    except ValueError:
        return None
    return value if isinstance(value, dict) and len(value) == len(lab.db_hosts) else None


# -- 5. workers killed -------------------------------------------------------------------


def _kill_worker(lab: Lab, host: str, worker: str, previous: int | None,
                 since: float | None = None) -> int | None:
    """SIGKILL the worker once the supervisor has replaced `previous`; its pid. With `since`:
    None instead once the agent logged (after `since`) that it stops the node."""
    def ready() -> int | None:
        p = lab.worker_pids(host).get(worker)
        if p and p != previous:
            return p
        if since is not None and _log_lines(lab, host, r"stopping the node safely", since):
            return -1
        return None

    pid = lab.wait_until(ready, 15, f"the {worker} worker of {host} (re)started")
    if pid == -1:
        return None
    netns.signal_pids([pid], signal.SIGKILL, lab.ns(host))
    return int(pid)


def test_worker_killed_below_the_restart_intensity_is_restarted(lab: Lab, primary: str) -> None:
    """The lease and postgres workers of the primary SIGKILLed, 4 restarts in all (the limit
    is more than 5 within 60 s): each is restarted, the node stays the primary on the same
    timeline and keeps acknowledging writes."""
    old = primary
    timeline = lab.timeline(old)
    # counted since the agent started: earlier scenarios may have restarted its workers
    before = _worker_restarts(lab, old)
    with _writers(lab, "fence_kill_below") as w:
        t_fault = time.monotonic()
        prev: dict[str, int | None] = {"lease": None, "postgres": None}
        for worker in ("lease", "postgres", "lease", "postgres"):
            prev[worker] = _kill_worker(lab, old, worker, prev[worker])
            time.sleep(1)
        for worker in ("lease", "postgres"):
            lab.wait_until(lambda wk=worker: lab.worker_pids(old).get(wk) not in (None, prev[wk]),
                           15, f"the {worker} worker restarted")
        t_last = time.monotonic()
        lab.wait_until(lambda: w.first_ack_after(t_last + 1, old) is not None, 15,
                       "writes acknowledged after the last restart")
        assert lab.agent_alive(old)
        assert lab.primary() == old and lab.timeline(old) == timeline
        after = _worker_restarts(lab, old)
        restarts = {k: after.get(k, 0) - before.get(k, 0) for k in ("lease", "postgres")}
    report = w.check(old, t_fault)
    _judge(report)
    assert [r.host for r in report.reigns] == [old]
    assert restarts.get("lease") == 2 and restarts.get("postgres") == 2, restarts
    gaps = _ack_pauses(w, t_fault)
    print(f"4 worker kills on {old}: restarts {restarts}, still primary on timeline "
          f"{timeline}; longest pause between writes through the VIP {max(gaps):.2f} s")


def _worker_restarts(lab: Lab, host: str) -> dict[str, int]:
    """The supervisor's restart count of each worker, as /patroni reports it."""
    return dict((lab.api_get(host, "/patroni")[1] or {}).get("pgwarden", {}).get(
        "worker_restarts", {}))


def _ack_pauses(w: Writers, after: float) -> list[float]:
    ts = sorted(a.t_ack for a in w.acks("vip") if a.t_ack > after)
    return [b - a for a, b in itertools.pairwise(ts)] or [0.0]


def test_worker_killed_above_the_restart_intensity_stops_the_node_safely(
        lab: Lab, primary: str) -> None:
    """The postgres worker of the primary SIGKILLed again and again: once the supervisor has
    restarted workers more than 5 times within 60 s it stops the node safely (PostgreSQL
    stopped, VIP gone, leader key released, watchdog disarmed), says why in its log and exits
    with status 3; another member takes over at once (the key was released, not expired)."""
    old = primary
    others = [h for h in lab.db_hosts if h != old]
    with VipWatch(lab) as vip, _writers(lab, "fence_kill_above") as w:
        t_fault = time.monotonic()
        kills, prev = 0, None
        while lab.agent_alive(old) and kills < INTENSITY + 3:
            killed = _kill_worker(lab, old, "postgres", prev, since=t_fault)
            if killed is None:
                break  # not restarted: the node is stopping
            prev, kills = killed, kills + 1
        status = lab.agent_exit_status(old, timeout=90)
        t_exit = time.monotonic()
        new = _new_primary(lab, others, w, t_fault, TTL + 30)
    report = w.check(new, t_fault)
    _judge(report)
    old_reign = _reign(report, old, before=t_fault)
    new_reign = _reign(report, new, after=t_fault)
    stopped = _log_lines(lab, old, r"stopped: more than 5 worker restarts within 60 s", t_fault)
    problems = []
    if status != 3:
        problems.append(f"exit status {status}, not 3")
    if not stopped:
        problems.append("no 'stopped: more than 5 worker restarts' line in the log")
    if lab.postmaster_pid(old) is not None:
        problems.append("PostgreSQL still runs")
    if vip.left(old, t_fault) is None:
        problems.append("the VIP was never dropped")
    if not _log_lines(lab, old, r"leader key released", t_fault):
        problems.append("the leader key was not released (it had to expire)")
    fired = _watchdog_events(lab, old, "fired", t_fault)
    if fired or not _watchdog_events(lab, old, "disarmed", t_fault):
        problems.append("the watchdog was not disarmed" + (" (it reset the host)" if fired else ""))
    print(f"{kills} kills of the postgres worker of {old}: exit status {status} "
          f"{t_exit - t_fault:.2f} s after the first; VIP gone at "
          f"{_rel(vip.left(old, t_fault), t_fault)} s; {new} took over, first write "
          f"{new_reign.first_ack - t_fault:.2f} s (gap {new_reign.first_ack - old_reign.last_ack:.2f} s)")
    if problems:
        tail = "\n".join(_log_lines(lab, old, r"supervisor|watchdog|lease:|stop", t_fault)[-25:])
        raise UnsafeIntensityStop("; ".join(problems) + f"\n{old}'s log:\n{tail}")
    # The killer goes on during the safe stop (the supervisor restarts the postgres worker
    # once more to stop PostgreSQL, and again if it is killed again): the node must still
    # stop safely, which the checks above prove, whatever the number of kills. Restarts of
    # the previous test (within the same 60 s window) count too, so fewer kills may do.
    assert kills >= 1
    # released, not expired: the takeover did not wait for the ttl
    assert new_reign.first_ack - old_reign.last_ack < TTL


# -- 6. the agent SIGKILLed --------------------------------------------------------------


def test_agent_killed_on_the_primary_gets_the_host_reset(lab: Lab, primary: str) -> None:
    """SIGKILL of the primary's supervisor (systemd KillMode=process): the workers die with it
    (the network worker drops the VIP on its way out), PostgreSQL keeps running, nothing
    feeds the watchdog any more and it resets the host; a replica takes over after the
    lease."""
    old = primary
    others = [h for h in lab.db_hosts if h != old]
    pm = lab.postmaster_pid(old)
    with VipWatch(lab) as vip, _writers(lab, "fence_agent_killed") as w, \
            LeaseWatch(lab, old) as lease:
        t_fault = time.monotonic()
        assert lab.kill_agent(old)
        assert lab.postmaster_pid(old) == pm  # PostgreSQL outlives its agent ...
        new = _new_primary(lab, others, w, t_fault, TTL + 30)
        lease_deadline = lease.deadline
    fired = _watchdog_events(lab, old, "fired", t_fault)
    assert fired, f"the watchdog of {old} did not fire"
    fired_at = float(fired[0]["fired_at"])
    assert lab.postmaster_pid(old) is None  # ... until the reset
    report = w.check(new, t_fault)
    _judge(report)
    old_reign = _reign(report, old, before=t_fault)
    new_reign = _reign(report, new, after=t_fault)
    assert fired_at < lease_deadline < new_reign.first_ack
    print(f"agent of {old} SIGKILLed: VIP gone at {_rel(vip.left(old, t_fault), t_fault)} s, "
          f"last write acknowledged by {old} at {old_reign.last_ack - t_fault:.2f} s "
          f"(directly), watchdog reset at {fired_at - t_fault:.2f} s, lease deadline "
          f"{lease_deadline - t_fault:.2f} s, {new}'s first write {new_reign.first_ack - t_fault:.2f} s")


def test_restarted_agent_adopts_its_running_primary(lab: Lab, primary: str) -> None:
    """On a host whose watchdog does not reset it: the agent SIGKILLed and started again while
    its leader key still lives. It adopts the running PostgreSQL (same postmaster, same
    timeline), no other member promotes, and writes go on through the VIP."""
    old = primary
    pm, timeline = lab.postmaster_pid(old), lab.timeline(old)
    assert pm is not None and timeline is not None
    with VipWatch(lab) as vip, _writers(lab, "fence_agent_adopt") as w:
        t_fault = time.monotonic()
        assert lab.kill_agent(old)
        lab.start_agent(old, watchdog_resets=False)
        t_started = time.monotonic()
        assert _leader_key(lab) == old  # the lock is still its own
        final = _healthy_again(lab, TTL + 60)
        lab.wait_until(lambda: w.first_ack_after(t_started, final) is not None, 30,
                       "writes through the VIP again")
    report = w.check(final, t_fault)
    _judge(report)  # whatever happened, never two primaries
    pause = max(_ack_pauses(w, t_fault - 1))  # the longest, around the restart
    pm_now, timeline_now = lab.postmaster_pid(old), lab.timeline(old)
    print(f"agent of {old} SIGKILLed and restarted: primary now {final} (postmaster "
          f"{pm} -> {pm_now}, timeline {timeline} -> {timeline_now}); VIP gone "
          f"{_rel(vip.left(old, t_fault), t_fault)} s, back "
          f"{_rel(vip.arrived(final, t_fault), t_fault)} s; writes through the VIP paused "
          f"{pause:.2f} s at most")
    if final != old or pm_now != pm or timeline_now != timeline:
        why = "\n".join(_log_lines(lab, old, r"supervisor: |adopted|demote", t_started)[:8])
        raise AdoptionFailed(
            f"{old} did not adopt its running primary: primary now {final}, postmaster {pm} -> "
            f"{pm_now}, timeline {timeline} -> {timeline_now}; {old}'s log after the "
            f"restart:\n{why}")
    assert [r.host for r in report.reigns] == [old]  # one reign: no promotion anywhere
