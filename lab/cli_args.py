"""The lab's command line: verbs and their options (argparse only; cli.py runs them)."""
from __future__ import annotations

import argparse

from pgwarden.lab.labstate import WATCHDOG_MODES, WHATS


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--prefix", help="the lab's prefix (default for up: random pgwlXXXX; "
                        "other verbs: the only lab present)")
    common.add_argument("--lab-dir", help="the lab directory (default /tmp/pgwarden-lab-PREFIX)")
    p = argparse.ArgumentParser(prog="pgwarden-lab", description="pgwarden's network-namespace "
                                "lab: N database hosts, etcd and a client, each in its own "
                                "namespace, behind one bridge.")
    sub = p.add_subparsers(dest="verb", required=True)
    up = sub.add_parser("up", parents=[common], help="build the lab and start the cluster")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--scope", default="lab")
    timing_options(up)
    up.add_argument("--primary-start-timeout", type=int, default=None)
    up.add_argument("--watchdog-timeout", type=int, default=None,
                    help="the emulator's timeout (default ttl - safety_margin)")
    up.add_argument("--sync", action="store_true",
                    help="synchronous_standby_names = 'ANY 1 (n1, ..., nN)'")
    up.add_argument("--no-wait", action="store_true", help="do not wait for the cluster")
    up.add_argument("--timeout", type=float, default=120.0, help="how long to wait (s)")
    up.add_argument("--keep", action="store_true", help="keep a lab that failed to come up")
    st = sub.add_parser("status", parents=[common], help="per host: agent, role, VIP, lag")
    st.add_argument("--json", action="store_true")
    for verb, helptext in (("crash", "power cut: SIGKILL everything, port down"),
                           ("restart", "boot a crashed host: network, emulator, agent"),
                           ("partition", "set the host's bridge port down"),
                           ("heal", "set the host's bridge port up")):
        v = sub.add_parser(verb, parents=[common], help=helptext)
        v.add_argument("host")
    for verb in ("freeze", "thaw"):
        v = sub.add_parser(verb, parents=[common], help=f"{'SIGSTOP' if verb == 'freeze' else 'SIGCONT'}"
                           " the agent, PostgreSQL, or everything")
        v.add_argument("host")
        v.add_argument("--what", choices=WHATS, default="all" if verb == "freeze" else None)
    sub.add_parser("down", parents=[common], help="stop everything, delete namespaces and files")
    ex = sub.add_parser("exec", parents=[common], help="run a command in a host's namespace")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    sq = sub.add_parser("sql", parents=[common], help="run SQL on a host or the VIP")
    sq.add_argument("target")
    sq.add_argument("query")
    wr = sub.add_parser("writer", parents=[common], help="start/stop the client writer")
    wr.add_argument("action", choices=("start", "stop"))
    wr.add_argument("--target", default="vip")
    wr.add_argument("--duration", type=float, default=None)
    wr.add_argument("--log", default=None)
    sub.add_parser("list", help="labs present on this machine")
    demo = sub.add_parser("demo", help="a 3-host lab fails over while a client writes, then "
                          "goes away")
    demo.add_argument("--prefix", help="the lab's prefix (default: random pgwdXXXX)")
    # Tighter than the lab's defaults: stable in docs/benchmarks.md (idle and under pgbench),
    # and a failover a newcomer can watch in about 6 s rather than 11.
    timing_options(demo, ttl=5, loop_wait=1, retry_timeout=2, safety_margin=2)
    bench = sub.add_parser("bench", help="failover benchmarks and a stability check, each on a "
                           "fresh lab that is torn down afterwards")
    bench.add_argument("kind", choices=("failover", "pg-crash", "switchover", "stability"),
                       help="failover: power cut of the primary's host; pg-crash: SIGKILL of "
                       "its postmaster; switchover: POST /switchover to the next host; "
                       "stability: idle, then pgbench load, no fault")
    bench.add_argument("--prefix", help="the lab's prefix (default: random pgwbXXXX)")
    bench.add_argument("--runs", type=int, default=5)
    bench.add_argument("--hosts", type=int, default=3)
    timing_options(bench)
    bench.add_argument("--primary-start-timeout", type=int, default=None)
    bench.add_argument("--json", metavar="FILE", help="write the results as JSON here")
    bench.add_argument("--logs", metavar="DIR", help="copy the lab's logs here before the "
                       "teardown (default: FILE.logs with --json)")
    bench.add_argument("--connect-timeout", type=float, default=1.0,
                       help="the writer's connection timeout (s)")
    bench.add_argument("--statement-timeout", type=float, default=2.0,
                       help="the writer's INSERT timeout (s)")
    bench.add_argument("--idle", type=float, default=300.0, help="stability: idle seconds")
    bench.add_argument("--load", type=float, default=300.0, help="stability: pgbench seconds")
    bench.add_argument("--clients", type=int, default=4, help="stability: pgbench clients")
    bench.add_argument("--scale", type=int, default=5, help="stability: pgbench scale")
    return p


def timing_options(p: argparse.ArgumentParser, ttl: int = 10, loop_wait: int = 2,
                   retry_timeout: int = 3, safety_margin: int = 5) -> None:
    """The cluster's timing, as the lab's agents get it (Patroni's names)."""
    p.add_argument("--ttl", type=int, default=ttl)
    p.add_argument("--loop-wait", type=int, default=loop_wait)
    p.add_argument("--retry-timeout", type=int, default=retry_timeout)
    p.add_argument("--watchdog", choices=WATCHDOG_MODES, default="automatic")
    p.add_argument("--safety-margin", type=int, default=safety_margin,
                   help="the watchdog timeout is ttl - safety_margin")
