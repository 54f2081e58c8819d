"""`list` and `topology`: the members as patronictl shows them, read from the DCS only.

`list --fencing` adds each member's fencing state, asked of every member's GET /patroni
at once (a short timeout each; a member that does not answer shows `?`).
"""
from __future__ import annotations

import argparse
from typing import Any

from pgwarden.ctl.context import Ctx
from pgwarden.ctl.fencing_view import FENCING_ALIGN
from pgwarden.ctl.members_view import ALIGN, member_table
from pgwarden.ctl.options import add_format, positive_seconds
from pgwarden.ctl.output import format_rows
from pgwarden.ctl.rest import ApiResponse, request_each
from pgwarden.dcs.model import ClusterView

_CLEAR = "\x1b[H\x1b[2J"


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("list", parents=parents, help="list the members of a cluster",
                       description="List the members: role, state, timeline and replication lag (MB).")
    p.add_argument("cluster_names", metavar="CLUSTER", nargs="*",
                   help="clusters to list (default: --scope or the config file's scope)")
    p.add_argument("--extended", "-e", action="store_true",
                   help="always show the pending restart, scheduled restart and tags columns")
    p.add_argument("--fencing", "-F", action="store_true",
                   help="also each member's fencing state from its REST API (GET /patroni): watchdog, "
                        "seconds since its last feed, seconds left on the lease, VIP, worker restarts; "
                        "? when the member does not answer")
    p.add_argument("--timestamp", "-t", dest="ts", action="store_true", help="print the time first")
    add_format(p)
    _add_watch(p)
    p.set_defaults(func=run_list)

    t = sub.add_parser("topology", parents=parents, help="the members as a replication tree",
                       description="The leader, then each replica under the member it replicates from.")
    t.add_argument("cluster_names", metavar="CLUSTER", nargs="*",
                   help="clusters to show (default: --scope or the config file's scope)")
    _add_watch(t)
    t.set_defaults(func=run_topology, fmt="topology", extended=False, ts=False, fencing=False)


def _add_watch(p: argparse.ArgumentParser) -> None:
    p.add_argument("-W", dest="w", action="store_true", help="refresh every 2 seconds")
    p.add_argument("--watch", "-w", type=positive_seconds, metavar="SECONDS", help="refresh every SECONDS")


def fencing_bodies(ctx: Ctx, view: ClusterView) -> dict[str, dict[str, Any] | None]:
    """Each member's GET /patroni body, all asked at once; None for a member without an answer.

    Any status counts: /patroni answers 503 while PostgreSQL is down, with the same body.
    """
    answers = request_each(ctx.rest, [view.members[n] for n in sorted(view.members)], "GET", "patroni")
    bodies: dict[str, dict[str, Any] | None] = {}
    for name, answer in answers.items():
        body = answer.json() if isinstance(answer, ApiResponse) else None
        bodies[name] = body if isinstance(body, dict) else None
    return bodies


def print_members(ctx: Ctx, cluster: str, fmt: str = "pretty", extended: bool = False,
                  view: ClusterView | None = None, fencing: bool = False) -> None:
    """One cluster's table (and, for people, the maintenance/switchover lines under it).

    Given a view, shows that one (the reading a command just checked); else reads the DCS.
    With `fencing`, the fencing columns from each member's REST API follow the usual ones.
    """
    view = view if view is not None else ctx.read(cluster)
    bodies = fencing_bodies(ctx, view) if fencing else None
    table = member_table(view, cluster, fmt, extended, bodies)
    ctx.say(format_rows(table.columns, table.rows, "pretty" if fmt == "topology" else fmt,
                        table.title, {**ALIGN, **FENCING_ALIGN} if fencing else ALIGN))
    if fmt in ("pretty", "topology") and table.service_info:
        ctx.say(" " + "\n ".join(table.service_info))


def _run(ctx: Ctx, args: argparse.Namespace) -> int:
    names = args.cluster_names or [ctx.cluster_name(None)]
    interval = args.watch or (2.0 if args.w else None)
    clear = interval is not None and ctx.out.isatty()
    try:
        while True:
            if clear:
                ctx.out.write(_CLEAR)
            if args.ts:
                ctx.say(ctx.now().strftime("%Y-%m-%d %H:%M:%S"))
            for name in names:
                print_members(ctx, ctx.cluster_name(name), args.fmt, args.extended, fencing=args.fencing)
            if interval is None:
                return 0
            ctx.sleep(interval)
    except KeyboardInterrupt:
        if interval is None:
            raise
        return 0  # Ctrl-C is how a watch ends


def run_list(ctx: Ctx, args: argparse.Namespace) -> int:
    return _run(ctx, args)


def run_topology(ctx: Ctx, args: argparse.Namespace) -> int:
    return _run(ctx, args)
