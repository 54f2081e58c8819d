"""`flush CLUSTER [MEMBER...] restart|switchover`: discard scheduled restarts or a scheduled switchover.

A scheduled switchover is cancelled with DELETE /switchover, asking the leader first, then
the others; when no API answers, the `failover` key is cleared with CAS (patronictl's fallback).
"""
from __future__ import annotations

import argparse
from typing import Any

from pgwarden.ctl.context import Ctx
from pgwarden.ctl.dcs_access import dcs_call
from pgwarden.ctl.errors import ApiUnreachable, CtlError
from pgwarden.ctl.options import add_force, add_role
from pgwarden.ctl.selection import members_leader_first, select_members
from pgwarden.workers.api_status import as_dict


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("flush", parents=parents, help="discard scheduled restarts or a scheduled switchover")
    p.add_argument("cluster_name", metavar="CLUSTER", help="the cluster's name (scope)")
    p.add_argument("member_names", metavar="MEMBER", nargs="*", help="only these members (restart)")
    p.add_argument("target", choices=("restart", "switchover"), help="what to discard")
    add_role(p, "any", "only members with this role (restart)")
    add_force(p)
    p.set_defaults(func=run_flush)


def run_flush(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    if args.target == "switchover":
        return cancel_switchover(ctx, cluster)
    view = ctx.read(cluster)
    members = select_members(view, cluster, args.member_names, args.role)
    names = ", ".join(m.name for m in members)
    if not ctx.prompter.confirm(f"Are you sure you want to flush members {names}?"):
        raise CtlError("Aborted flush")
    failed = 0
    for member in members:
        if not member.data.get("scheduled_restart"):
            ctx.say(f"No scheduled restart for member {member.name}")
            continue
        try:
            r = ctx.rest.request(member, "DELETE", "restart")
        except ApiUnreachable as e:
            ctx.warn(e.message)
            failed += 1
            continue
        if r.ok:
            ctx.say(f"Success: flush scheduled restart for member {member.name}")
        else:
            ctx.say(f"Failed: flush scheduled restart for member {member.name}, status code={r.status}, ({r.message})")
            failed += 1
    return 1 if failed else 0


def cancel_switchover(ctx: Ctx, cluster: str) -> int:
    view = ctx.read(cluster)
    failover = as_dict(view.failover.value)
    if not failover.get("scheduled_at"):
        ctx.say("No pending scheduled switchover")
        return 0
    for member in members_leader_first(view):
        try:
            r = ctx.rest.request(member, "DELETE", "switchover")
        except ApiUnreachable as e:
            ctx.warn(f"{e.message}; trying the next member")
            continue
        if r.status == 200:
            ctx.say(f"Success: {r.message}")
            return 0
        if r.status == 404:
            raise CtlError(f"Failed: {r.message}")
        ctx.say(f"Failed: member={member.name}, status_code={r.status}, ({r.message})")
    ctx.say(f"{ctx.stamp()} Could not find any accessible member of cluster {cluster}: clearing the failover key")
    if not dcs_call("clear the failover key", ctx.store(cluster).delete_failover, view.failover.version):
        raise CtlError("the failover key changed meanwhile: nothing cleared, run the command again")
    ctx.say("Success: scheduled switchover deleted from the DCS")
    return 0
