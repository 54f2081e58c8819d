"""Clone a replica's data dir from a running server with pg_basebackup."""
from __future__ import annotations

import os

from pgwarden.core.config_model import Credentials
from pgwarden.core.errors import PostgresError
from pgwarden.postgres import runas
from pgwarden.postgres.conffiles import conninfo_quote
from pgwarden.postgres.datadir import clear_data_dir, data_dir_state


def pgpass_escape(value: str) -> str:
    """A .pgpass field: ':' and '\\' are escaped with a backslash."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_line(host: str, port: int, user: str, password: str) -> str:
    # Database '*': replication connections match the pseudo-database 'replication'.
    fields = [host, str(port), "*", user, password]
    return ":".join(pgpass_escape(f) for f in fields) + "\n"


def basebackup(
    bin_dir: str,
    data_dir: str,
    host: str,
    port: int,
    replication: Credentials,
    slot: str | None = None,
    *,
    application_name: str = "pgwarden_basebackup",
    timeout: float | None = None,
    connect_timeout: int = 5,
) -> None:
    """Copy the server at host:port into `data_dir` (missing or empty) as the database user.

    WAL is streamed alongside (-X stream), so the copy is consistent on its own. `slot` must
    exist on the source (the primary creates members' slots); it keeps the WAL the copy
    still needs. The password goes through a temporary passfile, never the command line.
    A failed or timed-out copy is removed, so the data dir is 'empty' again, never 'invalid'.
    """
    state = data_dir_state(data_dir)
    if state != "empty":
        raise PostgresError(
            f"basebackup: {data_dir} is not empty ({state}); refusing to overwrite it"
        )
    created = not os.path.exists(data_dir)
    runas.make_db_dir(data_dir)
    parent = os.path.dirname(os.path.abspath(data_dir))
    passfile = (
        runas.temp_db_file(
            pgpass_line(host, port, replication.username, replication.password), directory=parent
        )
        if replication.password is not None
        else None
    )
    conninfo = " ".join(
        f"{k}={conninfo_quote(v)}"
        for k, v in [
            ("host", host),
            ("port", str(port)),
            ("user", replication.username),
            ("application_name", application_name),
            ("connect_timeout", str(connect_timeout)),
            ("passfile", passfile or os.devnull),
        ]
    )
    cmd = [
        os.path.join(bin_dir, "pg_basebackup"),
        "-D", data_dir,
        "-d", conninfo,
        "-X", "stream",
        "--checkpoint=fast",  # do not wait up to checkpoint_timeout for the source's checkpoint
        "--no-password",  # never prompt: there is no terminal
    ]
    if slot:
        cmd += ["-S", slot]
    try:
        runas.run(cmd, timeout, what="pg_basebackup")
    except BaseException:
        clear_data_dir(data_dir, remove_dir=created)
        raise
    finally:
        if passfile:
            os.unlink(passfile)
    runas.make_db_dir(data_dir)  # pg_basebackup keeps the mode it found; PostgreSQL wants 0700

