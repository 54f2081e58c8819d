"""`bench switchover`: a planned switchover while a client writes through the VIP.

Each run: the cluster is settled (one primary, every other host streaming from it, the VIP on
the primary), the lab writer writes through the VIP every 10 ms, then the benchmark asks the
primary's REST API for `POST /switchover {"leader": <primary>, "candidate": <next host>}`
(the next host in name order, so the runs go round the hosts). Measured (CLOCK_MONOTONIC,
the writer's clock too):
  gap          the longest time between two consecutive acknowledged writes through the VIP,
               over the whole writer run (the switchover's window dominates it; `gap_at` says
               where it began, relative to the API call)
  api          how long the POST took to answer (it answers once another member holds the
               leader key)
  missing      acknowledged writes absent from the new primary's table after the writer stops
  rejoin       API answer -> the old primary streaming from the new one
and, from the two agents' logs (ms timestamps), when each step of the handover was logged;
`vip_away` is the time between the old primary's VIP removal and the new one's VIP add.
"""
from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable

from pgwarden.lab.bench import (
    AFTER_ACKS,
    POLL,
    WARMUP_ACKS,
    Client,
    _check_rows,
    _commit,
    _start_writer,
    _wait_acks,
    settings,
    settle,
)
from pgwarden.lab.benchstats import (
    ack_time,
    first_ack_after,
    log_time,
    outcome_counts,
    summary,
    table,
)
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import LabError

Say = Callable[[str], None]

# The API waits up to 30 s for the new leader (workers/api_actions.py SWITCHOVER_WAIT); the
# probe gets a little more so a slow answer is measured rather than cut off.
API_TIMEOUT = 40.0

ROWS = (("gap", "longest gap between acknowledged writes", "s"),
        ("api", "POST /switchover -> answer", "s"),
        ("vip_away", "VIP dropped -> VIP added (agents' logs)", "s"),
        ("missing", "acknowledged writes missing", "n"),
        ("rejoin", "answer -> old primary streaming again", "s"))

# The handover as the agents log it: (key, host whose log, text of the line). "old" is the
# primary handing over, "new" the candidate; the first matching line after the API call counts.
STEPS = (("checkpoint", "old", "checkpointing before the shutdown"),
         ("checkpoint_done", "old", "checkpoint: done"),
         ("vip_dropped", "old", "removed from"),
         ("stop", "old", "stop: starting"),
         ("stopped", "old", "stop: done"),
         ("final_lsn", "old", "final LSN"),
         ("released", "old", "leader key released"),
         ("key_gone", "new", "a switchover names me"),
         ("lock_taken", "new", "leader key acquired"),
         ("promote_start", "new", "promote: starting"),
         ("promoted", "new", "promoted in"),
         ("vip_held", "new", "held: being promoted|held: running primary"),
         ("old_follows", "old", "rejoin: done"))
STEP_NAMES = {"checkpoint": "checkpoint", "checkpoint_done": "checkpoint done",
              "vip_dropped": "VIP dropped", "stop": "stop", "stopped": "stopped",
              "final_lsn": "final LSN", "released": "key released",
              "key_gone": "candidate sees no leader", "lock_taken": "key taken",
              "promote_start": "promote", "promoted": "promoted", "vip_held": "VIP added",
              "old_follows": "old primary rejoined"}


def next_host(lab: Lab, primary: str) -> str:
    """The candidate: the live host after `primary` in name order (wrapping round)."""
    hosts = sorted(lab.live_db_hosts())
    return hosts[(hosts.index(primary) + 1) % len(hosts)]


def longest_gap(records: list[dict[str, Any]]) -> tuple[float, float] | None:
    """(length, start) of the longest time between consecutive acknowledged writes."""
    acks = sorted(ack_time(r) for r in records if r.get("outcome") == "acked")
    gaps = [(b - a, a) for a, b in zip(acks, acks[1:])]
    return max(gaps) if gaps else None


def handover_steps(logs: dict[str, list[str]], since_wall: float) -> dict[str, float]:
    """Seconds from `since_wall` to the first line of each step in STEPS, per host role."""
    out: dict[str, float] = {}
    for key, who, text in STEPS:
        for line in logs[who]:
            t = log_time(line)
            if t is not None and t >= since_wall and any(x in line for x in text.split("|")):
                out[key] = round(t - since_wall, 3)
                break
    return out


def switchover_run(lab: Lab, n: int, client: Client) -> dict[str, Any]:
    old = settle(lab)
    cand = next_host(lab, old)
    _, tail = _start_writer(lab, f"bench-switchover-{n}", client)
    res: dict[str, Any] = {"run": n, "old": old, "candidate": cand}
    try:
        _wait_acks(lab, tail, WARMUP_ACKS, 0.0, old, 30, f"{WARMUP_ACKS} writes through the VIP")
        t0, wall0 = time.monotonic(), time.time()
        status, body = lab.api_request(old, "/switchover", "POST",
                                       {"leader": old, "candidate": cand}, timeout=API_TIMEOUT)
        t1 = time.monotonic()
        res.update(api=t1 - t0, status=status, answer=body)
        if status != 200:
            raise LabError(f"run {n}: POST /switchover to {old} answered {status}: {body}\n"
                           f"{lab.debug_dump()}")
        first = None
        end = t1 + 30
        while first is None and time.monotonic() < end:
            tail.poll()
            first = first_ack_after(tail.records, t0, not_node=old)
            time.sleep(POLL)
        if first is None:
            raise LabError(f"run {n}: no write through the VIP by another host within 30 s "
                           f"of the switchover answer\n{lab.debug_dump()}")
        res.update(first_write=ack_time(first) - t0, new=first["node"])
        _wait_acks(lab, tail, AFTER_ACKS, ack_time(first), None, 10, "writes after the switchover")
    finally:
        lab.stop_writer()
    tail.poll()
    gap = longest_gap(tail.records)
    if gap is not None:
        res["gap"], res["gap_at"] = gap[0], gap[1] - t0
    res["acked"], lost = _check_rows(lab, str(res["new"]), tail)
    res["missing"], res["missing_rows"] = len(lost), lost[:20]
    res.update(outcome_counts(tail.records))
    # Settled again: the candidate is the one primary, the old primary streams from it.
    res["primary_after"] = settle(lab)
    res["rejoin"] = time.monotonic() - t1
    res["switched"] = res["primary_after"] == res["new"] == cand
    logs = {who: lab.log_path(h).read_text(errors="replace").splitlines()
            for who, h in (("old", old), ("new", cand))}
    res["steps"] = steps = handover_steps(logs, wall0)
    if "vip_dropped" in steps and "vip_held" in steps:
        res["vip_away"] = steps["vip_held"] - steps["vip_dropped"]
    return res


def run_bench(lab: Lab, runs: int, say: Say, client: Client = Client()) -> dict[str, Any]:
    """`runs` switchovers on a lab that is up; the per-run results and the summary (the
    same shape as bench.run_bench's)."""
    results = []
    for n in range(1, runs + 1):
        r = switchover_run(lab, n, client)
        results.append(r)
        say(run_line(r))
    return {"kind": "switchover", "settings": settings(lab) | {"client": asdict(client)},
            "runs": results,
            "summary": {key: summary([r.get(key) for r in results]) for key, _, _ in ROWS},
            "commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def report_lines(result: dict[str, Any]) -> list[str]:
    s, c = result["settings"], result["settings"]["client"]
    head = (f"bench switchover: {len(result['runs'])} runs, ttl {s['ttl']}, loop_wait "
            f"{s['loop_wait']}, retry_timeout {s['retry_timeout']}, safety_margin "
            f"{s['safety_margin']}, watchdog {s['watchdog']}; writer timeouts: connect "
            f"{c['connect_timeout']:g} s, statement {c['statement_timeout']:g} s")
    return [head] + table([(label, result["summary"][k], unit) for k, label, unit in ROWS])


def run_line(r: dict[str, Any]) -> str:
    gap = f"{r['gap']:.3f} s (from {r['gap_at']:+.3f} s)" if r.get("gap") is not None else "-"
    steps = ", ".join(f"{STEP_NAMES[k]} {v:.3f}"
                      for k, v in sorted(r["steps"].items(), key=lambda kv: kv[1]))
    odd = "" if r["switched"] else f" NOT SWITCHED: primary now {r['primary_after']}"
    return (f"run {r['run']}: {r['old']} -> {r['candidate']}: API answered {r['status']} after "
            f"{r['api']:.3f} s; longest write gap {gap}; first write on {r['new']} after "
            f"{r['first_write']:.3f} s; {r['missing']} of {r['acked']} acknowledged writes "
            f"missing; {r['old']} streaming again {r['rejoin']:.1f} s after the answer{odd}"
            f"\n       agents' logs (s after the call): {steps}")
