"""`bench stability`: does a setting hold without faults? An idle period, then pgbench load
through the VIP, on one lab; a writer through the VIP all along. A stable setting shows no
change of primary, no timeline change, no "demoting"/"promoting" decision in any agent's log,
no watchdog firing, and no failed write. Warnings short of that are reported alongside."""
from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from pgwarden.lab.bench import settings, settle
from pgwarden.lab.benchstats import LogTail, ack_time, outcome_counts
from pgwarden.lab.common import PG_BIN, SUPERUSER_PASSWORD
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import LabError

Say = Callable[[str], None]

# What an agent logs when the leadership changes: demoting, promoting, the leader key taken
# or released. Any of these without a fault makes the setting unstable.
CHANGES = re.compile(r"demoting|promoting|leader key")
# Trouble short of a change (a slow or unreachable DCS, a worker restarted or hung, a refused
# watchdog feed): reported, as the early sign of a setting too tight for this machine.
WARNINGS = re.compile(r"DCS is not accessible| WARNING | ERROR | CRITICAL ")
TPS_RE = re.compile(r"^tps = ([\d.]+)", re.MULTILINE)


def _sizes(paths: dict[str, Path]) -> dict[str, int]:
    return {h: (p.stat().st_size if p.exists() else 0) for h, p in paths.items()}


def _new_lines(path: Path, offset: int) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()
    except OSError:
        return []


class Watch:
    """Once a second: who answers 200 on /primary and who holds the VIP; changes are kept."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.changes: list[dict[str, Any]] = []
        self.last: tuple[str | None, tuple[str, ...]] | None = None
        self.samples = 0

    def sample(self, phase: str) -> None:
        now = (self.lab.primary(), tuple(self.lab.vip_holders()))
        self.samples += 1
        if now != self.last:
            if self.last is not None:
                self.changes.append({"t": time.monotonic(), "phase": phase,
                                     "primary": now[0], "vip": list(now[1])})
            self.last = now

    def run_for(self, seconds: float, phase: str, until: Callable[[], bool] | None = None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not (until and until()):
            self.sample(phase)
            time.sleep(1.0)


def _pgbench(lab: Lab, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    cmd = ["ip", "netns", "exec", lab.ns("client"), os.path.join(PG_BIN, "pgbench"),
           "-h", lab.vip, "-U", "postgres", *args, "postgres"]
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PGPASSWORD=SUPERUSER_PASSWORD),
                                start_new_session=True)


def stability(lab: Lab, idle: float, load: float, say: Say, clients: int = 4,
              scale: int = 5) -> dict[str, Any]:
    primary = settle(lab)
    hosts = lab.db_hosts
    timelines = {h: lab.timeline(h) for h in hosts}
    logs = {h: lab.log_path(h) for h in hosts}
    dogs = {h: lab.host_dir(h) / "watchdog.log" for h in hosts}
    log_at, dog_at = _sizes(logs), _sizes(dogs)
    log = lab.host_dir("client") / "stability.jsonl"
    lab.start_writer("vip", log)
    tail = LogTail(log)
    watch = Watch(lab)
    bench_log = lab.host_dir("client") / "pgbench.log"
    res: dict[str, Any] = {"settings": settings(lab), "idle_s": idle, "load_s": load,
                           "clients": clients, "scale": scale, "primary": primary}
    try:
        say(f"idle for {idle:.0f} s ({primary} primary, a writer through the VIP every 10 ms)")
        watch.run_for(idle, "idle")
        t = time.monotonic()
        init = _pgbench(lab, ["-i", "-s", str(scale), "-q"], bench_log)
        if init.wait(timeout=600) != 0:
            raise LabError(f"pgbench -i failed:\n{bench_log.read_text()[-2000:]}")
        say(f"pgbench initialised at scale {scale} in {time.monotonic() - t:.1f} s; "
            f"{load:.0f} s of load with {clients} clients")
        run = _pgbench(lab, ["-c", str(clients), "-j", "2", "-T", str(int(load)), "-P", "60"],
                       bench_log)
        try:
            watch.run_for(load + 60, "load", until=lambda: run.poll() is not None)
        finally:
            if run.poll() is None:
                run.kill()  # our own child
            run.wait()
        res["pgbench_rc"] = run.returncode
        tps = TPS_RE.findall(bench_log.read_text(errors="replace"))
        res["tps"] = float(tps[-1]) if tps else None
    finally:
        lab.stop_writer()
    tail.poll()
    acks = sorted(ack_time(r) for r in tail.records if r["outcome"] == "acked")
    res["writes"] = outcome_counts(tail.records)
    res["max_ack_gap_s"] = max((b - a for a, b in zip(acks, acks[1:])), default=None)
    res["primary_changes"] = watch.changes
    res["samples"] = watch.samples
    res["timelines_before"] = timelines
    res["timelines_after"] = {h: lab.timeline(h) for h in hosts}
    new_lines = {h: _new_lines(p, log_at[h]) for h, p in logs.items()}
    res["changes"] = {h: [x for x in lines if CHANGES.search(x)] for h, lines in new_lines.items()}
    res["warnings"] = {h: [x for x in lines if WARNINGS.search(x) and not CHANGES.search(x)]
                       for h, lines in new_lines.items()}
    res["watchdog_fired"] = {h: [line for line in _new_lines(p, dog_at[h]) if '"fired"' in line]
                             for h, p in dogs.items()}
    res["stable"] = (not watch.changes and timelines == res["timelines_after"]
                     and not any(res["changes"].values())
                     and not any(res["watchdog_fired"].values())
                     and res["writes"]["failed"] == 0 and res["writes"]["unknown"] == 0)
    return res


def report_lines(res: dict[str, Any]) -> list[str]:
    s = res["settings"]
    w = res["writes"]
    out = [f"stability: ttl {s['ttl']}, loop_wait {s['loop_wait']}, retry_timeout "
           f"{s['retry_timeout']}, safety_margin {s['safety_margin']}, watchdog {s['watchdog']}: "
           f"{res['idle_s']:.0f} s idle + {res['load_s']:.0f} s pgbench "
           f"(-c {res['clients']}, scale {res['scale']}, {res.get('tps') or 0:.0f} tps)",
           f"  primary changes: {len(res['primary_changes'])} in {res['samples']} samples; "
           f"timelines {res['timelines_before']} -> {res['timelines_after']}",
           f"  writer: {w['acked']} acked, {w['failed']} failed, {w['unknown']} unknown; "
           f"longest gap between acks {res['max_ack_gap_s'] or 0:.3f} s"]
    for what in ("changes", "warnings"):
        n = sum(len(v) for v in res[what].values())
        out.append(f"  agents' logs: {n} {'leadership changes' if what == 'changes' else 'warnings'}"
                   + (":" if n else ""))
        for h, lines in res[what].items():
            out.extend(f"    {line}" for line in lines[:10])
    for h, lines in res["watchdog_fired"].items():
        for line in lines:
            out.append(f"  {h} watchdog: {line}")
    out.append(f"  verdict: {'STABLE' if res['stable'] else 'UNSTABLE'}")
    return out
