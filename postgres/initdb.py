"""Bootstrap a new cluster: initdb, then the roles HA needs once the server runs."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import psycopg
from pgwarden.core.config_model import Credentials
from pgwarden.core.errors import PostgresError
from pgwarden.postgres import runas
from pgwarden.postgres.datadir import clear_data_dir, data_dir_state
from pgwarden.postgres.query import ConnParams, Session, run_once
from psycopg import sql


def initdb(
    bin_dir: str,
    data_dir: str,
    superuser: Credentials,
    *,
    encoding: str = "UTF8",
    locale: str = "C.UTF-8",
    data_checksums: bool = True,
    extra_args: Sequence[str] = (),
    timeout: float = 300.0,
) -> None:
    """Create a new cluster in `data_dir` (missing or empty), owned by the database user.

    The superuser password is set by initdb itself (--pwfile, never on the command line), so
    pg_hba can require passwords from the very first start. On failure the half-made data
    dir is emptied again (never a dir that held anything before we began).
    """
    state = data_dir_state(data_dir)
    if state != "empty":
        raise PostgresError(f"initdb: {data_dir} is not empty ({state}); refusing to overwrite it")
    created = not os.path.exists(data_dir)
    runas.make_db_dir(data_dir)
    parent = os.path.dirname(os.path.abspath(data_dir))
    pwfile = (
        runas.temp_db_file(superuser.password + "\n", directory=parent)
        if superuser.password is not None
        else None
    )
    cmd = [
        os.path.join(bin_dir, "initdb"),
        "-D", data_dir,
        "-U", superuser.username,
        f"--encoding={encoding}",
        f"--locale={locale}",
    ]
    if data_checksums:
        cmd.append("--data-checksums")
    if pwfile:
        cmd.append(f"--pwfile={pwfile}")
    cmd += list(extra_args)
    try:
        runas.run(cmd, timeout, what="initdb")
    except BaseException:
        clear_data_dir(data_dir, remove_dir=created)
        raise
    finally:
        if pwfile:
            os.unlink(pwfile)


def create_roles(
    target: Session | ConnParams,
    superuser: Credentials,
    replication: Credentials,
    timeout: float = 10.0,
) -> None:
    """Set the superuser's password and create (or update) the replication role.

    Idempotent: run after every bootstrap, and again when the configured passwords change.
    Passwords travel as SCRAM verifiers computed client-side (libpq's PQencryptPasswordConn),
    so the clear text never reaches the server, its logs, or pg_stat_activity.
    """

    def run(conn: psycopg.Connection[Any]) -> None:
        # a static synchronous_standby_names would make these commits wait for standbys
        # that cannot exist before the bootstrap ends (Patroni does the same)
        conn.execute("SET synchronous_commit = local")
        with conn.transaction():
            if superuser.password is not None:
                conn.execute(
                    sql.SQL("ALTER ROLE {} WITH PASSWORD {}").format(
                        sql.Identifier(superuser.username),
                        sql.Literal(_verifier(conn, superuser)),
                    )
                )
            if replication.username == superuser.username:
                return  # a superuser may replicate already
            exists = conn.execute(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (replication.username,)
            ).fetchone()
            verb = "ALTER" if exists else "CREATE"
            password = (
                sql.SQL("PASSWORD {}").format(sql.Literal(_verifier(conn, replication)))
                if replication.password is not None
                else sql.SQL("PASSWORD NULL")
            )
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH REPLICATION LOGIN {}").format(
                    sql.Identifier(replication.username), password
                )
            )

    if isinstance(target, Session):
        target.call(run, timeout, what="create roles")
    else:
        run_once(target, run, timeout, what="create roles")


def _verifier(conn: psycopg.Connection[Any], cred: Credentials) -> str:
    assert cred.password is not None
    # An explicit algorithm: with None, libpq would ask the server (an unbounded extra query).
    raw = conn.pgconn.encrypt_password(
        cred.password.encode(), cred.username.encode(), b"scram-sha-256"
    )
    return raw.decode("ascii")
