"""Failover benchmarks on one lab: `bench failover` (power cut of the primary's host) and
`bench pg-crash` (SIGKILL of the primary's postmaster only).

Each run: the cluster is settled (one primary, every other host a streaming replica, the VIP
on the primary), a writer in the client namespace writes through the VIP every 10 ms, then
the fault. Measured from the instant before the fault (CLOCK_MONOTONIC, the writer's clock
too):
  crash_to_write   the first write acknowledged through the VIP afterwards (failover: by
                   another host)
  crash_to_api     failover only: a surviving host answers 200 on GET /primary
  crash_to_vip     failover only: the VIP is on a surviving host's eth0
and, after the writer stops, the acknowledged writes missing from the table on the primary.
The lab is reused: after a host crash the host is restarted and the next run waits until it
streams again (its rejoin time is reported too).
"""
from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from pgwarden.lab import netns
from pgwarden.lab.benchstats import (
    LogTail,
    ack_time,
    acked_rows,
    first_ack_after,
    first_ack_after_outage,
    missing,
    outcome_counts,
    summary,
    table,
    takeover_steps,
)
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import LabError

Say = Callable[[str], None]

WARMUP_ACKS = 200  # writes acknowledged before a fault (2 s): the writer is steady, and the
# missing-writes check has rows to check
AFTER_ACKS = 20  # writes acknowledged after recovery before the writer stops
POLL = 0.02  # seconds between observations while waiting for the recovery

# (key in a run's result, label in the table, unit)
FAILOVER_ROWS = (("crash_to_write", "crash -> first write through the VIP", "s"),
                 ("crash_to_api", "crash -> new primary 200 on /primary", "s"),
                 ("crash_to_vip", "crash -> VIP on the new primary", "s"),
                 ("log_leader_gone", "  new primary's log: leader key gone", "s"),
                 ("log_lock_taken", "  new primary's log: leader key taken", "s"),
                 ("log_vip_held", "  new primary's log: VIP added", "s"),
                 ("missing", "acknowledged writes missing", "n"),
                 ("rejoin", "restart -> old host streaming again", "s"))
PG_CRASH_ROWS = (("crash_to_write", "postmaster killed -> first write", "s"),
                 ("missing", "acknowledged writes missing", "n"))


def settle(lab: Lab, timeout: float = 120.0) -> str:
    """Wait for one primary, every other live host streaming from it, the VIP on it."""
    p: str = lab.wait_until(lab.healthy, timeout, "one primary, every other host a replica")
    replicas = sorted(h for h in lab.live_db_hosts() if h != p)
    lab.wait_until(lambda: lab.streaming(p) == replicas, timeout,
                   f"{', '.join(replicas)} streaming from {p}")
    lab.wait_until(lambda: lab.vip_holders() == [p], timeout, f"the VIP on {p}")
    return p


@dataclass(frozen=True)
class Client:
    """The writer's own timeouts. They bound what the benchmark can see: a statement in
    flight to a dead primary is given up after `statement_timeout`, and a connection attempt
    whose SYN went to the old MAC after `connect_timeout`, so the figures come in steps of
    these (the kernel's first SYN retransmission is also 1 s away)."""

    connect_timeout: float = 1.0
    statement_timeout: float = 2.0

    def args(self) -> list[str]:
        return ["--connect-timeout", f"{self.connect_timeout:g}",
                "--statement-timeout", f"{self.statement_timeout:g}"]


def _start_writer(lab: Lab, name: str, client: Client) -> tuple[Path, LogTail]:
    log = lab.host_dir("client") / f"{name}.jsonl"
    lab.start_writer("vip", log, extra=client.args())
    tail = LogTail(log)
    return log, tail


def _wait_acks(lab: Lab, tail: LogTail, count: int, after: float, node: str | None,
               timeout: float, what: str) -> None:
    def enough() -> bool:
        tail.poll()
        return sum(1 for r in tail.records if r["outcome"] == "acked" and ack_time(r) > after
                   and (node is None or r["node"] == node)) >= count
    lab.wait_until(enough, timeout, what, step=0.05)


def _check_rows(lab: Lab, primary: str, tail: LogTail) -> tuple[int, list[tuple[int, str]]]:
    tail.poll()
    acked = acked_rows(tail.records)
    rows = lab.sql(primary, "SELECT id, node FROM lab_writes", timeout=30)
    return len(acked), missing(acked, rows)


def failover_run(lab: Lab, n: int, client: Client) -> dict[str, Any]:
    """Power cut of the primary's host; the host is restarted and rejoins afterwards."""
    old = settle(lab)
    others = [h for h in lab.live_db_hosts() if h != old]
    ttl = float(lab.options["ttl"])
    _, tail = _start_writer(lab, f"bench-failover-{n}", client)
    res: dict[str, Any] = {"run": n, "old": old}
    try:
        _wait_acks(lab, tail, WARMUP_ACKS, 0.0, old, 30, f"{WARMUP_ACKS} writes through the VIP")
        t0, wall0 = time.monotonic(), time.time()
        lab.crash(old)
        res["crash_took"] = time.monotonic() - t0
        api_at = vip_at = None
        first = None
        end = t0 + ttl + 30
        while (api_at is None or vip_at is None or first is None) and time.monotonic() < end:
            if api_at is None:
                for h in others:
                    if lab.api_get(h, "/primary", timeout=0.5)[0] == 200:
                        api_at, res["new"] = time.monotonic(), h
                        break
            if vip_at is None and [h for h in lab.vip_holders() if h in others]:
                vip_at = time.monotonic()
            if first is None:
                tail.poll()
                first = first_ack_after(tail.records, t0, not_node=old)
            time.sleep(POLL)
        if first is None or api_at is None:
            raise LabError(f"run {n}: no new primary took a write within {ttl + 30:.0f} s "
                           f"of the crash of {old}\n{lab.debug_dump()}")
        res.update(crash_to_write=ack_time(first) - t0, crash_to_api=api_at - t0,
                   crash_to_vip=None if vip_at is None else vip_at - t0,
                   write_node=first["node"])
        _wait_acks(lab, tail, AFTER_ACKS, ack_time(first), None, 10, "writes after the failover")
    finally:
        lab.stop_writer()
    new = str(res["new"])
    # Where the time went, from the new primary's log (wall clock, millisecond lines).
    res["steps"] = takeover_steps(lab.log_path(new).read_text(errors="replace").splitlines(),
                                  wall0)
    res.update({f"log_{k}": v for k, v in res["steps"].items()})
    res["acked"], lost = _check_rows(lab, new, tail)
    res["missing"], res["missing_rows"] = len(lost), lost[:20]
    res.update(outcome_counts(tail.records))
    t1 = time.monotonic()
    lab.restart(old)
    settle(lab)
    res["rejoin"] = time.monotonic() - t1
    res["timeline"] = lab.timeline(new)
    return res


def pg_crash_run(lab: Lab, n: int, client: Client) -> dict[str, Any]:
    """SIGKILL of the primary's postmaster only (the agent lives and restarts it)."""
    p = settle(lab)
    _, tail = _start_writer(lab, f"bench-pg-crash-{n}", client)
    res: dict[str, Any] = {"run": n, "old": p}
    try:
        _wait_acks(lab, tail, WARMUP_ACKS, 0.0, p, 30, f"{WARMUP_ACKS} writes through the VIP")
        pid = lab.postmaster_pid(p)
        if pid is None:
            raise LabError(f"run {n}: no postmaster found on {p}")
        t0 = time.monotonic()
        netns.signal_pids([pid], signal.SIGKILL, lab.ns(p))
        first = None
        end = t0 + float(lab.options["ttl"]) + 60
        while first is None and time.monotonic() < end:
            tail.poll()
            first = first_ack_after_outage(tail.records, t0)
            time.sleep(POLL)
        if first is None:
            raise LabError(f"run {n}: no write within {end - t0:.0f} s of killing the "
                           f"postmaster of {p}\n{lab.debug_dump()}")
        res.update(crash_to_write=ack_time(first) - t0, new=first["node"],
                   in_place=first["node"] == p)
        _wait_acks(lab, tail, AFTER_ACKS, ack_time(first), None, 10, "writes after the restart")
    finally:
        lab.stop_writer()
    res["acked"], lost = _check_rows(lab, str(res["new"]), tail)
    res["missing"], res["missing_rows"] = len(lost), lost[:20]
    res.update(outcome_counts(tail.records))
    return res


KINDS: dict[str, tuple[Callable[[Lab, int, Client], dict[str, Any]],
                       tuple[tuple[str, str, str], ...]]] = {
    "failover": (failover_run, FAILOVER_ROWS),
    "pg-crash": (pg_crash_run, PG_CRASH_ROWS),
}


def settings(lab: Lab) -> dict[str, Any]:
    """What the figures depend on, for the report."""
    o = lab.options
    return {k: o[k] for k in ("ttl", "loop_wait", "retry_timeout", "safety_margin",
                               "primary_start_timeout", "watchdog_timeout")} | {
        "watchdog": lab.state["watchdog_mode"], "hosts": len(lab.db_hosts)}


def run_bench(lab: Lab, kind: str, runs: int, say: Say,
              client: Client = Client()) -> dict[str, Any]:
    """`runs` runs of `kind` on a lab that is up; the per-run results and the summary."""
    run_one, rows = KINDS[kind]
    results = []
    for n in range(1, runs + 1):
        r = run_one(lab, n, client)
        results.append(r)
        say(_run_line(kind, r))
    return {"kind": kind, "settings": settings(lab) | {"client": asdict(client)}, "runs": results,
            "summary": {key: summary([r.get(key) for r in results]) for key, _, _ in rows},
            "commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def report_lines(result: dict[str, Any]) -> list[str]:
    s = result["settings"]
    _, rows = KINDS[result["kind"]]
    c = s["client"]
    head = (f"bench {result['kind']}: {len(result['runs'])} runs, ttl {s['ttl']}, loop_wait "
            f"{s['loop_wait']}, retry_timeout {s['retry_timeout']}, safety_margin "
            f"{s['safety_margin']}, watchdog {s['watchdog']}; writer timeouts: connect "
            f"{c['connect_timeout']:g} s, statement {c['statement_timeout']:g} s")
    return [head] + table([(label, result["summary"][key], unit) for key, label, unit in rows])


def _run_line(kind: str, r: dict[str, Any]) -> str:
    if kind == "failover":
        vip = "-" if r.get("crash_to_vip") is None else f"{r['crash_to_vip']:.2f} s"
        return (f"run {r['run']}: {r['old']} crashed; {r['new']} primary (API) after "
                f"{r['crash_to_api']:.2f} s, VIP after {vip}, first write after "
                f"{r['crash_to_write']:.2f} s; {r['missing']} of {r['acked']} acknowledged "
                f"writes missing; {r['old']} streaming again {r['rejoin']:.1f} s after restart"
                f"\n       {new_side(r.get('steps') or {})}")
    return (f"run {r['run']}: postmaster of {r['old']} killed; first write after "
            f"{r['crash_to_write']:.2f} s on {r['new']} "
            f"({'in place' if r['in_place'] else 'failover'}); {r['missing']} of {r['acked']} "
            "acknowledged writes missing")


def new_side(steps: dict[str, float]) -> str:
    """The new primary's takeover as logged, in seconds after the crash."""
    names = {"leader_gone": "leader gone", "lock_taken": "lock taken",
             "promote_start": "promote", "promoted": "promoted", "vip_held": "VIP held"}
    return "new primary's log: " + ", ".join(f"{names[k]} {v:.2f}" for k, v in steps.items())


def _commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
