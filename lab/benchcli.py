"""`pgwarden-lab bench KIND`: build a fresh lab, run the benchmark on it, print the table,
write the JSON, and tear the lab down whatever happens."""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from pgwarden.lab import bench, bench_switchover, stability
from pgwarden.lab.interrupt import interruptible, shielded
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import random_prefix

Say = Callable[[str], None]


def run(args: argparse.Namespace, say: Say) -> int:
    prefix = args.prefix or "pgwb" + random_prefix()[4:]
    # A scope of its own: agents' shared memory is named by scope and host only.
    lab = Lab(prefix, hosts=args.hosts, scope=f"bench{prefix}", ttl=args.ttl,
              loop_wait=args.loop_wait, retry_timeout=args.retry_timeout,
              primary_start_timeout=args.primary_start_timeout, watchdog=args.watchdog,
              safety_margin=args.safety_margin, log=say)
    result: dict[str, Any] | None = None
    # The lab dir goes with the lab: keep what explains the figures (agent, etcd, watchdog,
    # writer and pgbench logs) next to the JSON.
    logs = Path(args.logs) if args.logs else (Path(args.json + ".logs") if args.json else None)
    try:
        with interruptible():
            t = time.monotonic()
            lab.up(wait=180)
            say(f"lab {prefix} up in {time.monotonic() - t:.1f} s (ttl {args.ttl}, loop_wait "
                f"{args.loop_wait}, retry_timeout {args.retry_timeout}, safety_margin "
                f"{args.safety_margin}, watchdog {lab.state['watchdog_mode']})")
            if args.kind == "stability":
                result = stability.stability(lab, args.idle, args.load, say,
                                             clients=args.clients, scale=args.scale)
                lines = stability.report_lines(result)
            elif args.kind == "switchover":
                client = bench.Client(args.connect_timeout, args.statement_timeout)
                result = bench_switchover.run_bench(lab, args.runs, say, client)
                lines = bench_switchover.report_lines(result)
            else:
                client = bench.Client(args.connect_timeout, args.statement_timeout)
                result = bench.run_bench(lab, args.kind, args.runs, say, client)
                lines = bench.report_lines(result)
    finally:
        with shielded():
            if logs is not None:
                save_logs(lab, logs)
            lab.down()
    assert result is not None
    for line in lines:
        say(line)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        say(f"results written to {args.json}")
    return 0 if args.kind != "stability" or result["stable"] else 3


def save_logs(lab: Lab, dest: Path) -> None:
    """Copy the lab's logs (not the data directories) to `dest`, one folder per host."""
    for name in lab.hosts:
        src = lab.host_dir(name)
        if not src.is_dir():
            continue
        for f in src.rglob("*"):
            if f.is_file() and (f.suffix in (".log", ".jsonl", ".out") and "data" not in f.parts):
                target = dest / name / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
