"""`pause` and `resume`: PATCH /config {"pause": true|null} to the first member that answers,
the leader first (patronictl's order). `--wait` follows the members' keys until each one
reports the new mode.
"""
from __future__ import annotations

import argparse
from typing import Any

from pgwarden.ctl.context import Ctx
from pgwarden.ctl.errors import ApiUnreachable, CtlError, Pending
from pgwarden.ctl.options import add_cluster_arg, add_wait
from pgwarden.ctl.progress import ChangePrinter
from pgwarden.ctl.selection import members_leader_first
from pgwarden.workers.api_status import as_dict, is_truthy_tag

POLL_INTERVAL = 0.5


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    for name, paused, text in (("pause", True, "stop automatic failover (maintenance mode)"),
                               ("resume", False, "resume automatic failover")):
        p = sub.add_parser(name, parents=parents, help=text)
        add_cluster_arg(p)
        add_wait(p, f"every member reports it is {'paused' if paused else 'resumed'}", 60.0)
        p.set_defaults(func=run_pause if paused else run_resume)


def run_pause(ctx: Ctx, args: argparse.Namespace) -> int:
    return toggle(ctx, args, True)


def run_resume(ctx: Ctx, args: argparse.Namespace) -> int:
    return toggle(ctx, args, False)


def toggle(ctx: Ctx, args: argparse.Namespace, paused: bool) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    view = ctx.read(cluster)
    if is_truthy_tag(as_dict(view.config.value).get("pause")) == paused:
        raise CtlError(f"Cluster is {'already' if paused else 'not'} paused")
    word = "paused" if paused else "resumed"
    for member in members_leader_first(view):
        try:
            r = ctx.rest.request(member, "PATCH", "config", {"pause": True if paused else None})
        except ApiUnreachable as e:
            ctx.warn(f"{e.message}; trying the next member")
            continue
        if r.status != 200:
            raise CtlError(f"Failed: {'pause' if paused else 'resume'} cluster management "
                           f"status code={r.status}, ({r.message})")
        if args.wait:
            _wait(ctx, cluster, paused, {m.name for m in members_leader_first(view)}, args.wait_timeout)
        ctx.say(f"Success: cluster management is {word}")
        return 0
    raise CtlError(f"Can not find accessible cluster member of cluster {cluster}")


def _wait(ctx: Ctx, cluster: str, paused: bool, names: set[str], timeout: float) -> None:
    ctx.say(f"'{'pause' if paused else 'resume'}' request sent, waiting until it is recognized by all nodes")
    printer = ChangePrinter(ctx)
    deadline = ctx.mono() + timeout
    while True:
        view = ctx.read(cluster)
        # Members that left meanwhile are not waited for.
        waiting = sorted(n for n, m in view.members.items()
                         if n in names and (m.data.get("pause") is True) != paused)
        if not waiting:
            return
        printer.show(f"waiting for: {', '.join(waiting)}")
        if ctx.mono() >= deadline:
            raise Pending(f"{', '.join(waiting)} did not report the new mode within {timeout:g} s")
        ctx.sleep(POLL_INTERVAL)
