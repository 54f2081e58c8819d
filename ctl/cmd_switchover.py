"""`switchover` and `failover`: POST /switchover or /failover to the leader, as patronictl does.

The request goes to the leader's REST API (to the candidate's when there is no leader).
When that API cannot be reached at all, the request is written to the `failover` key
directly (CAS on its version), which the leader acts on at its next cycle: patronictl's
fallback. `--wait` follows the DCS until a new leader holds the key and is running.
"""
from __future__ import annotations

import argparse
import re
from typing import Any

from pgwarden.ctl.cmd_flush import cancel_switchover
from pgwarden.ctl.cmd_list import print_members
from pgwarden.ctl.context import Ctx
from pgwarden.ctl.dcs_access import dcs_call
from pgwarden.ctl.errors import ApiUnreachable, CtlError, Pending, UsageError
from pgwarden.ctl.options import add_cluster_arg, add_force, add_wait
from pgwarden.ctl.progress import BackgroundCall, ChangePrinter
from pgwarden.ctl.rest import ApiResponse
from pgwarden.ctl.schedule import parse_scheduled
from pgwarden.ctl.selection import failover_candidates
from pgwarden.dcs.model import ClusterView
from pgwarden.workers.api_status import as_dict, is_truthy_tag

# Patroni's API polls up to 2*max(10, loop_wait) s before answering: leave room for that.
SWITCHOVER_API_TIMEOUT = 90.0
POLL_INTERVAL = 0.5
# A 503 that means "not finished yet", not "failed" (Patroni 4.1: "... status unknown after
# N seconds; operation may still be in progress").
_STILL_RUNNING = re.compile(r"in progress|status unknown", re.IGNORECASE)


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("switchover", parents=parents, help="hand the leader role to a replica",
                       description="Planned switchover: the leader hands over to a healthy replica "
                                   "(--candidate, or the best one), now or at --scheduled.")
    add_cluster_arg(s)
    s.add_argument("--leader", "--primary", dest="leader", help="the current leader (a check)")
    s.add_argument("--candidate", help="the member to promote (default: the healthiest replica)")
    s.add_argument("--scheduled", help="when, as ISO 8601 (e.g. 2026-09-24T10:36+02:00); default now")
    s.add_argument("--cancel", action="store_true", help="cancel a scheduled switchover instead")
    add_force(s)
    add_wait(s, "a new leader holds the key and is running", 120.0)
    s.set_defaults(func=run_switchover)

    f = sub.add_parser("failover", parents=parents, help="promote a named replica (also with no leader)",
                       description="Manual failover to --candidate; works when the cluster has no leader.")
    add_cluster_arg(f)
    f.add_argument("--candidate", help="the member to promote")
    add_force(f)
    add_wait(f, "the candidate holds the leader key and is running", 120.0)
    f.set_defaults(func=run_failover)


def _candidate_check(view: ClusterView, cluster: str, candidate: str | None, action: str) -> list[str]:
    names = failover_candidates(view)
    if not names:
        raise CtlError(f"No candidates found to {action} to")
    if candidate and candidate not in names:
        if candidate == view.leader:
            raise CtlError(f"Member {candidate} is already the leader of cluster {cluster}")
        raise CtlError(f"Member {candidate} does not exist in cluster {cluster} or is tagged as nofailover")
    return names


def _is_async_candidate(view: ClusterView, candidate: str) -> bool:
    """In synchronous mode, a candidate missing from the sync key may lack acknowledged writes."""
    mode = as_dict(view.config.value).get("synchronous_mode")
    if mode in (None, False) or str(mode).lower() in ("off", "false"):
        return False
    listed = as_dict(view.sync.value).get("sync_standby")
    if not isinstance(listed, str) or not listed:
        return False
    return candidate.lower() not in {n.strip().lower() for n in listed.split(",")}


def run_switchover(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    if args.cancel:
        return cancel_switchover(ctx, cluster)
    when = parse_scheduled(args.scheduled)
    if when is not None and args.wait:
        raise UsageError("--wait cannot be used with --scheduled: the switchover happens later")
    view = ctx.read(cluster)
    ctx.say("Current cluster topology")
    print_members(ctx, cluster, view=view)
    if not view.leader:
        raise CtlError("This cluster has no leader: use failover --candidate instead")
    if args.leader is not None and args.leader != view.leader:
        raise CtlError(f"Member {args.leader} is not the leader of cluster {cluster}")
    _candidate_check(view, cluster, args.candidate, "switchover")
    if when is not None and is_truthy_tag(as_dict(view.config.value).get("pause")):
        raise CtlError("Can't schedule switchover in the paused state")
    body: dict[str, Any] = {"leader": view.leader}
    if args.candidate:
        body["candidate"] = args.candidate
    if when is not None:
        body["scheduled_at"] = when.isoformat()
    demote = f", demoting current leader {view.leader}"
    question = (f"Are you sure you want to schedule switchover of cluster {cluster} at {body['scheduled_at']}{demote}?"
                if when is not None else f"Are you sure you want to switchover cluster {cluster}{demote}?")
    if not ctx.prompter.confirm(question):
        raise CtlError("Aborting " + ("scheduled switchover" if when is not None else "switchover"))
    return _request(ctx, args, cluster, view, "switchover", body)


def run_failover(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    view = ctx.read(cluster)
    ctx.say("Current cluster topology")
    print_members(ctx, cluster, view=view)
    names = _candidate_check(view, cluster, args.candidate, "failover")
    candidate = args.candidate
    if not candidate:
        if args.force or not ctx.stdin.isatty():
            raise UsageError("Failover could be performed only to a specific candidate: pass --candidate")
        candidate = ctx.prompter.ask(f"Candidate {names}")
        _candidate_check(view, cluster, candidate, "failover")
        if not candidate:
            raise UsageError("Failover could be performed only to a specific candidate")
    if _is_async_candidate(view, candidate) and not ctx.prompter.confirm(
            f"Are you sure you want to failover to the asynchronous node {candidate}?"):
        raise CtlError("Aborting failover")
    demote = f", demoting current leader {view.leader}" if view.leader else ""
    if not ctx.prompter.confirm(f"Are you sure you want to failover cluster {cluster}{demote}?"):
        raise CtlError("Aborting failover")
    args.candidate = candidate
    return _request(ctx, args, cluster, view, "failover", {"candidate": candidate})


def _request(ctx: Ctx, args: argparse.Namespace, cluster: str, view: ClusterView,
             action: str, body: dict[str, Any]) -> int:
    target = view.members.get(view.leader) if view.leader else view.members.get(args.candidate)
    if target is None:
        raise CtlError(f"cannot find the member to send the {action} to")

    def post() -> ApiResponse:
        return ctx.rest.request(target, "POST", action, body, timeout=SWITCHOVER_API_TIMEOUT)

    if args.wait:
        return _wait(ctx, cluster, view, action, body, BackgroundCall(post), args.wait_timeout)
    try:
        response = post()
    except ApiUnreachable as e:
        return _via_dcs(ctx, cluster, view, action, body, str(e), waiting=False)
    _check(response, action)
    ctx.say(f"{ctx.stamp()} {response.message}")
    if response.status == 503:  # accepted, not finished: say so rather than "failed"
        raise Pending(f"{action} still in progress: follow it with `pgwardenctl list {cluster}` (or use --wait)")
    try:
        print_members(ctx, cluster)
    except CtlError as e:  # the switchover is done: a failed re-read of the table must not say otherwise
        ctx.warn(e.message)
    return 0


def _check(response: ApiResponse, action: str) -> None:
    if response.ok or (response.status == 503 and _STILL_RUNNING.search(response.message)):
        return
    raise CtlError(f"{action.title()} failed, details: {response.status}, {response.message}")


def _via_dcs(ctx: Ctx, cluster: str, view: ClusterView, action: str, body: dict[str, Any],
             reason: str, waiting: bool) -> int:
    """patronictl's fallback: write the request into the failover key ("member", not "candidate")."""
    ctx.say(f"{ctx.stamp()} Could not {action} using the REST API ({reason}), falling back to DCS")
    value = {k: v for k, v in (("leader", body.get("leader")), ("member", body.get("candidate")),
                               ("scheduled_at", body.get("scheduled_at"))) if v}
    store = ctx.store(cluster)
    if not dcs_call("write the failover key", store.set_failover, value, view.failover.version):
        raise CtlError("the failover key changed meanwhile (another switchover?): nothing written, try again")
    if "scheduled_at" in value:
        ctx.say(f"{ctx.stamp()} Switchover scheduled through the DCS")
        return 0
    if not waiting:
        raise Pending(f"{action} requested through the DCS: the leader acts on it at its next cycle; "
                      f"follow it with `pgwardenctl list {cluster}`")
    return 0


def _summary(view: ClusterView) -> str:
    members = ", ".join(f"{n} {m.role} {m.state}" for n, m in sorted(view.members.items()))
    return f"leader: {view.leader or 'none'}; {members or 'no members'}"


def _finished(view: ClusterView, old_leader: str | None) -> bool:
    new = view.members.get(view.leader) if view.leader else None
    return (new is not None and new.name != old_leader
            and new.role in ("primary", "master", "standby_leader") and new.state == "running")


class _Answer:
    """The API's answer, printed once when it arrives; a failure ends the wait."""

    def __init__(self, ctx: Ctx, cluster: str, view: ClusterView, action: str, body: dict[str, Any],
                 call: BackgroundCall[ApiResponse]) -> None:
        self.ctx, self.cluster, self.view, self.action, self.body = ctx, cluster, view, action, body
        self.call, self.seen = call, False

    def check(self) -> None:
        if not self.call.done or self.seen:
            return
        self.seen = True
        try:
            response = self.call.result()
        except ApiUnreachable as e:
            _via_dcs(self.ctx, self.cluster, self.view, self.action, self.body, str(e), waiting=True)
            return
        _check(response, self.action)
        self.ctx.say(f"{self.ctx.stamp()} {response.status} {response.message}")


def _wait(ctx: Ctx, cluster: str, view: ClusterView, action: str, body: dict[str, Any],
          call: BackgroundCall[ApiResponse], timeout: float) -> int:
    old, candidate, leader = view.leader, body.get("candidate"), view.leader
    deadline = ctx.mono() + timeout
    printer = ChangePrinter(ctx)
    answer = _Answer(ctx, cluster, view, action, body, call)
    while True:
        answer.check()
        try:
            now_view = ctx.read(cluster)
        except CtlError as e:  # etcd may stall during the handover: report it and keep going
            printer.show(f"cannot read the DCS: {e.message}")
        else:
            leader = now_view.leader
            printer.show(_summary(now_view))
            if _finished(now_view, old):
                note = "" if not candidate or leader == candidate else f" (instead of {candidate})"
                call.wait(2.0)  # the API usually answers at the same moment: show its words too
                try:
                    answer.check()
                except CtlError as e:  # the DCS shows the handover done: that is what counts
                    ctx.warn(f"the API answered after the handover: {e.message}")
                ctx.say(f"{ctx.stamp()} {action.title()} complete: {leader} is the new leader{note}")
                print_members(ctx, cluster, view=now_view)
                return 0
        if ctx.mono() >= deadline:
            raise Pending(f"{action} still in progress after {timeout:g} s (leader: {leader or 'none'}): "
                          f"follow it with `pgwardenctl list {cluster}`")
        ctx.sleep(POLL_INTERVAL)
