"""Read-only commands on the DCS: `show-config`, `history`, `dsn`."""
from __future__ import annotations

import argparse
from typing import Any

from pgwarden.ctl.context import Ctx
from pgwarden.ctl.errors import CtlError
from pgwarden.ctl.members_view import history_rows
from pgwarden.ctl.options import add_cluster_arg, add_format, add_role
from pgwarden.ctl.output import format_rows, yaml_text
from pgwarden.ctl.selection import one_member
from pgwarden.workers.api_status import parse_conn_url

HISTORY_COLUMNS = ["TL", "LSN", "Reason", "Timestamp", "New Leader"]


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("show-config", parents=parents, help="print the dynamic configuration (config key)")
    add_cluster_arg(p)
    p.set_defaults(func=run_show_config)

    h = sub.add_parser("history", parents=parents, help="the failovers and switchovers (history key)")
    add_cluster_arg(h)
    add_format(h)
    h.set_defaults(func=run_history)

    d = sub.add_parser("dsn", parents=parents, help="a libpq connection string for a member (the leader's by default)")
    add_cluster_arg(d)
    add_role(d, None, "a member with this role")
    d.add_argument("--member", "-m", help="this member")
    d.set_defaults(func=run_dsn)


def run_show_config(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    view = ctx.read(cluster)
    if view.config.version == 0:
        raise CtlError(f"cluster {cluster} has no config key (is the cluster bootstrapped?)")
    ctx.out.write(yaml_text(view.config.value or {}))
    return 0


def run_history(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    rows = history_rows(ctx.read(cluster))
    ctx.say(format_rows(HISTORY_COLUMNS, rows, args.fmt, align={"TL": "r", "LSN": "r"}))
    return 0


def run_dsn(ctx: Ctx, args: argparse.Namespace) -> int:
    cluster = ctx.cluster_name(args.cluster_name)
    member = one_member(ctx.read(cluster), args.role, args.member)
    if member is None:
        wanted = f"member {args.member}" if args.member else f"{args.role or 'leader'} member"
        raise CtlError(f"cluster {cluster} has no {wanted}")
    host, port = parse_conn_url(member.conn_url)
    if host is None:
        raise CtlError(f"member {member.name} publishes no usable conn_url ({member.conn_url!r})")
    ctx.say(f"host={host} port={port}")
    return 0
