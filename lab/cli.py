"""`pgwarden-lab VERB` / `python -m pgwarden.lab VERB`: the lab's command line.

Every verb but `up`, `list`, `demo` and `bench` works on an existing lab found through its
lab.json (--prefix, --lab-dir, or the only lab present), so separate calls share one lab.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Callable

from pgwarden.lab import benchcli, netns
from pgwarden.lab.cli_args import parser
from pgwarden.lab.demo import run_demo
from pgwarden.lab.lab import Lab
from pgwarden.lab.labstate import LabError, find_labs, prefix_of


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr if msg.startswith("warning") else sys.stdout, flush=True)

    try:
        return _run(args, say)
    except (LabError, netns.NetnsError, TimeoutError) as e:
        print(f"pgwarden-lab {args.verb}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pgwarden-lab {args.verb}: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    if args.verb == "demo":
        return run_demo(say, prefix=args.prefix, ttl=args.ttl, loop_wait=args.loop_wait,
                        retry_timeout=args.retry_timeout, safety_margin=args.safety_margin,
                        watchdog=args.watchdog)
    if args.verb == "bench":
        return benchcli.run(args, say)
    if args.verb == "list":
        dirs = find_labs()
        spaces = netns.list_namespaces()
        for d in dirs:
            pre = prefix_of(d)
            n = len([s for s in spaces if s.startswith(pre + "-")])
            say(f"{pre}: {d} ({n} namespaces)")
        if not dirs:
            say("no labs")
        return 0
    if args.verb == "up":
        lab = Lab(args.prefix, args.hosts, lab_dir=args.lab_dir, scope=args.scope, ttl=args.ttl,
                  loop_wait=args.loop_wait, retry_timeout=args.retry_timeout,
                  primary_start_timeout=args.primary_start_timeout, watchdog=args.watchdog,
                  safety_margin=args.safety_margin, watchdog_timeout=args.watchdog_timeout,
                  sync=args.sync, log=say)
        t0 = time.monotonic()
        try:
            primary = lab.up(wait=None if args.no_wait else args.timeout)
        except BaseException:
            # Tear down only what this call built (a preflight refusal built nothing).
            if not args.keep and lab.state["phase"] != "new":
                lab.down()
                say(f"lab {lab.prefix} did not come up; torn down (use --keep to keep it)")
            raise
        took = time.monotonic() - t0
        if primary:
            replicas = [h for h in lab.db_hosts if h != primary]
            say(f"lab {lab.prefix} up in {took:.1f} s: {primary} primary, "
                f"{' '.join(replicas) or 'no'} replicas; VIP {lab.vip}, subnet "
                f"{lab.state['subnet']}, dir {lab.lab_dir} (watchdog {lab.state['watchdog_mode']})")
        else:
            say(f"lab {lab.prefix} started in {took:.1f} s (not waiting); dir {lab.lab_dir}")
        return 0
    if args.verb == "down":
        prefix = args.prefix
        if prefix is None and args.lab_dir is None:
            labs = find_labs()
            if len(labs) != 1:
                raise LabError("name the lab with --prefix" + (
                    f" ({', '.join(prefix_of(p) for p in labs)})"
                    if labs else ""))
        try:
            lab = Lab.load(prefix, args.lab_dir, log=say)
        except LabError:
            if prefix is None:
                raise
            lab = Lab(prefix, lab_dir=args.lab_dir, log=say)  # no lab.json: namespaces only
        out = lab.down()
        say(f"lab {lab.prefix} down: {len(out['namespaces'])} namespaces deleted, "
            f"{out['killed_after_term']} processes killed, {lab.lab_dir} removed")
        return 0
    if args.verb == "exec":
        # `exec HOST --prefix P -- CMD`: options after HOST land in the remainder
        while args.cmd[:1] and args.cmd[0] in ("--prefix", "--lab-dir") and len(args.cmd) > 1:
            setattr(args, args.cmd[0][2:].replace("-", "_"), args.cmd[1])
            args.cmd = args.cmd[2:]
    lab = Lab.load(args.prefix, args.lab_dir, log=say)
    try:
        return _verb(lab, args, say)
    finally:
        lab._close_probes()


def _verb(lab: Lab, args: argparse.Namespace, say: Callable[[str], None]) -> int:
    v = args.verb
    if v == "status":
        st = lab.status()
        if args.json:
            print(json.dumps(st, indent=2))
            return 0
        say(f"lab {st['prefix']} scope {st['scope']} subnet {st['subnet']} VIP {st['vip']} "
            f"watchdog {st['watchdog_mode']}")
        for h in st["hosts"]:
            flags = [f for f in ("crashed", "partitioned") if h[f]]
            if h["frozen"]:
                flags.append("frozen:" + ",".join(h["frozen"]))
            extra = f" [{' '.join(flags)}]" if flags else ""
            if h["kind"] == "db":
                lag = h["lag"]
                say(f"  {h['host']:<6} {h['address']:<14} agent {'up' if h['agent'] else 'DOWN':<4} "
                    f"{(h['role'] or '-'):<13} {(h['state'] or '-'):<10} "
                    f"{'VIP ' if h['vip'] else '    '}lag {lag if lag is not None else '-'}{extra}")
            elif h["kind"] == "dcs":
                say(f"  {h['host']:<6} {h['address']:<14} etcd "
                    f"{'healthy' if h['etcd_healthy'] else ('up' if h['etcd'] else 'DOWN')}{extra}")
            else:
                say(f"  {h['host']:<6} {h['address']:<14} writer "
                    f"{'running' if h['writer'] else 'stopped'}{extra}")
        return 0
    if v == "crash":
        n = lab.crash(args.host)
        say(f"{args.host} crashed: {n} processes killed, port down, addresses flushed")
    elif v == "restart":
        lab.restart(args.host)
        say(f"{args.host} restarted (network up, "
            f"{'emulator and agent' if lab.hosts[args.host]['kind'] == 'db' else 'services'} started)")
    elif v == "partition":
        lab.partition(args.host)
        say(f"{args.host} partitioned (bridge port {lab.hosts[args.host]['veth']} down)")
    elif v == "heal":
        lab.heal(args.host)
        say(f"{args.host} healed (bridge port up)")
    elif v == "freeze":
        pids = lab.freeze(args.host, args.what)
        say(f"{args.host}: {args.what} frozen ({len(pids)} processes SIGSTOPped)")
    elif v == "thaw":
        pids = lab.thaw(args.host, args.what)
        say(f"{args.host}: {args.what or 'everything'} thawed ({len(pids)} processes SIGCONTed)")
    elif v == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            raise LabError("exec HOST -- CMD...")
        return subprocess.run(["ip", "netns", "exec", lab.ns(args.host), *cmd],
                              check=False).returncode
    elif v == "sql":
        for row in lab.sql(args.target, args.query):
            say("\t".join("" if c is None else str(c) for c in row))
    elif v == "writer":
        if args.action == "start":
            path = lab.start_writer(args.target, args.log, args.duration)
            say(f"writer started against {args.target} ({lab.address(args.target)}), log {path}")
        else:
            stopped = lab.stop_writer()
            say(f"writer stopped{', log ' + str(stopped) if stopped else ' (none was running)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
