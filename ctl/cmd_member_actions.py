"""`restart`, `reload` and `reinit`: POST to each chosen member's REST API, as patronictl does.

Members are chosen from the DCS (by name and/or role); each request goes to that member.
The exit status is 1 if any member failed, 3 if a `--wait` ran out of time.
"""
from __future__ import annotations

import argparse
import random
import re
from typing import Any

from pgwarden.ctl.cmd_list import print_members
from pgwarden.ctl.context import Ctx
from pgwarden.ctl.errors import ApiUnreachable, CtlError, UsageError
from pgwarden.ctl.member_wait import member_status, wait_member
from pgwarden.ctl.options import add_force, add_role, add_wait
from pgwarden.ctl.progress import BackgroundCall
from pgwarden.ctl.schedule import parse_scheduled
from pgwarden.ctl.selection import API_ROLE, select_members
from pgwarden.dcs.model import ClusterView, Member
from pgwarden.workers.api_status import as_dict, is_truthy_tag

RESTART_API_TIMEOUT = 300.0  # POST /restart answers once PostgreSQL is back (or failed)
_PG_VERSION = re.compile(r"^\d+(\.\d+){0,2}$")
_DURATION = re.compile(r"^\d+(\.\d+)?\s*(ms|s|min|h|d)?$")


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    r = sub.add_parser("restart", parents=parents, help="restart PostgreSQL on members")
    _cluster_and_members(r)
    add_role(r, "any", "only members with this role")
    r.add_argument("--any", dest="p_any", action="store_true", help="restart one member only, chosen at random")
    r.add_argument("--scheduled", help="when, as ISO 8601; default now")
    r.add_argument("--pg-version", dest="version", help="only if PostgreSQL is older than this (e.g. 15.8)")
    r.add_argument("--pending", action="store_true", help="only members flagged pending restart")
    r.add_argument("--timeout", help="fail (and fail over if needed) when the restart takes longer, e.g. 60s")
    add_force(r)
    add_wait(r, "PostgreSQL runs again on each member (one member after the other)", 300.0)
    r.set_defaults(func=run_restart)

    ld = sub.add_parser("reload", parents=parents, help="reload the configuration of members")
    _cluster_and_members(ld)
    add_role(ld, "any", "only members with this role")
    add_force(ld)
    ld.set_defaults(func=run_reload)

    ri = sub.add_parser("reinit", parents=parents, help="rebuild replicas from scratch (pg_basebackup)")
    _cluster_and_members(ri)
    ri.add_argument("--from-leader", action="store_true", help="take the base backup from the leader")
    add_force(ri)
    add_wait(ri, "each replica runs again", 3600.0)
    ri.set_defaults(func=run_reinit)


def _cluster_and_members(p: argparse.ArgumentParser) -> None:
    p.add_argument("cluster_name", metavar="CLUSTER", help="the cluster's name (scope)")
    p.add_argument("member_names", metavar="MEMBER", nargs="*", help="only these members")


def _confirm(ctx: Ctx, question: str, refusal: str) -> None:
    if not ctx.prompter.confirm(question):
        raise CtlError(refusal)


def _names(members: list[Member]) -> str:
    return ", ".join(m.name for m in members)


# -- restart -------------------------------------------------------------------------------

def _restart_body(args: argparse.Namespace, when: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.pending:
        body["restart_pending"] = True
    if args.version:
        if not _PG_VERSION.match(args.version):
            raise UsageError(f"--pg-version {args.version!r}: expected a PostgreSQL version such as 15.8")
        body["postgres_version"] = args.version
    if when is not None:
        body["schedule"] = when.isoformat()
    if args.timeout is not None:
        if not _DURATION.match(args.timeout.strip()):
            raise UsageError(f"--timeout {args.timeout!r}: expected seconds, e.g. 60 or 60s")
        body["timeout"] = args.timeout.strip()
    if API_ROLE.get(args.role):
        body["role"] = API_ROLE[args.role]
    return body


def _restart_targets(ctx: Ctx, args: argparse.Namespace, view: ClusterView, cluster: str,
                     scheduled: bool) -> list[Member]:
    members = select_members(view, cluster, args.member_names, args.role)
    if args.pending and not scheduled:
        # A scheduled restart re-checks the flag when it fires; an immediate one filters now.
        members = [m for m in members if m.data.get("pending_restart")]
    if args.p_any and members:
        members = [random.choice(members)]
    return members


def run_restart(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    when = parse_scheduled(args.scheduled)
    if when is not None and args.wait:
        raise UsageError("--wait cannot be used with --scheduled: the restart happens later")
    body = _restart_body(args, when)
    view = ctx.read(cluster)
    members = _restart_targets(ctx, args, view, cluster, when is not None)
    if not args.force:
        print_members(ctx, cluster, view=view)
    if not members:
        ctx.say("No member needs a restart (none is flagged pending restart)")
        return 0
    if when is not None and is_truthy_tag(as_dict(view.config.value).get("pause")):
        raise CtlError("Can't schedule restart in the paused state")
    if when is not None and args.pending:
        _confirm(ctx, "The nodes needing a restart will be identified at the scheduled time, and might be "
                      "different from the ones showing pending restart right now. Is this fine?",
                 "Aborted scheduled restart")
    elif when is not None:
        _confirm(ctx, f"Are you sure you want to schedule restart of members {_names(members)} at {when.isoformat()}?",
                 "Aborted scheduled restart")
    else:
        _confirm(ctx, f"Are you sure you want to restart members {_names(members)}?", "Aborted restart")
    failed = 0
    for member in members:
        failed += 0 if _restart_one(ctx, args, member, body) else 1
    return 1 if failed else 0


def _restart_one(ctx: Ctx, args: argparse.Namespace, member: Member, body: dict[str, Any]) -> bool:
    try:
        if "schedule" in body and args.force and member.data.get("scheduled_restart"):
            r = ctx.rest.request(member, "DELETE", "restart")  # --force replaces a scheduled one
            if not r.ok:
                ctx.say(f"Failed: flush scheduled restart for member {member.name}, status code={r.status}, "
                        f"({r.message})")
        if args.wait:
            before = member_status(ctx, member)
            call = BackgroundCall(lambda: ctx.rest.request(member, "POST", "restart", body,
                                                           timeout=RESTART_API_TIMEOUT))
            wait_member(ctx, member, "restart", before, args.wait_timeout, call)
            ctx.say(f"Success: restart on member {member.name}")
            return True
        r = ctx.rest.request(member, "POST", "restart", body, timeout=RESTART_API_TIMEOUT)
    except ApiUnreachable as e:
        ctx.say(f"Failed: restart for member {member.name}: {e.message}")
        return False
    if r.status == 200:
        ctx.say(f"Success: restart on member {member.name}")
    elif r.status == 202:
        ctx.say(f"Success: restart scheduled on member {member.name}")
    elif r.status == 409:
        ctx.say(f"Failed: another restart is already scheduled on member {member.name}")
    else:
        ctx.say(f"Failed: restart for member {member.name}, status code={r.status}, ({r.message})")
    return r.status in (200, 202)


# -- reload --------------------------------------------------------------------------------

def run_reload(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    view = ctx.read(cluster)
    members = select_members(view, cluster, args.member_names, args.role)
    if not args.force:
        print_members(ctx, cluster, view=view)
    _confirm(ctx, f"Are you sure you want to reload members {_names(members)}?", "Aborted reload")
    loop_wait = as_dict(view.config.value).get("loop_wait") or 10
    failed = 0
    for member in members:
        try:
            r = ctx.rest.request(member, "POST", "reload")
        except ApiUnreachable as e:
            ctx.say(f"Failed: reload for member {member.name}: {e.message}")
            failed += 1
            continue
        if r.status == 200:
            ctx.say(f"No changes to apply on member {member.name}")
        elif r.status == 202:
            ctx.say(f"Reload request received for member {member.name} and will be processed "
                    f"within {loop_wait} seconds")
        else:
            ctx.say(f"Failed: reload for member {member.name}, status code={r.status}, ({r.message})")
            failed += 1
    return 1 if failed else 0


# -- reinit --------------------------------------------------------------------------------

def _reinit_targets(ctx: Ctx, args: argparse.Namespace, view: ClusterView, cluster: str) -> list[Member]:
    names = list(args.member_names)
    if not names:
        replicas = sorted(n for n in view.members if n != view.leader)
        if args.force or not ctx.stdin.isatty():
            raise UsageError(f"name the replica(s) to reinitialize ({', '.join(replicas) or 'none'})")
        names = [ctx.prompter.ask(f"Which member do you want to reinitialize [{', '.join(replicas)}]?")]
    for name in names:
        if name and name == view.leader:
            raise CtlError(f"{name} is the leader of cluster {cluster}: only replicas can be reinitialized")
    return select_members(view, cluster, [n for n in names if n], "replica")


def _reinit_one(ctx: Ctx, args: argparse.Namespace, member: Member) -> bool:
    body: dict[str, Any] = {"force": bool(args.force)}
    if args.from_leader:
        body["from_leader"] = True
    while True:
        try:
            r = ctx.rest.request(member, "POST", "reinitialize", body)
        except ApiUnreachable as e:
            ctx.say(f"Failed: reinitialize for member {member.name}: {e.message}")
            return False
        if r.ok:
            ctx.say(f"Success: reinitialize for member {member.name}")
            return True
        ctx.say(f"Failed: reinitialize for member {member.name}, status code={r.status}, ({r.message})")
        if (r.message.endswith("already in progress") and not body["force"]
                and ctx.prompter.confirm("Do you want to cancel it and reinitialize anyway?")):
            body["force"] = True
            continue
        return False


def run_reinit(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    view = ctx.read(cluster)
    if not args.force:
        print_members(ctx, cluster, view=view)
    members = _reinit_targets(ctx, args, view, cluster)
    _confirm(ctx, f"Are you sure you want to reinitialize members {_names(members)}?", "Aborted reinitialize")
    before = {m.name: member_status(ctx, m) for m in members} if args.wait else {}
    started = [m for m in members if _reinit_one(ctx, args, m)]
    if args.wait and started:
        ctx.say(f"Waiting for reinitialize to complete on: {_names(started)}")
        for member in started:
            wait_member(ctx, member, "reinitialize", before.get(member.name), args.wait_timeout)
            ctx.say(f"Reinitialize is completed on: {member.name}")
    return 0 if len(started) == len(members) else 1
