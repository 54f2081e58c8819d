"""Following one member through a restart or a reinitialization via its GET /patroni.

Prints the member's state each time it changes; done when PostgreSQL runs again in a new
postmaster (start time changed, or a non-running state was seen on the way).
"""
from __future__ import annotations

from typing import Any

from pgwarden.ctl.context import Ctx
from pgwarden.ctl.errors import ApiUnreachable, CtlError, Pending
from pgwarden.ctl.progress import BackgroundCall, ChangePrinter
from pgwarden.ctl.rest import ApiResponse
from pgwarden.dcs.model import Member

STATUS_TIMEOUT = 3.0
POLL_INTERVAL = 1.0


def member_status(ctx: Ctx, member: Member) -> dict[str, Any] | None:
    """The member's /patroni body, or None while its API does not answer."""
    try:
        body = ctx.rest.request(member, "GET", "patroni", timeout=STATUS_TIMEOUT).json()
    except ApiUnreachable:
        return None
    return body if isinstance(body, dict) else None


def _line(body: dict[str, Any] | None) -> str:
    if body is None:
        return "REST API not answering"
    role = f" ({body['role']})" if body.get("role") else ""
    return f"{body.get('state', 'unknown')}{role}"


def _failed(state: str) -> bool:
    return state.endswith("failed") or state == "crashed"


def wait_member(ctx: Ctx, member: Member, action: str, before: dict[str, Any] | None,
                timeout: float, call: BackgroundCall[ApiResponse] | None = None) -> None:
    """Block until the member runs again after `action`; Pending on timeout, CtlError on failure.

    `call` is the action's own request when it blocks (restart); it must answer 2xx too.
    """
    old_start = (before or {}).get("postmaster_start_time")
    printer = ChangePrinter(ctx, f"{member.name}: ")
    deadline = ctx.mono() + timeout
    left_running = False
    while True:
        body = member_status(ctx, member)
        printer.show(_line(body))
        state = str((body or {}).get("state", ""))
        if _failed(state):
            raise CtlError(f"{action} of {member.name} failed: PostgreSQL is {state!r}")
        left_running = left_running or body is None or state != "running"
        renewed = body is not None and old_start is not None and body.get("postmaster_start_time") != old_start
        answered = call is None or call.done
        if call is not None and call.done:
            response = call.result()
            if not response.ok:
                raise CtlError(f"Failed: {action} for member {member.name}, status code={response.status}, "
                               f"({response.message})")
        # With a known start time only a new postmaster counts (an API may answer "restart
        # initiated" before it happens); without one, any dip out of "running" does.
        restarted = renewed if old_start is not None else (left_running or call is not None)
        if answered and state == "running" and restarted:
            return
        if ctx.mono() >= deadline:
            raise Pending(f"{action} of {member.name} still in progress after {timeout:g} s "
                          f"(state: {_line(body)})")
        ctx.sleep(POLL_INTERVAL)
