"""`query`: run SQL on one member (the leader by default) with psycopg.

Credentials are libpq's: -U, --password (prompted), or PGUSER/PGPASSWORD/~/.pgpass.
A member chosen by role is double-checked with pg_is_in_recovery(), as patronictl does,
since the DCS may lag behind a promotion.
"""
from __future__ import annotations

import argparse
import getpass
from typing import Any

from pgwarden.ctl.context import Ctx
from pgwarden.ctl.errors import CtlError, UsageError
from pgwarden.ctl.options import add_cluster_arg, add_format, add_role, positive_seconds
from pgwarden.ctl.output import format_rows
from pgwarden.ctl.selection import one_member
from pgwarden.dcs.model import Member
from pgwarden.workers.api_status import parse_conn_url

CONNECT_TIMEOUT = 5


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("query", parents=parents, help="run SQL on a member",
                       description="Run SQL on one member: the leader, a member with --role, or --member.")
    add_cluster_arg(p)
    add_format(p, default="tsv", short=False)
    p.add_argument("--file", "-f", dest="p_file", metavar="FILE", help="run the SQL in this file")
    p.add_argument("--command", "-c", help="the SQL to run")
    p.add_argument("--password", action="store_true", help="prompt for the password")
    p.add_argument("-U", "--username", help="database user name")
    p.add_argument("-d", "--dbname", help="database name (default: the member's conn_url database)")
    add_role(p, None, "run on a member with this role")
    p.add_argument("--member", "-m", help="run on this member")
    p.add_argument("--delimiter", default="\t", help="column delimiter for tsv (default: tab)")
    p.add_argument("-W", dest="w", action="store_true", help="run again every 2 seconds")
    p.add_argument("--watch", "-w", type=positive_seconds, metavar="SECONDS", help="run again every SECONDS")
    p.set_defaults(func=run_query)


def _sql(args: argparse.Namespace) -> str:
    if args.p_file and args.command:
        raise UsageError("--file and --command are mutually exclusive options")
    if args.p_file:
        try:
            with open(args.p_file, encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise UsageError(f"cannot read {args.p_file}: {e.strerror or e}") from None
    if not args.command:
        raise UsageError("give the SQL with --command or --file")
    return str(args.command)


def connect_params(member: Member, args: argparse.Namespace, password: str | None) -> dict[str, Any]:
    host, port = parse_conn_url(member.conn_url)
    if host is None:
        raise CtlError(f"member {member.name} publishes no usable conn_url ({member.conn_url!r})")
    dbname = args.dbname or (member.conn_url or "").rsplit("/", 1)[-1].split("?")[0] or None
    params: dict[str, Any] = {"host": host, "port": port, "connect_timeout": CONNECT_TIMEOUT,
                              "application_name": "pgwardenctl", "autocommit": True}
    if dbname:
        params["dbname"] = dbname
    if args.username:
        params["user"] = args.username
    if password is not None:
        params["password"] = password
    return params


def run_query(ctx: Ctx, args: argparse.Namespace) -> int:
    sql = _sql(args)
    cluster = ctx.cluster_name(args.cluster_name)
    password = getpass.getpass("Password: ") if args.password else None
    member = one_member(ctx.read(cluster), args.role, args.member)
    if member is None:
        wanted = f"member {args.member}" if args.member else f"{args.role or 'leader'} member"
        raise CtlError(f"cluster {cluster} has no {wanted}")
    interval = args.watch or (2.0 if args.w else None)
    import psycopg  # here: only this command needs libpq

    try:
        with psycopg.connect(**connect_params(member, args, password)) as conn:
            _check_role(conn, member, args.role)
            while True:
                _run_once(ctx, conn, sql, args)
                if interval is None:
                    return 0
                ctx.sleep(interval)
    except psycopg.Error as e:
        sqlstate = getattr(getattr(e, "diag", None), "sqlstate", None)
        code = f" (SQLSTATE {sqlstate})" if sqlstate else ""
        raise CtlError(f"query on {member.name} failed{code}: {e}") from None
    except KeyboardInterrupt:
        if interval is None:
            raise
        return 0


def _check_role(conn: Any, member: Member, role: str | None) -> None:
    if role in (None, "any", "leader"):
        return
    in_recovery = conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()[0]
    wants_recovery = role in ("replica", "standby", "standby-leader")
    if bool(in_recovery) != wants_recovery:
        state = "in recovery" if in_recovery else "not in recovery"
        raise CtlError(f"member {member.name} is {state}, so it is not a {role} any more: try again")


def _run_once(ctx: Ctx, conn: Any, sql: str, args: argparse.Namespace) -> None:
    cur = conn.execute(sql.encode("utf-8"))
    while True:  # one table per statement that returns rows ("select 1; select 2")
        if cur.description is not None:
            columns = [d.name for d in cur.description]
            rows = [list(r) for r in cur.fetchall()]
            ctx.say(format_rows(columns, rows, args.fmt, delimiter=args.delimiter))
        if not cur.nextset():
            return
