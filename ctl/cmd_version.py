"""`version`: pgwardenctl's own, then each member's agent and PostgreSQL (GET /patroni)."""
from __future__ import annotations

import argparse
from typing import Any

from pgwarden.core.version import __version__
from pgwarden.ctl.context import Ctx
from pgwarden.ctl.errors import ApiUnreachable
from pgwarden.ctl.selection import members_with_role

VERSION_TIMEOUT = 5.0


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("version", parents=parents, help="versions of pgwardenctl and of each member",
                       description="Without a cluster name, only pgwardenctl's own version.")
    p.add_argument("cluster_name", metavar="CLUSTER", nargs="?", help="also ask this cluster's members")
    p.add_argument("member_names", metavar="MEMBER", nargs="*", help="only these members")
    p.set_defaults(func=run_version)


def format_pg_version(version: int) -> str:
    """170002 -> 17.2; 90624 -> 9.6.24 (before 10 the minor part had two digits)."""
    if version < 100000:
        return f"{version // 10000}.{version // 100 % 100}.{version % 100}"
    return f"{version // 10000}.{version % 100}"


def describe(name: str, body: Any) -> str:
    """`n1: pgwarden 0.1.0 (Patroni 4.1.4 API) PostgreSQL 15.8`; a real Patroni as patronictl shows it."""
    body = body if isinstance(body, dict) else {}
    patroni = body.get("patroni") if isinstance(body.get("patroni"), dict) else {}
    own = body.get("pgwarden") if isinstance(body.get("pgwarden"), dict) else {}
    pg = body.get("server_version")
    pg_text = f" PostgreSQL {format_pg_version(pg)}" if isinstance(pg, int) and pg > 0 else ""
    if own.get("version"):
        return f"{name}: pgwarden {own['version']} (Patroni {patroni.get('version')} API){pg_text}"
    return f"{name}: Patroni {patroni.get('version')}{pg_text}"


def run_version(ctx: Ctx, args: argparse.Namespace) -> int:
    ctx.say(f"pgwardenctl version {__version__}")
    if not args.cluster_name:
        return 0
    ctx.say()
    cluster = ctx.cluster_name(args.cluster_name)
    view = ctx.read(cluster)
    failed = 0
    for member in members_with_role(view, "any"):
        if args.member_names and member.name not in args.member_names:
            continue
        try:
            response = ctx.rest.request(member, "GET", "patroni", timeout=VERSION_TIMEOUT)
            body = response.json()
            if not isinstance(body, dict):  # any status: the body is what tells the version
                raise ApiUnreachable(f"GET /patroni answered {response.status}: {response.message}")
            ctx.say(describe(member.name, body))
        except ApiUnreachable as e:
            ctx.say(f"{member.name}: failed to get version: {e.message}")
            failed += 1
    unknown = sorted(set(args.member_names) - set(view.members))
    for name in unknown:
        ctx.say(f"{name}: not a member of cluster {cluster}")
    return 1 if failed or unknown else 0
